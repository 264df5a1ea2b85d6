"""Root-level variables of a finished zarr export: ``xr.open_zarr(path)`` is ``load_export(path).to_xarray()``.

The store keeps one group per model and per input (``models/<key>/...``,
``inputs/<key>/...``: the layout the write tasks, resume and
:func:`~rs_embed_dask.load_export` use), and xarray opens one group at a
time.  When a zarr export finishes, each model's dense embeddings, inputs and
status column also appear at the root under the names of
:meth:`ExportResult.to_xarray <rs_embed_dask.export.results.ExportResult.to_xarray>`
(``<model>``, ``input__<model>``, ``status__<model>``) with its dimension
names, beside ``item``/``lon``/``lat``: a *view* whose chunk files are hard
links to the group array's (no bytes copied; a copy where the file system
has no hard links).  Views are listed in the store's attributes
(``rs_embed_dask.views``) and removed before a resume writes to the store
again (a rewritten chunk is a new file, which a link would not follow).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from rs_embed_dask.serialization import sanitize_key

__all__ = ["drop_views", "write_views"]

_FLAGS = {"flag_values": [0, 1, 2, 3], "flag_meanings": "missing ok failed ok_ragged"}


def _tail(kind: str, ndim: int) -> tuple[str, ...]:
    if kind == "emb":
        return {2: ("dim",), 4: ("dim", "y", "x")}.get(ndim, tuple(f"d{i}" for i in range(1, ndim)))
    return {4: ("band", "y", "x"), 5: ("time", "band", "y", "x")}.get(ndim, tuple(f"d{i}" for i in range(1, ndim)))


def _link_tree(src: str, dst: str) -> None:
    for base, _dirs, files in os.walk(src):
        rel = os.path.relpath(base, src)
        out = os.path.join(dst, rel) if rel != "." else dst
        os.makedirs(out, exist_ok=True)
        for name in files:
            if name == "zarr.json":
                continue
            try:
                os.link(os.path.join(base, name), os.path.join(out, name))
            except OSError:  # no hard links here (some network file systems): copy
                shutil.copy2(os.path.join(base, name), os.path.join(out, name))


def _view(store_path: str, src: str, name: str, dims: tuple[str, ...], attrs: dict[str, Any]) -> bool:
    src_dir = os.path.join(store_path, *src.split("/"))
    try:
        with open(os.path.join(src_dir, "zarr.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if len(meta.get("shape", [])) != len(dims):
        return False
    dst = os.path.join(store_path, name)
    shutil.rmtree(dst, ignore_errors=True)
    if os.path.isdir(os.path.join(src_dir, "c")):
        _link_tree(os.path.join(src_dir, "c"), os.path.join(dst, "c"))
    os.makedirs(dst, exist_ok=True)
    meta["dimension_names"] = list(dims)
    meta["attributes"] = {**attrs, "coordinates": "lon lat", "rs_embed_dask_view_of": src}
    with open(os.path.join(dst, "zarr.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return True


def write_views(store_path: str, plan: Any) -> list[str]:
    """Add the root-level views of a finished store; return their names."""
    names: list[str] = []
    taken = {"item", "lon", "lat", "spatials", "models", "inputs"}
    for m in plan.models:
        name = str(m.name)
        if "/" in name or name in taken or name.startswith("."):
            continue  # not a valid root variable name: the group still opens with group="models/<key>"
        key = sanitize_key(name)
        group = f"models/{key}"
        emb_meta = os.path.join(store_path, group, "embeddings", "zarr.json")
        if plan.config.save_embeddings and os.path.exists(emb_meta):
            with open(emb_meta, encoding="utf-8") as f:
                nd = len(json.load(f)["shape"])
            dims = ("item", *(f"{name}_{t}" for t in _tail("emb", nd)))
            if _view(store_path, f"{group}/embeddings", name, dims, {"model": name}):
                names.append(name)
        if _view(store_path, f"{group}/status", f"status__{name}", ("item",), {"model": name, **_FLAGS}):
            names.append(f"status__{name}")
        ikey = plan.input_key_of(name)
        data_meta = os.path.join(store_path, "inputs", str(ikey), "data", "zarr.json")
        if ikey and plan.config.save_inputs and os.path.exists(data_meta):
            with open(data_meta, encoding="utf-8") as f:
                nd = len(json.load(f)["shape"])
            vname = f"input__{name}"
            dims = ("item", *(f"{vname}_{t}" for t in _tail("input", nd)))
            if _view(store_path, f"inputs/{ikey}/data", vname, dims, {"model": name}):
                names.append(vname)
    return names


def drop_views(store_path: str, views: Any) -> None:
    """Remove the views listed in the store's attributes (before the store changes again)."""
    for name in views or []:
        if isinstance(name, str) and name and "/" not in name and not name.startswith("."):
            shutil.rmtree(os.path.join(store_path, name), ignore_errors=True)
