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

from rs_embed_dask import fetch_square, tiling
from rs_embed_dask.core.errors import ModelError, TransientProviderError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import InputPrepSpec, OutputSpec, SpatialSpec, TemporalSpec, resolve_input_prep
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.providers.base import FetchResult
from rs_embed_dask.resolve import ResolvedModel, get_embedder, get_provider

__all__ = ["embed_batch", "fetch_input", "finalize_meta", "orient_grid", "run_with_retry"]

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
    """Fetch the input ``model`` reads for one ROI from its provider.

    A square-input model (``Embedder.square_fetch``) fetches a rectangular
    BBox as the centred square around it; the fetch meta then carries the
    ROI's window, and :func:`embed_batch` cuts the output back to it
    (:mod:`rs_embed_dask.fetch_square`).
    """
    if model.sensor is None:
        raise ModelError(f"Model {model.name!r} has no sensor to fetch.")
    provider = get_provider(model.backend, provider_options)
    extra: dict[str, Any] = {}
    if fetch_square.squares_fetch(get_model_class(model.canonical)):
        spatial, extra = fetch_square.square_fetch_request(spatial, model.sensor.scale_m)
    # a model with its own time bins (olmoearth's 30-day bins) names them; others get equal bins
    bins = None
    if model.n_frames is not None:
        frame_bins = getattr(get_model_class(model.canonical)(model.config_dict), "frame_bins", None)
        bins = frame_bins(temporal) if frame_bins is not None else None
    kw: dict[str, Any] = {"bins": bins} if bins else {}
    fr = provider.fetch(spatial, temporal, model.sensor, n_frames=model.n_frames, **kw)
    # a model whose rs-embed fetch cleans the array (thor clips S2 DN) does it here, before input_prep
    post = getattr(get_model_class(model.canonical), "fetch_postprocess", None)
    if post is not None:
        fr = FetchResult(data=post(fr.data, model.sensor), meta=fr.meta)
    return FetchResult(data=fr.data, meta={**fr.meta, **extra}) if extra else fr


def _run_model(
    embedder: Any,
    model: ResolvedModel,
    arrays: Sequence[np.ndarray],
    contexts: Sequence[Mapping[str, Any]],
    outputs: Sequence[OutputSpec],
    step: int,
) -> list[Embedding]:
    """Model calls of ``step`` arrays that share an output spec; results in input order."""
    out: list[Embedding | None] = [None] * len(arrays)
    groups: dict[OutputSpec, list[int]] = {}
    for i, o in enumerate(outputs):
        groups.setdefault(o, []).append(i)
    for output, idx in groups.items():
        for s in range(0, len(idx), step):
            part_idx = idx[s : s + step]
            part = embedder.embed_inputs(
                [arrays[i] for i in part_idx], output=output, contexts=[contexts[i] for i in part_idx]
            )
            if len(part) != len(part_idx):
                raise ModelError(
                    f"Model {model.name!r} returned {len(part)} embeddings for {len(part_idx)} inputs."
                )
            for i, e in zip(part_idx, part, strict=True):
                out[i] = e
    return [e for e in out if e is not None]


