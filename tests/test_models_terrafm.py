"""terrafm: constants, Sentinel-1 through ``modality="s1"``, preprocessing, loading and batching.

Weights are a tiny random TerraFM in the official ``TerraFM-B.pth`` layout
(``tests/model_cases/terrafm.py``), loaded through the real loading code.
Fetches go through a provider that logs the sensor of every call
(``tests/_sensor_log_plugins.py``), so "``modality="s1"`` fetches VV/VH" is
checked where the request reaches the provider.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import _sensor_log_plugins as slog  # noqa: E402
from model_cases.terrafm import TINY, terrafm_state  # noqa: E402

from rs_embed_dask import (  # noqa: E402
    BBox,
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    describe_model,
    export_batch,
    get_embedding,
    get_embeddings_batch,
    list_models,
    load_export,
)
from rs_embed_dask.core.errors import ModelError  # noqa: E402
from rs_embed_dask.core.registry import canonical_model_name, get_model_class  # noqa: E402
from rs_embed_dask.models.terrafm import S1_COLLECTION, TerraFMEmbedder, build_terrafm_encoder  # noqa: E402
from rs_embed_dask.providers.synthetic import SyntheticProvider  # noqa: E402
from rs_embed_dask.resolve import get_embedder  # noqa: E402

ROI = PointBuffer(8.41, 47.37, 160)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")
S2_12 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
S1_SENSOR = SensorSpec(collection=S1_COLLECTION, bands=("VV", "VH"), modality="s1")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("terrafm")
    torch.save(terrafm_state(), d / "TerraFM-B.pth")
    return {"weights": str(d), **TINY}


@pytest.fixture
def log(tmp_path: Path) -> Any:
    slog.register()
    yield str(tmp_path / "fetches.log")
    slog.unregister()


def _numpy_s1(raw: np.ndarray) -> np.ndarray:
    """rs-embed's S1 rule written independently with numpy: log1p, p99 over both bands, clip."""
    x = np.log1p(np.maximum(raw.astype(np.float32), np.float32(0.0)))
    denom = float(np.percentile(x, 99)) if np.isfinite(x).all() else 1.0
    denom = denom if denom > 0 else 1.0
    return np.clip(x / denom, 0.0, 1.0).astype(np.float32)


