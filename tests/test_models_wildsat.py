"""wildsat: rs-embed's variants, checkpoint reading, image head, preprocessing, outputs and weights lookup."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases.wildsat import HEAD_DIM, TINY, wildsat_checkpoint, wildsat_golden

from rs_embed_dask import describe_model, list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models import wildsat, wildsat_weights
from rs_embed_dask.models.wildsat_net import build_backbone
from rs_embed_dask.models.wildsat_weights import VARIANTS, WildSATSource, head_spec, read_checkpoint

POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()
SMALL = {"depth": 1, "embed_dim": 24, "num_heads": 2, "num_classes": 16}  # resnet50/swint: depth and classes


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("CKPT", "ARCH", "IMG", "NORM", "FEATURE", "IMAGE_BRANCH", "POOLED_FROM_TOKENS", "GRID_FROM_TOKENS",
                "HF_REPO", "HF_FILE", "GDRIVE_ID", "CKPT_FILE", "CKPT_MIN_BYTES", "AUTO_DOWNLOAD"):  # fmt: skip
        monkeypatch.delenv(f"RS_EMBED_WILDSAT_{var}", raising=False)
    monkeypatch.setenv("RS_EMBED_WILDSAT_CACHE_DIR", str(tmp_path / "wildsat-cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wildsat")
    wildsat_checkpoint(d / "vitb16-imagenet-bnfc.pth")
    return d


def _emb(cfg: dict[str, Any]) -> wildsat.WildSATEmbedder:
    e = wildsat.WildSATEmbedder(cfg)
    e.load("cpu")
    return e


def _x(n: int = 2, hw: tuple[int, int] = (32, 32), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 6000, size=(3, *hw)).astype(np.float32) for _ in range(n)]


def _data(e: Any) -> np.ndarray:
    return np.asarray(getattr(e.data, "values", e.data))


# -- registration, describe and variants ---------------------------------------------------------
def test_listing_describe_and_square_fetch() -> None:
    assert "wildsat" in list_models()
    assert canonical_model_name(" WildSAT ") == "wildsat"
    d = describe_model("wildsat")
    assert d["inputs"] == {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": ["B4", "B3", "B2"]}
    assert d["defaults"]["scale_m"] == 10
    assert d["defaults"]["cloudy_pct"] == 30
    assert d["defaults"]["image_size"] == 224
    assert d["defaults"]["normalization"] == "minmax"
    assert d["defaults"]["feature"] == "image_head"
    assert d["defaults"]["variant"] == "vitb16"
    assert d["embedding_dim"] == 256  # the image head (common embedding) of the published checkpoints
    assert d["grid_dim"] == 768
    assert "(768, 14, 14)" in d["grid"]
    assert d["temporal"] == "single composite"
    assert d["weights"]["env_var"] == "RS_EMBED_WILDSAT_CKPT"
    assert "vitb16-imagenet-bnfc.pth" in d["weights"]["source"]
    cls = get_model_class("wildsat")
    assert cls.square_fetch
    assert cls.roi_pooling == "grid"


@pytest.mark.parametrize(
    ("variant", "tv_name", "gdrive", "grid_dim"),
    [
        ("vitb16", "vit_b_16", "1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE", 768),
        ("resnet50", "resnet50", "1LwCjzT1p0yFOtv1m0YD-rl7tP0eYXTb2", 256),
        ("swint", "swin_t", "12rfb3ES9-RuIAk_RjzYrMQJG_5J1Iq5H", 256),
    ],
)
def test_variants_are_torchvision_backbones(variant: str, tv_name: str, gdrive: str, grid_dim: int) -> None:
    import torchvision

    e = wildsat.WildSATEmbedder({"variant": variant})
    assert e.hub.filename == f"{variant}-imagenet-bnfc.pth"
    assert e.hub.gdrive_id == gdrive
    assert e.describe()["grid_dim"] == grid_dim
    with torch.device("meta"):  # full-size shapes without allocating them
        ours = build_backbone(variant, 224).state_dict()
        ref = getattr(torchvision.models, tv_name)(weights=None).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_variant_aliases_env_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = get_model_class("wildsat")
    assert cls({"variant": "Swin-Tiny"}).variant == "swint"
    assert cls({"variant": "resnet"}).variant == "resnet50"
    assert cls({"variant": "ViT_B16"}).variant == "vitb16"
    monkeypatch.setenv("RS_EMBED_WILDSAT_ARCH", "resnet50")
    assert cls({}).variant == "resnet50"
    assert cls({"variant": "swin"}).variant == "swint"  # model_config first
    monkeypatch.setenv("RS_EMBED_WILDSAT_ARCH", "vit")  # not one of rs-embed's ARCH spellings: the default
    assert cls({}).variant == "vitb16"
    with pytest.raises(ModelError, match=r"variant.*resnet50.*swint.*vitb16"):
        cls({"variant": "vitl16"})
    with pytest.raises(ModelError, match="normalization"):
        cls({"normalization": "zscore"})
    with pytest.raises(ModelError, match="feature"):
        cls({"feature": "text_head"})


def test_options_read_rs_embed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"IMG": "256", "NORM": "unit", "FEATURE": "encoder", "IMAGE_BRANCH": "2",
                       "POOLED_FROM_TOKENS": "true", "GRID_FROM_TOKENS": "0"}.items():  # fmt: skip
        monkeypatch.setenv(f"RS_EMBED_WILDSAT_{var}", value)
    e = get_model_class("wildsat")({})
    assert (e.image_size, e.normalization, e.feature, e.image_branch) == (256, "unit_scale", "backbone", 2)
    assert e.pooled_from_tokens is True
    assert e.grid_from_tokens is False
    d = e.describe()
    assert d["embedding_dim"] == 1000  # the classifier outputs (tokens off: no pooling of tokens)
    assert d["grid_dim"] == 1000
    # rs-embed: only 1/true/True switch POOLED_FROM_TOKENS on, and only 0/false/False GRID_FROM_TOKENS off
    monkeypatch.setenv("RS_EMBED_WILDSAT_POOLED_FROM_TOKENS", "yes")
    monkeypatch.setenv("RS_EMBED_WILDSAT_GRID_FROM_TOKENS", "no")
    e = get_model_class("wildsat")({"image_size": 224})
    assert (e.pooled_from_tokens, e.grid_from_tokens, e.image_size) == (False, True, 224)


# -- checkpoint reading ------------------------------------------------------------------------
def test_checkpoint_keys_prefixes_and_extras_dropped(tmp_path: Path, weights: Path) -> None:
    plain = _emb({**TINY, "weights": str(weights)})
    ddp = tmp_path / "ddp.pth"
    wildsat_checkpoint(ddp, prefix="module.")
    e = _emb({**TINY, "weights": str(ddp)})
    x = _x(2)
    np.testing.assert_array_equal(
        _data(e.embed_inputs(x, output=POOLED)[0]), _data(plain.embed_inputs(x, output=POOLED)[0])
    )
    state, opt = read_checkpoint(ddp)
    assert opt["satellite_encoder"] == "vitb16"
    assert opt["common_embed_dim"] == HEAD_DIM
    assert all(not k.startswith("module.") for k in state)
    meta = e.embed_inputs(x[:1], output=POOLED)[0].meta
    assert meta["opt_satellite_head"] == "threelinearnobias"
    assert meta["image_head_branch"] == 3
    assert meta["image_head_kind"] == "branched"
    assert meta["feature_source"] == "image_head"


def test_backbone_loads_strictly(tmp_path: Path, weights: Path) -> None:
    extra = tmp_path / "extra.pth"
    wildsat_checkpoint(extra, extra_backbone={"heads.extra.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelError, match=r"unexpected keys \['heads\.extra\.weight'\]"):
        _emb({**TINY, "weights": str(extra)})
    missing = tmp_path / "missing.pth"
    ck = torch.load(weights / "vitb16-imagenet-bnfc.pth", weights_only=False)
    # the classifier (read by the image head) is part of the backbone
    del ck["satellite_state_dict"]["backbone.heads.head.weight"]
    torch.save(ck, missing)
    with pytest.raises(ModelError, match=r"missing keys \['heads\.head\.weight'\]"):
        _emb({**TINY, "weights": str(missing)})
    with pytest.raises(ModelError, match="does not match"):  # another width than the file's
        _emb({**TINY, "embed_dim": 48, "weights": str(weights)})


class Opaque:
    """A pickled object a checkpoint must not make us execute."""


def test_unreadable_and_foreign_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "pickled.pth"
    torch.save({"satellite_state_dict": {"backbone.x": torch.zeros(1)}, "scheduler": Opaque()}, bad)
    with pytest.raises(ModelError, match="weights_only=True"):
        read_checkpoint(bad)
    nobackbone = tmp_path / "nobackbone.pth"
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}}, nobackbone)
    with pytest.raises(ModelError, match=r"no 'backbone\.\*' keys"):
        read_checkpoint(nobackbone)
    plain = tmp_path / "plain.pth"
    torch.save({"model.backbone.fc.weight": torch.ones(2, 2)}, plain)  # a bare state dict, wrapper prefix
    state, opt = read_checkpoint(plain)
    assert list(state) == ["backbone.fc.weight"]
    assert opt == {}


# -- the image head ----------------------------------------------------------------------------
def test_pooled_is_branch3_head_on_the_torchvision_output(weights: Path) -> None:
    e = _emb({**TINY, "weights": str(weights)})
    x = _x(2)
    pooled = np.stack([_data(p) for p in e.embed_inputs(x, output=POOLED)])
    assert pooled.shape == (2, HEAD_DIM)
    ck = torch.load(weights / "vitb16-imagenet-bnfc.pth", weights_only=False)["satellite_state_dict"]
    bb = build_backbone("vitb16", 32, depth=1, embed_dim=32, num_heads=2, num_classes=16)
    bb.load_state_dict({k[9:]: v for k, v in ck.items() if k.startswith("backbone.")})
    bb.eval()
    with torch.no_grad():
        inp = torch.from_numpy(np.concatenate([wildsat_golden(a[None]) for a in x]))
        ref = bb(inp) @ ck["decoder.backbone3.0.weight"].T  # torchvision's own forward, then branch 3
    np.testing.assert_allclose(pooled, ref.numpy(), rtol=0, atol=1e-5)
    branch1 = _emb({**TINY, "weights": str(weights), "image_branch": 1})
    with torch.no_grad():
        ref1 = bb(inp) @ ck["decoder.backbone1.0.weight"].T
    np.testing.assert_allclose(
        _data(branch1.embed_inputs(x[:1], output=POOLED)[0]), ref1[0].numpy(), atol=1e-5
    )
    absent = _emb({**TINY, "weights": str(weights), "image_branch": 7})  # rs-embed: the highest branch
    np.testing.assert_allclose(_data(absent.embed_inputs(x[:1], output=POOLED)[0]), pooled[0], atol=1e-6)


def test_single_mlp_head_keeps_linear_layers_only(tmp_path: Path) -> None:
    path = tmp_path / "mlp.pth"
    wildsat_checkpoint(path, head="mlp")
    state, _ = read_checkpoint(path)
    spec = head_spec(state)
    assert spec is not None
    assert (spec.kind, spec.branch, len(spec.layers), spec.out_dim) == ("single", 1, 4, HEAD_DIM)
    head = spec.build()
    assert [type(m).__name__ for m in head] == [
        "Linear",
        "ReLU",
        "Linear",
        "ReLU",
        "Linear",
        "ReLU",
        "Linear",
    ]
    v = torch.randn(3, 16)
    ref = v
    # the batch norms (decoder.backbone.{2,5,8}) are left out, as rs-embed does
    for i, li in enumerate((0, 3, 6, 9)):
        ref = ref @ state[f"decoder.backbone.{li}.weight"].T + state[f"decoder.backbone.{li}.bias"]
        ref = torch.relu(ref) if i < 3 else ref
    with torch.no_grad():
        torch.testing.assert_close(head(v), ref)


def test_no_head_falls_back_to_the_backbone(tmp_path: Path) -> None:
    path = tmp_path / "nohead.pth"
    wildsat_checkpoint(path, head="none")
    e = _emb({**TINY, "weights": str(path)})
    (p,) = e.embed_inputs(_x(1), output=POOLED)
    assert _data(p).shape == (16,)  # the classifier outputs (num_classes)
    assert p.meta["feature_source"] == "backbone_fallback"
    assert p.meta["image_head_available"] is False
    assert e.describe()["embedding_dim"] == 16
    auto = _emb({**TINY, "weights": str(path), "feature": "auto"})
    assert auto.embed_inputs(_x(1), output=POOLED)[0].meta["feature_source"] == "backbone"


# -- outputs ---------------------------------------------------------------------------------
def test_vit_grid_is_patch_tokens_and_pooled_tokens_option(weights: Path) -> None:
    e = _emb({**TINY, "weights": str(weights)})
    x = _x(1)
    (g,) = e.embed_inputs(x, output=GRID)
    assert _data(g).shape == (32, 2, 2)
    assert g.meta["grid_kind"] == "vit_patch_tokens"
    with torch.no_grad():
        toks = e.module.tokens(e.preprocess(torch.from_numpy(x[0][None])))
    np.testing.assert_allclose(_data(g), toks[0, 1:].reshape(2, 2, 32).permute(2, 0, 1).numpy(), atol=1e-6)
    tok = _emb({**TINY, "weights": str(weights), "pooled_from_tokens": True})
    (pm,) = tok.embed_inputs(x, output=POOLED)
    (px,) = tok.embed_inputs(x, output=OutputSpec.pooled("max"))
    np.testing.assert_allclose(_data(pm), _data(g).mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(_data(px), _data(g).max(axis=(1, 2)), atol=1e-6)
    flat = _emb({**TINY, "weights": str(weights), "grid_from_tokens": False})
    (g1,) = flat.embed_inputs(x, output=GRID)
    (p1,) = flat.embed_inputs(x, output=POOLED)
    assert _data(g1).shape == (HEAD_DIM, 1, 1)
    np.testing.assert_allclose(_data(g1)[:, 0, 0], _data(p1), atol=1e-6)


@pytest.mark.parametrize("variant", ["resnet50", "swint"])
def test_cnn_and_swin_variants_give_a_1x1_grid(variant: str, tmp_path: Path) -> None:
    path = tmp_path / f"{variant}-imagenet-bnfc.pth"
    kw = {"depth": 1, "num_classes": 16}
    if variant == "swint":
        kw.update(embed_dim=16, num_heads=1)
    wildsat_checkpoint(path, arch=variant, image_size=64, **kw)
    e = _emb({"variant": variant, "image_size": 64, "weights": str(tmp_path), **kw})
    x = _x(2, (40, 40))
    pooled = e.embed_inputs(x, output=POOLED)
    grid = e.embed_inputs(x, output=GRID)
    for p, g in zip(pooled, grid, strict=True):
        assert _data(p).shape == (HEAD_DIM,)
        assert _data(g).shape == (HEAD_DIM, 1, 1)
        assert g.meta["grid_kind"] == "vector_as_1x1"
        np.testing.assert_allclose(_data(g)[:, 0, 0], _data(p), atol=1e-6)
    assert e.describe()["grid_semantics"] == "vector_as_1x1"
    assert pooled[0].meta["arch"] == variant


# -- preprocessing -----------------------------------------------------------------------------
def test_preprocess_minmax_flat_unit_scale_and_pillow_resize(weights: Path) -> None:
    from PIL import Image

    e = wildsat.WildSATEmbedder({**TINY, "weights": str(weights)})
    flat = torch.full((1, 3, 32, 32), 1234.0)
    assert torch.count_nonzero(e.preprocess(flat)) == 0  # a flat input stretches to zeros (rs-embed)
    nan = torch.from_numpy(_x(1)[0][None].copy())
    nan[0, 0, 0, 0] = float("nan")
    ref = nan.clone()
    ref[0, 0, 0, 0] = 0.0
    torch.testing.assert_close(e.preprocess(nan), e.preprocess(ref))
    unit = wildsat.WildSATEmbedder({**TINY, "normalization": "unit_scale"})
    raw = torch.from_numpy(_x(1)[0][None])
    expected = np.floor(np.clip(raw.numpy() / np.float32(10000.0), 0, 1) * np.float32(255.0)) / np.float32(
        255.0
    )
    np.testing.assert_allclose(unit.preprocess(raw).numpy(), expected, atol=1e-7)
    big = torch.from_numpy(_x(1, (45, 40), seed=3)[0][None])
    levels = np.round(wildsat_golden(big.numpy())[0] * 255.0).astype(np.uint8)
    pil = Image.fromarray(levels.transpose(1, 2, 0), mode="RGB").resize((32, 32), resample=Image.BICUBIC)
    np.testing.assert_array_equal(
        np.round(e.preprocess(big)[0].numpy() * 255.0).astype(np.uint8), np.asarray(pil).transpose(2, 0, 1)
    )
    with pytest.raises(ModelError, match=r"\(B, 3, H, W\)"):
        e.preprocess(torch.zeros(1, 4, 32, 32))


def test_memory_per_item_grows_with_input_and_grid() -> None:
    e = wildsat.WildSATEmbedder({})
    small, big = e.memory_per_item((3, 224, 224)), e.memory_per_item((3, 1000, 1000))
    assert 4 * 224 * 224 * 40 < small < 64 * 2**20
    assert big - small == pytest.approx(16 * 3 * (1000**2 - 224**2))
    assert e.memory_per_item((3, 224, 224), GRID) > small
    assert wildsat.WildSATEmbedder({"variant": "resnet50"}).memory_per_item((3, 224, 224)) > small


# -- weights lookup ----------------------------------------------------------------------------------
def test_lookup_order_and_fast_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: Path
) -> None:
    src = WildSATSource.for_variant("vitb16")
    monkeypatch.setenv("RS_EMBED_WILDSAT_AUTO_DOWNLOAD", "0")
    with pytest.raises(ModelError, match=r"RS_EMBED_WILDSAT_CKPT.*AUTO_DOWNLOAD is off"):
        WildSATSource.for_variant("vitb16").find("wildsat", {})
    monkeypatch.setenv("RS_EMBED_WILDSAT_CKPT", str(weights))
    assert src.find("wildsat", {}) == weights / "vitb16-imagenet-bnfc.pth"
    assert src.find("wildsat", {"weights": str(weights / "vitb16-imagenet-bnfc.pth")}).is_file()
    monkeypatch.delenv("RS_EMBED_WILDSAT_CKPT")
    cache = tmp_path / "wildsat-cache"
    cache.mkdir()
    (cache / "vitb16-imagenet-bnfc.pth").write_bytes(b"x" * 100)
    monkeypatch.setenv("RS_EMBED_WILDSAT_CKPT_MIN_BYTES", "50")
    assert WildSATSource.for_variant("vitb16").find("wildsat", {}) == cache / "vitb16-imagenet-bnfc.pth"
    monkeypatch.setenv("RS_EMBED_WILDSAT_CKPT_MIN_BYTES", "1000")  # too small: an incomplete download
    monkeypatch.setenv("RS_EMBED_WILDSAT_AUTO_DOWNLOAD", "1")
    monkeypatch.setattr(wildsat_weights, "drive_reachable", lambda: False)
    with pytest.raises(ModelError, match=r"drive\.google\.com cannot be reached"):
        WildSATSource.for_variant("vitb16").find("wildsat", {})
    monkeypatch.setenv("RS_EMBED_WILDSAT_HF_REPO", "org/wildsat")
    with pytest.raises(ModelError, match="both RS_EMBED_WILDSAT_HF_REPO and RS_EMBED_WILDSAT_HF_FILE"):
        WildSATSource.for_variant("vitb16").find("wildsat", {})


def test_gdrive_download_through_the_confirmation_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google Drive (the network boundary) answers a large file with a form; the form's target gives the bytes."""
    calls: list[str] = []
    page = (
        b'<html><form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        b'<input type="hidden" name="id" value="FILEID"><input type="hidden" name="confirm" value="t">'
        b'<input type="hidden" name="uuid" value="u&amp;1"></form></html>'
    )

    class Resp(io.BytesIO):
        def __init__(self, body: bytes, ctype: str, url: str) -> None:
            super().__init__(body)
            self.headers = {"content-type": ctype}
            self._url = url

        def geturl(self) -> str:
            return self._url

    def fake_urlopen(url: str, timeout: float = 0) -> Resp:
        calls.append(url)
        if "drive.google.com" in url:
            return Resp(page, "text/html; charset=utf-8", url)
        return Resp(b"W" * 300, "application/octet-stream", url)

    monkeypatch.setattr(wildsat_weights.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(wildsat_weights, "drive_reachable", lambda: True)
    monkeypatch.setenv("RS_EMBED_WILDSAT_CKPT_MIN_BYTES", "200")
    monkeypatch.setenv("RS_EMBED_WILDSAT_GDRIVE_ID", "FILEID")
    path = WildSATSource.for_variant("swint").find("wildsat", {})
    assert path == tmp_path / "wildsat-cache" / "swint-imagenet-bnfc.pth"
    assert path.read_bytes() == b"W" * 300
    assert calls[0].endswith("id=FILEID")
    assert calls[1].startswith("https://drive.usercontent.google.com/download?")
    assert "confirm=t" in calls[1]
    assert "uuid=u%261" in calls[1]
    assert not list(path.parent.glob("*.part"))
    # a truncated answer is refused and not kept
    monkeypatch.setenv("RS_EMBED_WILDSAT_CKPT_MIN_BYTES", "1000")
    with pytest.raises(ModelError, match="only 300 bytes"):
        WildSATSource.for_variant("resnet50").find("wildsat", {})
    assert not (tmp_path / "wildsat-cache" / "resnet50-imagenet-bnfc.pth").exists()


def test_offline_preflight_reports_pending_download(monkeypatch: pytest.MonkeyPatch) -> None:
    from rs_embed_dask.models.weights import DOWNLOAD_PENDING, offline_probe

    monkeypatch.setattr(wildsat_weights, "drive_reachable", lambda: True)
    monkeypatch.setattr(
        wildsat_weights, "download_gdrive", lambda *a, **k: pytest.fail("downloaded in a probe")
    )
    with offline_probe():
        assert WildSATSource.for_variant("vitb16").find("wildsat", {}) == DOWNLOAD_PENDING


def test_opt_namespace_is_the_only_object_allowed(tmp_path: Path) -> None:
    path = tmp_path / "ns.pth"
    torch.save({"satellite_state_dict": {"backbone.w": torch.ones(1)}, "opt": argparse.Namespace(a=1)}, path)
    assert read_checkpoint(path)[1] == {"a": 1}
    assert sorted(VARIANTS) == ["resnet50", "swint", "vitb16"]


def test_single_composite_shared_with_other_s2_rgb_models(weights: Path) -> None:
    from rs_embed_dask.resolve import resolve_model

    e = wildsat.WildSATEmbedder({**TINY, "weights": str(weights)})
    assert e.n_frames is None
    assert e.frame_count() is None
    assert e.temporal_semantics() == "single"  # rs-embed's shared S2 RGB fetch: one composite of the window
    rm = resolve_model("wildsat", backend="synthetic", model_config={**TINY, "weights": str(weights)})
    assert rm.temporal_semantics == "single"
    with pytest.raises(ModelError, match=r"image_size \(\$RS_EMBED_WILDSAT_IMG\) must be an integer"):
        wildsat.WildSATEmbedder({"image_size": "big"})


# -- the public API and the Dask export --------------------------------------------------------------
def test_get_embedding_rect_roi_pools_the_roi_tokens(weights: Path) -> None:
    from rs_embed_dask import BBox, TemporalSpec, get_embedding

    cfg = {**TINY, "weights": str(weights)}
    t = TemporalSpec.range("2022-06-01", "2022-07-01")
    roi = BBox(8.40, 47.30, 8.404, 47.302)  # wider than tall: fetched as a square, cut back
    kw: dict[str, Any] = {
        "backend": "synthetic",
        "device": "cpu",
        "model_config": cfg,
        "input_prep": "resize",
    }
    g = get_embedding("wildsat", spatial=roi, temporal=t, output=GRID, **kw)
    p = get_embedding("wildsat", spatial=roi, temporal=t, **kw)
    assert _data(g).shape == (32, 2, 2)  # the square's 2 x 2 tokens; the ROI spans all of them
    # rs-embed: the mean of the ROI's tokens (768-d at full size), not the image head
    assert p.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(_data(p), _data(g).mean(axis=(1, 2)), atol=1e-5)


@pytest.mark.cluster
def test_export_matches_get_embedding(weights: Path, tmp_path: Path) -> None:
    from _exports import TEMPORAL as temporal
    from _exports import assert_row_is_get_embedding, rois, threaded_export

    from rs_embed_dask import load_export

    spatials, cfg, out = rois(3, buffer_m=160), {**TINY, "weights": str(weights)}, tmp_path / "wildsat.npz"
    man = threaded_export(out, {"wildsat": cfg}, spatials, temporal)
    assert man["status"] == "ok"
    emb = np.asarray(load_export(out).embedding("wildsat"))
    assert emb.shape == (3, HEAD_DIM)
    assert_row_is_get_embedding(emb[1], "wildsat", spatials[1], temporal, cfg)
