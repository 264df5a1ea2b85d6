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

Differences from rs-embed's loader (its quirks fixed):

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

Verification (:mod:`rs_embed_dask.export.verify`; rs-embed's loader believes
whatever it reads): manifests are type-checked and ``n_items`` is bounded by
what the files hold before anything of that size is allocated; the members,
zarr arrays and chunks, and per-item files the manifests promise must exist
with ``n_items`` rows (a per-item folder written by this package names its
items in ``_rs_embed_dask_export.json``); statuses must agree with the arrays.
A damaged export raises :class:`~rs_embed_dask.core.errors.ExportIntegrityError`
naming the file and the problem, also for bytes that fail to decode when an
array is read (truncated archives, zlib or zstd errors).  With
``strict=False`` the damage is a warning and the items concerned are loaded
as failed (NaN rows, error text ``"damaged export: ..."``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ExportIntegrityError
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
    warn_ragged,
)
from rs_embed_dask.export.results import (
    ITEM_FAILED,
    ITEM_OK,
    ExportResult,
    ModelResult,
)
from rs_embed_dask.export.verify import (
    Damage,
    check_combined_manifest,
    check_n_items,
    load_manifest_json,
)
from rs_embed_dask.serialization import sanitize_key

__all__ = ["load_export"]


def load_export(path: str | os.PathLike[str], *, strict: bool = True) -> ExportResult:
    """Load an export written by ``export_batch`` (ours or rs-embed's), verifying it.

    Parameters
    ----------
    path : str or path-like
        A combined ``.npz`` / ``.nc`` / ``.json`` file, a per-item folder or
        a ``.zarr`` store.
    strict : bool, default True
        ``True``: a damaged export raises :class:`ExportIntegrityError`.
        ``False``: load what is intact; the damaged items are marked failed
        (a warning says what is damaged).  A manifest that cannot be
        trusted at all (wrong types, an impossible ``n_items``) raises in
        both modes.

    Returns
    -------
    ExportResult
        Lazy result; arrays are read when first asked for.

    Raises
    ------
    FileNotFoundError
        ``path`` (or the file paired with it) does not exist; the message
        names an unfinished export's working store when there is one.
    ExportIntegrityError
        The export is damaged: a member, chunk or file its manifest promises
        is missing, short or undecodable, or the manifest is malformed.  A
        ``ValueError`` subclass.
    ValueError
        The path exists but is not an export (unknown extension, no per-item
        files, two files claiming one item ...).
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(_missing_message(p))
    if os.path.isdir(p):
        return _load_zarr(p, strict) if _is_zarr_store(p) else _load_per_item(p, strict)
    if os.path.basename(p) == "zarr.json" and _is_zarr_store(os.path.dirname(p) or "."):
        return _load_zarr(os.path.dirname(p) or ".", strict)
    return _load_combined(p, strict)


def _missing_message(p: str) -> str:
    """``Export path does not exist``, plus what is there instead when an export did not finish."""
    msg = f"Export path does not exist: {p!r}"
    # the target as given, or with the suffix the export added to it ("run" -> "run.npz")
    store = next((p + sfx for sfx in (".work.zarr", ".npz.work.zarr", ".nc.work.zarr") if os.path.isdir(p + sfx)), None)
    if store is None:
        return msg
    done = ""
    try:
        from rs_embed_dask.export.store import open_root

        info = dict(open_root(store).attrs).get("rs_embed_dask", {})
        n = info.get("n_items")
        if isinstance(n, int):
            from rs_embed_dask.export.load_zarr import store_progress

            done = f" ({store_progress(store, info, n)})"
    except Exception:  # an unreadable store: say it is there all the same
        done = ""
    return (
        f"{msg}. The export did not finish: its working store {store!r} is beside it{done}. "
        "A strict run (continue_on_error=False) stops at the first failure and a killed client stops "
        "anywhere; both keep the finished chunks there. Run the same export_batch call again with "
        "ExportConfig(resume=True) to compute only what is missing (add continue_on_error=True to record "
        f"failures instead of stopping), or inspect what is done with load_export({store!r})."
    )


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _load_per_item(p: str, strict: bool = True) -> ExportResult:
    from rs_embed_dask.export.load_items import load_per_item

    return load_per_item(p, strict=strict)


def _load_zarr(p: str, strict: bool = True) -> ExportResult:
    from rs_embed_dask.export.load_zarr import load_zarr_store

    return load_zarr_store(p, strict=strict)


def _is_zarr_store(p: str) -> bool:
    return (
        os.path.exists(os.path.join(p, "zarr.json"))
        or os.path.exists(os.path.join(p, ".zgroup"))
        or p.rstrip("/\\").endswith(".zarr")
    )


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


def _all_rows(indices: Any, n: int) -> list[int]:
    return [int(i) for i in indices if 0 <= int(i) < n] if isinstance(indices, list) else list(range(n))


def _combined_ref(
    ref: Any, src: _Source, default: str, n: int, what: str, model: str, damage: Damage
) -> tuple[Any, dict, dict[int, str]]:
    """The lazy array a manifest ref points to, its ragged items, and the damaged items' error text."""
    ref = ref if isinstance(ref, dict) else {}
    named = ref.get("npz_key")
    key = named or default
    indices = ref.get("indices")
    label = f"{what} of model {model!r}"
    if named and key not in src.shapes:
        text = damage.report(src.path, f"member {key!r} ({label}) named by the manifest is missing")
        return None, {}, dict.fromkeys(_all_rows(indices, n), text)
    if key in src.shapes:
        shape = src.shapes[key]
        expect = len(indices) if isinstance(indices, list) else n
        promised = "entries of its 'indices'" if isinstance(indices, list) else "n_items"
        problem = None
        if not shape or shape[0] != expect:
            problem = f"member {key!r} ({label}) has {shape[0] if shape else 0} rows; the manifest promises {expect} ({promised})"
        elif isinstance(ref.get("shape"), list) and tuple(ref["shape"]) != shape:
            problem = f"member {key!r} ({label}) has shape {list(shape)}; the manifest says {ref['shape']}"
        if problem is not None:
            return None, {}, dict.fromkeys(_all_rows(indices, n), damage.report(src.path, problem))
        arr = src.lazy(key)
        if isinstance(indices, list) and indices != list(range(n)):
            idx = [int(i) for i in indices]
            if not (len(set(idx)) == len(idx) and all(0 <= i < n for i in idx)):
                text = damage.report(
                    src.path, f"{label}: 'indices' of member {key!r} repeat or fall outside [0, {n})"
                )
                return None, {}, dict.fromkeys(_all_rows(indices, n), text)
            arr = realign_rows(arr, idx, n)  # fix (b)
        return arr, {}, {}
    keys = ref.get("npz_keys")
    if not (isinstance(keys, list) and keys):
        return None, {}, {}
    rows: dict[int, str] = {}
    bad: dict[int, str] = {}
    for j, k in enumerate(keys):
        i = int(indices[j]) if isinstance(indices, list) and j < len(indices) else digits_index(k, j)
        if not (0 <= i < n):
            continue
        if k not in src.shapes:
            bad[i] = damage.report(
                src.path, f"member {k!r} ({label}, item {i}) named by the manifest is missing"
            )
            continue
        rows[i] = k
    if not rows:
        return None, {}, bad
    shapes = [src.shapes[k] for k in rows.values()]
    if len(set(shapes)) > 1:
        warn_ragged(what, model, shapes)
        return None, {i: src.lazy(k) for i, k in rows.items()}, bad
    shape, keyed = shapes[0], [rows.get(i) for i in range(n)]
    if src.fmt == "npz":  # one task per group of keys, each opening the archive once
        reader = functools.partial(read_npz_rows, src.path)
        return stack_rows(keyed, shape, (src.path, src.mtime, tuple(keyed)), reader), {}, bad
    import dask.array as da

    fill = da.full(shape, np.nan, dtype=F32)
    return da.stack([fill if k is None else src.lazy(k) for k in keyed]), {}, bad