def embed_batch(
    model: ResolvedModel,
    inputs: Sequence[np.ndarray],
    *,
    output: OutputSpec,
    contexts: Sequence[Mapping[str, Any]],
    device: str = "auto",
    input_prep: InputPrepSpec | str | None = None,
    batch_size: int | None = None,
) -> list[Embedding]:
    """Embed ``inputs`` with the process-resident model, applying ``input_prep``.

    Every input is planned first (resize, one tile or many tiles; see
    :func:`rs_embed_dask.tiling.plan_input_prep`), so a request over
    ``max_tiles_hard`` fails before any model call.  Whole inputs and the tiles
    of all tiled inputs then go through the model together, ``batch_size``
    arrays per call; tile outputs are stitched (grid) or pooled back per input.

    Parameters
    ----------
    model : ResolvedModel
        The validated model request.
    inputs : sequence of numpy.ndarray
        ``(C, H, W)`` or ``(T, C, H, W)`` raw provider arrays.
    output : OutputSpec
        Pooled or grid output.
    contexts : sequence of dict
        Per input: ``spatial``, ``temporal``, ``sensor`` and ``fetch_meta``.
    device : str, default "auto"
        Device of the process-resident model.
    input_prep : InputPrepSpec or str, optional
        ``None`` is rs-embed's default (``"tile"``).
    batch_size : int, optional
        Arrays (whole inputs or tiles) per model call; all at once when ``None``.

    Returns
    -------
    list of Embedding
        One per input, in order, with ``meta["input_prep"]`` and, for grids,
        the orientation keys.

    Raises
    ------
    ModelError
        For an invalid ``input_prep``, too many tiles, or a failed forward pass.
    """
    embedder = get_embedder(model.canonical, model.config_dict, device)
    prep = input_prep if isinstance(input_prep, InputPrepSpec) else resolve_input_prep(input_prep)
    square = fetch_square.squares_fetch(embedder)
    windows = [fetch_square.roi_window(c.get("fetch_meta")) if square else None for c in contexts]
    if not square:  # a fetch squared for another model that shares it: this model reads the ROI's pixels
        inputs = [
            fetch_square.roi_input(np.asarray(x), c.get("fetch_meta"))
            for x, c in zip(inputs, contexts, strict=True)
        ]
    decisions = [tiling.plan_input_prep(prep, embedder, output, tuple(np.shape(x))[-2:]) for x in inputs]
    arrays: list[np.ndarray] = []
    job_ctx: list[Mapping[str, Any]] = []
    job_out: list[OutputSpec] = []
    spans: list[tuple[int, int]] = []
    for x, ctx, dec, win in zip(inputs, contexts, decisions, windows, strict=True):
        first = len(arrays)
        arr = tiling.snap_input(np.asarray(x), dec.input_hw)
        if dec.plan is None:
            arrays.append(arr)
            # a one-tile "tile" call: size-flexible models (thor) resize it as rs-embed's tiler does
            job_ctx.append({**ctx, "input_prep_mode": dec.meta.get("resolved_mode")})
            job_out.append(fetch_square.inner_output(embedder, output, win))
        else:
            for tile, m in zip(tiling.extract_tiles(arr, dec.plan), dec.plan.tiles(), strict=True):
                arrays.append(tile)
                sp = ctx.get("spatial")
                job_ctx.append({**ctx, "spatial": tiling.tile_spatial(sp, m, dec.input_hw), "tile": m})
                job_out.append(output)
        spans.append((first, len(arrays)))
    step = max(1, int(batch_size or len(arrays) or 1))
    results = _run_model(embedder, model, arrays, job_ctx, job_out, step)
    out: list[Embedding] = []
    for (a, b), dec, x, win in zip(spans, decisions, inputs, windows, strict=True):
        if dec.plan is None:
            emb = results[a] if win is None else fetch_square.crop_embedding(results[a], win, output)
        else:
            emb = _merge_tiles(results[a:b], dec, output, tuple(np.shape(x))[-2:], win)
        if win is not None:
            dec.meta["roi_cropped"] = True
        out.append(emb)
    for emb, ctx, dec in zip(out, contexts, decisions, strict=True):
        finalize_meta(emb, model, output, ctx, prep, prep_meta=dec.meta)
    return out


