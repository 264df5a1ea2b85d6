"""The table of ``rs-embed-dask models``: what each model is, needs and has here.

One row per registered model, from its ``describe()`` (import-light) and an
offline presence check of its default weights
(:func:`rs_embed_dask.models.weights.offline_probe`): the local files and the
Hugging Face cache are looked at, nothing is downloaded or read.  Describing
a model and locating its weights import no deep-learning library (weights URLs
are plain data in the model modules), so the table prints in well under a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["format_models_table", "model_row", "model_rows"]

_TYPES = {"onthefly": "on the fly", "precomputed": "precomputed"}


def _installed(requires: tuple[str, ...]) -> bool:
    # top-level names only: find_spec("a.b") would import a
    return all(importlib.util.find_spec(m.split(".")[0]) is not None for m in requires)


def _dims(desc: dict[str, Any]) -> tuple[int | None, int | None]:
    pooled = desc.get("embedding_dim")
    grid = desc.get("grid_dim")
    pooled_i = int(pooled) if isinstance(pooled, int) else None
    grid_i = int(grid) if isinstance(grid, int) and grid != pooled else None
    return pooled_i, grid_i


def _sensor(desc: dict[str, Any]) -> str:
    inputs = desc.get("inputs") or {}
    if not isinstance(inputs, dict):
        return "-"
    if "product" in inputs:
        return str(inputs["product"])
    coll = str(inputs.get("collection") or "-").split("/")[-1]
    bands = list(inputs.get("bands") or [])
    if not bands:
        text = coll
    elif len(bands) <= 4:
        text = f"{coll} {','.join(map(str, bands))}"
    else:
        text = f"{coll} {len(bands)} bands ({bands[0]}..{bands[-1]})"
    modalities = list(desc.get("modalities") or [])
    if len(modalities) > 1:
        text += f"; modalities {'/'.join(map(str, modalities))}"
    return text


def _weights(emb: Any, desc: dict[str, Any]) -> tuple[str, list[str]]:
    """``(status, files)``: ``yes``, ``no``, ``-`` (none needed) or ``?`` (could not be checked)."""
    from rs_embed_dask.core.errors import ModelError
    from rs_embed_dask.models.weights import DOWNLOAD_PENDING, locate_weights, offline_probe

    if desc.get("type") == "precomputed":
        return "-", []
    try:
        with offline_probe():
            found = locate_weights(emb, emb.name, dict(getattr(emb, "model_config", None) or {}))
    except ModelError:
        return "no", []
    except Exception as exc:  # e.g. torchgeo missing for a torchgeo weights URL
        return f"? ({type(exc).__name__})", []
    if found is None:
        return "-", []
    files = [Path(p) for p in (found if isinstance(found, (tuple, list)) else [found])]
    if any(p == DOWNLOAD_PENDING for p in files):
        return "no", []
    return "yes", [str(p) for p in files]


def model_row(name: str, *, check_weights: bool = True) -> dict[str, Any]:
    """One model's row.

    Parameters
    ----------
    name : str
        A registered model name.
    check_weights : bool
        Look for the default weights locally (offline; nothing downloaded).

    Returns
    -------
    dict
        ``name``, ``type``, ``pooled_dim``, ``grid_dim`` (when it differs),
        ``sensor``, ``extra``, ``extra_installed``, ``weights`` (``yes``,
        ``no``, ``-`` for none needed, ``?`` when it could not be checked,
        ``None`` unchecked) and ``weights_files`` (the local files found).
    """
    from rs_embed_dask.core.registry import get_model_class

    cls = get_model_class(name)
    emb = cls()
    desc = dict(emb.describe())
    pooled, grid = _dims(desc)
    weights, files = _weights(emb, desc) if check_weights else (None, [])
    return {
        "name": name,
        "type": _TYPES.get(str(desc.get("type", cls.model_type)), str(cls.model_type)),
        "pooled_dim": pooled,
        "grid_dim": grid,
        "sensor": _sensor(desc),
        "extra": cls.extra,
        "extra_installed": _installed(tuple(cls.requires)),
        "weights": weights,
        "weights_files": files,
    }


def model_rows(*, include_aliases: bool = False, check_weights: bool = True) -> list[dict[str, Any]]:
    """The rows of every registered model (aliases as rows of their own when asked)."""
    from rs_embed_dask import list_models

    return [model_row(n, check_weights=check_weights) for n in list_models(include_aliases=include_aliases)]


def format_models_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`model_rows` as a plain-text table with a legend."""
    cols = ("model", "type", "dims", "sensor / bands", "extra", "weights here")
    table = []
    for r in rows:
        dims = "-" if r["pooled_dim"] is None else str(r["pooled_dim"])
        if r["grid_dim"] is not None:
            dims += f" (grid {r['grid_dim']})"
        extra = r["extra"] or "-"
        extra += " (installed)" if r["extra_installed"] else " (missing)"
        table.append((r["name"], r["type"], dims, r["sensor"], extra, r["weights"] or "unchecked"))
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.extend("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table)
    lines += [
        "",
        "extra: pip install 'rs-embed-dask[EXTRA]' ('-': none beyond the base install).",
        "weights here: the default checkpoint is in the local caches or given by its environment variable "
        "(no: fetched from the Hugging Face hub on first use, or pass weights=PATH; -: none needed).",
    ]
    from rs_embed_dask.models.hub_reach import hub_offline_env

    if hub_offline_env():
        lines.append("HF_HUB_OFFLINE is set: models without local weights cannot run.")
    return "\n".join(lines)
