"""fomo: rs-embed 0.3.1's FoMo-Net (bands, modality keys, preprocessing, token layout, strict keys, settings)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_cases.fomo import TINY, fomo_state, write_checkpoint

from rs_embed_dask import describe_model, list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models import fomo
from rs_embed_dask.models.fomo_encoder import DIM_HEAD, MODALITY_CHANNELS, FomoArch, build_fomo_encoder

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()
_ENV = ("RS_EMBED_FOMO_IMG", "RS_EMBED_FOMO_PATCH", "RS_EMBED_FOMO_DIM", "RS_EMBED_FOMO_DEPTH", "RS_EMBED_FOMO_HEADS",
        "RS_EMBED_FOMO_MLP_DIM", "RS_EMBED_FOMO_NUM_CLASSES", "RS_EMBED_FOMO_NORM", "RS_EMBED_FOMO_S2_KEYS",
        "RS_EMBED_FOMO_CKPT", "RS_EMBED_FOMO_CACHE_DIR", "RS_EMBED_FOMO_CKPT_FILE", "RS_EMBED_FOMO_CKPT_URL",
        "RS_EMBED_FOMO_CKPT_MIN_BYTES", "RS_EMBED_FOMO_AUTO_DOWNLOAD")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fomo")
    write_checkpoint(d)
    return d


@pytest.fixture(scope="module")
def emb(weights: Path) -> fomo.FomoEmbedder:
    e = fomo.FomoEmbedder({**TINY, "weights": str(weights)})
    e.load("cpu")
    return e


def _raw(n: int, hw: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, (n, 12, *hw)).astype(np.float32)


# -- registration and rs-embed's constants -----------------------------------------------------
def test_name_listing_and_defaults() -> None:
    assert "fomo" in list_models()
    assert canonical_model_name("FoMo") == "fomo"  # rs-embed has no other name for it
    d = describe_model("fomo")
    assert d["inputs"] == {
        "collection": "COPERNICUS/S2_SR_HARMONIZED",
        "bands": ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"],
    }
    for key, value in {"image_size": 64, "patch_size": 16, "dim": 768, "depth": 12, "heads": 12, "mlp_dim": 2048,
                       "num_classes": 1000, "scale_m": 10, "cloudy_pct": 30, "composite": "median",
                       "normalization": "unit_scale", "auto_download_ckpt": True}.items():  # fmt: skip
        assert d["defaults"][key] == value, key
    assert d["embedding_dim"] == 768
    assert d["output"] == ["pooled", "grid"]
    assert d["temporal"] == "single composite"
    assert d["weights"]["file"] == "fomo_single_embedding_layer_weights.pt"
    assert d["weights"]["source"].startswith("url: https://www.dropbox.com/")
    assert d["weights"]["env_var"] == "RS_EMBED_FOMO_CKPT"
    cls = get_model_class("fomo")
    assert cls.square_fetch
    assert cls.n_frames is None
    assert cls().temporal_semantics() == "single"


def test_band_modality_keys_follow_fomos_pretraining_table() -> None:
    assert len(MODALITY_CHANNELS) == 37
    assert (MODALITY_CHANNELS[0], MODALITY_CHANNELS[4], MODALITY_CHANNELS[16], MODALITY_CHANNELS[36]) == (
        "planet-r", "sentinel-1-vv", "sentinel-2-b10", "gaofen2-nir"
    )  # fmt: skip
    d = describe_model("fomo")
    assert fomo.DEFAULT_S2_KEYS == (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18)
    for band, entry in d["modality_keys"].items():
        assert entry["channel"] == f"sentinel-2-{band.lower()}"  # B10 (key 16) is skipped: L2A has none


def test_published_encoder_keys_and_shapes() -> None:
    with torch.device("meta"):  # the full-size state dict's shapes, without allocating them
        sd = build_fomo_encoder(FomoArch()).state_dict()
    assert len(sd) == 145
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["to_patch_embedding.1.weight"] == (256,)
    assert shapes["to_patch_embedding.2.weight"] == (768, 256)
    assert shapes["to_patch_embedding.3.weight"] == (768,)
    assert shapes["pos_embedding"] == (1, 17, 768)
    assert shapes["spectral_embedding"] == (1, 38, 768)
    assert shapes["cls_token"] == (1, 1, 768)
    assert shapes["transformer.layers.11.0.to_qkv.weight"] == (3 * 12 * DIM_HEAD, 768)
    assert shapes["transformer.layers.11.0.to_out.0.weight"] == (768, 768)
    assert shapes["transformer.layers.11.1.net.1.weight"] == (2048, 768)
    assert shapes["transformer.layers.11.1.net.4.weight"] == (768, 2048)
    assert shapes["transformer.norm.weight"] == (768,)
    assert shapes["mlp_head.weight"] == (1000, 768)
    assert "transformer.layers.0.0.to_qkv.bias" not in sd
    assert FomoArch().parameter_count() == sum(math.prod(s) for s in shapes.values())


# -- the forward pass ---------------------------------------------------------------------------
def _reference_tokens(
    state: dict[str, Any], x: torch.Tensor, keys: list[int], arch: FomoArch
) -> torch.Tensor:
    """FoMo's forward written out in float64 (per band: patches, embedding, spectral and position rows)."""
    s = {k: v.double() for k, v in state.items()}
    p, g, d = arch.patch_size, arch.grid_side, arch.dim

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (t.shape[-1],), s[f"{name}.weight"], s[f"{name}.bias"])

    parts = []
    for c, key in enumerate(keys):
        band = x[:, c].double()  # (B, S, S)
        patches = band.reshape(-1, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(-1, g * g, p * p)
        t = (
            ln(patches, "to_patch_embedding.1") @ s["to_patch_embedding.2.weight"].T
            + s["to_patch_embedding.2.bias"]
        )
        t = (
            ln(t, "to_patch_embedding.3")
            + s["spectral_embedding"][0, key]
            + s["pos_embedding"][0, 1 : g * g + 1]
        )
        parts.append(t)
    t = torch.cat(parts, dim=1)
    for i in range(arch.depth):
        pre = f"transformer.layers.{i}"
        qkv = ln(t, f"{pre}.0.norm") @ s[f"{pre}.0.to_qkv.weight"].T
        q, k, v = (
            z.reshape(z.shape[0], z.shape[1], arch.heads, DIM_HEAD).transpose(1, 2) for z in qkv.chunk(3, -1)
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DIM_HEAD), dim=-1) @ v
        att = att.transpose(1, 2).reshape(t.shape[0], t.shape[1], -1)
        t = t + att @ s[f"{pre}.0.to_out.0.weight"].T + s[f"{pre}.0.to_out.0.bias"]
        h = ln(t, f"{pre}.1.net.0") @ s[f"{pre}.1.net.1.weight"].T + s[f"{pre}.1.net.1.bias"]
        t = t + F.gelu(h) @ s[f"{pre}.1.net.4.weight"].T + s[f"{pre}.1.net.4.bias"]
    assert t.shape[-1] == d
    return ln(t, "transformer.norm")


