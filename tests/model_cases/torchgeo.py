"""torchgeo families: tiny random models saved in each published checkpoint's layout.

Test-only architectures (documented in the embedders): CROMA 32-d, 2 layers at 16 px;
Copernicus-FM 32-d, 1 block at 32 px (checkpoint position embedding at 224 px);
Panopticon with a 32-d channel attention and the first ViT-B/14 block at 28 px
(checkpoint position embedding at 518 px, with its ``mask_token``);
SSL4EO ViT 32-d, 1 block at 32 px (no final norm, as the MoCo checkpoint);
SSL4EO ResNet-50 with one block per stage at 64 px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_cases import ModelCase

S2_12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
S2_13 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
# SSL4EO-S12 Sentinel-2 statistics (torchgeo's _mean_s2 / _std_s2), band order S2_13
MEAN = dict(zip(S2_13, (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0, 2195.2, 1537.4), strict=True))
STD = dict(zip(S2_13, (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5, 1340.0, 1142.9), strict=True))

CROMA_CFG = {"encoder_dim": 32, "encoder_depth": 2, "image_size": 16}
COPFM = {"embed_dim": 32, "depth": 1, "num_heads": 2, "image_size": 32}
PANO = {"attn_dim": 32, "depth": 1, "image_size": 28}
VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2, "image_size": 32}
RESNET = {"blocks_per_stage": 1, "image_size": 64}


def _randomize(state: dict[str, Any], seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in state.items()}


def croma_setup(directory: Path) -> dict[str, Any]:
    from torchgeo.models.croma import CROMA

    m = CROMA(modalities=["sar", "optical"], encoder_dim=32, encoder_depth=2, num_heads=16, image_size=16)
    state = {part: _randomize(getattr(m, part).state_dict(), i)
             for i, part in enumerate(("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder"))}
    path = directory / "CROMA_base-0238d814.pt"
    torch.save(state, path)
    return {**CROMA_CFG, "weights": str(path)}


def copernicusfm_setup(directory: Path) -> dict[str, Any]:
    from torchgeo.models.copernicusfm import CopernicusFM

    m = CopernicusFM(img_size=224, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    state = {k: v for k, v in _randomize(m.state_dict(), 1).items() if not k.startswith("fc_norm.")}
    path = directory / "CopernicusFM_ViT_base_varlang-085350e4.pth"
    torch.save(state, path)
    return {**COPFM, "weights": str(path)}


def panopticon_setup(directory: Path) -> dict[str, Any]:
    from torchgeo.models import panopticon_vitb14

    with torch.device("meta"):
        m = panopticon_vitb14(weights=None, img_size=518, attn_dim=32)
        m.model.blocks = m.model.blocks[:1]
    gen = torch.Generator().manual_seed(2)
    state = {k: 0.05 * torch.randn(v.shape, generator=gen) + (1.0 if "norm" in k and k.endswith("weight") else 0.0)
             for k, v in m.model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 768)
    path = directory / "panopticon_vitb14_teacher.pth"
    torch.save(state, path)
    return {**PANO, "weights": str(path)}


def vit_setup(directory: Path) -> dict[str, Any]:
    import timm

    m = timm.create_model("vit_small_patch16_224", in_chans=13, num_classes=0, embed_dim=32, depth=1, num_heads=2)
    state = {k: v for k, v in _randomize(m.state_dict(), 3).items() if not k.startswith("norm.")}
    path = directory / "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"
    torch.save(state, path)
    return {**VIT, "weights": str(path)}


def resnet_setup(directory: Path) -> dict[str, Any]:
    import timm

    m = timm.create_model("resnet50", in_chans=13, num_classes=0, layers=(1, 1, 1, 1))
    state = _randomize(m.state_dict(), 4)
    path = directory / "resnet50_sentinel2_all_moco-df8b932e.pth"
    torch.save(state, path)
    return {**RESNET, "weights": str(path)}


def _zscore_case(bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    k = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, -0.5], np.float32).reshape(2, 4)
    mean = np.array([MEAN[b] for b in bands], np.float32).reshape(1, -1, 1, 1)
    std = np.array([STD[b] for b in bands], np.float32).reshape(1, -1, 1, 1)
    raw = (mean + std * k).astype(np.float32)
    return raw, ((raw - mean) / std).astype(np.float32)


def _croma_case() -> tuple[np.ndarray, np.ndarray]:
    # per image and band: [mean - 2 std, mean + 2 std] -> [0, 1], std with ddof=1
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 3000, size=(1, 12, 3, 4)).astype(np.float32)
    raw[0, 0] = 500.0  # a constant band: std 0 -> everything at the lower bound
    raw[0, 1, 0, 0] = 1e6  # an outlier is clipped to 1
    mean = raw.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    std = raw.astype(np.float64).reshape(1, 12, -1).std(axis=-1, ddof=1)[..., None, None]
    expected = np.clip((raw - (mean - 2 * std)) / np.maximum(4 * std, 1e-12), 0, 1)
    expected[0, 0] = 0.0
    return raw, expected.astype(np.float32)


_CROMA_RAW, _CROMA_EXP = _croma_case()
_CFM_RAW, _CFM_EXP = _zscore_case(S2_12)
_TEN = np.array([-100.0, 0.0, 1.0, 2500.0, 5000.0, 9999.0, 10000.0, 12345.0], np.float32).reshape(1, 1, 2, 4)

CASES = {
    "croma": ModelCase(
        config={}, input_hw=(20, 18), raw=_CROMA_RAW, expected=_CROMA_EXP,
        exact_pooling=[(dict(CROMA_CFG), (16, 16)), (dict(CROMA_CFG, image_size=24), (30, 30))],
        setup=croma_setup, atol=2e-5,
    ),
    "copernicusfm": ModelCase(
        config={}, input_hw=(33, 30), raw=_CFM_RAW, expected=_CFM_EXP,
        exact_pooling=[(dict(COPFM), (32, 32))], setup=copernicusfm_setup,
    ),
    "panopticon": ModelCase(
        config={}, input_hw=(28, 30), raw=_CFM_RAW, expected=_CFM_EXP,
        exact_pooling=[(dict(PANO), (28, 28))], setup=panopticon_setup,
    ),
    "ssl4eo_s2_vit": ModelCase(
        config={}, input_hw=(30, 34),
        raw=np.tile(_TEN, (1, 13, 1, 1)), expected=np.tile(_TEN / np.float32(10000), (1, 13, 1, 1)),
        exact_pooling=[(dict(VIT), (32, 32))], setup=vit_setup,
    ),
    "ssl4eo_s2_resnet": ModelCase(
        config={}, input_hw=(64, 60),
        raw=np.tile(_TEN, (1, 13, 1, 1)), expected=np.tile(_TEN / np.float32(10000), (1, 13, 1, 1)),
        exact_pooling=[(dict(RESNET), (64, 64)), (dict(RESNET, image_size=96), (50, 70))],
        setup=resnet_setup,
    ),
}
