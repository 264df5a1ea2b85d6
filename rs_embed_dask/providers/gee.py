"""``gee``: Google Earth Engine through ``earthengine-api``, on the common grid.

Pixels come from ``ee.data.computePixels`` with an explicit grid (EPSG:3857,
the window's north-up affine transform and dimensions, see
:func:`pixel_grid`) in the binary ``NUMPY_NDARRAY`` format: one request per
ROI and frame instead of rs-embed's ``sampleRectangle().getInfo()`` JSON
(capped at 262,144 pixels).  A request over Earth Engine's limits (48 MiB
including one mask byte per pixel and band, 32,768 pixels a side) is split on
lattice lines and reassembled exactly.

Images are built as rs-embed builds them (:mod:`.gee_images`): collection,
``filterBounds``, ``filterDate``, the scene cloud filter, median or
latest-on-top mosaic, band aliases; plus an optional per-pixel Sentinel-2
cloud mask (``cloud_mask="scl"`` or ``"cs_plus"``), Sentinel-1 GRD with
rs-embed's relax-IW-on-empty rule, and Landsat Collection 2 L2.

Earth Engine is initialised once per process (:mod:`.ee_session`) and, for an
export, on every worker by a worker plugin.  Transient failures (HTTP 429,
5xx, time-outs) are retried with exponential backoff and full jitter.
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections.abc import Mapping
from datetime import date
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ProviderError, RSEmbedWarning, SpecError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import WEB_MERCATOR, GridWindow, split_window
from rs_embed_dask.pipeline import run_with_retry
from rs_embed_dask.providers import ee_session
from rs_embed_dask.providers import gee_images as gi
from rs_embed_dask.providers.base import Provider, ProviderOption
from rs_embed_dask.validation.secrets import SECRET_OPTION_NAMES, looks_like_secret

__all__ = ["MAX_REQUEST_BYTES", "MAX_SIDE", "GEEProvider", "decode_pixels", "pixel_grid"]

#: computePixels payload limit (uncompressed, mask byte included).
MAX_REQUEST_BYTES = 48 * 2**20
#: computePixels limit on each side of the grid.
MAX_SIDE = 32768
_BYTES_PER_SAMPLE = 4 + 1  # float32 + Earth Engine's mask byte


def pixel_grid(window: GridWindow) -> dict[str, Any]:
    """The ``grid`` of a computePixels request for ``window`` (north-up, EPSG:3857)."""
    minx, _, _, maxy = window.bounds
    s = float(window.scale_m)
    return {
        "dimensions": {"width": int(window.width), "height": int(window.height)},
        "affineTransform": {
            "scaleX": s, "shearX": 0.0, "translateX": float(minx),
            "shearY": 0.0, "scaleY": -s, "translateY": float(maxy),
        },
        "crsCode": WEB_MERCATOR,
    }  # fmt: skip


def decode_pixels(payload: Any, n_bands: int, shape: tuple[int, int]) -> np.ndarray:
    """A ``NUMPY_NDARRAY`` payload (structured ``(H, W)``, one field per band) as float32 ``(C, H, W)``.

    The grid's negative ``scaleY`` makes row 0 the northern edge, so the
    array is already north-up.
    """
    arr = np.asarray(payload)
    if arr.dtype.names is not None:
        names = arr.dtype.names
        if len(names) != n_bands:
            raise ProviderError(f"Earth Engine returned bands {list(names)}; expected {n_bands} band(s).")
        out = np.stack([arr[n].astype(np.float32, copy=False) for n in names])
    elif arr.ndim == 3 and arr.shape[-1] == n_bands:
        out = np.moveaxis(arr, -1, 0).astype(np.float32)
    else:
        raise ProviderError(f"Earth Engine returned an array of shape {arr.shape} and dtype {arr.dtype}.")
    if out.shape[1:] != tuple(shape):
        raise ProviderError(f"Earth Engine returned {out.shape[1:]} pixels; the grid asked for {tuple(shape)}.")
    return out


# Band catalogues of the collections whose bands are fixed (Earth Engine's data catalogue);
# other collections are not checked on the client.
_S2_COMMON = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12", "QA10", "QA20", "QA60",
    "MSK_CLASSI_OPAQUE", "MSK_CLASSI_CIRRUS", "MSK_CLASSI_SNOW_ICE",
)  # fmt: skip
_S2_SR_ONLY = ("AOT", "WVP", "SCL", "TCI_R", "TCI_G", "TCI_B", "MSK_CLDPRB", "MSK_SNWPRB")
_S1_BANDS = ("VV", "VH", "HH", "HV", "angle")


def band_catalog(collection: str) -> tuple[str, ...] | None:
    """The bands of a Sentinel-2 or Sentinel-1 collection (after rs-embed's aliases); ``None`` if not known."""
    c = collection.strip().upper()
    kind = gi.collection_kind(collection)
    if kind == "s2":
        return _S2_COMMON + (_S2_SR_ONLY if "S2_SR" in c else ("B10",))
    if kind == "s1":
        return _S1_BANDS
    return None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ProviderError(f"gee provider option {name} must be an integer >= 1; got {value!r}.")
    return int(value)


class GEEProvider(Provider):
    """Earth Engine pixels on the common grid.

    Parameters
    ----------
    project : str, optional
        Cloud project (default ``$EE_PROJECT``, then ``$GOOGLE_CLOUD_PROJECT``).
    credentials_file : str, optional
        *Path* of a service-account JSON key readable by every worker (default
        ``$GOOGLE_APPLICATION_CREDENTIALS`` when it is one, else the stored
        ``earthengine authenticate`` credentials).  Key contents are refused.
    url : str, optional
        API endpoint, e.g. ``"https://earthengine-highvolume.googleapis.com"``.
    max_concurrency : int, default 40
        Cluster-wide cap of concurrent requests (Earth Engine's default quota
        is 40 per project).
    max_retries : int, default 5
        Retries of a transient failure (HTTP 429 / 5xx, time-out) per request.
    retry_backoff_s : float, default 1.0
        First backoff; the n-th wait is uniform in ``[0, retry_backoff_s * 2**n]`` (at most 60 s).
    cloud_mask : {None, "scl", "cs_plus"}
        Per-pixel cloud mask for Sentinel-2: scene classes ``scl_classes`` of
        the L2A ``SCL`` band, or Cloud Score+ ``cs_cdf < cloud_score_threshold``.
    cloud_score_threshold : float, default 0.6
    scl_classes : tuple of int, default (3, 8, 9, 10)
    max_request_bytes : int, default 48 MiB
        Payload per request (mask byte included) above which a window is split.
    """

    name = "gee"
    max_concurrency = 40
    requires = ("ee",)
    extra = "gee"

    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "project", "credentials_file", "url", "max_concurrency", "max_retries", "retry_backoff_s",
        "cloud_mask", "cloud_score_threshold", "scl_classes", "max_request_bytes",
    )  # fmt: skip
    option_specs = (
        ProviderOption("project", (str,), nullable=True),
        ProviderOption("credentials_file", (str, os.PathLike), nullable=True, path=True,
                       doc="path of a service-account JSON key every worker can read"),
        ProviderOption("url", (str,), nullable=True),
        ProviderOption("max_concurrency", (numbers.Integral,), minimum=1),
        ProviderOption("max_retries", (numbers.Integral,), minimum=0),
        ProviderOption("retry_backoff_s", (numbers.Real,), minimum=0.0),
        ProviderOption("cloud_mask", (str,), nullable=True, choices=gi.CLOUD_MASKS),
        ProviderOption("cloud_score_threshold", (numbers.Real,), minimum=0.0, maximum=1.0),
        ProviderOption("scl_classes", (list, tuple), items=(numbers.Integral,)),
        ProviderOption("max_request_bytes", (numbers.Integral,), minimum=1, maximum=MAX_REQUEST_BYTES),
    )  # fmt: skip
    _local_caps: ClassVar[dict[int, threading.BoundedSemaphore]] = {}
    _caps_lock = threading.Lock()

    def __init__(
        self,
        *,
        project: str | None = None,
        credentials_file: str | None = None,
        url: str | None = None,
        max_concurrency: int = 40,
        max_retries: int = 5,
        retry_backoff_s: float = 1.0,
        cloud_mask: str | None = None,
        cloud_score_threshold: float = 0.6,
        scl_classes: tuple[int, ...] | list[int] = gi.DEFAULT_SCL_CLASSES,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        **unknown: Any,
    ) -> None:
        self._check_options(unknown)
        if credentials_file is not None and not isinstance(credentials_file, str):
            raise ProviderError("gee provider option credentials_file must be a path (str) to a key file.")
        if looks_like_secret(credentials_file):
            raise ProviderError(
                "gee provider option credentials_file looks like the contents of a key (withheld here): "
                "pass the path of the service-account JSON key, never its contents."
            )
        if cloud_mask not in gi.CLOUD_MASKS:
            raise ProviderError(f"gee provider option cloud_mask must be one of {list(gi.CLOUD_MASKS)}; got {cloud_mask!r}.")
        if not 0.0 <= float(cloud_score_threshold) <= 1.0:
            raise ProviderError(f"gee provider option cloud_score_threshold must be in [0, 1]; got {cloud_score_threshold!r}.")
        if int(max_retries) < 0 or float(retry_backoff_s) < 0:
            raise ProviderError("gee provider options max_retries and retry_backoff_s must be >= 0.")
        mrb = _positive_int("max_request_bytes", max_request_bytes)
        if mrb > MAX_REQUEST_BYTES:
            raise ProviderError(f"gee provider option max_request_bytes must be <= {MAX_REQUEST_BYTES} (Earth Engine's limit).")
        super().__init__(
            project=project, credentials_file=credentials_file, url=url,
            max_concurrency=_positive_int("max_concurrency", max_concurrency),
            max_retries=int(max_retries), retry_backoff_s=float(retry_backoff_s),
            cloud_mask=cloud_mask, cloud_score_threshold=float(cloud_score_threshold),
            scl_classes=tuple(int(c) for c in scl_classes), max_request_bytes=mrb,
        )  # fmt: skip
        self.project: str | None = project

    @classmethod
    def _check_options(cls, unknown: Mapping[str, Any]) -> None:
        for key in unknown:
            if key in SECRET_OPTION_NAMES:
                raise ProviderError(
                    f"gee provider option {key!r} is not accepted: credentials must never travel in the "
                    "task graph. Pass credentials_file=<path of a service-account JSON key> instead."
                )
        if unknown:
            raise ProviderError(f"Unknown gee provider option(s) {sorted(unknown)}; allowed: {list(cls._OPTIONS)}.")

    # -- cluster hooks -------------------------------------------------------------------------
    @classmethod
    def concurrency_limit(cls, options: Mapping[str, Any] | None = None) -> int | None:
        """``max_concurrency`` from the options (default 40 requests per project)."""
        value = (options or {}).get("max_concurrency", cls.max_concurrency)
        return _positive_int("max_concurrency", value)

    @classmethod
    def worker_plugin(cls, options: Mapping[str, Any] | None = None) -> Any:
        """An :class:`~.ee_session.EarthEngineInitPlugin` for these options."""
        opts = dict(options or {})
        return ee_session.EarthEngineInitPlugin(
            project=opts.get("project"), credentials_file=opts.get("credentials_file"), url=opts.get("url")
        )

    @classmethod
    def check_sensor(cls, sensor: SensorSpec, options: Mapping[str, Any] | None = None) -> None:
        """Refuse bands a Sentinel-2 / Sentinel-1 collection does not have (others are not checked)."""
        known = band_catalog(sensor.collection)
        if known is None:
            return
        resolved = gi.resolve_band_aliases(sensor.collection, tuple(sensor.bands))
        missing = [b for b, r in zip(sensor.bands, resolved, strict=True) if r not in known]
        if missing:
            raise SpecError(
                f"SensorSpec.bands: Earth Engine collection {sensor.collection!r} has no band(s) {missing}; "
                f"bands: {list(known)} (aliases such as RED, NIR, SWIR1 are mapped)."
            )

    @classmethod
    def preflight(cls, options: Mapping[str, Any] | None = None) -> None:
        """Initialise Earth Engine here and make one cheap authenticated call (once per process).

        Credentials that do not authenticate, an unknown project or a key
        file that cannot be read fail on the client, before any worker starts.
        """
        opts = dict(options or {})
        ee_session.verify(project=opts.get("project"), credentials_file=opts.get("credentials_file"), url=opts.get("url"))

    def ensure_ready(self) -> None:
        """Initialise Earth Engine in this process (once); :class:`ProviderError` with the fix."""
        self.project = ee_session.initialize(
            project=self.options["project"],
            credentials_file=self.options["credentials_file"],
            url=self.options["url"],
        )

    # -- requests ------------------------------------------------------------------------------
    def _cap(self) -> threading.BoundedSemaphore:
        n = int(self.options["max_concurrency"])
        with self._caps_lock:
            sem = self._local_caps.get(n)
            if sem is None:
                sem = self._local_caps[n] = threading.BoundedSemaphore(n)
            return sem

    def _call(self, fn: Any, what: str) -> Any:
        """Run one ``ee`` request under the process cap, translated and retried."""

        def attempt() -> Any:
            with self._cap():
                try:
                    return fn()
                except Exception as exc:
                    raise ee_session.as_provider_error(exc, what) from exc

        return run_with_retry(
            attempt,
            retries=int(self.options["max_retries"]),
            backoff_s=float(self.options["retry_backoff_s"]),
            transient_only=True,
        )

    def _compute_pixels(self, image: Any, window: GridWindow, n_bands: int) -> tuple[np.ndarray, int]:
        """Pixels of ``image`` on ``window``, split into requests within the limits."""
        import ee

        max_px = max(1, int(self.options["max_request_bytes"]) // (n_bands * _BYTES_PER_SAMPLE))
        parts = split_window(window, max_pixels=max_px, max_side=MAX_SIDE)
        out = np.empty((n_bands, window.height, window.width), dtype=np.float32)
        n = 0
        for row in parts:
            for part in row:
                params = {"expression": image, "fileFormat": "NUMPY_NDARRAY", "grid": pixel_grid(part)}
                payload = self._call(lambda p=params: ee.data.computePixels(p), "computePixels")
                y0, x0 = part.row_off - window.row_off, part.col_off - window.col_off
                out[:, y0 : y0 + part.height, x0 : x0 + part.width] = decode_pixels(payload, n_bands, part.shape)
                n += 1
        return out, n

    def _size(self, collections: list[Any]) -> list[int]:
        """Scene counts of several collections in one request."""
        import ee

        counts = self._call(lambda: ee.List([c.size() for c in collections]).getInfo(), "collection size")
        return [int(c) for c in counts]

    def _query(self, sensor: SensorSpec, dates: tuple[date, date] | None, window: GridWindow, **kw: Any) -> gi.Query:
        return gi.build_query(
            sensor, dates, window,
            cloud_mask=self.options["cloud_mask"],
            cloud_score_threshold=self.options["cloud_score_threshold"],
            scl_classes=self.options["scl_classes"], **kw,
        )  # fmt: skip

    def _empty_error(self, query: gi.Query, window: GridWindow, counts: str = "") -> ProviderError:
        return ProviderError(f"No images found for the selected region/time window: {query.describe(window)}{counts}.")

    def fetch_query(
        self, query: gi.Query, window: GridWindow, sensor: SensorSpec, bands: tuple[str, ...]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Composite ``query`` and fetch ``bands`` on ``window``; raw units, fill applied."""
        self.ensure_ready()
        image = gi.final_image(gi.composite(query.collection, sensor.composite), bands, sensor.fill_value)
        data, n_req = self._compute_pixels(image, window, len(bands))
        if not np.isfinite(sensor.fill_value):
            data[data == np.float32(gi.NODATA_SENTINEL)] = np.float32(sensor.fill_value)
        meta = {
            "collection_used": query.collection_id,
            "filters": list(query.filters),
            "composite": sensor.composite,
            "bands_requested": list(bands),
            "date_window": [query.dates[0].isoformat(), query.dates[1].isoformat()] if query.dates else None,
            "n_requests": n_req,
            **query.extra_meta,
        }
        return data, meta

    def fetch_window(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One composite of ``window`` over ``dates``; an empty collection is a :class:`ProviderError`."""
        bands = gi.resolve_band_aliases(sensor.collection, tuple(sensor.bands))
        query = self._query(sensor, dates, window)
        try:
            return self.fetch_query(query, window, sensor, bands)
        except TransientProviderError:
            raise
        except ProviderError as exc:
            # an empty collection composites to an image without bands, so ``select`` fails:
            # count the scenes only now, which saves a request on every successful fetch
            failure = exc
        if gi.collection_kind(sensor.collection) == "s1" and sensor.s1_require_iw:
            relaxed = self._query(sensor, dates, window, require_iw=False)
            n_iw, n_any = self._size([query.collection, relaxed.collection])
            if n_iw == 0 and n_any > 0 and sensor.s1_relax_iw_on_empty:
                return self.fetch_query(relaxed, window, sensor, bands)
            if n_iw == 0:
                raise self._empty_error(query, window, f" (scenes: IW {n_iw}, any mode {n_any})") from failure
            raise failure
        if self._size([query.collection])[0] == 0:
            raise self._empty_error(query, window) from failure
        raise failure

    def fetch_frames(
        self, window: GridWindow, bins: list[tuple[date, date]], sensor: SensorSpec
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Per-bin composites (see :meth:`Provider.fetch_frames`) with rs-embed's empty-bin rule.

        The scenes of every bin are counted in one request; an empty bin is
        back-filled with the composite of the whole window (and flagged
        ``empty`` in ``meta["frames"]``), a window without any scene is a
        :class:`ProviderError`.
        """
        self.ensure_ready()
        whole = (bins[0][0], bins[-1][1])
        bands = gi.resolve_band_aliases(sensor.collection, tuple(sensor.bands))
        queries = [self._query(sensor, b, window) for b in bins]
        counts = self._size([q.collection for q in queries])
        frames: list[np.ndarray] = []
        metas: list[dict[str, Any]] = []
        backfill: tuple[np.ndarray, dict[str, Any]] | None = None
        n_req = 1  # the scene count
        for q, n in zip(queries, counts, strict=True):
            if n > 0:
                arr, m = self.fetch_query(q, window, sensor, bands)
                n_req += int(m["n_requests"])
            else:
                if backfill is None:
                    backfill = self.fetch_window(window, whole, sensor)
                    n_req += int(backfill[1]["n_requests"])
                arr, m = backfill
            frames.append(arr)
            metas.append(m)
        n_empty = sum(1 for n in counts if n == 0)
        if n_empty:
            warnings.warn(
                f"gee: {n_empty} of {len(bins)} time bins have no scene and repeat the whole-window "
                f"composite ({sensor.collection}, {whole[0]}..{whole[1]}).",
                RSEmbedWarning,
                stacklevel=3,  # the caller of ``fetch``
            )
        meta = dict(metas[-1])
        meta.update(
            frames=[{"n_images": int(n), "empty": n == 0} for n in counts],
            n_empty=n_empty,
            n_requests=n_req,
        )
        return frames, meta

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()) if v is not None)
        return f"GEEProvider({opts})"
