"""prithvi and the torchgeo families beyond the common contract.

Multi-frame packaging, temporal/location coordinates, checkpoint layouts and
where weights are looked for.  Weights are tiny random checkpoints written in
the published layouts (see ``tests/model_cases``); only the Hugging Face
download is replaced (the network boundary).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
from model_cases import prithvi as prithvi_case
from model_cases import torchgeo as tg_case

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.models import torchgeo_models as tgm
from rs_embed_dask.models.prithvi import PrithviEmbedder, frame_coords, sincos_3d

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpts")


@pytest.fixture(scope="module")
def prithvi_cfg(ckpt_dir) -> dict:
    return {**prithvi_case.TINY, "weights": str(prithvi_case.write_checkpoint(ckpt_dir))}


def _frames(seed: int = 0, t: int = 4, hw: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 5000, size=(t, 6, hw, hw)).astype(np.float32)


def _ctx(lon: float = 10.0, lat: float = 45.0, year: int = 2022) -> dict:
    return {
        "spatial": PointBuffer(lon, lat, 500),
        "temporal": TemporalSpec.range(f"{year}-06-01", f"{year}-09-28"),
        "sensor": SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2",), scale_m=30),
        "fetch_meta": {},
    }


# -- prithvi -------------------------------------------------------------------------------
def _numpy_sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(pos.astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_sincos_3d_matches_the_published_layout():
    """Width, height and time take 6/16, 6/16, 4/16 of the channels; token order (t, h, w); CLS row 0."""
    dim, t, h, w = 32, 3, 2, 4
    ew, eh, et = (_numpy_sincos_1d(d, np.arange(n)) for d, n in ((12, w), (12, h), (8, t)))
    ref = np.zeros((1 + t * h * w, dim))
    i = 1
    for ti in range(t):
        for hi in range(h):
            for wi in range(w):
                ref[i] = np.concatenate([ew[wi], eh[hi], et[ti]])
                i += 1
    np.testing.assert_allclose(sincos_3d(dim, t, h, w)[0].numpy(), ref, atol=1e-6)


def test_frame_coords_from_fetch_meta_and_from_temporal():
    ctx = _ctx()
    ctx["fetch_meta"] = {
        "frames": [{"start": "2022-06-01", "end": "2022-06-29"}, {"start": "2022-12-20", "end": "2023-01-20"}]
    }
    temporal, location = frame_coords(ctx, 2)
    # bin midpoints start + (end - start) // 2: 2022-06-15 (day 166) and 2023-01-04 (day 4)
    np.testing.assert_array_equal(temporal, [[2022, 166], [2023, 4]])
    np.testing.assert_allclose(location, [45.0, 10.0])
    ctx["fetch_meta"] = {}
    temporal, _ = frame_coords(ctx, 4)  # 119 days in 4 equal bins of 29, 30, 30 and 30 days
    starts = [date(2022, 6, 1), date(2022, 6, 30), date(2022, 7, 30), date(2022, 8, 29)]
    assert [int(d) for d in temporal[:, 1]] == [
        (s.toordinal() - date(2022, 1, 1).toordinal()) + 1 + off
        for s, off in zip(starts, (14, 15, 15, 15), strict=True)
    ]
    assert frame_coords(None, 4) == (None, None)


def test_prithvi_multiframe_shapes_and_meta(prithvi_cfg):
    emb = PrithviEmbedder(prithvi_cfg)
    assert emb.n_frames == 4
    x = _frames()
    (g,) = emb.embed_inputs([x], output=GRID, contexts=[_ctx()])
    assert g.data.shape == (32, 2, 2)
    assert g.meta["n_frames"] == 4
    assert len(g.meta["temporal_coords"]) == 4
    assert g.meta["location_coords"] == pytest.approx([45.0, 10.0])
    (three,) = emb.embed_inputs([x[:3]], output=POOLED)  # another T: position embedding recomputed
    assert three.data.shape == (32,)
    assert np.isfinite(three.data).all()
    with pytest.raises(ModelError, match=r"\(T, 6, H, W\)"):
        emb.embed_inputs([x[:, :5]], output=POOLED)


def test_prithvi_coordinates_change_tl_embeddings_only_when_used(prithvi_cfg):
    x = _frames(1)
    tl = PrithviEmbedder(prithvi_cfg)
    a = tl.embed_inputs([x], output=POOLED, contexts=[_ctx(year=2022)])[0].data
    b = tl.embed_inputs([x], output=POOLED, contexts=[_ctx(year=2019)])[0].data
    c = tl.embed_inputs([x], output=POOLED, contexts=[_ctx(lon=-70.0, lat=-10.0)])[0].data
    none = tl.embed_inputs([x], output=POOLED)[0].data
    assert not np.allclose(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, none)
    off = PrithviEmbedder({**prithvi_cfg, "use_coords": False})
    np.testing.assert_allclose(
        off.embed_inputs([x], output=POOLED, contexts=[_ctx()])[0].data, none, atol=1e-6
    )
    # a batch mixing inputs with and without coordinates equals single calls
    batch = tl.embed_inputs([x, x], output=POOLED, contexts=[_ctx(year=2019), {}])
    np.testing.assert_allclose(batch[0].data, b, atol=1e-5)
    np.testing.assert_allclose(batch[1].data, none, atol=1e-5)


def test_prithvi_checkpoint_is_loaded_strictly(ckpt_dir, prithvi_cfg):
    state = torch.load(prithvi_cfg["weights"], weights_only=True)
    state["encoder.extra.weight"] = torch.zeros(1)
    bad = ckpt_dir / "extra.pt"
    torch.save(state, bad)
    with pytest.raises(ModelError, match="does not fit prithvi"):
        PrithviEmbedder({**prithvi_case.TINY, "weights": str(bad)}).load("cpu")
    # a non-TL checkpoint lacks the coordinate encoders of a TL variant
    plain = prithvi_case.write_checkpoint(ckpt_dir, coords=False)
    with pytest.raises(ModelError, match="temporal_embed_enc"):
        PrithviEmbedder({**prithvi_case.TINY, "weights": str(plain)}).load("cpu")
    emb = PrithviEmbedder({**prithvi_case.TINY, "variant": "300", "weights": str(plain)})
    emb.load("cpu")
    loaded = {f"encoder.{k}": v for k, v in emb.module.state_dict().items()}
    ref = torch.load(plain, weights_only=True)
    for k, v in loaded.items():
        if k == "encoder.pos_embed":  # fixed; recomputed for the 32-px input (2 x 2 patches, 4 frames)
            torch.testing.assert_close(v, sincos_3d(32, 4, 2, 2))
        else:
            torch.testing.assert_close(v, ref[k])


@pytest.mark.parametrize(
    ("variant", "dim", "grid"),
    [("100_tl", 768, 14), ("prithvi_eo_v2_300", 1024, 14), ("300_tl", 1024, 14), ("600_tl", 1280, 16)],
)
def test_prithvi_variants_describe(variant, dim, grid):
    d = PrithviEmbedder({"variant": variant}).describe()
    assert d["embedding_dim"] == dim
    assert d["grid"].startswith(f"({dim}, {grid}, {grid})")
    assert d["defaults"]["scale_m"] == 30
    assert d["inputs"]["bands"] == ["B2", "B3", "B4", "B8A", "B11", "B12"]
    assert d["weights"].startswith("Hugging Face ibm-nasa-geospatial/Prithvi-EO-2.0-")


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"variant": "1b"}, "'variant' must be one of"),
        ({"normalization": "zscore"}, "'normalization' must be"),
        ({"image_size": 100}, "multiple of the patch size 16"),
        ({"depth": 0}, "'depth' must be a positive integer"),
    ],
)
def test_prithvi_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        PrithviEmbedder(cfg)


def test_prithvi_hls_stats_normalisation():
    emb = PrithviEmbedder({"normalization": "hls_stats"})
    x = torch.tensor([1087.0 + 2248.0, 1342.0, 1433.0 - 2178.0, 2734.0, 1958.0, 1363.0 + 1049.0 * 2]).view(
        1, 1, 6, 1, 1
    )
    np.testing.assert_allclose(emb.preprocess(x).flatten().numpy(), [1, 0, -1, 0, 0, 2], atol=1e-6)


# -- where weights are looked for ------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Hugging Face download and an empty torch hub cache."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline and not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("RS_EMBED_PRITHVI_WEIGHTS", "RS_EMBED_SSL4EO_S2_VIT_WEIGHTS", "RS_EMBED_CROMA_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_weights_say_where_they_were_looked_for(offline):
    with pytest.raises(ModelError, match="RS_EMBED_PRITHVI_WEIGHTS") as err:
        PrithviEmbedder(prithvi_case.TINY).load("cpu")
    assert "ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL/Prithvi_EO_V2_100M_TL.pt" in str(err.value)
    with pytest.raises(ModelError, match="RS_EMBED_CROMA_WEIGHTS") as err:
        tgm.CROMAEmbedder(tg_case.CROMA_CFG).load("cpu")
    assert str(offline / "CROMA_base-0238d814.pt") in str(err.value)
    assert "torchgeo/croma/CROMA_base-0238d814.pt@387883f08af79d777167519c57cd826eda89a16f" in str(err.value)


def test_torch_hub_cache_and_env_var_are_used(offline, monkeypatch, tmp_path):
    offline.mkdir(parents=True)
    cfg = tg_case.vit_setup(offline)  # written under torchgeo's own file name in the hub cache
    arch = {k: v for k, v in cfg.items() if k != "weights"}
    emb = tgm.SSL4EOViTEmbedder(arch)
    assert emb.checkpoint() == Path(cfg["weights"])
    emb.load("cpu")
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    moved = elsewhere / Path(cfg["weights"]).name
    Path(cfg["weights"]).rename(moved)
    monkeypatch.setenv("RS_EMBED_SSL4EO_S2_VIT_WEIGHTS", str(elsewhere))  # a folder holding the file
    assert tgm.SSL4EOViTEmbedder(arch).checkpoint() == moved


def test_hf_url_parts():
    from torchgeo.models import Panopticon_Weights

    repo, rev, name = tgm._hf_parts(Panopticon_Weights.VIT_BASE14.url)
    assert (repo, name) == ("lewaldm/panopticon", "panopticon_vitb14_teacher.pth")
    assert len(rev) == 40


# -- torchgeo families -------------------------------------------------------------------------
def test_copernicusfm_metadata_from_context(ckpt_dir):
    cfg = tg_case.copernicusfm_setup(ckpt_dir)
    emb = get_model_class("copernicusfm")(cfg)
    x = np.random.default_rng(0).uniform(0, 4000, size=(12, 32, 32)).astype(np.float32)
    ctx = {**_ctx(), "sensor": SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2",), scale_m=10)}
    (known,) = emb.embed_inputs([x], output=POOLED, contexts=[ctx])
    (unknown,) = emb.embed_inputs([x], output=POOLED)
    assert not np.allclose(known.data, unknown.data)
    assert known.meta["lonlat"] == pytest.approx([10.0, 45.0])
    assert known.meta["token_area_km2"] == pytest.approx([0.0256])  # (16 px x 10 m)^2
    assert known.meta["days"] == [float((date(2022, 7, 30) - date(1970, 1, 1)).days)]
    batch = emb.embed_inputs([x, x], output=POOLED, contexts=[{}, ctx])
    np.testing.assert_allclose(batch[0].data, unknown.data, atol=1e-5)
    np.testing.assert_allclose(batch[1].data, known.data, atol=1e-5)


def test_panopticon_and_copernicusfm_take_band_subsets(ckpt_dir):
    pano = get_model_class("panopticon")({**tg_case.PANO, "bands": "B4, B3, B2, B8"})
    assert pano.describe()["wavelengths_nm"] == [665, 560, 490, 842]
    assert pano.default_sensor().bands == ("B4", "B3", "B2", "B8")
    with pytest.raises(ModelError, match="'bands' must be Sentinel-2 bands"):
        get_model_class("copernicusfm")({"bands": ["B2", "VV"]})


def test_croma_sar_branch(ckpt_dir):
    cfg = tg_case.croma_setup(ckpt_dir)
    emb = get_model_class("croma")({**cfg, "modality": "sar"})
    sensor = emb.default_sensor()
    assert sensor.bands == ("VV", "VH")
    assert sensor.collection == "COPERNICUS/S1_GRD"
    x = np.random.default_rng(0).normal(-12, 4, size=(2, 20, 20)).astype(np.float32)
    (g,) = emb.embed_inputs([x], output=GRID)
    assert g.data.shape == (32, 2, 2)
    with pytest.raises(ModelError, match="'modality' must be"):
        get_model_class("croma")({"modality": "both"})


def test_ssl4eo_defaults_are_l1c_13_bands():
    for name, dim in (("ssl4eo_s2_vit", 384), ("ssl4eo_s2_resnet", 2048)):
        d = get_model_class(name)().describe()
        assert d["inputs"]["collection"] == "COPERNICUS/S2_HARMONIZED"
        assert len(d["inputs"]["bands"]) == 13
        assert "B10" in d["inputs"]["bands"]
        assert d["embedding_dim"] == dim
        assert d["extra"] == "torchgeo"


@pytest.mark.parametrize(
    ("window", "cfg", "frames"),
    [
        (("2022-06-01", "2022-07-01"), {}, None),  # 30 days: one whole-window composite
        (("2022-06-01", "2022-08-01"), {}, 2),  # 61 days
        (("2022-06-01", "2022-09-01"), {}, 3),  # rs-embed's default window, 92 days
        (("2022-01-01", "2023-01-01"), {}, 4),  # capped at the 4 pretraining frames
        (("2022-01-01", "2023-01-01"), {"max_frames": 2}, 2),
        (("2022-01-01", "2023-01-01"), {"temporal_mode": "single"}, None),
    ],
)
def test_prithvi_fetches_rs_embeds_frame_count(prithvi_cfg, window, cfg, frames):
    """``clamp(window_days // 28, 1, max_frames)`` frames, as rs-embed's temporal_mode="auto", down to the fetch."""
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model, with_frames

    when = TemporalSpec.range(*window)
    rm = with_frames(resolve_model("prithvi", backend="synthetic", model_config={**prithvi_cfg, **cfg}), when)
    assert rm.n_frames == frames
    assert rm.temporal_semantics == ("single" if frames is None else f"multi:{frames}")
    data = fetch_input(rm, PointBuffer(12.5, 41.9, 300), when).data
    assert data.ndim == (3 if frames is None else 4)
    if frames is not None:
        assert data.shape[0] == frames
    (emb,) = PrithviEmbedder({**prithvi_cfg, **cfg}).embed_inputs(
        [data], output=POOLED, contexts=[{"temporal": when, "spatial": PointBuffer(12.5, 41.9, 300)}]
    )
    assert emb.data.shape == (32,)


def test_prithvi_temporal_mode_is_checked():
    with pytest.raises(ModelError, match="'temporal_mode' must be 'auto', 'single' or 'multi'"):
        PrithviEmbedder({"temporal_mode": "weekly"})
