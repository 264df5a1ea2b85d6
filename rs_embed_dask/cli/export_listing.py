"""The exports in a folder, for ``rs-embed-dask ls DIR``: read from their manifests, never their arrays.

What is recognised, one row each:

- a combined file (``.npz``/``.nc``) with its ``.json`` manifest beside it;
- a ``.zarr`` store (its root ``zarr.json`` attributes hold the manifest);
- a per-item folder (``_rs_embed_dask_export.json``, or rs-embed's folders of
  ``p00000.json`` + ``p00000.npz`` items);
- the working store ``<target>.work.zarr`` of a combined export that has not
  finished: running when the target's lock has a live holder, else stopped
  (``resume=True`` / ``--resume`` continues it).

Progress of unfinished runs is counted from the chunk files of the status
arrays (a directory listing), never by reading them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

__all__ = ["export_rows", "format_exports_table"]

FOLDER_MANIFEST = "_rs_embed_dask_export.json"  # rs_embed_dask.export.tidy.FOLDER_MANIFEST (not imported: heavy)
_WORK = ".work.zarr"
_DATA_EXT = {".npz": "npz", ".nc": "netcdf"}
#: item manifests read to count ok items of a per-item folder (beyond: files are counted only)
_MAX_ITEM_MANIFESTS = 2000


def _json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _lock_state(target: str) -> str | None:
    """``"running"`` when ``<target>.lock`` has a live holder, ``"stopped"`` when stale, ``None`` when absent."""
    path = os.path.abspath(target).rstrip("/\\") + ".lock"
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    holder = _json(path) or {}
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "stopped"
        except OSError:
            pass
        return "running"
    stale = float(os.environ.get("RS_EMBED_DASK_LOCK_STALE_S") or 300.0)
    return "running" if time.time() - mtime <= stale else "stopped"


def _model_counts(models: list[Any], n_items: int | None) -> list[dict[str, Any]]:
    out = []
    for m in models:
        if not isinstance(m, dict):
            continue
        name = str(m.get("model") or m.get("name") or "?")
        status = m.get("status")
        n_ok: int | None = None
        if isinstance(n_items, int):
            failed = m.get("failed_indices")
            if status == "ok":
                n_ok = n_items
            elif status == "failed":
                n_ok = 0
            elif isinstance(failed, list):
                n_ok = n_items - len(failed)
        out.append({"name": name, "status": status, "n_ok": n_ok})
    return out


def _status_text(status: Any, models: list[dict[str, Any]], n_items: Any) -> str:
    if status == "ok":
        return "finished"
    parts = [
        f"{m['name']} {m['n_ok']} of {n_items} ok" if m["n_ok"] is not None else f"{m['name']} {m['status']}"
        for m in models
        if m["status"] != "ok"
    ]
    return f"{status}: " + ", ".join(parts) if parts else str(status)


def _chunks_written(store: str, models: list[str], chunk_size: Any, n_items: Any) -> int | None:
    """Items whose status chunk exists for every model (chunk granularity), from a directory listing."""
    if not models or not isinstance(chunk_size, int) or chunk_size < 1:
        return None
    counts = []
    for m in models:
        folder = os.path.join(store, "models", m, "status", "c")
        try:
            counts.append(sum(1 for e in os.scandir(folder) if e.is_file()))
        except OSError:
            counts.append(0)
    done = min(counts) * chunk_size
    return min(done, n_items) if isinstance(n_items, int) else done


def _row(path: str, kind: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path,
        "kind": kind,
        "layout": None,
        "format": None,
        "n_items": None,
        "models": [],
        "status": None,
        "state": None,
        "size_bytes": _size(path),
    }
    row.update(fields)
    return row


def _combined_file(data: str, manifest: dict[str, Any] | None) -> dict[str, Any]:
    fmt = _DATA_EXT[os.path.splitext(data)[1]]
    if manifest is None:
        return _row(data, "combined", layout="combined", format=fmt, status="no manifest", state="unknown")
    n = manifest.get("n_items")
    models = _model_counts(list(manifest.get("models") or []), n if isinstance(n, int) else None)
    row = _row(
        data, "combined", layout="combined", format=fmt, n_items=n, models=[m["name"] for m in models],
        status=_status_text(manifest.get("status"), models, n), state="finished", model_status=models,
    )  # fmt: skip
    man = os.path.splitext(data)[0] + ".json"
    row["size_bytes"] += _size(man) if os.path.exists(man) else 0
    return row


def _zarr_store(path: str) -> dict[str, Any]:
    meta = _json(os.path.join(path, "zarr.json")) or {}
    attrs = (meta.get("attributes") or {}).get("rs_embed_dask") or {}
    n = attrs.get("n_items")
    names = [str(m.get("name")) for m in attrs.get("models") or [] if isinstance(m, dict)]
    work = path.endswith(_WORK)
    kind = "working store" if work else "combined"
    target = path[: -len(_WORK)] if work else path
    if attrs.get("complete") and not work:
        man = attrs.get("manifest") or {}
        models = _model_counts(list(man.get("models") or []), n if isinstance(n, int) else None)
        return _row(
            path, kind, layout="combined", format="zarr", n_items=n, models=names or [m["name"] for m in models],
            status=_status_text(man.get("status"), models, n), state="finished", model_status=models,
        )  # fmt: skip
    if not attrs:
        return _row(path, kind, layout="combined", format="zarr", status="not an rs-embed-dask store", state="unknown")
    lock = _lock_state(target)
    state = "running" if lock == "running" else "stopped"
    done = _chunks_written(path, names, attrs.get("chunk_size"), n)
    total = n if isinstance(n, int) else "?"
    where = f"{done if done is not None else '?'} of {total}"
    if attrs.get("complete"):
        status = f"all {total} items written; the final file was not written"
    else:
        status = f"{where} items written"
    status += "; running" if state == "running" else "; stopped (resume with resume=True or --resume)"
    return _row(path, kind, layout="combined", format="zarr" if not work else os.path.splitext(target)[1].lstrip(".") or "?",
                n_items=n, models=names, status=status, state=state, target=target)  # fmt: skip


def _per_item(path: str, man: dict[str, Any] | None) -> dict[str, Any]:
    items = []
    with os.scandir(path) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            if e.is_file() and ext in _DATA_EXT and ".tmp-" not in e.name:
                items.append((stem, ext))
    fmt = (man or {}).get("format") or (_DATA_EXT[items[0][1]] if items else None)
    n_expected = (man or {}).get("n_items")
    n_files = len(items)
    models: dict[str, int] = {}
    n_ok_items = 0
    counted = 0
    for stem, _ext in sorted(items)[:_MAX_ITEM_MANIFESTS]:
        m = _json(os.path.join(path, stem + ".json"))
        if m is None:
            continue
        counted += 1
        n_ok_items += m.get("status") == "ok"
        for entry in m.get("models") or []:
            if isinstance(entry, dict) and entry.get("model"):
                models[str(entry["model"])] = models.get(str(entry["model"]), 0) + (entry.get("status") == "ok")
    names = list(models) or list(((man or {}).get("resume_identity") or {}).get("models") or {})
    total = n_expected if isinstance(n_expected, int) else n_files
    if man is not None and not man.get("complete"):
        lock = _lock_state(path)
        state = "running" if lock == "running" else "stopped"
        status = f"{n_files} of {total} items written; " + (
            "running" if state == "running" else "stopped (resume with resume=True or --resume)"
        )
    else:
        state = "finished"
        if counted and counted == n_files:
            bad = [f"{k} {v} of {total} ok" for k, v in models.items() if v != total]
            word = "failed" if models and not any(models.values()) else "partial"
            status = "finished" if not bad and n_files == total else f"{word}: " + ", ".join(bad or [f"{n_files} of {total} items"])
        else:
            status = f"finished ({n_files} items; statuses not counted)" if counted < n_files else "finished"
    return _row(path, "per-item folder", layout="per_item", format=fmt, n_items=total, models=names,
                status=status, state=state, n_ok_items=n_ok_items if counted == n_files else None)  # fmt: skip


def _is_zarr(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "zarr.json"))


def _is_per_item(path: str) -> dict[str, Any] | bool:
    if os.path.isfile(os.path.join(path, FOLDER_MANIFEST)):
        return _json(os.path.join(path, FOLDER_MANIFEST)) or {}
    with os.scandir(path) as it:
        names = {e.name for e in it if e.is_file()}
    # rs-embed's folders: p00000.npz (or .nc) with its item manifest p00000.json (it has a point_index)
    for n in sorted(names):
        stem, ext = os.path.splitext(n)
        if ext in _DATA_EXT and stem + ".json" in names:
            return "point_index" in (_json(os.path.join(path, stem + ".json")) or {})
    return False


def export_rows(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The exports directly inside ``folder`` (and ``folder`` itself when it is one).

    Parameters
    ----------
    folder : str or path
        The folder to list.

    Returns
    -------
    list of dict
        Per export: ``path``, ``kind`` (``combined``, ``per-item folder``,
        ``working store``), ``layout``, ``format``, ``n_items``, ``models``,
        ``status`` (``finished``, ``partial: m k of N ok``, ``failed``, or the
        progress of an unfinished run), ``state`` (``finished``,
        ``running``, ``stopped``) and ``size_bytes``.

    Raises
    ------
    FileNotFoundError
        When ``folder`` is not a folder.
    """
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root!r} is not a folder.")
    rows: list[dict[str, Any]] = []
    candidates = [root] if (_is_zarr(root) or (_is_per_item(root) is not False)) else []
    if not candidates:
        candidates = sorted(os.path.join(root, n) for n in os.listdir(root))
    for path in candidates:
        name = os.path.basename(path)
        if os.path.isdir(path):
            if _is_zarr(path):
                rows.append(_zarr_store(path))
                continue
            man = _is_per_item(path)
            if man is not False:
                rows.append(_per_item(path, man if isinstance(man, dict) else None))
            continue
        ext = os.path.splitext(name)[1]
        if ext in _DATA_EXT and ".tmp-" not in name:
            manifest = _json(os.path.splitext(path)[0] + ".json")
            rows.append(_combined_file(path, manifest))
    return rows


def format_exports_table(rows: list[dict[str, Any]], folder: str) -> str:
    """The rows of :func:`export_rows` as a plain-text table (whole statuses, never cut)."""
    if not rows:
        return f"no exports in {folder}"
    cols = ("export", "layout", "format", "items", "models", "size", "status")
    table = [
        (
            os.path.relpath(r["path"], folder) if r["path"] != folder else ".",
            str(r["layout"] or "-"),
            str(r["format"] or "-"),
            "-" if r["n_items"] is None else str(r["n_items"]),
            ",".join(r["models"]) or "-",
            _human(int(r["size_bytes"])),
            str(r["status"]),
        )
        for r in rows
    ]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.extend("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table)
    return "\n".join(lines)
