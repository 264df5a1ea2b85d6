"""agrifm: a tiny AgriFM encoder with random weights in the layout of ``AgriFM.pth``.

Test-only architecture: ``embed_dim=8``, one block per stage, one head, at
``image_size=32`` (a 2 x 2 grid of 16-pixel cells, 8 frames).  The file is a
``{"state_dict": ...}`` checkpoint whose Sentinel-2 patch embedding is named
``S2_patch_emd`` and which also holds the other sources' patch embeddings
and a head, as the multi-source pretraining model does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_cases import ModelCase

TINY: dict[str, Any] = {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "image_size": 32}
S2_MEAN = (4179.192015478227, 4065.9106675194444, 3957.274910960156, 5207.452475253116, 4327.12234687,
           4873.16102239, 5049.1637925, 5111.07806856, 3056.86349163, 2490.9675032)  # fmt: skip
S2_STD = (4041.5212325268735, 3691.003119315892, 3629.331318356375, 2973.5178530908756, 3569.73343885,
          3085.9151435, 2937.56005119, 2806.04462314, 1808.30013156, 1694.20220774)  # fmt: skip


def write_checkpoint(
    path: Path, *, embed_dim: int = 8, depths: tuple[int, ...] = (1, 1, 1, 1),
    num_heads: tuple[int, ...] = (1, 1, 1, 1), seed: int = 0, prefix: str = "",
) -> Path:  # fmt: skip
    """Write ``{"state_dict": {...}, "meta": {...}}`` with random encoder tensors under AgriFM's key names.

    ``prefix`` (e.g. ``"module."``) is put before every key, as a
    data-parallel training run saves them.
    """
    from rs_embed_dask.models.agrifm import AgriFMArch
    from rs_embed_dask.models.agrifm_encoder import AgriFMEncoder

    torch.manual_seed(seed)
    enc = AgriFMEncoder(AgriFMArch(embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads)))
    state: dict[str, Any] = {}
    with torch.no_grad():
        for k, v in enc.state_dict().items():
            if k.endswith("relative_position_index"):
                pass
            elif v.ndim == 1 and k.endswith("weight"):
                v = 1 + 0.1 * torch.randn_like(v)
            elif v.ndim == 1:
                v = 0.05 * torch.randn_like(v)
            else:
                v = torch.randn_like(v) / max(1.0, float(np.prod(v.shape[1:])) ** 0.5)
            state[prefix + k.replace("patch_emd.", "S2_patch_emd.", 1)] = v
    state[prefix + "HLSL30_patch_emd.proj.weight"] = torch.randn(embed_dim, 6, 4, 2, 2)
    state[prefix + "HLSL30_patch_emd.proj.bias"] = torch.randn(embed_dim)
    state[prefix + "Modis_patch_emd.proj.weight"] = torch.randn(embed_dim, 7, 4, 2, 2)
    state[prefix + "head.cls.weight"] = torch.randn(3, embed_dim * 8)
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    return {**TINY, "weights": str(write_checkpoint(directory / "AgriFM.pth"))}


def golden(raw: np.ndarray) -> np.ndarray:
    """``(clip(nan_to_num(DN), 0, 10000) - mean) / std`` per band (the layout unchanged)."""
    f32 = np.float32
    x = np.clip(np.nan_to_num(raw.astype(f32), nan=0.0), f32(0.0), f32(10000.0))
    m = np.asarray(S2_MEAN, f32).reshape(1, 1, -1, 1, 1)
    s = np.asarray(S2_STD, f32).reshape(1, 1, -1, 1, 1)
    return ((x - m) / s).astype(f32)


_VALUES = np.array([np.nan, -100.0, 0.0, 1.0, 2500.0, 5000.0, 10000.0, 12345.0], dtype=np.float32)
_RAW = np.tile(_VALUES.reshape(1, 1, 1, 2, 4), (1, 8, 10, 1, 1))

CASES = {
    "agrifm": ModelCase(
        config={},
        input_hw=(20, 26),
        raw=_RAW,  # (1, T=8, C=10, 2, 4)
        expected=golden(_RAW),
        exact_pooling=[(dict(TINY), (32, 32)), (dict(TINY), (17, 45))],  # pooled = mean of the grid cells
        setup=_setup,
    ),
}
