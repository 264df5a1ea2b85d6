"""satmae: a tiny MAE encoder with random weights in the SatMAE checkpoint format (encoder + decoder keys)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_cases import ModelCase
from model_cases._vit_common import raw_tile, rgb_golden, vit_case

FMOW_MEAN = (0.4182007, 0.4214799, 0.3991276)
FMOW_STD = (0.2877428, 0.2754177, 0.2764018)
TINY: dict[str, Any] = {"image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}


def mae_state(embed_dim: int = 32, depth: int = 1, side: int = 2, *, pos: bool = True, seed: int = 0) -> dict:
    """Random tensors under the MAE/SatMAE pre-training keys, decoder included (as the released files)."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Any:
        return torch.randn(*shape, generator=g) * 0.05

    d, n = embed_dim, side * side
    state: dict[str, Any] = {
        "cls_token": r(1, 1, d),
        "patch_embed.proj.weight": r(d, 3, 16, 16),
        "patch_embed.proj.bias": r(d),
        "norm.weight": 1 + r(d),
        "norm.bias": r(d),
        "mask_token": r(1, 1, 16),
        "decoder_embed.weight": r(16, d),
        "decoder_embed.bias": r(16),
        "decoder_pred.weight": r(768, 16),
    }
    if pos:
        state["pos_embed"] = r(1, n + 1, d)
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d),
                b + "attn.qkv.weight": r(3 * d, d), b + "attn.qkv.bias": r(3 * d),
                b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
                b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d),
                b + "mlp.fc1.weight": r(4 * d, d), b + "mlp.fc1.bias": r(4 * d),
                b + "mlp.fc2.weight": r(d, 4 * d), b + "mlp.fc2.bias": r(d),
            }
        )  # fmt: skip
    return state


def mae_case(
    mean: tuple[float, ...],
    std: tuple[float, ...],
    setup: Callable[[Path], dict[str, Any]],
    odd_hw: tuple[int, int],
) -> ModelCase:
    """The case of an MAE-encoder family on 32 px RGB; its pooled mean is the grid mean at 32 px, ``odd_hw`` and 64 px."""
    raw = raw_tile(3, 32)
    exact = [({}, (32, 32)), ({}, odd_hw), ({"image_size": 64}, (64, 64))]
    return vit_case(raw, rgb_golden(raw, mean, std), setup, exact_pooling=exact)


def _setup(directory: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    save_file(mae_state(), str(directory / "model.safetensors"))
    return {"weights": str(directory), **TINY}


CASES = {"satmae": mae_case(FMOW_MEAN, FMOW_STD, _setup, (45, 50))}
