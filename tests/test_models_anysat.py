"""anysat: rs-embed's settings, frames and dates, strict loading, output modes and the fetch of 8 equal sub-windows."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from model_cases.anysat import TINY, write_checkpoint

from rs_embed_dask import describe_model, list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class
from rs_embed_dask.core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.models import anysat
from rs_embed_dask.models import anysat_config as conf
from rs_embed_dask.models.anysat_encoder import (
    MODALITIES,
    AnySatArch,
    AnySatEncoder,
    rpe_bucket_ids,
    sincos_2d,
)

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*conf.ENV.values(), conf.ENV_VAR):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("anysat") / "AnySat.pth")


def _emb(ckpt: Path, **cfg: object) -> anysat.AnySatEmbedder:
    e = anysat.AnySatEmbedder({**TINY, "weights": str(ckpt), **cfg})
    e.load("cpu")
    return e


def _series(t: int = 8, hw: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, size=(t, 10, hw, hw)).astype(np.float32)


def _ctx(start: str, end: str, **extra: object) -> dict[str, object]:
    return {"temporal": TemporalSpec.range(start, end), **extra}


# -- registration, description, settings ----------------------------------------------------------
def test_listed_without_aliases_and_described_as_rs_embed() -> None:
    assert "anysat" in list_models()
    assert canonical_model_name("AnySat") == "anysat"
    d = describe_model("anysat")
    assert d["inputs"]["collection"] == "COPERNICUS/S2_SR_HARMONIZED"
    assert d["inputs"]["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    want = {"image_size": 24, "n_frames": 8, "scale_m": 10, "cloudy_pct": 30, "composite": "median"}
    assert {k: d["defaults"][k] for k in want} == want
    assert d["defaults"]["normalization"] == "per_tile_zscore"
    assert (d["embedding_dim"], d["grid_dim"]) == (768, 1536)  # dense grid: patch token + sub-patch token
    assert d["weights"]["source"] == "huggingface: g-astruc/AnySat/models/AnySat.pth"
    assert d["side_inputs"] == {"doy0_values": d["side_inputs"]["doy0_values"]}
    assert get_model_class("anysat").square_fetch


def test_model_config_beats_rs_embed_variables_which_beat_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_ANYSAT_IMG", "32")
    monkeypatch.setenv("RS_EMBED_ANYSAT_GRID_MODE", "patches")
    monkeypatch.setenv("RS_EMBED_ANYSAT_FRAMES", "4")
    monkeypatch.setenv("RS_EMBED_ANYSAT_POOLED_SOURCE", "native")
    s = conf.resolve_settings({"image_size": 16})
    assert (s.image_size, s.grid_feature_mode, s.n_frames, s.pooled_source) == (16, "patch", 4, "tile")
    e = anysat.AnySatEmbedder({"variant": "b"})
    assert e.frame_count(None) == 4
    assert e.temporal_semantics(None) == "multi:4"
    assert e.resolve_input_size() == 32
    assert e.describe()["grid_dim"] == 768


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"variant": "large"}, r"anysat model_config 'variant' must be one of \['b', 'base'\]"),
        ({"grid_feature_mode": "cls"}, "grid_feature_mode"),
        ({"pooled_source": "cls"}, "pooled_source"),
        ({"normalization": "minmax"}, "normalization"),
        ({"n_frames": 0}, "'n_frames' must be a positive integer"),
        ({"embed_dim": 40}, "multiple of 32"),
    ],
)
def test_config_errors(cfg: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        anysat.AnySatEmbedder(cfg)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_ANYSAT_NORM", "minmax")
    with pytest.raises(ModelError, match=r"\$RS_EMBED_ANYSAT_NORM"):
        anysat.AnySatEmbedder({})


# -- frames and day-of-year side input ------------------------------------------------------------
def test_doy_of_rs_embed_default_window_and_short_windows() -> None:
    # values of rs-embed 0.3.1's _frame_doy0_sequence for the same windows
    days = conf.doy0_sequence(date(2022, 6, 1), date(2022, 9, 1), 8)
    assert days == [156, 168, 179, 191, 202, 214, 225, 237]
    assert conf.doy0_sequence(date(2022, 1, 1), date(2023, 1, 1), 2) == [91, 273]
    # a 3-day window still gives 8 one-day bins (rs-embed's split_date_range), midpoints at noon -> that day
    assert conf.doy0_sequence(date(2022, 12, 30), date(2023, 1, 2), 8) == [363, 363, 363, 364, 364, 364, 0, 0]
    assert len(conf.equal_bins(date(2022, 12, 30), date(2023, 1, 2), 8)) == 8


def test_side_input_follows_the_input_frames_and_the_window(ckpt: Path) -> None:
    e = _emb(ckpt)
    sides = e.side_inputs(_series(4), _ctx("2022-01-01", "2023-01-01"))
    np.testing.assert_array_equal(sides["doy0_values"], [45, 136, 227, 319])
    composite = e.side_inputs(_series(1)[0], None)  # (C, H, W): 8 frames of rs-embed's default window
    assert composite["doy0_values"].tolist() == [156, 168, 179, 191, 202, 214, 225, 237]


def test_dates_change_the_embedding_and_are_recorded(ckpt: Path) -> None:
    e = _emb(ckpt)
    x = _series()
    (a,) = e.embed_inputs([x], output=POOLED, contexts=[_ctx("2022-01-01", "2022-03-01")])
    (b,) = e.embed_inputs([x], output=POOLED, contexts=[_ctx("2022-06-01", "2022-08-01")])
    assert not np.allclose(a.data, b.data, atol=1e-4)
    assert a.meta["doy0_values"] == conf.doy0_sequence(date(2022, 1, 1), date(2022, 3, 1), 8)
    assert all(isinstance(v, int) for v in a.meta["doy0_values"])
    assert a.meta["n_frames"] == 8


def test_multi_frame_input_shape_and_composite_repeat(ckpt: Path) -> None:
    e = _emb(ckpt)
    x = _series()
    assert e.preprocess(torch.from_numpy(x[None])).shape == (1, 8, 10, 8, 8)
    comp = x[3]
    (rep,) = e.embed_inputs([np.repeat(comp[None], 8, axis=0)], output=POOLED)
    (one,) = e.embed_inputs([comp], output=POOLED)  # a (C, H, W) composite is repeated n_frames times
    np.testing.assert_allclose(one.data, rep.data, atol=1e-6)
    with pytest.raises(ModelError, match=r"expects \(T, 10, H, W\)"):
        e.embed_inputs([np.zeros((8, 4, 8, 8), np.float32)], output=POOLED)


def test_empty_frames_are_kept_back_filled_and_no_data_is_zero(ckpt: Path) -> None:
    """rs-embed's rule: an empty sub-window holds the whole-window composite; every frame keeps its own date."""
    e = _emb(ckpt)
    x = _series()
    x[2] = x[5] = x[0]  # two sub-windows back-filled by the provider
    (out,) = e.embed_inputs([x], output=POOLED, contexts=[_ctx("2022-06-01", "2022-09-01")])
    assert (out.meta["n_frames"], out.meta["n_backfilled_frames"], out.meta["n_distinct_frames"]) == (8, 2, 6)
    nan = x.copy()
    nan[4] = np.nan  # a frame without data reads as zeros (rs-embed's nan_to_num), it is not dropped
    zero = x.copy()
    zero[4] = 0.0
    (a,) = e.embed_inputs([nan], output=GRID)
    (b,) = e.embed_inputs([zero], output=GRID)
    np.testing.assert_array_equal(a.data, b.data)


