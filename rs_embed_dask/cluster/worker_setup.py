"""Per-process set-up of the embedded cluster's workers (a Dask ``--preload`` module).

On a machine without a GPU, :func:`rs_embed_dask.cluster.local_cluster` gives
its CPU stand-in inference workers cores of their own and the IO workers the
others (``RS_EMBED_CPU_AFFINITY``, a comma-separated core list), as a GPU
worker has its device to itself: the model's threads then never queue
behind fetch and write work.  torch's thread count follows at model load
(:func:`rs_embed_dask.resolve.configure_cpu_threads`).

A process that loads an on-the-fly model also gets glibc's allocator
thresholds of :func:`tune_malloc_for_inference`, wherever it runs.

While an export's embedded cluster runs, :func:`spawn_without_main` keeps
its worker processes from re-running the user's script: a plain script (no
``if __name__ == "__main__":``) then exports once, on process workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

__all__ = [
    "INFERENCE_MALLOC",
    "apply_cpu_affinity",
    "dask_setup",
    "malloc_tuning",
    "spawn_without_main",
    "tune_malloc_for_inference",
]

#: glibc ``mallopt`` parameters (``<malloc.h>``)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Thresholds applied to a process that runs a model's forward pass: blocks up to 32 MiB come
#: from the heap and up to 64 MiB of free heap top is kept for the next batch (where glibc's
#: dynamic rule settles: its ceiling, and twice that).
INFERENCE_MALLOC: dict[str, int] = {"mmap_threshold": 32 * 2**20, "trim_threshold": 64 * 2**20}

_tuned: dict[str, int] | None = None
_tune_lock = threading.Lock()


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


def malloc_tuning() -> dict[str, int] | None:
    """The thresholds :func:`tune_malloc_for_inference` applied in this process, or ``None``."""
    return None if _tuned is None else dict(_tuned)


def tune_malloc_for_inference() -> dict[str, int] | None:
    """Give a process that runs forward passes heap thresholds that suit them.

    Dask's nanny starts every worker process with
    ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``)
    so that freed memory goes back to the system.  Setting any glibc
    threshold also switches off glibc's dynamic mmap threshold, so every
    block over 128 KiB is then a fresh ``mmap`` that the kernel zero-fills
    page by page and takes back on free.  A forward pass allocates and frees
    many such activation tensors per batch: measured on a ViT-S/16 at batch
    16 on one core, that costs about a fifth of the throughput.  This puts
    the thresholds where glibc's dynamic rule would settle
    (:data:`INFERENCE_MALLOC`), so activations are reused from the heap.

    The cost is memory the process keeps for its next batch (its peak
    working set, as in any plain Python process), which Dask counts as
    unmanaged memory: :func:`rs_embed_dask.resolve.get_embedder` applies it
    when it loads an on-the-fly model (the inference workers' job), never
    for a precomputed product, which the IO workers read beside their other
    work.

    Nothing is changed where no ``MALLOC_TRIM_THRESHOLD_`` /
    ``MALLOC_MMAP_THRESHOLD_`` is in the environment: glibc's dynamic
    thresholds are then in force.

    Returns
    -------
    dict or None
        The thresholds applied (now or earlier in this process), or ``None``
        when nothing was changed: not glibc, turned off with
        ``RS_EMBED_MALLOC_TUNING=0``, or no fixed threshold in force.
    """
    global _tuned
    with _tune_lock:
        if _tuned is not None:
            return dict(_tuned)
        if os.environ.get("RS_EMBED_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
            return None
        fixed = any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"))
        if not fixed or not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl or another libc without mallopt
            return None
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        ok = mallopt(_M_MMAP_THRESHOLD, INFERENCE_MALLOC["mmap_threshold"]) == 1
        ok = ok and mallopt(_M_TRIM_THRESHOLD, INFERENCE_MALLOC["trim_threshold"]) == 1
        if not ok:
            return None
        _tuned = dict(INFERENCE_MALLOC)
        return dict(_tuned)


#: attributes by which ``multiprocessing`` finds the main module to re-run in a child
_MAIN_ORIGIN = frozenset({"__file__", "__spec__", "__loader__", "__cached__"})
_main_lock = threading.Lock()
_main_users = 0
_main_saved: types.ModuleType | None = None


class _MainView(types.ModuleType):
    """``__main__`` as seen while :func:`spawn_without_main` is active.

    Every attribute reads through to the user's main module, and writes
    land there (the script's own globals are untouched), except those that
    say which file or module it was run from: a spawned child then has no
    main module to re-run.
    """

    def __init__(self, main: types.ModuleType) -> None:
        super().__init__("__main__", getattr(main, "__doc__", None))
        object.__setattr__(self, "_rs_embed_main", main)

    def __getattr__(self, name: str) -> Any:
        if name in _MAIN_ORIGIN:
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_rs_embed_main"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        # a global set through sys.modules["__main__"] lands in the script's module
        setattr(object.__getattribute__(self, "_rs_embed_main"), name, value)


def _main_would_rerun(main: types.ModuleType | None) -> bool:
    """Whether ``multiprocessing``'s spawn / forkserver children would run ``main`` again."""
    if main is None or isinstance(main, _MainView):
        return False
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    return spec_name is not None or getattr(main, "__file__", None) is not None


@contextlib.contextmanager
def spawn_without_main() -> Iterator[bool]:
    """Start worker processes that do not re-run the user's ``__main__`` module.

    ``multiprocessing``'s spawn and forkserver children (Dask's nanny starts
    its workers with spawn) first run the parent's main script again, as
    ``__mp_main__``, so that objects pickled by reference to ``__main__``
    resolve there.  A script without ``if __name__ == "__main__":`` then
    runs its export again in every worker, which fails and ends the script.
    Dask pickles anything that refers to ``__main__`` by value (cloudpickle),
    so the workers need none of it.

    While this is active, ``sys.modules["__main__"]`` is a view of the main
    module without the attributes that name its file or module
    (``__file__``, ``__spec__``, ...); the script's own globals are not
    touched.  Meant for the lifetime of a cluster that is started and closed
    inside one call (the embedded cluster of an export), while the script's
    top-level code waits for that call.  Nested and concurrent uses share
    one view; the last exit restores the module.

    Yields
    ------
    bool
        Whether ``__main__`` was hidden (``False`` where there is nothing a
        child would re-run: ``python -c``, an interactive session, a
        notebook).
    """
    global _main_users, _main_saved
    with _main_lock:
        if _main_users == 0 and _main_would_rerun(sys.modules.get("__main__")):
            _main_saved = sys.modules["__main__"]
            sys.modules["__main__"] = _MainView(_main_saved)
        _main_users += 1
        hidden = _main_saved is not None
    try:
        yield hidden
    finally:
        with _main_lock:
            _main_users -= 1
            if _main_users == 0 and _main_saved is not None:
                if isinstance(sys.modules.get("__main__"), _MainView):
                    sys.modules["__main__"] = _main_saved
                _main_saved = None