def _combined_model(entry: dict[str, Any], src: _Source, n: int, cache: dict, damage: Damage) -> ModelResult:
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
    emb, emb_r, emb_bad = _combined_ref(
        entry.get("embeddings"), src, f"embeddings__{key}", n, "embeddings", name, damage
    )
    inp, inp_r, inp_bad = _combined_ref(
        entry.get("inputs"), src, f"inputs_bchw__{key}", n, "inputs", name, damage
    )
    raw_metas = entry.get("metas") or []
    if not isinstance(raw_metas, list):
        raw_metas = []
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
    bad = {**inp_bad, **emb_bad}
    if bad:  # strict=False: the damaged items are failed
        codes[sorted(bad)] = ITEM_FAILED
        errors = {**errors, **bad}
        n_ok = int((codes == ITEM_OK).sum())
        status = "failed" if n_ok == 0 else ("ok" if n_ok == n else "partial")
        if status == "failed" and error is None:
            error = bad[min(bad)]
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


def _combined_n_items(manifest: dict[str, Any], spatials: Any, src: _Source, json_path: str) -> int:
    """``n_items``, checked against what the manifest and the file hold before anything is allocated."""
    if isinstance(spatials, list) and spatials:
        n = check_n_items(manifest.get("n_items", len(spatials)), json_path, at_most=len(spatials),
                          why="the manifest lists fewer spatials")  # fmt: skip
        if n != len(spatials):
            raise ExportIntegrityError(
                json_path, f"'n_items' is {n} but the manifest lists {len(spatials)} spatials"
            )
        return n
    rows = [s[0] for s in src.shapes.values() if s]
    bound = max([*rows, len(src.shapes)])
    return check_n_items(manifest.get("n_items", 0), json_path, at_most=bound,
                         why="no array of the export holds that many rows")  # fmt: skip


def _load_combined(path: str, strict: bool = True) -> ExportResult:
    arrays_path, json_path, fmt = _resolve_combined(path)
    if fmt == "zarr":
        return _load_zarr(arrays_path, strict)
    manifest = load_manifest_json(json_path)
    entries = check_combined_manifest(manifest, json_path)
    src = _Source(arrays_path, fmt)
    raw_sp = manifest.get("spatials")
    n = _combined_n_items(manifest, raw_sp, src, json_path)
    spatials = list(raw_sp) if isinstance(raw_sp, list) else []
    damage = Damage(strict)
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    for entry in entries:
        r = _combined_model(entry, src, n, cache, damage)
        models[r.name] = r
    status = str(manifest.get("status", "ok"))
    if damage.problems:
        status = summarize_statuses([m.status for m in models.values()])
    return ExportResult(
        layout="combined",
        spatials=spatials,
        temporal=clean_temporal(manifest.get("temporal")),
        n_items=n,
        status=status,
        models=models,
        manifest=manifest,
        format=fmt,
        path=arrays_path,
        closers=[src.ds.close] if src.ds is not None else [],
    )
