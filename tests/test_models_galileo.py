"""galileo: the choices that follow rs-embed 0.3.1 (frames, months, back-filled frames, masking, loading, weights)."""

from __future__ import annotations

import json
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from model_cases.galileo import TINY_ENCODER, encoder_state, write_checkpoint

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class, list_models
from rs_embed_dask.core.specs import OutputSpec, PointBuffer, TemporalSpec
from rs_embed_dask.models import galileo as gal
from rs_embed_dask.models import galileo_frames as gf
from rs_embed_dask.models.galileo_encoder import S2_GROUPS, SPACE_TIME_GROUPS, GalileoEncoder

D = date.fromisoformat
POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()


@pytest.fixture(autouse=True)
def _no_rs_embed_env(monkeypatch):
    for var in gal.ENV.values():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(write_checkpoint(tmp_path_factory.mktemp("galileo")))


@pytest.fixture(scope="module")
def emb(weights):
    e = gal.GalileoEmbedder({"weights": weights, "image_size": 16})
    e.load("cpu")
    return e


def _x(t: int, seed: int = 0, hw: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, size=(t, 10, hw, hw)).astype(np.float32)


def _ctx(start: str, end: str) -> dict:
    return {"temporal": TemporalSpec.range(start, end)}


# -- frames and months ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "pinned", "window", "frames", "sampling"),
    [
        ("auto", None, None, 4, "fixed_stride"),  # rs-embed's default window: 92 days -> 30 + 30 + 30 + 2
        ("auto", None, ("2022-06-01", "2022-06-20"), None, "single"),
        (
            "auto",
            None,
            ("2022-01-01", "2023-01-01"),
            12,
            "fixed_stride",
        ),  # 365 days: the 5-day rest is kept out
        ("auto", None, ("2021-01-01", "2023-01-01"), 12, "equal_divided"),
        ("single", None, ("2022-01-01", "2023-01-01"), None, "single"),
        (
            "multi",
            None,
            ("2022-06-01", "2022-06-20"),
            None,
            "fixed_stride",
        ),  # one 30-day frame: one composite
        ("multi", 8, ("2022-06-01", "2022-06-20"), 8, "manual"),
        ("auto", 8, ("2022-06-01", "2022-06-20"), None, "single"),  # auto resolves to single before the pin
        ("auto", 3, ("2022-01-01", "2023-01-01"), 3, "manual"),
    ],
)
def test_frame_plan_follows_rs_embed(mode, pinned, window, frames, sampling):
    cfg = {"temporal_mode": mode, **({"n_frames": pinned} if pinned else {})}
    e = gal.GalileoEmbedder(cfg)
    t = TemporalSpec.range(*window) if window else None
    assert e.frame_count(t) == frames
    assert e.frame_plan(t).sampling == sampling
    assert e.temporal_semantics(t) == ("single" if frames is None else f"multi:{frames}")


def test_stretched_plan_records_its_stride():
    plan = gf.plan_frames(TemporalSpec.range("2021-01-01", "2023-01-01"), "auto", None)
    assert plan.stretched
    assert plan.meta()["effective_stride_days"] == round(730 / 12)


def test_months_are_equal_bin_midpoints_from_zero():
    t = TemporalSpec.range("2022-01-01", "2023-01-01")
    # 12 equal bins of 365 days: midpoints in every month of the year
    np.testing.assert_array_equal(gf.frame_months(t, 12), np.arange(12))
    np.testing.assert_array_equal(gf.frame_months(t, 1), [6])  # 2022-07-02
    np.testing.assert_array_equal(
        gf.frame_months(None, 4), [5, 6, 6, 7]
    )  # 23-day bins, midpoints Jun 12, Jul 5, Jul 28, Aug 20
    np.testing.assert_array_equal(gf.frame_months(t, 3, month=12), [11, 11, 11])
    recorded = [{"start": "2022-02-01", "end": "2022-03-01"}, {"start": "2022-10-01", "end": "2022-11-01"}]
    np.testing.assert_array_equal(gf.frame_months(t, 2, recorded=recorded), [1, 9])


