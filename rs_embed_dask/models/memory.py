"""Inference batches sized by memory, not by ``chunk_size``.

An inference task embeds a whole chunk, but runs it through the model in
sub-batches whose activations fit the memory the worker can spare: the
batch size is the budget divided by the model's per-item estimate
(:meth:`Embedder.memory_per_item <rs_embed_dask.models.base.Embedder>`,
default :func:`default_memory_per_item`), capped by the requested
``infer_batch_size``.  Sub-batch outputs are concatenated in input order, so
a chunk of any size costs the same peak memory and gives the same numbers.

The budget is, on a CPU, a fraction of the worker's memory limit
(``distributed``'s ``memory_limit`` inside a worker, the machine's available
memory in a plain process) less what the process already holds; on a GPU, a
fraction of the device's free memory.  ``RS_EMBED_INFER_MEMORY`` sets it: a
fraction (``"0.4"``) of that memory, or a size (``"2GiB"``, ``"1500MB"``,
bytes) for one batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "DEFAULT_DEVICE_FRACTION",
    "DEFAULT_HOST_FRACTION",
    "MEMORY_ENV",
    "array_bytes",
    "batch_size_for_budget",
    "default_memory_per_item",
    "device_budget",
    "host_budget",
    "memory_batch_size",
    "memory_setting",
]

#: Environment variable of the inference memory budget (a fraction or a size).
MEMORY_ENV = "RS_EMBED_INFER_MEMORY"
#: Share of a worker's memory limit an inference batch may take (Dask's own ``target`` is 0.6).
DEFAULT_HOST_FRACTION = 0.6
#: Share of a GPU's free memory an inference batch may take.
DEFAULT_DEVICE_FRACTION = 0.8
_FALLBACK_DIM = 768
_FLOAT_BYTES = 4


def memory_setting(
    env: Mapping[str, str] | None = None, *, name: str = MEMORY_ENV
) -> tuple[float | None, int | None]:
    """The variable ``name`` (default ``RS_EMBED_INFER_MEMORY``) as ``(fraction, bytes)``; ``(None, None)`` when unset.

    Raises
    ------
    ModelError
        For a value that is neither a fraction in ``(0, 1]`` nor a positive size.
    """
    environ = os.environ if env is None else env
    raw = str(environ.get(name, "")).strip()
    if not raw:
        return None, None
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is not None and 0.0 < value <= 1.0:
        return value, None
    try:
        from dask.utils import parse_bytes

        size = int(parse_bytes(raw))
    except (ValueError, TypeError):
        size = 0
    if size <= 1:
        raise ModelError(
            f"{name} must be a fraction in (0, 1] of the worker's memory or a size such as "
            f"'2GiB' or '1500MB'; got {raw!r}."
        )
    return None, size


def _worker_limit_and_rss() -> tuple[int | None, int]:
    """The memory limit of this process (the Dask worker's, else ``None``) and its resident size."""
    import psutil

    rss = int(psutil.Process().memory_info().rss)
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None, rss
    manager = getattr(worker, "memory_manager", None)
    limit = getattr(manager, "memory_limit", None) or getattr(worker, "memory_limit", None)
    return (int(limit) if limit else None), rss


def host_budget(env: Mapping[str, str] | None = None) -> int:
    """Bytes of host memory one inference batch may take in this process.

    Inside a Dask worker with a memory limit: the fraction of the limit less
    the process's resident size (model, queued chunks); elsewhere the
    fraction of the machine's available memory.  A size given in
    ``RS_EMBED_INFER_MEMORY`` is the budget itself.
    """
    fraction, size = memory_setting(env)
    if size is not None:
        return size
    frac = fraction if fraction is not None else DEFAULT_HOST_FRACTION
    limit, rss = _worker_limit_and_rss()
    if limit is not None:
        return max(0, int(frac * limit) - rss)
    import psutil

    return int(frac * psutil.virtual_memory().available)


def device_budget(device: str, env: Mapping[str, str] | None = None) -> int | None:
    """Bytes of device memory one batch may take on a CUDA ``device``; ``None`` on a CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction, size = memory_setting(env)
    if size is not None:
        return size
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int((fraction if fraction is not None else DEFAULT_DEVICE_FRACTION) * free)


def default_memory_per_item(self: Any, input_shape: Sequence[int], output: Any = None) -> int:
    """Peak bytes one input of ``input_shape`` takes in the forward pass (a conservative estimate).

    The input and its preprocessed copy, plus three float32 feature maps of
    ``embedding_dim`` channels at the resolution the model sees (its
    ``resolve_input_size()`` when it has one, else the input's): exact in
    order for full-resolution convolutional features (rcf, 512 features, on
    a 4x256x256 input: 405 MB estimated; its forward pass holds about 335 MB,
    and 4.1 GB was observed for a batch of 12), generous for patch models
    whose tokens are far fewer than pixels.  Models override
    ``memory_per_item`` with a better figure.

    Parameters
    ----------
    self : Embedder
        The model (this function is the default ``Embedder.memory_per_item``).
    input_shape : sequence of int
        ``(C, H, W)`` or ``(T, C, H, W)`` of one raw input.
    output : OutputSpec, optional
        Unused by the default; there for models whose grid output costs more.

    Returns
    -------
    int
        Bytes.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2:
        return _FLOAT_BYTES * max(1, shape[0] if shape else 1)
    frames = shape[0] if len(shape) >= 4 else 1
    channels = shape[-3] if len(shape) >= 3 else 1
    h, w = shape[-2], shape[-1]
    size = None
    resolve = getattr(self, "resolve_input_size", None)
    if callable(resolve):
        try:
            size = resolve()
        except Exception:  # a model whose size depends on a config it cannot describe
            size = None
    if size:
        h = w = int(size)
    dim = _FALLBACK_DIM
    try:
        dim = int((self.describe() or {}).get("embedding_dim") or _FALLBACK_DIM)
    except Exception:  # describe() may need weights or options; the fallback is generous
        dim = _FALLBACK_DIM
    pixels = frames * h * w
    return _FLOAT_BYTES * pixels * (2 * channels + 3 * dim)


def array_bytes(shape: Sequence[int], itemsize: int = _FLOAT_BYTES) -> int:
    """Bytes of an array of ``shape`` (``T x C x H x W x itemsize`` for a time series); float32 by default."""
    return int(itemsize) * _prod(shape)


def batch_size_for_budget(requested: int, budget_bytes: int | None, per_item_bytes: int | None) -> int:
    """Largest batch ``<= requested`` whose items fit ``budget_bytes``; at least 1."""
    req = max(1, int(requested))
    if budget_bytes is None or not per_item_bytes or per_item_bytes <= 0:
        return req
    return max(1, min(req, int(budget_bytes // per_item_bytes)))


def memory_batch_size(
    embedder: Any,
    shapes: Sequence[Sequence[int]],
    *,
    requested: int,
    device: str = "cpu",
    output: Any = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Inference batch size for inputs of ``shapes`` on this worker: ``requested`` or fewer.

    Parameters
    ----------
    embedder : Embedder
        The loaded model; its ``memory_per_item`` gives the per-item estimate.
    shapes : sequence of tuple of int
        Shapes of the raw inputs to embed (the largest one sizes the batch).
    requested : int
        The batch asked for (``ExportConfig.infer_batch_size``, else ``chunk_size``).
    device : str, default "cpu"
        The model's device: a CUDA device is sized by its free memory.
    output : OutputSpec, optional
        Passed to ``memory_per_item``.
    env : mapping, optional
        Environment to read ``RS_EMBED_INFER_MEMORY`` from (default ``os.environ``).

    Returns
    -------
    int
        Between 1 and ``requested``.
    """
    if not shapes:
        return max(1, int(requested))
    estimate = getattr(embedder, "memory_per_item", None)
    per_item = max(
        int(estimate(tuple(s), output) if callable(estimate) else default_memory_per_item(embedder, s, output))
        for s in {tuple(int(d) for d in s) for s in shapes}
    )
    dev_budget = device_budget(device, env)
    if dev_budget is not None:
        # activations live on the device; the host holds the inputs (stacked, pinned) and outputs
        host_item = 3 * _FLOAT_BYTES * max(_prod(s) for s in shapes)
        return min(
            batch_size_for_budget(requested, dev_budget, per_item),
            batch_size_for_budget(requested, host_budget(env), host_item),
        )
    return batch_size_for_budget(requested, host_budget(env), per_item)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
