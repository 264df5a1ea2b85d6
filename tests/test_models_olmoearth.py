"""olmoearth: the choices that follow rs-embed 0.3.1 (bands, statistics, 30-day bins, empty bins, timestamps, variants)."""

from __future__ import annotations

import sys
import warnings
from datetime import date

import numpy as np
import pytest
import torch
from model_cases.olmoearth import golden, write_checkpoint

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.models import olmoearth as oe
from rs_embed_dask.models import olmoearth_frames as fr

pytest.importorskip("olmoearth_pretrain_minimal")
D = date.fromisoformat


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(write_checkpoint(tmp_path_factory.mktemp("olmoearth")))


@pytest.fixture(scope="module")
def emb(weights):
    e = oe.OlmoEarthEmbedder({"weights": weights, "image_size": 16})
    e.load("cpu")
    return e


# -- bins and timestamps ------------------------------------------------------------------------
def test_default_window_gives_four_30_day_bins():
    bins, stretched = fr.temporal_bins(*fr.DEFAULT_WINDOW)
    assert bins == [(D("2022-06-01"), D("2022-07-01")), (D("2022-07-01"), D("2022-07-31")),
                    (D("2022-07-31"), D("2022-08-30")), (D("2022-08-30"), D("2022-09-01"))]  # fmt: skip
    assert not stretched


def test_a_year_keeps_twelve_fixed_bins_and_two_years_are_divided_equally():
    bins, stretched = fr.temporal_bins(D("2022-01-01"), D("2023-01-01"))
    assert len(bins) == 12
    assert not stretched  # 5 days left over: fewer than 30
    assert bins[-1] == (D("2022-11-27"), D("2022-12-27"))
    bins, stretched = fr.temporal_bins(D("2022-01-01"), D("2024-01-01"))
    assert stretched
    assert len(bins) == 12
    assert bins[0] == (D("2022-01-01"), D("2022-03-02"))  # 730 * 1 // 12 = 60 days
    assert bins[-1][1] == D("2024-01-01")


def test_timestamps_are_day_month0_year():
    assert fr.timestamp(D("2022-07-31")) == (31, 6, 2022)
    assert fr.midpoint(D("2022-06-01"), D("2022-09-01")) == D("2022-07-17")
    assert fr.midpoint(D("2022-01-01"), D("2023-01-01")) == D("2022-07-02")


@pytest.mark.parametrize(
    ("mode", "window", "frames", "semantics"),
    [
        ("auto", ("2022-06-01", "2022-07-01"), None, "single"),
        ("auto", ("2022-06-01", "2022-07-02"), 2, "bins30d:2"),
        ("multi", ("2022-06-01", "2022-07-01"), 1, "bins30d:1"),
        ("single", ("2022-01-01", "2023-01-01"), None, "single"),
        ("auto", ("2022-01-01", "2023-01-01"), 12, "bins30d:12"),
    ],
)
def test_frame_count_follows_temporal_mode(mode, window, frames, semantics):
    e = oe.OlmoEarthEmbedder({"temporal_mode": mode})
    t = TemporalSpec.range(*window)
    assert e.frame_count(t) == frames
    assert e.temporal_semantics(t) == semantics
    assert oe.OlmoEarthEmbedder().frame_count(None) == 4  # rs-embed's default window


def test_side_input_timestamps(emb):
    t = TemporalSpec.range("2022-06-01", "2022-08-01")
    comp = emb.side_inputs(np.zeros((12, 8, 8), np.float32), {"temporal": t})["timestamps"]
    np.testing.assert_array_equal(comp, [[1, 6, 2022]])  # midpoint 2022-07-01
    series = emb.side_inputs(np.zeros((3, 12, 8, 8), np.float32), {"temporal": t})["timestamps"]
    np.testing.assert_array_equal(series, [[1, 5, 2022], [1, 6, 2022], [31, 6, 2022]])
    with pytest.raises(ModelError, match="does not match the 3 30-day bins"):
        emb.side_inputs(np.zeros((2, 12, 8, 8), np.float32), {"temporal": t})


