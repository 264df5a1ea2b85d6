"""The export engine on a real distributed cluster with worker processes.

One module-scoped cluster (``rs_embed_dask.cluster.local_cluster``: one IO
worker with resource ``io``, two inference workers with resource ``gpu``, all
separate processes behind nannies) serves most tests; the resource-free
cluster and the killed client (a subprocess with its own embedded cluster)
start their own.  ROIs are 32 x 32 pixel PointBuffers (160 m at 10 m) and
chunks hold 4 ROIs, so the whole file stays within a few minutes on 2 cores.

The instrumented provider (``backend="counting"``, one log line per provider
call) and model (``"rcf_b"``, one log line per model load) live in
``tests/_engine_plugins.py``: the engine ships them to the workers through the
plan (``ExportPlan.plugins``, pickled by reference), so the workers must be
able to import that module; they can because ``tests/`` is on ``sys.path``
when the cluster starts and spawned worker processes inherit it.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # e.g. pytest --import-mode=importlib
    sys.path.insert(0, TESTS_DIR)

import _engine_plugins as plug  # noqa: E402
from _clusters import local_client  # noqa: E402

from rs_embed_dask import (  # noqa: E402
    ExportConfig,
    ExportTarget,
    ModelError,
    PointBuffer,
    TemporalSpec,
    export_batch,
)

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
CHUNK = 4
N_REF = 40  # ROIs of the reference (uninterrupted) export
EMB_DIM = 512  # rcf's default width


def make_rois(n: int, offset: int = 0) -> list[PointBuffer]:
    """``n`` distinct 32 x 32 pixel ROIs (160 m buffer at 10 m) near Zurich."""
    out = []
    for j in range(offset, offset + n):
        out.append(PointBuffer(lon=8.40 + 0.01 * (j % 10), lat=47.30 + 0.01 * (j // 10), buffer_m=160))
    return out


ROIS = make_rois(N_REF)


def cfg(**kw: Any) -> ExportConfig:
    kw.setdefault("chunk_size", CHUNK)
    kw.setdefault("show_progress", False)
    return ExportConfig(**kw)


def run(client: Any, spatials: Any, target: ExportTarget, *, models: list[str] | None = None,
        backend: str = "synthetic", provider_options: dict[str, Any] | None = None, **config: Any) -> Any:  # fmt: skip
    return export_batch(
        spatials=spatials,
        temporal=TEMPORAL,
        models=models or ["rcf"],
        target=target,
        backend=backend,
        config=cfg(**config),
        client=client,
        provider_options=provider_options,
    )


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_bitwise_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert got[k].dtype == want[k].dtype, k
        assert got[k].tobytes() == want[k].tobytes(), f"{k} differs bit-wise"


def status_column(store: str, n: int, group: str = "models/rcf") -> np.ndarray | None:
    """The first ``n`` statuses of a working store, or ``None`` while the column does not exist.

    (A store of a streamed export has a huge item capacity until it is finalised.)
    """
    path = os.path.join(store, *group.split("/"), "status")
    if not os.path.exists(os.path.join(path, "zarr.json")):
        return None
    try:
        return np.asarray(zarr.open_array(path, mode="r")[:n])
    except Exception:  # being created by another process right now
        return None


def n_done(store: str, n: int = N_REF) -> int:
    s = status_column(store, n)
    return 0 if s is None else int(np.count_nonzero(s))


def worker_addrs(client: Any, resource: str) -> list[str]:
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(a for a, w in info.items() if (w.get("resources") or {}).get(resource))


def keys_by_kind(records: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Task-stream records -> {"fetch"|"infer"|"write": [(key, worker address)]}."""
    out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for rec in records:
        key = str(rec["key"])
        for kind in ("fetch", "infer", "write"):
            if key.startswith(f"rsembed-{kind}-"):
                out[kind].append((key, rec["worker"]))
    return out


def broken_stream(rois: list[PointBuffer], store: str, written: int) -> Iterator[PointBuffer]:
    """Yield ``rois``, then break once ``written`` items are in the store (the client's event loop runs meanwhile)."""
    yield from rois
    deadline = time.monotonic() + 60
    while n_done(store, len(rois) + CHUNK) < written and time.monotonic() < deadline:
        time.sleep(0.02)
    raise RuntimeError("the stream broke")


