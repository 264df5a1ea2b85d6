"""thor: rs-embed's constants, input-size rule, token layout, grid merge, variants and S1 branch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases.thor import TINY, thor_checkpoint

from rs_embed_dask import describe_model, list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class
from rs_embed_dask.core.specs import OutputSpec, SensorSpec
from rs_embed_dask.models import thor
from rs_embed_dask.models.thor_encoder import (
    CHANNELS,
    VARIANTS,
    ThorArch,
    ThorEncoder,
    alibi_slopes,
    group_layout,
    pinv_resize_matrix,
)

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("thor")
    thor_checkpoint(d / "thor_v1_vit_tiny.pt")
    return d


@pytest.fixture(scope="module")
def emb(weights: Path) -> thor.ThorEmbedder:
    e = thor.ThorEmbedder({**TINY, "weights": str(weights)})
    e.load("cpu")
    return e


# -- registration and rs-embed's constants ---------------------------------------------------
def test_name_alias_and_listing() -> None:
    assert "thor" in list_models()
    assert canonical_model_name("thor_1_0_base") == "thor"
    d = describe_model("thor")
    assert d["embedding_dim"] == 768
    assert d["defaults"]["variant"] == "base"
    assert d["defaults"]["image_size"] == 288
    assert d["defaults"]["patch_size"] == 8
    assert d["inputs"]["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert d["modalities"]["s1"]["bands"] == ["VV", "VH"]
    assert d["modalities"]["s1"]["collection"] == "COPERNICUS/S1_GRD_FLOAT"
    assert get_model_class("thor").square_fetch


@pytest.mark.parametrize(
    ("variant", "dim", "depth", "heads", "band_dim"),
    [
        ("tiny", 192, 12, 3, 32),
        ("small", 384, 12, 6, 64),
        ("base", 768, 12, 12, 128),
        ("large", 1024, 24, 16, 256),
    ],
)
def test_variants_map_to_published_architectures(
    variant: str, dim: int, depth: int, heads: int, band_dim: int
) -> None:
    e = get_model_class("thor")({"variant": variant})
    assert e.describe()["embedding_dim"] == dim
    assert e.hub.repo == f"FM4CS/THOR-1.0-{variant}"
    assert e.hub.filename == f"thor_v1_vit_{variant}.pt"
    assert VARIANTS[variant] == ThorArch(dim, depth, heads, band_dim)
    with torch.device("meta"):  # the full-size state dict's shapes, without allocating it
        sd = ThorEncoder(VARIANTS[variant]).state_dict()
    assert sum(k.endswith(".attn.qkv.weight") for k in sd) == depth
    assert tuple(sd["blocks.0.attn.qkv.weight"].shape) == (3 * dim, dim)
    assert tuple(sd["band_embed.group0"].shape) == (band_dim,)
    assert tuple(sd["ind_patch_embed.patch_embed.S2:Red.weight"].shape) == (dim, 1, 16, 16)
    assert tuple(sd["encoder_slopes"].shape) == (heads,)


def test_variant_aliases_and_bad_values() -> None:
    assert get_model_class("thor")({"variant": "L"}).variant == "large"
    with pytest.raises(ModelError, match=r"variant.*tiny.*small.*base.*large"):
        get_model_class("thor")({"variant": "huge"})
    with pytest.raises(ModelError, match="group_merge"):
        get_model_class("thor")({"group_merge": "median"})


def test_s2_statistics_and_band_channels() -> None:
    assert thor.S2_MEAN[0] == pytest.approx(0.176620)
    assert thor.S2_STD[-1] == pytest.approx(0.156223)
    # B8 is THOR's broad NIR (10 m group), B8A its RE4 (20 m group)
    chans = dict(zip(thor.S2_BANDS, thor.MODALITY_CHANNELS["s2"], strict=True))
    assert chans["B8"] == "S2:NIR"
    assert chans["B8A"] == "S2:RE4"
    assert [CHANNELS[chans[b]][0] for b in thor.S2_BANDS] == [10, 10, 10, 20, 20, 20, 10, 20, 20, 20]
    assert thor.MODALITY_CHANNELS["s1"] == ("S1:IW-VV", "S1:IW-VH")
    assert CHANNELS["S1:IW-VV"][1] == "S1:VV"
    assert CHANNELS["S1:EW-VV"][1] == "S1:VV"


def test_alibi_slopes() -> None:
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]
    assert len(alibi_slopes(12)) == 12
    assert alibi_slopes(12)[:8] == alibi_slopes(8)


# -- input size: rs-embed's native_snap rule -----------------------------------------------
@pytest.mark.parametrize(
    ("hw", "tiled", "strategy", "side", "reason"),
    [
        ((288, 288), True, "fixed_resize", 288, "tile_preserve_stitch_geometry"),
        ((128, 128), True, "fixed_resize", 288, "tile_preserve_stitch_geometry"),
        ((128, 128), False, "native_snap", 128, "native_snap_applied"),
        ((300, 300), False, "native_snap", 304, "native_snap_applied"),  # 300 -> nearest multiple of 16
        ((100, 105), False, "native_snap", 96, "native_snap_applied"),  # crop to 100, snap to 96
        ((100, 120), False, "fixed_resize", 288, "rectangular_above_tolerance"),
        ((400, 400), False, "fixed_resize", 288, "native_side_limit"),
    ],
)
def test_plan_prep(hw: tuple[int, int], tiled: bool, strategy: str, side: int, reason: str) -> None:
    p = thor.plan_prep(hw, scale_m=10, modality="s2", tiled=tiled)
    assert (p.strategy, p.side, p.reason) == (strategy, side, reason)
    assert p.ground_cover_m == 10 * side


def test_side_unit_and_token_limit() -> None:
    assert thor.side_unit(10, 8, (10, 20)) == 16
    assert thor.side_unit(10, 8, (10,)) == 8
    assert thor.side_unit(15, 8, (10, 20)) == 32
    assert thor.patch_tokens(288, 10, 8, (10, 20)) == 36 * 36 + 18 * 18
    assert thor.patch_tokens(100, 10, 8, (10, 20)) is None
    # at 20 m a 384 px side is 96^2 + 48^2 tokens: over the 3000-token limit; 160 px is 40^2 + 20^2
    assert thor.plan_prep((384, 384), scale_m=20, modality="s2", tiled=False).reason == "native_token_limit"
    assert thor.plan_prep((160, 160), scale_m=20, modality="s2", tiled=False).strategy == "native_snap"
    # S1 has one 10 m group: whole 8 px patches
    assert thor.plan_prep((20, 20), scale_m=10, modality="s1", tiled=False).side == 16


# -- token layout and grid --------------------------------------------------------------------
def test_group_layout_s2_and_s1() -> None:
    s2 = group_layout(thor.MODALITY_CHANNELS["s2"], 2880, 8)
    assert s2.groups == ("group0", "group1")
    assert s2.members[0] == ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR")
    assert s2.num_patch == (36, 18)
    assert s2.n_tokens == 1620
    s1 = group_layout(thor.MODALITY_CHANNELS["s1"], 2880, 8)
    assert s1.groups == ("group3",)
    assert s1.members == (("S1:IW-VH", "S1:IW-VV"),)
    with pytest.raises(ModelError, match="whole number"):
        group_layout(thor.MODALITY_CHANNELS["s2"], 2890, 8)


def test_pinv_resize_inverts_the_bicubic_resize() -> None:
    p = pinv_resize_matrix(16, 8)
    assert tuple(p.shape) == (64, 256)
    rows = []
    for i in range(256):
        basis = torch.zeros(256)
        basis[i] = 1.0
        small = torch.nn.functional.interpolate(
            basis.reshape(1, 1, 16, 16), (8, 8), mode="bicubic", antialias=True
        )
        rows.append(small.reshape(-1))
    resize = torch.stack(rows)  # x_small = resize.T @ x: FlexiViT's kernel rule is its pseudo-inverse
    np.testing.assert_allclose((p @ resize).numpy(), np.eye(64), atol=1e-4)


def test_grid_is_group_maps_merged_and_pooled_is_token_mean(emb: thor.ThorEmbedder) -> None:
    x = np.random.default_rng(0).uniform(0, 6000, size=(10, 64, 64)).astype(np.float32)
    (pooled,) = emb.embed_inputs([x], output=POOLED)
    (grid,) = emb.embed_inputs([x], output=GRID)
    (mx,) = emb.embed_inputs([x], output=OutputSpec.pooled("max"))
    with torch.inference_mode():
        t = emb.preprocess(torch.from_numpy(x[None]))
        tokens, layout = emb.forward_tokens(t)
    assert layout.num_patch == (8, 4)  # 640 m: 8 x 8 patches at 10 m, 4 x 4 at 20 m
    tok = tokens[0].numpy()
    g10 = tok[:64].T.reshape(-1, 8, 8)
    g20 = torch.from_numpy(tok[64:].T.reshape(1, -1, 4, 4).copy())
    up = torch.nn.functional.interpolate(g20, size=(8, 8), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(np.asarray(grid.data), (g10 + up) / 2, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled.data), tok.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(mx.data), tok.max(axis=0), atol=1e-5)
    assert pooled.meta["group_patch_sizes"] == [8, 4]
    assert pooled.meta["ground_cover_m"] == 640


def test_concat_merge_doubles_the_grid(weights: Path) -> None:
    e = thor.ThorEmbedder({**TINY, "weights": str(weights), "group_merge": "concat"})
    x = np.random.default_rng(1).uniform(0, 6000, size=(10, 32, 32)).astype(np.float32)
    (g,) = e.embed_inputs([x], output=GRID)
    assert np.asarray(g.data).shape == (64, 4, 4)
    assert e.describe()["grid_dim"] == 64


def test_tile_context_resizes_to_image_size(emb: thor.ThorEmbedder) -> None:
    x = np.random.default_rng(2).uniform(0, 6000, size=(10, 48, 48)).astype(np.float32)
    (native,) = emb.embed_inputs([x], output=GRID, contexts=[{"input_prep_mode": "resize"}])
    (tiled,) = emb.embed_inputs([x], output=GRID, contexts=[{"input_prep_mode": "tile"}])
    assert np.asarray(native.data).shape[1:] == (6, 6)
    assert np.asarray(tiled.data).shape[1:] == (36, 36)
    assert tiled.meta["preprocess_strategy"] == "fixed_resize"
    assert tiled.meta["ground_cover_m"] == 2880


def test_fetch_scale_sets_the_ground_cover(emb: thor.ThorEmbedder) -> None:
    x = np.random.default_rng(3).uniform(0, 6000, size=(10, 32, 32)).astype(np.float32)
    sensor = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=thor.S2_BANDS, scale_m=20)
    (g,) = emb.embed_inputs([x], output=GRID, contexts=[{"sensor": sensor}])
    assert g.meta["ground_cover_m"] == 640
    assert np.asarray(g.data).shape[1:] == (8, 8)  # 640 m: the 10 m bands are upsampled to 64 px


# -- Sentinel-1 -----------------------------------------------------------------------------------
def test_s1_normalisation_matches_rs_embed_rule(emb: thor.ThorEmbedder) -> None:
    rng = np.random.default_rng(4)
    x = rng.gamma(1.0, 0.05, size=(1, 2, 32, 32)).astype(np.float32)
    x[0, 0, :2, :2] = -0.01  # negative backscatter is clipped to 0 by max(x, 0)
    out = emb.preprocess(torch.from_numpy(x)).numpy()
    y = np.log1p(np.maximum(x[0], 0.0))
    ref = np.clip(y / np.percentile(y, 99), 0.0, 1.0)
    np.testing.assert_allclose(out[0], ref, atol=1e-6)


def test_s1_rejects_db_values_and_wrong_band_counts(emb: thor.ThorEmbedder) -> None:
    db = np.full((2, 16, 16), -12.0, dtype=np.float32)
    with pytest.raises(ModelError, match="dB"):
        emb.embed_inputs([db], output=POOLED)
    with pytest.raises(ModelError, match="10 Sentinel-2 bands"):
        emb.embed_inputs([np.zeros((3, 16, 16), np.float32)], output=POOLED)
    s2_sensor = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=thor.S2_BANDS, modality="s2")
    with pytest.raises(ModelError, match="modality"):
        emb.embed_inputs([np.ones((2, 16, 16), np.float32)], output=POOLED, contexts=[{"sensor": s2_sensor}])


def test_s1_modality_reads_vv_vh(weights: Path) -> None:
    from rs_embed_dask import PointBuffer, TemporalSpec, get_embedding

    kw: dict[str, Any] = {"model_config": {**TINY, "weights": str(weights)}}
    e = get_embedding(
        "thor", spatial=PointBuffer(lon=8.4, lat=47.3, buffer_m=160), temporal=TemporalSpec.range("2022-06-01", "2022-07-01"),
        modality="s1", output=GRID, backend="synthetic", device="cpu", **kw,
    )  # fmt: skip
    assert e.meta["modality"] == "s1"
    assert e.meta["group_patch_sizes"] == [36]  # one 10 m group at the 288 px resize of a one-tile call
    assert np.asarray(e.data).shape == (32, 36, 36)


# -- weights ----------------------------------------------------------------------------------------
def test_checkpoint_loads_strictly(tmp_path: Path, weights: Path) -> None:
    wider = thor.ThorEmbedder({**TINY, "embed_dim": 48, "weights": str(weights)})
    with pytest.raises(ModelError, match="does not match"):  # another width than the file's
        wider.load("cpu")
    missing = tmp_path / "thor_v1_vit_tiny.pt"
    state = torch.load(weights / "thor_v1_vit_tiny.pt", weights_only=True)
    del state["state_dict"]["encoder.band_embed.group9"]
    torch.save(state, missing)
    with pytest.raises(ModelError, match=r"band_embed\.group9"):
        thor.ThorEmbedder({**TINY, "weights": str(missing)}).load("cpu")


def test_missing_large_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_THOR_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelError, match=r"thor_v1_vit_large\.pt"):
        thor.ThorEmbedder({"variant": "large"}).load("cpu")


# -- the seed example of rs-embed's export documentation ----------------------------------------------
@pytest.mark.cluster
def test_seed_export_example_runs_on_synthetic(weights: Path, tmp_path: Path) -> None:
    """``ExportModelRequest("thor", model_config={"variant": ...})`` in ``export_batch`` (synthetic backend).

    rs-embed's example names ``variant="large"``; a large-shaped random
    checkpoint (1.2 GB, ~2.5 GB of RAM to load) is too heavy for the suite, so
    the export runs the test encoder of the tiny variant's layout and the
    variant -> architecture mapping is checked above on the full shapes.
    """
    from _exports import TEMPORAL as temporal
    from _exports import assert_row_is_get_embedding, rois, threaded_export

    from rs_embed_dask import load_export

    spatials, cfg, out = rois(3, buffer_m=160), {**TINY, "weights": str(weights)}, tmp_path / "thor.npz"
    man = threaded_export(out, {"thor": cfg}, spatials, temporal)
    assert man["status"] == "ok"
    res = load_export(out)
    emb = np.asarray(res.embedding("thor"))
    assert emb.shape == (3, 32)
    inputs = np.asarray(res.models["thor"].inputs)
    assert inputs.shape == (3, 10, 32, 32)
    assert inputs.min() >= 0
    assert inputs.max() <= 10000
    assert_row_is_get_embedding(emb[1], "thor", spatials[1], temporal, cfg)


def test_fetch_clips_s2_and_keeps_its_own_input_key(weights: Path) -> None:
    from rs_embed_dask.resolve import resolve_model

    x = np.array([[[-5.0, np.nan], [12000.0, 300.0]]] * 10, dtype=np.float32)
    y = thor.ThorEmbedder.fetch_postprocess(x, None)
    np.testing.assert_array_equal(y[0], [[0.0, 0.0], [10000.0, 300.0]])
    s1 = SensorSpec(collection="COPERNICUS/S1_GRD_FLOAT", bands=("VV", "VH"), modality="s1")
    s1_raw = np.full((2, 2, 2), 12000.0, dtype=np.float32)
    np.testing.assert_array_equal(thor.ThorEmbedder.fetch_postprocess(s1_raw, s1), s1_raw)
    rm = resolve_model("thor", backend="synthetic", model_config={**TINY, "weights": str(weights)})
    assert rm.temporal_semantics == "custom:thor"
    assert rm.input_key is not None
    assert rm.input_key.endswith("--custom_thor")  # rs-embed's thor shares its fetch with no other model
