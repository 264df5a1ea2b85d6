"""The embedded default: both worker pools on this machine.

Fetch and write tasks ask for the resource ``io``, inference tasks for
``gpu``.  With GPUs (layout ``"split"``), IO workers run many threads and
inference workers run one thread each and see one GPU each
(``CUDA_VISIBLE_DEVICES``).  On a machine without a GPU the default layout is
``"shared"``: one worker process holds both resources, inference uses every
core through torch's threads, and fetches, decoding, compression and writes
run on threads of the same process in the gaps, with no transfer of inputs
between processes.  Measured on the export benchmark, that layout comes
closest to the forward pass alone on all cores (``benchmarks/bench_cpu_layouts.py``).
:func:`export_client` starts such a cluster for one export call when no
client is given or active.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rs_embed_dask.cluster.client import print_dashboard
from rs_embed_dask.core.errors import SpecError

__all__ = ["close_cluster", "export_client", "local_cluster"]


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch missing or broken
        return []


def _cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_split(n_inf: int, inference_threads: int | None) -> tuple[list[list[int]], list[int]]:
    """Cores of each CPU stand-in inference worker and the cores left to the IO workers.

    Inference workers get ``inference_threads`` cores each (default: half the
    machine shared among them), the IO workers the rest; ``([], [])`` when the
    machine is too small to split or cannot pin processes.
    """
    if not hasattr(os, "sched_getaffinity"):
        return [], []
    cores = sorted(os.sched_getaffinity(0))
    per = int(inference_threads) if inference_threads else max(1, len(cores) // 2 // max(1, n_inf))
    if per * n_inf >= len(cores):
        return [], []
    return [cores[i * per : (i + 1) * per] for i in range(n_inf)], cores[per * n_inf :]


def local_cluster(
    *,
    io_workers: int = 1,
    io_threads: int = 8,
    inference_workers: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = ":0",
    processes: bool = True,
    verbose: bool = True,
    inference_threads: int | None = None,
    layout: str = "auto",
    profile: bool = False,
) -> Any:
    """Start a local cluster for exports: an IO pool and an inference pool.

    Parameters
    ----------
    io_workers : int, default 1
        IO worker processes, each with ``io_threads`` threads and resource ``io=io_threads``.
    io_threads : int, default 8
        Concurrent fetch tasks per IO worker.
    inference_workers : int, optional
        Inference worker processes (one thread each, resource ``gpu=1``); default one per
        visible GPU, or one CPU stand-in when there is no GPU.  Giving it selects the
        ``"split"`` layout under ``layout="auto"``.
    memory_limit : str or float, default "auto"
        Per-worker memory limit passed to the workers.
    dashboard_address : str, optional
        Where the dashboard listens (``":0"``: a free port; ``None``: no dashboard).
    processes : bool, default True
        Worker processes (``True``) or threads in this process (``False``).
    verbose : bool, default True
        Print the dashboard link.
    inference_threads : int, optional
        Cores (and torch threads) of each inference worker that runs on the
        CPU (no GPU visible); default: half the machine's cores shared among
        the inference workers.  On Linux those cores are the worker's own and
        the IO workers are pinned to the others, as a GPU worker has its
        device to itself (Dask starts workers with ``OMP_NUM_THREADS=1``; the
        inference task is the one that should use its cores).  In the
        ``"shared"`` layout: torch threads of the shared worker (default: all
        cores), no pinning.
    layout : {"auto", "shared", "split"}, default "auto"
        ``"split"``: separate IO and inference worker processes (the layout of
        a GPU machine).  ``"shared"``: one worker process with both resources
        (``io=io_threads``, ``gpu=1``) and ``io_threads + 3`` threads, inference
        on all cores; CPU only.  ``"auto"``: ``"shared"`` when no GPU is
        visible, one IO worker is asked for and ``inference_workers`` is not
        given, else ``"split"``.
    profile : bool, default False
        Run Dask's statistical profiler on the worker processes (the
        dashboard's "Profile" page).  It walks every thread's stack every
        10 ms while holding the GIL, which slowed a CPU inference worker's
        forward pass by about a tenth; off unless asked for.

    Returns
    -------
    distributed.SpecCluster
    """
    from distributed import Worker

    from rs_embed_dask.cluster.nanny import PatientNanny

    if layout not in ("auto", "shared", "split"):
        raise SpecError(f"local_cluster: layout must be one of 'auto', 'shared', 'split'; got {layout!r}.")
    gpus = _visible_gpus()
    if layout == "shared" and gpus:
        raise SpecError(
            f"local_cluster: layout='shared' runs inference on the CPU, but GPUs {gpus} are visible; "
            "use layout='split' (or 'auto'), or hide them with CUDA_VISIBLE_DEVICES=''."
        )
    if layout == "auto":
        layout = "shared" if not gpus and io_workers == 1 and inference_workers is None else "split"
    cls = PatientNanny if processes else Worker
    workers: dict[str, Any] = {}
    # worker processes log at WARNING unless the user configured otherwise
    quiet = {"DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning")}
    # dask config set in each worker process before its Worker starts (a Nanny's ``config``)
    proc_config = {"config": {"distributed.worker.profile.enabled": False}} if processes and not profile else {}
    if layout == "shared":
        shared: dict[str, Any] = {
            "nthreads": io_threads + 3,  # fetches, the inference task and write tasks beside them
            "resources": {"io": io_threads, "gpu": 1},
            "memory_limit": memory_limit,
        }
        if processes:
            threads = inference_threads or len(_cores())
            env = {**quiet, "RS_EMBED_TORCH_THREADS": str(int(threads))}
            if os.environ.get("RS_EMBED_IO_NICE"):  # opt-in: IO threads below inference (export/priority.py)
                env["RS_EMBED_IO_NICE"] = os.environ["RS_EMBED_IO_NICE"]
            shared.update(env=env, silence_logs=30, **proc_config)
        workers["cpu-0"] = {"cls": cls, "options": shared}
        return _spec_cluster(workers, dashboard_address, verbose)
    n_inf = inference_workers if inference_workers is not None else max(1, len(gpus))
    inf_cores, io_cores = _cpu_split(n_inf, inference_threads) if processes and not gpus else ([], [])
    for i in range(io_workers):
        workers[f"io-{i}"] = {
            "cls": cls,
            "options": {
                "nthreads": io_threads + 2,  # +2 for write tasks beside the fetches
                "resources": {"io": io_threads},
                "memory_limit": memory_limit,
                **({"env": dict(quiet), "silence_logs": 30, **proc_config} if processes else {}),
            },
        }
        if io_cores:
            workers[f"io-{i}"]["options"]["env"]["RS_EMBED_CPU_AFFINITY"] = ",".join(map(str, io_cores))
            workers[f"io-{i}"]["options"]["preload"] = ["rs_embed_dask.cluster.worker_setup"]
    for i in range(n_inf):
        opts: dict[str, Any] = {
            "nthreads": 1,
            "resources": {"gpu": 1},
            "memory_limit": memory_limit,
            **({"env": dict(quiet), "silence_logs": 30, **proc_config} if processes else {}),
        }
        if gpus and processes:
            opts["env"]["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif processes:
            threads = len(inf_cores[i]) if inf_cores else (inference_threads or max(1, (os.cpu_count() or 1) // n_inf))
            opts["env"]["RS_EMBED_TORCH_THREADS"] = str(int(threads))
            if inf_cores:
                opts["env"]["RS_EMBED_CPU_AFFINITY"] = ",".join(map(str, inf_cores[i]))
                opts["preload"] = ["rs_embed_dask.cluster.worker_setup"]
        workers[f"gpu-{i}"] = {"cls": cls, "options": opts}
    return _spec_cluster(workers, dashboard_address, verbose)


def _spec_cluster(workers: dict[str, Any], dashboard_address: str | None, verbose: bool) -> Any:
    from distributed import Scheduler, SpecCluster

    scheduler = {
        "cls": Scheduler,
        # the scheduler's HTTP server (health, metrics) starts even without a dashboard, on
        # :8787 unless told otherwise: a free port then, so no clash with another cluster
        "options": {
            "dashboard": dashboard_address is not None,
            "dashboard_address": dashboard_address if dashboard_address is not None else ":0",
            "host": "127.0.0.1",
        },
    }
    cluster = SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40)
    if verbose:
        print_dashboard(cluster, "local cluster")
    return cluster


@contextlib.contextmanager
def export_client(client: Any = None, *, io_threads: int = 8) -> Iterator[Any]:
    """The client to run an export on.

    The given client, else the active one, else an embedded local cluster
    started here and closed on exit.  The embedded cluster's worker
    processes do not re-run the user's ``__main__`` module
    (:func:`rs_embed_dask.cluster.worker_setup.spawn_without_main`), so a plain
    script without ``if __name__ == "__main__":`` exports once, on process
    workers, as a guarded one does.
    """
    from distributed import Client, get_client

    from rs_embed_dask.cluster.worker_setup import spawn_without_main

    if client is not None:
        yield client
        return
    try:
        active = get_client()
    except ValueError:
        active = None
    if active is not None:
        yield active
        return
    # the cluster lives inside this call, while the caller's top-level code waits for it
    with spawn_without_main():
        cluster = local_cluster(io_threads=io_threads, verbose=False)
        try:
            with Client(cluster) as c:  # the export's progress bar prints the dashboard link, once
                yield c
        finally:
            close_cluster(cluster)


def close_cluster(cluster: Any, timeout: float = 10.0) -> None:
    """Close a local cluster's workers, then its scheduler.

    ``SpecCluster.close`` may close the scheduler while a worker is between
    two heartbeats; that worker then logs a ``CommClosedError`` traceback
    after a run that went well.  Scaling to zero first lets every worker
    unregister and stop its heartbeats before the scheduler goes.
    """
    import time

    try:
        cluster.scale(0)
        deadline = time.monotonic() + timeout
        while cluster.scheduler_info.get("workers") and time.monotonic() < deadline:
            time.sleep(0.05)
    except Exception:  # a cluster that is already closing: close() below finishes it
        pass
    cluster.close()
