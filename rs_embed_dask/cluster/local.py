"""The embedded default: both worker pools on this machine.

IO workers run many threads and advertise the resource ``io``; inference
workers run one thread each, advertise ``gpu`` and see one GPU each
(``CUDA_VISIBLE_DEVICES``), or stand in for a GPU on a machine without one.
:func:`export_client` starts such a cluster for one export call when no
client is given or active.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rs_embed_dask.cluster.client import print_dashboard

__all__ = ["export_client", "local_cluster"]


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch missing or broken
        return []


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
) -> Any:
    """Start a local cluster with separate IO and inference pools.

    Parameters
    ----------
    io_workers : int, default 1
        IO worker processes, each with ``io_threads`` threads and resource ``io=io_threads``.
    io_threads : int, default 8
        Concurrent fetch tasks per IO worker.
    inference_workers : int, optional
        Inference worker processes (one thread each, resource ``gpu=1``); default one per
        visible GPU, or one CPU stand-in when there is no GPU.
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
        inference task is the one that should use its cores).

    Returns
    -------
    distributed.SpecCluster
    """
    from distributed import Nanny, Scheduler, SpecCluster, Worker

    gpus = _visible_gpus()
    n_inf = inference_workers if inference_workers is not None else max(1, len(gpus))
    cls = Nanny if processes else Worker
    workers: dict[str, Any] = {}
    # worker processes log at WARNING unless the user configured otherwise
    quiet = {"DASK_LOGGING__DISTRIBUTED": os.environ.get("DASK_LOGGING__DISTRIBUTED", "warning")}
    inf_cores, io_cores = _cpu_split(n_inf, inference_threads) if processes and not gpus else ([], [])
    for i in range(io_workers):
        workers[f"io-{i}"] = {
            "cls": cls,
            "options": {
                "nthreads": io_threads + 2,  # +2 for write tasks beside the fetches
                "resources": {"io": io_threads},
                "memory_limit": memory_limit,
                **({"env": dict(quiet), "silence_logs": 30} if processes else {}),
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
            **({"env": dict(quiet), "silence_logs": 30} if processes else {}),
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
            cluster.close()
