"""prithvi: a tiny random Prithvi-EO-2.0 TL encoder saved as the official MAE checkpoint.

Test-only architecture: ``embed_dim=32, depth=2, num_heads=2`` at ``image_size=32``
(2 x 2 patches of 16 px, 4 frames).  The checkpoint holds ``encoder.*`` keys,
some ``decoder.*`` keys and a 224-px position embedding, as the published files do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_cases import ModelCase

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "image_size": 32}


def write_checkpoint(directory: Path, *, coords: bool = True, seed: int = 0) -> Path:
    """A random checkpoint in the layout of ``Prithvi_EO_V2_*.pt`` (encoder + decoder keys)."""
    from rs_embed_dask.models.prithvi import build_prithvi_encoder

    torch.manual_seed(seed)
    enc = build_prithvi_encoder(embed_dim=32, depth=2, num_heads=2, patch_size=16, img_size=224, coords=coords)
    state: dict[str, Any] = {}
    for k, v in enc.state_dict().items():
        if k != "pos_embed" and not k.endswith("norm.weight"):
            v = v + 0.05 * torch.randn_like(v)  # cls token, scales, biases: not their init values
        state[f"encoder.{k}"] = v
    state["decoder.mask_token"] = torch.zeros(1, 1, 16)
    state["decoder.decoder_embed.weight"] = torch.randn(16, 32)
    state["decoder.decoder_pred.bias"] = torch.randn(6 * 16 * 16)
    path = directory / f"Prithvi_EO_V2_tiny{'_TL' if coords else ''}.pt"
    torch.save(state, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    return {**TINY, "weights": str(write_checkpoint(directory))}


_RAW = np.array([-100.0, 0.0, 1.0, 2500.0, 5000.0, 9999.0, 10000.0, 12345.0], dtype=np.float32)
_UNIT = np.array([0.0, 0.0, 0.0001, 0.25, 0.5, 0.9999, 1.0, 1.0], dtype=np.float32)

CASES = {
    "prithvi": ModelCase(
        config={},
        input_hw=(20, 26),
        # (1, T=2, C=6, 2, 4): DN / 10000 clipped to [0, 1], layout kept
        raw=np.tile(_RAW.reshape(1, 1, 1, 2, 4), (1, 2, 6, 1, 1)),
        expected=np.tile(_UNIT.reshape(1, 1, 1, 2, 4), (1, 2, 6, 1, 1)),
        exact_pooling=[(dict(TINY), (32, 32)), (dict(TINY), (17, 45))],  # tokens of equal weight
        setup=_setup,
    ),
}
