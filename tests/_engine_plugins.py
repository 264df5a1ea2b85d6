"""Instrumented plugins for the engine tests (``tests/test_export_engine.py``).

They live in a real module, not in the test file, because the engine ships
runtime-registered classes to the worker processes inside the task graph
(``ExportPlan.plugins``), and cloudpickle sends classes of importable modules
*by reference*: every worker process must be able to ``import
_engine_plugins``.  Worker processes of a ``LocalCluster``/``SpecCluster`` are
started with the ``spawn`` method, which copies the parent's ``sys.path``, so
it is enough that ``tests/`` is on ``sys.path`` when the cluster starts (the
test module makes sure it is; :func:`pythonpath_env` does the same for
subprocesses).

* :class:`CountingProvider` (``backend="counting"``): the synthetic world plus
  one line per provider call in the file given as ``provider_options={"log":
  path}`` (``"<pid>\\t<lon>,<lat>"`` for a PointBuffer).  A retried fetch logs
  one line per attempt.
* :class:`CappedProvider` (``backend="capped"``): ``max_concurrency = 1``,
  logging the start and end time of every call.
* :class:`CountingRCF` (model ``"rcf_b"``): RCF under another name (same
  default sensor, hence the same input key as ``"rcf"``) that appends
  ``"<pid>"`` to the file named by ``$RS_EMBED_TEST_LOAD_LOG`` every time a
  fresh instance is loaded, i.e. once per model load in a process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rs_embed_dask.models.rcf import RCFEmbedder
from rs_embed_dask.providers.synthetic import SyntheticProvider

LOAD_LOG_ENV = "RS_EMBED_TEST_LOAD_LOG"
PROVIDER_NAME = "counting"
CAPPED_NAME = "capped"
MODEL_NAME = "rcf_b"


def append_line(path: str, line: str) -> None:
    """Append one line with a single ``write(2)`` on an ``O_APPEND`` descriptor (safe across processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: str) -> list[str]:
    """Lines of a log file (``[]`` when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [ln for ln in f.read().splitlines() if ln]


def roi_id(spatial: Any) -> str:
    """A stable text id of a ROI (its centre)."""
    lon, lat = spatial.center
    return f"{lon:.6f},{lat:.6f}"


class CountingProvider(SyntheticProvider):
    """The synthetic provider, logging every fetch call to ``log``."""

    name = PROVIDER_NAME

    def __init__(self, *, log: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.log = log
        self.options["log"] = log

    def fetch(self, spatial: Any, temporal: Any, sensor: Any, *, n_frames: int | None = None) -> Any:
        if self.log:
            append_line(self.log, f"{os.getpid()}\t{roi_id(spatial)}")
        return super().fetch(spatial, temporal, sensor, n_frames=n_frames)


class CappedProvider(SyntheticProvider):
    """The synthetic world with a cluster-wide cap of one request at a time (``backend="capped"``).

    Logs ``"<pid>\t<roi>\t<start>\t<end>"`` (``time.time()``) per call to ``log``.
    """

    name = CAPPED_NAME
    max_concurrency = 1

    def __init__(self, *, log: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.log = log
        self.options["log"] = log

    def fetch(self, spatial: Any, temporal: Any, sensor: Any, *, n_frames: int | None = None) -> Any:
        t0 = time.time()
        out = super().fetch(spatial, temporal, sensor, n_frames=n_frames)
        if self.log:
            append_line(self.log, f"{os.getpid()}\t{roi_id(spatial)}\t{t0!r}\t{time.time()!r}")
        return out


class CountingRCF(RCFEmbedder):
    """``rcf`` registered as ``rcf_b``, logging each model load with the process id."""

    name = MODEL_NAME

    def load(self, device: str = "cpu") -> None:
        fresh = not self._loaded
        super().load(device)
        log = os.environ.get(LOAD_LOG_ENV)
        if fresh and log:
            append_line(log, str(os.getpid()))


def register() -> None:
    """Register both classes in this process (the engine ships them to the workers)."""
    from rs_embed_dask.core.registry import register_model, register_provider

    register_model(MODEL_NAME, CountingRCF, overwrite=True)
    register_provider(PROVIDER_NAME, CountingProvider, overwrite=True)
    register_provider(CAPPED_NAME, CappedProvider, overwrite=True)


def unregister() -> None:
    """Undo :func:`register`."""
    from rs_embed_dask.core.registry import unregister_model, unregister_provider

    unregister_model(MODEL_NAME)
    unregister_provider(PROVIDER_NAME)
    unregister_provider(CAPPED_NAME)


def pythonpath_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) with this folder on ``PYTHONPATH``."""
    out = dict(os.environ if env is None else env)
    here = os.path.dirname(os.path.abspath(__file__))
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in parts:
        parts.insert(0, here)
    out["PYTHONPATH"] = os.pathsep.join(parts)
    return out


# -- functions the tests run on the workers with ``client.run`` (importable, so pickled by reference)
def worker_pid() -> int:
    """The process id of the worker."""
    return os.getpid()


def load_counts() -> dict[str, int]:
    """Model loads in this process by model name (from ``resolve.LOAD_COUNTS``)."""
    from rs_embed_dask.resolve import LOAD_COUNTS

    out: dict[str, int] = {}
    for (name, _cfg, _dev), n in LOAD_COUNTS.items():
        out[name] = out.get(name, 0) + n
    return out


def reset_caches() -> None:
    """Drop the worker's cached models and providers (the next use loads again)."""
    from rs_embed_dask.resolve import reset_runtime

    reset_runtime()


def seed_random(seed: int) -> None:
    """Seed the process-wide ``random`` module (the synthetic provider's transient failures)."""
    import random

    random.seed(seed)


def scheduler_active_tasks(dask_scheduler: Any) -> int:
    """Tasks still to run or running (``client.run_on_scheduler``); erred/finished ones do not count."""
    active = {"waiting", "queued", "no-worker", "processing"}
    return sum(1 for ts in dask_scheduler.tasks.values() if ts.state in active)


def running_tasks(dask_worker: Any) -> int:
    """Tasks whose function is running in a thread of this worker (``client.run``), cancelled ones included."""
    return len(dask_worker.active_threads)
