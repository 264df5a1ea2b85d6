"""IO work below inference on a worker that shares its cores with the model.

On a CPU-only machine the default local cluster runs fetches, compression and
writes in the same process as the forward pass (one worker holding both
resources).  Their threads then compete with torch's intra-op threads for the
two or so cores; each time the scheduler hands a core to an IO thread in the
middle of a parallel region, the other torch threads wait for it at the
region's barrier.  With ``RS_EMBED_IO_NICE`` set (for example 19; the local
cluster passes it on to its shared worker), fetch threads and write tasks run on
threads whose nice value is raised by that much, so the kernel gives the cores
to inference first and IO work takes the cycles it leaves.  It is opt-in: on the
2-core machine this project is measured on it made no difference beyond the
run-to-run noise (a GIL held by a lowered thread can also keep the inference
thread waiting).  A thread's nice value cannot be lowered again without
privileges, so the work goes to threads made for it, never Dask's own pool.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["io_nice", "lower_this_thread", "run_as_io", "thread_pool"]

T = TypeVar("T")
_POOL: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def io_nice() -> int:
    """``$RS_EMBED_IO_NICE`` (0: IO threads keep their priority; also off outside Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return max(0, min(19, int(os.environ.get("RS_EMBED_IO_NICE", "0") or 0)))
    except ValueError:
        return 0


def lower_this_thread() -> None:
    """Raise the calling thread's nice value by :func:`io_nice` (Linux: nice is per thread)."""
    n = io_nice()
    if n:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + n))
        except OSError:  # a sandbox that refuses it: the work still runs
            pass


def thread_pool(max_workers: int) -> ThreadPoolExecutor:
    """A thread pool for IO work: its threads are lowered when :func:`io_nice` is set."""
    return ThreadPoolExecutor(max_workers=max_workers, initializer=lower_this_thread if io_nice() else None)


def run_as_io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, on a lowered thread of this process when :func:`io_nice` is set."""
    if not io_nice():
        return fn(*args, **kwargs)
    with _pool_lock:
        if not _POOL:
            _POOL.append(thread_pool(64))
        pool = _POOL[0]
    return pool.submit(fn, *args, **kwargs).result()
