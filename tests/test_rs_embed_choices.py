"""Where the built-in families follow rs-embed 0.3.1's numbers, one test per choice.

Each test builds its reference independently (Pillow, torchvision, open_clip,
numpy) from what rs-embed's adapters do (``embedders/onthefly_*.py``,
``tools/shape.py``); the models run on tiny random checkpoints written by
``tests/model_cases``.  rs-embed itself is not needed.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases import prithvi as prithvi_case
from model_cases import remoteclip as clip_case
from model_cases import satmae as satmae_case
from PIL import Image

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.models.prithvi import PrithviEmbedder, frame_bins, rs_embed_frame_count
from rs_embed_dask.models.rgb8 import pil_resize, to_levels_u8
from rs_embed_dask.models.vit import pad_to_square

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _dn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Sentinel-2 DN beyond both ends of [0, 10000], so that clipping is exercised."""
    return np.random.default_rng(seed).uniform(-500, 11000, size=shape).astype(np.float32)


def _u8_numpy(dn_chw: np.ndarray) -> np.ndarray:
    """rs-embed's conversion: ``(np.clip(DN / 10000, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)``."""
    return (np.clip(dn_chw / 10000.0, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)


# -- 8-bit RGB and Pillow ------------------------------------------------------------------------
def test_levels_are_numpys_truncating_uint8_cast():
    dn = _dn((3, 40, 40), 0)
    dn[0, 0, :6] = [0.0, 39.2, 40.0, 5000.0, 10000.0, 12345.0]
    got = to_levels_u8(torch.from_numpy(dn)[None])[0].numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _u8_numpy(dn).transpose(2, 0, 1))
    assert to_levels_u8(torch.tensor([float("nan")]).view(1, 1, 1, 1)).item() == 0


@pytest.mark.parametrize("size", [128, 300])
@pytest.mark.parametrize("channels", [3, 2])
def test_pil_resize_is_pillow_bicubic_uint8(size, channels):
    img = np.random.default_rng(size + channels).integers(0, 256, size=(channels, 211, 211), dtype=np.uint8)
    got = pil_resize(torch.from_numpy(img)[None], size)[0].numpy()
    if channels == 3:
        ref = np.asarray(Image.fromarray(img.transpose(1, 2, 0)).resize((size, size), Image.BICUBIC))
        ref = ref.transpose(2, 0, 1)
    else:
        ref = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BICUBIC)) for p in img])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)
    # torch's antialiased bicubic with one rounding is not Pillow's filter
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(img)[None].float(), size=(size, size), mode="bicubic", antialias=True
    )
    assert not np.array_equal(smooth.round().clamp(0, 255).to(torch.uint8)[0].numpy(), ref)


