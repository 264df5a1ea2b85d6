"""anysat: a tiny random AnySat (all eleven projectors) saved as the release's ``{"state_dict": ...}`` file.

Test-only architecture: ``embed_dim=32, depth=1, num_heads=2`` (the released
``base`` is 768 / 6 / 12), ``image_size=8`` (8 x 8 patches of one pixel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

TINY: dict[str, Any] = {"embed_dim": 32, "depth": 1, "num_heads": 2, "image_size": 8}


def write_checkpoint(
    path: Path, *, seed: int = 0, embed_dim: int = 32, depth: int = 1, num_heads: int = 2
) -> Path:
    """``torch.save({"state_dict": <every key of the release's AnyModule>, "epoch": 1}, path)`` with random values.

    Norm weights are ``1 + 0.1 N``, other tensors ``N / sqrt(fan_in)`` or
    ``0.05 N`` (biases, tokens), so that no tensor keeps its initial value.
    """
    import torch

    from rs_embed_dask.models.anysat_encoder import AnySatArch, AnySatEncoder

    torch.manual_seed(seed)
    module = AnySatEncoder(AnySatArch(embed_dim, depth, num_heads))
    state: dict[str, Any] = {}
    with torch.no_grad():
        for k, v in module.state_dict().items():
            z = torch.randn_like(v)
            if v.ndim == 1 and "norm" in k and k.endswith("weight"):
                state[k] = 1.0 + 0.1 * z
            elif v.ndim >= 2 and v.shape[0] > 1:
                state[k] = z / max(1.0, float(v[0].numel()) ** 0.5)
            else:
                state[k] = 0.05 * z
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 1}, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    return {"weights": str(write_checkpoint(directory / "AnySat.pth")), **TINY}


def zscore_golden(raw: np.ndarray) -> np.ndarray:
    """No data -> 0, clip to [0, 10000], then per input and band ``(x - mean) / max(std, 1e-6)`` over frames and pixels."""
    x = np.clip(np.nan_to_num(raw.astype(np.float64), nan=0.0), 0.0, 10000.0)
    mu = x.mean(axis=(1, 3, 4), keepdims=True)
    sd = np.maximum(x.std(axis=(1, 3, 4), keepdims=True), 1e-6)
    return ((x - mu) / sd).astype(np.float32)


def _raw() -> np.ndarray:
    rng = np.random.default_rng(7)
    raw = rng.uniform(0, 9000, size=(1, 3, 10, 8, 8)).astype(np.float32)
    raw[0, 0, 0, 0, :3] = (np.nan, -50.0, 12000.0)  # no data, below and above the DN range
    raw[0, :, 9] = 1234.0  # a constant band: std 0 -> 1e-6, z-score 0
    return raw


_RAW = _raw()

CASES = {
    "anysat": ModelCase(
        config={},
        input_hw=(8, 8),
        raw=_RAW,
        expected=zscore_golden(_RAW),
        exact_pooling=[
            ({**TINY, "grid_feature_mode": "patch"}, (8, 8)),
            ({**TINY, "grid_feature_mode": "patch"}, (5, 11)),
        ],
        setup=_setup,
        atol=1e-5,
    ),
}
