"""Multi-frame inputs in the export engine: shared fetches, frames together, chunks sized by bytes.

The models under test are small registered embedders that read a 3-frame
time series of three Sentinel-2 bands and return, per frame and band, the
mean of the pixels they were given, so an embedding shows which frames a
model saw and in which order.  ``FrameMeansB`` is the same model under
another name (same input: one fetch); ``FrameBins`` has its own time bins, as
olmoearth has (same sensor and frame count, other pixels: its own fetch).
The provider is the synthetic world, recording each fetch (``backend=
"ts_counting"``).  Most exports run in process (the engine's tasks in this
process); one runs on a local cluster whose workers have a memory limit.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # worker processes import this module for the registered classes
    sys.path.insert(0, TESTS_DIR)

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch  # noqa: E402
from rs_embed_dask.core.registry import (  # noqa: E402
    register_model,
    register_provider,
    unregister_model,
    unregister_provider,
)
from rs_embed_dask.core.specs import OutputSpec, SensorSpec  # noqa: E402
from rs_embed_dask.core.types import Embedding  # noqa: E402
from rs_embed_dask.export.inline import IN_PROCESS_ENV, InlineClient  # noqa: E402
from rs_embed_dask.export.plan import build_plan  # noqa: E402
from rs_embed_dask.export.sizing import CHUNK_MEMORY_ENV, chunk_sizing, flight_limits, items_for_budget  # noqa: E402
from rs_embed_dask.models.base import S2_SR, Embedder  # noqa: E402
from rs_embed_dask.providers.synthetic import SyntheticProvider  # noqa: E402

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
BANDS = ("B2", "B3", "B4")
FRAMES = 3
ROIS = [PointBuffer(10.0 + 0.01 * i, 45.0, 160) for i in range(10)]  # 32 x 32 px at 10 m
ROI_INPUT_BYTES = 4 * FRAMES * len(BANDS) * 32 * 32  # T x C x H x W x float32


class FrameMeans(Embedder):
    """Per frame and band, the mean of the input: ``(T * C,)``; refuses anything but ``(T, C, H, W)``."""

    name = "ts_frame_means"
    n_frames = FRAMES
    output_modes = ("pooled",)

    def describe(self) -> dict[str, Any]:
        head = self.describe_head({"collection": S2_SR, "bands": list(BANDS)})
        return {**head, "embedding_dim": FRAMES * len(BANDS)}

    def embed_inputs(self, inputs: Any, *, output: OutputSpec, contexts: Any = None) -> list[Embedding]:
        out = []
        for x in inputs:
            x = np.asarray(x)
            assert x.shape[:2] == (FRAMES, len(BANDS)), x.shape
            out.append(Embedding(np.asarray(x.mean(axis=(2, 3)).reshape(-1), np.float32), self.base_meta(output)))
        return out


class FrameMeansB(FrameMeans):
    """The same model under another name: the same input."""

    name = "ts_frame_means_b"


def _bins(temporal: Any) -> list[tuple[date, date]]:
    start = temporal.date_range()[0] if temporal is not None else date(2022, 6, 1)
    start = date.fromisoformat(str(start)) if not isinstance(start, date) else start
    return [(start + timedelta(days=20 * i), start + timedelta(days=20 * (i + 1))) for i in range(FRAMES)]


class FrameBins(FrameMeans):
    """Three 20-day bins from the window's start: the same sensor and frame count, other frames."""

    name = "ts_frame_bins"

    def frame_bins(self, temporal: Any = None) -> list[tuple[date, date]]:
        return _bins(temporal)


class FrameSquare(FrameMeans):
    """Fetches a rectangular ROI as the square around it (its pooled vector: the whole square's)."""

    name = "ts_frame_square"
    square_fetch = True
    roi_pooling = "model"


class CountingProvider(SyntheticProvider):
    """The synthetic world; records ``(roi, n_frames, bins)`` of every fetch in this process."""

    name = "ts_counting"
    calls: ClassVar[list[tuple[str, int | None, Any]]] = []
    _lock = threading.Lock()

    def fetch(self, spatial: Any, temporal: Any, sensor: Any, *, n_frames: Any = None, bins: Any = None) -> Any:
        with self._lock:
            CountingProvider.calls.append((f"{spatial.center[0]:.4f}", n_frames, bins))
        return super().fetch(spatial, temporal, sensor, n_frames=n_frames, bins=bins)


