"""agrifm: the choices that follow rs-embed 0.3.1 (bands, statistics, frames, empty frames, checkpoint keys, outputs)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from model_cases.agrifm import TINY, write_checkpoint

from rs_embed_dask import list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models import agrifm, agrifm_weights, hub_reach
from rs_embed_dask.models.agrifm import AgriFMArch, AgriFMEmbedder
from rs_embed_dask.models.agrifm_encoder import AgriFMEncoder, output_frames, window_and_shift
from rs_embed_dask.models.weights import DOWNLOAD_PENDING, offline_probe

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()
_ENV = ("RS_EMBED_AGRIFM_CKPT", "RS_EMBED_AGRIFM_FRAMES", "RS_EMBED_AGRIFM_IMG", "RS_EMBED_AGRIFM_NORM",
        "RS_EMBED_AGRIFM_AUTO_DOWNLOAD", "RS_EMBED_AGRIFM_CACHE_DIR", "RS_EMBED_AGRIFM_CKPT_FILE",
        "RS_EMBED_AGRIFM_CKPT_URL", "RS_EMBED_AGRIFM_CKPT_MIN_BYTES", "HF_HUB_OFFLINE")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("agrifm") / "AgriFM.pth")


@pytest.fixture(scope="module")
def emb(weights: Path) -> AgriFMEmbedder:
    e = AgriFMEmbedder({**TINY, "weights": str(weights)})
    e.load("cpu")
    return e


def _series(seed: int, t: int = 8, hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, size=(t, 10, *hw)).astype(np.float32)


def _data(e) -> np.ndarray:
    return np.asarray(getattr(e.data, "values", e.data))


# -- name, description, frames ---------------------------------------------------------------------
def test_name_listing_and_no_aliases() -> None:
    assert "agrifm" in list_models()
    assert canonical_model_name(" AgriFM ") == "agrifm"  # rs-embed has no other name for it
    assert get_model_class("agrifm") is AgriFMEmbedder


def test_describe_matches_rs_embed_defaults() -> None:
    d = AgriFMEmbedder().describe()
    assert d["inputs"]["collection"] == "COPERNICUS/S2_SR_HARMONIZED"
    assert d["inputs"]["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert d["inputs"]["shape"] == "[T=8, 10, H, W]"
    defaults = d["defaults"]
    assert (defaults["scale_m"], defaults["cloudy_pct"], defaults["composite"]) == (10, 30, "median")
    assert (defaults["image_size"], defaults["n_frames"], defaults["norm_mode"]) == (224, 8, "agrifm_stats")
    assert defaults["default_ckpt_url"] == "https://glass.hku.hk/casual/AgriFM/AgriFM.pth"
    assert d["embedding_dim"] == 1024
    assert d["grid"].startswith("(1024, 14, 14) at 224 px")
    assert d["output"] == ["pooled", "grid"]
    assert d["weights_env"] == "RS_EMBED_AGRIFM_CKPT"
    assert d["architecture"]["depths"] == [2, 2, 18, 2]
    assert d["architecture"]["window_size"] == [8, 7, 7]
    assert d["temporal"].startswith("multi:8")
    assert d["weights"]["cache"].endswith("rs_embed/agrifm/AgriFM.pth")


def test_statistics_are_agrifm_s2_config() -> None:
    assert len(agrifm.S2_MEAN) == len(agrifm.S2_STD) == 10
    assert agrifm.S2_MEAN[0] == pytest.approx(4179.192015478227)
    assert agrifm.S2_STD[-1] == pytest.approx(1694.20220774)


def test_frame_count_and_temporal_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    from rs_embed_dask.resolve import resolve_model

    e = AgriFMEmbedder()
    assert e.frame_count() == 8
    assert e.temporal_semantics() == "multi:8"  # rs-embed's key: shared with anysat's S2 series of 8 bins
    assert resolve_model("agrifm", backend="synthetic").n_frames == 8
    assert AgriFMEmbedder({"n_frames": 4}).temporal_semantics() == "multi:4"
    monkeypatch.setenv("RS_EMBED_AGRIFM_FRAMES", "6")
    monkeypatch.setenv("RS_EMBED_AGRIFM_IMG", "64")
    monkeypatch.setenv("RS_EMBED_AGRIFM_NORM", "unit")
    e = AgriFMEmbedder()
    assert (e.frames, e.image_size, e.normalization) == (6, 64, "unit_scale")
    assert AgriFMEmbedder({"n_frames": 3}).frames == 3  # model_config wins over the variable


def test_output_dims_follow_the_frames() -> None:
    arch = AgriFMArch()
    assert [output_frames(t, arch) for t in (1, 4, 8, 16, 32, 33, 64)] == [1, 1, 1, 1, 1, 2, 2]
    assert AgriFMEmbedder({"n_frames": 64}).describe()["embedding_dim"] == 2048
    assert window_and_shift((2, 112, 112), (8, 7, 7), (4, 3, 3)) == ((2, 7, 7), (0, 3, 3))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [({"normalization": "minmax"}, "normalization"), ({"n_frames": 0}, "n_frames"), ({"image_size": 8}, "image_size"),
     ({"depths": [2, 2]}, "depths"), ({"variant": "base"}, "does not accept")],
)  # fmt: skip
def test_config_errors(cfg: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        AgriFMEmbedder(cfg)


def test_memory_per_item_follows_frames_and_image_size() -> None:
    """~350 MB for 8 frames at 224 px (a CPU forward pass of the published model measured 360 MB)."""
    e = AgriFMEmbedder()
    base = e.memory_per_item((8, 10, 224, 224))
    assert 300e6 < base < 450e6
    assert e.memory_per_item((16, 10, 224, 224)) > 1.8 * base  # twice the first stage's tokens
    assert e.memory_per_item((8, 10, 64, 64)) < base  # a smaller raw input, resized to the same 224 px
    assert e.memory_per_item((8, 10, 64, 64)) > 0.8 * base
    assert AgriFMEmbedder({"image_size": 112}).memory_per_item((8, 10, 224, 224)) < 0.4 * base


# -- preprocessing -----------------------------------------------------------------------------------
def test_normalisations() -> None:
    raw = (
        torch.tensor([np.nan, -5.0, 5000.0, 20000.0]).view(1, 1, 1, 1, 4).expand(1, 2, 10, 1, 4).contiguous()
    )
    unit = AgriFMEmbedder({"normalization": "unit_scale"}).preprocess(raw)
    np.testing.assert_allclose(unit[0, 0, 0, 0].numpy(), [0.0, 0.0, 0.5, 1.0])
    none = AgriFMEmbedder({"normalization": "raw"}).preprocess(raw)
    np.testing.assert_allclose(none[0, 1, 3, 0].numpy(), [0.0, 0.0, 5000.0, 10000.0])
    z = AgriFMEmbedder().preprocess(raw)
    np.testing.assert_allclose(
        z[0, 0, 9, 0, 2].item(), (5000.0 - agrifm.S2_MEAN[9]) / agrifm.S2_STD[9], rtol=1e-6
    )


def test_rectangle_is_padded_then_resized(emb: AgriFMEmbedder) -> None:
    """rs-embed's prepare_square: centre reflect-pad to a square, then bilinear to image_size."""
    from rs_embed_dask.models.vit import pad_to_square

    x = _series(1, hw=(20, 32))
    (a,) = emb.embed_inputs([x], output=GRID)
    sq = pad_to_square(torch.from_numpy(x)).numpy()
    assert sq.shape[-2:] == (32, 32)
    (b,) = emb.embed_inputs([sq], output=GRID)
    np.testing.assert_allclose(_data(a), _data(b), atol=1e-5)


