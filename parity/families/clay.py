"""clay: rs-embed's vendored Clay v1.5 encoder (``large``), written as the published Lightning checkpoint.

The published ``made-with-clay/Clay`` ``v1.5/clay-v1.5.ckpt`` holds the whole
ClayMAE under ``state_dict`` with the prefix ``model.``; rs-embed (and ours)
read the ``model.encoder.*`` tensors only, so the random checkpoint holds
those (rs-embed's ``clay_encoder("large")`` with default init, its
parameters replaced by seeded values) plus the Lightning bookkeeping, and
loads with ``torch.load(weights_only=True)`` on both sides.  Ours builds the
encoder from terratorch's copy of the same Clay code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = {"clay": 10}
#: model -> native input size (px), replacing the plan's first size
NATIVE = {"clay": 256}
HUB_FILES = {"clay": {"rs_embed": ("made-with-clay/Clay", "v1.5/clay-v1.5.ckpt")}}


def build(model: str) -> tuple[Any, None]:
    """rs-embed's vendored Clay encoder, ``large``, patch 8, as its loader builds it (default init)."""
    from rs_embed.embedders._vendor.clay.model import clay_encoder

    return clay_encoder("large", patch_size=8, mask_ratio=0.0, shuffle=False), None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """``torch.save`` of ``{"state_dict": {"model.encoder.<key>": ...}, ...}`` at ``v1.5/clay-v1.5.ckpt``."""
    import torch

    path = Path(snapshot) / files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {f"model.encoder.{k}": v.detach().contiguous() for k, v in state.items()}
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 0,
                "hyper_parameters": {"model_size": "large", "patch_size": 8, "mask_ratio": 0.75}}, path)  # fmt: skip
