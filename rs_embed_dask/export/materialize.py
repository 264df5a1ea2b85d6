"""Finish a combined export: manifest from the store, then NPZ / NetCDF in rs-embed's layout.

Arrays stream from the zarr store into the target file chunk by chunk (dask
arrays over the store), so memory stays at about one chunk whatever the size
of the export.  An NPZ's dense members are assembled from the parts the write
tasks deflated while the export ran (:mod:`rs_embed_dask.export.npz_parts`),
so finishing copies compressed bytes instead of compressing them.

The working store is removed once the file is written, unless some items
failed: then it stays beside the file so that ``resume=True`` retries only
the failed items (rs-embed reruns failed work on resume).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from rs_embed_dask.export import store as st
from rs_embed_dask.export.manifest import combined_manifest
from rs_embed_dask.export.npz_parts import StoreRows, parts_dir, write_npz_from_parts
from rs_embed_dask.serialization import jsonable, sanitize_key, utc_timestamp

__all__ = ["finalize_combined"]


def _col(store_path: str, name: str, n: int) -> np.ndarray:
    import zarr

    path = os.path.join(store_path, *name.split("/"))
    if not os.path.exists(os.path.join(path, "zarr.json")):
        return np.zeros(n, dtype=np.int8) if name.endswith("status") else np.array([""] * n, dtype=object)
    return np.asarray(zarr.open_array(path, mode="r")[:n])


def _dask(store_path: str, name: str) -> Any:
    import dask.array as da

    return da.from_zarr(os.path.join(store_path, *name.split("/")))


def _item_shape(store_path: str, name: str) -> tuple[int, ...]:
    import zarr

    return tuple(zarr.open_array(os.path.join(store_path, *name.split("/")), mode="r").shape[1:])


def _item(
    store_path: str, group: str, data_name: str, i: int, status: int, *, npz_shape: tuple[int, ...] | None = None
) -> Any:
    """Item ``i`` as a member: from the part of its chunk for an NPZ (``npz_shape``: the row shape), no store slice."""
    if status == st.OK_RAGGED:
        return _dask(store_path, f"{group}/ragged/{i}")
    if npz_shape is not None:
        return StoreRows(store_path, f"{group}/{data_name}", [i], npz_shape, single=True)
    return _dask(store_path, f"{group}/{data_name}")[i]


def _dense_shape(store_path: str, name: str, status: np.ndarray, npz: bool) -> tuple[int, ...] | None:
    """Row shape of the dense array ``name`` for NPZ members from parts (``None``: not NPZ, or no dense item)."""
    return _item_shape(store_path, name) if npz and (status == st.OK).any() else None


def _inputs(
    store_path: str, plan: Any, n: int, arrays: dict[str, Any], parts: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Add input arrays (and the store arrays of dense ones to ``parts``); return the manifest ``inputs`` ref per model."""
    refs: dict[str, Any] = {}
    npz = plan.fmt == "npz"
    for key, spec in plan.inputs.items():
        if not plan.config.save_inputs:
            for u in spec.users:
                refs[u] = None
            continue
        group = f"inputs/{key}"
        status = _col(store_path, f"{group}/status", n)
        ok = np.flatnonzero(np.isin(status, (st.OK, st.OK_RAGGED)))
        owner = sanitize_key(spec.owner)
        ref: dict[str, Any] | None
        if ok.size == 0:
            ref = None
        elif (status[ok] == st.OK_RAGGED).any():
            keys = []
            shape = _dense_shape(store_path, f"{group}/data", status, npz)
            for i in ok:
                k = f"input_chw__{owner}__{i:05d}"
                arrays[k] = _item(store_path, group, "data", int(i), int(status[i]), npz_shape=shape)
                keys.append(k)
            ref = {"npz_keys": keys}
        else:
            data = _dask(store_path, f"{group}/data")[:n]
            k = f"inputs_bchw__{owner}"
            if ok.size < n and npz:
                data = StoreRows(store_path, f"{group}/data", ok, _item_shape(store_path, f"{group}/data"))
            elif ok.size < n:
                data = data[ok]
            else:
                parts[k] = (store_path, f"{group}/data")
            arrays[k] = data
            ref = {"npz_key": k, "shape": list(data.shape), "dtype": str(data.dtype)}
            if ok.size < n:
                ref["indices"] = [int(i) for i in ok]
        for j, u in enumerate(spec.users):
            refs[u] = None if ref is None else (dict(ref) if j == 0 else {**ref, "dedup_reused": True})
    return refs