# -- checkpoint ----------------------------------------------------------------------------------------
def test_encoder_state_renames_and_drops_other_sources() -> None:
    state = {"module.S2_patch_emd.proj.weight": 1, "module.backbone.norm.weight": 2,
             "module.HLSL30_patch_emd.proj.weight": 3, "module.Modis_patch_emd.proj.bias": 4, "head.w": 5}  # fmt: skip
    assert agrifm.encoder_state(state) == {"patch_emd.proj.weight": 1, "backbone.norm.weight": 2}


def test_checkpoint_loads_strictly(tmp_path: Path, weights: Path, emb: AgriFMEmbedder) -> None:
    x = [_series(2)]
    ref = _data(emb.embed_inputs(x, output=POOLED)[0])
    prefixed = write_checkpoint(tmp_path / "module.pth", prefix="module.")  # same seed, keys under module.
    e = AgriFMEmbedder({**TINY, "weights": str(prefixed)})
    np.testing.assert_array_equal(_data(e.embed_inputs(x, output=POOLED)[0]), ref)

    ck = torch.load(weights, weights_only=True)
    no_index = {k: v for k, v in ck["state_dict"].items() if not k.endswith("relative_position_index")}
    torch.save(no_index, tmp_path / "flat.pth")  # a flat state dict without the fixed index tables
    e = AgriFMEmbedder({**TINY, "weights": str(tmp_path / "flat.pth")})
    np.testing.assert_array_equal(_data(e.embed_inputs(x, output=POOLED)[0]), ref)

    missing = dict(ck["state_dict"])
    del missing["backbone.layers.2.blocks.0.attn.qkv.weight"]
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    with pytest.raises(ModelError, match=r"backbone\.layers\.2\.blocks\.0\.attn\.qkv\.weight"):
        AgriFMEmbedder({**TINY, "weights": str(tmp_path / "missing.pth")}).load("cpu")

    with pytest.raises(ModelError, match="does not match"):  # another width than the file's
        AgriFMEmbedder({**TINY, "embed_dim": 16, "weights": str(weights)}).load("cpu")

    other = {k: v for k, v in ck["state_dict"].items() if not k.startswith("S2_patch_emd")}
    torch.save({"state_dict": other}, tmp_path / "no_s2.pth")
    with pytest.raises(ModelError, match="no Sentinel-2 patch embedding"):
        AgriFMEmbedder({**TINY, "weights": str(tmp_path / "no_s2.pth")}).load("cpu")


