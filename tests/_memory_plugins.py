"""Test models of ``tests/test_memory_batches.py``, importable by worker processes.

* :class:`BatchLoggingRCF` (``"rcf_membatch"``): RCF (16 features) that records
  the batch size of every forward call in :data:`forward_batches` (its own
  process) and states ``BYTES_PER_ITEM`` as its per-item memory estimate.
* :class:`WorkerKillerRCF` (``"rcf_killer"``): RCF whose forward pass ends its
  worker process, as the kernel's out-of-memory killer would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from rs_embed_dask.models.rcf import RCFEmbedder

MODEL_NAME = "rcf_membatch"
KILLER_NAME = "rcf_killer"
#: Batch sizes of the forward calls made in this process, in order.
forward_batches: list[int] = []


class BatchLoggingRCF(RCFEmbedder):
    """RCF that logs its forward batch sizes and states a fixed per-item memory estimate."""

    name = MODEL_NAME
    BYTES_PER_ITEM: ClassVar[int] = 100 * 2**20

    def __init__(self, model_config: Any = None) -> None:
        super().__init__({"features": 16, **dict(model_config or {})})

    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        return int(type(self).BYTES_PER_ITEM)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        forward_batches.append(int(x.shape[0]))
        return super().forward_pooled(x, pooling)


class WorkerKillerRCF(RCFEmbedder):
    """RCF whose forward pass exits its process at once (a worker killed mid-task)."""

    name = KILLER_NAME

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        os._exit(137)


def register() -> None:
    """Register both models (idempotent)."""
    from rs_embed_dask.core.registry import register_model

    register_model(MODEL_NAME, BatchLoggingRCF, overwrite=True)
    register_model(KILLER_NAME, WorkerKillerRCF, overwrite=True)
