"""HTML views of loaded exports for notebooks (``_repr_html_``), as xarray objects have.

Nothing here reads an array: shapes come from the (lazy) sources, counts
from the per-item status codes and the error texts already loaded.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

__all__ = ["export_result_html", "model_result_html"]

_STATUS_COLOUR = {"ok": "#1a7f37", "partial": "#9a6700", "failed": "#cf222e"}
_MAX_ERRORS = 3


def _shape(value: Any) -> str:
    if value is None:
        return "–"
    dtype = getattr(value, "dtype", "")
    lazy = "" if type(value).__module__.startswith("numpy") else " (lazy)"
    return f"{tuple(value.shape)} {dtype}{lazy}"


def _status(status: str) -> str:
    colour = _STATUS_COLOUR.get(status, "inherit")
    return f'<span style="color:{colour};font-weight:600">{escape(status)}</span>'


def _counts(m: Any) -> str:
    codes = getattr(m, "item_status", None)
    if codes is None:
        return ""
    c = Counter(int(v) for v in codes)
    ok, failed, missing = c.get(1, 0) + c.get(3, 0), c.get(2, 0), c.get(0, 0)
    out = f"{ok} ok"
    if failed:
        out += f", {failed} failed"
    if missing:
        out += f", {missing} missing"
    return out


def _errors(m: Any) -> str:
    """The most frequent distinct error texts, whole, with how many items each."""
    texts = Counter(str(t) for t in (getattr(m, "errors", None) or {}).values())
    if not texts and getattr(m, "error", None):
        texts[str(m.error)] = 1
    if not texts:
        return ""
    rows = "".join(
        f"<li><code>{n} item{'s' if n > 1 else ''}</code>: {escape(t)}</li>" for t, n in texts.most_common(_MAX_ERRORS)
    )
    more = len(texts) - _MAX_ERRORS
    tail = f"<li>… and {more} other message{'s' if more > 1 else ''}</li>" if more > 0 else ""
    return f"<ul style='margin:0'>{rows}{tail}</ul>"


def _model_row(m: Any) -> str:
    src = getattr(m, "_src", {})
    cells = (
        f"<code>{escape(m.name)}</code>",
        _status(m.status),
        _counts(m),
        _shape(src.get("embeddings")),
        _shape(src.get("inputs")),
        _errors(m),
    )
    return "<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>"


_HEAD = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("model", "status", "items", "embeddings", "inputs", "errors"))


def model_result_html(m: Any) -> str:
    """HTML table of one :class:`~rs_embed_dask.export.results.ModelResult`."""
    return f"<div><b>ModelResult</b><table><tr>{_HEAD}</tr>{_model_row(m)}</table></div>"


def export_result_html(r: Any) -> str:
    """HTML summary of an :class:`~rs_embed_dask.export.results.ExportResult`: models, statuses, shapes, failures."""
    fmt = f", {escape(r.format)}" if r.format else ""
    path = f" <code>{escape(r.path)}</code>" if r.path else ""
    rows = "".join(_model_row(m) for m in r.models.values())
    return (
        f"<div><b>ExportResult</b> {escape(r.layout)}{fmt}, {r.n_items} items, {_status(r.status)}{path}"
        f"<table><tr>{_HEAD}</tr>{rows}</table>"
        "<small><code>.to_xarray()</code>: a lazy <code>xarray.Dataset</code> of every model (dims "
        "<code>item</code>, <code>dim</code>, ...; <code>lon</code>/<code>lat</code> coordinates)</small></div>"
    )
