"""Undo the process-wide settings some libraries change when imported.

Importing ``terratorch`` calls ``torch.set_float32_matmul_precision("medium")``
(TF32 matmuls on GPUs, reduced precision on some CPUs) and may set
``TORCH_CUDNN_V8_API_DISABLED``; a model family that imports it must not change
the numbers of every other model in the worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["kept_torch_globals"]


@contextmanager
def kept_torch_globals() -> Iterator[None]:
    """Restore torch's float32 matmul precision and cuDNN switch on exit."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is needed by every caller
        torch = None  # type: ignore[assignment]
    precision = torch.get_float32_matmul_precision() if torch is not None else None
    cudnn = os.environ.get("TORCH_CUDNN_V8_API_DISABLED")
    try:
        yield
    finally:
        if torch is not None and precision is not None:
            torch.set_float32_matmul_precision(precision)
        if cudnn is None:
            os.environ.pop("TORCH_CUDNN_V8_API_DISABLED", None)
