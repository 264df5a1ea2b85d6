"""Small exports run in this process: no cluster for a few milliseconds of work.

Starting the embedded local cluster costs seconds (6.4 s measured for
``export_npz`` of one ROI).  A request of at most a few chunks, with no client
given and none active, runs instead through :class:`InlineClient`: the same
task functions (:mod:`rs_embed_dask.export.tasks`), called one after the other
in this process as the engine submits them, so the files, the manifest, the
resume rules and the target's lock are those of a cluster run.

Settings (environment, read at each export):

``RS_EMBED_DASK_IN_PROCESS_CHUNKS``
    The most chunks (``ceil(n_items / chunk_size)``) run in process; default
    ``2``.  ``0`` always starts a cluster.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["IN_PROCESS_ENV", "InlineClient", "active_client", "in_process_chunks", "run_in_process"]

IN_PROCESS_ENV = "RS_EMBED_DASK_IN_PROCESS_CHUNKS"
_DEFAULT_CHUNKS = 2


def in_process_chunks() -> int:
    """The threshold of :data:`IN_PROCESS_ENV` (chunks; ``0``: never in process)."""
    raw = os.environ.get(IN_PROCESS_ENV, "").strip()
    if not raw:
        return _DEFAULT_CHUNKS
    try:
        return max(0, int(raw))
    except ValueError:
        from rs_embed_dask.core.errors import SpecError

        raise SpecError(f"${IN_PROCESS_ENV} must be a whole number of chunks (0: always a cluster); got {raw!r}.") from None


def active_client() -> Any:
    """The client this process would use by default, or ``None``."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def run_in_process(plan: Any, client: Any) -> bool:
    """Whether ``plan`` runs in this process: small, sized, no client, no worker plugin to install."""
    if client is not None or plan.n_items is None:
        return False
    limit = in_process_chunks()
    if limit <= 0 or math.ceil(plan.n_items / plan.config.effective_chunk_size) > limit:
        return False
    if active_client() is not None:
        return False
    from rs_embed_dask.core.registry import get_provider_class

    # a provider that sets up every worker (Earth Engine's session) keeps its cluster path
    for backend in {m.backend for m in plan.models if not m.is_precomputed}:
        if get_provider_class(backend).worker_plugin(plan.provider_options) is not None:
            return False
    return True


class InlineFuture:
    """A finished call: the result, or the exception, of running ``fn`` at once."""

    def __init__(self, key: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.key = key
        self._result: Any = None
        self._exc: BaseException | None = None
        try:
            self._result = fn(*_resolve(args), **_resolve(kwargs))
            self.status = "finished"
        except Exception as exc:
            self._exc = exc
            self.status = "error"

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._result

    def exception(self) -> BaseException | None:
        return self._exc

    def release(self) -> None:
        self._result = None

    def cancel(self) -> None:
        self._result = None


def _resolve(value: Any) -> Any:
    """Futures in the arguments (also inside dicts, lists, tuples) replaced by their results."""
    if isinstance(value, InlineFuture):
        return value.result()
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (InlineFuture, dict)) for v in value):
        return type(value)(_resolve(v) for v in value)
    return value


class InlineAsCompleted:
    """What the engine needs of ``distributed.as_completed``: every future is already done."""

    def add(self, fut: Any) -> None:
        pass

    def update(self, futs: Any) -> None:
        pass

    def next_batch(self, block: bool = False) -> list[Any]:
        return []

    def __next__(self) -> None:
        return None


class InlineClient:
    """The part of ``distributed.Client`` the export engine uses, running each task when submitted.

    Tasks run in submission order (fetch, inference, write of a chunk), in
    this thread; no worker plugin, no cluster-wide semaphore (one process
    makes the requests, at most ``num_workers`` at a time).
    """

    in_process = True
    dashboard_link = None
    loop = None

    def submit(self, fn: Any, *args: Any, key: str = "", pure: bool = False, resources: Any = None, **kwargs: Any) -> InlineFuture:
        if "semaphore" in kwargs:
            kwargs["semaphore"] = None
        return InlineFuture(key, fn, args, kwargs)

    def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
        return {"workers": {}}

    def register_plugin(self, plugin: Any) -> None:  # pragma: no cover - run_in_process excludes these
        raise RuntimeError("worker plugins need a cluster")

    def as_completed(self) -> InlineAsCompleted:
        return InlineAsCompleted()


@contextlib.contextmanager
def inline_client() -> Iterator[InlineClient]:
    """An :class:`InlineClient` for one export."""
    yield InlineClient()
