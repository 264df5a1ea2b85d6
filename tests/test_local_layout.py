"""The local cluster's layouts: one shared worker on a CPU-only machine, split pools otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_dask import (
    ExportConfig,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    export_batch,
    load_export,
)
from rs_embed_dask.cluster import local
from rs_embed_dask.core.errors import SpecError


def _spec(cluster) -> dict:
    return {name: dict(w["options"]) for name, w in cluster.worker_spec.items()}


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_visible_gpus", lambda: [])


def _closed(cluster) -> None:
    cluster.close()


def test_cpu_only_default_is_one_worker_holding_both_resources(no_gpu: None) -> None:
    cluster = local.local_cluster(io_threads=5, dashboard_address=None, verbose=False)
    try:
        spec = _spec(cluster)
        assert list(spec) == ["cpu-0"]
        opts = spec["cpu-0"]
        assert opts["resources"] == {"io": 5, "gpu": 1}
        assert opts["nthreads"] == 8
        assert opts["env"]["RS_EMBED_TORCH_THREADS"] == str(len(local._cores()))
        assert "RS_EMBED_CPU_AFFINITY" not in opts["env"]  # every core is the inference task's to use
        assert "RS_EMBED_IO_NICE" not in opts["env"]  # opt-in: no measurable gain on this machine
        from distributed import Client

        with Client(cluster) as client:  # Dask's stack-sampling profiler is off in the worker process
            on = client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
            assert list(on.values()) == [False]
            assert all("profile" not in cbs for cbs in client.run(lambda dask_worker: list(dask_worker.periodic_callbacks)).values())
    finally:
        _closed(cluster)


def test_profile_true_leaves_dasks_profiler_on(no_gpu: None) -> None:
    cluster = local.local_cluster(io_threads=2, dashboard_address=None, verbose=False, layout="split", profile=True)
    try:
        assert all("config" not in o for o in _spec(cluster).values())
    finally:
        _closed(cluster)


@pytest.mark.parametrize(
    "kwargs", [{"layout": "split"}, {"inference_workers": 1}, {"io_workers": 2}], ids=["split", "inference_workers", "io_workers"]
)
def test_split_when_asked_or_when_pools_are_sized(no_gpu: None, kwargs: dict) -> None:
    cluster = local.local_cluster(io_threads=3, dashboard_address=None, verbose=False, processes=False, **kwargs)
    try:
        spec = _spec(cluster)
        assert any(n.startswith("io-") for n in spec)
        assert any(n.startswith("gpu-") for n in spec)
        assert all(o["resources"] == {"gpu": 1} for n, o in spec.items() if n.startswith("gpu-"))
        assert all(o["resources"] == {"io": 3} for n, o in spec.items() if n.startswith("io-"))
    finally:
        _closed(cluster)


def test_gpu_machine_keeps_inference_on_gpu_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_visible_gpus", lambda: ["0", "1"])
    cluster = local.local_cluster(io_threads=2, dashboard_address=None, verbose=False, processes=False)
    try:
        spec = _spec(cluster)
        assert sorted(spec) == ["gpu-0", "gpu-1", "io-0"]
    finally:
        _closed(cluster)
    with pytest.raises(SpecError, match="layout='shared' runs inference on the CPU"):
        local.local_cluster(layout="shared", dashboard_address=None, verbose=False)


def test_unknown_layout_is_refused_naming_the_choices() -> None:
    with pytest.raises(SpecError, match="'auto', 'shared', 'split'"):
        local.local_cluster(layout="one", dashboard_address=None, verbose=False)


@pytest.mark.cluster
@pytest.mark.slow
def test_shared_layout_exports_the_same_embeddings_as_split(tmp_path: Path, no_gpu: None) -> None:
    from distributed import Client

    rois = [PointBuffer(lon=10.0 + 0.01 * i, lat=45.0, buffer_m=160) for i in range(5)]
    out = {}
    for layout in ("shared", "split"):
        cluster = local.local_cluster(io_threads=2, dashboard_address=None, verbose=False, layout=layout)
        try:
            with Client(cluster, set_as_default=False) as client:
                client.wait_for_workers(len(cluster.workers), timeout=120)
                target = ExportTarget.combined(str(tmp_path / f"{layout}.npz"))
                export_batch(spatials=rois, temporal=TemporalSpec.range("2022-06-01", "2022-07-01"), models=["rcf"],
                             target=target, config=ExportConfig(chunk_size=2, show_progress=False, save_inputs=True),
                             backend="synthetic", device="cpu", output=OutputSpec.pooled(), client=client)  # fmt: skip
        finally:
            cluster.close()
        out[layout] = load_export(str(tmp_path / f"{layout}.npz"))
    a, b = out["shared"], out["split"]
    np.testing.assert_array_equal(np.asarray(a.embedding("rcf")), np.asarray(b.embedding("rcf")))


def test_dashboard_link_is_shown_once_per_process(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from rs_embed_dask.cluster.client import print_dashboard
    from rs_embed_dask.export.progress import Progress

    link = f"http://127.0.0.1:{np.random.default_rng().integers(20000, 60000)}/status"
    cluster = SimpleNamespace(scheduler_address="tcp://127.0.0.1:1", dashboard_link=link)
    print_dashboard(cluster, "local cluster")  # what local_cluster(verbose=True) does
    for _ in range(2):  # two exports on that cluster's client
        bar = Progress(3, enabled=True, client=cluster)
        bar.close()
    out = capsys.readouterr()
    assert (out.out + out.err).count(link) == 1