def test_equal_bins_match_rs_embed_split_date_range():
    # fewer days than bins: rs-embed widens empty bins to one day (so bins repeat), as split_date_range gives
    bins = gf.equal_bins(D("2022-06-01"), D("2022-06-04"), 5)
    starts = [a.isoformat()[-2:] for a, _ in bins]
    ends = [b.isoformat()[-2:] for _, b in bins]
    assert (starts, ends) == (["01", "01", "02", "02", "03"], ["02", "02", "03", "03", "04"])


def test_side_input_months_and_month_override(emb, weights):
    sides = emb.side_inputs(_x(3), _ctx("2022-03-01", "2022-06-01"))
    np.testing.assert_array_equal(sides["months"], [2, 3, 4])
    fixed = gal.GalileoEmbedder({"weights": weights, "image_size": 16, "month": 7})
    np.testing.assert_array_equal(fixed.side_inputs(_x(3), None)["months"], [6, 6, 6])
    (e,) = emb.embed_inputs([_x(3)], output=POOLED, contexts=[_ctx("2022-03-01", "2022-06-01")])
    assert e.meta["month_indices"] == [2, 3, 4]
    assert e.meta["months"] == [3, 4, 5]
    assert e.meta["month"] == 4


def test_months_change_the_embedding(emb):
    x = _x(3)
    (a,) = emb.embed_inputs([x], output=POOLED, contexts=[_ctx("2022-03-01", "2022-06-01")])
    (b,) = emb.embed_inputs([x], output=POOLED, contexts=[_ctx("2022-09-01", "2022-12-01")])
    assert not np.allclose(a.data, b.data)


# -- multi-frame inputs ---------------------------------------------------------------------------------
def test_series_shape_is_kept_and_a_composite_is_repeated_to_the_plan(emb):
    (series,) = emb.embed_inputs([_x(5)], output=GRID, contexts=[_ctx("2022-06-01", "2022-07-01")])
    assert series.meta["n_frames"] == 5  # a given series keeps its own T
    assert series.data.shape == (32, 2, 2)
    comp = _x(1)[0]
    (rep,) = emb.embed_inputs([comp], output=POOLED)  # rs-embed's default window: 4 frames
    assert rep.meta["n_frames"] == 4
    assert rep.meta["n_backfilled_frames"] == 3
    (same,) = emb.embed_inputs([np.repeat(comp[None], 4, axis=0)], output=POOLED)
    np.testing.assert_allclose(rep.data, same.data, rtol=0, atol=1e-6)
    (one,) = emb.embed_inputs([comp], output=POOLED, contexts=[_ctx("2022-06-01", "2022-06-20")])
    assert one.meta["n_frames"] == 1
    assert one.meta["temporal_mode"] == "single"


def test_back_filled_frames_are_kept_and_counted(emb):
    """rs-embed keeps an empty bin's whole-window composite in the series (no frame is dropped)."""
    x = _x(4)
    x[2] = x[0]  # the provider filled bin 2 with the same composite as bin 0
    ctx = _ctx("2022-06-01", "2022-09-01")
    (e,) = emb.embed_inputs([x], output=POOLED, contexts=[ctx])
    assert e.meta["n_frames"] == 4
    assert (e.meta["n_distinct_frames"], e.meta["n_backfilled_frames"]) == (3, 1)
    (dropped,) = emb.embed_inputs([x[[0, 1, 3]]], output=POOLED, contexts=[ctx])
    assert not np.allclose(e.data, dropped.data)


def test_wrong_band_count_is_an_error(emb):
    with pytest.raises(ModelError, match="10, H, W"):
        emb.embed_inputs([np.zeros((2, 4, 16, 16), np.float32)], output=POOLED)


def test_stretched_window_warns(emb):
    with pytest.warns(UserWarning, match="12 equal frames"):
        emb.embed_inputs([_x(12)], output=POOLED, contexts=[_ctx("2021-01-01", "2023-01-01")])


