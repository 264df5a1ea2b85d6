"""clay: a tiny Clay v1.5 encoder with random weights in the published Lightning checkpoint format.

The checkpoint is ``{"state_dict": {"model.encoder.*", "model.decoder.*",
"model.teacher.*"}, "hyper_parameters": {...}, "epoch": ...}`` as
``v1.5/clay-v1.5.ckpt``; the encoder tensors are those of terratorch's Clay
``Encoder`` (Clay's own module names) at ``model_size="tiny"`` with one layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase
from model_cases._vit_common import raw_tile

MEAN = (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0)
STD = (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0)
TINY: dict[str, Any] = {"model_size": "tiny", "depth": 1, "image_size": 32}


def encoder_state(depth: int = 1, seed: int = 0) -> dict[str, Any]:
    """Seeded random tensors of the tiny Clay encoder, under the encoder's own keys."""
    import torch

    from rs_embed_dask.models.clay import MODEL_SIZES, _import_encoder

    arch = {**MODEL_SIZES["tiny"], "depth": depth}
    enc = _import_encoder()(mask_ratio=0.0, patch_size=8, shuffle=False, **arch)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in enc.state_dict().items():
        z = torch.randn(v.shape, generator=g)
        out[k] = 1 + 0.1 * z if v.ndim == 1 and bool(torch.all(v == 1)) else 0.05 * z  # norm weights near 1
    return out


def write_checkpoint(path: Path, state: dict[str, Any] | None = None) -> Path:
    """The Lightning checkpoint layout of ``clay-v1.5.ckpt`` (weights_only-loadable)."""
    import torch

    enc = encoder_state() if state is None else state
    sd = {f"model.encoder.{k}": v for k, v in enc.items()}
    sd["model.decoder.cls_token"] = torch.zeros(1, 1, 8)
    sd["model.teacher.head.weight"] = torch.zeros(4, 8)
    torch.save({"state_dict": sd, "epoch": 10, "global_step": 100,
                "hyper_parameters": {"model_size": "tiny", "mask_ratio": 0.75, "patch_size": 8}}, path)  # fmt: skip
    return path


def _setup(directory: Path) -> dict[str, Any]:
    write_checkpoint(directory / "clay-v1.5.ckpt")
    return {"weights": str(directory), **TINY}


def _case() -> ModelCase:
    raw = raw_tile(10, 32)
    m = np.asarray(MEAN, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(STD, dtype=np.float32).reshape(1, -1, 1, 1)
    return ModelCase(
        config={},
        input_hw=(32, 32),
        raw=raw,
        expected=((raw - m) / s).astype(np.float32),
        setup=_setup,
        pooled_is_not_grid_mean="Clay's pooled embedding is the class token",
        atol=1e-4,
    )


CASES = {"clay": _case()}
