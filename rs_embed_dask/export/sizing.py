"""ROIs per chunk from the bytes of their inputs and the workers' memory limit.

A chunk's fetched inputs stay on the IO worker from its fetch until the tasks
that read them have run, and each inference worker holds a copy of the
chunks assigned to it; the engine keeps at most ``max_in_flight`` chunks
outstanding (:func:`flight_limits`).  So a time series of 12 frames of 12
bands at 256 x 256 px (38 MB a ROI) must not travel in chunks of
``chunk_size`` ROIs regardless of its size: the ROIs per chunk are the most
for which ``max_in_flight`` chunks fit the budget::

    items = min(chunk_size, (budget - reserve) // (max_in_flight * roi_bytes))

- ``roi_bytes``: per ROI, the sum over the export's distinct inputs of
  ``T x C x H x W x 4`` (float32; ``H x W`` the ROI's window on the sensor's
  grid, the square for a square-fetching model; ``T`` the frames), plus each
  model's output (``D`` floats pooled; ``D`` per 4 x 4 input pixels for a
  grid, generous for patch models);
- ``budget``: :data:`DEFAULT_CHUNK_FRACTION` of the smallest worker memory
  limit (the machine's available memory in process), or
  ``$RS_EMBED_CHUNK_MEMORY``: a fraction (``"0.3"``) of that limit or a size
  (``"800MB"``) for all outstanding chunks;
- ``reserve``: the largest ``Embedder.memory_per_item`` of one ROI (capped at
  half the budget), so the inference of one ROI still fits beside the chunks;
  the inference batch itself is sized on the worker
  (:mod:`rs_embed_dask.models.memory`).

The windows of a list of ROIs are measured up to :data:`SCAN_LIMIT` ROIs; a
stream's from its first chunk.  A resumed combined export keeps the chunk of
its store (the store's chunks are the write tasks' units).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rs_embed_dask.core.registry import get_model_class, get_provider_class
from rs_embed_dask.models.memory import array_bytes, default_memory_per_item, memory_setting

__all__ = [
    "CHUNK_MEMORY_ENV",
    "DEFAULT_CHUNK_FRACTION",
    "SCAN_LIMIT",
    "ChunkSizing",
    "chunk_sizing",
    "fetch_cap",
    "flight_limits",
    "input_shape",
    "items_for_budget",
    "worker_memory",
]

#: Environment variable of the memory all outstanding chunks may take (a fraction or a size).
CHUNK_MEMORY_ENV = "RS_EMBED_CHUNK_MEMORY"
#: Share of the smallest worker memory limit the outstanding chunks may take.
DEFAULT_CHUNK_FRACTION = 0.25
#: ROIs of a list whose windows are measured (the largest sizes the chunks).
SCAN_LIMIT = 100_000
_FALLBACK_DIM = 768
_GRID_CELL_PIXELS = 16  # input pixels per grid cell assumed for a grid output (patch 4)

log = logging.getLogger("rs_embed_dask.export")


@dataclass(frozen=True)
class ChunkSizing:
    """How many ROIs a chunk holds, and why.

    Attributes
    ----------
    items : int
        ROIs per chunk (between 1 and ``requested``).
    requested : int
        ``ExportConfig.chunk_size``.
    roi_bytes : int
        Bytes of one ROI's inputs and outputs (the largest ROI measured).
    reserve_bytes : int
        Left to the inference of one ROI (its ``memory_per_item``).
    budget_bytes : int
        Memory all outstanding chunks may take.
    memory_limit : int or None
        The smallest worker memory limit (``None``: in process or unlimited).
    max_in_flight : int
        Chunks outstanding at once with ``items`` ROIs per chunk.
    input_shapes : dict of str to tuple of int
        Largest input shape per input key.
    """

    items: int
    requested: int
    roi_bytes: int
    reserve_bytes: int
    budget_bytes: int
    memory_limit: int | None
    max_in_flight: int
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def flight_limits(items: int, cap: int, n_gpu: int) -> tuple[int, int, int]:
    """``(fetch threads per task, fetch tasks outstanding, chunks outstanding)`` for chunks of ``items`` ROIs.

    ``cap`` is the most concurrent provider requests (:func:`fetch_cap`),
    ``n_gpu`` the inference slots of the cluster.
    """
    threads = max(1, min(int(items), int(cap)))
    fetch_slots = max(1, int(cap) // threads)
    return threads, fetch_slots, fetch_slots + 2 * max(1, int(n_gpu)) + 2


def fetch_cap(plan: Any) -> int:
    """Concurrent provider requests of an export: ``num_workers``, lowered by the providers' caps."""
    cap = int(plan.config.num_workers)
    for backend in {m.backend for m in plan.models if not m.is_precomputed}:
        pmax = get_provider_class(backend).concurrency_limit(plan.provider_options)
        if pmax is not None:
            cap = min(cap, int(pmax))
    return max(1, cap)


def _shape_of(model: Any) -> Any:
    """A function ``spatial -> shape`` of the fetch of ``model`` (the model's rules looked up once)."""
    from rs_embed_dask.fetch_square import square_fetch_request, squares_fetch
    from rs_embed_dask.geometry import grid_window

    sensor = model.sensor
    square = squares_fetch(get_model_class(model.canonical))
    lead = () if model.n_frames is None else (int(model.n_frames),)
    c = len(sensor.bands)

    def shape(spatial: Any) -> tuple[int, ...]:
        if square:
            spatial, _ = square_fetch_request(spatial, None)
        h, w = grid_window(spatial, sensor.scale_m).shape
        return (*lead, c, h, w)

    return shape


