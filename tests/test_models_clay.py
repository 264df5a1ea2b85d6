"""Clay family choices: side-input encodings, sizes, loading, normalisation (contract: test_models_contract.py).

Weights are random, in the Lightning checkpoint layout of ``clay-v1.5.ckpt``
(``tests/model_cases/clay.py``), loaded through the real loading code.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases import clay as case

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import describe_model, get_model_class
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.models.clay import BANDS, latlon_encoding, time_encoding, window_midpoint

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clay")
    case.write_checkpoint(d / "clay-v1.5.ckpt")
    return d


@pytest.fixture(scope="module")
def clay(ckpt_dir) -> Any:
    emb = get_model_class("clay")({**case.TINY, "weights": str(ckpt_dir)})
    emb.load("cpu")
    return emb


def _raw(seed: int, hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 6000, size=(10, *hw)).astype(np.float32)


def _ctx(lon: float = 8.5, lat: float = 47.3, scale: int = 10, window=("2022-01-01", "2023-01-01")) -> dict:
    return {
        "spatial": PointBuffer(lon, lat, 160),
        "temporal": TemporalSpec.range(*window),
        "sensor": SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, scale_m=scale),
    }


def test_described_sizes_bands_and_georef():
    d = describe_model("clay")
    assert d["embedding_dim"] == 1024
    assert d["inputs"]["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert d["inputs"]["wavelengths_um"] == [0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19]
    assert d["defaults"]["image_size"] == 256
    assert d["defaults"]["scale_m"] == 10
    assert d["grid"].startswith("(1024, 32, 32)")
    assert d["weights"]["source"] == "huggingface: made-with-clay/Clay/v1.5/clay-v1.5.ckpt"
    dims = {s: get_model_class("clay")({"model_size": s}).describe()["embedding_dim"] for s in d["variants"]}
    assert dims == {"tiny": 192, "small": 384, "base": 768, "large": 1024}
    assert get_model_class("clay").requires_georef


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"model_size": "huge"}, "'model_size' must be one of"),
        ({"bands": ["B2", "B1"]}, "'bands' must be distinct bands among"),
        ({"bands": ["B2", "B2"]}, "'bands'"),
        ({"image_size": 30}, "multiple of 8"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        get_model_class("clay")(cfg)


def test_time_encoding_is_iso_week_and_hour_zero():
    day = date(2022, 7, 2)  # ISO week 26
    w = 26 * 2 * math.pi / 52
    np.testing.assert_allclose(time_encoding(day), [math.sin(w), math.cos(w), 0.0, 1.0], rtol=0, atol=1e-7)
    assert window_midpoint(TemporalSpec.range("2022-01-01", "2023-01-01")) == date(
        2022, 7, 2
    )  # 182.5 days, floored
    assert window_midpoint(TemporalSpec.range("2022-06-01", "2022-06-04")) == date(2022, 6, 2)
    assert window_midpoint(TemporalSpec.year(2021)) == date(2021, 7, 1)
    assert window_midpoint(None) is None


def test_latlon_encoding_is_sin_cos_in_radians():
    got = latlon_encoding(30.0, -90.0)
    np.testing.assert_allclose(got, [0.5, math.sqrt(3) / 2, -1.0, 0.0], rtol=0, atol=1e-7)


def test_side_inputs_from_the_context(clay):
    x = _raw(0)
    sides = clay.side_inputs(x, _ctx(lon=8.5, lat=47.3, scale=20))
    np.testing.assert_allclose(sides["latlon"], latlon_encoding(47.3, 8.5))
    np.testing.assert_allclose(sides["time"], time_encoding(date(2022, 7, 2)))
    assert float(sides["gsd"]) == 20.0
    box = {**_ctx(), "spatial": BBox(8.0, 47.0, 9.0, 48.0)}
    np.testing.assert_allclose(clay.side_inputs(x, box)["latlon"], latlon_encoding(47.5, 8.5))
    bare = clay.side_inputs(x, None)
    assert bare["time"] is None
    assert bare["latlon"] is None
    assert float(bare["gsd"]) == 10.0


def test_preprocessing_normalises_raw_dn_and_refuses_unit_inputs(clay):
    x = torch.from_numpy(_raw(1, (24, 32)))[None]
    out = clay.preprocess(x)
    assert out.shape == (1, 10, 32, 32)  # padded to 32 x 32 (reflect): no resize needed
    m = torch.tensor(case.MEAN).view(1, -1, 1, 1)
    s = torch.tensor(case.STD).view(1, -1, 1, 1)
    torch.testing.assert_close(out[:, :, 4:28], (x - m) / s)
    with pytest.raises(ModelError, match="appears already normalized"):
        clay.preprocess(torch.rand(1, 10, 8, 8))


def test_conditioning_changes_the_embedding_and_batches_mix_gsd(clay):
    xs = [_raw(2), _raw(3), _raw(2)]
    ctxs = [_ctx(scale=10), _ctx(scale=30), _ctx(lon=-60.0, lat=-10.0, scale=10)]
    batch = clay.embed_inputs(xs, output=POOLED, contexts=ctxs)
    singles = [clay.embed_inputs([x], output=POOLED, contexts=[c])[0] for x, c in zip(xs, ctxs, strict=True)]
    for b, s in zip(batch, singles, strict=True):
        np.testing.assert_allclose(b.data, s.data, rtol=0, atol=1e-5)
    assert not np.allclose(batch[0].data, batch[2].data)  # same pixels, another place
    other_gsd = clay.embed_inputs([xs[0]], output=POOLED, contexts=[_ctx(scale=30)])[0]
    assert not np.allclose(batch[0].data, other_gsd.data)
    assert batch[1].meta["gsd"] == 30.0
    assert batch[0].meta["latlon"] == pytest.approx(latlon_encoding(47.3, 8.5).tolist())


def test_pooled_is_the_class_token_and_grid_the_patch_tokens(clay):
    x = clay.preprocess(torch.from_numpy(_raw(4))[None])
    sides = {"gsd": torch.tensor([10.0]), "time": None, "latlon": None}
    with torch.inference_mode():
        enc = clay._encode(x, sides)
        assert enc.shape == (1, 1 + 16, 192)
        torch.testing.assert_close(clay.forward_with_sides(x, sides, POOLED), enc[:, 0])
        torch.testing.assert_close(clay.forward_with_sides(x, sides, OutputSpec.pooled("max")), enc[:, 0])
        grid = clay.forward_with_sides(x, sides, GRID)
        torch.testing.assert_close(grid[0, :, 1, 2], enc[0, 1 + 1 * 4 + 2])  # row-major tokens


def test_checkpoint_loading_is_strict(tmp_path):
    state = case.encoder_state()
    state.pop("transformer.norm.bias")
    bad = case.write_checkpoint(tmp_path / "clay-v1.5.ckpt", state)
    with pytest.raises(ModelError, match="missing keys"):
        get_model_class("clay")({**case.TINY, "weights": str(bad)}).load("cpu")
    torch.save({"state_dict": {"model.decoder.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelError, match="no Clay encoder weights"):
        get_model_class("clay")({**case.TINY, "weights": str(tmp_path / "other.ckpt")}).load("cpu")


def test_import_keeps_the_float32_matmul_precision():
    """terratorch sets ``torch.set_float32_matmul_precision("medium")`` on import; loading Clay undoes it.

    A fresh interpreter: in this one terratorch may already be imported.
    """
    import subprocess
    import sys

    code = (
        "import torch\n"
        "torch.set_float32_matmul_precision('highest')\n"
        "from rs_embed_dask.models.clay import ClayEmbedder, _import_encoder\n"
        "ClayEmbedder.check_available()\n"
        "assert torch.get_float32_matmul_precision() == 'highest', 'check_available'\n"
        "_import_encoder()\n"
        "import terratorch.models.backbones.clay_v15.model\n"
        "assert torch.get_float32_matmul_precision() == 'highest', 'import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_through_the_api_with_the_synthetic_provider(ckpt_dir):
    import rs_embed_dask as rd

    sp = rd.PointBuffer(lon=8.5, lat=47.3, buffer_m=160)
    tw = rd.TemporalSpec.range("2022-06-01", "2022-07-01")
    emb = rd.get_embedding("clay", spatial=sp, temporal=tw, backend="synthetic", device="cpu",
                           weights=str(ckpt_dir), **case.TINY)  # fmt: skip
    assert emb.data.shape == (192,)
    np.testing.assert_allclose(emb.meta["latlon"], latlon_encoding(47.3, 8.5), atol=1e-6)
    np.testing.assert_allclose(emb.meta["time"], time_encoding(date(2022, 6, 16)), atol=1e-6)


def test_user_data_without_location_is_refused(ckpt_dir):
    import rs_embed_dask as rd

    data = rd.UserData(np.full((10, 16, 16), 1500.0, np.float32), collection="s2", bands=BANDS)
    with pytest.raises(ModelError, match="conditions on request geometry"):
        rd.get_embedding_from_data("clay", data, weights=str(ckpt_dir), **case.TINY)


def test_tolerates_bfloat16_autocast(clay):
    """``supports_autocast``: a bfloat16 forward stays close to float32 (CPU autocast stands in for CUDA)."""
    x = clay.preprocess(torch.from_numpy(_raw(6))[None])
    sides = {"gsd": torch.tensor([10.0]), "time": torch.rand(1, 4), "latlon": torch.rand(1, 4)}
    with torch.inference_mode():
        ref = clay.forward_with_sides(x, sides, GRID)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = clay.forward_with_sides(x, sides, GRID).float()
    assert clay.supports_autocast
    cos = torch.nn.functional.cosine_similarity(ref.flatten(2), half.flatten(2), dim=1)
    assert float(cos.min()) > 0.99
