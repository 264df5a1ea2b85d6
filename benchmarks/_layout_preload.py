"""Dask preload of ``bench_cpu_layouts.py``'s worker processes (benchmark only).

``RS_EMBED_BENCH_NICE``: raise this worker process's nice value by that much
(its threads then run on cycles the inference worker leaves).
``RS_EMBED_BENCH_DEFLATE``: zlib level of the export's deflate calls in this
process (``0`` stores; what the writes would cost with compression moved off
the critical path entirely).
"""

from __future__ import annotations

import os
from typing import Any


def dask_setup(worker: Any) -> None:
    """Apply the two settings (Dask's preload hook)."""
    nice = int(os.environ.get("RS_EMBED_BENCH_NICE", "0") or 0)
    if nice > 0:
        os.nice(nice)
    level = os.environ.get("RS_EMBED_BENCH_DEFLATE", "").strip()
    if level:
        from rs_embed_dask.export import npz_parts, per_item, writers

        lv = int(level)
        if npz_parts.write_part.__kwdefaults__ is not None:
            npz_parts.write_part.__kwdefaults__["level"] = lv
        for fn in (writers.write_npz, getattr(per_item, "write_npz", None)):
            if fn is not None and fn.__kwdefaults__ is not None:
                fn.__kwdefaults__["compresslevel"] = lv