# -- masking and outputs ----------------------------------------------------------------------------------
def test_only_sentinel2_groups_are_visible_and_hidden_channels_are_not_read(emb):
    assert S2_GROUPS == ("S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR")
    x = emb.preprocess(torch.from_numpy(_x(2)[None]))
    st = torch.zeros(1, 2, 13, 16, 16)
    st[:, :, 2:12] = x
    months = torch.tensor([[5, 6]])
    a = emb.module(st, months, patch_size=8)
    st[:, :, [0, 1, 12]] = 1234.0  # S1 and NDVI channels: masked groups are never projected
    b = emb.module(st, months, patch_size=8)
    assert a.shape == (1, 2, 2, 2, 5, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with_s1 = emb.module(st, months, patch_size=8, visible=("S1", *S2_GROUPS))
    assert with_s1.shape[4] == 6  # S1 tokens join the sequence and change the S2 tokens
    assert not torch.allclose(with_s1[:, :, :, :, 1:], a)


def test_grid_is_patch_mean_and_max_pools_the_grid(emb):
    x = _x(3)
    (g,) = emb.embed_inputs([x], output=GRID)
    (p,) = emb.embed_inputs([x], output=POOLED)
    (m,) = emb.embed_inputs([x], output=OutputSpec.pooled("max"))
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.data, g.data.max(axis=(1, 2)), rtol=0, atol=1e-6)