def _failures(store_path: str, group: str, n: int, block: int = 65536) -> tuple[int, dict[str, str], list[int]]:
    """Items done, and the failed items' errors, read in blocks of the status column."""
    import zarr

    status = zarr.open_array(os.path.join(store_path, *group.split("/"), "status"), mode="r")
    err_path = os.path.join(store_path, *group.split("/"), "error")
    errors = zarr.open_array(err_path, mode="r") if os.path.exists(os.path.join(err_path, "zarr.json")) else None
    n_ok, failed, errs = 0, [], {}
    for s0 in range(0, n, block):
        col = np.asarray(status[s0 : min(n, s0 + block)])
        good = np.isin(col, (st.OK, st.OK_RAGGED))
        n_ok += int(good.sum())
        for j in np.flatnonzero(~good):
            i = s0 + int(j)
            failed.append(i)
            errs[str(i)] = (str(errors[i]) if errors is not None else "") or "not computed"
    return n_ok, errs, failed


def _manifest(
    plan: Any, attrs: dict[str, Any], entries: list[dict[str, Any]], n: int, spatials: Any, arrays: list[str]
) -> dict[str, Any]:
    """The combined manifest of a finished export (``<stem>.json`` next to the target when saved)."""
    shown = getattr(plan, "out_file_given", None) or plan.out_file  # as given, as rs-embed records it
    stem = shown[: -len(os.path.splitext(shown)[1])]
    return combined_manifest(
        created_at=attrs.get("created_at") or utc_timestamp(),
        backend=plan.backend,
        device=plan.device,
        model_entries=entries,
        n_items=n,
        temporal=plan.temporal,
        output=plan.output,
        spatials=spatials,
        fingerprint=plan.fingerprint,
        prefetch={k: {"sensor": jsonable(s.model.sensor), "users": list(s.users)} for k, s in plan.inputs.items()},
        manifest_path=stem + ".json" if plan.config.save_manifest else None,
        array_path=shown,
        array_keys=arrays,
        fmt=plan.fmt,
    )


def _entry(m: Any, statics: dict[str, Any], inputs: Any) -> dict[str, Any]:
    """The opening fields of a model's manifest entry, in rs-embed's order."""
    return {
        "model": m.name,
        "sensor": jsonable(m.sensor),
        "status": "ok",
        "describe": statics.get(m.name, {}).get("describe", {}),
        "inputs": inputs,
    }


def _record_failures(entry: dict[str, Any], n_ok: int, failed: list[int], errs: dict[str, str]) -> None:
    """Status, failed indices and errors of a model's entry (a model-level error when all failed)."""
    entry["status"] = "ok" if not failed else ("failed" if n_ok == 0 else "partial")
    if failed:
        entry["failed_indices"] = failed
        entry["errors_by_index"] = errs
        if n_ok == 0:
            entry["error"] = errs[str(failed[0])]


def _finalize_zarr(plan: Any, store_path: str, n: int, root: Any, attrs: dict[str, Any]) -> dict[str, Any]:
    """The store is the export: a manifest that points into it, built without per-item lists.

    Per-item spatials and metadata stay in the store's ``spatials`` and
    ``models/<m>/meta`` arrays (``load_export`` reads them lazily), so
    finishing an export of millions of ROIs keeps the client's memory flat.
    """
    from rs_embed_dask.export.writers import write_json

    cfg = plan.config
    entries: list[dict[str, Any]] = []
    statics = {m["name"]: m for m in attrs.get("models", [])}
    for m in plan.models:
        mkey = sanitize_key(m.name)
        group = f"models/{mkey}"
        key = plan.input_key_of(m.name)
        entry = _entry(m, statics, {"zarr_array": f"inputs/{key}/data"} if key and cfg.save_inputs else None)
        entry.update(embeddings=None, metas=None)
        if cfg.save_embeddings and f"{group}/status" in root:
            n_ok, errs, failed = _failures(store_path, group, n)
            entry["embeddings"] = {"zarr_array": f"{group}/embeddings"} if n_ok else None
            entry["metas"] = {"zarr_array": f"{group}/meta"}
            _record_failures(entry, n_ok, failed, errs)
        elif cfg.save_embeddings:
            entry["status"] = "failed" if n else "ok"
        entries.append(entry)
    arrays = sorted(f"{g}/{name}" for g in ("models", "inputs") if g in root for name, _ in root[g].groups())
    man = _manifest(plan, attrs, entries, n, {"zarr_array": "spatials"}, arrays)
    from rs_embed_dask.export.zarr_views import write_views

    views = write_views(store_path, plan)  # xr.open_zarr(path): the variables of to_xarray() at the root
    root.attrs["rs_embed_dask"] = {**attrs, "complete": True, "n_items": n, "manifest": jsonable(man), "views": views}
    import warnings

    import zarr

    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is outside the v3 spec; xarray reads it, so say nothing
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store_path)  # xarray.open_zarr(path) reads one document, no warning
    if man.get("manifest_path"):
        write_json(os.path.splitext(plan.out_file)[0] + ".json", man)  # the absolute spelling of manifest_path
    return man


