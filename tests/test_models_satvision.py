"""satvision: strict loading of the DeepSpeed/SimMIM file, the MODIS proxy fetch and its scaling, outputs, exports."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from fake_ee import installed_with_test_project  # noqa: E402
from model_cases.satvision import TINY, satvision_checkpoint, satvision_state  # noqa: E402

from rs_embed_dask import PointBuffer, TemporalSpec  # noqa: E402
from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError  # noqa: E402
from rs_embed_dask.core.specs import OutputSpec, SensorSpec  # noqa: E402
from rs_embed_dask.models import satvision as sv  # noqa: E402
from rs_embed_dask.models.satvision_encoder import GIANT, SatVisionArch, arch_from_state  # noqa: E402
from rs_embed_dask.providers.gee import GEEProvider  # noqa: E402
from rs_embed_dask.providers.synthetic import SyntheticProvider  # noqa: E402

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()
JUNE = TemporalSpec.range("2022-06-01", "2022-07-01")
ROI = PointBuffer(lon=8.5, lat=47.3, buffer_m=64_000)  # 128 x 128 px at 1000 m
SENSOR = SensorSpec(sv.COLLECTION, sv.BANDS, scale_m=1000, cloudy_pct=100, composite="mosaic")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("satvision")
    satvision_checkpoint(d / sv.HF_FILE)
    return d


def _cfg(weights: Path) -> dict[str, Any]:
    return {**TINY, "weights": str(weights)}


# -- weights ------------------------------------------------------------------------------------
def test_decoder_and_bookkeeping_dropped_encoder_strict(weights: Path) -> None:
    emb = sv.SatVisionEmbedder(_cfg(weights))
    emb.load("cpu")
    state = satvision_state()
    for k, v in emb.module.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert emb.arch.norm_period == 6  # the giant's extra norm every 6th block, read from the keys
    assert hasattr(emb.module.layers[2].blocks[5].norm3, "weight")


@pytest.mark.parametrize("edit", ["extra", "missing"])
def test_a_key_too_many_or_too_few_is_refused(tmp_path: Path, weights: Path, edit: str) -> None:
    ck = torch.load(weights / sv.HF_FILE, weights_only=True)
    if edit == "extra":
        ck["module"]["encoder.layers.0.blocks.0.attn.k_bias"] = torch.zeros(16)
    else:
        del ck["module"]["encoder.layers.1.blocks.1.mlp.fc2.bias"]
    torch.save(ck, tmp_path / sv.HF_FILE)
    with pytest.raises(ModelError, match="k_bias" if edit == "extra" else r"mlp\.fc2\.bias"):
        sv.SatVisionEmbedder({**TINY, "weights": str(tmp_path)}).load("cpu")


def test_configured_dims_must_match_the_file(weights: Path) -> None:
    with pytest.raises(ModelError, match="embed_dim 16"):
        sv.SatVisionEmbedder({**TINY, "embed_dim": 32, "weights": str(weights)}).load("cpu")


def test_buffers_absent_from_the_file_are_derived(tmp_path: Path, weights: Path) -> None:
    ck = torch.load(weights / sv.HF_FILE, weights_only=True)
    ck["module"] = {
        k: v for k, v in ck["module"].items() if not k.endswith(("attn_mask", "_table", "_index"))
    }
    torch.save(ck, tmp_path / sv.HF_FILE)
    a, b = sv.SatVisionEmbedder(_cfg(weights)), sv.SatVisionEmbedder({**TINY, "weights": str(tmp_path)})
    x = [np.random.default_rng(0).uniform(0, 1, (14, 128, 128)).astype(np.float32)]
    pa, pb = a.embed_inputs(x, output=POOLED), b.embed_inputs(x, output=POOLED)
    np.testing.assert_array_equal(pa[0].data, pb[0].data)


def test_arch_of_the_giant_layout_is_recovered() -> None:
    state = {
        "patch_embed.proj.weight": torch.zeros(512, 14, 4, 4),
        "layers.0.blocks.0.attn.relative_position_index": torch.zeros(64, 64),
    }
    for i, (d, h) in enumerate(zip(GIANT.depths, GIANT.num_heads, strict=True)):
        for j in range(d):
            state[f"layers.{i}.blocks.{j}.attn.logit_scale"] = torch.zeros(h, 1, 1)
            if (j + 1) % 6 == 0:
                state[f"layers.{i}.blocks.{j}.norm3.weight"] = torch.zeros(1)
    assert arch_from_state(state) == GIANT
    assert GIANT.num_features == 4096
    assert GIANT.grid_side == 4


def test_missing_weights_name_the_published_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv(sv.ENV_VAR, raising=False)
    with pytest.raises(ModelError, match=r"mp_rank_00_model_states\.pt") as info:
        sv.SatVisionEmbedder().load("cpu")
    assert sv.ENV_VAR in str(info.value)


# -- the MODIS proxy and its scaling ----------------------------------------------------------------
def test_proxy_scaling_follows_rs_embed() -> None:
    x = np.zeros((14, 1, 3), dtype=np.float32)
    x[0] = [[-100.0, 5000.0, 12000.0]]  # sur_refl DN
    lst_dn = np.array([[14500.0, 0.0, np.nan]], dtype=np.float32)  # 290 K, no data, NaN
    for k in sv.EMISSIVE_IDX:
        x[k] = lst_dn
    y = sv.scale_proxy(x)
    np.testing.assert_allclose(y[0, 0], [0.0, 0.5, 1.0])
    lo, hi = sv.EMISSIVE_MINS[0], sv.EMISSIVE_MAXS[0]
    assert y[5, 0, 0] == pytest.approx((290.0 - lo) / (hi - lo), abs=1e-6)
    assert y[5, 0, 1] == 0.0
    assert y[5, 0, 2] == 0.0
    # LST already in kelvin (largest magnitude <= 1000) is not scaled again
    x[5] = [[290.0, 250.0, 300.0]]
    assert sv.scale_proxy(x)[5, 0, 0] == pytest.approx((290.0 - lo) / (hi - lo), abs=1e-6)


def test_only_the_default_sensor_is_fetched() -> None:
    with pytest.raises(ModelError, match="get_embedding_from_data"):
        sv.SatVisionEmbedder.fetch_postprocess(
            np.zeros((14, 2, 2), np.float32), replace(SENSOR, bands=sv.BANDS[::-1])
        )
    with pytest.raises(SpecError, match=r"no band\(s\) \['4'\]"):
        SyntheticProvider.check_sensor(replace(SENSOR, bands=("1", "4")))
    with pytest.raises(ProviderError, match="one composite"):
        SyntheticProvider().fetch(ROI, JUNE, SENSOR, n_frames=2)


def test_synthetic_serves_the_proxy_band_by_band() -> None:
    p = SyntheticProvider()
    res = p.fetch(ROI, JUNE, SENSOR)
    assert res.data.shape == (14, 128, 128)
    refl = p.fetch(ROI, JUNE, replace(SENSOR, collection="MODIS/061/MOD09GA",
                                       bands=("sur_refl_b01", "sur_refl_b02", "sur_refl_b03", "sur_refl_b04",
                                              "sur_refl_b06", "sur_refl_b07"))).data  # fmt: skip
    lst = p.fetch(ROI, JUNE, replace(SENSOR, collection="MODIS/061/MOD21A1D", bands=("LST_1KM",))).data[0]
    np.testing.assert_array_equal(res.data[[0, 1, 2, 3, 4, 6]], refl)
    for k in sv.EMISSIVE_IDX:
        np.testing.assert_array_equal(res.data[k], lst)
    assert 250 / 0.02 < float(lst.mean()) < 320 / 0.02  # plausible kelvin / 0.02
    assert res.meta["source_collections_effective"] == ["MODIS/061/MOD09GA", "MODIS/061/MOD21A1D"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    yield from installed_with_test_project(monkeypatch)


def test_earth_engine_requests_mod09ga_and_mod21a1d(fake: Any) -> None:
    res = GEEProvider(retry_backoff_s=0.0).fetch(ROI, JUNE, SENSOR)
    assert len(fake.requests) == 2
    refl, lst = (r["image"] for r in fake.requests)
    assert refl.coll.id == "MODIS/061/MOD09GA"
    assert refl.bands == [
        "sur_refl_b01",
        "sur_refl_b02",
        "sur_refl_b03",
        "sur_refl_b04",
        "sur_refl_b06",
        "sur_refl_b07",
    ]
    assert lst.coll.id == "MODIS/061/MOD21A1D"
    assert lst.bands == ["LST_1KM"]
    for img in (refl, lst):
        assert img.coll.dates == ("2022-06-01", "2022-07-01")
        assert img.coll.filters == []  # rs-embed: cloudy_pct=None, no scene filter
        assert img.composite == "mosaic"
        assert img.coll.sorted_by == "system:time_start"
        assert img.float
        assert img.fill == 0.0
    assert fake.requests[0]["grid"]["affineTransform"]["scaleX"] == 1000.0
    np.testing.assert_array_equal(res.data, SyntheticProvider().fetch(ROI, JUNE, SENSOR).data)


# -- the model ------------------------------------------------------------------------------------
def test_get_embedding_end_to_end_equals_the_steps(weights: Path) -> None:
    from rs_embed_dask import get_embedding

    kw: dict[str, Any] = {"model_config": _cfg(weights), "backend": "synthetic", "device": "cpu"}
    pooled = get_embedding("satvision_toa", spatial=ROI, temporal=JUNE, output=POOLED, **kw)
    grid = get_embedding("satvision", spatial=ROI, temporal=JUNE, output=GRID, **kw)
    assert np.asarray(pooled.data).shape == (128,)
    assert np.asarray(grid.data).shape == (128, 4, 4)
    assert pooled.meta["norm_mode_effective"] == "unit"
    raw = SyntheticProvider().fetch(ROI, JUNE, SENSOR).data
    x = torch.from_numpy(sv.scale_proxy(raw)[None])
    emb = sv.SatVisionEmbedder(_cfg(weights))
    emb.load("cpu")
    with torch.no_grad():
        np.testing.assert_allclose(
            np.asarray(pooled.data), emb.module.pooled(x.clamp(0, 1))[0].numpy(), atol=1e-5
        )
        np.testing.assert_allclose(np.asarray(grid.data), emb.module.stage_maps(x)[0].numpy(), atol=1e-5)


def test_fetched_inputs_stay_unit_scaled_under_raw_norm(weights: Path) -> None:
    unit = np.random.default_rng(1).uniform(0, 1, (14, 64, 64)).astype(np.float32)
    emb = sv.SatVisionEmbedder({**_cfg(weights), "norm": "raw"})
    (fetched,) = emb.embed_inputs([unit], output=POOLED, contexts=[{"fetch_meta": {"composed_from": [{}]}}])
    (user,) = emb.embed_inputs([unit], output=POOLED, contexts=[{}])
    (auto,) = sv.SatVisionEmbedder(_cfg(weights)).embed_inputs([unit], output=POOLED)
    assert fetched.meta["norm_mode_effective"] == "unit"
    assert user.meta["norm_mode_effective"] == "raw"
    np.testing.assert_allclose(fetched.data, auto.data, atol=1e-6)
    assert not np.allclose(user.data, auto.data, atol=1e-3)  # raw: reflectance / 100 of unit values


def test_pooled_is_model_pooled_whatever_the_pooling(weights: Path) -> None:
    emb = sv.SatVisionEmbedder(_cfg(weights))
    x = [np.random.default_rng(2).uniform(0, 1, (14, 128, 128)).astype(np.float32)]
    (mean,) = emb.embed_inputs(x, output=POOLED)
    (mx,) = emb.embed_inputs(x, output=OutputSpec.pooled("max"))
    np.testing.assert_array_equal(mean.data, mx.data)
    assert mean.meta["pooled_source"] == "model_pooled"


def test_rectangle_keeps_the_squares_pooled_vector_and_crops_the_grid(weights: Path) -> None:
    from rs_embed_dask import BBox, get_embedding

    kw: dict[str, Any] = {
        "model_config": _cfg(weights),
        "backend": "synthetic",
        "device": "cpu",
        "temporal": JUNE,
    }
    rect = BBox(8.0, 47.0, 9.0, 47.3)  # ~111 x 49 px in EPSG:3857 at 1000 m: fetched as its 111 px square
    p = get_embedding("satvision", spatial=rect, output=POOLED, **kw)
    g = get_embedding("satvision", spatial=rect, output=GRID, **kw)
    gd = np.asarray(g.data)
    assert gd.shape[0] == 128
    assert gd.shape[1] < gd.shape[2] == 4
    assert np.asarray(p.data).shape == (128,)
    assert not np.allclose(
        np.asarray(p.data), gd.mean(axis=(1, 2)), atol=1e-3
    )  # not pooled from the cut grid


def test_describe_aliases_and_semantics(weights: Path) -> None:
    from rs_embed_dask import describe_model, list_models
    from rs_embed_dask.resolve import resolve_model

    assert "satvision" in list_models()
    d = describe_model("satvision_toa")
    assert d["model"] == "satvision"
    assert d["inputs"] == {"collection": "MODIS/061/MOD021KM", "bands": list(sv.BANDS)}
    assert d["defaults"]["scale_m"] == 1000
    assert d["defaults"]["cloudy_pct"] == 100
    assert d["defaults"]["composite"] == "mosaic"
    assert d["defaults"]["image_size"] == 128
    assert d["defaults"]["emissive_mins"] == list(sv.EMISSIVE_MINS)
    assert d["embedding_dim"] == 4096
    assert d["output"] == ["pooled", "grid"]
    assert "MOD09GA" in d["proxy"]["reflective"]
    assert "MOD21A1D" in d["proxy"]["emissive"]
    assert d["weights"]["env_var"] == "RS_EMBED_SATVISION_TOA_CKPT"
    rm = resolve_model("satvision_toa", backend="synthetic", model_config=_cfg(weights))
    assert rm.canonical == "satvision"
    assert rm.n_frames is None
    assert rm.temporal_semantics == "custom:satvision"
    with pytest.raises(ModelError, match="norm"):
        sv.SatVisionEmbedder({"norm": "zscore"})


def test_memory_per_item_is_the_widest_stage() -> None:
    emb = sv.SatVisionEmbedder()
    giant = emb.memory_per_item((14, 128, 128))
    assert 30e6 < giant < 200e6  # stage 0 of the giant: 1024 tokens x 512 channels, ~9 copies, windows
    assert emb.memory_per_item((14, 512, 512)) > giant  # the raw input counts too
    small = sv.SatVisionEmbedder({"embed_dim": 16, "depths": [2, 2, 6, 2], "num_heads": [1, 2, 2, 4]})
    assert small.memory_per_item((14, 128, 128)) < giant / 5


@pytest.mark.cluster
def test_export_on_a_local_cluster_equals_get_embedding(weights: Path, tmp_path: Path) -> None:
    from _exports import assert_row_is_get_embedding, threaded_export

    from rs_embed_dask import load_export

    rois = [PointBuffer(lon=8.5 + 0.5 * i, lat=47.3, buffer_m=32_000) for i in range(3)]
    out = tmp_path / "sv.npz"
    man = threaded_export(out, {"satvision_toa": _cfg(weights)}, rois, JUNE)
    assert man["status"] == "ok"
    res = load_export(out)
    name = next(iter(res.models))
    emb = np.asarray(res.embedding(name))
    assert emb.shape == (3, 128)
    inputs = np.asarray(res.models[name].inputs)
    assert inputs.shape == (3, 14, 64, 64)
    assert inputs.min() >= 0.0
    assert inputs.max() <= 1.0
    assert_row_is_get_embedding(emb[2], "satvision", rois[2], JUNE, _cfg(weights))


def test_small_arch_type() -> None:
    arch = sv.SatVisionEmbedder({"embed_dim": 16, "depths": (2, 2, 6, 2), "num_heads": (1, 2, 2, 4)}).arch
    assert isinstance(arch, SatVisionArch)
    assert arch.num_features == 128
    with pytest.raises(ModelError, match="one entry per stage"):
        sv.SatVisionEmbedder({"depths": (2, 2), "num_heads": (1, 2, 2, 4)})


def test_user_arrays_of_raw_toa_go_through_get_embedding_from_data(weights: Path) -> None:
    from model_cases.satvision import _raw, satvision_golden

    from rs_embed_dask import UserData, get_embedding_from_data

    raw = _raw()[0, :, :64, :64]  # reflectance in percent, kelvin: rs-embed's "raw" branch of norm="auto"
    e = get_embedding_from_data(
        "satvision",
        UserData(raw, collection=sv.COLLECTION, bands=sv.BANDS),
        device="cpu",
        model_config=_cfg(weights),
    )
    emb = sv.SatVisionEmbedder(_cfg(weights))
    emb.load("cpu")
    x = torch.nn.functional.interpolate(torch.from_numpy(satvision_golden(raw[None])), size=(128, 128),
                                        mode="bilinear", align_corners=False)  # fmt: skip
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(e.data), emb.module.pooled(x)[0].numpy(), atol=1e-5)
    assert e.meta["norm_mode_effective"] == "auto"
