"""The small export the export-store tests repeat: ``rcf`` on synthetic point buffers near Zurich.

Used by the lock, load-verification and resume tests; each builds its ROIs
with :func:`rois` and runs :func:`small_export` on the module's ``client``
(see ``conftest.py``).  The model-family tests export their model on a
fresh in-process cluster with :func:`threaded_export` and compare a row
with :func:`assert_row_is_get_embedding`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import rs_embed_dask as rd
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch

#: One summer season of the synthetic world.
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")


def rois(n: int, *, per_row: int | None = None, buffer_m: float = 80) -> list[PointBuffer]:
    """``n`` point buffers (80 m), 0.01 degrees apart from (8.40, 47.30), ``per_row`` to a row (default: one row)."""
    row = per_row or n
    return [
        PointBuffer(lon=8.40 + 0.01 * (j % row), lat=47.30 + 0.01 * (j // row), buffer_m=buffer_m)
        for j in range(n)
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


def threaded_export(
    out: Path,
    models: Mapping[str, Mapping[str, Any]],
    spatials: Sequence[Any],
    temporal: TemporalSpec,
    *,
    backend: str = "synthetic",
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Export ``models`` (name -> model config) over ``spatials`` into the combined file ``out``.

    Runs on a fresh in-process cluster (one worker, two threads) that is
    closed before returning.  ``config`` are :class:`~rs_embed_dask.ExportConfig`
    fields besides ``show_progress=False``; ``kwargs`` go to
    :func:`~rs_embed_dask.export_batch` (``device``, ``provider_options``).
    Returns the manifest.
    """
    from _clusters import threaded_client

    with threaded_client(threads=2) as c:
        return export_batch(
            spatials=list(spatials),
            temporal=temporal,
            models=[rd.ExportModelRequest(name, model_config=dict(cfg)) for name, cfg in models.items()],
            target=ExportTarget.combined(str(out)),
            backend=backend,
            config=ExportConfig(show_progress=False, **(config or {})),
            client=c,
            **kwargs,
        )


def assert_row_is_get_embedding(
    row: Any, model: str, spatial: Any, temporal: TemporalSpec, model_config: Mapping[str, Any]
) -> None:
    """``row`` (an exported embedding) equals ``get_embedding`` on CPU for the same ROI (synthetic backend)."""
    ref = rd.get_embedding(
        model,
        spatial=spatial,
        temporal=temporal,
        model_config=dict(model_config),
        backend="synthetic",
        device="cpu",
    )
    np.testing.assert_allclose(np.asarray(row), np.asarray(ref.data), atol=1e-5)
