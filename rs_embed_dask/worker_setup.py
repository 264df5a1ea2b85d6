"""Per-process set-up of the embedded cluster's workers (a Dask ``--preload`` module).

On a machine without a GPU, :func:`rs_embed_dask.cluster.local_cluster` gives
its CPU stand-in inference workers cores of their own and the IO workers the
others (``RS_EMBED_CPU_AFFINITY``, a comma-separated core list), as a GPU
worker has its device to itself: the model's threads then never queue
behind fetch and write work.  torch's thread count follows at model load
(:func:`rs_embed_dask.resolve.configure_cpu_threads`).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["apply_cpu_affinity", "dask_setup"]


def apply_cpu_affinity() -> tuple[int, ...] | None:
    """Pin this process to the cores in ``$RS_EMBED_CPU_AFFINITY``; return them, or ``None``."""
    value = os.environ.get("RS_EMBED_CPU_AFFINITY", "").strip()
    if not value or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cores = tuple(sorted({int(c) for c in value.split(",") if c.strip()}))
        os.sched_setaffinity(0, cores)
    except (ValueError, OSError):  # a core list this machine does not have: leave the process as is
        return None
    return cores


def dask_setup(worker: Any) -> None:
    """Dask preload hook: runs in the worker process before it starts."""
    apply_cpu_affinity()
