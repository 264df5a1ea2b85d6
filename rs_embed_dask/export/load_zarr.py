"""Reader of the zarr stores written by ``export_batch(..., format="zarr")``.

Layout (root group of a zarr v3 store; per-item arrays chunked along the item
axis by the export's ``chunk_size``)::

    attrs["rs_embed_dask"]            format_version, layout, n_items, chunk_size,
                                      complete, request_fingerprint, models
                                      [{name, key, input_key, sensor, describe}],
                                      inputs, temporal, output, backend, device,
                                      manifest (rs-embed-style, {} while running)
    spatials (n,) str                 JSON of each ROI
    lon, lat (n,) float64             ROI centres
    models/<key>/embeddings           (n, D) / (n, D, h, w) float32, NaN where not ok
    models/<key>/status               (n,) int8: 0 not written, 1 ok, 2 failed, 3 ok, ragged
    models/<key>/error, meta          (n,) str ('' when ok / failed)
    models/<key>/ragged/<i>           item i when its shape differs from the dense array
    inputs/<input_key>/data           (n, [T,] C, H, W) float32, and status/error/meta/ragged

Only the int8 status columns are read when the store is opened; everything
else is dask-backed (embeddings, inputs, lon/lat) or decoded on access
(``meta``, ``spatials``: :class:`~rs_embed_dask.export.results.LazyJSONList`).
A model is ``ok`` when every item has status 1 or 3, ``failed`` when none
does, else ``partial``; a failed model's ``error`` is its first item error.
A store whose ``complete`` flag is false has status ``"running"``; when its
item count is not known yet, it is taken from the written ``spatials`` chunks
(rounded up to whole chunks; the unwritten rows have status 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.export.load_io import F32, clean_temporal, summarize_statuses, warn_load
from rs_embed_dask.export.results import (
    ITEM_FAILED,
    ITEM_OK,
    ITEM_RAGGED,
    ExportResult,
    LazyJSONList,
    ModelResult,
)
from rs_embed_dask.serialization import sanitize_key

__all__ = ["load_zarr_store"]


class _ZarrRows:
    """The first ``n`` rows of a zarr array, opened on first read (picklable, no data held)."""

    def __init__(self, store: str, component: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.store, self.component, self.shape, self.dtype = store, component, shape, np.dtype(dtype)
        self.ndim = len(shape)
        self._arr: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arr": None}

    def __getitem__(self, sel: Any) -> np.ndarray:
        if self._arr is None:
            import zarr

            self._arr = zarr.open_array(os.path.join(self.store, *self.component.split("/")), mode="r")
        return np.asarray(self._arr[sel])


def _zarr_dask(store: str, group: Any, component: str, n: int | None = None) -> Any:
    import dask
    import dask.array as da

    arr = group[component]
    shape = tuple(int(s) for s in arr.shape)
    if n is not None:
        shape = (min(n, shape[0]), *shape[1:])
    chunks = tuple(min(int(c), max(s, 1)) for c, s in zip(arr.chunks, shape, strict=True))
    rows = _ZarrRows(store, component, shape, arr.dtype)
    name = "rs-embed-zarr-" + dask.base.tokenize(os.path.abspath(store), component, shape, id(group))
    return da.from_array(rows, chunks=chunks, name=name, asarray=False, fancy=False)


def _zarr_n_items(p: str, g: Any, info: dict[str, Any]) -> int:
    for k in ("n_items", "spatials_count"):
        if isinstance(info.get(k), int):
            return int(info[k])
    if "spatials" not in g:
        return 0
    arr = g["spatials"]
    cdir = os.path.join(p, "spatials", "c")
    done = [int(c) for c in os.listdir(cdir) if c.isdigit()] if os.path.isdir(cdir) else []
    return min(int(arr.shape[0]), (max(done) + 1) * int(arr.chunks[0])) if done else 0


class _LazyErrors(Mapping):
    """Error text of failed items, read from a zarr column on access."""

    def __init__(self, column: Any, failed: np.ndarray) -> None:
        self._col, self._failed = column, [int(i) for i in failed]
        self._set = set(self._failed)

    def __getitem__(self, i: int) -> str:
        if i not in self._set:
            raise KeyError(i)
        return str(self._col[i]) if self._col is not None else ""

    def __iter__(self) -> Iterator[int]:
        return iter(self._failed)

    def __len__(self) -> int:
        return len(self._failed)


def _zarr_ragged(p: str, g: Any, grp: str) -> dict[int, Any]:
    if f"{grp}/ragged" not in g:
        return {}
    return {
        int(k): _zarr_dask(p, g, f"{grp}/ragged/{k}").astype(F32)
        for k in g[f"{grp}/ragged"]
        if str(k).isdigit()
    }


def _zarr_model(p: str, g: Any, m: dict[str, Any], n: int, entries: dict, cache: dict) -> ModelResult:
    name = str(m.get("name"))
    grp = f"models/{m.get('key') or sanitize_key(name)}"
    has = {c: f"{grp}/{c}" in g for c in ("status", "error", "meta", "embeddings")}
    codes = np.asarray(g[f"{grp}/status"][:n], dtype=np.int8) if has["status"] else np.zeros(n, np.int8)
    ok = np.isin(codes, (ITEM_OK, ITEM_RAGGED))
    if not has["status"] and isinstance(entries.get(name), dict):
        status = str(entries[name].get("status", "failed"))
    else:
        status = "ok" if ok.all() else ("failed" if not ok.any() else "partial")
    failed = np.flatnonzero(codes == ITEM_FAILED)
    err_col = g[f"{grp}/error"] if has["error"] else None
    errors = _LazyErrors(err_col, failed)
    error = (errors[int(failed[0])] or None) if status == "failed" and len(failed) else None
    if status == "failed" and error is None:
        error = (entries.get(name) or {}).get("error") or "every item failed or was not computed"
    emb = _zarr_dask(p, g, f"{grp}/embeddings", n) if has["embeddings"] and status != "failed" else None
    emb_r = _zarr_ragged(p, g, grp) if (codes == ITEM_RAGGED).any() else {}
    if emb_r:
        warn_load(
            f"{len(emb_r)} embeddings of model {name!r} differ in shape from the rest; their rows are "
            "NaN in ModelResult.embeddings and the arrays are in ModelResult.embeddings_ragged."
        )
    inp, inp_r = None, {}
    ikey = m.get("input_key")
    if ikey and f"inputs/{ikey}/data" in g:
        inp = _zarr_dask(p, g, f"inputs/{ikey}/data", n)
        inp_r = _zarr_ragged(p, g, f"inputs/{ikey}")
    meta: Sequence[dict[str, Any]] = (
        LazyJSONList(_ZarrRows(p, f"{grp}/meta", (n,), str)) if has["meta"] else [{}] * n
    )
    return ModelResult(
        name,
        status,
        emb,
        inp,
        meta,
        error,
        errors=errors,
        item_status=codes,
        embeddings_ragged=emb_r,
        inputs_ragged=inp_r,
        cache=cache,
    )


def load_zarr_store(p: str) -> ExportResult:
    """Open an rs_embed_dask zarr export lazily.

    Parameters
    ----------
    p : str
        The store folder.

    Returns
    -------
    ExportResult
        ``format="zarr"``; arrays are dask-backed.

    Raises
    ------
    ValueError
        The folder is not a zarr store or has no ``rs_embed_dask`` attribute.
    """
    import zarr

    try:
        g = zarr.open_group(p, mode="r")
    except Exception as exc:
        raise ValueError(f"Cannot open zarr store {p!r}: {exc}") from exc
    info = g.attrs.get("rs_embed_dask")
    if not isinstance(info, dict):
        raise ValueError(
            f"{p!r} is a zarr store but not an rs_embed_dask export (no 'rs_embed_dask' attribute)."
        )
    n = _zarr_n_items(p, g, info)
    raw_manifest = info.get("manifest")
    manifest: dict[str, Any] = raw_manifest if isinstance(raw_manifest, dict) else {}
    entries = {e.get("model"): e for e in manifest.get("models") or [] if isinstance(e, dict)}
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    for m in info.get("models") or []:
        r = _zarr_model(p, g, m, n, entries, cache)
        models[r.name] = r
    spatials: Sequence[dict[str, Any]] = (
        LazyJSONList(_ZarrRows(p, "spatials", (n,), str)) if "spatials" in g else [{} for _ in range(n)]
    )
    lon = _zarr_dask(p, g, "lon", n) if "lon" in g else None
    lat = _zarr_dask(p, g, "lat", n) if "lat" in g else None
    status = (
        summarize_statuses([r.status for r in models.values()]) if info.get("complete", True) else "running"
    )
    return ExportResult(
        layout=str(info.get("layout", "combined")),
        spatials=spatials,
        temporal=clean_temporal(info.get("temporal")),
        n_items=n,
        status=status,
        models=models,
        manifest=manifest,
        format="zarr",
        path=p,
        lon=lon,
        lat=lat,
    )