def test_module_keys_are_the_official_ones() -> None:
    keys = set(AgriFMEncoder(AgriFMArch()).state_dict())
    assert len(keys) == 349  # rs-embed's PretrainingSwinTransformer3DEncoder has 349 tensors
    for k in ("patch_emd.proj.weight", "backbone.norm.bias", "backbone.layers.2.blocks.17.attn.relative_position_index",
              "backbone.layers.2.downsample.reduction.weight", "backbone.layers.0.blocks.1.mlp.fc2.bias"):  # fmt: skip
        assert k in keys
    assert not any(k.startswith("backbone.layers.3.downsample") for k in keys)


# -- frames -------------------------------------------------------------------------------------------
def test_multiframe_shapes(emb: AgriFMEmbedder, weights: Path) -> None:
    (g,) = emb.embed_inputs([_series(3)], output=GRID)
    assert _data(g).shape == (64, 2, 2)  # 8 * embed_dim, one time step left, 32 px / 16
    assert g.meta["n_frames"] == 8
    (p,) = emb.embed_inputs([_series(3)], output=POOLED)
    np.testing.assert_allclose(_data(p), _data(g).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    long = AgriFMEmbedder({**TINY, "n_frames": 40, "weights": str(weights)})
    (g40,) = long.embed_inputs([_series(4, t=40)], output=GRID)
    assert _data(g40).shape == (128, 2, 2)  # two time steps stacked per channel
    assert long.describe()["embedding_dim"] == 128


def test_empty_frames_are_kept_and_counted(emb: AgriFMEmbedder) -> None:
    """rs-embed keeps all T frames: a back-filled bin repeats a frame, a NaN frame reads as zeros."""
    x = _series(5)
    x[3] = x[0]  # a bin back-filled with the same composite
    x[6] = x[0]
    (e,) = emb.embed_inputs([x], output=POOLED)
    assert (e.meta["n_frames"], e.meta["n_distinct_frames"], e.meta["n_backfilled_frames"]) == (8, 6, 2)
    nan = x.copy()
    nan[5] = np.nan
    zeros = x.copy()
    zeros[5] = 0.0
    a, b = emb.embed_inputs([nan, zeros], output=GRID)
    np.testing.assert_array_equal(_data(a), _data(b))
    assert a.meta["n_frames"] == 8
    assert not np.allclose(_data(a), _data(emb.embed_inputs([x], output=GRID)[0]))  # the frame counts


def test_single_composite_is_repeated_with_a_warning(emb: AgriFMEmbedder) -> None:
    chw = _series(6, t=1)[0]
    with pytest.warns(UserWarning, match="repeats it to T=8"):
        (a,) = emb.embed_inputs([chw], output=POOLED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (b,) = emb.embed_inputs([np.repeat(chw[None], 8, axis=0)], output=POOLED)
    np.testing.assert_allclose(_data(a), _data(b), atol=1e-6)
    assert (a.meta["input_mode"], a.meta["n_distinct_frames"], a.meta["n_backfilled_frames"]) == (
        "chw_repeated_to_t", 1, 7)  # fmt: skip


def test_get_embedding_on_a_rectangle_cuts_the_grid(weights: Path) -> None:
    from rs_embed_dask import BBox, TemporalSpec, get_embedding

    cfg = {**TINY, "image_size": 64, "weights": str(weights)}
    # ~48 x 13 px: fetched as a ~48 px square, the 4 x 4 grid cut back
    box = BBox(8.40, 47.30, 8.4043, 47.3008)
    kw = {
        "temporal": TemporalSpec.range("2022-06-01", "2022-09-01"),
        "backend": "synthetic",
        "device": "cpu",
        "input_prep": "resize",
    }
    g = get_embedding("agrifm", spatial=box, output=GRID, model_config=cfg, **kw)
    p = get_embedding("agrifm", spatial=box, output=POOLED, model_config=cfg, **kw)
    grid = _data(g)
    assert grid.shape == (64, 2, 4)  # the rows outside the ROI are cut
    np.testing.assert_allclose(_data(p), grid.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


# -- weights lookup -------------------------------------------------------------------------------------
class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_env_checkpoint_and_cache(tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT", str(weights))
    assert agrifm_weights.find_checkpoint("agrifm", {}) == weights
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT", str(tmp_path / "nope.pth"))
    with pytest.raises(ModelError, match="RS_EMBED_AGRIFM_CKPT"):
        agrifm_weights.find_checkpoint("agrifm", {})
    monkeypatch.delenv("RS_EMBED_AGRIFM_CKPT")
    monkeypatch.setenv("RS_EMBED_AGRIFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RS_EMBED_AGRIFM_AUTO_DOWNLOAD", "0")
    (tmp_path / "AgriFM.pth").write_bytes(b"x" * 64)
    with pytest.raises(ModelError, match="AUTO_DOWNLOAD is off"):  # smaller than the 100 MiB minimum
        agrifm_weights.find_checkpoint("agrifm", {})
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT_MIN_BYTES", "10")
    assert agrifm_weights.find_checkpoint("agrifm", {}) == tmp_path / "AgriFM.pth"


def test_offline_fails_fast_without_a_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a: object, **k: object) -> None:
        raise AssertionError("no request may be made")

    monkeypatch.setattr(agrifm_weights.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(hub_reach, "_connects", no_network)
    monkeypatch.setenv("RS_EMBED_AGRIFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE is set.*RS_EMBED_AGRIFM_CKPT=/path/to/AgriFM\.pth"):
        AgriFMEmbedder().load("cpu")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # the server is unreachable
    monkeypatch.setattr(hub_reach, "_connects", lambda host, port, timeout: False)
    with pytest.raises(ModelError, match=r"glass\.hku\.hk' cannot be reached"):
        agrifm_weights.find_checkpoint("agrifm", {})


def test_client_preflight_finds_or_refuses_the_checkpoint(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rs_embed_dask.models.weights import locate_weights

    monkeypatch.setenv("RS_EMBED_AGRIFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with offline_probe(), pytest.raises(ModelError, match="No weights found for model 'agrifm'"):
        locate_weights(AgriFMEmbedder(), "agrifm", {})
    with offline_probe():
        assert (
            locate_weights(AgriFMEmbedder({"weights": str(weights)}), "agrifm", {"weights": str(weights)})
            == weights
        )


def test_download_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def urlopen(url: str, timeout: float) -> _Response:
        calls.append(url)
        return _Response(b"w" * 4096)

    monkeypatch.setattr(agrifm_weights.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(hub_reach, "_connects", lambda host, port, timeout: True)
    monkeypatch.setenv("RS_EMBED_AGRIFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT_URL", "https://example.org/x/AgriFM.pth")
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT_MIN_BYTES", "1000")
    with offline_probe():  # the client's pre-flight downloads nothing
        assert agrifm_weights.find_checkpoint("agrifm", {}) == DOWNLOAD_PENDING
    assert calls == []
    path = agrifm_weights.find_checkpoint("agrifm", {})
    assert path == tmp_path / "cache" / "AgriFM.pth"
    assert path.stat().st_size == 4096
    assert agrifm_weights.find_checkpoint("agrifm", {}) == path  # cached: no second request
    assert calls == ["https://example.org/x/AgriFM.pth"]
    with offline_probe():
        assert agrifm_weights.find_checkpoint("agrifm", {}) == path
    path.unlink()
    monkeypatch.setenv("RS_EMBED_AGRIFM_CKPT_MIN_BYTES", "10000")
    with pytest.raises(ModelError, match="too small"):
        agrifm_weights.find_checkpoint("agrifm", {})
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


# -- export ---------------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_export_matches_get_embedding(weights: Path, tmp_path: Path) -> None:
    """An export on a local cluster: each ROI's 8 frames travel as one (8, 10, H, W) input."""
    from _exports import TEMPORAL as temporal
    from _exports import assert_row_is_get_embedding, rois, threaded_export

    from rs_embed_dask import load_export

    spatials, cfg, out = rois(3, buffer_m=160), {**TINY, "weights": str(weights)}, tmp_path / "agrifm.npz"
    man = threaded_export(out, {"agrifm": cfg}, spatials, temporal)
    assert man["status"] == "ok"
    res = load_export(out)
    emb = np.asarray(res.embedding("agrifm"))
    assert emb.shape == (3, 64)
    inputs = np.asarray(res.models["agrifm"].inputs)
    assert inputs.shape == (3, 8, 10, 32, 32)
    assert_row_is_get_embedding(emb[1], "agrifm", spatials[1], temporal, cfg)