# -- preprocessing ------------------------------------------------------------------------------------
def test_rectangles_are_padded_then_resized_before_the_zscore(ckpt: Path) -> None:
    import torch.nn.functional as F

    e = _emb(ckpt)
    x = _series(2, 8)[:, :, :5, :]  # 5 x 8: reflect-pad rows 1 / 2, then bilinear to 8 x 8 (already 8)
    out = e.preprocess(torch.from_numpy(x[None]))
    sq = F.pad(torch.from_numpy(x).reshape(-1, 1, 5, 8), (0, 0, 1, 2), mode="reflect").reshape(1, 2, 10, 8, 8)
    mu = sq.double().mean(dim=(1, 3, 4), keepdim=True)
    sd = sq.double().std(dim=(1, 3, 4), unbiased=False, keepdim=True)
    np.testing.assert_allclose(out.numpy(), ((sq - mu) / sd).float().numpy(), atol=1e-6)
    unit = _emb(ckpt, normalization="unit_scale").preprocess(torch.full((1, 1, 10, 8, 8), 12000.0))
    assert float(unit.max()) == 1.0


# -- outputs ---------------------------------------------------------------------------------------------
def test_output_modes(ckpt: Path) -> None:
    x = _series()
    dense = _emb(ckpt)
    patch = _emb(ckpt, grid_feature_mode="patch")
    tile = _emb(ckpt, pooled_source="tile")
    (g_dense,) = dense.embed_inputs([x], output=GRID)
    (g_patch,) = patch.embed_inputs([x], output=GRID)
    assert g_dense.data.shape == (64, 8, 8)  # 2 x 32: patch token then sub-patch token per pixel
    assert g_patch.data.shape == (32, 8, 8)
    np.testing.assert_allclose(g_dense.data[:32], g_patch.data, atol=1e-5)
    (p,) = dense.embed_inputs([x], output=POOLED)
    np.testing.assert_allclose(p.data, g_patch.data.mean(axis=(1, 2)), atol=1e-5)
    (pmax,) = dense.embed_inputs([x], output=OutputSpec.pooled("max"))
    np.testing.assert_allclose(pmax.data, g_patch.data.max(axis=(1, 2)), atol=1e-5)
    (t,) = tile.embed_inputs([x], output=POOLED)
    (tmax,) = tile.embed_inputs([x], output=OutputSpec.pooled("max"))
    assert t.data.shape == (32,)
    np.testing.assert_array_equal(t.data, tmax.data)  # the tile token: the pooling is not used
    assert not np.allclose(t.data, p.data, atol=1e-3)


