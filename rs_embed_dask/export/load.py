"""``load_export``: read rs-embed and rs_embed_dask exports lazily.

Reads every layout rs-embed 0.3.1 writes (combined ``.npz``/``.nc`` + ``.json``,
per-item folders of ``<name>.npz|.nc`` + ``<name>.json``) and the zarr stores
written by ``format="zarr"``.  Path rules and error messages are rs-embed's:
a missing path raises ``FileNotFoundError("Export path does not exist: ...")``;
a folder is a per-item export (or a zarr store when it holds ``zarr.json`` or
is named ``*.zarr``); a file is a combined export (``.json`` pairs with
``<stem>.npz``, then ``<stem>.nc``, then ``<stem>.zarr``; ``.npz``/``.nc``/
``.netcdf`` need ``<stem>.json``).

Nothing is read but the manifests (and, for zarr, the int8 status columns):
NetCDF and zarr arrays are dask-backed, ``.npz`` members are read one key at
a time by dask tasks (``np.load(..., allow_pickle=False)`` always, shapes come
from the manifests or the ``.npy`` headers), per-item files are stacked
lazily in groups of files.  ``ModelResult.embeddings`` / ``.inputs`` compute
numpy on first access and cache it; ``.embeddings_lazy`` / ``.inputs_lazy``
and ``ExportResult.to_xarray()`` stay lazy.

Differences from rs-embed's loader (upstream quirks fixed):

(a) A combined model that failed at every item has no ``error`` key in the
    manifest; rs-embed reports ``error=None``.  We report the first error of
    ``errors_by_index``.
(b) A dense combined ``inputs_bchw`` written with ``indices`` (some fetches
    failed) is realigned to ``n_items`` rows with NaN rows for the missing
    items; rs-embed returns the short array, misaligned with the items.
(c) The per-item overall status takes ``partial`` models into account: ``ok``
    only when every model is ok, ``failed`` when every model failed, else
    ``partial``; rs-embed reports ``ok`` next to partial models.
(d) Per-item inputs (or embeddings) whose shapes differ between items no
    longer crash the loader: ``inputs`` is ``None`` with a warning, as in the
    combined loader, and the per-item arrays are in ``inputs_ragged``
    (``embeddings_ragged``), by item index.
(e) In a per-item folder, an item index with no file (a point whose build or
    write failed) makes the models ``partial`` instead of ``ok``.

Tolerated: ``temporal.year`` holding a function repr (rs-embed range specs)
is read as ``None``; ``+00:00Z`` timestamps parse (``ExportResult.created_at``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from rs_embed_dask.export.load_io import (
    F32,
    clean_temporal,
    digits_index,
    lazy_array,
    npz_headers,
    open_nc,
    read_array,
    read_npz_rows,
    realign_rows,
    stack_rows,
    summarize_statuses,
    warn_load,
    warn_ragged,
)
from rs_embed_dask.export.results import (
    ITEM_FAILED,
    ITEM_OK,
    ExportResult,
    ModelResult,
)
from rs_embed_dask.serialization import sanitize_key

__all__ = ["load_export"]


def load_export(path: str | os.PathLike[str]) -> ExportResult:
    """Load an export written by ``export_batch`` (ours or rs-embed's).

    Parameters
    ----------
    path : str or path-like
        A combined ``.npz`` / ``.nc`` / ``.json`` file, a per-item folder or
        a ``.zarr`` store.

    Returns
    -------
    ExportResult
        Lazy result; arrays are read when first asked for.

    Raises
    ------
    FileNotFoundError
        ``path`` (or the file paired with it) does not exist.
    ValueError
        The path exists but is not an export (unknown extension, unreadable
        manifest, no per-item files, two files claiming one item ...).
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"Export path does not exist: {p!r}")
    if os.path.isdir(p):
        return _load_zarr(p) if _is_zarr_store(p) else _load_per_item(p)
    if os.path.basename(p) == "zarr.json" and _is_zarr_store(os.path.dirname(p) or "."):
        return _load_zarr(os.path.dirname(p) or ".")
    return _load_combined(p)


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _load_zarr(p: str) -> ExportResult:
    from rs_embed_dask.export.load_zarr import load_zarr_store

    return load_zarr_store(p)


def _is_zarr_store(p: str) -> bool:
    return (
        os.path.exists(os.path.join(p, "zarr.json"))
        or os.path.exists(os.path.join(p, ".zgroup"))
        or p.rstrip("/\\").endswith(".zarr")
    )


