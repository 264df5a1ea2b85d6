"""An actionable error for a worker that died under an export's task (``KilledWorker``).

Dask reports a worker that died (most often killed by its nanny, or by the
system, for memory) as ``KilledWorker: ... all those workers died``, which
names neither the cause nor what to change.  :func:`killed_worker_error`
turns it into a :class:`~rs_embed_dask.core.errors.ModelError` that names the
task and the settings that bound its memory.
"""

from __future__ import annotations

from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.export.sizing import CHUNK_MEMORY_ENV
from rs_embed_dask.models.memory import MEMORY_ENV

__all__ = ["killed_worker_error"]


def _is_killed_worker(exc: BaseException) -> bool:
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(exc, KilledWorker)


def killed_worker_error(exc: BaseException, config: Any) -> ModelError | None:
    """The error to raise for ``exc`` when it is a ``KilledWorker``; ``None`` otherwise.

    Parameters
    ----------
    exc : BaseException
        What a task's future raised.
    config : ExportConfig
        The export's run options (``chunk_size``, ``infer_batch_size``).

    Returns
    -------
    ModelError or None
        Naming the task that was running, the likely cause and the settings
        to lower: ``ExportConfig.chunk_size``, ``ExportConfig.infer_batch_size``,
        ``RS_EMBED_INFER_MEMORY`` on the workers, ``RS_EMBED_CHUNK_MEMORY``,
        or more memory per worker.
    """
    if not _is_killed_worker(exc):
        return None
    task = str(getattr(exc, "task", "") or (exc.args[0] if exc.args else "?"))
    kind = next((k for k in ("fetch", "infer", "write") if f"rsembed-{k}-" in task), "")
    chunk = int(getattr(config, "chunk_size", 0) or 0)
    batch = getattr(config, "infer_batch_size", None)
    what = {
        "infer": "an inference task",
        "fetch": "a fetch task",
        "write": "a write task",
    }.get(kind, "a task")
    return ModelError(
        f"The workers running {what} ({task}) died, most likely killed for exceeding their memory limit "
        f"(Dask's KilledWorker). Inference runs each chunk in batches sized to the worker's memory limit, but "
        f"a whole chunk of inputs and outputs still lives on one worker. Lower ExportConfig.chunk_size "
        f"(now {chunk}) or ExportConfig.infer_batch_size (now {batch}), set {MEMORY_ENV} on the workers "
        f"to a smaller fraction (e.g. 0.3) or size (e.g. '1GiB') of memory per inference batch, set "
        f"{CHUNK_MEMORY_ENV} in the client to a smaller share of worker memory per chunk, or give each "
        f"worker more memory (local_cluster(memory_limit=...), dask worker --memory-limit, or the jobqueue "
        f"memory setting). Original error: {exc}"
    )
