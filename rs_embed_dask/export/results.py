"""Result types of :func:`rs_embed_dask.load_export`, lazy where it matters.

:class:`ExportResult` and :class:`ModelResult` carry rs-embed's fields and
methods.  Arrays are not read when an export is loaded: every
:class:`ModelResult` holds a dask array (``embeddings_lazy`` /
``inputs_lazy``) and computes a numpy array the first time ``embeddings`` or
``inputs`` is read (then caches it), so code written for rs-embed keeps
working with plain arrays.  :meth:`ExportResult.to_xarray` builds a labelled,
still lazy :class:`xarray.Dataset`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

__all__ = [
    "ITEM_FAILED",
    "ITEM_MISSING",
    "ITEM_OK",
    "ITEM_RAGGED",
    "ExportResult",
    "LazyJSONList",
    "ModelResult",
    "parse_timestamp",
    "spatial_centre",
]

#: Per-item status codes (``ModelResult.item_status`` and the zarr ``status`` arrays).
ITEM_MISSING, ITEM_OK, ITEM_FAILED, ITEM_RAGGED = 0, 1, 2, 3
_FLAG_MEANINGS = "missing ok failed ok_ragged"


class LazyJSONList(Sequence):
    """A read-only list of dicts decoded from a 1-D array of JSON strings on access.

    Parameters
    ----------
    array : array-like
        1-D array of JSON strings (a zarr array, numpy array, ...); read one
        chunk at a time.  Empty strings decode to ``{}``.
    chunk : int, optional
        Rows read at once (default: the array's chunk length, else 4096).
    """

    def __init__(self, array: Any, chunk: int | None = None) -> None:
        self._array = array
        self._n = int(array.shape[0])
        chunks = getattr(array, "chunks", None)
        step = chunk or (int(chunks[0]) if chunks and isinstance(chunks[0], int) else 4096)
        self._step = max(1, step)
        self._block: tuple[int, list[Any]] | None = None

    def __len__(self) -> int:
        return self._n

    def _rows(self, b: int) -> list[Any]:
        if self._block is None or self._block[0] != b:
            raw = self._array[b * self._step : min(self._n, (b + 1) * self._step)]
            self._block = (b, [str(s) for s in np.asarray(raw).tolist()])
        return self._block[1]

    @staticmethod
    def _decode(text: str) -> Any:
        return json.loads(text) if text else {}

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} items")
        return self._decode(self._rows(i // self._step)[i % self._step])

    def __iter__(self) -> Iterator[Any]:
        for b in range(0, (self._n + self._step - 1) // self._step):
            yield from (self._decode(t) for t in self._rows(b))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == self._n and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyJSONList(n={self._n})"


def _as_dask(value: Any) -> Any:
    if value is None:
        return None
    import dask.array as da

    return value if isinstance(value, da.Array) else da.from_array(np.asarray(value), chunks=-1)


class ModelResult:
    """One model's results across all items of an export.

    rs-embed's fields and constructor, as a plain class rather than a
    dataclass: arrays given as dask arrays are read on first access.

    Parameters
    ----------
    name : str
        The model name as written in the export.
    status : {"ok", "partial", "failed"}
        Aggregate status.
    embeddings, inputs : numpy.ndarray, dask.array.Array or None
        ``(n_items, D)`` / ``(n_items, D, h, w)`` embeddings and
        ``(n_items, C, H, W)`` / ``(n_items, T, C, H, W)`` inputs, float32,
        NaN rows where an item has none.
    meta : Sequence[dict] or None
        Per-item embedding metadata, ``{}`` where an item has none.
    error : str, optional
        The first error when the model failed everywhere.
    errors : Mapping[int, str], optional
        Error text by item index for every failed item.
    item_status : numpy.ndarray, optional
        ``(n_items,)`` int8 codes: 0 missing, 1 ok, 2 failed, 3 ok but stored
        ragged (its row in the dense array is NaN).
    embeddings_ragged, inputs_ragged : Mapping[int, array], optional
        Items whose arrays do not fit the dense shape, by item index (lazy).
    """

    def __init__(
        self,
        name: str,
        status: str,
        embeddings: Any,
        inputs: Any,
        meta: Sequence[dict[str, Any]] | None,
        error: str | None = None,
        *,
        errors: Mapping[int, str] | None = None,
        item_status: np.ndarray | None = None,
        embeddings_ragged: Mapping[int, Any] | None = None,
        inputs_ragged: Mapping[int, Any] | None = None,
        cache: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self.status = status
        self.meta = meta if meta is not None else []
        self.error = error
        self.errors: Mapping[int, str] = errors if errors is not None else {}
        self.item_status = item_status
        self.embeddings_ragged: Mapping[int, Any] = embeddings_ragged or {}
        self.inputs_ragged: Mapping[int, Any] = inputs_ragged or {}
        self._cache = cache if cache is not None else {}
        self._src: dict[str, Any] = {}
        self._np: dict[str, np.ndarray | None] = {}
        self._set("embeddings", embeddings)
        self._set("inputs", inputs)

    def _set(self, what: str, value: Any) -> None:
        self._src[what] = value
        self._np[what] = value if (value is None or isinstance(value, np.ndarray)) else None

    def _get(self, what: str) -> np.ndarray | None:
        src = self._src[what]
        if self._np[what] is None and src is not None:
            key = getattr(src, "name", None)
            arr = self._cache.get(key) if key else None
            if arr is None:
                arr = np.asarray(src.compute(scheduler="threads"))
                if key:
                    self._cache[key] = arr
            self._np[what] = arr
        return self._np[what]

    @property
    def embeddings(self) -> np.ndarray | None:
        """Embeddings as numpy (read and cached on first access), or ``None``."""
        return self._get("embeddings")

    @embeddings.setter
    def embeddings(self, value: Any) -> None:
        self._set("embeddings", value)

    @property
    def inputs(self) -> np.ndarray | None:
        """Model inputs as numpy (read and cached on first access), or ``None``."""
        return self._get("inputs")

    @inputs.setter
    def inputs(self, value: Any) -> None:
        self._set("inputs", value)

    @property
    def embeddings_lazy(self) -> Any:
        """Embeddings as a dask array (nothing read), or ``None``."""
        return _as_dask(self._src["embeddings"])

    @property
    def inputs_lazy(self) -> Any:
        """Inputs as a dask array (nothing read), or ``None``."""
        return _as_dask(self._src["inputs"])

    @property
    def loaded(self) -> bool:
        """Whether the embeddings are in memory (always ``True`` when there are none)."""
        return self._src["embeddings"] is None or self._np["embeddings"] is not None

    def __repr__(self) -> str:
        def shape(v: Any) -> Any:
            return None if v is None else tuple(v.shape)

        return (
            f"ModelResult(name={self.name!r}, status={self.status!r}, "
            f"embeddings={shape(self._src['embeddings'])}, inputs={shape(self._src['inputs'])}, "
            f"n_meta={len(self.meta)}, error={self.error!r})"
        )

    def _repr_html_(self) -> str:
        from rs_embed_dask.export.results_html import model_result_html

        return model_result_html(self)


def spatial_centre(spatial: Mapping[str, Any] | None) -> tuple[float, float]:
    """``(lon, lat)`` in degrees of a serialised ROI: the point, or the box centre.

    Parameters
    ----------
    spatial : Mapping
        ``{"lon", "lat", ...}`` (PointBuffer) or ``{"minlon", "minlat",
        "maxlon", "maxlat", ...}`` (BBox), optionally with ``crs``.

    Returns
    -------
    tuple of float
        NaNs when the dict is neither or cannot be converted to EPSG:4326.
    """
    from rs_embed_dask.core.specs import BBox, PointBuffer

    s = dict(spatial or {})
    try:
        if {"lon", "lat"} <= s.keys():
            spec: Any = PointBuffer(
                float(s["lon"]),
                float(s["lat"]),
                float(s.get("buffer_m", 0.0)),
                crs=str(s.get("crs") or "EPSG:4326"),
            )
        elif {"minlon", "minlat", "maxlon", "maxlat"} <= s.keys():
            spec = BBox(
                float(s["minlon"]),
                float(s["minlat"]),
                float(s["maxlon"]),
                float(s["maxlat"]),
                crs=str(s.get("crs") or "EPSG:4326"),
            )
        else:
            return (float("nan"), float("nan"))
        if spec.crs != "EPSG:4326":
            spec = spec.to_wgs84()
        lon, lat = spec.center
        return (float(lon), float(lat))
    except Exception:
        return (float("nan"), float("nan"))


def parse_timestamp(text: Any) -> datetime | None:
    """Parse rs-embed timestamps, tolerating its ``+00:00Z`` suffix."""
    if not isinstance(text, str) or not text:
        return None
    t = re.sub(r"([+-]\d\d:\d\d)Z$", r"\1", text.strip())
    try:
        return datetime.fromisoformat(t)
    except ValueError:
        return None


@dataclass
class ExportResult:
    """A loaded export (rs-embed's fields, plus format, path and lazy extras).

    Attributes
    ----------
    layout : {"combined", "per_item"}
        Export layout (a zarr store is ``"combined"``).
    spatials : Sequence[dict]
        One serialised ROI per item (lazy for zarr stores).
    temporal : dict or None
        The temporal spec (``year`` is ``None`` for range specs written by
        rs-embed, which stored a function repr there).
    n_items : int
        Number of items.
    status : {"ok", "partial", "failed", "running"}
        Overall status.
    models : dict[str, ModelResult]
        Results by model name, as written.
    manifest : dict
        The raw manifest (combined) or the lowest-index item's (per-item).
    format : {"npz", "netcdf", "zarr"}
        Array file format.
    path : str
        What was loaded.
    """

    layout: str
    spatials: Sequence[dict[str, Any]]
    temporal: dict[str, Any] | None
    n_items: int
    status: str
    models: dict[str, ModelResult]
    manifest: dict[str, Any]
    _: KW_ONLY
    format: str = ""
    path: str = ""
    item_names: Sequence[str] | None = field(default=None, repr=False)
    lon: Any = field(default=None, repr=False)
    lat: Any = field(default=None, repr=False)
    closers: list[Callable[[], Any]] = field(default_factory=list, repr=False)

    def embedding(self, model: str) -> np.ndarray:
        """Return the ``(n_items, ...)`` embeddings of ``model`` as numpy.

        Raises
        ------
        KeyError
            The model is not in the export.
        ValueError
            The model has no embeddings (it failed everywhere).
        """
        if model not in self.models:
            raise KeyError(f"Model {model!r} not found in export. Available models: {sorted(self.models)}")
        result = self.models[model]
        emb = result.embeddings
        if emb is None:
            raise ValueError(
                f"Model {model!r} has no embeddings (status={result.status!r}). Error: {result.error}"
            )
        return emb

    def __repr__(self) -> str:
        return (
            f"ExportResult(layout={self.layout!r}, format={self.format!r}, n_items={self.n_items}, "
            f"status={self.status!r}, models={list(self.models)}, path={self.path!r})"
        )

    def _repr_html_(self) -> str:
        from rs_embed_dask.export.results_html import export_result_html

        return export_result_html(self)

    @property
    def ok_models(self) -> list[str]:
        """Names of models whose status is ``"ok"``."""
        return [n for n, r in self.models.items() if r.status == "ok"]

    @property
    def failed_models(self) -> list[str]:
        """Names of models whose status is ``"failed"``."""
        return [n for n, r in self.models.items() if r.status == "failed"]

    @property
    def created_at(self) -> datetime | None:
        """The manifest's ``created_at`` as a datetime (rs-embed's ``+00:00Z`` accepted)."""
        return parse_timestamp(self.manifest.get("created_at"))

    def close(self) -> None:
        """Release open file handles (NetCDF); arrays not yet read become unreadable."""
        for fn in self.closers:
            fn()
        self.closers.clear()

    def __enter__(self) -> ExportResult:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _centres(self) -> tuple[Any, Any]:
        if self.lon is not None and self.lat is not None:
            return self.lon, self.lat
        pts = [spatial_centre(s) for s in self.spatials]
        lon = np.array([p[0] for p in pts], dtype=np.float64).reshape(-1)
        lat = np.array([p[1] for p in pts], dtype=np.float64).reshape(-1)
        if lon.shape[0] != self.n_items:
            lon = np.full(self.n_items, np.nan)
            lat = np.full(self.n_items, np.nan)
        return lon, lat

    def to_xarray(self, *, inputs: bool = True) -> Any:
        """A labelled, lazy :class:`xarray.Dataset` of the export.

        Dimension ``item`` with coordinates ``lon``/``lat`` (ROI centres in
        degrees) and ``name`` (per-item file names, when known); one variable
        per model, ``<model>`` with dims ``(item, <model>_dim)`` or ``(item,
        <model>_dim, <model>_y, <model>_x)``; ``input__<model>`` with dims
        ``(item, [input__<model>_time,] input__<model>_band, _y, _x)`` when
        inputs were saved; ``status__<model>`` int8 codes (CF
        ``flag_values``/``flag_meanings``: missing, ok, failed, ok_ragged).
        Nothing is read until values are asked for.

        Parameters
        ----------
        inputs : bool, default True
            Include the model inputs.

        Returns
        -------
        xarray.Dataset
        """
        import dask.array as da
        import xarray as xr

        lon, lat = self._centres()
        coords: dict[str, Any] = {
            "item": np.arange(self.n_items),
            "lon": ("item", lon, {"units": "degrees_east", "long_name": "ROI centre longitude"}),
            "lat": ("item", lat, {"units": "degrees_north", "long_name": "ROI centre latitude"}),
        }
        if self.item_names is not None:
            coords["name"] = ("item", np.asarray(list(self.item_names), dtype=str))
        ds = xr.Dataset(coords=coords)
        for name, mr in self.models.items():
            emb = mr.embeddings_lazy
            if emb is not None:
                tail = {2: ("dim",), 4: ("dim", "y", "x")}.get(
                    emb.ndim, tuple(f"d{i}" for i in range(1, emb.ndim))
                )
                ds[name] = xr.DataArray(
                    emb, dims=("item", *(f"{name}_{t}" for t in tail)), attrs={"model": name}
                )
            inp = mr.inputs_lazy if inputs else None
            if inp is not None:
                tail = {4: ("band", "y", "x"), 5: ("time", "band", "y", "x")}.get(
                    inp.ndim, tuple(f"d{i}" for i in range(1, inp.ndim))
                )
                ds[f"input__{name}"] = xr.DataArray(
                    inp, dims=("item", *(f"input__{name}_{t}" for t in tail)), attrs={"model": name}
                )
            codes = mr.item_status
            if codes is None:
                codes = np.full(self.n_items, ITEM_OK, dtype=np.int8)
            if not isinstance(codes, da.Array):
                codes = np.asarray(codes, dtype=np.int8)
            ds[f"status__{name}"] = xr.DataArray(
                codes,
                dims=("item",),
                attrs={
                    "model": name,
                    "model_status": mr.status,
                    "flag_values": np.array([0, 1, 2, 3], dtype=np.int8),
                    "flag_meanings": _FLAG_MEANINGS,
                },
            )
        ds.attrs.update(
            {
                "layout": self.layout,
                "format": self.format,
                "status": self.status,
                "n_items": int(self.n_items),
                "temporal": json.dumps(self.temporal),
            }
        )
        return ds
