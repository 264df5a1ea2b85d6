"""scalemae: a tiny Scale-MAE encoder with random weights in the official checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_cases import ModelCase
from model_cases._vit_common import raw_tile, rgb_golden
from model_cases.satmae import TINY, mae_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _setup(directory: Path) -> dict[str, Any]:
    import torch

    # the release wraps the tensors in {"model": ...} and keeps the fixed pos_embed buffer
    torch.save({"model": mae_state(seed=1), "epoch": 799}, directory / "scalemae-vitlarge-800.pth")
    return {"weights": str(directory), **TINY}


_RAW = raw_tile(3, 32)

CASES = {
    "scalemae": ModelCase(
        config={},
        input_hw=(32, 32),
        raw=_RAW,
        expected=rgb_golden(_RAW, IMAGENET_MEAN, IMAGENET_STD),
        setup=_setup,
        exact_pooling=[({}, (32, 32)), ({}, (48, 40)), ({"image_size": 64}, (64, 64))],
        atol=1e-4,
    ),
}
