"""terrafm: a tiny TerraFM with random weights under the official ``TerraFM-B.pth`` keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases._vit_common import raw_tile, vit_case

TINY: dict[str, Any] = {"image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}


def terrafm_state(
    embed_dim: int = 32, depth: int = 1, *, seed: int = 0, pos_side: int = 14
) -> dict[str, Any]:
    """Random tensors under the keys of the official ``terrafm.py`` (``TerraFM``, no classifier head).

    The sensor convolutions are ``3 * embed_dim`` wide; the positional table
    holds ``1 + pos_side ** 2`` entries (14: the 224 px checkpoint).
    """
    import torch

    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.05) -> Any:
        return torch.randn(*shape, generator=g) * scale

    d, w = embed_dim, 3 * embed_dim
    state: dict[str, Any] = {
        "cls_token": r(1, 1, d),
        "pos_embed": r(1, pos_side * pos_side + 1, d),
        "norm.weight": 1 + r(d),
        "norm.bias": r(d),
    }
    for name, c in (("conv2d_s2_l2a", 12), ("conv2d_s2_l1c", 12), ("conv2d_s1", 2)):
        state[f"patch_embed.{name}.weight"] = r(w, c, 16, 16, scale=0.02)
        state[f"patch_embed.{name}.bias"] = r(w)
    for name in ("s2_l2a_embed", "s2_l1c_embed", "s1_embed"):
        state[f"patch_embed.{name}"] = r(1, w)
    p = "patch_embed.projection."
    state.update(
        {
            p + "proj1.weight": r(w, w, scale=0.1), p + "norm_input.weight": 1 + r(w), p + "norm_input.bias": r(w),
            p + "proj2.weight": r(w, w, scale=0.1), p + "proj2.bias": r(w),
            p + "proj3.weight": r(d, w, scale=0.1), p + "proj3.bias": r(d),
        }
    )  # fmt: skip
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


def _setup(directory: Path) -> dict[str, Any]:
    import torch

    torch.save(terrafm_state(), directory / "TerraFM-B.pth")
    return {"weights": str(directory), **TINY}


_RAW = raw_tile(12, 32)
_EXPECTED = np.clip(_RAW / np.float32(10000.0), np.float32(0.0), np.float32(1.0)).astype(np.float32)

CASES = {
    "terrafm": vit_case(
        _RAW, _EXPECTED, _setup,
        pooled_is_not_grid_mean="TerraFM's pooled output is the final-LayerNorm CLS token (the model's "
        "forward, as rs-embed), not a reduction of the patch-token grid",
    ),
}  # fmt: skip
