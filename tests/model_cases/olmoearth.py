"""olmoearth: a tiny random OlmoEarth v1.2 written as the published ``config.json`` + ``weights.pth``.

The configuration is the one ``olmoearth_pretrain_minimal.OlmoEarthPretrain_v1("nano", "v1.2")``
builds (captured from ``LatentMIMConfig.build``), narrowed to ``embedding_size=32, depth=1,
num_heads=2``; the weights are the whole pretraining model (encoder, decoder, target encoder)
with random values, plus a training-only head the loader leaves out, as the published files hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

TINY_WIDTH = 32


def tiny_config(width: int = TINY_WIDTH, version: str = "v1.2") -> dict[str, Any]:
    """The ``config.json`` document of a narrowed OlmoEarth (the package's own config classes)."""
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.latent_mim import LatentMIMConfig

    captured: list[Any] = []
    original = LatentMIMConfig.build

    def build(self: Any) -> Any:
        captured.append(self)
        return original(self)

    LatentMIMConfig.build = build  # type: ignore[method-assign]
    try:
        OlmoEarthPretrain_v1("nano", version)
    finally:
        LatentMIMConfig.build = original  # type: ignore[method-assign]
    doc = captured[0].as_config_dict()
    enc, dec = doc["encoder_config"], doc["decoder_config"]
    enc.update(embedding_size=width, depth=1, num_heads=2)
    dec.update(encoder_embedding_size=width, decoder_embedding_size=width, depth=1, num_heads=2)
    return {"model": doc}


def write_checkpoint(
    directory: Path, *, seed: int = 0, width: int = TINY_WIDTH, version: str = "v1.2"
) -> Path:
    """``directory/config.json`` and ``directory/weights.pth`` of a random tiny OlmoEarth; returns ``directory``."""
    import torch
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.config import Config

    doc = tiny_config(width, version)
    torch.manual_seed(seed)
    model = Config.from_dict(doc["model"]).build()
    state = {}
    gen = torch.Generator().manual_seed(seed)
    for k, v in model.state_dict().items():
        if v.is_floating_point() and "freqs" not in k:  # rope frequencies stay as built
            v = v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        state[k] = v.contiguous()
    state["supervision_head.proj.weight"] = torch.zeros(4, width)  # training-only: left out by the loader
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    torch.save(state, directory / "weights.pth")
    return directory


def _setup(directory: Path) -> dict[str, Any]:
    return {"weights": str(write_checkpoint(directory)), "image_size": 32}


def norm_stats(modality: str = "sentinel2_l2a") -> tuple[np.ndarray, np.ndarray]:
    """OlmoEarth's per-band mean and std from the package's ``computed.json``, in its band order."""
    from importlib.resources import files

    doc = json.loads(
        (
            files("olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.norm_configs") / "computed.json"
        ).read_text()
    )
    order = (["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]
             if modality == "sentinel2_l2a" else ["vv", "vh"])  # fmt: skip
    mean = np.array([doc[modality][b]["mean"] for b in order], dtype=np.float64)
    std = np.array([doc[modality][b]["std"] for b in order], dtype=np.float64)
    return mean, std


def golden(raw: np.ndarray, modality: str = "sentinel2_l2a") -> np.ndarray:
    """No data -> 0, ``(x - (mean - 2 std)) / (4 std)`` in float64, float32, non-finite -> 0 / 1; ``(B, T, C, H, W)``."""
    mean, std = norm_stats(modality)
    lo, hi = mean - 2 * std, mean + 2 * std
    x = np.nan_to_num(raw.astype(np.float32), nan=0.0).astype(np.float64)
    y = ((x - lo.reshape(1, -1, 1, 1)) / (hi - lo).reshape(1, -1, 1, 1)).astype(np.float32)
    y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)
    return y[:, None]


_RAW = np.tile(np.array([-100.0, 0.0, np.nan, 500.0, 2500.0, 5000.0, 9999.0, 12345.0], np.float32).reshape(1, 1, 2, 4),
               (1, 12, 1, 1)) + np.arange(12, dtype=np.float32).reshape(1, 12, 1, 1)  # fmt: skip

CASES = {
    "olmoearth": ModelCase(
        config={},
        input_hw=(32, 32),
        raw=_RAW,
        expected=golden(_RAW),
        exact_pooling=[({"image_size": 32}, (32, 32)), ({"image_size": 32}, (20, 32))],
        setup=_setup,
        atol=1e-4,
    ),
}
