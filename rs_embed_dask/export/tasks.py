"""The functions the export graph runs on the workers: fetch, infer, write.

Each takes plain values (specs, names, paths) and returns plain values; the
model and the provider are looked up in the worker process's cache, so they
are built once per process and never travel through the graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, ProviderError
from rs_embed_dask.export import store as st
from rs_embed_dask.export.npz_parts import write_part
from rs_embed_dask.export.priority import run_as_io, thread_pool
from rs_embed_dask.models.memory import memory_batch_size
from rs_embed_dask.pipeline import embed_batch, fetch_input, run_with_retry
from rs_embed_dask.resolve import ResolvedModel, get_embedder
from rs_embed_dask.serialization import jsonable

__all__ = [
    "ChunkEmbeddings",
    "ChunkInputs",
    "fetch_chunk",
    "infer_chunk",
    "memory_batch",
    "pack_arrays",
    "release_free_heap",
    "without_data",
    "write_chunk_combined",
]


@dataclass
class ChunkInputs:
    """Fetched inputs of one chunk for one input key (``None`` where the fetch failed)."""

    key: str
    data: list[np.ndarray | None]
    meta: list[dict[str, Any] | None]
    errors: list[str | None]
    pid: int = field(default_factory=os.getpid)


@dataclass
class ChunkEmbeddings:
    """Embeddings of one chunk for one model (``None`` where it failed)."""

    model: str
    data: list[np.ndarray | None]
    meta: list[dict[str, Any] | None]
    errors: list[str | None]
    pid: int = field(default_factory=os.getpid)


def ensure_plugins(plugins: dict[str, Any]) -> None:
    """Register classes that were registered at run time on the client."""
    from rs_embed_dask.core import registry

    for ref, cls in plugins.items():
        kind, _, name = ref.partition(":")
        target = registry._models if kind == "model" else registry._providers
        if name not in target or isinstance(target[name], str):
            target[name] = cls


_LIBC: list[Any] = []


def release_free_heap() -> bool:
    """Give the free pages of every heap arena back to the OS (glibc's ``malloc_trim(0)``); ``False`` elsewhere.

    Run at the end of a fetch or inference task: a chunk's temporaries (tens
    of MB a ROI for a time series) are freed then, but under the thresholds
    that keep large blocks on the heap for the next batch
    (:mod:`rs_embed_dask.cluster.worker_setup`) the pages stayed with the
    process, scattered over the threads' arenas, and a worker's memory grew
    with the number of chunks.  Once per task it costs milliseconds.
    """
    if not _LIBC:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.malloc_trim.restype = ctypes.c_int
            _LIBC.append(libc)
        except (OSError, AttributeError):  # not glibc
            _LIBC.append(None)
    libc = _LIBC[0]
    return bool(libc is not None and libc.malloc_trim(0) >= 0)


_SEMAPHORES: dict[tuple[str, int], Any] = {}
_semaphore_lock = threading.Lock()


def process_semaphore(name: str, max_leases: int) -> Any:
    """The ``distributed.Semaphore`` ``name`` (cluster-wide, ``max_leases`` slots) of this process.

    Built here, inside a task, so it binds to the worker and refreshes its leases;
    a Semaphore shipped in the graph is rebuilt outside the worker's context and
    never refreshes them (a fetch longer than the lease timeout would lose its slot).
    """
    with _semaphore_lock:
        sem = _SEMAPHORES.get((name, max_leases))
        if sem is None:
            from distributed import Semaphore

            sem = _SEMAPHORES[(name, max_leases)] = Semaphore(max_leases=max_leases, name=name)
        return sem


def fetch_chunk(
    model: ResolvedModel,
    key: str,
    spatials: list[Any],
    temporal: Any,
    *,
    provider_options: dict[str, Any],
    max_retries: int,
    backoff_s: float,
    continue_on_error: bool,
    semaphore: Any = None,
    threads: int = 8,
    plugins: dict[str, Any] | None = None,
) -> ChunkInputs:
    """Fetch every ROI of a chunk for one input key, ``threads`` at a time.

    ``semaphore`` is ``(name, max_leases)`` of the provider's cluster-wide cap (or ``None``).
    """
    ensure_plugins(plugins or {})
    if isinstance(semaphore, tuple):
        semaphore = process_semaphore(*semaphore)

    def one(sp: Any) -> Any:
        def call() -> Any:
            with semaphore if semaphore is not None else contextlib.nullcontext():
                return fetch_input(model, sp, temporal, provider_options=provider_options)

        return run_with_retry(call, retries=max_retries, backoff_s=backoff_s)

    data: list[np.ndarray | None] = [None] * len(spatials)
    meta: list[dict[str, Any] | None] = [None] * len(spatials)
    errors: list[str | None] = [None] * len(spatials)

    def run(i: int) -> None:
        try:
            fr = one(spatials[i])
        except Exception as exc:
            if not continue_on_error:
                if isinstance(exc, ModelError):
                    raise
                raise ModelError(str(exc)) from exc
            errors[i] = repr(exc)
            return
        data[i] = fr.data
        meta[i] = jsonable(fr.meta)

    n_threads = max(1, min(threads, len(spatials)))
    if n_threads == 1:

        def run_all() -> None:
            for i in range(len(spatials)):
                run(i)

        run_as_io(run_all)
    else:
        with thread_pool(n_threads) as pool:
            for fut in [pool.submit(run, i) for i in range(len(spatials))]:
                fut.result()
    out = ChunkInputs(key=key, data=pack_arrays(data), meta=meta, errors=errors)
    release_free_heap()
    return out


def pack_arrays(data: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """The arrays of one shape and dtype moved into one block; each item becomes a view of it (in place).

    A chunk's inputs live until every model has embedded them, while the
    fetch threads allocate and free temporaries around them; as one block
    (each ROI's frames contiguous, ROIs in order) they leave the threads'
    heap arenas, whose fragmentation otherwise made a worker's memory grow
    with the number of chunks (inference workers keep large blocks on the
    heap, :mod:`rs_embed_dask.cluster.worker_setup`).  Values are unchanged.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, d in enumerate(data):
        if isinstance(d, np.ndarray) and d.ndim > 0:
            groups.setdefault((d.shape, d.dtype.str), []).append(i)
    for (shape, dtype), idx in groups.items():
        if len(idx) < 2:
            continue
        block = np.empty((len(idx), *shape), dtype=np.dtype(dtype))
        for j, i in enumerate(idx):
            block[j] = data[i]
            data[i] = block[j]  # the fetched array is freed as soon as it is copied
    return data


_NO_DATA = np.zeros(0, dtype=np.float32)


def without_data(inputs: ChunkInputs) -> ChunkInputs:
    """``inputs`` with each fetched array replaced by an empty one (``None`` kept where the fetch failed).

    What a write task needs of the fetches when inputs are not saved:
    statuses, metas and errors, not the pixels (a time series may be tens of
    MB a ROI).
    """
    return ChunkInputs(
        key=inputs.key,
        data=[None if d is None else _NO_DATA for d in inputs.data],
        meta=inputs.meta,
        errors=inputs.errors,
        pid=inputs.pid,
    )


def memory_batch(
    model: ResolvedModel, arrays: list[Any], *, output: Any, device: str, requested: int
) -> int:
    """Arrays per model call for ``arrays``: ``requested``, or fewer when their activations would not fit.

    The chunk is embedded in sub-batches of this size inside one task
    (:mod:`rs_embed_dask.models.memory`), so the inference worker's peak memory
    does not grow with ``chunk_size``.
    """
    emb = get_embedder(model.canonical, model.config_dict, device)
    shapes = [tuple(np.shape(a)) for a in arrays if a is not None]
    return memory_batch_size(emb, shapes, requested=requested, device=getattr(emb, "device", device), output=output)


def infer_chunk(
    model: ResolvedModel,
    inputs: ChunkInputs | None,
    spatials: list[Any],
    temporal: Any,
    *,
    start: int,
    output: Any,
    device: str,
    input_prep: Any,
    batch_size: int,
    max_retries: int,
    backoff_s: float,
    continue_on_error: bool,
    plugins: dict[str, Any] | None = None,
    name_model_in_errors: bool = True,
    semaphore: Any = None,
) -> ChunkEmbeddings:
    """Embed a chunk with the worker-resident model; per-item errors with ``continue_on_error``.

    A ROI whose fetch failed gets rs-embed's "Prefetch previously failed"
    error, which names the model in per-item exports only
    (``name_model_in_errors``), as rs-embed's two writers do.

    ``batch_size`` is the most arrays per model call; fewer when the worker's
    memory cannot hold their activations (:func:`memory_batch`), so any
    ``chunk_size`` runs in the same memory, with the same numbers.

    ``semaphore`` is ``(name, max_leases)`` of the cluster-wide cap of the provider a
    precomputed product reads through (``PrecomputedEmbedder.provider``), or ``None``:
    each ROI is then read under one lease, released between retries.  This task
    holds no other lease (the provider fetches of on-the-fly models are other tasks),
    so leases of one semaphore never nest here.
    """
    ensure_plugins(plugins or {})
    if isinstance(semaphore, tuple):
        semaphore = process_semaphore(*semaphore)
    n = len(spatials)
    data: list[np.ndarray | None] = [None] * n
    meta: list[dict[str, Any] | None] = [None] * n
    errors: list[str | None] = [None] * n
    todo: list[int] = []
    for i in range(n):
        if inputs is not None and inputs.data[i] is None:
            errors[i] = repr(
                ProviderError(
                    f"Prefetch previously failed for {f'model={model.name}, ' if name_model_in_errors else ''}"
                    f"index={start + i}, "
                    f"sensor={inputs.key}: {inputs.errors[i]}"
                )
            )
        else:
            todo.append(i)

    def run(idx: list[int]) -> list[Any]:
        if model.is_precomputed:
            emb = get_embedder(model.canonical, model.config_dict, device)

            def read(items: list[int]) -> list[Any]:
                def call() -> list[Any]:
                    with semaphore if semaphore is not None else contextlib.nullcontext():
                        return emb.embed_spatials(
                            [spatials[i] for i in items], temporal=temporal, output=output, sensor=model.sensor
                        )

                return run_with_retry(call, retries=max_retries, backoff_s=backoff_s)

            if semaphore is None:
                return read(idx)
            return [e for i in idx for e in read([i])]
        assert inputs is not None
        contexts = [
            {"spatial": spatials[i], "temporal": temporal, "sensor": model.sensor, "fetch_meta": inputs.meta[i]}
            for i in idx
        ]
        step = memory_batch(model, [inputs.data[i] for i in idx], output=output, device=device, requested=batch_size)
        return run_with_retry(
            lambda: embed_batch(
                model,
                [inputs.data[i] for i in idx],  # type: ignore[misc]
                output=output,
                contexts=contexts,
                device=device,
                input_prep=input_prep,
                batch_size=step,
            ),
            retries=max_retries,
            backoff_s=backoff_s,
        )

    def store(idx: list[int], embs: list[Any]) -> None:
        for i, e in zip(idx, embs, strict=True):
            data[i] = np.asarray(e.to_numpy(), dtype=np.float32)
            meta[i] = jsonable(e.meta)

    if todo:
        try:
            store(todo, run(todo))
        except Exception as exc:
            if not continue_on_error:
                raise
            if len(todo) == 1:
                errors[todo[0]] = repr(exc)
            else:  # find the items that fail, one by one
                for i in todo:
                    try:
                        store([i], run([i]))
                    except Exception as exc_i:
                        errors[i] = repr(exc_i)
    release_free_heap()
    if not continue_on_error:
        for err in errors:
            if err is not None:
                raise ModelError(err)
    return ChunkEmbeddings(model=model.name, data=data, meta=meta, errors=errors)


def _first_shape(values: list[np.ndarray | None]) -> tuple[int, ...] | None:
    """Item shape of the first ok value (the dense array's shape when it is created)."""
    return next((tuple(v.shape) for v in values if v is not None), None)


def _write_group(
    store_path: str,
    group: str,
    start: int,
    values: list[np.ndarray | None],
    metas: list[dict[str, Any] | None],
    errors: list[str | None],
    *,
    capacity: int,
    chunk_size: int,
    write_data: bool,
    writes: list[tuple[Any, int, np.ndarray]],
    npz_parts: bool = False,
) -> np.ndarray:
    """The status column of one group's chunk; its rows are queued on ``writes``."""
    n = len(values)
    kw = {"capacity": capacity, "chunk_size": chunk_size}
    status = np.array([st.FAILED if v is None else st.OK for v in values], dtype=np.int8)
    if write_data:
        dense_shape = _first_shape(values)
        if dense_shape is not None:
            name = f"{group}/data" if group.startswith("inputs/") else f"{group}/embeddings"
            arr = st.ensure_array(
                store_path,
                name,
                item_shape=dense_shape,
                dtype=np.float32,
                fill_value=np.nan,
                **kw,
            )
            dense_shape = tuple(arr.shape[1:])
            block = np.full((n, *dense_shape), np.nan, dtype=np.float32)
            for i, v in enumerate(values):
                if v is None:
                    continue
                if tuple(v.shape) == dense_shape:
                    block[i] = v
                else:
                    st.write_ragged(store_path, group, start + i, np.asarray(v, dtype=np.float32))
                    status[i] = st.OK_RAGGED
            if npz_parts:
                write_part(store_path, name, start, block)
            if not (npz_parts and group.startswith("inputs/")):
                # an NPZ target's input rows live in their parts only: a second, zarr-compressed
                # copy cost as much CPU as the rest of the chunk's writes and a third of its disk
                writes.append((arr, start, block))
    for name, col in (
        ("error", np.array([e or "" for e in errors], dtype=object)),
        ("meta", np.array(["" if m is None else json.dumps(m) for m in metas], dtype=object)),
    ):
        writes.append((st.column(store_path, f"{group}/{name}", col, fill_value="", **kw), start, col))
    return status


def write_chunk_combined(
    store_path: str,
    start: int,
    spatials: list[Any],
    inputs: dict[str, ChunkInputs],
    embeddings: dict[str, ChunkEmbeddings],
    *,
    model_keys: dict[str, str],
    capacity: int,
    chunk_size: int,
    save_inputs: bool,
    max_retries: int = 0,
    backoff_s: float = 0.0,
    npz_parts: bool = False,
) -> dict[str, Any]:
    """Write one chunk's region of the store; statuses last (they mark the chunk done).

    With ``npz_parts`` (an NPZ target) the dense rows are also deflated into
    parts of the final archive (:mod:`rs_embed_dask.export.npz_parts`), here on
    an IO worker while inference goes on, not in the client at the end; the
    input rows are then written to their parts only (the store keeps their
    array's shape, statuses and metadata).
    """

    def write() -> dict[str, Any]:
        n = len(spatials)
        kw = {"capacity": capacity, "chunk_size": chunk_size}
        centres = np.array([sp.center for sp in spatials], dtype=np.float64)
        writes: list[tuple[Any, int, np.ndarray]] = []
        for name, col, fill in (
            ("lon", centres[:, 0], np.nan),
            ("lat", centres[:, 1], np.nan),
            ("item", np.arange(start, start + n, dtype=np.int64), -1),
            ("spatials", np.array([json.dumps(jsonable(sp)) for sp in spatials], dtype=object), ""),
        ):
            writes.append((st.column(store_path, name, col, fill_value=fill, **kw), start, col))
        statuses: dict[str, np.ndarray] = {}
        for key, ci in inputs.items():
            statuses[f"inputs/{key}"] = _write_group(
                store_path, f"inputs/{key}", start, ci.data, ci.meta, ci.errors,
                write_data=save_inputs, npz_parts=npz_parts, writes=writes, **kw,
            )  # fmt: skip
        for name, ce in embeddings.items():
            statuses[f"models/{model_keys[name]}"] = _write_group(
                store_path, f"models/{model_keys[name]}", start, ce.data, ce.meta, ce.errors,
                write_data=True, npz_parts=npz_parts, writes=writes, **kw,
            )  # fmt: skip
        st.write_rows(writes)
        # the statuses mark the chunk done: written only once every other row is on disk
        st.write_rows([
            (st.column(store_path, f"{group}/status", status, fill_value=0, **kw), start, status)
            for group, status in statuses.items()
        ])  # fmt: skip
        return {
            "start": start,
            "n": n,
            "failed": {
                name: int(sum(e is not None for e in ce.errors)) for name, ce in embeddings.items()
            },
            "fetch_failed": int(
                sum(any(ci.errors[i] is not None for ci in inputs.values()) for i in range(n))
            ),
            "pids": sorted({ci.pid for ci in inputs.values()} | {ce.pid for ce in embeddings.values()}),
        }

    return run_as_io(run_with_retry, write, retries=max_retries, backoff_s=backoff_s)
