"""scalemae: a tiny Scale-MAE encoder with random weights in the official checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_cases.satmae import TINY, mae_case, mae_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _setup(directory: Path) -> dict[str, Any]:
    import torch

    # the release wraps the tensors in {"model": ...} and keeps the fixed pos_embed buffer
    torch.save({"model": mae_state(seed=1), "epoch": 799}, directory / "scalemae-vitlarge-800.pth")
    return {"weights": str(directory), **TINY}


CASES = {"scalemae": mae_case(IMAGENET_MEAN, IMAGENET_STD, _setup, (48, 40))}
