"""Housekeeping of an export target: leftovers of killed writers, and the per-item folder manifest.

Every writer of this package writes ``<final>.tmp-<pid>-<token>`` and moves
it into place (:func:`rs_embed_dask.export.writers.atomic_path`,
:func:`rs_embed_dask.export.npz_parts.write_part`).  A writer killed between
the two leaves its temporary file for ever; :func:`remove_stale_tmp` removes
those of one target at the start of the next run, while the run holds the
target's lock (so no live writer of this target can own them).

A per-item folder also gets ``_rs_embed_dask_export.json``
(:data:`FOLDER_MANIFEST`): the request's fingerprint and resume identity,
the item count and names, and whether the export finished.  ``resume``
compares against it, and ``load_export`` takes the items it must find from
it (rs-embed's per-item folders have none; they load as before).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from rs_embed_dask.serialization import jsonable, utc_timestamp

__all__ = ["FOLDER_MANIFEST", "TMP_RE", "read_folder_manifest", "remove_stale_tmp", "write_folder_manifest"]

#: File name of the per-item folder manifest (never a per-item name).
FOLDER_MANIFEST = "_rs_embed_dask_export.json"
#: Names of temporary files written by this package's atomic writers.
TMP_RE = re.compile(r"\.tmp-\d+-[0-9a-f]+$")


def _remove_tmp_in(
    folder: str, prefixes: tuple[str, ...] | None = None, *, recursive: bool = False
) -> list[str]:
    removed: list[str] = []
    if not os.path.isdir(folder):
        return removed
    walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for root, _dirs, files in walker:
        for name in files:
            if not TMP_RE.search(name):
                continue
            if prefixes is not None and not name.startswith(prefixes):
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
                removed.append(path)
    return removed


def remove_stale_tmp(plan: Any) -> list[str]:
    """Remove the temporary files killed writers of this target left; return their paths."""
    from rs_embed_dask.export.npz_parts import parts_dir

    if plan.out_dir is not None:
        return _remove_tmp_in(plan.out_dir)
    out = os.path.abspath(plan.out_file)
    stem = os.path.splitext(os.path.basename(out))[0]
    removed = _remove_tmp_in(os.path.dirname(out), (os.path.basename(out), stem + ".json"))
    store = out if plan.fmt == "zarr" else out + ".work.zarr"
    removed += _remove_tmp_in(parts_dir(store), recursive=True)
    return removed


def read_folder_manifest(out_dir: str) -> dict[str, Any] | None:
    """The folder manifest of a per-item export, or ``None`` when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(out_dir, FOLDER_MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_folder_manifest(plan: Any, *, complete: bool, n_items: int | None) -> None:
    """Write the folder manifest of a per-item export (at the start, and when it finishes)."""
    from rs_embed_dask.export.writers import write_json

    prev = read_folder_manifest(plan.out_dir) or {}
    man = {
        "format_version": 1,
        "layout": "per_item",
        "format": plan.fmt,
        "complete": bool(complete),
        "n_items": n_items,
        # None: the default names p00000, p00001, ...
        "names": list(plan.names) if plan.names is not None else None,
        "save_manifest": bool(plan.config.save_manifest),
        "request_fingerprint": plan.fingerprint,
        "resume_identity": plan.identity,
        "created_at": prev.get("created_at") if complete and prev.get("created_at") else utc_timestamp(),
        "completed_at": utc_timestamp() if complete else None,
    }
    write_json(os.path.join(plan.out_dir, FOLDER_MANIFEST), jsonable(man))