MODELS = (FrameMeans, FrameMeansB, FrameBins, FrameSquare)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Any:
    for cls in MODELS:
        register_model(cls.name, cls, overwrite=True)
    register_provider(CountingProvider.name, CountingProvider, overwrite=True)
    CountingProvider.calls.clear()
    monkeypatch.delenv(CHUNK_MEMORY_ENV, raising=False)
    monkeypatch.setenv(IN_PROCESS_ENV, "1000")  # in process unless a client is given
    yield
    for cls in MODELS:
        unregister_model(cls.name)
    unregister_provider(CountingProvider.name)


def _export(tmp_path: Path, models: list[str], name: str = "out", **kw: Any) -> Any:
    cfg = kw.pop("config", ExportConfig(format="zarr", chunk_size=4, show_progress=False))
    export_batch(
        spatials=kw.pop("spatials", ROIS), temporal=TEMPORAL, models=models, backend=CountingProvider.name,
        device="cpu", target=ExportTarget.combined(str(tmp_path / f"{name}.zarr")), config=cfg, **kw,
    )  # fmt: skip
    import zarr

    return zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")


def _direct(spatial: Any, bins: Any = None) -> Any:
    sensor = SensorSpec(collection=S2_SR, bands=BANDS)
    return SyntheticProvider().fetch(spatial, TEMPORAL, sensor, n_frames=FRAMES, bins=bins)


def _plan(models: list[str], *, chunk_size: int = 16, spatials: Any = None) -> Any:
    return build_plan(
        spatials=spatials or ROIS, temporal=TEMPORAL, models=models,
        target=ExportTarget.combined("/tmp/unused-ts-plan.zarr"),
        config=ExportConfig(format="zarr", chunk_size=chunk_size, show_progress=False),
        backend=CountingProvider.name, device="cpu", output=OutputSpec.pooled(), sensor=None,
        fetch=None, modality=None, input_prep=None,
    )  # fmt: skip


# -- one fetch per distinct (sensor, temporal packaging) input ------------------------------------
def test_two_models_with_the_same_multi_frame_input_share_one_fetch(tmp_path: Path) -> None:
    plan = _plan([FrameMeans.name, FrameMeansB.name, "rcf"])
    frames = [s for s in plan.inputs.values() if s.model.n_frames == FRAMES]
    assert len(plan.inputs) == 2
    assert len(frames) == 1
    assert frames[0].users == (FrameMeans.name, FrameMeansB.name)
    assert frames[0].key.endswith(f"--multi_{FRAMES}")

    root = _export(tmp_path, [FrameMeans.name, FrameMeansB.name, "rcf"])
    per_roi: dict[tuple[str, Any], int] = {}
    for roi, n, _ in CountingProvider.calls:
        per_roi[(roi, n)] = per_roi.get((roi, n), 0) + 1
    assert set(per_roi.values()) == {1}  # each ROI fetched once per distinct input
    assert sorted({n for _, n in per_roi}, key=str) == [3, None]
    assert len(per_roi) == 2 * len(ROIS)
    a = np.asarray(root[f"models/{FrameMeans.name}/embeddings"])
    b = np.asarray(root[f"models/{FrameMeansB.name}/embeddings"])
    np.testing.assert_array_equal(a, b)
    assert root[f"inputs/{frames[0].key}/data"].shape == (len(ROIS), FRAMES, len(BANDS), 32, 32)


def test_frames_of_a_roi_arrive_together_and_in_time_order(tmp_path: Path) -> None:
    root = _export(tmp_path, [FrameMeans.name])
    key = next(iter(_plan([FrameMeans.name]).inputs))
    data = np.asarray(root[f"inputs/{key}/data"])
    emb = np.asarray(root[f"models/{FrameMeans.name}/embeddings"])
    metas = [json.loads(m) for m in np.asarray(root[f"inputs/{key}/meta"])]
    for i, sp in enumerate(ROIS):
        want = _direct(sp)
        np.testing.assert_array_equal(data[i], want.data)  # all frames of the ROI, in bin order
        np.testing.assert_allclose(emb[i], want.data.mean(axis=(2, 3)).reshape(-1), rtol=1e-6)
        starts = [f["start"] for f in metas[i]["frames"]]
        assert starts == sorted(starts)
        assert len(starts) == FRAMES
    # the frames differ (a season of the synthetic world): an order mix-up would show
    assert not np.allclose(data[0][0], data[0][-1])


