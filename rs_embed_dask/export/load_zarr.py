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

Verified on opening (zarr returns the fill value for a chunk that is not on
disk, so a lost chunk would read as NaN rows of an ``ok`` item): the
attributes' types, ``n_items`` against the ``spatials`` array, the presence
of the embeddings / input arrays and of every chunk that holds an ``ok`` item
(and, for a finished store, every status chunk).  Damage raises
:class:`~rs_embed_dask.core.errors.ExportIntegrityError`, or with
``strict=False`` marks the items concerned failed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ExportIntegrityError
from rs_embed_dask.export.load_io import F32, clean_temporal, summarize_statuses, warn_load
from rs_embed_dask.export.results import (
    ITEM_FAILED,
    ITEM_OK,
    ITEM_RAGGED,
    ExportResult,
    LazyJSONList,
    ModelResult,
)
from rs_embed_dask.export.verify import Damage, check_n_items, reading, zarr_chunk_indices
from rs_embed_dask.serialization import sanitize_key

__all__ = ["load_zarr_store", "store_progress"]


class _ZarrRows:
    """The first ``n`` rows of a zarr array, opened on first read (picklable, no data held)."""

    def __init__(self, store: str, component: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.store, self.component, self.shape, self.dtype = store, component, shape, np.dtype(dtype)
        self.ndim = len(shape)
        self._arr: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arr": None}

    def __getitem__(self, sel: Any) -> np.ndarray:
        path = os.path.join(self.store, *self.component.split("/"))
        with reading(path, f"array {self.component!r}"):
            if self._arr is None:
                import zarr

                self._arr = zarr.open_array(path, mode="r")
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

    def __init__(self, column: Any, failed: np.ndarray, extra: Mapping[int, str] | None = None) -> None:
        self._col, self._failed = column, [int(i) for i in failed]
        self._set = set(self._failed)
        self._extra = dict(extra or {})

    def __getitem__(self, i: int) -> str:
        if i not in self._set:
            raise KeyError(i)
        if i in self._extra:
            return self._extra[i]
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


def _missing_chunks(p: str, g: Any, component: str, rows: np.ndarray) -> np.ndarray:
    """The ``rows`` whose chunk of array ``component`` is not on disk."""
    if rows.size == 0:
        return rows
    present = zarr_chunk_indices(os.path.join(p, *component.split("/")))
    if present is None:
        return rows[:0]
    step = int(g[component].chunks[0])
    return rows[~np.isin(rows // step, np.fromiter(present, dtype=np.int64, count=len(present)))]


def _check_rows(
    p: str, g: Any, grp: str, data: str, codes: np.ndarray, complete: bool, damage: Damage
) -> dict[int, str]:
    """Damaged items of one group (a model or an input): missing arrays, chunks and ragged items."""
    bad: dict[int, str] = {}
    n = codes.shape[0]
    if complete and f"{grp}/status" in g:
        for i in _missing_chunks(p, g, f"{grp}/status", np.arange(n)):
            bad.setdefault(int(i), "")
    if bad:
        text = damage.report(os.path.join(p, *grp.split("/"), "status"),
                             f"status chunks of {len(bad)} items are missing")  # fmt: skip
        bad = dict.fromkeys(bad, text)
    dense = np.flatnonzero(codes == ITEM_OK)
    if dense.size and f"{grp}/{data}" not in g:
        text = damage.report(os.path.join(p, *grp.split("/"), data, "zarr.json"),
                             f"the array is missing but {dense.size} items are ok")  # fmt: skip
        return {**bad, **dict.fromkeys((int(i) for i in dense), text)}
    lost = _missing_chunks(p, g, f"{grp}/{data}", dense)
    if lost.size:
        step = int(g[f"{grp}/{data}"].chunks[0])
        text = damage.report(os.path.join(p, *grp.split("/"), data),
                             f"chunks {sorted({int(i) // step for i in lost})[:10]} are missing; they hold "
                             f"{lost.size} ok items (read back as NaN)")  # fmt: skip
        bad.update(dict.fromkeys((int(i) for i in lost), text))
    ragged = np.flatnonzero(codes == ITEM_RAGGED)
    have = {int(k) for k in g[f"{grp}/ragged"]} if ragged.size and f"{grp}/ragged" in g else set()
    for i in ragged:
        if int(i) not in have:
            bad[int(i)] = damage.report(os.path.join(p, *grp.split("/"), "ragged", str(int(i))),
                                        f"item {int(i)} is ok but its array is missing")  # fmt: skip
    return bad


def _zarr_model(
    p: str, g: Any, m: dict[str, Any], n: int, entries: dict, cache: dict, damage: Damage, complete: bool,
    input_bad: Mapping[str, dict[int, str]],
) -> ModelResult:  # fmt: skip
    name = str(m.get("name"))
    grp = f"models/{m.get('key') or sanitize_key(name)}"
    has = {c: f"{grp}/{c}" in g for c in ("status", "error", "meta", "embeddings")}
    codes = np.asarray(g[f"{grp}/status"][:n], dtype=np.int8) if has["status"] else np.zeros(n, np.int8)
    bad: dict[int, str] = {}
    if has["status"]:
        bad = _check_rows(p, g, grp, "embeddings", codes, complete, damage)
    bad = {**input_bad.get(str(m.get("input_key") or ""), {}), **bad}
    if bad:  # strict=False: damaged items are failed
        codes = codes.copy()
        codes[sorted(bad)] = ITEM_FAILED
        if not has["status"]:
            has["status"] = True
    ok = np.isin(codes, (ITEM_OK, ITEM_RAGGED))
    if not has["status"] and isinstance(entries.get(name), dict):
        status = str(entries[name].get("status", "failed"))
    else:
        status = "ok" if ok.all() else ("failed" if not ok.any() else "partial")
    failed = np.flatnonzero(codes == ITEM_FAILED)
    err_col = g[f"{grp}/error"] if has["error"] else None
    errors = _LazyErrors(err_col, failed, bad)
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


def store_progress(p: str, info: Mapping[str, Any], n: int) -> str:
    """``"<k> of <n> items done"`` for a working store (every model's status counted)."""
    import zarr

    g: Any = zarr.open_group(p, mode="r", use_consolidated=False)  # the files, not the finished listing
    done = np.ones(n, dtype=bool)
    seen = False
    for m in info.get("models") or []:
        grp = f"models/{m.get('key') or sanitize_key(str(m.get('name')))}/status"
        if isinstance(m, dict) and grp in g:
            done &= np.isin(np.asarray(g[grp][:n]), (ITEM_OK, ITEM_RAGGED))
            seen = True
    return f"{int(done.sum()) if seen else 0} of {n} items done"


def _check_info(p: str, g: Any, info: dict[str, Any]) -> None:
    where = os.path.join(p, "zarr.json")
    models = info.get("models", [])
    if not isinstance(models, list) or not all(
        isinstance(m, dict) and isinstance(m.get("name"), str) for m in models
    ):
        raise ExportIntegrityError(
            where, "attribute 'rs_embed_dask.models' must be a list of {name, key, ...} objects"
        )
    if info.get("n_items") is not None and "spatials" in g:
        check_n_items(info["n_items"], where, at_most=int(g["spatials"].shape[0]),
                      why="the 'spatials' array holds fewer rows")  # fmt: skip


def load_zarr_store(p: str, *, strict: bool = True) -> ExportResult:
    """Open an rs_embed_dask zarr export lazily, verifying it.

    Parameters
    ----------
    p : str
        The store folder.
    strict : bool, default True
        ``False``: damaged items are loaded as failed instead of raising.

    Returns
    -------
    ExportResult
        ``format="zarr"``; arrays are dask-backed.

    Raises
    ------
    ExportIntegrityError
        The store is damaged (``strict=True``), or its attributes are malformed.
    ValueError
        The folder is not a zarr store or has no ``rs_embed_dask`` attribute.
    """
    import zarr

    try:
        g = zarr.open_group(p, mode="r", use_consolidated=False)
    except Exception as exc:
        raise ValueError(f"Cannot open zarr store {p!r}: {exc}") from exc
    info = g.attrs.get("rs_embed_dask")
    if not isinstance(info, dict):
        raise ValueError(
            f"{p!r} is a zarr store but not an rs_embed_dask export (no 'rs_embed_dask' attribute)."
        )
    _check_info(p, g, info)
    n = _zarr_n_items(p, g, info)
    raw_manifest = info.get("manifest")
    manifest: dict[str, Any] = raw_manifest if isinstance(raw_manifest, dict) else {}
    entries = {e.get("model"): e for e in manifest.get("models") or [] if isinstance(e, dict)}
    damage = Damage(strict)
    complete = bool(info.get("complete", True))
    input_bad: dict[str, dict[int, str]] = {}
    for ikey in {str(m.get("input_key")) for m in info.get("models") or [] if m.get("input_key")}:
        igrp = f"inputs/{ikey}"
        if f"{igrp}/status" in g:
            status_arr: Any = g[f"{igrp}/status"]
            icodes = np.asarray(status_arr[:n], dtype=np.int8)
            input_bad[ikey] = _check_rows(p, g, igrp, "data", icodes, complete, damage)
    if complete and "spatials" not in g and n:
        damage.report(os.path.join(p, "spatials"), "the array of the ROIs is missing")
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    for m in info.get("models") or []:
        r = _zarr_model(p, g, m, n, entries, cache, damage, complete, input_bad)
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