def test_fetch_scale_is_the_patch_size(ckpt: Path) -> None:
    e = _emb(ckpt)
    x = _series()
    s20 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=anysat.S2_BANDS, scale_m=20)
    (dense,) = e.embed_inputs([x], output=GRID, contexts=[{"sensor": s20}])
    patch_e = _emb(ckpt, grid_feature_mode="patch")
    (patch,) = patch_e.embed_inputs([x], output=GRID, contexts=[{"sensor": s20}])
    assert patch.data.shape == (32, 4, 4)  # 2 x 2-pixel patches
    assert dense.data.shape == (64, 8, 8)
    assert patch.meta["patch_size_m"] == 20
    # every pixel of a patch carries that patch's token in the dense grid's first half
    np.testing.assert_allclose(dense.data[:32, ::2, ::2], patch.data, atol=1e-5)
    np.testing.assert_allclose(dense.data[:32, 1::2, 1::2], patch.data, atol=1e-5)
    s15 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=anysat.S2_BANDS, scale_m=15)
    with pytest.raises(ModelError, match="multiple of 10"):
        e.embed_inputs([x], output=GRID, contexts=[{"sensor": s15}])


def test_pooled_roi_of_a_fetched_square_pools_its_own_patches(ckpt: Path) -> None:
    e = _emb(ckpt)
    x = _series()
    window = [0.25, 0.75, 0.0, 1.0]
    ctx = {"fetch_meta": {"roi_window_geo": window}}
    (p,) = e.embed_inputs([x], output=POOLED, contexts=[ctx])
    (g,) = _emb(ckpt, grid_feature_mode="patch").embed_inputs([x], output=GRID)
    np.testing.assert_allclose(p.data, g.data[:, 2:6, :].mean(axis=(1, 2)), atol=1e-5)
    (t,) = e.embed_inputs([x], output=POOLED, contexts=[{**ctx, "tile": (0, 8, 0, 8)}])  # a tile: no crop
    np.testing.assert_allclose(t.data, g.data.mean(axis=(1, 2)), atol=1e-5)
    assert _emb(ckpt, grid_feature_mode="patch").roi_pooling == "grid"  # then the engine crops the grid
    assert e.roi_pooling == "model"


# -- the encoder -------------------------------------------------------------------------------------
def test_release_modules_and_keys() -> None:
    with torch.device("meta"):
        sd = AnySatEncoder(AnySatArch()).state_dict()
    assert {k.split(".")[0] for k in sd if k.startswith("projector_")} == {
        f"projector_{m}" for m in MODALITIES
    }
    assert tuple(sd["projector_s2.patch_embed.inconv.0.weight"].shape) == (96, 10)
    assert tuple(sd["spatial_encoder.predictor_blocks.0.attn.rpe_k.lookup_table_weight"].shape) == (1, 64, 8)
    assert tuple(sd["blocks.6.attn.q_learned"].shape) == (1, 1, 768)
    assert "projector_s1.patch_embed.in_norm.weight" not in sd  # only s2 normalises its inputs
    assert sum(v.numel() for v in sd.values()) == 125_905_447  # the release's AnyModule


