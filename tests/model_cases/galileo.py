"""galileo: a tiny random Galileo encoder written as the published ``models/<size>/`` folder.

The folder holds ``config.json`` (``{"model": {"encoder": {...}}}``, the published
nano configuration narrowed to ``embedding_size=32, depth=1, num_heads=2``) and
``encoder.pt`` (the encoder's flat state dict, ``torch.save``), as
``nasaharvest/galileo/models/nano/`` does.  Every tensor is seeded noise except the
fixed position and month tables, which keep their published values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

#: the nano configuration of ``models/nano/config.json``, narrowed (tests only)
TINY_ENCODER: dict[str, Any] = {
    "embedding_size": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 4, "max_sequence_length": 24,
    "freeze_projections": False, "drop_path": 0.1, "max_patch_size": 8,
}  # fmt: skip
FIXED = ("pos_embed", "month_embed.weight")


def encoder_state(encoder: dict[str, Any] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """A seeded random state dict with the official ``Encoder`` keys."""
    import torch

    from rs_embed_dask.models.galileo_encoder import GalileoEncoder

    gen = torch.Generator().manual_seed(seed)
    module = GalileoEncoder(**(encoder or TINY_ENCODER))
    state = {}
    for k, v in module.state_dict().items():
        if k not in FIXED:
            v = v + 0.1 * torch.randn(v.shape, generator=gen)
        state[k] = v.clone().contiguous()
    return state


def write_checkpoint(directory: Path, *, encoder: dict[str, Any] | None = None, seed: int = 0,
                     state: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """``directory/config.json`` and ``directory/encoder.pt`` of a random tiny Galileo; returns ``directory``."""
    import torch

    enc = dict(encoder or TINY_ENCODER)
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"training": {"patch_sizes": [1, 2, 3, 4, 5, 6, 7, 8]}, "model": {"encoder": enc, "decoder": {}}}
    (directory / "config.json").write_text(json.dumps(doc))
    torch.save(state if state is not None else encoder_state(enc, seed=seed), directory / "encoder.pt")
    return directory


def _setup(directory: Path) -> dict[str, Any]:
    return {"weights": str(write_checkpoint(directory))}


_VALUES = np.array([-100.0, 0.0, np.nan, 500.0, 2500.0, 9999.0, 10000.0, 12345.0], dtype=np.float32)
_RAW = np.resize(_VALUES, (1, 2, 10, 16, 16)).astype(np.float32)
# (B, T, 10, 16, 16): no data -> 0, clip(DN, 0, 10000), normalization "none" (16 px is the image size)
_EXPECTED = np.clip(np.nan_to_num(_RAW, nan=0.0), 0.0, 10000.0)

CASES = {
    "galileo": ModelCase(
        config={"image_size": 16},
        input_hw=(16, 16),
        raw=_RAW,
        expected=_EXPECTED,
        exact_pooling=[
            ({"image_size": 16}, (16, 16)),
            ({"image_size": 16}, (20, 12)),
        ],  # equal tokens per patch
        setup=_setup,
    ),
}
