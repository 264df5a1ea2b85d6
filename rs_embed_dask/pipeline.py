"""The two steps every path runs: fetch a ROI's input, embed a batch of inputs.

These functions are what the Dask tasks call on the workers and what the
single-ROI API calls in-process, so both paths give identical results.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from rs_embed_dask.errors import ModelError, TransientProviderError
from rs_embed_dask.providers.base import FetchResult
from rs_embed_dask.resolve import ResolvedModel, get_embedder, get_provider
from rs_embed_dask.specs import InputPrepSpec, OutputSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.types import Embedding

__all__ = ["embed_batch", "fetch_input", "run_with_retry"]

T = TypeVar("T")


def run_with_retry(
    fn: Callable[[], T],
    *,
    retries: int = 0,
    backoff_s: float = 0.0,
    transient_only: bool = False,
    max_backoff_s: float = 60.0,
) -> T:
    """Call ``fn`` up to ``retries + 1`` times with exponential backoff and full jitter.

    The n-th wait is uniform in ``[0, min(max_backoff_s, backoff_s * 2**n)]``.
    With ``transient_only`` only :class:`TransientProviderError` is retried.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or (transient_only and not isinstance(exc, TransientProviderError)):
                raise
            cap = min(max_backoff_s, backoff_s * (2**attempt))
            if cap > 0:
                time.sleep(random.uniform(0.0, cap))
            attempt += 1


def fetch_input(
    model: ResolvedModel,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None,
    *,
    provider_options: Mapping[str, Any] | None = None,
) -> FetchResult:
    """Fetch the input ``model`` reads for one ROI from its provider."""
    if model.sensor is None:
        raise ModelError(f"Model {model.name!r} has no sensor to fetch.")
    provider = get_provider(model.backend, provider_options)
    return provider.fetch(spatial, temporal, model.sensor, n_frames=model.n_frames)


def _prep_meta(prep: InputPrepSpec) -> dict[str, Any]:
    return {"prep_version": 1, "requested_mode": prep.mode, "resolved_mode": "resize"}


def _orientation_meta(meta: dict[str, Any], output: OutputSpec) -> None:
    native = meta.get("y_axis_direction", "north_to_south")
    meta["grid_orientation_policy"] = output.grid_orientation
    meta["grid_native_y_axis_direction"] = native
    meta["grid_native_orientation_reason"] = "common_grid_north_up"
    meta["grid_orientation_applied"] = False
    meta["y_axis_direction"] = native


def embed_batch(
    model: ResolvedModel,
    inputs: Sequence[np.ndarray],
    *,
    output: OutputSpec,
    contexts: Sequence[Mapping[str, Any]],
    device: str = "auto",
    input_prep: InputPrepSpec | None = None,
    batch_size: int | None = None,
) -> list[Embedding]:
    """Embed ``inputs`` with the process-resident model, in batches of ``batch_size``."""
    embedder = get_embedder(model.canonical, model.config_dict, device)
    prep = input_prep or InputPrepSpec()
    n = len(inputs)
    step = max(1, int(batch_size or n or 1))
    out: list[Embedding] = []
    for s in range(0, n, step):
        part = embedder.embed_inputs(inputs[s : s + step], output=output, contexts=contexts[s : s + step])
        if len(part) != len(inputs[s : s + step]):
            raise ModelError(
                f"Model {model.name!r} returned {len(part)} embeddings for {len(inputs[s:s + step])} inputs."
            )
        out.extend(part)
    for emb, ctx in zip(out, contexts, strict=True):
        finalize_meta(emb, model, output, ctx, prep)
    return out


def finalize_meta(
    emb: Embedding,
    model: ResolvedModel,
    output: OutputSpec,
    ctx: Mapping[str, Any],
    prep: InputPrepSpec,
) -> None:
    """Add rs-embed's standard meta keys (model, sensor, temporal, input_prep, grid)."""
    from rs_embed_dask.serialization import jsonable

    meta = emb.meta
    meta.setdefault("model", model.canonical)
    meta.setdefault("type", model.model_type)
    meta.setdefault("backend", model.backend)
    meta.setdefault("source", model.sensor.collection if model.sensor is not None else model.canonical)
    meta.setdefault("sensor", jsonable(model.sensor))
    temporal = ctx.get("temporal")
    meta.setdefault("temporal", temporal.to_dict() if temporal is not None else None)
    fetch_meta = ctx.get("fetch_meta")
    if fetch_meta:
        meta.setdefault("input_grid", fetch_meta.get("grid"))
    meta.setdefault("input_prep", _prep_meta(prep))
    if output.mode == "grid":
        _orientation_meta(meta, output)
