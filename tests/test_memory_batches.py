"""Inference batches bounded by memory, not by ``chunk_size`` (issue 17, item 3).

The model under test is :class:`_memory_plugins.BatchLoggingRCF`, a registered
RCF that records the batch size of every forward call and states its
per-item memory estimate; the budget comes from ``RS_EMBED_INFER_MEMORY`` or
from the Dask worker's real memory limit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # worker processes import _memory_plugins too
    sys.path.insert(0, TESTS_DIR)

import _memory_plugins as plug  # noqa: E402

from rs_embed_dask import ExportConfig, ExportTarget, OutputSpec, PointBuffer, TemporalSpec, export_batch  # noqa: E402
from rs_embed_dask.core.errors import ModelError  # noqa: E402
from rs_embed_dask.export.tasks import fetch_chunk, infer_chunk  # noqa: E402
from rs_embed_dask.models.memory import (  # noqa: E402
    MEMORY_ENV,
    batch_size_for_budget,
    default_memory_per_item,
    memory_setting,
)
from rs_embed_dask.resolve import resolve_model  # noqa: E402

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(10.0 + 0.01 * i, 45.0, 160) for i in range(10)]  # 32x32 px at 10 m
MB100 = plug.BatchLoggingRCF.BYTES_PER_ITEM


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Any:
    plug.register()
    plug.forward_batches.clear()
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    yield
    plug.BatchLoggingRCF.BYTES_PER_ITEM = MB100


def _infer(batch_size: int) -> list[np.ndarray]:
    rm = resolve_model(plug.MODEL_NAME, backend="synthetic")
    common: dict[str, Any] = {"max_retries": 0, "backoff_s": 0.0, "continue_on_error": False}
    inputs = fetch_chunk(rm, "k", ROIS, TEMPORAL, provider_options={}, threads=1, **common)
    out = infer_chunk(rm, inputs, ROIS, TEMPORAL, start=0, output=OutputSpec.pooled(), device="cpu",
                      input_prep=None, batch_size=batch_size, **common)  # fmt: skip
    assert out.errors == [None] * len(ROIS)
    return [np.asarray(d) for d in out.data]


def test_chunk_larger_than_memory_batch_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, str(3 * MB100 + MB100 // 2))  # room for 3 items of 100 MiB
    split = _infer(batch_size=len(ROIS))
    assert plug.forward_batches == [3, 3, 3, 1]
    plug.forward_batches.clear()
    monkeypatch.setenv(MEMORY_ENV, "1TB")
    n = len(ROIS)
    whole = _infer(batch_size=n)
    assert plug.forward_batches == [n]
    for a, b in zip(split, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_requested_batch_size_still_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "1TB")
    _infer(batch_size=4)
    assert plug.forward_batches == [4, 4, 2]


def test_memory_setting_parses_fractions_and_sizes() -> None:
    assert memory_setting({}) == (None, None)
    assert memory_setting({MEMORY_ENV: "0.25"}) == (0.25, None)
    assert memory_setting({MEMORY_ENV: "2GiB"}) == (None, 2 * 2**30)
    assert memory_setting({MEMORY_ENV: "1500MB"}) == (None, 1_500_000_000)
    with pytest.raises(ModelError, match=MEMORY_ENV):
        memory_setting({MEMORY_ENV: "lots"})
    with pytest.raises(ModelError, match=MEMORY_ENV):
        memory_setting({MEMORY_ENV: "-1"})


def test_batch_size_for_budget() -> None:
    assert batch_size_for_budget(64, 10 * MB100, MB100) == 10
    assert batch_size_for_budget(8, 10 * MB100, MB100) == 8
    assert batch_size_for_budget(64, 0, MB100) == 1  # never below one item
    assert batch_size_for_budget(64, None, MB100) == 64


def test_default_estimate_scales_with_pixels_and_dims() -> None:
    from rs_embed_dask.models.rcf import RCFEmbedder

    rcf = RCFEmbedder()  # 512 features, any input size
    small, big = rcf.memory_per_item((4, 128, 128)), rcf.memory_per_item((4, 256, 256))
    assert big == 4 * small
    # rcf's measured peak: conv output, two relus (features/2 channels each) and their concatenation
    # (features channels), float32: 10 bytes per pixel and feature; the estimate must not be below it
    assert big >= 10 * 256 * 256 * 512
    assert default_memory_per_item(RCFEmbedder({"features": 64}), (4, 256, 256)) < big


def test_worker_memory_limit_sizes_batches_in_an_export(tmp_path: Path) -> None:
    """Batches come from the Dask worker's memory limit; the export's numbers do not change."""
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    cluster = local_cluster(processes=False, io_threads=2, memory_limit="16GB", dashboard_address=None, verbose=False)
    try:
        with Client(cluster, set_as_default=False) as client:
            limits = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
            limit = min(int(v) for v in limits.values())
            held = max(client.run(lambda: __import__("psutil").Process().memory_info().rss).values())
            # 3.5 items fit in 0.6 of the limit less what the process holds now (half an item of slack
            # for what it holds during the export): batches of 3
            plug.BatchLoggingRCF.BYTES_PER_ITEM = int((0.6 * limit - held) / 3.5)
            cfg = ExportConfig(chunk_size=8, show_progress=False, save_inputs=False)
            outs = {}
            for tag in ("memory", "whole"):
                plug.forward_batches.clear()
                path = tmp_path / f"{tag}.npz"
                export_batch(spatials=ROIS[:8], temporal=TEMPORAL, models=[plug.MODEL_NAME],
                             target=ExportTarget.combined(str(path)), config=cfg, backend="synthetic",
                             device="cpu", output=OutputSpec.pooled(), client=client)  # fmt: skip
                with np.load(path) as z:
                    outs[tag] = next(z[k] for k in z.files if k.startswith("embedding"))
                if tag == "memory":
                    assert plug.forward_batches == [3, 3, 2]
                    plug.BatchLoggingRCF.BYTES_PER_ITEM = 1
                else:
                    assert plug.forward_batches == [8]
            np.testing.assert_allclose(outs["memory"], outs["whole"], rtol=1e-6, atol=1e-7)
    finally:
        cluster.close()


def test_killed_inference_worker_names_the_settings(tmp_path: Path) -> None:
    """A worker that dies under an inference task gives an error naming what to lower."""
    import dask
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = local_cluster(io_threads=2, dashboard_address=None, verbose=False)
        try:
            with Client(cluster, set_as_default=False) as client:
                client.wait_for_workers(len(cluster.workers), timeout=120)
                with pytest.raises(ModelError) as info:
                    export_batch(spatials=ROIS[:2], temporal=TEMPORAL, models=[plug.KILLER_NAME],
                                 target=ExportTarget.combined(str(tmp_path / "k.npz")),
                                 config=ExportConfig(chunk_size=2, show_progress=False, save_inputs=False),
                                 backend="synthetic", device="cpu", output=OutputSpec.pooled(), client=client)  # fmt: skip
        finally:
            cluster.close()
    msg = str(info.value)
    for setting in ("ExportConfig.chunk_size (now 2)", "ExportConfig.infer_batch_size", MEMORY_ENV, "memory_limit"):
        assert setting in msg
    assert "inference task" in msg
    assert type(info.value.__cause__).__name__ == "KilledWorker"
