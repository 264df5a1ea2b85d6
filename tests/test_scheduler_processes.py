"""``rs-embed-dask export`` against a scheduler and workers started as separate processes.

The scheduler and the workers are started with the ``dask scheduler`` and
``dask worker --resources ...`` commands on 127.0.0.1, as a site without
dask-jobqueue would (``cluster/sbatch_export.sh``); the export runs as a
subprocess of the command line.  Placement is read from the scheduler's task
stream, which records the worker of every task of every client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=_env(), start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):  # workers first, the scheduler last
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A scheduler, one IO worker (io=8, 8 threads) and one inference worker (gpu=1, 1 thread)."""
    tmp = tmp_path_factory.mktemp("procs")
    sfile = tmp / "scheduler.json"
    procs = [
        _start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", str(sfile)],
            tmp / "scheduler.log",
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sfile.exists() or not sfile.stat().st_size:
            assert procs[0].poll() is None, (tmp / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not write its file"
            time.sleep(0.2)
        time.sleep(0.2)
        address = json.loads(sfile.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        common = ["--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0", "--death-timeout", "60"]
        procs.append(_start([DASK, "worker", address, "--name", "io-0", "--resources", "io=8", "--nthreads", "8", *common], tmp / "io.log"))
        procs.append(_start([DASK, "worker", address, "--name", "gpu-0", "--resources", "gpu=1", "--nthreads", "1", *common], tmp / "gpu.log"))
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=120)
        yield address, sfile
    finally:
        _stop(procs)


def _job(tmp: Path, n: int) -> Path:
    lons = [121.30 + 0.02 * i for i in range(n)]
    job = {
        "spatials": {"points": [[lon, 31.2] for lon in lons], "buffer_m": 320},
        "temporal": {"start": "2022-06-01", "end": "2022-09-01"},
        "models": ["rcf", {"name": "mosaiks", "model_config": {"features": 64}}],
        "backend": "synthetic",
        "target": {"combined": "out/export.zarr"},
        "config": {"format": "zarr", "chunk_size": 3},
    }
    path = tmp / "job.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return path


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rs_embed_dask", *args],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _placement(address: str, run: Any) -> tuple[dict[str, set[str]], Any]:
    from distributed import Client, get_task_stream

    with Client(address, timeout=60, set_as_default=False) as c:
        info = c.scheduler_info(n_workers=-1)["workers"]
        by_addr = {a: (w.get("resources") or {}) for a, w in info.items()}
        with get_task_stream(client=c) as ts:
            out = run()
        used: dict[str, set[str]] = {"fetch": set(), "infer": set()}
        for rec in ts.data:
            key = str(rec["key"])
            for kind in used:
                if key.startswith(f"rsembed-{kind}-"):
                    used[kind].add(",".join(sorted(by_addr.get(rec["worker"], {}))) or "none")
    return used, out


def test_export_job_on_a_running_scheduler_places_tasks_by_resource(scheduler: tuple[str, Path], tmp_path: Path) -> None:
    from rs_embed_dask import load_export

    address, _ = scheduler
    job = _job(tmp_path, 7)
    used, proc = _placement(address, lambda: _cli("export", str(job), "--scheduler", address, "--quiet"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "export ok" in proc.stdout
    # 7 ROIs in chunks of 3: 3 fetch tasks (one sensor shared by both models), 6 inference tasks
    assert used["fetch"] == {"io"}, used
    assert used["infer"] == {"gpu"}, used
    res = load_export(tmp_path / "out" / "export.zarr")
    assert res.status == "ok"
    assert res.n_items == 7
    assert set(res.models) == {"rcf", "mosaiks"}
    emb = np.asarray(res.embedding("rcf"))
    assert emb.shape == (7, 512)
    assert np.isfinite(emb).all()
    assert np.asarray(res.embedding("mosaiks")).shape == (7, 64)


def test_export_through_the_scheduler_file(scheduler: tuple[str, Path], tmp_path: Path) -> None:
    from rs_embed_dask import load_export

    _, sfile = scheduler
    job = _job(tmp_path, 2)
    proc = _cli("export", str(job), "--scheduler-file", str(sfile), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_export(tmp_path / "out" / "export.zarr").status == "ok"
    # a second run with --resume finds every chunk done and still succeeds
    again = _cli("export", str(job), "--scheduler-file", str(sfile), "--quiet", "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