def test_a_model_with_its_own_time_bins_gets_its_own_fetch(tmp_path: Path) -> None:
    plan = _plan([FrameMeans.name, FrameBins.name])
    assert len(plan.inputs) == 2
    keys = list(plan.inputs)
    assert keys[1] == f"{keys[0]}--{FrameBins.name}"
    root = _export(tmp_path, [FrameMeans.name, FrameBins.name])
    with_bins = [b for _, n, b in CountingProvider.calls if b is not None]
    assert len(with_bins) == len(ROIS)
    assert all(list(b) == _bins(TEMPORAL) for b in with_bins)
    emb = np.asarray(root[f"models/{FrameBins.name}/embeddings"])
    want = _direct(ROIS[0], bins=_bins(TEMPORAL)).data.mean(axis=(2, 3)).reshape(-1)
    np.testing.assert_allclose(emb[0], want, rtol=1e-6)
    assert not np.allclose(emb[0], np.asarray(root[f"models/{FrameMeans.name}/embeddings"])[0])


def test_a_square_fetching_member_fetches_and_the_other_cuts_its_roi_out(tmp_path: Path) -> None:
    from rs_embed_dask import BBox

    rect = [BBox(10.0, 45.0, 10.004, 45.001), BBox(10.1, 45.0, 10.101, 45.003)]
    plan = _plan([FrameMeans.name, FrameSquare.name], spatials=rect)
    (spec,) = plan.inputs.values()
    assert spec.owner == FrameMeans.name  # names the input, as the first user
    assert spec.model.name == FrameSquare.name  # fetches: the square serves both
    both = _export(tmp_path, [FrameMeans.name, FrameSquare.name], spatials=rect)
    alone = _export(tmp_path, [FrameMeans.name], name="alone", spatials=rect)
    np.testing.assert_allclose(
        np.asarray(both[f"models/{FrameMeans.name}/embeddings"]),
        np.asarray(alone[f"models/{FrameMeans.name}/embeddings"]), rtol=1e-6,
    )  # fmt: skip
    from rs_embed_dask.fetch_square import PIXELS_KEY

    metas = [json.loads(m) for m in np.asarray(both[f"inputs/{spec.key}/meta"])]
    assert all(PIXELS_KEY in m for m in metas)  # squared fetches, with the ROI's box inside them
    h, w = metas[0]["grid"]["shape"]
    assert abs(h - w) <= 1  # the square on the pixel lattice (the ROI itself is about 31 x 11 px)


def test_a_chunk_s_fetched_series_are_one_block_in_roi_order() -> None:
    from rs_embed_dask.export.tasks import fetch_chunk, pack_arrays
    from rs_embed_dask.resolve import resolve_model, with_frames

    rm = with_frames(resolve_model(FrameMeans.name, backend=CountingProvider.name), TEMPORAL)
    got = fetch_chunk(rm, "k", ROIS[:4], TEMPORAL, provider_options={}, max_retries=0, backoff_s=0.0,
                      continue_on_error=False, threads=4)  # fmt: skip
    base = got.data[0].base
    assert base is not None
    assert base.shape == (4, FRAMES, len(BANDS), 32, 32)
    for i, sp in enumerate(ROIS[:4]):
        assert got.data[i].base is base
        assert got.data[i].flags.c_contiguous
        np.testing.assert_array_equal(got.data[i], _direct(sp).data)
        np.testing.assert_array_equal(base[i], _direct(sp).data)
    a, b = np.ones((2, 3), np.float32), np.zeros((4,), np.float32)
    packed = pack_arrays([a, None, b, 2 * a])
    assert packed[1] is None
    assert packed[2] is b
    assert packed[0].base is packed[3].base
    np.testing.assert_array_equal(packed[3], 2 * a)


# -- chunks sized from the inputs' bytes -----------------------------------------------------------
def test_items_for_budget_counts_every_outstanding_chunk() -> None:
    mb = 1_000_000
    items, flight = items_for_budget(64, budget=400 * mb, reserve=0, roi_bytes=10 * mb, cap=8, n_gpu=1)
    assert items * flight * 10 * mb <= 400 * mb
    assert (items + 1) * flight_limits(items + 1, 8, 1)[2] * 10 * mb > 400 * mb  # the most that fit
    assert items_for_budget(16, budget=10**12, reserve=0, roi_bytes=mb, cap=8, n_gpu=1)[0] == 16
    assert items_for_budget(16, budget=mb, reserve=0, roi_bytes=10 * mb, cap=8, n_gpu=1)[0] == 1  # never 0


