"""remoteclip: a tiny open_clip CLIP (ViT, patch 32) with random weights in RemoteCLIP's checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_cases._vit_common import raw_tile, rgb_golden, vit_case

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# test-only architecture overrides: 64 px input -> 2 x 2 patch tokens of width 64
TINY: dict[str, Any] = {"image_size": 64, "width": 64, "layers": 1, "embed_dim": 32}


def tiny_clip(variant: str = "vit-b-32") -> Any:
    """The open_clip CLIP that ``TINY`` describes (built here, independently of the embedder)."""
    import open_clip

    vision = {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32}
    if variant == "rn50":
        vision = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 64, "patch_size": None}
    text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
    return open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)


def write_checkpoint(directory: Path, variant: str = "vit-b-32") -> Path:
    """A RemoteCLIP-style checkpoint (a plain CLIP state dict saved with ``torch.save``)."""
    import torch

    name = {"vit-b-32": "RemoteCLIP-ViT-B-32.pt", "rn50": "RemoteCLIP-RN50.pt"}[variant]
    torch.manual_seed(0)
    path = directory / name
    torch.save(tiny_clip(variant).state_dict(), path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    write_checkpoint(directory)
    return {"weights": str(directory), **TINY}


_RAW = raw_tile(3, 64)

CASES = {
    "remoteclip": vit_case(
        _RAW, rgb_golden(_RAW, CLIP_MEAN, CLIP_STD), _setup,
        input_hw=(70, 64),
        pooled_is_not_grid_mean="pooled is the CLIP image projection of the class token (encode_image), "
        "not an average of the patch tokens",
    ),
}  # fmt: skip
