"""The provider contract: pixels for a ROI on the common grid.

A provider is built on the worker from its registered name and plain-value
options (it never travels in the task graph as a live object) and answers
one question: given a ROI, a temporal spec and a sensor spec, what are the
float32 pixels ``(C, H, W)`` (or ``(T, C, H, W)``) on the common grid window
:func:`rs_embed_dask.geometry.grid_window` gives for that ROI?
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ProviderError
from rs_embed_dask.core.specs import SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.validation.options import ProviderOption
from rs_embed_dask.validation.secrets import shown

__all__ = ["FetchResult", "Provider", "ProviderOption", "split_date_range"]


@dataclass
class FetchResult:
    """Pixels and what was learnt while fetching them.

    Attributes
    ----------
    data : numpy.ndarray
        float32 ``(C, H, W)`` or ``(T, C, H, W)``, north-up, raw provider units,
        no-data replaced by the sensor's ``fill_value``.
    meta : dict
        JSON-friendly fetch metadata; always has ``grid`` (the window's CRS,
        transform and shape) and ``provider``.
    """

    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def split_date_range(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """``n`` equal end-exclusive bins of ``[start, end)`` (rs-embed's rule)."""
    total = (end - start).days
    edges = [start + timedelta(days=(total * i) // n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


class Provider:
    """Base class of data providers.

    Subclasses set the class variables and implement :meth:`fetch_window`;
    those that fetch several time bins more cheaply together than one by one
    also override :meth:`fetch_frames`.

    Attributes
    ----------
    name : str
        Registered name (``backend=`` value).
    max_concurrency : int or None
        Cluster-wide cap of concurrent requests this provider tolerates
        (Earth Engine: 40 per project); ``None`` for no cap.
    requires : tuple of str
        Importable modules the provider needs.
    extra : str or None
        The ``pip install 'rs-embed-dask[<extra>]'`` extra that provides them.
    option_specs : tuple of ProviderOption or None
        The options the constructor accepts (names, types, ranges), checked
        on the client before anything is submitted
        (:func:`rs_embed_dask.validation.options.check_provider_options`);
        ``None`` checks only the names against the constructor's keywords.
    """

    name: ClassVar[str] = ""
    max_concurrency: ClassVar[int | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    option_specs: ClassVar[tuple[ProviderOption, ...] | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    # -- lifecycle -------------------------------------------------------------
    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`ProviderError` with the install command if a dependency is missing."""
        for mod in cls.requires:
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                hint = f"pip install 'rs-embed-dask[{cls.extra}]'" if cls.extra else f"pip install {mod}"
                raise ProviderError(
                    f"Provider {cls.name!r} needs the Python package {mod!r}: {hint}"
                ) from exc

    def ensure_ready(self) -> None:
        """Initialise clients and credentials; called once per worker process."""

    # -- client-side checks (run before a cluster starts) -----------------------
    @classmethod
    def check_sensor(cls, sensor: SensorSpec, options: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`~rs_embed_dask.SpecError` for a sensor this provider cannot serve.

        Checked on the client, without I/O; the default accepts every sensor.
        Providers with a known band catalogue name the bands they lack and
        list those they have.
        """

    @classmethod
    def preflight(cls, options: Mapping[str, Any] | None = None) -> None:
        """One cheap check of the environment on the client (credentials, endpoints).

        Called once per request before a cluster starts; the default does
        nothing.  Raises :class:`ProviderError` with the fix.
        """

    @classmethod
    def concurrency_limit(cls, options: Mapping[str, Any] | None = None) -> int | None:
        """Cluster-wide cap of concurrent requests for a provider built with ``options``.

        Default :attr:`max_concurrency`; providers with a per-account quota
        let an option override it.
        """
        return cls.max_concurrency

    @classmethod
    def worker_plugin(cls, options: Mapping[str, Any] | None = None) -> Any:
        """A ``distributed`` worker plugin initialising this provider on every worker, or ``None``.

        It must hold plain values only (no credentials): it travels to the workers.
        """
        return None

    # -- the contract ----------------------------------------------------------
    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        bins: Sequence[tuple[date, date]] | None = None,
    ) -> FetchResult:
        """Fetch a ROI on the common grid.

        Parameters
        ----------
        spatial : BBox or PointBuffer
            The ROI.
        temporal : TemporalSpec or None
            The time window (``None``: the provider's default).
        sensor : SensorSpec
            Collection, bands, scale and compositing.
        n_frames : int, optional
            When given, return ``(T, C, H, W)`` with ``T = n_frames`` equal
            time bins; otherwise one composite ``(C, H, W)``.
        bins : sequence of (date, date), optional
            With ``n_frames``: the end-exclusive time bins to composite, one
            frame each, instead of equal bins (olmoearth's 30-day bins).

        Returns
        -------
        FetchResult
        """
        window = grid_window(spatial, sensor.scale_m)
        # a collection composed of other collections' bands (rs-embed's MODIS proxy, providers/composed.py)
        from rs_embed_dask.providers.composed import composed_collection, fetch_composed

        composed = composed_collection(sensor.collection) is not None
        if composed and n_frames is not None:
            raise ProviderError(f"{sensor.collection!r} is served as one composite only, not as {n_frames} frames.")
        if n_frames is None:
            dates = temporal.date_range() if temporal is not None else None
            if composed:
                arr, m = fetch_composed(self, window, dates, sensor)
            else:
                arr, m = self.fetch_window(window, dates, sensor)
            data, meta = self._finish(arr, sensor, window), dict(m)
        else:
            if temporal is None:
                raise ProviderError(f"A {n_frames}-frame fetch needs a temporal range.")
            spans = list(bins) if bins is not None else split_date_range(*temporal.date_range(), int(n_frames))
            arrays, meta = self.fetch_frames(window, spans, sensor)
            data = np.stack([self._finish(a, sensor, window) for a in arrays], axis=0)
            details = meta.get("frames") or [{} for _ in spans]
            meta["frames"] = [
                {"start": a.isoformat(), "end": b.isoformat(), **d}
                for (a, b), d in zip(spans, details, strict=True)
            ]
        meta.update(
            provider=self.name,
            grid=window.to_dict(),
            bands=list(sensor.bands),
            collection=sensor.collection,
        )
        return FetchResult(data=data, meta=meta)

    def fetch_window(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(C, H, W)`` pixels of ``window`` composited over ``dates``.

        Subclasses implement this; the base class handles frames, no-data and
        the metadata common to every provider.
        """
        raise NotImplementedError

    def fetch_frames(
        self, window: GridWindow, bins: list[tuple[date, date]], sensor: SensorSpec
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Return one ``(C, H, W)`` composite of ``window`` per time bin, and the fetch metadata.

        ``bins`` are consecutive end-exclusive ranges covering the requested
        range.  The default fetches each bin with :meth:`fetch_window` and
        merges their metadata; providers that search the whole range once and
        composite it per bin override this.  A ``"frames"`` entry in the
        metadata, one dict per bin, adds details to the ``start``/``end``
        entries :meth:`fetch` writes.
        """
        arrays: list[np.ndarray] = []
        meta: dict[str, Any] = {}
        for dates in bins:
            arr, m = self.fetch_window(window, dates, sensor)
            arrays.append(arr)
            meta.update(m)
        return arrays, meta

    @staticmethod
    def _finish(arr: np.ndarray, sensor: SensorSpec, window: GridWindow) -> np.ndarray:
        out = np.ascontiguousarray(arr, dtype=np.float32)
        if out.shape != (len(sensor.bands), window.height, window.width):
            raise ProviderError(
                f"provider returned shape {out.shape}, expected "
                f"{(len(sensor.bands), window.height, window.width)} for window {window}"
            )
        if not np.isfinite(out).all():
            out = np.where(np.isfinite(out), out, np.float32(sensor.fill_value))
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={shown(v)}" for k, v in sorted(self.options.items()))
        return f"{type(self).__name__}({opts})"
