"""terramind: terratorch's ``terramind_v1_tiny`` with random weights, saved as the published checkpoint.

The published ``TerraMind_v1_<size>.pt`` holds the whole any-to-any model: the encoder
(``encoder_embeddings.<modality>.*``, ``encoder.*``, ``encoder_norm.*``) for every modality
plus the decoder.  The file written here holds the encoder built by terratorch's own
registry for six raw modalities and a few decoder keys; the embedder keeps the S2L2A
encoder's keys and loads them with ``strict=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

MODALITIES = ("S2L2A", "S2L1C", "S1GRD", "S1RTC", "RGB", "DEM")
V1_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
           2424.884, 1857.648)  # fmt: skip
V1_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
          1434.261, 1334.311)  # fmt: skip


HAVE_TERRATORCH = importlib.util.find_spec("terratorch") is not None


def terramind_state(model_key: str = "terramind_v1_tiny", seed: int = 0) -> dict[str, Any]:
    """Random tensors in the layout of the published checkpoint (encoder of six modalities + decoder keys).

    Built by terratorch's registry when it is installed, else by this package's
    re-implementation (S2L2A encoder) plus another modality's embedding keys.
    """
    import torch

    torch.manual_seed(seed)
    if HAVE_TERRATORCH:
        importlib.import_module("terratorch.models.backbones.terramind.model.terramind_register")
        from terratorch.registry import BACKBONE_REGISTRY

        module = BACKBONE_REGISTRY.build(model_key, pretrained=False, modalities=list(MODALITIES))
    else:
        from rs_embed_dask.models.terramind_native import build_native_encoder

        module = build_native_encoder(model_key)
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point() and not k.endswith("pos_emb"):  # the sin-cos table stays as built
            v = v + 0.05 * torch.randn(v.shape, generator=gen)  # norm weights are not ones, biases not zeros
        state[k] = v.contiguous()
    width = state["encoder_norm.weight"].shape[0]
    state.setdefault("encoder_embeddings.untok_sen1grd@224.proj.weight", torch.randn(width, 2 * 16 * 16))
    state["decoder_embeddings.tok_sen2l2a@224.mod_emb"] = torch.zeros(1, 1, width)
    state["decoder.0.norm1.weight"] = torch.ones(width)
    return state


def write_checkpoint(directory: Path, model_key: str = "terramind_v1_tiny", seed: int = 0) -> Path:
    """``directory/TerraMind_v1_<size>.pt``; returns its path."""
    import torch

    size = model_key.rsplit("_", 1)[-1]
    path = directory / f"TerraMind_v1_{size}.pt"
    torch.save(terramind_state(model_key, seed), path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    # without terratorch (make test's environment) implementation="auto" runs the native encoder
    return {"weights": str(write_checkpoint(directory)), "model_key": "terramind_v1_tiny"}


def golden(raw: np.ndarray, mean: tuple[float, ...] = V1_MEAN, std: tuple[float, ...] = V1_STD) -> np.ndarray:
    """No data -> 0, clip to [0, 10000], ``(x - mean) / std`` (the raw is 224 px: no resize)."""
    x = np.clip(np.nan_to_num(raw.astype(np.float32), nan=0.0), 0.0, 10000.0)
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


_DN = np.array([-100.0, 0.0, np.nan, 39.0, 2500.0, 5000.0, 9999.0, 12345.0], dtype=np.float32)
_RAW = np.stack([np.roll(np.resize(_DN, 224 * 224).reshape(224, 224), c, axis=1) for c in range(12)])[None]

CASES = {
    "terramind": ModelCase(
        config={},
        input_hw=(32, 32),
        raw=_RAW,
        expected=golden(_RAW),
        exact_pooling=[({}, (32, 32)), ({}, (20, 45))],
        setup=_setup,
        atol=1e-4,
    ),
}
