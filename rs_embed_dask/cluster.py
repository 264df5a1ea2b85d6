"""Clusters for exports: the embedded local cluster with IO and inference pools.

IO workers run many threads and advertise the resource ``io``; inference
workers run one thread each, advertise ``gpu`` and see one GPU each
(``CUDA_VISIBLE_DEVICES``), or stand in for a GPU on a machine without one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["cluster_resources", "export_client", "local_cluster"]


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch missing or broken
        return []


def local_cluster(
    *,
    io_workers: int = 1,
    io_threads: int = 8,
    inference_workers: int | None = None,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = ":0",
    processes: bool = True,
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
    for i in range(io_workers):
        workers[f"io-{i}"] = {
            "cls": cls,
            "options": {
                "nthreads": io_threads + 2,  # +2 for write tasks beside the fetches
                "resources": {"io": io_threads},
                "memory_limit": memory_limit,
                "env": dict(quiet),
                **({"silence_logs": 30} if processes else {}),
            },
        }
    for i in range(n_inf):
        opts: dict[str, Any] = {
            "nthreads": 1,
            "resources": {"gpu": 1},
            "memory_limit": memory_limit,
            "env": dict(quiet),
            **({"silence_logs": 30} if processes else {}),
        }
        if gpus and processes:
            opts["env"]["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
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
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40)


def cluster_resources(client: Any) -> dict[str, float]:
    """Total of each resource advertised by the cluster's workers."""
    totals: dict[str, float] = {}
    for info in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        for k, v in (info.get("resources") or {}).items():
            totals[k] = totals.get(k, 0) + v
    return totals


@contextlib.contextmanager
def export_client(client: Any = None, *, io_threads: int = 8, verbose: bool = True) -> Iterator[Any]:
    """The client to run an export on.

    The given client, else the active one, else an embedded local cluster
    started here and closed on exit.
    """
    from distributed import Client, get_client

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
    cluster = local_cluster(io_threads=io_threads)
    try:
        with Client(cluster) as c:
            if verbose and c.dashboard_link:
                print(f"rs-embed-dask: local cluster dashboard at {c.dashboard_link}", flush=True)
            yield c
    finally:
        cluster.close()
