"""A summary table of an export, for ``rs-embed-dask inspect``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["export_summary", "format_summary"]



def _shape(arr: Any) -> str:
    return "-" if arr is None else "x".join(str(int(n)) for n in arr.shape)


def export_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What an export holds, read lazily with :func:`rs_embed_dask.load_export`.

    Parameters
    ----------
    path : str or path
        A combined file (``.npz``/``.nc``/``.zarr``), its manifest, or a per-item folder.

    Returns
    -------
    dict
        ``path``, ``layout``, ``format``, ``n_items``, ``status`` and
        ``models``: per model ``name``, ``status``, ``embeddings`` and
        ``inputs`` shapes, ``n_ok``, ``n_failed``, the first error and
        ``errors``: each distinct message, whole, with ``n_items`` and the
        ``items`` it failed.
    """
    from rs_embed_dask import load_export

    res = load_export(path)
    try:
        models = []
        for name, mr in res.models.items():
            st = mr.item_status
            if st is not None:
                codes = np.asarray(st)
                n_ok = int(np.count_nonzero((codes == 1) | (codes == 3)))
                n_failed = int(np.count_nonzero(codes == 2))
            else:
                n_failed = len(mr.errors)
                n_ok = res.n_items - n_failed if mr.status != "failed" else 0
            first = mr.error or next(iter(mr.errors.values()), None)
            distinct: dict[str, list[int]] = {}
            for idx, text in sorted(mr.errors.items()):
                distinct.setdefault(str(text), []).append(int(idx))
            models.append(
                {
                    "name": name,
                    "status": mr.status,
                    "embeddings": _shape(mr.embeddings_lazy),
                    "inputs": _shape(mr.inputs_lazy),
                    "n_ok": n_ok,
                    "n_failed": n_failed,
                    "error": first,
                    # every distinct message, whole, with the items it failed
                    "errors": [{"message": k, "n_items": len(v), "items": v} for k, v in distinct.items()],
                }
            )
        return {
            "path": str(path),
            "layout": res.layout,
            "format": res.format,
            "n_items": res.n_items,
            "status": res.status,
            "models": models,
        }
    finally:
        res.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :func:`export_summary` as a plain-text table."""
    lines = [
        f"export  {summary['path']}",
        f"layout  {summary['layout']}   format {summary['format']}   items {summary['n_items']}   "
        f"status {summary['status']}",
        "",
    ]
    cols = ("model", "status", "ok", "failed", "embeddings", "inputs")
    rows = [
        (m["name"], m["status"], str(m["n_ok"]), str(m["n_failed"]), m["embeddings"], m["inputs"])
        for m in summary["models"]
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    failed = [m for m in summary["models"] if m.get("error") or m.get("errors")]
    if failed:
        lines += ["", "failures (every distinct message per model, whole):"]
        for m in failed:
            entries = list(m.get("errors") or [])
            if m.get("error") and all(e["message"] != str(m["error"]) for e in entries):
                entries.insert(0, {"message": str(m["error"]), "n_items": None, "items": []})
            for e in entries:
                where = ""
                if e["n_items"]:
                    shown = ", ".join(map(str, e["items"][:10])) + (", ..." if e["n_items"] > 10 else "")
                    where = f" ({e['n_items']} item{'s' if e['n_items'] != 1 else ''}: {shown})"
                first, *rest = e["message"].strip().splitlines() or [""]
                lines.append(f"  {m['name']}{where}: {first}")
                lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines)