def wait_until_idle(client: Any, timeout: float = 60) -> None:
    """Until no task is waiting or running on the scheduler nor in a worker thread (a released task runs to its end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.run_on_scheduler(plug.scheduler_active_tasks) and not any(
            client.run(plug.running_tasks).values()
        ):
            return
        time.sleep(0.1)
    raise AssertionError("the cluster did not become idle")


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def load_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("loads") / "model_loads.log")


@pytest.fixture(scope="module")
def client(load_log: str) -> Iterator[Any]:
    plug.register()
    old = os.environ.get(plug.LOAD_LOG_ENV)
    os.environ[plug.LOAD_LOG_ENV] = load_log  # inherited by the worker processes
    try:
        with local_client(io_threads=4, inference_workers=2) as c:
            yield c
    finally:
        if old is None:
            os.environ.pop(plug.LOAD_LOG_ENV, None)
        else:
            os.environ[plug.LOAD_LOG_ENV] = old
        plug.unregister()


@pytest.fixture(scope="module")
def reference(client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Arrays of an uninterrupted export of ``ROIS`` (combined npz)."""
    out = tmp_path_factory.mktemp("reference") / "ref.npz"
    man = run(client, ROIS, ExportTarget.combined(str(out)))
    assert man["status"] == "ok"
    arrays = load_npz(out)
    assert arrays["embeddings__rcf"].shape == (N_REF, EMB_DIM)
    assert arrays["inputs_bchw__rcf"].shape == (N_REF, 4, 32, 32)
    assert np.isfinite(arrays["embeddings__rcf"]).all()
    # distinct ROIs give distinct embeddings (a constant output would make every comparison vacuous)
    assert len({row.tobytes() for row in arrays["embeddings__rcf"]}) == N_REF
    return arrays


# -- 1. one fetch per (ROI, sensor key), inputs stored once ----------------------------------------
def test_two_models_sharing_a_sensor_fetch_once_and_store_inputs_once(client: Any, tmp_path: Path) -> None:
    rois = ROIS[:10]  # chunks of 4, 4, 2
    log = str(tmp_path / "fetches.log")
    out = tmp_path / "two.npz"
    man = run(client, rois, ExportTarget.combined(str(out)), models=["rcf", "rcf_b"],
              backend="counting", provider_options={"log": log})  # fmt: skip

    fetched = [ln.split("\t")[1] for ln in plug.read_lines(log)]
    assert len(fetched) == len(rois)
    assert sorted(fetched) == sorted(plug.roi_id(sp) for sp in rois)
    # and the fetches ran on the workers, not in this process
    assert str(os.getpid()) not in {ln.split("\t")[0] for ln in plug.read_lines(log)}

    assert man["status"] == "ok"
    entries = {e["model"]: e for e in man["models"]}
    assert list(entries) == ["rcf", "rcf_b"]
    first, second = entries["rcf"]["inputs"], entries["rcf_b"]["inputs"]
    assert first["npz_key"] == "inputs_bchw__rcf"
    assert "dedup_reused" not in first
    assert second == {**first, "dedup_reused": True}
    assert len(man["prefetch"]) == 1  # one sensor key
    (users,) = [p["users"] for p in man["prefetch"].values()]
    assert users == ["rcf", "rcf_b"]

    arrays = load_npz(out)
    assert sorted(arrays) == ["embeddings__rcf", "embeddings__rcf_b", "inputs_bchw__rcf"]
    assert arrays["inputs_bchw__rcf"].shape == (len(rois), 4, 32, 32)
    for k in ("embeddings__rcf", "embeddings__rcf_b"):
        assert arrays[k].shape == (len(rois), EMB_DIM)
        assert np.isfinite(arrays[k]).all()
    # rcf_b is rcf under another name: same input, same weights, same vectors
    np.testing.assert_array_equal(arrays["embeddings__rcf"], arrays["embeddings__rcf_b"])


