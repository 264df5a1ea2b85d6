"""terramind: the choices that follow rs-embed 0.3.1 (bands, statistics, model keys, widths, strict loading)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_cases.terramind import golden, terramind_state, write_checkpoint

from rs_embed_dask import describe_model
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models import terramind as tm

needs_terratorch = pytest.mark.skipif(
    importlib.util.find_spec("terratorch") is None, reason="terratorch (extra terramind) is not installed"
)


def test_bands_in_terramind_order_and_names():
    d = describe_model("terramind")
    assert d["inputs"]["bands"] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
    assert d["inputs"]["terramind_bands"][0] == "COASTAL_AEROSOL"
    assert d["inputs"]["terramind_bands"][7:9] == ["NIR_BROAD", "NIR_NARROW"]  # B8, B8A
    assert d["defaults"]["scale_m"] == 10
    assert d["embedding_dim"] == 384  # rs-embed's default terramind_v1_small
    assert d["defaults"]["model_key"] == "terramind_v1_small"


@needs_terratorch
def test_statistics_follow_the_model_key():
    from terratorch.models.backbones.terramind.model import terramind_register as reg

    v1 = tm.TerraMindEmbedder()
    v01 = tm.TerraMindEmbedder({"model_key": "terramind_v01_base"})
    assert v1.norm_mean == tuple(reg.v1_pretraining_mean["untok_sen2l2a@224"])
    assert v1.norm_std == tuple(reg.v1_pretraining_std["untok_sen2l2a@224"])
    assert v01.norm_mean == tuple(reg.v01_pretraining_mean["untok_sen2l2a@224"])
    assert v01.norm_std == tuple(reg.v01_pretraining_std["untok_sen2l2a@224"])
    assert tuple(reg.PRETRAINED_BANDS["untok_sen2l2a@224"]) == tm.TERRAMIND_BANDS
    raw = np.full((1, 12, 224, 224), 1500.0, np.float32)
    np.testing.assert_allclose(
        v01.preprocess(torch.from_numpy(raw)).numpy(), golden(raw, tm.V01_MEAN, tm.V01_STD), atol=1e-6
    )
    assert not np.allclose(v1.preprocess(torch.from_numpy(raw)).numpy(), golden(raw, tm.V01_MEAN, tm.V01_STD))


def test_resize_then_zscore_without_padding():
    x = np.random.default_rng(0).uniform(-50, 12000, (2, 12, 20, 45)).astype(np.float32)
    out = tm.TerraMindEmbedder().preprocess(torch.from_numpy(x))
    assert tuple(out.shape) == (2, 12, 224, 224)
    ref = F.interpolate(
        torch.from_numpy(np.clip(x, 0, 10000)), size=(224, 224), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(out.numpy(), golden(ref.numpy()), atol=1e-5)


@needs_terratorch
@pytest.mark.parametrize("key", ["terramind_v1_tiny", "terramind_v1_small"])
def test_variant_width_is_the_built_backbone_width(key):
    from terratorch.registry import BACKBONE_REGISTRY

    module = BACKBONE_REGISTRY.build(key, pretrained=False, modalities=["S2L2A"])
    assert module.encoder_norm.weight.shape[0] == tm.VARIANTS[key][0]
    assert tm.TerraMindEmbedder({"model_key": key}).describe()["embedding_dim"] == tm.VARIANTS[key][0]


def test_variant_table():
    assert {k: v[0] for k, v in tm.VARIANTS.items()} == {
        "terramind_v1_tiny": 192, "terramind_v1_small": 384, "terramind_v1_base": 768,
        "terramind_v1_large": 1024, "terramind_v01_base": 768,
    }  # fmt: skip
    emb = tm.TerraMindEmbedder({"model_key": "terratorch_terramind_v1_base"})
    assert emb.model_key == "terramind_v1_base"
    assert emb.hub.repo == "ibm-esa-geospatial/TerraMind-1.0-base"
    assert emb.hub.filename == "TerraMind_v1_base.pt"


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"model_key": "terramind_v1_small_tim"}, "'model_key' must be one of"),
        ({"model_key": 3}, "'model_key' must be one of"),
        ({"modality": "S1GRD"}, "'modality' must be 'S2L2A'"),
        ({"variant": "small"}, "Allowed keys"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ModelError, match=match):
        get_model_class("terramind")(cfg)


@pytest.mark.parametrize("modality", ["S2L2A", "s2_l2a", "s2l2a"])
def test_modality_spellings(modality):
    assert tm.TerraMindEmbedder({"modality": modality}).modality == "S2L2A"


def test_strict_loading_rejects_a_checkpoint_without_an_encoder_key(tmp_path):
    state = terramind_state()
    del state["encoder.3.mlp.fc1.weight"]
    torch.save(state, tmp_path / "TerraMind_v1_tiny.pt")
    emb = tm.TerraMindEmbedder({"model_key": "terramind_v1_tiny", "weights": str(tmp_path)})
    with pytest.raises(ModelError, match=r"missing keys \['encoder.3.mlp.fc1.weight'\]"):
        emb.load("cpu")


def test_loads_the_encoder_keys_unchanged(tmp_path):
    path = write_checkpoint(tmp_path)
    emb = tm.TerraMindEmbedder({"model_key": "terramind_v1_tiny", "weights": str(path)})
    emb.load("cpu")
    state = torch.load(path, weights_only=True)
    own = emb.module.state_dict()
    assert set(own) < set(state)
    for k, v in own.items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    x = np.random.default_rng(1).uniform(0, 5000, (12, 24, 24)).astype(np.float32)
    (grid,) = emb.embed_inputs([x], output=OutputSpec.grid())
    assert grid.data.shape == (192, 14, 14)
    assert grid.meta["model_key"] == "terramind_v1_tiny"


def test_missing_terratorch_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "terratorch" else real(name, *a)
    )
    with pytest.raises(ModelError, match=r"pip install 'rs-embed-dask\[terramind\]'"):
        get_model_class("terramind")({"implementation": "terratorch"})
    auto = get_model_class("terramind")({})
    assert auto.implementation == "native"  # "auto" falls back to the re-implementation
    assert "terramind_native" in auto.describe()["architecture"]


@pytest.mark.parametrize("key", sorted(tm.VARIANTS))
def test_native_encoder_width_and_keys(key):
    from rs_embed_dask.models.terramind_native import ARCH, MODALITY_KEY, build_native_encoder

    assert ARCH[key][0] == tm.VARIANTS[key][0]
    if key == "terramind_v1_tiny":
        m = build_native_encoder(key)
        assert m.encoder_norm.weight.shape == (192,)
        assert f"encoder_embeddings.{MODALITY_KEY}.proj.weight" in m.state_dict()
        assert len(m.encoder) == 12


@needs_terratorch
@pytest.mark.parametrize("key", ["terramind_v1_tiny", "terramind_v1_base"])
def test_native_encoder_equals_terratorchs(tmp_path, key):
    from terratorch.registry import BACKBONE_REGISTRY

    from rs_embed_dask.models.terramind_native import build_native_encoder

    torch.manual_seed(0)
    ref = BACKBONE_REGISTRY.build(key, pretrained=False, modalities=["S2L2A"]).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    native = build_native_encoder(key).eval()
    assert set(native.state_dict()) == set(ref.state_dict())
    native.load_state_dict(ref.state_dict(), strict=True)
    torch.testing.assert_close(native.state_dict()["encoder_embeddings.untok_sen2l2a@224.pos_emb"],
                               build_native_encoder(key).state_dict()["encoder_embeddings.untok_sen2l2a@224.pos_emb"])  # fmt: skip
    x = torch.randn(2, 12, 224, 224)
    with torch.no_grad():
        a, b = ref({"S2L2A": x})[-1], native({"S2L2A": x})[-1]
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_preflight_weights_check(tmp_path):
    from rs_embed_dask.resolve import resolve_model
    from rs_embed_dask.validation.preflight import check_weights

    with pytest.raises(ModelError, match="holds none of"):
        check_weights(
            resolve_model("terramind", backend="synthetic", model_config={"weights": str(tmp_path)})
        )
    path = write_checkpoint(tmp_path, "terramind_v1_tiny")
    check_weights(resolve_model("terramind", backend="synthetic", model_config={"weights": str(path)}))


def test_terratorch_backbones_keep_the_float32_matmul_precision():
    """Building terramind through terratorch leaves torch's float32 matmul precision as it was (fresh interpreter)."""
    import subprocess
    import sys

    pytest.importorskip("terratorch")
    code = (
        "import torch\n"
        "torch.set_float32_matmul_precision('highest')\n"
        "from rs_embed_dask.models.terramind import TerraMindEmbedder\n"
        "e = TerraMindEmbedder({'implementation': 'terratorch'})\n"
        "e._terratorch_module()\n"
        "assert torch.get_float32_matmul_precision() == 'highest', torch.get_float32_matmul_precision()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