def input_shape(model: Any, spatial: Any) -> tuple[int, ...]:
    """``(C, H, W)``, or ``(T, C, H, W)`` for ``T`` frames, of the fetch of ``model`` for ``spatial``."""
    return tuple(_shape_of(model)(spatial))


def items_for_budget(requested: int, budget: int, reserve: int, roi_bytes: int, cap: int, n_gpu: int) -> tuple[int, int]:
    """``(items, max_in_flight)``: the most ROIs per chunk (``<= requested``, ``>= 1``) whose outstanding chunks fit.

    Smaller chunks let more fetch tasks run at once (:func:`flight_limits`),
    so the count is lowered until ``max_in_flight`` chunks of it fit
    ``budget - reserve``.
    """
    items = max(1, int(requested))
    avail = max(0, int(budget) - int(reserve))
    while True:
        _, _, flight = flight_limits(items, cap, n_gpu)
        if roi_bytes <= 0:
            return items, flight
        fit = max(1, avail // (flight * int(roi_bytes)))
        if fit >= items:
            return items, flight
        items = fit


def worker_memory(client: Any) -> tuple[int | None, int]:
    """``(smallest worker memory limit or None, number of workers)`` of ``client``'s cluster."""
    infos = (client.scheduler_info(n_workers=-1) or {}).get("workers", {}) or {}
    limits = [int(i.get("memory_limit") or 0) for i in infos.values()]
    limits = [v for v in limits if v > 0]
    return (min(limits) if limits else None), len(infos)


def _n_gpu(client: Any, n_workers: int) -> int:
    from rs_embed_dask.cluster import cluster_resources

    return int(cluster_resources(client).get("gpu", 0)) or max(1, n_workers)


def _budget(limit: int | None, n_workers: int, env: Any = None) -> int:
    fraction, size = memory_setting(env, name=CHUNK_MEMORY_ENV)
    if size is not None:
        return size
    import psutil

    if limit is None:
        vm = psutil.virtual_memory()
        # in process: what is free now; unlimited workers share the machine
        limit = int(vm.available) if n_workers == 0 else int(vm.total) // max(1, n_workers)
    return int((fraction if fraction is not None else DEFAULT_CHUNK_FRACTION) * limit)


def _sample(plan: Any) -> list[Any]:
    """The ROIs whose windows are measured; a stream gives back the ones it was read for."""
    if isinstance(plan.spatials, list):
        return plan.spatials[:SCAN_LIMIT]
    it: Iterator[Any] = iter(plan.spatials)
    head = list(itertools.islice(it, plan.config.effective_chunk_size))
    plan.spatials = itertools.chain(head, it)
    return head


def _output_bytes(model: Any, shape: Sequence[int], output: Any) -> int:
    try:
        dim = int((get_model_class(model.canonical)(model.config_dict).describe() or {}).get("embedding_dim") or 0)
    except Exception:  # describe() may need options or weights: a generous width
        dim = 0
    dim = dim or _FALLBACK_DIM
    if getattr(output, "mode", "pooled") != "grid":
        return 4 * dim
    return 4 * dim * max(1, (int(shape[-2]) * int(shape[-1])) // _GRID_CELL_PIXELS)


def _memory_per_item(model: Any, shape: tuple[int, ...], output: Any) -> int:
    emb = get_model_class(model.canonical)(model.config_dict)
    try:
        return int(emb.memory_per_item(shape, output))
    except Exception:  # an estimate that needs the loaded model: the default one
        return int(default_memory_per_item(emb, shape, output))


def chunk_sizing(plan: Any, client: Any, *, env: Any = None) -> ChunkSizing:
    """The ROIs per chunk of ``plan`` on ``client``'s cluster (see the module docstring)."""
    requested = plan.config.effective_chunk_size
    limit, n_workers = worker_memory(client)
    budget = _budget(limit, n_workers, env)
    cap = fetch_cap(plan)
    n_gpu = _n_gpu(client, n_workers)
    shapes: dict[str, tuple[int, ...]] = {}
    users = {m.name: m for m in plan.models}
    roi_bytes = reserve = 0
    sample = _sample(plan) if plan.inputs else []
    shape_fns = {key: _shape_of(spec.model) for key, spec in plan.inputs.items()}
    for sp in sample:
        total = 0
        for key, fn in shape_fns.items():
            shape = fn(sp)
            nbytes = array_bytes(shape)
            total += nbytes
            if key not in shapes or nbytes > array_bytes(shapes[key]):
                shapes[key] = shape
        roi_bytes = max(roi_bytes, total)
    for key, spec in plan.inputs.items():
        if key not in shapes:
            continue
        for name in spec.users:
            m = users[name]
            roi_bytes += _output_bytes(m, shapes[key], plan.output)
            reserve = max(reserve, _memory_per_item(m, shapes[key], plan.output))
    reserve = min(reserve, budget // 2)
    items, flight = items_for_budget(requested, budget, reserve, roi_bytes, cap, n_gpu)
    sizing = ChunkSizing(
        items=items,
        requested=requested,
        roi_bytes=roi_bytes,
        reserve_bytes=reserve,
        budget_bytes=budget,
        memory_limit=limit,
        max_in_flight=flight,
        input_shapes=shapes,
    )
    if items < requested:
        log.info(
            "export chunks of %d ROIs instead of chunk_size=%d: %d outstanding chunks of %.1f MB a ROI "
            "fit %.0f MB (set $%s to change the budget)", items, requested, flight, roi_bytes / 1e6,
            (budget - reserve) / 1e6, CHUNK_MEMORY_ENV,
        )  # fmt: skip
    return sizing