def finalize_combined(plan: Any, store_path: str, n: int) -> dict[str, Any]:
    """Write the combined export's files from the working store and return its manifest."""
    from rs_embed_dask.export.writers import write_json, write_netcdf

    cfg = plan.config
    root = st.open_root(store_path, mode="r+")
    attrs = dict(root.attrs).get("rs_embed_dask", {})
    if plan.n_items is None:
        st.resize_items(store_path, n)
    if plan.fmt == "zarr":
        return _finalize_zarr(plan, store_path, n, root, attrs)
    spatials = [json.loads(s) for s in _col(store_path, "spatials", n)]
    arrays: dict[str, Any] = {}
    parts: dict[str, tuple[str, str]] = {}
    input_refs = _inputs(store_path, plan, n, arrays, parts)
    statics = {m["name"]: m for m in attrs.get("models", [])}
    entries: list[dict[str, Any]] = []
    for m in plan.models:
        mkey = sanitize_key(m.name)
        group = f"models/{mkey}"
        entry = _entry(m, statics, input_refs.get(m.name))
        if not cfg.save_embeddings:
            entry.update(embeddings=None, metas=None)
            entries.append(entry)
            continue
        status = _col(store_path, f"{group}/status", n)
        errors = _col(store_path, f"{group}/error", n)
        metas_raw = _col(store_path, f"{group}/meta", n)
        ok = np.flatnonzero(np.isin(status, (st.OK, st.OK_RAGGED)))
        failed = [int(i) for i in np.flatnonzero(~np.isin(status, (st.OK, st.OK_RAGGED)))]
        if ok.size == n and not (status == st.OK_RAGGED).any():
            data = _dask(store_path, f"{group}/embeddings")[:n]
            k = f"embeddings__{mkey}"
            arrays[k] = data
            parts[k] = (store_path, f"{group}/embeddings")
            entry["embeddings"] = {"npz_key": k, "shape": list(data.shape), "dtype": "float32"}
        elif ok.size:
            keys = []
            shape = _dense_shape(store_path, f"{group}/embeddings", status, plan.fmt == "npz")
            for i in ok:
                k = f"embedding__{mkey}__{i:05d}"
                arrays[k] = _item(store_path, group, "embeddings", int(i), int(status[i]), npz_shape=shape)
                keys.append(k)
            entry["embeddings"] = {"npz_keys": keys, "indices": [int(i) for i in ok]}
        else:
            entry["embeddings"] = None
        entry["metas"] = [json.loads(s) if s else None for s in metas_raw]
        _record_failures(entry, int(ok.size), failed, {str(i): str(errors[i]) or "not computed" for i in failed})
        entries.append(entry)
    man = _manifest(plan, attrs, entries, n, spatials, list(arrays))
    if plan.fmt == "netcdf":
        write_netcdf(
            plan.out_file,
            arrays,
            {"created_at": man["created_at"], "backend": plan.backend, "device": plan.device, "n_items": n},
        )
    else:
        write_npz_from_parts(plan.out_file, arrays, parts)
    if man.get("manifest_path"):
        write_json(os.path.splitext(plan.out_file)[0] + ".json", man)  # the absolute spelling of manifest_path
    if man.get("status") == "ok":
        shutil.rmtree(store_path, ignore_errors=True)
        shutil.rmtree(parts_dir(store_path), ignore_errors=True)
    # else the store stays beside the file: resume=True retries only the failed items from it
    return man
