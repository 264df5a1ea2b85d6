"""satvision: a tiny SatVision SwinV2 with random weights in the published DeepSpeed/SimMIM checkpoint format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

#: a small encoder of the giant's layout (tests only): 4 stages, window 8, patch 4, an extra norm every 6th block
TINY: dict[str, Any] = {"embed_dim": 16, "depths": (2, 2, 6, 2), "num_heads": (1, 2, 2, 4)}
EMISSIVE_MINS = (223.1222, 178.9174, 204.3739, 204.7677, 194.8686, 202.1759, 201.3823, 203.3537)
EMISSIVE_MAXS = (352.7182, 261.2920, 282.5529, 319.0373, 295.0209, 324.0677, 321.5254, 285.9848)
EMISSIVE_IDX = (5, 7, 8, 9, 10, 11, 12, 13)


def satvision_state(
    *, seed: int = 0, embed_dim: int = 16, depths=(2, 2, 6, 2), num_heads=(1, 2, 2, 4)
) -> dict:
    """Random encoder tensors (norm weights near 1, the rest small), the module's buffers as built."""
    import torch

    from rs_embed_dask.models.satvision_encoder import SatVisionArch, SatVisionSwinV2

    torch.manual_seed(seed)
    m = SatVisionSwinV2(SatVisionArch(embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads)))
    buffers = {n for n, _ in m.named_buffers()}
    state = {}
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k in buffers:
                state[k] = v.clone()
            elif k.endswith("logit_scale"):
                state[k] = torch.log(10 * torch.ones_like(v)) + 0.1 * torch.randn_like(v)
            elif v.ndim == 1 and k.endswith("weight"):
                state[k] = 1 + 0.1 * torch.randn_like(v)
            else:
                state[k] = 0.1 * torch.randn_like(v)
    return state


def satvision_checkpoint(path: Path, **kw: Any) -> Path:
    """Write ``{"module": {"encoder.<key>": ..., "decoder.<key>": ...}, ...}`` as DeepSpeed saves SimMIM.

    Besides the encoder the file holds the SimMIM decoder (a 1x1 conv to
    ``patch^2 * 14`` channels), which the loader must drop, and training
    bookkeeping next to ``module``.
    """
    import torch

    state = satvision_state(**kw)
    dim = state["norm.weight"].shape[0]
    full = {f"encoder.{k}": v for k, v in state.items()}
    full["decoder.0.weight"] = torch.zeros(32 * 32 * 14, dim, 1, 1)
    full["decoder.0.bias"] = torch.zeros(32 * 32 * 14)
    torch.save({"module": full, "global_steps": 10, "ds_version": "0.14.0", "buffer_names": []}, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    satvision_checkpoint(directory / "mp_rank_00_model_states.pt")
    return {"weights": str(directory), **TINY}


def _raw() -> np.ndarray:
    """``(1, 14, 128, 128)`` raw TOA values: reflectance in percent (with out-of-range values), kelvin."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-5.0, 110.0, size=(1, 14, 128, 128)).astype(np.float32)
    for k, lo, hi in zip(EMISSIVE_IDX, EMISSIVE_MINS, EMISSIVE_MAXS, strict=True):
        x[0, k] = rng.uniform(lo - 10.0, hi + 10.0, size=(128, 128)).astype(np.float32)
    return x


def satvision_golden(raw: np.ndarray) -> np.ndarray:
    """rs-embed's "auto" on raw values (outside [-0.1, 1.5]): reflectance / 100, emissive min-max, clip."""
    f32 = np.float32
    out = raw / f32(100.0)
    for k, lo, hi in zip(EMISSIVE_IDX, EMISSIVE_MINS, EMISSIVE_MAXS, strict=True):
        out[:, k] = (raw[:, k] - f32(lo)) / f32(hi - lo)  # numpy float32 with Python-float operands
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_RAW = _raw()

CASES = {
    "satvision": ModelCase(
        config={},
        input_hw=(128, 128),
        raw=_RAW,
        expected=satvision_golden(_RAW),
        setup=_setup,
        pooled_is_not_grid_mean="SatVision's pooled vector is rs-embed's forward_features: the final LayerNorm "
        "then the token mean, while its grid is the last stage before that norm",
        atol=1e-4,
    ),
}
