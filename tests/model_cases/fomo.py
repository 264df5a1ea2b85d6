"""fomo: a tiny FoMo MultiSpectralViT with random weights, saved as the published flat state dict.

The published ``fomo_single_embedding_layer_weights.pt`` is ``MultiSpectralViT.state_dict()``
saved with ``torch.save`` (FoMo-Bench's example loads it with ``load_state_dict``, strictly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

#: a small encoder of FoMo's layout (tests only): 64 px, patch 16, 4 x 4 patches per band
TINY: dict[str, Any] = {"dim": 32, "depth": 1, "heads": 2, "mlp_dim": 48, "num_classes": 10}
FILENAME = "fomo_single_embedding_layer_weights.pt"


def fomo_state(seed: int = 0, **arch: int) -> dict[str, Any]:
    """Random tensors with the keys and shapes of FoMo's ``MultiSpectralViT`` (norm weights not ones)."""
    import torch

    from rs_embed_dask.models.fomo_encoder import FomoArch, build_fomo_encoder

    gen = torch.Generator().manual_seed(seed)
    module = build_fomo_encoder(FomoArch(**{**TINY, **arch}))
    state: dict[str, Any] = {}
    for k, v in module.state_dict().items():
        z = torch.randn(v.shape, generator=gen)
        state[k] = (1.0 + 0.1 * z) if (v.ndim == 1 and k.endswith("weight")) else 0.1 * z
    return state


def write_checkpoint(directory: Path, seed: int = 0, **arch: int) -> Path:
    """``directory/fomo_single_embedding_layer_weights.pt`` (a flat state dict); returns its path."""
    import torch

    path = Path(directory) / FILENAME
    torch.save(fomo_state(seed, **arch), path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    write_checkpoint(directory)
    return {"weights": str(directory), **TINY}


def golden(raw: np.ndarray) -> np.ndarray:
    """No data -> 0, clip to [0, 10000], / 10000 (the raw is 64 px square: no pad, no resize)."""
    f32 = np.float32
    x = np.clip(np.nan_to_num(raw.astype(np.float32), nan=0.0), f32(0.0), f32(10000.0))
    return (x / f32(10000.0)).astype(np.float32)


_DN = np.array([-100.0, 0.0, np.nan, 39.0, 2500.0, 5000.0, 9999.0, 12345.0], dtype=np.float32)
_RAW = np.stack([np.roll(np.resize(_DN, 64 * 64).reshape(64, 64), c, axis=1) for c in range(12)])[None]

CASES = {
    "fomo": ModelCase(
        config={},
        input_hw=(32, 32),
        raw=_RAW,
        expected=golden(_RAW),
        # the grid is the band mean of each patch's tokens and every patch has 12: grid mean == token mean
        exact_pooling=[({}, (32, 32)), ({}, (20, 45))],
        setup=_setup,
        atol=1e-4,
    ),
}