def test_per_item_two_models_sharing_a_sensor_fetch_once(client: Any, tmp_path: Path) -> None:
    rois = ROIS[:5]
    log = str(tmp_path / "fetches.log")
    mans = run(client, rois, ExportTarget.per_item(str(tmp_path / "items")), models=["rcf", "rcf_b"],
               backend="counting", provider_options={"log": log})  # fmt: skip
    assert sorted(ln.split("\t")[1] for ln in plug.read_lines(log)) == sorted(plug.roi_id(sp) for sp in rois)
    assert [m["point_index"] for m in mans] == list(range(len(rois)))
    for m in mans:
        assert m["status"] == "ok"
        a, b = m["models"]
        assert a["input"]["npz_key"] == "input_chw__rcf"
        assert "dedup_reused" not in a["input"]
        assert b["input"]["npz_key"] == "input_chw__rcf"
        assert b["input"]["dedup_reused"] is True
        assert m["npz_keys"] == ["embedding__rcf", "embedding__rcf_b", "input_chw__rcf"]
        assert sorted(load_npz(m["npz_path"])) == m["npz_keys"]


# -- 2. one model load per worker process ---------------------------------------------------------
def test_model_loaded_once_per_worker_process(client: Any, tmp_path: Path, load_log: str) -> None:
    from distributed import get_task_stream

    client.run(plug.reset_caches)  # every worker must load again for this export
    n_before = len(plug.read_lines(load_log))
    rois = make_rois(24, offset=N_REF)  # 6 chunks
    with get_task_stream(client=client) as ts:
        man = run(client, rois, ExportTarget.combined(str(tmp_path / "loads.npz")), models=["rcf_b"])
    assert man["status"] == "ok"
    assert load_npz(tmp_path / "loads.npz")["embeddings__rcf_b"].shape == (24, EMB_DIM)

    infer = keys_by_kind(ts.data)["infer"]
    assert len(infer) == 6  # one inference task per chunk
    pids = client.run(plug.worker_pid)
    infer_pids = {str(pids[w]) for _, w in infer}
    loads = plug.read_lines(load_log)[n_before:]
    per_pid = collections.Counter(loads)
    assert per_pid, "no model load was logged"
    assert set(per_pid) == infer_pids, "the model was loaded by exactly the processes that ran inference"
    assert all(n == 1 for n in per_pid.values()), f"a process loaded the model more than once: {per_pid}"
    # the engine's own per-process counter agrees
    counts = client.run(plug.load_counts)
    for addr, c in counts.items():
        assert c.get("rcf_b", 0) == (1 if str(pids[addr]) in infer_pids else 0), (addr, c)


def test_inference_workers_reuse_heap_memory_for_activations(client: Any, reference: dict[str, np.ndarray]) -> None:
    from rs_embed_dask.cluster.worker_setup import INFERENCE_MALLOC, malloc_tuning

    tuned = client.run(malloc_tuning, workers=worker_addrs(client, "gpu"))
    env = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_", workers=worker_addrs(client, "gpu"))
    assert all(v is not None for v in env.values()), env  # the nanny's fixed threshold is in force
    # the reference export loaded the model on every inference worker it ran on
    assert any(t == INFERENCE_MALLOC for t in tuned.values()), tuned
    assert all(t in (None, INFERENCE_MALLOC) for t in tuned.values()), tuned