def test_irpe_buckets_and_position_code() -> None:
    ids = rpe_bucket_ids(3)
    assert ids.shape == (10, 10)
    assert (ids[0] == 7).all()  # the class token's bucket
    assert (ids[:, 0] == 7).all()
    # from cell (0, 0): distances 0, 1, 2 / 1, 1.41, 2.24 / 2, 2.24, 2.83 round to 0 1 2 / 1 1 2 / 2 2 3;
    # beyond 1.9 the log index maps 2 and 3 to 2; plus 3
    assert ids[1, 1:].tolist() == [3, 4, 5, 4, 4, 5, 5, 5, 5]
    assert rpe_bucket_ids(24)[1, 1:].max() == 6  # far cells saturate at beta = 3.8 -> 3
    pos = sincos_2d(8, 2, 10.0)
    assert pos.shape == (5, 8)
    assert (pos[0] == 0).all()
    np.testing.assert_allclose(pos[2, :2].numpy(), [np.sin(10.0), np.sin(0.1)], rtol=1e-6)  # column 1 first
    np.testing.assert_allclose(pos[3, 4:6].numpy(), [np.sin(10.0), np.sin(0.1)], rtol=1e-6)  # row 1 second


# -- weights -------------------------------------------------------------------------------------------
def test_checkpoint_loads_strictly_and_drops_nothing(tmp_path: Path, ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)
    extra = tmp_path / "extra" / "AnySat.pth"
    extra.parent.mkdir()
    torch.save({"state_dict": {**state["state_dict"], "decoder.weight": torch.zeros(2)}}, extra)
    with pytest.raises(ModelError, match=r"unexpected keys \['decoder.weight'\]"):
        anysat.AnySatEmbedder({**TINY, "weights": str(extra)}).load("cpu")
    missing = tmp_path / "missing.pth"
    sd = dict(state["state_dict"])
    del sd["projector_naip.patch_embed.weight"]  # a projector the S2 path never runs: still required
    torch.save({"state_dict": sd}, missing)
    with pytest.raises(ModelError, match=r"projector_naip\.patch_embed\.weight"):
        anysat.AnySatEmbedder({**TINY, "weights": str(missing)}).load("cpu")
    with pytest.raises(ModelError, match="does not match"):
        anysat.AnySatEmbedder({**TINY, "embed_dim": 64, "weights": str(ckpt)}).load("cpu")


def test_rs_embed_checkpoint_variables(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_ANYSAT_CKPT", str(ckpt))
    with pytest.raises(ModelError, match="fewer than 52428800"):  # rs-embed's 50 MiB sanity check
        conf.find_checkpoint("anysat", {})
    monkeypatch.setenv("RS_EMBED_ANYSAT_CKPT_MIN_BYTES", "1000")
    assert conf.find_checkpoint("anysat", {}) == ckpt
    monkeypatch.delenv("RS_EMBED_ANYSAT_CKPT")
    # a copy rs-embed downloaded into its own cache (hub layout under RS_EMBED_ANYSAT_CACHE_DIR)
    repo = tmp_path / "rscache" / "models--my--AnySat"
    snap = repo / "snapshots" / ("a" * 40) / "models"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "AnySat.pth").write_bytes(ckpt.read_bytes())
    monkeypatch.setenv("RS_EMBED_ANYSAT_CACHE_DIR", str(tmp_path / "rscache"))
    monkeypatch.setenv("RS_EMBED_ANYSAT_HF_REPO", "my/AnySat")
    assert conf.find_checkpoint("anysat", {}) == snap / "AnySat.pth"
    assert (
        anysat.AnySatEmbedder({}).describe()["weights"]["source"]
        == "huggingface: my/AnySat/models/AnySat.pth"
    )


def test_offline_without_weights_fails_fast_and_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("RS_EMBED_ANYSAT_CACHE_DIR", str(tmp_path / "rs"))
    t0 = time.perf_counter()
    with pytest.raises(
        ModelError, match=r"No weights found for model 'anysat'.*g-astruc/AnySat/models/AnySat\.pth"
    ):
        anysat.AnySatEmbedder({}).load("cpu")
    assert time.perf_counter() - t0 < 5