def test_chunk_bytes_come_from_frames_bands_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHUNK_MEMORY_ENV, "1GB")
    plan = _plan([FrameMeans.name, "rcf"])
    s = chunk_sizing(plan, InlineClient())
    shapes = sorted(s.input_shapes.values(), key=len)
    assert shapes == [(4, 32, 32), (FRAMES, len(BANDS), 32, 32)]
    outputs = 4 * FRAMES * len(BANDS) + 4 * 512  # pooled vectors of both models
    assert s.roi_bytes == ROI_INPUT_BYTES + 4 * 4 * 32 * 32 + outputs
    assert s.budget_bytes == 10**9
    assert s.items == 16


def test_a_chunk_of_time_series_larger_than_the_budget_is_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    budget = 40 * ROI_INPUT_BYTES  # room for about 40 ROIs of inputs across the outstanding chunks
    monkeypatch.setenv(CHUNK_MEMORY_ENV, str(budget))
    plan = _plan([FrameMeans.name, FrameMeansB.name], chunk_size=16)
    s = chunk_sizing(plan, InlineClient())
    assert 1 < s.items < 16
    assert s.items * s.max_in_flight * s.roi_bytes <= budget - s.reserve_bytes
    root = _export(tmp_path, [FrameMeans.name, FrameMeansB.name],
                   config=ExportConfig(format="zarr", chunk_size=16, show_progress=False))  # fmt: skip
    key = next(iter(plan.inputs))
    assert root[f"inputs/{key}/data"].chunks[0] == s.items  # one store chunk per task chunk
    assert root.attrs["rs_embed_dask"]["chunk_size"] == s.items
    ref = _export(tmp_path, [FrameMeans.name, FrameMeansB.name], name="ref")  # chunk_size 4, not split
    np.testing.assert_array_equal(
        np.asarray(root[f"models/{FrameMeans.name}/embeddings"]), np.asarray(ref[f"models/{FrameMeans.name}/embeddings"])
    )


def test_resuming_a_combined_store_keeps_its_chunks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CHUNK_MEMORY_ENV, str(40 * ROI_INPUT_BYTES))
    cfg = ExportConfig(format="zarr", chunk_size=16, show_progress=False, resume=True)
    first = _export(tmp_path, [FrameMeans.name], config=cfg)
    split = first.attrs["rs_embed_dask"]["chunk_size"]
    assert split < 16
    monkeypatch.setenv(CHUNK_MEMORY_ENV, "1GB")  # would allow chunks of 16 now
    again = _export(tmp_path, [FrameMeans.name], config=cfg)
    assert again.attrs["rs_embed_dask"]["chunk_size"] == split


def test_without_saved_inputs_the_write_gets_no_pixels(tmp_path: Path) -> None:
    cfg = ExportConfig(format="zarr", chunk_size=4, save_inputs=False, show_progress=False)
    root = _export(tmp_path, [FrameMeans.name], config=cfg)
    key = next(iter(_plan([FrameMeans.name]).inputs))
    assert "data" not in root[f"inputs/{key}"]
    assert (np.asarray(root[f"inputs/{key}/status"]) == 1).all()
    assert np.isfinite(np.asarray(root[f"models/{FrameMeans.name}/embeddings"])).all()


# -- on a cluster: the workers' memory limit sizes the chunks --------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
def test_on_a_cluster_the_worker_memory_limit_splits_time_series_chunks(tmp_path: Path) -> None:
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    big = [PointBuffer(10.0 + 0.01 * i, 45.0, 1280) for i in range(12)]  # 256 x 256 px: 2.4 MB a ROI
    cluster = local_cluster(io_threads=4, inference_workers=1, memory_limit="1GiB", dashboard_address=None,
                            verbose=False)  # fmt: skip
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
            plan = _plan([FrameMeans.name, FrameMeansB.name], chunk_size=64, spatials=big)
            s = chunk_sizing(plan, client)
            assert s.memory_limit == 2**30
            assert 1 <= s.items < 64
            assert s.items * s.max_in_flight * s.roi_bytes <= s.budget_bytes - s.reserve_bytes
            root = _export(tmp_path, [FrameMeans.name, FrameMeansB.name], spatials=big, client=client,
                           config=ExportConfig(format="zarr", chunk_size=64, show_progress=False))  # fmt: skip
    finally:
        cluster.close()
    key = next(iter(plan.inputs))
    assert root[f"inputs/{key}/data"].chunks[0] == s.items
    emb = np.asarray(root[f"models/{FrameMeansB.name}/embeddings"])
    for i in (0, len(big) - 1):
        np.testing.assert_allclose(emb[i], _direct(big[i]).data.mean(axis=(2, 3)).reshape(-1), rtol=1e-6)
