"""Family semantics of remoteclip, satmae, scalemae and dofa (the contract is in test_models_contract.py).

Weights are random and written in each family's checkpoint format by
``tests/model_cases``; only the Hugging Face download is mocked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases import dofa as dofa_case
from model_cases import remoteclip as clip_case
from model_cases import satmae as satmae_case

from rs_embed_dask import list_models
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import describe_model, get_model_class
from rs_embed_dask.core.specs import OutputSpec, SensorSpec

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()
FAMILIES = ("remoteclip", "satmae", "scalemae", "dofa")


def _rgb(n: int, hw: tuple[int, int], seed: int, c: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 6000, size=(c, *hw)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> dict[str, Path]:
    """One folder per family holding its tiny checkpoint."""
    from model_cases import scalemae as scalemae_case

    out = {}
    for name, case in (
        ("remoteclip", clip_case),
        ("satmae", satmae_case),
        ("scalemae", scalemae_case),
        ("dofa", dofa_case),
    ):
        d = tmp_path_factory.mktemp(name)
        case.CASES[name].setup(d)
        out[name] = d
    return out


def _make(name: str, weights_dir: dict[str, Path], **cfg: Any) -> Any:
    tiny = {"remoteclip": clip_case.TINY, "dofa": dofa_case.TINY}.get(name, satmae_case.TINY)
    emb = get_model_class(name)({"weights": str(weights_dir[name]), **tiny, **cfg})
    emb.load("cpu")
    return emb


# -- registry and weights --------------------------------------------------------------------------
def test_registered_and_described_with_defaults():
    assert set(FAMILIES) <= set(list_models())
    dims = {"remoteclip": 512, "satmae": 1024, "scalemae": 1024, "dofa": 768}
    for name in FAMILIES:
        d = describe_model(name)
        assert d["embedding_dim"] == dims[name]
        assert d["input_size"] == 224
        assert d["weights"]["env_var"].startswith("RS_EMBED_")
        assert get_model_class(name).input_size == 224
    assert describe_model("remoteclip")["grid_dim"] == 768  # rs-embed's grid: the transformer width
    assert get_model_class("remoteclip")({"grid_tokens": "projected"}).describe()["grid_dim"] == 512
    assert get_model_class("dofa")({"variant": "large"}).describe()["embedding_dim"] == 1024
    assert describe_model("dofa")["inputs"]["bands"] == [
        "B4",
        "B3",
        "B2",
        "B5",
        "B6",
        "B7",
        "B8",
        "B11",
        "B12",
    ]


@pytest.mark.parametrize("name", FAMILIES)
def test_missing_weights_offline_is_a_model_error(name, monkeypatch):
    import huggingface_hub

    def offline(*args: Any, **kwargs: Any) -> str:  # the network boundary
        raise OSError("offline and not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    env = get_model_class(name)().describe()["weights"]["env_var"]
    monkeypatch.delenv(env, raising=False)
    emb = get_model_class(name)()
    with pytest.raises(ModelError, match="No weights found") as info:
        emb.load("cpu")
    assert env in str(info.value)
    assert "huggingface-cli download" in str(info.value)
    assert emb.module is None  # never random weights


def test_weights_from_environment_variable(weights_dir, monkeypatch):
    monkeypatch.setenv("RS_EMBED_SATMAE_WEIGHTS", str(weights_dir["satmae"] / "model.safetensors"))
    emb = get_model_class("satmae")(satmae_case.TINY)
    emb.load("cpu")
    (out,) = emb.embed_inputs(_rgb(1, (32, 32), 0), output=POOLED)
    assert out.data.shape == (32,)


def test_checkpoint_of_another_shape_is_rejected(weights_dir):
    emb = get_model_class("satmae")(
        {"weights": str(weights_dir["satmae"]), **satmae_case.TINY, "embed_dim": 64}
    )
    with pytest.raises(ModelError, match="does not match model 'satmae'"):
        emb.load("cpu")


def test_missing_encoder_key_is_rejected(tmp_path):
    from safetensors.torch import save_file

    state = satmae_case.mae_state()
    del state["norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    emb = get_model_class("satmae")({"weights": str(tmp_path), **satmae_case.TINY})
    with pytest.raises(ModelError, match=r"missing keys \['norm.weight'\]"):
        emb.load("cpu")


@pytest.mark.parametrize(
    ("name", "cfg", "match"),
    [
        ("remoteclip", {"variant": "vit-h-14"}, "'variant' must be one of"),
        ("remoteclip", {"grid_tokens": "cls"}, "'grid_tokens' must be one of"),
        ("satmae", {"image_size": 40}, "multiple of 16"),
        ("scalemae", {"depth": 0}, "'depth' must be an integer >= 1"),
        ("dofa", {"variant": "huge"}, "'variant' must be one of"),
        ("dofa", {"bands": ["B4", "B99"]}, r"unknown bands \['B99'\].*Known bands: \["),
        ("dofa", {"bands": ["B1", "B8A"]}, "no normalisation statistics for bands"),
        ("dofa", {"bands": ["VV", "VH"], "mean": [1.0]}, "go together"),
        ("dofa", {"bands": ["VV", "VH"], "mean": [1.0], "std": [1.0]}, "one value per band"),
    ],
)
def test_config_errors(name, cfg, match):
    with pytest.raises(ModelError, match=match):
        get_model_class(name)(cfg)


def test_preprocessing_numbers_from_the_constants():
    emb = get_model_class("satmae")({"image_size": 16})
    x = torch.tensor([5000.0, 10000.0, -5.0, 12345.0]).view(1, 1, 2, 2).repeat(1, 3, 8, 8)
    out = emb.preprocess(x)[0, 0, :2, :2].flatten().numpy()
    levels = np.array([127, 255, 0, 255]) / 255.0  # 0.5 * 255 = 127.5 is truncated to 127
    np.testing.assert_allclose(out, (levels - 0.4182007) / 0.2877428, rtol=1e-6)
    dofa = get_model_class("dofa")({"image_size": 16})
    y = dofa.preprocess(torch.full((1, 9, 16, 16), 5000.0))[0, :, 0, 0].numpy()
    np.testing.assert_allclose(y[0], (127.5 - 114.1099739) / 77.84352553, rtol=1e-6)
    np.testing.assert_allclose(y[-1], (127.5 - 56.66528851) / 42.55886798, rtol=1e-6)


def test_non_square_inputs_are_padded_then_resized():
    emb = get_model_class("satmae")({"image_size": 32})
    out = emb.preprocess(torch.rand(2, 3, 20, 50) * 8000)
    assert tuple(out.shape) == (2, 3, 32, 32)
    clip = get_model_class("remoteclip")({"image_size": 64})
    out = clip.preprocess(torch.rand(1, 3, 100, 64) * 8000)
    assert tuple(out.shape) == (1, 3, 64, 64)


# -- remoteclip ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["vit-b-32", "rn50"])
def test_remoteclip_pooled_is_open_clip_encode_image(variant, tmp_path):
    path = clip_case.write_checkpoint(tmp_path, variant)
    emb = get_model_class("remoteclip")(
        {"weights": str(path), "variant": variant, "grid_tokens": "projected", **clip_case.TINY}
    )
    emb.load("cpu")
    ref = clip_case.tiny_clip(variant).eval()
    ref.load_state_dict(torch.load(path, weights_only=True))
    xs = _rgb(2, (64, 64), 3)
    pooled = emb.embed_inputs(xs, output=POOLED)
    with torch.no_grad():
        expected = ref.encode_image(emb.preprocess(torch.from_numpy(np.stack(xs)))).numpy()
    for p, e in zip(pooled, expected, strict=True):
        np.testing.assert_allclose(p.data, e, rtol=1e-4, atol=1e-5)
    (grid,) = emb.embed_inputs(xs[:1], output=GRID)
    assert grid.data.shape == (32, 2, 2)
    # rs-embed returns encode_image whatever the pooling (pooling only reduces ROI-cropped grids)
    (mx,) = emb.embed_inputs(xs[:1], output=OutputSpec.pooled("max"))
    np.testing.assert_allclose(mx.data, pooled[0].data, rtol=1e-5, atol=1e-6)


def test_remoteclip_projected_grid_is_ln_post_then_projection_of_the_default_grid(weights_dir):
    proj = _make("remoteclip", weights_dir, grid_tokens="projected")
    width = _make("remoteclip", weights_dir)  # the default: rs-embed's width, before ln_post
    x = _rgb(1, (64, 64), 4)
    (g_proj,) = proj.embed_inputs(x, output=GRID)
    (g_width,) = width.embed_inputs(x, output=GRID)
    assert g_width.data.shape == (64, 2, 2)
    tokens = torch.from_numpy(g_width.data.reshape(64, 4).T.copy())  # (N, width), row-major
    with torch.no_grad():
        ref = (proj.module.ln_post(tokens) @ proj.module.proj).numpy()  # (N, embed_dim)
    np.testing.assert_allclose(g_proj.data.reshape(32, 4).T, ref, rtol=1e-4, atol=1e-5)


# -- satmae -------------------------------------------------------------------------------------------
def test_satmae_grid_is_the_token_sequence_row_major(weights_dir):
    emb = _make("satmae", weights_dir)
    xs = _rgb(1, (32, 32), 5)
    (grid,) = emb.embed_inputs(xs, output=GRID)
    with torch.no_grad():
        tokens = emb.module.forward_features(emb.preprocess(torch.from_numpy(xs[0])[None]))[0, 1:]
    # token k is the patch at row k // 2, column k % 2 (row 0 = top = north)
    for k in range(4):
        np.testing.assert_allclose(grid.data[:, k // 2, k % 2], tokens[k].numpy(), rtol=1e-5, atol=1e-6)
    assert grid.meta["y_axis_direction"] == "north_to_south"


def test_satmae_positional_table_is_resized_for_another_input_size(weights_dir):
    emb = _make("satmae", weights_dir, image_size=64)
    assert tuple(emb.module.pos_embed.shape) == (1, 17, 32)
    (grid,) = emb.embed_inputs(_rgb(1, (64, 64), 6), output=GRID)
    assert grid.data.shape == (32, 4, 4)


# -- scalemae -----------------------------------------------------------------------------------------
def _mae_sincos_numpy(dim: int, side: int, res: float) -> np.ndarray:
    """The MAE 2-D sin-cos table written out with numpy (first half: x coordinate, second: y)."""
    ys, xs = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64), indexing="ij")

    def one(pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4.0))
        out = np.outer(pos.reshape(-1) * res, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(xs), one(ys)], axis=1)


def test_scalemae_positional_embedding_matches_mae_formula():
    from rs_embed_dask.models.vit import sincos_pos_embed_2d

    got = sincos_pos_embed_2d(16, 3, 3, torch.tensor([1.0, 2.5])).numpy()
    np.testing.assert_allclose(got[0], _mae_sincos_numpy(16, 3, 1.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], _mae_sincos_numpy(16, 3, 2.5), rtol=1e-5, atol=1e-6)


def test_scalemae_fetch_scale_is_a_model_input(weights_dir):
    emb = _make("scalemae", weights_dir)
    xs = _rgb(3, (32, 32), 7)
    ctx = [{"sensor": SensorSpec(collection="C", bands=("B4", "B3", "B2"), scale_m=s)} for s in (10, 30, 10)]
    mixed = emb.embed_inputs(xs, output=POOLED, contexts=ctx)
    for x, c, m in zip(xs, ctx, mixed, strict=True):
        (single,) = emb.embed_inputs([x], output=POOLED, contexts=[c])
        np.testing.assert_allclose(m.data, single.data, rtol=0, atol=1e-5)
        assert m.meta["input_res_m"] == pytest.approx(c["sensor"].scale_m * 32 / 32)
    assert not np.allclose(mixed[0].data, emb.embed_inputs([xs[0]], output=POOLED, contexts=ctx[1:2])[0].data)
    # without a context the describe() default (10 m) is used; a larger fetch covers more ground per pixel
    (default,) = emb.embed_inputs(xs[:1], output=POOLED)
    np.testing.assert_allclose(default.data, mixed[0].data, rtol=0, atol=1e-5)
    (big,) = emb.embed_inputs(_rgb(1, (64, 64), 8), output=POOLED)
    assert big.meta["input_res_m"] == pytest.approx(10 * 64 / 32)


# -- dofa ---------------------------------------------------------------------------------------------
def test_dofa_pooled_is_layernorm_of_the_grid_mean(weights_dir):
    emb = _make("dofa", weights_dir)
    xs = _rgb(2, (32, 32), 9, c=9)
    pooled = emb.embed_inputs(xs, output=POOLED)
    grid = emb.embed_inputs(xs, output=GRID)
    w = emb.module.norm.weight.numpy()
    b = emb.module.norm.bias.numpy()
    for p, g in zip(pooled, grid, strict=True):
        m = g.data.mean(axis=(1, 2)).astype(np.float64)
        ref = (m - m.mean()) / math.sqrt(m.var() + 1e-6) * w + b
        np.testing.assert_allclose(p.data, ref, rtol=1e-4, atol=1e-4)


def test_dofa_wavelengths_condition_the_patch_embedding(weights_dir):
    xs = _rgb(1, (32, 32), 10, c=9)
    a = _make("dofa", weights_dir).embed_inputs(xs, output=POOLED)[0].data
    shifted = [w + 0.05 for w in _make("dofa", weights_dir).wavelengths]
    b = _make("dofa", weights_dir, wavelengths=shifted).embed_inputs(xs, output=POOLED)[0].data
    assert not np.allclose(a, b, atol=1e-4)


def test_dofa_any_band_set_with_known_wavelengths(weights_dir):
    emb = _make("dofa", weights_dir, bands=["VV", "VH"], mean=[-12.0, -19.0], std=[5.0, 5.5])
    assert emb.default_sensor().bands == ("VV", "VH")
    assert emb.wavelengths == [3.75, 3.75]
    x = np.random.default_rng(11).normal(-15, 4, size=(2, 40, 30)).astype(np.float32)
    (grid,) = emb.embed_inputs([x], output=GRID)
    assert grid.data.shape == (32, 2, 2)
    np.testing.assert_allclose(
        emb.preprocess(torch.full((1, 2, 32, 32), -12.0))[0, 0].numpy(), np.zeros((32, 32)), atol=1e-6
    )
    landsat = get_model_class("dofa")({"bands": ["SR_B4", "SR_B3"], "mean": [0, 0], "std": [1, 1]})
    assert landsat.wavelengths == [0.655, 0.561]
    with pytest.raises(ModelError, match="expects \\(B, 2, H, W\\)"):
        emb.embed_inputs([np.zeros((3, 32, 32), np.float32)], output=POOLED)