# -- remoteclip ----------------------------------------------------------------------------------
def _clip_transform(size: int) -> Any:
    """The transform rs-embed builds for RemoteCLIP (``_remoteclip_encode_tokens``)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )


@pytest.mark.parametrize(
    ("hw", "size"), [((200, 200), 128), ((200, 200), 300), ((96, 150), 128), ((224, 224), 224)]
)
def test_remoteclip_preprocess_is_rs_embeds_pil_transform(hw, size):
    dn = _dn((3, *hw), 1)
    got = get_model_class("remoteclip")({"image_size": size}).preprocess(torch.from_numpy(dn)[None])[0]
    ref = _clip_transform(size)(Image.fromarray(_u8_numpy(dn)))
    assert tuple(got.shape) == (3, size, size)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())


def test_remoteclip_grid_is_last_block_tokens_before_ln_post(tmp_path):
    path = clip_case.write_checkpoint(tmp_path)
    emb = get_model_class("remoteclip")({"weights": str(path), **clip_case.TINY})
    emb.load("cpu")
    ref = clip_case.tiny_clip().eval()
    ref.load_state_dict(torch.load(path, weights_only=True))
    captured: dict[str, torch.Tensor] = {}
    ref.visual.transformer.register_forward_hook(lambda _m, _i, out: captured.setdefault("t", out))
    dn = _dn((3, 64, 64), 2)
    x = _clip_transform(64)(Image.fromarray(_u8_numpy(dn)))[None]
    with torch.no_grad():
        ref.encode_image(x)
    tokens = captured["t"][0, 1:]  # (N, width): class token dropped, before ln_post
    (grid,) = emb.embed_inputs([dn], output=GRID)
    assert grid.data.shape == (64, 2, 2)
    for k in range(4):  # row-major patches, row 0 = top
        np.testing.assert_allclose(grid.data[:, k // 2, k % 2], tokens[k].numpy(), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        after = ref.visual.ln_post(tokens).numpy()
    assert not np.allclose(grid.data.reshape(64, 4).T, after, atol=1e-2)


# -- satmae and scalemae -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["satmae", "scalemae"])
@pytest.mark.parametrize("size", [128, 300])
def test_mae_preprocess_is_rs_embeds_pil_resize(name, size):
    from torchvision import transforms

    emb = get_model_class(name)({"image_size": 16 * (size // 16)})
    dn = _dn((3, 200, 200), 3)
    s = emb.image_size
    # rs-embed: resize_rgb_u8 (Pillow), then Resize((s, s)) (a no-op), ToTensor, Normalize
    u8 = np.array(Image.fromarray(_u8_numpy(dn)).resize((s, s), resample=Image.BICUBIC))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=emb.mean, std=emb.std)])
    np.testing.assert_array_equal(emb.preprocess(torch.from_numpy(dn)[None])[0].numpy(), tf(u8).numpy())


def _mae_dir(tmp_path: Path, *, identity_blocks: bool = False, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    state = satmae_case.mae_state(seed=seed)
    if identity_blocks:  # the residual branches add nothing: token k is norm(patch k + position k)
        for key in ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            state[f"blocks.0.{key}"] = torch.zeros_like(state[f"blocks.0.{key}"])
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_satmae_layernorm_eps_is_rs_embeds(tmp_path):
    d = _mae_dir(tmp_path)
    for name, eps in (("satmae", 1e-5), ("scalemae", 1e-6)):
        emb = get_model_class(name)({"weights": str(d), **satmae_case.TINY})
        assert emb.describe()["layer_norm_eps"] == eps
        emb.load("cpu")
        norms = [m for m in emb.module.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == 3  # two in the block, the final norm
        assert {m.eps for m in norms} == {eps}
    paper = get_model_class("satmae")({"weights": str(d), **satmae_case.TINY, "norm_eps": 1e-6})
    paper.load("cpu")
    assert paper.module.norm.eps == 1e-6


def test_satmae_grid_is_row_major_and_deterministic(tmp_path):
    emb = get_model_class("satmae")(
        {"weights": str(_mae_dir(tmp_path, identity_blocks=True)), **satmae_case.TINY}
    )
    emb.load("cpu")
    dn = _dn((3, 32, 32), 4)
    (grid,) = emb.embed_inputs([dn], output=GRID)
    m = emb.module
    x = emb.preprocess(torch.from_numpy(dn)[None])
    with torch.no_grad():
        for r in range(2):
            for c in range(2):
                patch = x[:, :, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
                tok = m.patch_embed.proj(patch).flatten(1) + m.pos_embed[0, 1 + 2 * r + c]
                np.testing.assert_allclose(grid.data[:, r, c], m.norm(tok)[0].numpy(), rtol=1e-4, atol=1e-5)
    # rs-embed shuffles the tokens at random (random_masking, mask ratio 0); ours are the same every run
    (again,) = emb.embed_inputs([dn], output=GRID)
    np.testing.assert_array_equal(grid.data, again.data)


def test_scalemae_default_has_no_final_norm(tmp_path):
    d = str(_mae_dir(tmp_path, seed=1))
    default = get_model_class("scalemae")({"weights": d, **satmae_case.TINY})
    paper = get_model_class("scalemae")({"weights": d, **satmae_case.TINY, "final_norm": True})
    assert default.describe()["model_config"]["final_norm"] is False
    xs = [_dn((3, 32, 32), 5)]
    (g0,) = default.embed_inputs(xs, output=GRID)
    (g1,) = paper.embed_inputs(xs, output=GRID)
    (p0,) = default.embed_inputs(xs, output=POOLED)
    (p1,) = paper.embed_inputs(xs, output=POOLED)
    np.testing.assert_allclose(
        p0.data, g0.data.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
    )  # pre-norm token mean
    assert not np.allclose(p0.data, p1.data, atol=1e-3)
    with torch.no_grad():  # the paper's tokens are the LayerNorm of rs-embed's, token by token
        normed = paper.module.norm(torch.from_numpy(g0.data.reshape(32, 4).T.copy())).numpy()
    np.testing.assert_allclose(g1.data.reshape(32, 4).T, normed, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="'final_norm' must be true or false"):
        get_model_class("scalemae")({"final_norm": "yes"})


# -- square padding (prithvi, dofa: rs-embed's prepare_square) ----------------------------------
@pytest.mark.parametrize(
    ("hw", "mode"), [((20, 26), "reflect"), ((10, 25), "edge"), ((25, 12), "edge"), ((9, 16), "reflect")]
)
def test_pad_to_square_is_rs_embeds_center_pad(hw, mode):
    x = _dn((2, 3, *hw), 6)
    h, w = hw
    d = abs(h - w)
    pad = (
        ((0, 0), (0, 0), (d // 2, d - d // 2), (0, 0))
        if h < w
        else ((0, 0), (0, 0), (0, 0), (d // 2, d - d // 2))
    )
    ref = np.pad(x, pad, mode=mode)  # reflect unless the whole pad reaches the short side
    np.testing.assert_array_equal(pad_to_square(torch.from_numpy(x)).numpy(), ref)
    u8 = torch.from_numpy(x).clamp(0, 255).to(torch.uint8)
    np.testing.assert_array_equal(pad_to_square(u8).numpy(), np.pad(u8.numpy(), pad, mode=mode))


def _bilinear(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, 1, *x.shape[-2:])
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out.reshape(*x.shape[:-2], size, size).numpy()


def test_dofa_pads_then_resizes_bilinearly():
    emb = get_model_class("dofa")({"image_size": 32})
    x = np.random.default_rng(7).uniform(0, 9000, size=(1, 9, 10, 25)).astype(np.float32)
    levels = x / np.float32(10000.0) * np.float32(255.0)
    mean = np.array(emb.norm_mean, np.float32).reshape(1, -1, 1, 1)
    std = np.array(emb.norm_std, np.float32).reshape(1, -1, 1, 1)
    ref = _bilinear(np.pad((levels - mean) / std, ((0, 0), (0, 0), (7, 8), (0, 0)), mode="edge"), 32)
    np.testing.assert_allclose(emb.preprocess(torch.from_numpy(x)).numpy(), ref, rtol=1e-5, atol=1e-5)


# -- prithvi -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prithvi_cfg(tmp_path_factory) -> dict:
    return {**prithvi_case.TINY, "weights": str(prithvi_case.write_checkpoint(tmp_path_factory.mktemp("p")))}


def _ctx() -> dict:
    return {
        "spatial": PointBuffer(10.0, 45.0, 500),
        "temporal": TemporalSpec.range("2022-01-01", "2022-12-31"),
        "sensor": SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2",), scale_m=30),
        "fetch_meta": {},
    }


def test_prithvi_pads_then_resizes_each_frame_bilinearly(prithvi_cfg):
    emb = PrithviEmbedder(prithvi_cfg)
    x = np.random.default_rng(8).uniform(0, 9000, size=(4, 6, 20, 26)).astype(np.float32)
    square = _bilinear(np.pad(x, ((0, 0), (0, 0), (3, 3), (0, 0)), mode="reflect"), 32)
    for out in (POOLED, GRID):
        (a,) = emb.embed_inputs([x], output=out, contexts=[_ctx()])
        (b,) = emb.embed_inputs([square], output=out, contexts=[_ctx()])
        np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-4)
    stretched = _bilinear(x, 32)
    (c,) = emb.embed_inputs([stretched], output=POOLED, contexts=[_ctx()])
    assert not np.allclose(c.data, emb.embed_inputs([x], output=POOLED, contexts=[_ctx()])[0].data, atol=1e-4)


def test_prithvi_unit_scaling_maps_no_data_to_zero():
    x = torch.tensor([float("nan"), -5.0, 5000.0, 20000.0]).view(1, 1, 1, 2, 2).repeat(1, 1, 6, 1, 1)
    np.testing.assert_array_equal(PrithviEmbedder().preprocess(x)[0, 0, 0].flatten().numpy(), [0, 0, 0.5, 1])


def test_prithvi_repeated_frames_are_dropped_with_their_bins(prithvi_cfg):
    emb = PrithviEmbedder(prithvi_cfg)
    a, b = (np.random.default_rng(s).uniform(0, 5000, size=(6, 32, 32)).astype(np.float32) for s in (9, 10))
    series = np.stack([a, b, a, b])  # a provider's back-filled bins repeat earlier composites
    ctx = _ctx()
    bins = frame_bins(ctx, 4)
    two = {
        **ctx,
        "fetch_meta": {"frames": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in bins[:2]]},
    }
    for out in (POOLED, GRID):
        (got,) = emb.embed_inputs([series], output=out, contexts=[ctx])
        (ref,) = emb.embed_inputs([series[:2]], output=out, contexts=[two])
        np.testing.assert_allclose(got.data, ref.data, rtol=1e-5, atol=1e-6)
        assert got.meta["n_frames"] == 2
    mids = [s.toordinal() + (e - s).days // 2 - date(2022, 1, 1).toordinal() + 1 for s, e in bins[:2]]
    assert [d for _, d in got.meta["temporal_coords"]] == mids
    (full,) = emb.embed_inputs([series], output=POOLED, contexts=[ctx])
    (undup,) = emb.embed_inputs([np.stack([a, b, a + 1, b + 1])], output=POOLED, contexts=[ctx])
    assert undup.meta["n_frames"] == 4
    assert not np.allclose(full.data, undup.data, atol=1e-4)


def test_prithvi_grid_reduces_frames_with_the_output_pooling(prithvi_cfg):
    emb = PrithviEmbedder(prithvi_cfg)
    x = np.random.default_rng(11).uniform(0, 5000, size=(4, 6, 32, 32)).astype(np.float32)
    (mean,) = emb.embed_inputs([x], output=GRID)
    (mx,) = emb.embed_inputs([x], output=OutputSpec(mode="grid", pooling="max"))
    with torch.no_grad():
        tok = emb.module(emb.preprocess(torch.from_numpy(x)[None]).permute(0, 2, 1, 3, 4))[0]  # T, h, w, D
    np.testing.assert_allclose(mean.data, tok.mean(0).permute(2, 0, 1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mx.data, tok.amax(0).permute(2, 0, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_prithvi_position_table_is_recomputed_not_read(prithvi_cfg, tmp_path):
    state = torch.load(prithvi_cfg["weights"], weights_only=True)
    state["encoder.pos_embed"] = torch.randn(1, 1 + 4 * 2 * 2, 32)  # the shape of a 32 px, 4-frame table
    torch.save(state, tmp_path / "noisy.pt")
    x = [np.random.default_rng(12).uniform(0, 5000, size=(4, 6, 32, 32)).astype(np.float32)]
    (a,) = PrithviEmbedder(prithvi_cfg).embed_inputs(x, output=POOLED)
    (b,) = PrithviEmbedder({**prithvi_cfg, "weights": str(tmp_path / "noisy.pt")}).embed_inputs(
        x, output=POOLED
    )
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize(
    ("start", "end", "frames"),
    [("2022-06-01", "2022-07-01", 1), ("2022-06-01", "2022-07-26", 1), ("2022-06-01", "2022-07-27", 2),
     ("2022-06-01", "2022-08-30", 3), ("2022-06-01", "2022-09-21", 4), ("2022-01-01", "2023-01-01", 4)],
)  # fmt: skip
def test_rs_embed_auto_frame_count(start, end, frames):
    assert rs_embed_frame_count(TemporalSpec.range(start, end)) == frames
    assert rs_embed_frame_count(None) == 3  # rs-embed's default window, 92 days
