"""dofa: a tiny torchgeo DOFA with random weights in the official MAE checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases._vit_common import raw_tile, vit_case

TINY: dict[str, Any] = {"image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}
# DOFA's Sentinel-2 statistics (0..255 scale) for B4, B3, B2, B5, B6, B7, B8, B11, B12
S2_MEAN = (114.1099739, 114.81779093, 126.63977424, 84.33539309, 97.84789168, 103.94461911, 101.435633,
           72.32804172, 56.66528851)  # fmt: skip
S2_STD = (77.84352553, 69.96844919, 67.42465279, 64.57022983, 61.72545487, 61.34187099, 60.29744676,
          47.88519516, 42.55886798)  # fmt: skip


def dofa_state(seed: int = 0, embed_dim: int = 32, depth: int = 1, num_heads: int = 2) -> dict[str, Any]:
    """Random DOFA encoder tensors plus the extra keys the released MAE checkpoints carry."""
    import torch
    from torchgeo.models.dofa import DOFA

    torch.manual_seed(seed)
    m = DOFA(img_size=32, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
             num_classes=0, global_pool=False)  # fmt: skip
    state = dict(m.state_dict())
    with torch.no_grad():
        state["norm.weight"] = 1 + 0.1 * torch.randn(embed_dim)
        state["norm.bias"] = 0.1 * torch.randn(embed_dim)
        state["pos_embed"] = 0.1 * torch.randn_like(state["pos_embed"])
    state["mask_token"] = torch.zeros(1, 1, embed_dim)
    state["projector.weight"] = torch.zeros(8, embed_dim)
    state["projector.bias"] = torch.zeros(8)
    return state


def _setup(directory: Path) -> dict[str, Any]:
    import torch

    torch.save({"model": dofa_state()}, directory / "DOFA_ViT_base_e100.pth")
    return {"weights": str(directory), **TINY}


def dofa_golden(raw: np.ndarray) -> np.ndarray:
    """``(clip(DN / 10000, 0, 1) * 255 - mean) / std`` per band."""
    f32 = np.float32
    x = np.clip(raw / f32(10000.0), f32(0.0), f32(1.0)) * f32(255.0)
    m = np.asarray(S2_MEAN, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(S2_STD, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


_RAW = raw_tile(9, 32)

CASES = {
    "dofa": vit_case(
        _RAW, dofa_golden(_RAW), _setup,
        pooled_is_not_grid_mean="DOFA's global pool applies the encoder LayerNorm to the mean of the patch "
        "tokens (as rs-embed's fc_norm), so the pooled vector is a normalised grid mean",
    ),
}  # fmt: skip