# -- constants ------------------------------------------------------------------------------
def test_describe_constants() -> None:
    d = describe_model("terrafm")
    assert d["embedding_dim"] == 768
    assert d["input_size"] == d["defaults"]["image_size"] == 224
    assert d["defaults"]["scale_m"] == 10
    assert d["defaults"]["modality"] == "s2"
    assert d["inputs"] == {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": S2_12}
    assert set(d["modalities"]) == {"s2", "s1"}
    assert d["modalities"]["s2"]["bands"] == S2_12
    assert d["modalities"]["s1"]["collection"] == "COPERNICUS/S1_GRD_FLOAT"
    assert d["modalities"]["s1"]["bands"] == ["VV", "VH"]
    assert d["modalities"]["s1"]["defaults"]["use_float_linear"] is True
    assert d["grid"].startswith("(768, 14, 14)")
    assert d["weights"]["source"] == "huggingface: MBZUAI/TerraFM/TerraFM-B.pth"
    assert set(d["output"]) == {"pooled", "grid"}


def test_name_and_alias_are_registered() -> None:
    assert "terrafm" in list_models()
    assert "terrafm_b" in list_models(include_aliases=True)
    assert canonical_model_name(" TerraFM_B ") == "terrafm"
    assert get_model_class("terrafm_b") is TerraFMEmbedder


def test_full_size_encoder_has_the_official_shapes() -> None:
    with torch.device("meta"):
        m = build_terrafm_encoder()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["patch_embed.conv2d_s2_l1c.weight"] == (2304, 12, 16, 16)
    assert shapes["patch_embed.conv2d_s2_l2a.weight"] == (2304, 12, 16, 16)
    assert shapes["patch_embed.conv2d_s1.weight"] == (2304, 2, 16, 16)
    assert shapes["patch_embed.projection.proj1.weight"] == (2304, 2304)
    assert "patch_embed.projection.proj1.bias" not in shapes
    assert shapes["patch_embed.projection.proj3.weight"] == (768, 2304)
    assert shapes["patch_embed.s1_embed"] == (1, 2304)
    assert shapes["pos_embed"] == (1, 197, 768)
    assert shapes["cls_token"] == (1, 1, 768)
    assert len({k.split(".")[1] for k in shapes if k.startswith("blocks.")}) == 12
    tiny = build_terrafm_encoder(embed_dim=32, depth=1, num_heads=2).state_dict()
    assert set(tiny) == set(terrafm_state(32, 1))  # the keys the test checkpoints are written with


# -- loading ----------------------------------------------------------------------------------
def test_wrapped_checkpoint_with_head_loads(cfg: dict[str, Any], tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in terrafm_state().items()}
    state["head.mlp.0.weight"] = torch.zeros(4, 32)
    torch.save(state, tmp_path / "TerraFM-B.pth")
    x = [np.random.default_rng(0).uniform(0, 6000, (12, 32, 32)).astype(np.float32)]
    a = get_embedder("terrafm", cfg, "cpu").embed_inputs(x, output=OutputSpec.pooled())[0].data
    b = (
        get_embedder("terrafm", {**cfg, "weights": str(tmp_path)}, "cpu")
        .embed_inputs(x, output=OutputSpec.pooled())[0]
        .data
    )
    np.testing.assert_array_equal(a, b)


def test_checkpoint_that_does_not_match_is_a_model_error(tmp_path: Path) -> None:
    state = terrafm_state()
    del state["patch_embed.s1_embed"]
    torch.save(state, tmp_path / "TerraFM-B.pth")
    with pytest.raises(ModelError, match=r"missing keys \['patch_embed.s1_embed'\]"):
        get_embedder("terrafm", {**TINY, "weights": str(tmp_path)}, "cpu")


def test_missing_weights_say_where_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    def offline(*args: Any, **kwargs: Any) -> Any:  # the network boundary: nothing cached, no network
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline and not in the cache")

    monkeypatch.delenv("RS_EMBED_TERRAFM_WEIGHTS", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    emb = TerraFMEmbedder(TINY)
    with pytest.raises(ModelError, match="RS_EMBED_TERRAFM_WEIGHTS") as err:
        emb.checkpoint_path()
    assert "MBZUAI/TerraFM TerraFM-B.pth" in str(err.value)


def test_config_errors() -> None:
    with pytest.raises(ModelError, match="'s2_patch_embed' must be one of"):
        TerraFMEmbedder({"s2_patch_embed": "l3"})
    with pytest.raises(ModelError, match="does not accept"):
        TerraFMEmbedder({"variant": "large"})


# -- preprocessing ----------------------------------------------------------------------------
def test_s1_preprocessing_is_rs_embeds_rule(cfg: dict[str, Any]) -> None:
    emb = get_embedder("terrafm", cfg, "cpu")
    rng = np.random.default_rng(7)
    raw = rng.lognormal(-3.0, 1.2, size=(3, 2, 32, 32)).astype(np.float32)
    raw[0, :, :4, :4] = 0.0  # no-data fill
    raw[1, 1, 5, 5] = -0.01  # a few negative values are clamped, not rejected
    out = emb.preprocess(torch.from_numpy(raw)).numpy()
    ref = np.stack([_numpy_s1(r) for r in raw])
    np.testing.assert_allclose(out, ref, rtol=0, atol=2.5e-7)  # numpy and torch log1p may differ by 1 ulp
    assert out.max() == 1.0  # the top percent saturates
    # another size: the normalisation happens before the bilinear resize
    raw40 = rng.lognormal(-3.0, 1.2, size=(1, 2, 40, 40)).astype(np.float32)
    ref40 = torch.nn.functional.interpolate(
        torch.from_numpy(_numpy_s1(raw40[0]))[None], size=(32, 32), mode="bilinear"
    )
    np.testing.assert_allclose(
        emb.preprocess(torch.from_numpy(raw40)).numpy(), ref40.numpy(), rtol=0, atol=1e-6
    )


def test_s1_edge_cases(cfg: dict[str, Any]) -> None:
    emb = get_embedder("terrafm", cfg, "cpu")
    zeros = torch.zeros(1, 2, 32, 32)
    np.testing.assert_array_equal(emb.preprocess(zeros).numpy(), 0.0)  # p99 = 0 -> divisor 1
    db = torch.full((1, 2, 32, 32), -15.0)
    with pytest.raises(ModelError, match="looks dB-scaled"):
        emb.preprocess(db)


def test_s2_preprocessing_and_channel_check(cfg: dict[str, Any]) -> None:
    emb = get_embedder("terrafm", cfg, "cpu")
    raw = torch.tensor([-5.0, 0.0, 1234.0, 10000.0, 12000.0]).repeat(12, 32, 7)[..., :32][None]
    out = emb.preprocess(raw).numpy()
    np.testing.assert_array_equal(out, np.clip(raw.numpy() / np.float32(10000.0), 0, 1))
    with pytest.raises(ModelError, match=r"C = 12 .* or C = 2"):
        emb.preprocess(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(("branch", "conv"), [("l1c", "conv2d_s2_l1c"), ("l2a", "conv2d_s2_l2a")])
def test_branch_chosen_by_channel_count(cfg: dict[str, Any], branch: str, conv: str) -> None:
    emb = get_embedder("terrafm", {**cfg, "s2_patch_embed": branch}, "cpu")
    called: list[str] = []
    pe = emb.module.patch_embed
    hooks = [getattr(pe, n).register_forward_hook(lambda m, a, o, n=n: called.append(n))
             for n in ("conv2d_s2_l1c", "conv2d_s2_l2a", "conv2d_s1")]  # fmt: skip
    try:
        s2, s1 = np.full((12, 32, 32), 1500, np.float32), np.full((2, 32, 32), 0.05, np.float32)
        (e2,) = emb.embed_inputs([s2], output=OutputSpec.pooled())
        assert called == [conv]
        (e1,) = emb.embed_inputs([s1], output=OutputSpec.pooled())
        assert called == [conv, "conv2d_s1"]
    finally:
        for h in hooks:
            h.remove()
    assert e2.meta["patch_embed"] == f"s2_{branch}"
    assert e1.meta["modality"] == "s1"


# -- Sentinel-1 through modality="s1" -----------------------------------------------------------
def test_get_embedding_modality_s1_fetches_vv_vh(cfg: dict[str, Any], log: str) -> None:
    opts = {"log": log}
    s1 = get_embedding("terrafm", spatial=ROI, temporal=WHEN, modality="s1", backend=slog.PROVIDER_NAME,
                       device="cpu", provider_options=opts, **cfg)  # fmt: skip
    (f,) = slog.fetches(log)
    assert (f["collection"], f["bands"], f["modality"], f["linear"]) == (S1_COLLECTION, "VV,VH", "s1", "True")
    s2 = get_embedding("terrafm", spatial=ROI, temporal=WHEN, backend=slog.PROVIDER_NAME, device="cpu",
                       provider_options=opts, **cfg)  # fmt: skip
    assert slog.fetches(log)[1]["bands"] == ",".join(S2_12)
    assert s1.data.shape == s2.data.shape == (32,)
    assert not np.allclose(s1.data, s2.data)
    # the same numbers as the model on the provider's linear VV/VH pixels
    pixels = SyntheticProvider().fetch(ROI, WHEN, S1_SENSOR).data
    assert pixels.shape[0] == 2
    assert pixels.min() > 0
    (ref,) = get_embedder("terrafm", cfg, "cpu").embed_inputs([pixels], output=OutputSpec.pooled())
    np.testing.assert_allclose(s1.data, ref.data, rtol=0, atol=1e-6)
    # sensor=... with modality "s1" is the same request
    by_sensor = get_embedding("terrafm", spatial=ROI, temporal=WHEN, sensor=S1_SENSOR, backend="synthetic",
                              device="cpu", **cfg)  # fmt: skip
    np.testing.assert_array_equal(by_sensor.data, s1.data)


def test_unknown_modality_is_a_model_error(cfg: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match="does not expose modality='s3'"):
        get_embedding("terrafm", spatial=ROI, temporal=WHEN, modality="s3", backend="synthetic", **cfg)


def test_db_units_are_rejected(cfg: dict[str, Any]) -> None:
    db = SensorSpec(collection=S1_COLLECTION, bands=("VV", "VH"), modality="s1", use_float_linear=False)
    with pytest.raises(ModelError, match="looks dB-scaled"):
        get_embedding(
            "terrafm", spatial=ROI, temporal=WHEN, sensor=db, backend="synthetic", device="cpu", **cfg
        )


@pytest.mark.parametrize("output", [OutputSpec.pooled(), OutputSpec.grid(), OutputSpec.pooled("max")],
                         ids=["pooled", "grid", "max"])  # fmt: skip
def test_batch_of_n_equals_n_single_calls_s1(cfg: dict[str, Any], output: OutputSpec) -> None:
    rois = [PointBuffer(8.41 + 0.01 * i, 47.37, 160 + 40 * i) for i in range(3)]
    rois.append(BBox(8.45, 47.36, 8.455, 47.365))
    kw = {"temporal": WHEN, "modality": "s1", "backend": "synthetic", "device": "cpu", "output": output,
          "input_prep": "resize", **cfg}  # fmt: skip
    batch = get_embeddings_batch("terrafm", spatials=rois, **kw)
    assert len(batch) == len(rois)
    for sp, b in zip(rois, batch, strict=True):
        single = get_embedding("terrafm", spatial=sp, **kw)
        np.testing.assert_allclose(np.asarray(b.data), np.asarray(single.data), rtol=0, atol=1e-5)


def test_mixed_sensors_in_one_batch_equal_single_calls(cfg: dict[str, Any]) -> None:
    emb = get_embedder("terrafm", cfg, "cpu")
    rng = np.random.default_rng(3)
    xs = [rng.uniform(0, 6000, (12, 32, 32)).astype(np.float32), rng.lognormal(-3, 1, (2, 32, 32)).astype(np.float32),
          rng.uniform(0, 6000, (12, 40, 36)).astype(np.float32), rng.lognormal(-3, 1, (2, 32, 32)).astype(np.float32)]  # fmt: skip
    for output in (OutputSpec.pooled(), OutputSpec.grid()):
        batch = emb.embed_inputs(xs, output=output)
        for x, b in zip(xs, batch, strict=True):
            (single,) = emb.embed_inputs([x], output=output)
            np.testing.assert_allclose(np.asarray(b.data), np.asarray(single.data), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_export_modality_s1_fetches_vv_vh(cfg: dict[str, Any], log: str, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    rois = [PointBuffer(12.5 + 0.01 * i, 41.9, 160) for i in range(3)]
    with (
        LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        man = export_batch(
            spatials=rois, temporal=WHEN, backend=slog.PROVIDER_NAME, provider_options={"log": log},
            models=[ExportModelRequest("terrafm", modality="s1", model_config=cfg)], device="cpu",
            target=ExportTarget.combined(str(tmp_path / "s1")), config=ExportConfig(show_progress=False),
            client=client,
        )  # fmt: skip
    assert man["status"] == "ok"
    fetched = slog.fetches(log)
    assert len(fetched) == len(rois)
    assert {(f["collection"], f["bands"], f["linear"]) for f in fetched} == {(S1_COLLECTION, "VV,VH", "True")}
    res = load_export(tmp_path / "s1.npz")
    assert res.manifest["models"][0]["sensor"]["bands"] == ["VV", "VH"]
    (inputs,) = [v for k, v in np.load(res.path).items() if k.startswith("inputs_")]
    assert inputs.shape == (3, 2, 32, 32)
    emb = np.asarray(res.embedding("terrafm"))
    assert emb.shape == (3, 32)
    single = get_embedding("terrafm", spatial=rois[1], temporal=WHEN, modality="s1", backend="synthetic",
                           device="cpu", **cfg)  # fmt: skip
    np.testing.assert_allclose(emb[1], single.data, rtol=1e-5, atol=1e-6)


# -- the GPU path (checked on the CPU) ------------------------------------------------------------
def test_gpu_path_settings() -> None:
    from rs_embed_dask.models.base import autocast_dtype_for

    assert TerraFMEmbedder.supports_autocast
    assert autocast_dtype_for(True, "cuda", preferred=TerraFMEmbedder.autocast_dtype) == "bfloat16"
    assert autocast_dtype_for(True, "cpu", preferred=TerraFMEmbedder.autocast_dtype) is None


def test_out_of_memory_backoff_gives_the_same_numbers(
    cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = TerraFMEmbedder(cfg)
    emb.load("cpu")
    rng = np.random.default_rng(5)
    xs = [rng.lognormal(-3, 1, (2, 32, 32)).astype(np.float32) for _ in range(5)]
    ref = [emb.embed_inputs([x], output=OutputSpec.grid())[0].data for x in xs]
    forward, seen = emb.module.forward, []

    def limited(x: Any, g: int) -> Any:  # what a GPU does above its memory: the allocator's error
        seen.append(int(x.shape[0]))
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return forward(x, g)

    monkeypatch.setattr(emb.module, "forward", limited)
    out = emb.embed_inputs(xs, output=OutputSpec.grid())
    assert seen[0] == 5
    assert max(seen[1:]) <= 2
    for o, r in zip(out, ref, strict=True):
        np.testing.assert_allclose(o.data, r, rtol=0, atol=1e-5)


def test_bfloat16_autocast_is_tolerated(cfg: dict[str, Any]) -> None:
    """The forward under bf16 autocast (as on a GPU) stays close to float32, for both sensors."""
    emb = get_embedder("terrafm", cfg, "cpu")
    rng = np.random.default_rng(9)
    for raw in (rng.uniform(0, 6000, (2, 12, 32, 32)), rng.lognormal(-3, 1, (2, 2, 32, 32))):
        x = emb.preprocess(torch.from_numpy(raw.astype(np.float32)))
        with torch.inference_mode():
            full = emb.forward_pooled(x, "mean").float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half = emb.forward_pooled(x, "mean").float()
        cos = torch.nn.functional.cosine_similarity(full, half, dim=1)
        assert float(cos.min()) > 0.99
