"""thor: a tiny THOR v1 encoder with random weights in the published training-checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases._vit_common import raw_tile, vit_case

#: a small encoder of the "tiny" variant's layout (tests only)
TINY: dict[str, Any] = {"variant": "tiny", "depth": 1, "embed_dim": 32, "num_heads": 2, "band_embed_dim": 8}
S2_MEAN = (0.176620, 0.195923, 0.213948, 0.263378, 0.300818, 0.313144, 0.308133, 0.320993, 0.221550, 0.175772)
S2_STD = (0.264520, 0.252949, 0.259180, 0.272771, 0.248175, 0.235432, 0.226434, 0.223274, 0.171606, 0.156223)


def thor_checkpoint(path: Path, *, seed: int = 0, embed_dim: int = 32, depth: int = 1, num_heads: int = 2,
                    band_embed_dim: int = 8) -> Path:  # fmt: skip
    """Write ``{"state_dict": {"encoder.<key>": ...}}`` (the published layout) with random encoder tensors.

    Besides the encoder's keys the file holds keys of the pretraining model
    that the loader must drop (decoder, mask token, a head).
    """
    import torch

    from rs_embed_dask.models.thor_encoder import ThorArch, ThorEncoder

    torch.manual_seed(seed)
    m = ThorEncoder(ThorArch(embed_dim, depth, num_heads, band_embed_dim))
    state = {}
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k == "encoder_slopes":
                state[k] = v.clone()
            elif v.ndim == 1 and k.endswith("weight"):
                state[k] = 1 + 0.1 * torch.randn_like(v)
            else:
                state[k] = 0.1 * torch.randn_like(v)
    full = {f"encoder.{k}": v for k, v in state.items()}
    full["encoder.decoder_embed.weight"] = torch.zeros(4, embed_dim)
    full["encoder.mask_token"] = torch.zeros(1, 1, 4)
    full["encoder.month_head.weight"] = torch.zeros(2, embed_dim)
    torch.save({"state_dict": full, "epoch": 1}, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    thor_checkpoint(directory / "thor_v1_vit_tiny.pt")
    return {"weights": str(directory), **TINY}


def thor_golden(raw: np.ndarray) -> np.ndarray:
    """``(clip(DN, 0, 10000) / 10000 - mean) / std`` per band (a 32-pixel square is a native side)."""
    f32 = np.float32
    x = np.clip(raw, f32(0.0), f32(10000.0)) / f32(10000.0)
    m = np.asarray(S2_MEAN, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(S2_STD, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


_RAW = raw_tile(10, 32)

CASES = {
    "thor": vit_case(
        _RAW, thor_golden(_RAW), _setup,
        pooled_is_not_grid_mean="THOR's pooled vector is the mean of all tokens of both channel groups, as in "
        "rs-embed (the 10 m group has 4x the tokens of the 20 m one), while the grid averages the 10 m map and "
        "the upsampled 20 m map with equal weights",
    ),
}  # fmt: skip
