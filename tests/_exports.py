"""The small export the export-store tests repeat: ``rcf`` on synthetic point buffers near Zurich.

Used by the lock, load-verification and resume tests; each builds its ROIs
with :func:`rois` and runs :func:`small_export` on the module's ``client``
(see ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch

#: One summer season of the synthetic world.
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")


def rois(n: int, *, per_row: int | None = None) -> list[PointBuffer]:
    """``n`` point buffers of 80 m, 0.01 degrees apart from (8.40, 47.30), ``per_row`` to a row (default: one row)."""
    row = per_row or n
    return [
        PointBuffer(lon=8.40 + 0.01 * (j % row), lat=47.30 + 0.01 * (j // row), buffer_m=80) for j in range(n)
    ]


def small_export(
    client: Any,
    target: ExportTarget,
    spatials: Iterable[Any],
    *,
    provider_options: Mapping[str, Any] | None = None,
    backend: str = "synthetic",
    **config: Any,
) -> Any:
    """Export ``rcf`` over ``spatials`` (passed as given: a list or a stream) on ``client``.

    ``config`` are :class:`~rs_embed_dask.ExportConfig` fields, by default
    ``chunk_size=4`` and ``show_progress=False``.  Returns what
    :func:`~rs_embed_dask.export_batch` returns.
    """
    config.setdefault("chunk_size", 4)
    config.setdefault("show_progress", False)
    return export_batch(
        spatials=spatials,
        temporal=TEMPORAL,
        models=["rcf"],
        target=target,
        backend=backend,
        config=ExportConfig(**config),
        provider_options=provider_options,
        client=client,
    )