def test_tokens_match_fomos_forward_written_out(emb: fomo.FomoEmbedder) -> None:
    x = emb.preprocess(torch.from_numpy(_raw(2)))
    with torch.no_grad():
        got = emb.forward_tokens(x)
    ref = _reference_tokens(fomo_state(), x, list(fomo.DEFAULT_S2_KEYS), emb.arch)
    assert tuple(got.shape) == (2, 12 * 16, TINY["dim"])
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_grid_is_the_band_mean_of_each_patch_and_pooled_pools_all_tokens(emb: fomo.FomoEmbedder) -> None:
    raw = _raw(1, seed=3)
    with torch.no_grad():
        tokens = emb.forward_tokens(emb.preprocess(torch.from_numpy(raw)))[0].numpy()  # (192, D)
    (grid,) = emb.embed_inputs([raw[0]], output=GRID)
    (mean,) = emb.embed_inputs([raw[0]], output=POOLED)
    (mx,) = emb.embed_inputs([raw[0]], output=OutputSpec.pooled("max"))
    per_band = tokens.reshape(12, 4, 4, -1)  # band-major, patches row-major
    np.testing.assert_allclose(grid.data, per_band.mean(axis=0).transpose(2, 0, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.data, tokens.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mx.data, tokens.max(axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mx.data, grid.data.max(axis=(1, 2)))  # max over tokens, not over the band means
    assert grid.meta["grid_hw"] == [4, 4]
    assert grid.meta["spectral_keys"] == list(fomo.DEFAULT_S2_KEYS)
    assert grid.meta["token_count"] == 192


def test_bands_travel_with_their_modality_keys(weights: Path) -> None:
    """Reordering the channels together with their keys changes nothing: each band is keyed, not placed."""
    perm = np.random.default_rng(1).permutation(12)
    a = fomo.FomoEmbedder({**TINY, "weights": str(weights)})
    b = fomo.FomoEmbedder(
        {**TINY, "weights": str(weights), "s2_keys": [fomo.DEFAULT_S2_KEYS[i] for i in perm]}
    )
    c = fomo.FomoEmbedder({**TINY, "weights": str(weights), "s2_keys": list(fomo.DEFAULT_S2_KEYS[::-1])})
    x = _raw(1, seed=5)[0]
    for output in (POOLED, GRID):
        (ra,) = a.embed_inputs([x], output=output)
        (rb,) = b.embed_inputs([x[perm]], output=output)
        (rc,) = c.embed_inputs([x], output=output)
        np.testing.assert_allclose(rb.data, ra.data, rtol=1e-4, atol=1e-5)
        assert not np.allclose(rc.data, ra.data, atol=1e-3)  # the same pixels under other keys differ


# -- preprocessing ----------------------------------------------------------------------------------
def test_rectangle_is_reflect_padded_then_resized_after_normalising() -> None:
    x = np.random.default_rng(2).uniform(-50, 12000, (1, 12, 20, 30)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    out = fomo.FomoEmbedder().preprocess(torch.from_numpy(x))
    assert tuple(out.shape) == (1, 12, 64, 64)
    unit = np.clip(np.nan_to_num(x, nan=0.0), 0, 10000) / np.float32(10000.0)
    sq = np.pad(unit, [(0, 0), (0, 0), (5, 5), (0, 0)], mode="reflect")  # 10 rows: 5 above, 5 below
    ref = F.interpolate(torch.from_numpy(sq), size=(64, 64), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-6)
    thin = fomo.FomoEmbedder().preprocess(torch.ones(1, 12, 4, 30))  # pad >= short side: the edge repeats
    np.testing.assert_allclose(thin.numpy(), 1e-4, rtol=1e-6)


def test_per_tile_minmax_and_none() -> None:
    x = np.random.default_rng(4).uniform(100, 9000, (2, 12, 64, 64)).astype(np.float32)
    mm = fomo.FomoEmbedder({"normalization": "per_tile_minmax"}).preprocess(torch.from_numpy(x)).numpy()
    u = x / np.float32(10000.0)
    lo, hi = u.min(axis=(2, 3), keepdims=True), u.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(mm, (u - lo) / np.maximum(hi - lo, 1e-6), rtol=0, atol=1e-6)
    raw = fomo.FomoEmbedder({"normalization": "RAW"}).preprocess(torch.from_numpy(x * 2)).numpy()
    np.testing.assert_allclose(raw, np.clip(x * 2, 0, 10000), rtol=0, atol=0)


# -- settings ----------------------------------------------------------------------------------------
def test_rs_embed_variables_set_what_model_config_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_FOMO_NORM", "per_tile_minmax")
    monkeypatch.setenv("RS_EMBED_FOMO_S2_KEYS", " 6,7,8,9,10,11,12,13,14,15,16,18 ")
    monkeypatch.setenv("RS_EMBED_FOMO_IMG", "32")
    monkeypatch.setenv("RS_EMBED_FOMO_PATCH", "8")
    e = fomo.FomoEmbedder()
    assert (e.normalization, e.s2_keys[-2], e.arch.image_size, e.arch.patch_size) == (
        "per_tile_minmax",
        16,
        32,
        8,
    )
    assert e.resolve_input_size() == 32
    assert e.describe()["grid"].startswith("(768, 4, 4)")
    assert fomo.FomoEmbedder({"s2_keys": "6, 7,8,9,10,11,12,13,14,15,17,18"}).s2_keys == fomo.DEFAULT_S2_KEYS
    own = fomo.FomoEmbedder({"normalization": "unit_scale", "image_size": 64, "patch_size": 16})
    assert (own.normalization, own.arch.image_size) == ("unit_scale", 64)  # model_config wins


@pytest.mark.parametrize(
    ("cfg", "env", "match"),
    [
        ({"normalization": "zscore"}, {}, "'normalization' must be one of"),
        ({}, {"RS_EMBED_FOMO_NORM": "zscore"}, r"\$RS_EMBED_FOMO_NORM must be one of"),
        ({"s2_keys": [6, 7]}, {}, "'s2_keys' must be 12 integers"),
        ({"s2_keys": [6] * 11 + [38]}, {}, r"integers in \[0, 37\]"),
        ({}, {"RS_EMBED_FOMO_S2_KEYS": "6,7,x"}, r"\$RS_EMBED_FOMO_S2_KEYS must be 12 integers"),
        ({"image_size": 60}, {}, "must be a multiple of patch_size 16"),
        ({"dim": 0}, {}, "'dim' must be an integer >= 1"),
        ({"depth": True}, {}, "'depth' must be an integer"),
        ({}, {"RS_EMBED_FOMO_HEADS": "two"}, r"\$RS_EMBED_FOMO_HEADS must be an integer"),
        ({"variant": "base"}, {}, "does not accept model-specific keyword"),
    ],
)
def test_setting_errors(
    cfg: dict[str, Any], env: dict[str, str], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ModelError, match=match):
        fomo.FomoEmbedder(cfg)


def test_memory_per_item_scales_with_the_input_and_counts_the_tokens() -> None:
    e = fomo.FomoEmbedder()
    small, large = e.memory_per_item((12, 64, 64)), e.memory_per_item((12, 300, 300))
    tokens = 4 * 192 * 768
    attention = 4 * 12 * 192 * 192
    assert small > 4 * tokens + attention
    assert large - small > 4 * 12 * (300 * 300 - 64 * 64)  # the raw input and its full-size copies
    assert small < 64 * 2**20  # far below the default's generic estimate for 768-d maps at 64 px
