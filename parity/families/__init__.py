"""Per-family parity recipes, one module per model family added after the first five.

A family module (``parity/families/<family>.py``) may define:

``MODELS``
    ``{model name: default fetch scale in metres}``: the on-the-fly models it adds to the plan.
``HUB_FILES``
    Entries of :data:`parity.weights.HUB_FILES` (``{"rs_embed": (repo, *files), "ours": (repo, file)}``).
``build(model) -> (module, config_json or None)``
    Runs in ``.venv-parity``: rs-embed's (or the upstream library's) module with default init,
    whose state dict is written, seeded, in the published file's format.
``save(model, state, snapshot, files)``
    Optional: write the state in a format other than ``.safetensors`` / ``torch.save`` of a flat dict.
``ours_weights(model, src, dst)``
    Optional: derive our checkpoint file from rs-embed's where the two read different files.
``MODALITIES``
    Optional ``{model: {modality: native size (px)}}``: the model's cases again with ``modality=``.
``NATIVE``
    Optional ``{model: native input size (px)}``, replacing the plan's first ROI size.
``WINDOW``
    Optional ``{model: (start, end)}``: the time window of the model's cases instead of the plan's.
``WINDOWS``
    Optional ``{model: (((start, end), days), ...)}``: extra single cases at other windows (as :data:`parity.inputs.WINDOWS`).
``KNOWN``
    Optional entries of :data:`parity.compare.KNOWN` (``{(model, output): explanation}``); a
    failing row of one is an exception when the model's control run (or its sorted grid tokens)
    matches ours.
``control(model)``
    Optional context manager (rs-embed side): the control run of the model's grid cases and
    pooled rectangle cases (e.g. MAE ``random_masking`` replaced by the identity), saved with
    satmae's.
``rsembed_setup(model) -> str``
    Optional (rs-embed side, before the cases): adapt rs-embed to the harness (e.g. build a
    smaller config than the one it hard-codes); returns the note the report lists as a workaround.
``side_env(workdir, seed) -> dict``
    Optional: environment variables of both side processes, e.g. rs-embed's variable naming a
    checkpoint that is not on the Hugging Face hub (a URL download), pointed at the file written
    under ``workdir``.

Modules must import neither package at import time (both sides import this package).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

__all__ = ["families", "family_of", "hub_files", "known", "modalities", "models", "native", "side_env"]


def families() -> list[ModuleType]:
    """Every family module of this package, imported."""
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]


def models() -> dict[str, float]:
    """``{model: scale}`` over every family."""
    out: dict[str, float] = {}
    for fam in families():
        out.update(getattr(fam, "MODELS", {}))
    return out


def hub_files() -> dict[str, dict[str, tuple[str, ...]]]:
    """The families' :data:`parity.weights.HUB_FILES` entries."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for fam in families():
        out.update(getattr(fam, "HUB_FILES", {}))
    return out


def modalities() -> dict[str, dict[str, int]]:
    """``{model: {modality: native size}}`` over every family."""
    out: dict[str, dict[str, int]] = {}
    for fam in families():
        out.update(getattr(fam, "MODALITIES", {}))
    return out


def native() -> dict[str, int]:
    """``{model: native input size}`` over every family."""
    out: dict[str, int] = {}
    for fam in families():
        out.update(getattr(fam, "NATIVE", {}))
    return out


def known() -> dict[tuple[str, str], str]:
    """The families' justified-exception texts, ``{(model, output): explanation}``."""
    out: dict[tuple[str, str], str] = {}
    for fam in families():
        out.update(getattr(fam, "KNOWN", {}))
    return out


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """The families' extra environment of both side processes (their ``side_env`` hooks)."""
    out: dict[str, str] = {}
    for fam in families():
        hook = getattr(fam, "side_env", None)
        if hook is not None:
            out.update(hook(Path(workdir), int(seed)))
    return out


def family_of(model: str) -> ModuleType | None:
    """The family module that adds ``model``, if any."""
    for fam in families():
        if model in getattr(fam, "MODELS", {}) or model in getattr(fam, "HUB_FILES", {}):
            return fam
    return None