def _load_json(json_path: str) -> dict[str, Any]:
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"Failed to load manifest {json_path!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"Manifest {json_path!r} is not a JSON object.")
    return data


# ---------------------------------------------------------------------------
# combined npz / NetCDF
# ---------------------------------------------------------------------------


class _Source:
    """Lazy access to the arrays of one combined ``.npz`` or NetCDF file."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.fmt, self.mtime = path, fmt, os.path.getmtime(path)
        self._memo: dict[str, Any] = {}
        self.ds: Any = None
        if fmt == "npz":
            self.shapes = {k: s for k, (s, _) in npz_headers(path).items()}
        else:
            self.ds = open_nc(path, chunks={})
            self.shapes = {str(k): tuple(self.ds[k].shape) for k in self.ds.data_vars}

    def lazy(self, key: str) -> Any:
        if key not in self._memo:
            if self.fmt == "npz":
                reader = functools.partial(read_array, self.path, "npz", key)
                self._memo[key] = lazy_array(reader, self.shapes[key], (self.path, self.mtime, key))
            else:
                self._memo[key] = self.ds[key].data.astype(F32)
        return self._memo[key]


def _resolve_combined(path: str) -> tuple[str, str, str]:
    base, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext == ".json":
        for cand, fmt in ((".npz", "npz"), (".nc", "netcdf"), (".netcdf", "netcdf"), (".zarr", "zarr")):
            if os.path.exists(base + cand):
                return base + cand, path, fmt
        raise FileNotFoundError(f"Found manifest {path!r} but no paired .npz or .nc file at {base!r}.")
    if ext == ".npz":
        fmt = "npz"
    elif ext in (".nc", ".netcdf"):
        fmt = "netcdf"
    else:
        raise ValueError(
            f"Unrecognised file extension {ext!r}. Expected .npz, .nc, or .json for a combined export."
        )
    json_path = base + ".json"
    if not os.path.exists(json_path):
        raise FileNotFoundError(f"Array file {path!r} found but no paired manifest at {json_path!r}.")
    return path, json_path, fmt


def _combined_ref(ref: Any, src: _Source, default: str, n: int, what: str, model: str) -> tuple[Any, dict]:
    ref = ref if isinstance(ref, dict) else {}
    key = ref.get("npz_key") or default
    indices = ref.get("indices")
    if key in src.shapes:
        arr = src.lazy(key)
        if isinstance(indices, list) and len(src.shapes[key]) >= 1 and indices != list(range(n)):
            idx = [int(i) for i in indices]
            ok = len(idx) == arr.shape[0] and len(set(idx)) == len(idx) and all(0 <= i < n for i in idx)
            if ok:
                arr = realign_rows(arr, idx, n)  # fix (b)
            else:
                warn_load(f"{what} of model {model!r}: 'indices' do not match array {key!r}; not realigned.")
        return arr, {}
    keys = ref.get("npz_keys")
    if not (isinstance(keys, list) and keys):
        return None, {}
    rows: dict[int, str] = {}
    for j, k in enumerate(keys):
        if not (isinstance(k, str) and k in src.shapes):
            continue
        i = int(indices[j]) if isinstance(indices, list) and j < len(indices) else digits_index(k, j)
        if 0 <= i < n:
            rows[i] = k
    if not rows:
        return None, {}
    shapes = [src.shapes[k] for k in rows.values()]
    if len(set(shapes)) > 1:
        warn_ragged(what, model, shapes)
        return None, {i: src.lazy(k) for i, k in rows.items()}
    shape, keyed = shapes[0], [rows.get(i) for i in range(n)]
    if src.fmt == "npz":  # one task per group of keys, each opening the archive once
        reader = functools.partial(read_npz_rows, src.path)
        return stack_rows(keyed, shape, (src.path, src.mtime, tuple(keyed)), reader), {}
    import dask.array as da

    fill = da.full(shape, np.nan, dtype=F32)
    return da.stack([fill if k is None else src.lazy(k) for k in keyed]), {}


def _combined_model(entry: dict[str, Any], src: _Source, n: int, cache: dict) -> ModelResult:
    name = str(entry.get("model", ""))
    status = str(entry.get("status", "failed"))
    key = sanitize_key(name)
    raw_err = entry.get("errors_by_index") or {}
    errors = (
        {int(k): str(v) for k, v in raw_err.items() if str(k).isdigit()} if isinstance(raw_err, dict) else {}
    )
    error = entry.get("error") or None
    if error is None and status == "failed" and errors:
        error = errors[min(errors)]  # fix (a)
    emb, emb_r = _combined_ref(entry.get("embeddings"), src, f"embeddings__{key}", n, "embeddings", name)
    inp, inp_r = _combined_ref(entry.get("inputs"), src, f"inputs_bchw__{key}", n, "inputs", name)
    raw_metas = entry.get("metas") or []
    meta = [
        m if isinstance(m, dict) else {}
        for m in (raw_metas[i] if i < len(raw_metas) else {} for i in range(n))
    ]
    codes = np.full(n, ITEM_OK, dtype=np.int8)
    failed = {int(i) for i in entry.get("failed_indices") or [] if 0 <= int(i) < n} | {
        i for i in errors if i < n
    }
    if status == "failed" and not failed:
        codes[:] = ITEM_FAILED
    codes[sorted(failed)] = ITEM_FAILED
    return ModelResult(
        name,
        status,
        emb,
        inp,
        meta,
        None if error is None else str(error),
        errors=errors,
        item_status=codes,
        embeddings_ragged=emb_r,
        inputs_ragged=inp_r,
        cache=cache,
    )


def _load_combined(path: str) -> ExportResult:
    arrays_path, json_path, fmt = _resolve_combined(path)
    if fmt == "zarr":
        return _load_zarr(arrays_path)
    manifest = _load_json(json_path)
    src = _Source(arrays_path, fmt)
    spatials = list(manifest.get("spatials") or [])
    n = int(manifest.get("n_items", len(spatials)) or 0)
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    for entry in manifest.get("models") or []:
        if isinstance(entry, dict):
            r = _combined_model(entry, src, n, cache)
            models[r.name] = r
    return ExportResult(
        layout="combined",
        spatials=spatials,
        temporal=clean_temporal(manifest.get("temporal")),
        n_items=n,
        status=str(manifest.get("status", "ok")),
        models=models,
        manifest=manifest,
        format=fmt,
        path=arrays_path,
        closers=[src.ds.close] if src.ds is not None else [],
    )


# ---------------------------------------------------------------------------
# per-item folders
# ---------------------------------------------------------------------------


class _ItemFile:
    """One per-item array file and its manifest; keys and shapes read on demand."""

    def __init__(self, idx: int, path: str, fmt: str, base: str, manifest: dict[str, Any]) -> None:
        self.idx, self.path, self.fmt, self.base, self.manifest = idx, path, fmt, base, manifest
        listed = manifest.get("npz_keys" if fmt == "npz" else "nc_variables")
        self._keys = set(map(str, listed)) if isinstance(listed, list) else None
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def _read_shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            if self.fmt == "npz":
                self._shapes = {k: s for k, (s, _) in npz_headers(self.path).items()}
            else:
                with open_nc(self.path) as ds:
                    self._shapes = {str(k): tuple(ds[k].shape) for k in ds.data_vars}
        return self._shapes

    def has(self, key: str) -> bool:
        return key in (self._keys if self._keys is not None else self._read_shapes())

    def shape(self, key: str, ref: Any) -> tuple[int, ...]:
        if isinstance(ref, dict) and ref.get("npz_key") == key and isinstance(ref.get("shape"), list):
            return tuple(int(s) for s in ref["shape"])
        return self._read_shapes()[key]

    def reader(self, key: str) -> Callable[[], np.ndarray]:
        return functools.partial(read_array, self.path, self.fmt, key)


def _discover(directory: str) -> list[_ItemFile]:
    found = []
    for fname in sorted(os.listdir(directory)):
        base, ext = os.path.splitext(fname)
        ext = ext.lower()
        if ext in (".npz", ".nc", ".netcdf") and os.path.exists(os.path.join(directory, base + ".json")):
            found.append((os.path.join(directory, fname), "npz" if ext == ".npz" else "netcdf", base))
    if not found:
        raise ValueError(
            f"No per-item export files found in {directory!r}. Expected '<name>.npz' or '<name>.nc' "
            "files with paired '.json' manifests."
        )
    files: list[_ItemFile] = []
    claimed: dict[int, str] = {}
    for arr_path, fmt, base in found:
        manifest = _load_json(os.path.join(directory, base + ".json"))
        idx = manifest.get("point_index")
        if not (isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0):
            idx = int(base[1:]) if base.startswith("p") and base[1:].isdigit() else None
        if idx is None:
            continue  # not a point file (e.g. a combined export in the same folder)
        if idx in claimed:
            raise ValueError(
                f"Per-item files {claimed[idx]!r} and {os.path.basename(arr_path)!r} both claim "
                f"point_index={idx}; refusing to overwrite a row. Remove the stale file or separate the exports."
            )
        claimed[idx] = os.path.basename(arr_path)
        files.append(_ItemFile(idx, arr_path, fmt, base, manifest))
    if not files:
        raise ValueError(
            f"No per-item point files found in {directory!r}. Point files carry a 'point_index' in their "
            ".json manifest (or use the default 'p<index>' naming)."
        )
    return sorted(files, key=lambda f: f.idx)


def _per_item_array(
    rows: dict[int, tuple[_ItemFile, str, Any]], n: int, what: str, model: str, token: Any
) -> tuple[Any, dict[int, Any]]:
    if not rows:
        return None, {}
    shapes = {i: f.shape(k, ref) for i, (f, k, ref) in rows.items()}
    if len(set(shapes.values())) > 1:
        warn_ragged(what, model, shapes.values())  # fix (d)
        return None, {i: lazy_array(f.reader(k), shapes[i], (token, i)) for i, (f, k, _) in rows.items()}
    shape = next(iter(shapes.values()))
    readers = [rows[i][0].reader(rows[i][1]) if i in rows else None for i in range(n)]
    # named by (file, key) pairs: models sharing a deduplicated input share one array and cache
    return stack_rows(readers, shape, (token, tuple((i, rows[i][1]) for i in sorted(rows)))), {}


def _load_per_item(directory: str) -> ExportResult:
    files = _discover(directory)
    n = files[-1].idx + 1
    spatials: list[dict[str, Any]] = [{} for _ in range(n)]
    names = [""] * n
    acc: dict[str, dict[str, Any]] = {}
    for f in files:
        sp = f.manifest.get("spatial")
        spatials[f.idx] = sp if isinstance(sp, dict) else {}
        names[f.idx] = f.base
        for entry in f.manifest.get("models") or []:
            name = str(entry.get("model", "")) if isinstance(entry, dict) else ""
            if not name:
                continue
            key = sanitize_key(name)
            a = acc.setdefault(
                name,
                {
                    "emb": {},
                    "inp": {},
                    "meta": [{} for _ in range(n)],
                    "codes": np.zeros(n, np.int8),
                    "errors": {},
                },
            )
            st = str(entry.get("status", "failed"))
            a["codes"][f.idx] = ITEM_OK if st == "ok" else ITEM_FAILED
            if st != "ok":
                a["errors"][f.idx] = str(entry.get("error") or "")
            for slot, ref_name, default in (
                ("emb", "embedding", f"embedding__{key}"),
                ("inp", "input", f"input_chw__{key}"),
            ):
                ref = entry.get(ref_name)
                k = (ref.get("npz_key") if isinstance(ref, dict) else None) or default
                if f.has(k):
                    a[slot][f.idx] = (f, k, ref)
            m = entry.get("meta")
            a["meta"][f.idx] = m if isinstance(m, dict) else {}
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    stamp = (os.path.abspath(directory), tuple(os.path.getmtime(f.path) for f in files))
    for name, a in acc.items():
        codes = a["codes"]
        n_ok, n_failed = int((codes == ITEM_OK).sum()), int((codes == ITEM_FAILED).sum())
        status = "failed" if n_ok == 0 else ("ok" if n_failed == 0 and n_ok == n else "partial")  # fix (e)
        emb, emb_r = _per_item_array(a["emb"], n, "embeddings", name, stamp)
        inp, inp_r = _per_item_array(a["inp"], n, "inputs", name, stamp)
        first_err = next((e for _, e in sorted(a["errors"].items()) if e), None)
        models[name] = ModelResult(
            name,
            status,
            None if status == "failed" else emb,
            inp,
            a["meta"],
            first_err if status == "failed" else None,
            errors={i: e for i, e in a["errors"].items() if e},
            item_status=codes,
            embeddings_ragged={} if status == "failed" else emb_r,
            inputs_ragged=inp_r,
            cache=cache,
        )
    fmts = {f.fmt for f in files}
    return ExportResult(
        layout="per_item",
        spatials=spatials,
        temporal=clean_temporal(files[0].manifest.get("temporal")),
        n_items=n,
        status=summarize_statuses([m.status for m in models.values()]),  # fix (c)
        models=models,
        manifest=files[0].manifest,
        format=fmts.pop() if len(fmts) == 1 else "mixed",
        path=directory,
        item_names=names,
    )
