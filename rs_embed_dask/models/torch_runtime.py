"""Pure helpers of the torch forward path: autocast, compilation, batch sizing, pooling.

They take plain values (no model, no GPU needed), so the GPU path's
decisions are testable on a CPU; :mod:`rs_embed_dask.models.base`
re-exports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "autocast_dtype_for",
    "batch_size_for_memory",
    "compile_backend_for",
    "is_out_of_memory",
    "pool_grid",
]

_FALSY = ("", "0", "false", "no", "off")


def autocast_dtype_for(
    supports_autocast: bool,
    device_type: str,
    *,
    preferred: str | None = None,
    bf16_supported: bool = True,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The autocast dtype name for a model on a device, or ``None`` for full precision.

    Autocast applies on CUDA only, to models that declare ``supports_autocast``;
    ``RS_EMBED_AUTOCAST=0`` turns it off everywhere.  ``preferred`` (the
    model's ``autocast_dtype``) defaults to bfloat16, which falls back to
    float16 on GPUs without bfloat16.
    """
    environ = os.environ if env is None else env
    if not supports_autocast or device_type != "cuda":
        return None
    if environ.get("RS_EMBED_AUTOCAST", "1").strip().lower() in _FALSY:
        return None
    name = preferred or "bfloat16"
    if name not in ("bfloat16", "float16"):
        raise ModelError(f"autocast_dtype must be 'bfloat16' or 'float16', got {name!r}")
    if name == "bfloat16" and not bf16_supported:
        return "float16"
    return name


def compile_backend_for(option: Any = None, env: Mapping[str, str] | None = None) -> str | None:
    """The ``torch.compile`` backend asked for, or ``None`` (eager).

    ``option`` is the ``compile`` ``model_config`` value: ``True`` (inductor),
    ``False`` (off, whatever the environment says) or a backend name.  Without
    it, ``RS_EMBED_TORCH_COMPILE`` is read the same way (``1``/``true`` ->
    inductor, ``0``/unset -> off, anything else -> that backend).
    """
    environ = os.environ if env is None else env
    value: Any = option if option is not None else environ.get("RS_EMBED_TORCH_COMPILE")
    if value is None or value is False:
        return None
    if value is True:
        return "inductor"
    text = str(value).strip().lower()
    if text in _FALSY:
        return None
    if text in ("1", "true", "yes", "on"):
        return "inductor"
    return text


def batch_size_for_memory(
    requested: int, free_bytes: int | None, bytes_per_item: float | None, headroom: float = 0.8
) -> int:
    """Largest batch ``<= requested`` whose measured footprint fits in ``headroom`` of the free memory."""
    if not free_bytes or not bytes_per_item or bytes_per_item <= 0:
        return max(1, int(requested))
    return max(1, min(int(requested), int(free_bytes * headroom // bytes_per_item)))


def pool_grid(grid: Any, pooling: str) -> Any:
    """``(B, D, h, w)`` -> ``(B, D)``: the max over the cells for ``"max"``, else their mean."""
    return grid.amax(dim=(-2, -1)) if pooling == "max" else grid.mean(dim=(-2, -1))


def is_out_of_memory(exc: BaseException) -> bool:
    """``True`` for a device out-of-memory error (CUDA's typed error or an allocator message)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - only torch models call this
        return False
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
