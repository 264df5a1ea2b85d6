"""SatMAE++ family choices: modalities, constants, channel groups, token layout (contract: test_models_contract.py).

Weights are random, in the published formats (``tests/model_cases/satmaepp.py``),
loaded through the real loading code; nothing is mocked but the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases import satmaepp as case

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, describe_model, get_model_class
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models.satmaepp import CHANNEL_GROUPS, S2_10_BANDS, S2_MEAN, S2_STD, s2_levels

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


@pytest.fixture(scope="module")
def rgb_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("satmaepp_rgb")
    case.CASES["satmaepp"].setup(d)  # type: ignore[misc]
    return d


@pytest.fixture(scope="module")
def s2_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("satmaepp_s2")
    case.write_s2_checkpoint(d)
    return d


def _s2(s2_dir: Path, **cfg: Any) -> Any:
    emb = get_model_class("satmaepp")({**case.S2_TINY, "weights": str(s2_dir), **cfg})
    emb.load("cpu")
    return emb


def _raw(c: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 9000, size=(c, *hw)).astype(np.float32)


def test_names_modalities_and_defaults():
    assert canonical_model_name("satmae++") == "satmaepp"
    assert canonical_model_name("satmaepp_rgb") == "satmaepp"
    d = describe_model("satmaepp")
    assert d["inputs"]["bands"] == ["B4", "B3", "B2"]
    assert d["defaults"]["modality"] == "rgb"
    assert d["embedding_dim"] == 1024
    assert d["modalities"]["s2_10b"]["bands"] == list(S2_10_BANDS)
    assert d["weights"]["source"] == "huggingface: MVRL/satmaepp_ViT-L_pretrain_fmow_rgb/model.safetensors"
    s2 = get_model_class("satmaepp")({"modality": "s2_10b"}).describe()
    assert (s2["input_size"], s2["patch_size"], s2["embedding_dim"]) == (96, 8, 1024)
    assert s2["grid"].startswith("(1024, 12, 12)")
    assert s2["weights"]["source"].endswith(
        "mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel/checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
    )
    assert s2["channel_groups"] == [["B2", "B3", "B4", "B8"], ["B5", "B6", "B7", "B8A"], ["B11", "B12"]]
    assert get_model_class("satmaepp").modality_config_key == "modality"


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"modality": "s1"}, "'modality' must be one of"),
        ({"variant": "base"}, "'variant' must be one of"),
        ({"channel_order": "rbg"}, "'channel_order'"),
        ({"grid_reduce": "sum"}, "'grid_reduce'"),
        ({"modality": "s2_10b", "image_size": 100}, "multiple of 8"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        get_model_class("satmaepp")(cfg)


def test_channel_groups_are_satmaepps():
    assert CHANNEL_GROUPS == ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
    assert [S2_10_BANDS[i] for g in CHANNEL_GROUPS for i in g] == [
        "B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12"
    ]  # fmt: skip


def test_s2_levels_follow_the_min_max_rule():
    """(x - (mu - 2 sigma)) / (4 sigma) * 255, clipped, truncated to uint8 (numpy float32 reference)."""
    x = _raw(10, (5, 7), 0)
    x[0, 0, 0], x[1, 0, 1] = -500.0, 20000.0
    mean, std = np.asarray(S2_MEAN, np.float32), np.asarray(S2_STD, np.float32)
    lo, hi = mean - 2 * std, mean + 2 * std
    y = (x.transpose(1, 2, 0) - lo) / np.maximum(hi - lo, np.float32(1e-6))
    ref = np.clip(y * np.float32(255.0), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    got = s2_levels(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_array_equal(got, ref)
    assert got[0, 0, 0] == 0
    assert got[1, 0, 1] == 255


def test_s2_preprocess_is_levels_over_255_then_antialiased_bicubic(s2_dir):
    emb = _s2(s2_dir)
    x = torch.from_numpy(_raw(10, (20, 20), 1))[None]
    unit = s2_levels(x).float() / 255.0
    expected = torch.nn.functional.interpolate(
        unit, size=(16, 16), mode="bicubic", align_corners=False, antialias=True
    )
    torch.testing.assert_close(emb.preprocess(x), expected, rtol=0, atol=0)
    with pytest.raises(ModelError, match="bands"):
        emb.preprocess(x[:, :3])


def test_rgb_resize_is_of_the_normalised_floats_not_the_levels(rgb_dir):
    from rs_embed_dask.models.rgb8 import normalize_levels, to_levels_u8

    emb = get_model_class("satmaepp")({"weights": str(rgb_dir), **case.TINY})
    x = torch.from_numpy(_raw(3, (40, 30), 2))[None]
    norm = normalize_levels(to_levels_u8(x), case.RGB_MEAN, case.RGB_STD)
    expected = torch.nn.functional.interpolate(
        norm, size=(32, 32), mode="bicubic", align_corners=False, antialias=True
    )
    torch.testing.assert_close(emb.preprocess(x), expected, rtol=0, atol=0)  # stretched, not padded
    bgr = get_model_class("satmaepp")({"weights": str(rgb_dir), **case.TINY, "channel_order": "bgr"})
    flipped = normalize_levels(to_levels_u8(x).flip(1), case.RGB_MEAN, case.RGB_STD)
    expected = torch.nn.functional.interpolate(
        flipped, size=(32, 32), mode="bicubic", align_corners=False, antialias=True
    )
    torch.testing.assert_close(bgr.preprocess(x), expected, rtol=0, atol=0)


def test_s2_checkpoint_loads_strictly_and_drops_decoder_and_upsampling(s2_dir):
    emb = _s2(s2_dir)
    keys = set(emb.module.state_dict())
    assert {"cls_token", "pos_embed", "channel_embed", "patch_embed.2.proj.weight", "norm.weight"} <= keys
    assert not any(k.startswith(("decoder", "mask_token", "proj_up", "up_block")) for k in keys)
    state = case.s2_state()
    torch.testing.assert_close(emb.module.channel_embed, state["channel_embed"])  # read, not recomputed
    assert emb.module.patch_embed[2].proj.weight.shape[1] == 2  # B11, B12


def test_s2_checkpoint_missing_an_encoder_key_is_rejected(tmp_path):
    state = case.s2_state()
    del state["patch_embed.1.proj.bias"]
    case.write_s2_checkpoint(tmp_path, state)
    with pytest.raises(ModelError, match=r"missing keys \['patch_embed.1.proj.bias'\]"):
        _s2(tmp_path)


def test_s2_tokens_are_group_major_and_grid_reduces_the_groups(s2_dir):
    emb = _s2(s2_dir)
    x = emb.preprocess(torch.from_numpy(np.stack([_raw(10, (16, 16), 3), _raw(10, (16, 16), 4)])))
    with torch.inference_mode():
        tok = emb.module(x)  # B, G, L, D
        assert tok.shape == (2, 3, 4, 32)
        grid = emb.forward_grid(x)
        torch.testing.assert_close(grid, tok.mean(dim=1).transpose(1, 2).reshape(2, 32, 2, 2))
        torch.testing.assert_close(emb.forward_pooled(x, "mean"), tok.mean(dim=(1, 2)))
        torch.testing.assert_close(emb.forward_pooled(x, "max"), tok.amax(dim=(1, 2)))
        mx = _s2(s2_dir, grid_reduce="max")
        torch.testing.assert_close(mx.forward_grid(x), tok.amax(dim=1).transpose(1, 2).reshape(2, 32, 2, 2))


def test_s2_group_embedding_sees_only_its_bands(s2_dir):
    """Changing B11/B12 changes only what group 3's patch embedding produces before attention."""
    emb = _s2(s2_dir)
    x = emb.preprocess(torch.from_numpy(_raw(10, (16, 16), 5))[None])
    y = x.clone()
    y[:, 8:] = 0.0
    m = emb.module
    with torch.inference_mode():
        for i, grp in enumerate(CHANNEL_GROUPS):
            same = torch.equal(m.patch_embed[i](x[:, list(grp)]), m.patch_embed[i](y[:, list(grp)]))
            assert same == (i < 2)