def _merge_tiles(
    parts: Sequence[Embedding],
    dec: tiling.PrepDecision,
    output: OutputSpec,
    orig_hw: tuple[int, ...],
    window: tuple[float, float, float, float] | None = None,
) -> Embedding:
    """One embedding from the embeddings of a plan's tiles (stitched grid or pooled reduce).

    With a fetch-square ``window`` the stitched grid is cut back to the ROI
    and the pooled merge weights each tile by the area it owns inside the ROI.
    """
    assert dec.plan is not None
    meta = dict(parts[0].meta)
    prep_meta = dec.meta
    if output.mode == "grid":
        south_up = meta.get("y_axis_direction") == "south_to_north"
        # stitch in input row order, then give the model's native orientation back
        grids = [p.to_numpy()[..., ::-1, :] if south_up else p.to_numpy() for p in parts]
        data = tiling.stitch_grids(grids, dec.plan)
        hw = [int(data.shape[-2]), int(data.shape[-1])]
        prep_meta.update(merged_output="grid_stitch", stitched_grid_shape=hw, stitch_policy="midpoint_cut")
        if window is not None:
            data = fetch_square.crop_grid(data, window)
            hw = [int(data.shape[-2]), int(data.shape[-1])]
            prep_meta["roi_grid_shape"] = list(hw)
            meta[fetch_square.WINDOW_KEY] = list(window)
        if south_up:
            data = np.ascontiguousarray(data[..., ::-1, :])
        for key in ("grid_hw", "grid_shape", "grid_hw_tokens"):
            if key in meta:
                meta[key] = list(hw)
    else:
        vecs = [p.to_numpy() for p in parts]
        roi_vec = None
        if window is not None:
            rows, cols = dec.plan.owned()
            rects = [(r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols]
            weights = fetch_square.roi_tile_weights(rects, window, dec.plan.input_hw)
            roi_vec = fetch_square.roi_pool_tiles(vecs, weights, output.pooling)
            meta[fetch_square.WINDOW_KEY] = list(window)
        data = roi_vec if roi_vec is not None else tiling.pool_tiles(vecs, dec.plan, output.pooling)
        prep_meta.update(merged_output="pooled_reduce")
    meta["input_hw"] = [int(orig_hw[0]), int(orig_hw[1])]
    return Embedding(data=data, meta=meta)


_Y_DIRECTIONS = ("north_to_south", "south_to_north")


def _native_y_direction(meta: Mapping[str, Any]) -> tuple[str, str]:
    """The grid's native row order and where it was read from."""
    transform = meta.get("transform")
    if transform is not None:
        e = getattr(transform, "e", None)
        if e is None and isinstance(transform, Sequence) and len(transform) >= 5:
            e = transform[4]
        if isinstance(e, (int, float)) and e != 0:
            return ("north_to_south" if e < 0 else "south_to_north"), "transform_e_sign"
    declared = meta.get("y_axis_direction")
    if declared == "south_to_north":
        return declared, "model_declared_y_axis_direction"
    if declared is None or declared == "north_to_south":
        return "north_to_south", "common_grid_north_up"
    return "unknown", "model_declared_y_axis_direction"


def orient_grid(emb: Embedding, output: OutputSpec) -> None:
    """Record rs-embed's grid orientation keys and flip a south-up grid for ``north_up``.

    Pooled embeddings are left untouched.
    """
    if output.mode != "grid":
        return
    meta = emb.meta
    native, reason = _native_y_direction(meta)
    flip = output.grid_orientation == "north_up" and native == "south_to_north"
    if flip:
        data = emb.data[..., ::-1, :]
        emb.data = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data
    meta["grid_orientation_policy"] = output.grid_orientation
    meta["grid_native_y_axis_direction"] = native
    meta["grid_native_orientation_reason"] = reason
    meta["grid_orientation_applied"] = flip
    meta["y_axis_direction"] = "north_to_south" if flip else native


def finalize_meta(
    emb: Embedding,
    model: ResolvedModel,
    output: OutputSpec,
    ctx: Mapping[str, Any],
    prep: InputPrepSpec,
    *,
    prep_meta: Mapping[str, Any] | None = None,
) -> None:
    """Add rs-embed's standard meta keys (model, sensor, temporal, input_prep, grid orientation).

    ``prep_meta`` is the ``input_prep`` record of the resolved preparation;
    without it the input is recorded as resized.
    """
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
    if prep_meta is None:
        prep_meta = {
            "prep_version": tiling.PREP_VERSION,
            "requested_mode": prep.mode,
            "resolved_mode": "resize",
        }
    meta.setdefault("input_prep", dict(prep_meta))
    orient_grid(emb, output)