# -- the engine: 8 equal sub-windows, one fetch ----------------------------------------------------------
def test_pipeline_fetches_eight_equal_sub_windows(ckpt: Path) -> None:
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model, with_frames

    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    rm = with_frames(
        resolve_model("anysat", backend="synthetic", model_config={**TINY, "weights": str(ckpt)}), t
    )
    assert (rm.n_frames, rm.temporal_semantics) == (8, "multi:8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fetch_input(rm, PointBuffer(8.5, 47.3, 120.0), t)
    assert got.data.shape == (8, 10, 24, 24)
    starts = [f["start"] for f in got.meta["frames"]]
    assert starts == ["2022-06-01", "2022-06-12", "2022-06-24", "2022-07-05", "2022-07-17", "2022-07-28",
                      "2022-08-09", "2022-08-20"]  # fmt: skip


def test_get_embedding_tiles_a_large_roi_into_24_pixel_tiles(ckpt: Path) -> None:
    from rs_embed_dask import get_embedding

    cfg = {"embed_dim": 32, "depth": 1, "num_heads": 2, "weights": str(ckpt)}  # image_size 24 (rs-embed's)
    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = get_embedding(
            "anysat", spatial=PointBuffer(8.5, 47.3, 240.0), temporal=t, output=GRID, backend="synthetic",
            model_config=cfg, device="cpu",
        )  # fmt: skip
        pooled = get_embedding(
            "anysat", spatial=PointBuffer(8.5, 47.3, 240.0), temporal=t, backend="synthetic",
            model_config=cfg, device="cpu", input_prep="resize",
        )  # fmt: skip
    assert np.asarray(grid.data).shape == (64, 48, 48)  # 2 x 2 tiles of 24 px, dense grid
    assert np.asarray(pooled.data).shape == (32,)


def test_memory_estimate_grows_with_frames_and_size() -> None:
    e = anysat.AnySatEmbedder({})
    base = e.memory_per_item((8, 10, 24, 24))
    assert 100e6 < base < 400e6  # the 768-d base at 24 px and 8 frames: ~0.2 GB per input
    assert e.memory_per_item((16, 10, 24, 24)) > base
    assert anysat.AnySatEmbedder({"image_size": 48}).memory_per_item((8, 10, 24, 24)) > 3 * base


@pytest.mark.cluster
def test_export_on_a_local_cluster_matches_get_embedding(ckpt: Path, tmp_path: Path) -> None:
    """The series of each ROI travels as one ``(8, 10, H, W)`` input through the Dask export."""
    import distributed

    from rs_embed_dask import (
        ExportConfig,
        ExportModelRequest,
        ExportTarget,
        export_batch,
        get_embedding,
        load_export,
    )

    rois = [PointBuffer(lon=8.40 + 0.01 * i, lat=47.30, buffer_m=40) for i in range(3)]  # 8 x 8 px
    temporal = TemporalSpec.range("2022-04-01", "2022-10-01")
    cfg = {**TINY, "weights": str(ckpt)}
    out = tmp_path / "anysat.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cl,
            distributed.Client(cl, set_as_default=False) as c,
        ):
            man = export_batch(
                spatials=rois, temporal=temporal, models=[ExportModelRequest("anysat", model_config=cfg)],
                target=ExportTarget.combined(str(out)), backend="synthetic",
                config=ExportConfig(show_progress=False), client=c,
            )  # fmt: skip
        ref = get_embedding(
            "anysat", spatial=rois[2], temporal=temporal, model_config=cfg, backend="synthetic", device="cpu"
        )
    assert man["status"] == "ok"
    res = load_export(out)
    emb = np.asarray(res.embedding("anysat"))
    assert emb.shape == (3, 32)
    assert np.asarray(res.models["anysat"].inputs).shape == (3, 8, 10, 8, 8)
    np.testing.assert_allclose(emb[2], np.asarray(ref.data), atol=1e-5)


def test_preflight_weights_check(ckpt: Path, tmp_path: Path) -> None:
    from rs_embed_dask.resolve import resolve_model
    from rs_embed_dask.validation.preflight import check_weights

    check_weights(
        resolve_model("anysat", backend="synthetic", model_config={**TINY, "weights": str(ckpt.parent)})
    )
    with pytest.raises(ModelError, match=r"holds none of \['AnySat.pth'"):
        check_weights(resolve_model("anysat", backend="synthetic", model_config={"weights": str(tmp_path)}))