def test_modality_s2_10b_through_the_api(s2_dir):
    import rs_embed_dask as rd

    sp = rd.PointBuffer(lon=8.5, lat=47.3, buffer_m=80)
    tw = rd.TemporalSpec.range("2022-06-01", "2022-07-01")
    cfg = {k: v for k, v in case.S2_TINY.items() if k != "modality"}
    pooled = rd.get_embedding("satmaepp", spatial=sp, temporal=tw, modality="s2_10b", backend="synthetic",
                              device="cpu", weights=str(s2_dir), **cfg)  # fmt: skip
    assert pooled.data.shape == (32,)
    assert pooled.meta["modality"] == "s2_10b"
    grid = rd.get_embedding("satmaepp", spatial=sp, temporal=tw, modality="s2_10b", backend="synthetic",
                            device="cpu", output=GRID, weights=str(s2_dir), input_prep="resize", **cfg)  # fmt: skip
    assert np.asarray(getattr(grid.data, "values", grid.data)).shape == (32, 2, 2)


def test_s2_tolerates_bfloat16_autocast(s2_dir):
    """``supports_autocast``: a bfloat16 forward stays close to float32 (CPU autocast stands in for CUDA)."""
    emb = _s2(s2_dir)
    x = emb.preprocess(torch.from_numpy(_raw(10, (16, 16), 6))[None])
    with torch.inference_mode():
        ref = emb.forward_grid(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = emb.forward_grid(x).float()
    cos = torch.nn.functional.cosine_similarity(ref.flatten(2), half.flatten(2), dim=1)
    assert float(cos.min()) > 0.99


def test_tiles_are_rs_embeds_224_in_both_modalities():
    """rs-embed tiles with its one class's default image_size (224); s2_10b resizes each tile to 96."""
    cls = get_model_class("satmaepp")
    assert cls({}).resolve_input_size() == 224
    s2 = cls({"modality": "s2_10b"})
    assert (s2.resolve_input_size(), s2.image_size) == (224, 96)
    assert cls({"modality": "s2_10b", "image_size": 128}).resolve_input_size() == 128