# -- empty bins ------------------------------------------------------------------------------------
def _series(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, (3, 12, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("how", ["flag", "nan"])
def test_empty_bins_are_dropped_with_their_timestamps(emb, how):
    t = TemporalSpec.range("2022-06-01", "2022-08-01")
    x = _series()
    frames_meta = [{"start": "2022-06-01", "end": "2022-07-01"}, {"start": "2022-07-01", "end": "2022-07-31"},
                   {"start": "2022-07-31", "end": "2022-08-01"}]  # fmt: skip
    if how == "flag":
        frames_meta[1]["empty"] = True  # the provider filled it with the whole-window composite
        x[1] = x[0]
    else:
        x[1] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        (got,) = emb.embed_inputs(
            [x], output=OutputSpec.pooled(), contexts=[{"temporal": t, "fetch_meta": {"frames": frames_meta}}]
        )
    assert got.meta["n_frames"] == 2
    assert got.meta["n_bins"] == 3
    assert got.meta["dropped_bins"] == [["2022-07-01", "2022-07-31"]]
    assert got.meta["timestamps"] == [[1, 5, 2022], [31, 6, 2022]]
    kept = [frames_meta[0], frames_meta[2]]
    (ref,) = emb.embed_inputs([x[[0, 2]]], output=OutputSpec.pooled(),
                              contexts=[{"temporal": t, "fetch_meta": {"frames": kept}}])  # fmt: skip
    np.testing.assert_array_equal(got.data, ref.data)
    shifted = [{"start": "2022-06-01", "end": "2022-07-01"}, {"start": "2022-07-01", "end": "2022-07-31"}]
    (wrong,) = emb.embed_inputs([x[[0, 2]]], output=OutputSpec.pooled(),
                                contexts=[{"temporal": t, "fetch_meta": {"frames": shifted}}])  # fmt: skip
    assert not np.allclose(wrong.data, ref.data)  # the timestamps reach the encoder


def test_a_series_without_imagery_is_an_error(emb):
    x = np.full((3, 12, 16, 16), np.nan, np.float32)
    with pytest.raises(ModelError, match="every frame"):
        emb.embed_inputs(
            [x],
            output=OutputSpec.pooled(),
            contexts=[{"temporal": TemporalSpec.range("2022-06-01", "2022-08-01")}],
        )


def test_stretched_window_warns(emb):
    x = np.random.default_rng(2).uniform(0, 6000, (12, 12, 16, 16)).astype(np.float32)
    with pytest.warns(UserWarning, match="12 equal bins"):
        emb.embed_inputs(
            [x],
            output=OutputSpec.grid(),
            contexts=[{"temporal": TemporalSpec.range("2022-01-01", "2024-01-01")}],
        )


# -- bands, statistics, modalities, variants -----------------------------------------------------------
def test_band_order_is_the_packages():
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

    assert [b.replace("B0", "B") for b in Modality.SENTINEL2_L2A.band_order] == list(oe.S2_BANDS)
    assert [b.upper() for b in Modality.SENTINEL1.band_order] == list(oe.S1_BANDS)
    d = oe.OlmoEarthEmbedder().describe()
    assert d["inputs"]["bands"] == list(oe.S2_BANDS)
    assert d["embedding_dim"] == 768


def test_normalisation_is_the_packages_normalizer():
    from olmoearth_pretrain_minimal import Normalizer
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

    raw = np.random.default_rng(3).uniform(-20, 9000, (1, 12, 4, 5)).astype(np.float32)
    ref = Normalizer(std_multiplier=2.0).normalize(Modality.SENTINEL2_L2A, np.moveaxis(raw[0], 0, -1))
    out = oe.OlmoEarthEmbedder().preprocess(torch.from_numpy(raw)).numpy()[0, 0]
    np.testing.assert_allclose(out, np.moveaxis(ref.astype(np.float32), -1, 0), rtol=0, atol=1e-7)
    s1 = np.random.default_rng(4).uniform(-30, 0, (1, 2, 4, 4)).astype(np.float32)
    out1 = oe.OlmoEarthEmbedder({"modality": "s1"}).preprocess(torch.from_numpy(s1)).numpy()
    np.testing.assert_array_equal(out1, golden(s1, "sentinel1"))


def test_s1_modality_reads_db_and_converts_linear(weights):
    from rs_embed_dask.resolve import resolve_model

    rm = resolve_model("olmoearth", backend="synthetic", modality="s1", model_config={"weights": weights})
    assert rm.sensor.collection == "COPERNICUS/S1_GRD"
    assert rm.sensor.bands == ("VV", "VH")
    assert rm.sensor.use_float_linear is False
    assert dict(rm.model_config)["modality"] == "s1"
    e = oe.OlmoEarthEmbedder({"weights": weights, "image_size": 16, "modality": "s1"})
    lin = np.random.default_rng(5).uniform(1e-4, 0.5, (2, 16, 16)).astype(np.float32)
    db = (10 * np.log10(lin)).astype(np.float32)
    lin_sensor = SensorSpec("COPERNICUS/S1_GRD_FLOAT", ("VV", "VH"), modality="s1", use_float_linear=True)
    db_sensor = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), modality="s1", use_float_linear=False)
    (a,) = e.embed_inputs([lin], output=OutputSpec.pooled(), contexts=[{"sensor": lin_sensor}])
    (b,) = e.embed_inputs([db], output=OutputSpec.pooled(), contexts=[{"sensor": db_sensor}])
    np.testing.assert_allclose(a.data, b.data, atol=1e-5)