# -- 3. fetch on io workers, inference on gpu workers; no resources also works ----------------------
def test_tasks_run_on_workers_with_their_resource(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    from distributed import get_task_stream

    io_workers, gpu_workers = set(worker_addrs(client, "io")), set(worker_addrs(client, "gpu"))
    assert len(io_workers) == 1
    assert len(gpu_workers) == 2
    assert not io_workers & gpu_workers
    rois = ROIS[:12]  # 3 chunks
    with get_task_stream(client=client) as ts:
        man = run(client, rois, ExportTarget.combined(str(tmp_path / "res.npz")))
    assert man["status"] == "ok"
    kinds = keys_by_kind(ts.data)
    assert {k: len(v) for k, v in kinds.items()} == {"fetch": 3, "infer": 3, "write": 3}
    assert {w for _, w in kinds["fetch"]} <= io_workers
    assert {w for _, w in kinds["infer"]} <= gpu_workers
    arrays = load_npz(tmp_path / "res.npz")
    np.testing.assert_array_equal(arrays["embeddings__rcf"], reference["embeddings__rcf"][:12])


def test_cluster_without_resources_still_exports(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from rs_embed_dask.cluster import cluster_resources

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
        Client(lc, set_as_default=False) as c,
    ):
        assert cluster_resources(c) == {}
        with get_task_stream(client=c) as ts:
            man = run(c, ROIS[:8], ExportTarget.combined(str(tmp_path / "plain.npz")))
        kinds = keys_by_kind(ts.data)
    assert man["status"] == "ok"
    assert {k: len(v) for k, v in kinds.items()} == {"fetch": 2, "infer": 2, "write": 2}
    arrays = load_npz(tmp_path / "plain.npz")
    np.testing.assert_array_equal(arrays["embeddings__rcf"], reference["embeddings__rcf"][:8])
    np.testing.assert_array_equal(arrays["inputs_bchw__rcf"], reference["inputs_bchw__rcf"][:8])


def test_provider_concurrency_cap_holds_across_concurrent_exports(client: Any, tmp_path: Path) -> None:
    """A provider's ``max_concurrency`` is a cluster-wide cap (a distributed Semaphore).

    Two exports run at once on the same cluster; each alone would already be
    serial (the engine sizes its fetch threads by the cap), so only the
    cluster-wide cap keeps their fetches from overlapping.
    """
    import dask

    scheduler_before = dask.config.get("scheduler", None)
    log = str(tmp_path / "capped.log")
    results: dict[str, Any] = {}

    def one(name: str, offset: int) -> None:
        try:
            results[name] = run(client, make_rois(8, offset=offset), ExportTarget.combined(str(tmp_path / f"{name}.npz")),
                                backend="capped", provider_options={"log": log, "latency_s": 0.05})  # fmt: skip
        except BaseException as exc:  # re-raised below, in the test's thread
            results[name] = exc

    threads = [threading.Thread(target=one, args=(name, off)) for name, off in (("a", 0), ("b", 8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for name in ("a", "b"):
        if isinstance(results.get(name), BaseException):
            raise results[name]
        assert results[name]["status"] == "ok"
    spans = sorted((float(ln.split("\t")[2]), float(ln.split("\t")[3])) for ln in plug.read_lines(log))
    assert len(spans) == 16
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlaps, f"{len(overlaps)} provider calls overlapped despite max_concurrency=1"
    # and concurrent exports leave dask's process-wide configuration as they found it
    assert dask.config.get("scheduler", None) == scheduler_before


# -- 6. errors are data ----------------------------------------------------------------------------
FAIL_RATE = 0.4


@pytest.fixture(scope="module")
def expected_failures() -> list[int]:
    """Indices of ``ROIS[:8]`` whose synthetic fetch fails at ``FAIL_RATE`` (computed in-process)."""
    from rs_embed_dask.core.errors import ProviderError
    from rs_embed_dask.providers.synthetic import SyntheticProvider
    from rs_embed_dask.resolve import resolve_model

    prov = SyntheticProvider(failure_rate=FAIL_RATE)
    sensor = resolve_model("rcf", backend="synthetic").sensor
    bad = []
    for i, sp in enumerate(ROIS[:8]):
        try:
            prov.fetch(sp, TEMPORAL, sensor)
        except ProviderError:
            bad.append(i)
    assert 0 < len(bad) < 8, "choose ROIs/rate so that some, not all, fail"
    return bad


def test_continue_on_error_combined_records_failed_rois(
    client: Any, tmp_path: Path, expected_failures: list[int], reference: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "partial.npz"
    man = run(client, ROIS[:8], ExportTarget.combined(str(out)),
              provider_options={"failure_rate": FAIL_RATE}, continue_on_error=True)  # fmt: skip
    assert man["status"] == "partial"
    (entry,) = man["models"]
    assert entry["status"] == "partial"
    assert entry["failed_indices"] == expected_failures
    assert sorted(entry["errors_by_index"], key=int) == [str(i) for i in expected_failures]
    for i in expected_failures:
        err = entry["errors_by_index"][str(i)]
        assert err.startswith(f'ProviderError("Prefetch previously failed for index={i}, sensor=')
        assert "ProviderError('synthetic provider: simulated fetch failure" in err
        assert entry["metas"][i] is None
    ok = [i for i in range(8) if i not in expected_failures]
    assert entry["embeddings"]["indices"] == ok
    assert entry["inputs"]["indices"] == ok
    assert man["summary"] == {"total_models": 1, "failed_models": 0, "partial_models": 1, "ok_models": 0}
    arrays = load_npz(out)
    assert sorted(arrays) == sorted([f"embedding__rcf__{i:05d}" for i in ok] + ["inputs_bchw__rcf"])
    for i in ok:
        np.testing.assert_array_equal(arrays[f"embedding__rcf__{i:05d}"], reference["embeddings__rcf"][i])
    np.testing.assert_array_equal(arrays["inputs_bchw__rcf"], reference["inputs_bchw__rcf"][ok])
    on_disk = json.loads((tmp_path / "partial.json").read_text())
    assert on_disk["models"][0]["errors_by_index"] == entry["errors_by_index"]


def test_continue_on_error_per_item_writes_failed_files(
    client: Any, tmp_path: Path, expected_failures: list[int], reference: dict[str, np.ndarray]
) -> None:
    out_dir = tmp_path / "items"
    mans = run(client, ROIS[:8], ExportTarget.per_item(str(out_dir)),
               provider_options={"failure_rate": FAIL_RATE}, continue_on_error=True)  # fmt: skip
    assert [m["point_index"] for m in mans] == list(range(8))
    for i, m in enumerate(mans):
        npz, sidecar = out_dir / f"p{i:05d}.npz", out_dir / f"p{i:05d}.json"
        assert npz.exists()
        assert sidecar.exists()
        (entry,) = m["models"]
        if i in expected_failures:
            assert m["status"] == "failed"
            assert entry["status"] == "failed"
            assert m["npz_keys"] == []
            assert json.loads(sidecar.read_text())["npz_keys"] == []
            assert load_npz(npz) == {}
            assert entry["embedding"] is None
            assert entry["input"] is None
            assert "ProviderError('synthetic provider: simulated fetch failure" in entry["error"]
        else:
            assert m["status"] == "ok"
            assert "error" not in entry
            np.testing.assert_array_equal(load_npz(npz)["embedding__rcf"], reference["embeddings__rcf"][i])


def test_without_continue_on_error_a_failed_fetch_raises(client: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="simulated fetch failure"):
        run(client, ROIS[:8], ExportTarget.combined(str(tmp_path / "raise.npz")),
            provider_options={"failure_rate": FAIL_RATE}, continue_on_error=False)  # fmt: skip
    assert not (tmp_path / "raise.npz").exists()
    wait_until_idle(client)  # the cancelled export's running tasks end before the next test


def test_transient_failures_are_retried(client: Any, tmp_path: Path) -> None:
    """transient_failure_rate=0.5 with max_retries=8 succeeds; with max_retries=0 it fails.

    The IO worker's ``random`` is seeded and ``num_workers=1`` makes one fetch
    thread, so both outcomes are reproducible (4 ROIs exhausting 9 attempts
    would be 1 chance in ~130 unseeded).
    """
    rois = ROIS[:4]  # one chunk, one fetch task
    io = worker_addrs(client, "io")
    opts = {"transient_failure_rate": 0.5}

    wait_until_idle(client)
    client.run(plug.seed_random, 7, workers=io)
    with pytest.raises(ModelError, match="429"):
        run(client, rois, ExportTarget.combined(str(tmp_path / "noretry.npz")), backend="counting",
            provider_options={**opts, "log": str(tmp_path / "a.log")}, max_retries=0, num_workers=1)  # fmt: skip

    wait_until_idle(client)
    client.run(plug.seed_random, 7, workers=io)
    log = str(tmp_path / "b.log")
    man = run(client, rois, ExportTarget.combined(str(tmp_path / "retry.npz")), backend="counting",
              provider_options={**opts, "log": log}, max_retries=8, num_workers=1)  # fmt: skip
    assert man["status"] == "ok"
    attempts = collections.Counter(ln.split("\t")[1] for ln in plug.read_lines(log))
    assert set(attempts) == {plug.roi_id(sp) for sp in rois}
    assert sum(attempts.values()) > len(rois), "no transient failure happened: the retries were not exercised"
    assert max(attempts.values()) <= 9
    assert load_npz(tmp_path / "retry.npz")["embeddings__rcf"].shape == (4, EMB_DIM)


# -- 7. a generator streams through a combined export ---------------------------------------------
def test_generator_streams_through_combined_export(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    n = 60  # 15 chunks: more than the engine keeps in flight
    out = tmp_path / "gen.npz"
    store = str(out) + ".work.zarr"
    done_when_pulled: list[int] = []

    def gen() -> Iterator[PointBuffer]:
        for sp in make_rois(n):
            done_when_pulled.append(n_done(store, n))
            yield sp

    man = run(client, gen(), ExportTarget.combined(str(out)))
    assert man["status"] == "ok"
    assert man["n_items"] == n
    assert len(man["spatials"]) == n
    assert len(done_when_pulled) == n
    # consumed chunk by chunk: the last ROIs were pulled after the first chunks were written
    assert done_when_pulled[0] == 0
    assert done_when_pulled[-1] > 0
    arrays = load_npz(out)
    assert arrays["embeddings__rcf"].shape == (n, EMB_DIM)
    assert arrays["inputs_bchw__rcf"].shape == (n, 4, 32, 32)
    np.testing.assert_array_equal(arrays["embeddings__rcf"][:N_REF], reference["embeddings__rcf"])
    assert not os.path.exists(store)


def test_streamed_resume_after_a_broken_stream_runs_only_unfinished_chunks(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """A stream that breaks mid-export leaves a store of unknown length; resume finishes it."""
    out = str(tmp_path / "broken.npz")
    store = out + ".work.zarr"
    rois = ROIS[:12]

    with pytest.raises(RuntimeError, match="the stream broke"):
        run(client, broken_stream(rois[:8], store, CHUNK), ExportTarget.combined(out), backend="counting",
            provider_options={"log": str(tmp_path / "first.log")})  # fmt: skip
    wait_until_idle(client)  # tasks already running when the stream broke still finish
    status = status_column(store, 12)
    assert status is not None
    done = [k for k in range(3) if (status[k * CHUNK : (k + 1) * CHUNK] != 0).all()]
    assert 0 in done
    assert 2 not in done

    log = str(tmp_path / "resume.log")
    man = run(client, iter(rois), ExportTarget.combined(out), backend="counting",
              provider_options={"log": log}, resume=True)  # fmt: skip
    assert man["status"] == "ok"
    assert man["n_items"] == 12
    todo = [sp for k in range(3) if k not in done for sp in rois[k * CHUNK : (k + 1) * CHUNK]]
    assert sorted(ln.split("\t")[1] for ln in plug.read_lines(log)) == sorted(plug.roi_id(sp) for sp in todo)
    arrays = load_npz(out)
    np.testing.assert_array_equal(arrays["embeddings__rcf"], reference["embeddings__rcf"][:12])
    np.testing.assert_array_equal(arrays["inputs_bchw__rcf"], reference["inputs_bchw__rcf"][:12])


def test_combined_npz_parts_written_by_write_tasks_and_lost_parts_redone(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """Write tasks deflate each finished chunk into a part of the final NPZ; a lost or damaged part is redone."""
    from rs_embed_dask.export.npz_parts import parts_dir

    out = str(tmp_path / "parts.npz")
    store = out + ".work.zarr"
    rois = ROIS[:12]

    with pytest.raises(RuntimeError, match="the stream broke"):
        run(client, broken_stream(rois[:8], store, 2 * CHUNK), ExportTarget.combined(out))
    wait_until_idle(client)
    pdir = parts_dir(store)
    subs = sorted(os.listdir(pdir))  # one folder per dense store array: the input and the embeddings
    assert len(subs) == 2
    assert subs[0].startswith("inputs__")
    assert subs[0].endswith("__data")
    assert subs[1] == "models__rcf__embeddings"
    for sub in subs:
        assert {"000000000000.part", "000000000004.part"} <= set(os.listdir(os.path.join(pdir, sub)))
    os.remove(os.path.join(pdir, subs[0], "000000000000.part"))  # lost
    with open(os.path.join(pdir, "models__rcf__embeddings", "000000000004.part"), "r+b") as f:
        f.truncate(12)  # damaged

    man = run(client, iter(rois), ExportTarget.combined(out), resume=True)
    assert man["status"] == "ok"
    assert not os.path.exists(pdir)
    assert not os.path.exists(store)
    assert_bitwise_equal(load_npz(out), {k: v[:12] for k, v in reference.items()})


def test_streamed_resume_reuses_only_chunks_of_the_same_rois(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """The fingerprint of a streamed request cannot cover its ROIs: resume checks them chunk by chunk."""
    out = str(tmp_path / "s.zarr")
    first = run(client, iter(ROIS[:8]), ExportTarget.combined(out), backend="counting",
                provider_options={"log": str(tmp_path / "first.log")}, format="zarr")  # fmt: skip
    assert first["n_items"] == 8
    # same first chunk, a different second chunk, one chunk more
    order = [*range(4), *range(20, 24), *range(8, 12)]
    log = str(tmp_path / "second.log")
    man = run(client, iter([ROIS[i] for i in order]), ExportTarget.combined(out), backend="counting",
              provider_options={"log": log}, format="zarr", resume=True)  # fmt: skip
    assert man["status"] == "ok"
    assert man["n_items"] == 12
    assert sorted(ln.split("\t")[1] for ln in plug.read_lines(log)) == sorted(
        plug.roi_id(ROIS[i]) for i in order[4:]
    )
    root = zarr.open_group(out, mode="r")
    assert root.attrs["rs_embed_dask"]["complete"] is True
    assert root.attrs["rs_embed_dask"]["n_items"] == 12
    np.testing.assert_array_equal(root["models/rcf/embeddings"][:], reference["embeddings__rcf"][order])
    assert [json.loads(s)["lon"] for s in root["spatials"][:]] == [ROIS[i].lon for i in order]


# -- 8. format="zarr" ------------------------------------------------------------------------------
def test_zarr_format_keeps_the_store(client: Any, tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    out = tmp_path / "x.zarr"
    man = run(client, ROIS[:10], ExportTarget.combined(str(out)), format="zarr")
    assert man["status"] == "ok"
    root = zarr.open_group(str(out), mode="r")
    attrs = root.attrs["rs_embed_dask"]
    assert attrs["complete"] is True
    assert attrs["n_items"] == 10
    emb = root["models/rcf/embeddings"]
    assert emb.shape == (10, EMB_DIM)
    np.testing.assert_array_equal(emb[:], reference["embeddings__rcf"][:10])
    assert (root["models/rcf/status"][:] == 1).all()
    (key,) = list(root["inputs"].group_keys())
    np.testing.assert_array_equal(root[f"inputs/{key}/data"][:], reference["inputs_bchw__rcf"][:10])
    assert json.loads((tmp_path / "x.json").read_text())["status"] == "ok"


# -- 4. a worker killed mid-export -----------------------------------------------------------------
def test_killed_inference_workers_mid_export_leave_a_correct_export(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    from distributed import get_task_stream

    out = tmp_path / "killed.npz"
    store = str(out) + ".work.zarr"
    gpu_before = worker_addrs(client, "gpu")
    pids_before = client.run(plug.worker_pid, workers=gpu_before)
    state: dict[str, Any] = {}
    stop = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            done = n_done(store)
            if done >= CHUNK:  # the first chunk is written
                state["done_at_kill"] = done
                for pid in pids_before.values():
                    os.kill(pid, signal.SIGKILL)  # the nannies start new worker processes
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        with get_task_stream(client=client) as ts:
            # num_workers=4: one fetch task (4 ROIs x 0.3 s) at a time, so ~3 s of work
            man = run(client, ROIS, ExportTarget.combined(str(out)),
                      provider_options={"latency_s": 0.3}, num_workers=4)  # fmt: skip
    finally:
        stop.set()
        t.join()
    assert "done_at_kill" in state, "the workers were never killed"
    assert state["done_at_kill"] < N_REF
    infer_workers = {w for _, w in keys_by_kind(ts.data)["infer"]}
    assert infer_workers - set(gpu_before), "no inference ran on a restarted worker: the kill came too late"

    assert man["status"] == "ok"
    assert_bitwise_equal(load_npz(out), reference)

    deadline = time.monotonic() + 60
    while len(worker_addrs(client, "gpu")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    pids_after = client.run(plug.worker_pid, workers=worker_addrs(client, "gpu"))
    assert len(pids_after) == 2
    assert not set(pids_after.values()) & set(pids_before.values())


# -- 5. a client killed mid-export, then resumed ---------------------------------------------------
_CLIENT_SCRIPT = r"""
import json, sys
args = json.loads(sys.argv[1])
sys.path.insert(0, args["tests_dir"])
import _engine_plugins as plug
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch

if __name__ == "__main__":
    plug.register()
    export_batch(
        spatials=[PointBuffer(**r) for r in args["rois"]],
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["rcf"],
        target=ExportTarget.combined(args["out"]),
        backend="counting",
        config=ExportConfig(chunk_size=4, num_workers=4, show_progress=False),
        provider_options={"log": args["log"], "latency_s": 1.0},
    )  # client=None: an embedded local cluster, in this process group
    print("finished", flush=True)
"""


def _group_alive(pgid: int) -> list[int]:
    import psutil

    alive = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def test_killed_client_resumes_only_unfinished_chunks(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = str(tmp_path / "resumed.npz")
    store = out + ".work.zarr"
    args = {
        "tests_dir": TESTS_DIR,
        "out": out,
        "log": str(tmp_path / "first.log"),
        "rois": [{"lon": sp.lon, "lat": sp.lat, "buffer_m": sp.buffer_m} for sp in ROIS],
    }
    env = plug.pythonpath_env()
    env.pop(plug.LOAD_LOG_ENV, None)
    with open(tmp_path / "child.out", "wb") as child_out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT_SCRIPT, json.dumps(args)],
            stdout=child_out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: the cluster's processes die with it
        )
    try:
        deadline = time.monotonic() + 180
        while n_done(store) < 2 * CHUNK:
            assert proc.poll() is None, (
                "the export process exited early:\n" + (tmp_path / "child.out").read_text()
            )
            assert time.monotonic() < deadline, "no chunk was written in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not _group_alive(proc.pid), "processes of the killed export are still running"
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(out), "the first run finished before it was killed"

    status = status_column(store, N_REF)
    assert status is not None
    n_chunks = N_REF // CHUNK
    done = [k for k in range(n_chunks) if (status[k * CHUNK : (k + 1) * CHUNK] != 0).all()]
    assert 1 <= len(done) < n_chunks, done
    todo_rois = [sp for k in range(n_chunks) if k not in done for sp in ROIS[k * CHUNK : (k + 1) * CHUNK]]

    log = str(tmp_path / "resume.log")
    man = run(client, ROIS, ExportTarget.combined(out), backend="counting",
              provider_options={"log": log}, num_workers=4, resume=True)  # fmt: skip
    assert man["status"] == "ok"
    assert man["n_items"] == N_REF
    fetched = [ln.split("\t")[1] for ln in plug.read_lines(log)]
    assert len(fetched) == len(todo_rois) <= N_REF - CHUNK * len(done)
    assert sorted(fetched) == sorted(plug.roi_id(sp) for sp in todo_rois)
    assert_bitwise_equal(load_npz(out), reference)
    assert not os.path.exists(store)
