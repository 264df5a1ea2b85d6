"""``load_export`` of per-item folders: ``<name>.npz|.nc`` + ``<name>.json`` per ROI (internal).

See :mod:`rs_embed_dask.export.load` for the rules (fixes (c), (d) and (e)
of rs-embed's loader apply here).  A folder written by this package also
holds ``_rs_embed_dask_export.json`` (:mod:`rs_embed_dask.export.tidy`):
when it says the export finished, every item it names must be there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ExportIntegrityError
from rs_embed_dask.export.load_io import (
    clean_temporal,
    lazy_array,
    npz_headers,
    open_nc,
    read_array,
    stack_rows,
    summarize_statuses,
    warn_ragged,
)
from rs_embed_dask.export.results import ITEM_FAILED, ITEM_OK, ExportResult, ModelResult
from rs_embed_dask.export.verify import Damage, check_item_manifest, check_n_items, load_manifest_json
from rs_embed_dask.serialization import sanitize_key

__all__ = ["load_per_item"]

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


def _discover(directory: str, damage: Damage) -> list[_ItemFile]:
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
        json_path = os.path.join(directory, base + ".json")
        try:
            manifest = load_manifest_json(json_path)
            check_item_manifest(manifest, json_path)
        except ExportIntegrityError as exc:
            damage.report(exc.path, exc.problem)  # strict=False: the item is left out (failed)
            continue
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
    if not files and not damage.problems:
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


def _expected_items(directory: str, files: list[_ItemFile], damage: Damage) -> tuple[int, dict[int, str]]:
    """``n_items`` and the damaged items' error text, from the folder manifest when there is one.

    The folder manifest of a finished export names every item; each must be
    there.  Without one (rs-embed's folders, an unfinished export) the items
    are the files found.
    """
    from rs_embed_dask.export.tidy import FOLDER_MANIFEST, read_folder_manifest

    found = (files[-1].idx + 1) if files else 0
    folder = read_folder_manifest(directory)
    if folder is None or not folder.get("complete"):
        return found, {}
    path = os.path.join(directory, FOLDER_MANIFEST)
    # every item has a file: a count far beyond the files found is a damaged manifest, not
    # millions of lost items (and must not size any allocation)
    n = check_n_items(folder.get("n_items"), path, at_most=2 * max(found, len(files)) + 1024,
                      why=f"the folder holds only {len(files)} item files")  # fmt: skip
    names = folder.get("names")
    if names is not None and not (
        isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names)
    ):
        raise ExportIntegrityError(path, f"'names' must be null or a list of {n} strings")
    ext = ".nc" if folder.get("format") == "netcdf" else ".npz"
    have = {f.idx for f in files}
    bad: dict[int, str] = {}
    for i in range(n):
        if i not in have:
            name = names[i] if names is not None else f"p{i:05d}"
            bad[i] = damage.report(os.path.join(directory, name + ext),
                                   f"item {i} listed by {FOLDER_MANIFEST} is missing (or its .json is)")  # fmt: skip
    return n, bad


def load_per_item(directory: str, *, strict: bool = True) -> ExportResult:
    """Load a per-item folder lazily, verifying it (see :func:`rs_embed_dask.export.load.load_export`)."""
    damage = Damage(strict)
    files = _discover(directory, damage)
    n, missing = _expected_items(directory, files, damage)
    if not files:
        raise ExportIntegrityError(directory, "no per-item file of the export can be read")
    n = max(n, files[-1].idx + 1)
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
                elif isinstance(ref, dict) and ref.get("npz_key"):
                    # the entry names an array its file does not list: the item is damaged
                    text = damage.report(
                        f.path,
                        f"member {k!r} ({ref_name} of model {name!r}) named by its manifest is missing",
                    )
                    a["codes"][f.idx] = ITEM_FAILED
                    a["errors"][f.idx] = text
            m = entry.get("meta")
            a["meta"][f.idx] = m if isinstance(m, dict) else {}
    cache: dict[str, np.ndarray] = {}
    models: dict[str, ModelResult] = {}
    stamp = (os.path.abspath(directory), tuple(os.path.getmtime(f.path) for f in files))
    for name, a in acc.items():
        codes = a["codes"]
        for i, text in missing.items():  # strict=False: items of the manifest with no file are failed
            codes[i] = ITEM_FAILED
            a["errors"][i] = text
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
