"""The GPU path of :class:`TorchEmbedder`, checked on the CPU.

Out-of-memory back-off is driven by a test *model* whose forward raises
``torch.OutOfMemoryError`` above a batch size (what a GPU would do), the
autocast and compile choices are pure functions of the flags, the device and
the environment, and ``torch.compile`` runs for real with the ``eager``
backend (or a registered backend that fails, for the fallback).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models.base import (
    S2_SR,
    TorchEmbedder,
    autocast_dtype_for,
    batch_size_for_memory,
    compile_backend_for,
    is_out_of_memory,
    pool_grid,
)
from rs_embed_dask.models.rcf import RCFEmbedder

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


class ConvModel(TorchEmbedder):
    """A seeded 3x3 conv; ``max_batch`` makes its forward fail like a GPU out of memory."""

    name = "gpu_path_conv"
    config_keys = frozenset({"max_batch", "fail_with"})
    supports_autocast = True

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "inputs": {"collection": S2_SR, "bands": ["B2", "B3"]}, "defaults": {}}

    def build_module(self) -> Any:
        torch.manual_seed(0)
        return torch.nn.Conv2d(2, 4, 3, padding=1)

    def preprocess(self, x: Any) -> Any:
        return x / 100.0

    def forward_grid(self, x: Any) -> Any:
        self.seen.append(int(x.shape[0]))
        cap = self.model_config.get("max_batch")
        if cap is not None and x.shape[0] > cap:
            err = self.model_config.get("fail_with", "oom")
            if err == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test model)")
            raise RuntimeError("shape mismatch (test model)")
        return self.module(x)

    seen: ClassVar[list[int]] = []


@pytest.fixture(autouse=True)
def _fresh_seen() -> None:
    ConvModel.seen = []


def _inputs(n: int, hw: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 100, size=(2, hw, hw)).astype(np.float32) for _ in range(n)]


def _reference(xs: list[np.ndarray]) -> np.ndarray:
    emb = ConvModel()
    emb.load("cpu")
    return np.stack([e.data for e in emb.embed_inputs(xs, output=GRID)])


# -- out-of-memory back-off -------------------------------------------------------------------
def test_oom_halves_the_batch_and_keeps_the_smaller_size():
    xs = _inputs(10)
    expected = _reference(xs)
    ConvModel.seen = []
    emb = ConvModel({"max_batch": 3})
    emb.load("cpu")
    out = emb.embed_inputs(xs, output=GRID)
    assert ConvModel.seen == [10, 5, 2, 2, 2, 2, 2]
    np.testing.assert_allclose(np.stack([e.data for e in out]), expected, rtol=1e-6)
    ConvModel.seen = []
    emb.embed_inputs(xs[:7], output=GRID)  # same input shape: starts at the learned size
    assert ConvModel.seen == [2, 2, 2, 1]
    ConvModel.seen = []
    emb.embed_inputs(_inputs(4, hw=12), output=POOLED)  # another shape: starts at the full batch
    assert ConvModel.seen == [4, 2, 2]


class SideConvModel(ConvModel):
    """``ConvModel`` plus a per-input offset read from the context: a model with side inputs."""

    name = "gpu_path_side_conv"

    def side_inputs(self, x: np.ndarray, context: Any) -> dict[str, np.ndarray | None]:
        offset = (context or {}).get("offset")
        return {"offset": None if offset is None else np.asarray(float(offset))}

    def forward_with_sides(self, x: Any, sides: Any, output: OutputSpec) -> Any:
        grid = self.forward_grid(x)
        if sides["offset"] is not None:
            grid = grid + sides["offset"].view(-1, 1, 1, 1)
        return grid if output.mode == "grid" else pool_grid(grid, output.pooling)


def test_side_inputs_go_through_the_batched_path():
    xs = _inputs(6)
    expected = _reference(xs)
    ConvModel.seen = []
    ctxs = [{"offset": 10 * i} if i % 3 else {} for i in range(6)]  # unknown for inputs 0 and 3
    emb = SideConvModel({"max_batch": 2})
    emb.load("cpu")
    out = emb.embed_inputs(xs, output=GRID, contexts=ctxs)
    # a batch never mixes known and unknown side values; the known group backs off from 4 to 2
    assert ConvModel.seen == [2, 4, 2, 2]
    for x_exp, ctx, e in zip(expected, ctxs, out, strict=True):
        offset = ctx.get("offset")
        np.testing.assert_allclose(e.data, x_exp + (offset or 0), rtol=1e-6, atol=1e-5)
        assert e.meta["offset"] == (None if offset is None else float(offset))
    (pooled,) = emb.embed_inputs(xs[1:2], output=POOLED, contexts=ctxs[1:2])
    np.testing.assert_allclose(pooled.data, expected[1].mean(axis=(1, 2)) + 10, rtol=1e-5)
    with pytest.raises(ModelError, match="got 2 inputs but 1 contexts"):
        emb.embed_inputs(xs[:2], output=GRID, contexts=ctxs[:1])


def test_oom_at_batch_size_one_is_raised():
    emb = ConvModel({"max_batch": 0})
    emb.load("cpu")
    with pytest.raises(torch.OutOfMemoryError):
        emb.embed_inputs(_inputs(4), output=GRID)
    assert ConvModel.seen == [4, 2, 1]


def test_other_errors_are_not_retried():
    emb = ConvModel({"max_batch": 3, "fail_with": "other"})
    emb.load("cpu")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        emb.embed_inputs(_inputs(8), output=GRID)
    assert ConvModel.seen == [8]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_out_of_memory(exc, expected):
    assert is_out_of_memory(exc) is expected


@pytest.mark.parametrize(
    ("requested", "free", "per_item", "expected"),
    [
        (64, None, None, 64),  # nothing measured yet: the requested size
        (64, 10_000, None, 64),
        (64, 10_000, 100.0, 64),  # 80 fit
        (64, 1_000, 100.0, 8),  # 80 % of 1000 B / 100 B per item
        (64, 50, 100.0, 1),  # never below one
        (0, 10_000, 100.0, 1),
    ],
)
def test_batch_size_for_memory(requested, free, per_item, expected):
    assert batch_size_for_memory(requested, free, per_item) == expected


# -- autocast ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("supports", "device", "preferred", "bf16", "env", "expected"),
    [
        (True, "cuda", None, True, {}, "bfloat16"),
        (True, "cuda", None, False, {}, "float16"),  # pre-Ampere GPU
        (True, "cuda", "float16", True, {}, "float16"),
        (True, "cpu", None, True, {}, None),  # CPU and MPS run float32
        (True, "mps", None, True, {}, None),
        (False, "cuda", None, True, {}, None),  # the model does not tolerate it
        (True, "cuda", None, True, {"RS_EMBED_AUTOCAST": "0"}, None),
    ],
)
def test_autocast_dtype_for(supports, device, preferred, bf16, env, expected):
    assert autocast_dtype_for(supports, device, preferred=preferred, bf16_supported=bf16, env=env) == expected


def test_autocast_dtype_must_be_a_half_precision():
    with pytest.raises(ModelError, match="autocast_dtype must be 'bfloat16' or 'float16'"):
        autocast_dtype_for(True, "cuda", preferred="int8", env={})


def test_embedder_autocast_choice_per_device_and_class(monkeypatch):
    monkeypatch.delenv("RS_EMBED_AUTOCAST", raising=False)
    emb = ConvModel()
    emb.load("cpu")
    assert emb.autocast_settings() is None
    assert isinstance(emb._autocast(), contextlib.nullcontext)
    emb.device = "cuda"  # what a GPU worker's embedder holds (CUDA probes are skipped without one)
    assert emb.autocast_settings() == (
        "bfloat16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "float16"
    )

    class Fp16(ConvModel):
        autocast_dtype = "float16"

    fp16 = Fp16()
    fp16.device = "cuda:0"
    assert fp16.autocast_settings() == "float16"
    rcf = RCFEmbedder()
    rcf.device = "cuda"
    assert rcf.autocast_settings() is None  # rcf keeps float32


# -- torch.compile opt-in ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (None, {}, None),
        (None, {"RS_EMBED_TORCH_COMPILE": "1"}, "inductor"),
        (None, {"RS_EMBED_TORCH_COMPILE": "0"}, None),
        (None, {"RS_EMBED_TORCH_COMPILE": "eager"}, "eager"),
        (True, {}, "inductor"),
        ("eager", {}, "eager"),
        (False, {"RS_EMBED_TORCH_COMPILE": "1"}, None),  # the model_config wins
    ],
)
def test_compile_backend_for(option, env, expected):
    assert compile_backend_for(option, env=env) == expected


def test_compile_key_is_a_runtime_option_of_every_torch_model():
    rcf = RCFEmbedder({"compile": False, "features": 8})
    assert rcf.runtime_options == {"compile": False}
    assert "compile" not in rcf.model_config
    with pytest.raises(ModelError, match="does not accept model-specific keyword arguments"):
        RCFEmbedder({"compile_me": True})


def test_compile_opt_in_compiles_lazily_and_matches_eager():
    xs = _inputs(3)
    expected = _reference(xs)
    emb = ConvModel({"compile": "eager"})
    emb.load("cpu")
    assert emb.compile_backend() == "eager"
    assert not emb._compiled  # nothing compiled before the first call
    out = emb.embed_inputs(xs, output=GRID)
    assert emb._compiled
    assert type(emb.module).__name__ == "OptimizedModule"
    np.testing.assert_allclose(np.stack([e.data for e in out]), expected, rtol=1e-6)


def test_compile_from_the_environment(monkeypatch):
    monkeypatch.setenv("RS_EMBED_TORCH_COMPILE", "eager")
    emb = ConvModel()
    emb.load("cpu")
    emb.embed_inputs(_inputs(2), output=POOLED)
    assert emb._compiled


def _failing_backend(gm: Any, example_inputs: Any) -> Any:
    raise RuntimeError("backend exploded (test)")


def test_compile_failure_warns_and_falls_back_to_eager():
    from torch._dynamo import list_backends, register_backend

    if "rs_embed_test_failing" not in list_backends(exclude_tags=()):
        register_backend(_failing_backend, name="rs_embed_test_failing")
    xs = _inputs(3)
    expected = _reference(xs)
    emb = ConvModel({"compile": "rs_embed_test_failing"})
    emb.load("cpu")
    with pytest.warns(RuntimeWarning, match="torch.compile of model 'gpu_path_conv' failed"):
        out = emb.embed_inputs(xs, output=GRID)
    np.testing.assert_allclose(np.stack([e.data for e in out]), expected, rtol=1e-6)
    assert emb.compile_backend() is None
    assert isinstance(emb.module, torch.nn.Conv2d)


def test_unknown_compile_backend_falls_back_to_eager():
    emb = ConvModel({"compile": "no_such_backend"})
    emb.load("cpu")
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        out = emb.embed_inputs(_inputs(2), output=POOLED)
    assert len(out) == 2
    assert isinstance(emb.module, torch.nn.Conv2d)