def test_normalisations(weights):
    raw = torch.full((1, 1, 10, 16, 16), 5000.0)
    raw[..., 0, 0] = 20000.0
    unit = gal.GalileoEmbedder({"weights": weights, "image_size": 16, "normalization": "unit"})
    assert unit.normalization == "unit_scale"
    assert float(unit.preprocess(raw).max()) == 1.0
    stats = gal.GalileoEmbedder({"weights": weights, "image_size": 16, "normalization": "pretrain_stats"})
    got = stats.preprocess(raw)[0, 0, :, 5, 5].numpy()
    want = (5000.0 - np.array(gal.PRETRAIN_MEAN, np.float32)) / np.array(gal.PRETRAIN_STD, np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    mm = gal.GalileoEmbedder({"weights": weights, "image_size": 16, "normalization": "per_tile_minmax"})
    y = mm.preprocess(raw)
    assert float(y.min()) == 0.0
    assert float(y.max()) == 1.0
    with pytest.raises(ModelError, match="'normalization' must be one of"):
        gal.GalileoEmbedder({"normalization": "zscore"})


def test_rectangle_is_padded_then_resized(emb):
    x = torch.from_numpy(_x(1, hw=16)[None, :, :, :, :10])  # 16 x 10
    y = emb.preprocess(x)
    assert tuple(y.shape) == (1, 1, 10, 16, 16)


# -- weights --------------------------------------------------------------------------------------------
def test_checkpoint_loads_strictly_and_backbone_infix_is_removed(tmp_path):
    state = encoder_state()
    # some published files name keys with a ``.backbone`` infix, which rs-embed's loader removes
    infixed = {k.replace("blocks.", "blocks.backbone.", 1): v for k, v in state.items()}
    assert "blocks.backbone.0.attn.q.weight" in infixed
    bb = write_checkpoint(tmp_path / "bb", state=infixed)
    e = gal.GalileoEmbedder({"weights": str(bb), "image_size": 16})
    e.load("cpu")
    torch.testing.assert_close(e.module.blocks[0].attn.q.weight, state["blocks.0.attn.q.weight"])
    extra = write_checkpoint(tmp_path / "extra", state={**state, "decoder_pred.weight": torch.zeros(2)})
    with pytest.raises(ModelError, match=r"unexpected keys \['decoder_pred.weight'\]"):
        gal.GalileoEmbedder({"weights": str(extra)}).load("cpu")
    missing = write_checkpoint(
        tmp_path / "missing", state={k: v for k, v in state.items() if k != "norm.bias"}
    )
    with pytest.raises(ModelError, match=r"missing keys \['norm.bias'\]"):
        gal.GalileoEmbedder({"weights": str(missing)}).load("cpu")


def test_width_and_depth_come_from_config_json(tmp_path):
    enc = {**TINY_ENCODER, "embedding_size": 48, "num_heads": 3, "depth": 2}
    folder = write_checkpoint(tmp_path / "w48", encoder=enc)
    e = gal.GalileoEmbedder({"weights": str(folder), "image_size": 16})
    e.load("cpu")
    assert e.describe()["embedding_dim"] == 48
    assert len(e.module.blocks) == 2
    (out,) = e.embed_inputs([_x(2)], output=POOLED)
    assert out.data.shape == (48,)


def test_published_state_dict_keys():
    keys = set(GalileoEncoder(**{**TINY_ENCODER, "depth": 1}).state_dict())
    for g in SPACE_TIME_GROUPS:
        assert f"space_time_embed.{g}.proj.weight" in keys
    for k in ("pos_embed", "month_embed.weight", "s_t_channel_embed", "sp_channel_embed", "t_channel_embed",
              "st_channel_embed", "space_embed.DW.proj.bias", "time_embed.ERA5.weight", "static_embed.location.bias",
              "blocks.0.attn.q.weight", "blocks.0.mlp.fc2.bias", "norm.weight"):  # fmt: skip
        assert k in keys


def test_folder_from_rs_embed_variable_and_cache(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("RS_EMBED_GALILEO_MODEL_PATH", weights)
    cfg, enc = gal.GalileoEmbedder().checkpoint()
    assert (cfg.name, enc.name) == ("config.json", "encoder.pt")
    monkeypatch.delenv("RS_EMBED_GALILEO_MODEL_PATH")
    # rs-embed's snapshot cache (a Hugging Face cache folder), as snapshot_download leaves it
    repo = tmp_path / "cache" / "models--nasaharvest--galileo"
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    write_checkpoint(repo / "snapshots" / rev / "models" / "tiny")
    monkeypatch.setenv("RS_EMBED_GALILEO_CACHE_DIR", str(tmp_path / "cache"))
    cfg, enc = gal.GalileoEmbedder({"variant": "tiny"}).checkpoint()
    assert enc == repo / "snapshots" / rev / "models" / "tiny" / "encoder.pt"


def test_missing_weights_fail_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("RS_EMBED_GALILEO_CACHE_DIR", str(tmp_path / "none"))
    with pytest.raises(ModelError, match=r"nasaharvest/galileo/models/base/encoder\.pt"):
        gal.GalileoEmbedder({"variant": "base"}).load("cpu")
    monkeypatch.setenv("RS_EMBED_GALILEO_AUTO_DOWNLOAD", "0")
    with pytest.raises(ModelError, match="RS_EMBED_GALILEO_MODEL_PATH"):
        gal.GalileoEmbedder().checkpoint()
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "encoder.pt").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no config\.json"):
        gal.GalileoEmbedder({"weights": str(tmp_path / "only")}).checkpoint()


def test_preflight_weights_check(weights, tmp_path):
    from rs_embed_dask.resolve import resolve_model
    from rs_embed_dask.validation.preflight import check_weights

    check_weights(resolve_model("galileo", backend="synthetic", model_config={"weights": weights}))
    with pytest.raises(ModelError, match="holds none of"):
        check_weights(resolve_model("galileo", backend="synthetic", model_config={"weights": str(tmp_path)}))


# -- description, names, settings ---------------------------------------------------------------------------
def test_describe_and_names():
    assert "galileo" in list_models()
    assert canonical_model_name(" Galileo ") == "galileo"
    d = gal.GalileoEmbedder().describe()
    assert d["inputs"] == {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": list(gal.S2_BANDS)}
    assert d["embedding_dim"] == 128
    assert d["defaults"]["image_size"] == 64
    assert d["defaults"]["patch_size"] == 8
    assert d["defaults"]["temporal_mode"] == "auto"
    assert d["defaults"]["normalization"] == "none"
    assert d["variants"] == {"nano": 128, "tiny": 192, "base": 768}
    assert d["weights"]["env_var"] == "RS_EMBED_GALILEO_MODEL_PATH"
    assert "(128, 8, 8)" in d["grid"]
    assert get_model_class("galileo").square_fetch


def test_rs_embed_variables_set_the_defaults(monkeypatch):
    monkeypatch.setenv("RS_EMBED_GALILEO_MODEL_SIZE", "base")
    monkeypatch.setenv("RS_EMBED_GALILEO_IMG", "96")
    monkeypatch.setenv("RS_EMBED_GALILEO_PATCH", "4")
    monkeypatch.setenv("RS_EMBED_GALILEO_NORM", "official_stats")
    monkeypatch.setenv("RS_EMBED_GALILEO_ADD_LN", "0")
    monkeypatch.setenv("RS_EMBED_GALILEO_TEMPORAL_MODE", "single")
    e = gal.GalileoEmbedder()
    assert (e.variant, e.image_size, e.patch_size, e.normalization, e.add_layernorm, e.temporal_mode) == (
        "base", 96, 4, "official_stats", False, "single"
    )  # fmt: skip
    assert gal.GalileoEmbedder({"image_size": 32, "temporal_mode": "multi"}).image_size == 32  # config wins
    monkeypatch.setenv("RS_EMBED_GALILEO_FRAMES", "6")
    assert gal.GalileoEmbedder({"temporal_mode": "multi"}).frame_count(None) == 6


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"variant": "huge"}, "'variant' must be one of"),
        ({"image_size": 60}, "multiple of 'patch_size'"),
        ({"temporal_mode": "weekly"}, "'temporal_mode' must be one of"),
        ({"month": 13}, "'month' must be 1 to 12"),
        ({"n_frames": 0}, "'n_frames' must be an integer >= 1"),
        ({"bands": ["B2"]}, "does not accept"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        gal.GalileoEmbedder(cfg)


def test_memory_per_item_follows_tokens_and_width():
    nano = gal.GalileoEmbedder()
    twelve = nano.memory_per_item((12, 10, 64, 64))
    assert 45 * 2**20 < twelve < 80 * 2**20  # 49-52 MiB measured on a CPU (nano, 12 frames, 64 px)
    assert nano.memory_per_item((4, 10, 64, 64)) < twelve / 2.5
    assert nano.memory_per_item((10, 64, 64)) == nano.memory_per_item(
        (4, 10, 64, 64)
    )  # default window: 4 frames
    assert gal.GalileoEmbedder({"variant": "base"}).memory_per_item((12, 10, 64, 64)) > 5 * twelve


# -- the pipeline --------------------------------------------------------------------------------------------
def test_get_embedding_fetches_equal_bins_and_crops_a_rectangle(weights):
    from rs_embed_dask import get_embedding
    from rs_embed_dask.core.specs import BBox
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model, with_frames

    cfg = {"weights": weights, "image_size": 16}
    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    rm = with_frames(resolve_model("galileo", backend="synthetic", model_config=cfg), t)
    assert (rm.n_frames, rm.temporal_semantics) == (4, "multi:4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fetch_input(rm, PointBuffer(8.5, 47.3, 80.0), t)
        assert got.data.shape[:2] == (4, 10)
        assert [f["start"] for f in got.meta["frames"]] == [
            "2022-06-01",
            "2022-06-24",
            "2022-07-17",
            "2022-08-09",
        ]
        e = get_embedding("galileo", spatial=PointBuffer(8.5, 47.3, 80.0), temporal=t, model_config=cfg,
                          backend="synthetic", device="cpu")  # fmt: skip
        assert e.meta["month_indices"] == [5, 6, 6, 7]
        wide = {**cfg, "image_size": 32}  # 4 x 4 patches: the cut-back keeps 2 of 4 rows of a 33 x 10 px ROI
        rect = get_embedding("galileo", spatial=BBox(8.500, 47.300, 8.503, 47.3006), temporal=t, model_config=wide,
                             backend="synthetic", device="cpu", output=GRID, input_prep="resize")  # fmt: skip
    assert np.asarray(rect.data).shape == (32, 2, 4)


@pytest.mark.cluster
def test_export_matches_get_embedding(weights, tmp_path):
    from _exports import assert_row_is_get_embedding, threaded_export

    from rs_embed_dask import load_export

    rois = [PointBuffer(lon=8.40 + 0.01 * i, lat=47.30, buffer_m=80) for i in range(3)]
    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    cfg = {"weights": weights, "image_size": 16}
    out = tmp_path / "galileo.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        man = threaded_export(out, {"galileo": cfg}, rois, temporal)
    assert man["status"] == "ok"
    res = load_export(out)
    emb = np.asarray(res.embedding("galileo"))
    assert emb.shape == (3, 32)
    assert np.asarray(res.models["galileo"].inputs).shape == (3, 4, 10, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_row_is_get_embedding(emb[1], "galileo", rois[1], temporal, cfg)


def test_config_json_is_the_published_layout(weights):
    doc = json.loads((Path(weights) / "config.json").read_text())
    assert set(doc["model"]["encoder"]) == set(TINY_ENCODER)