def test_variant_table_and_aliases():
    assert {k: v[3] for k, v in oe.VARIANTS.items()}["base_v1_2"] == 768
    assert oe.OlmoEarthEmbedder({"variant": "small"}).variant == "small_v1_2"
    assert oe.OlmoEarthEmbedder({"variant": "Base-12"}).hf_repo == "allenai/OlmoEarth-v1_2-Base"
    assert oe.OlmoEarthEmbedder({"variant": "nano_v1_1"}).describe()["embedding_dim"] == 128
    assert oe.OlmoEarthEmbedder({"variant": "large"}).describe()["embedding_dim"] == 1024


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"variant": "huge"}, "'variant' must be one of"),
        ({"patch_size": 9}, "'patch_size' must be 1 to 8"),
        ({"patch_size": 3}, "multiple of 'patch_size'"),
        ({"temporal_mode": "monthly"}, "'temporal_mode' must be one of"),
        ({"modality": "s3"}, "'modality' must be one of"),
        ({"shape_adjust": "stretch"}, "'shape_adjust' must be one of"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        get_model_class("olmoearth")(cfg)


def test_width_comes_from_the_checkpoint_and_patch_size_sets_the_grid(weights):
    e = oe.OlmoEarthEmbedder({"weights": weights, "image_size": 16, "patch_size": 2})
    x = np.random.default_rng(6).uniform(0, 6000, (12, 16, 16)).astype(np.float32)
    (g,) = e.embed_inputs([x], output=OutputSpec.grid())
    assert g.data.shape == (32, 8, 8)
    assert e.describe()["embedding_dim"] == 32


def test_strict_loading(tmp_path, weights):
    import shutil

    shutil.copy(f"{weights}/config.json", tmp_path / "config.json")
    state = torch.load(f"{weights}/weights.pth", weights_only=True)
    del state["encoder.blocks.0.attn.q.weight"]
    torch.save(state, tmp_path / "weights.pth")
    with pytest.raises(ModelError, match="missing keys"):
        oe.OlmoEarthEmbedder({"weights": str(tmp_path)}).load("cpu")


# -- fetching 30-day bins ------------------------------------------------------------------------------------
def test_pipeline_fetches_the_30_day_bins(weights):
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model, with_frames

    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    rm = with_frames(resolve_model("olmoearth", backend="synthetic", model_config={"weights": weights}), t)
    assert rm.n_frames == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fetch_input(rm, PointBuffer(8.5, 47.3, 80.0), t)
    assert got.data.shape[:2] == (4, 12)
    assert [(f["start"], f["end"]) for f in got.meta["frames"]] == [
        ("2022-06-01", "2022-07-01"), ("2022-07-01", "2022-07-31"), ("2022-07-31", "2022-08-30"), ("2022-08-30", "2022-09-01")
    ]  # fmt: skip


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "olmoearth_pretrain_minimal", None)
    with pytest.raises(ModelError, match=r"pip install 'rs-embed-dask\[olmoearth\]'"):
        get_model_class("olmoearth").check_available()


def test_preflight_weights_check(weights, tmp_path):
    from rs_embed_dask.resolve import resolve_model
    from rs_embed_dask.validation.preflight import check_weights

    check_weights(resolve_model("olmoearth", backend="synthetic", model_config={"weights": weights}))
    with pytest.raises(ModelError, match="holds none of"):
        check_weights(
            resolve_model("olmoearth", backend="synthetic", model_config={"weights": str(tmp_path)})
        )
