"""Fetch-square and crop-back: rs-embed's rule for rectangular ROIs of square-input models.

A square-input model (a ViT whose token grid must be square:
``Embedder.square_fetch``) never sees a rectangle.  For a rectangular
``BBox`` the fetch asks for the centred EPSG:3857 square of side
``max(width, height)`` around it (:func:`rs_embed_dask.geometry.square_spatial`,
rs-embed's ``tools/spatial.square_spatial``), the model runs on that square of
real imagery, and the output is cut back to the ROI:

* **grid**: the token box of the ROI's normalised window ``(y0, y1, x0, x1)``
  (rs-embed's ``roi_window_geo``, rounded to 6 decimals) is
  ``floor(y0 * h) .. ceil(y1 * h)`` and ``floor(x0 * w) .. ceil(x1 * w)``,
  at least one cell (:func:`roi_token_box`);
* **pooled**: the mean (or max) of the ROI's tokens only, where the model's
  ``roi_pooling`` is ``"grid"``; a model whose pooled vector is not a pooling
  of its grid (``"model"``: RemoteCLIP's CLIP projection) keeps the pooled
  vector of the whole square;
* **tiled squares** (``input_prep`` cuts the square into several tiles):
  the stitched grid is cut back with the same token box, and the pooled
  tile vectors are averaged with weights equal to the area each tile owns
  inside the ROI (the maximum over the tiles touching the ROI for
  ``"max"``), as rs-embed's ``_aggregate_tiled_embeddings`` does.

The window travels from the fetch to the inference in the fetch meta under
:data:`WINDOW_KEY`, so a Dask fetch task fetches the square and the worker
that runs the model crops after inference.  PointBuffers and boxes that are
already square (within ``1e-4`` of the side) are fetched as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.specs import OutputSpec, SpatialSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.geometry import grid_window, square_spatial

__all__ = [
    "FULL_WINDOW",
    "PIXELS_KEY",
    "WINDOW_KEY",
    "crop_embedding",
    "crop_grid",
    "inner_output",
    "roi_input",
    "roi_pool_tiles",
    "roi_tile_weights",
    "roi_token_box",
    "roi_window",
    "square_fetch_request",
    "squares_fetch",
]

#: Fetch-meta key of the ROI's normalised window ``[y0, y1, x0, x1]`` inside the fetched square.
WINDOW_KEY = "roi_window_geo"
#: Fetch-meta key of the ROI's pixel box ``[r0, r1, c0, c1]`` inside the fetched square.
PIXELS_KEY = "roi_pixel_box"
FULL_WINDOW = (0.0, 1.0, 0.0, 1.0)
_GRID_KEYS = ("grid_hw", "grid_shape", "grid_hw_tokens")

Window = tuple[float, float, float, float]


def squares_fetch(embedder_or_cls: Any) -> bool:
    """Whether a model fetches rectangular ROIs as squares (``square_fetch`` class flag)."""
    return bool(getattr(embedder_or_cls, "square_fetch", False))


def _is_full(window: Sequence[float]) -> bool:
    return all(abs(float(a) - b) <= 1e-9 for a, b in zip(window, FULL_WINDOW, strict=True))


def square_fetch_request(spatial: SpatialSpec, scale_m: float | None) -> tuple[SpatialSpec, dict[str, Any]]:
    """The ROI to fetch for a square-input model and the fetch-meta keys that describe the crop-back.

    Parameters
    ----------
    spatial : BBox or PointBuffer
        The requested ROI.
    scale_m : float or None
        The fetch scale; with it the ROI's pixel box inside the square is
        recorded too (for a model that reads the same fetch without squaring).

    Returns
    -------
    (spatial, meta)
        The square (or ``spatial`` itself when it is already square) and
        ``{WINDOW_KEY: [y0, y1, x0, x1], PIXELS_KEY: [r0, r1, c0, c1]}``
        (empty when nothing is cropped).
    """
    square, window = square_spatial(spatial)
    if _is_full(window):
        return spatial, {}
    meta: dict[str, Any] = {WINDOW_KEY: [round(float(v), 6) for v in window]}
    if scale_m:
        sq, roi = grid_window(square, scale_m), grid_window(spatial, scale_m)
        meta[PIXELS_KEY] = [
            roi.row_off - sq.row_off,
            roi.row_off - sq.row_off + roi.height,
            roi.col_off - sq.col_off,
            roi.col_off - sq.col_off + roi.width,
        ]
    return square, meta


def roi_window(fetch_meta: Mapping[str, Any] | None) -> Window | None:
    """The crop-back window carried in a fetch meta, ``None`` when absent or the whole frame."""
    raw = (fetch_meta or {}).get(WINDOW_KEY)
    if raw is None or len(raw) != 4:
        return None
    window = tuple(round(float(v), 6) for v in raw)
    return None if _is_full(window) else window  # type: ignore[return-value]


def roi_token_box(window: Sequence[float], grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` cells of a ``grid_h`` x ``grid_w`` grid covering the window (at least one cell).

    Outer rounding (floor of the start, ceiling of the end), as rs-embed's
    ``tools/shape.roi_token_box``.

    Examples
    --------
    >>> roi_token_box((0.1875, 0.8125, 0.0, 1.0), 14, 14)
    (2, 12, 0, 14)
    """
    y0f, y1f, x0f, x1f = (float(v) for v in window)
    y0 = max(0, min(math.floor(y0f * grid_h), grid_h - 1))
    y1 = max(y0 + 1, min(math.ceil(y1f * grid_h), grid_h))
    x0 = max(0, min(math.floor(x0f * grid_w), grid_w - 1))
    x1 = max(x0 + 1, min(math.ceil(x1f * grid_w), grid_w))
    return y0, y1, x0, x1


def _oriented(window: Window, meta: Mapping[str, Any]) -> Window:
    """The window in the grid's row order (rows counted from the south for a south-up grid)."""
    if meta.get("y_axis_direction") == "south_to_north":
        y0, y1, x0, x1 = window
        return (1.0 - y1, 1.0 - y0, x0, x1)
    return window


def crop_grid(grid: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """The ROI's cells of a ``(..., H, W)`` grid whose rows run north to south."""
    y0, y1, x0, x1 = roi_token_box(window, int(grid.shape[-2]), int(grid.shape[-1]))
    return np.ascontiguousarray(grid[..., y0:y1, x0:x1])


def _pool(grid: np.ndarray, pooling: str) -> np.ndarray:
    axes = (-2, -1)
    out = grid.max(axis=axes) if pooling == "max" else grid.mean(axis=axes, dtype=np.float64)
    return np.asarray(out, dtype=np.float32)


def inner_output(embedder: Any, output: OutputSpec, window: Window | None) -> OutputSpec:
    """The output to ask the model for on a whole (untiled) square whose result is cut back to ``window``.

    A pooled request of a model with ``roi_pooling == "grid"`` runs the grid
    (with the same ``pooling`` for multi-frame reductions) and pools the ROI's
    cells afterwards; anything else runs as requested.
    """
    if window is None or output.mode != "pooled" or getattr(embedder, "roi_pooling", "grid") != "grid":
        return output
    if "grid" not in getattr(embedder, "output_modes", ("pooled", "grid")):
        return output  # no grid to pool: the model's vector of the whole square
    return OutputSpec(mode="grid", pooling=output.pooling, grid_orientation=output.grid_orientation)


def crop_embedding(emb: Embedding, window: Window, output: OutputSpec) -> Embedding:
    """Cut the embedding of a whole square back to the ROI.

    ``emb`` is what the model returned for :func:`inner_output`: a grid is
    cropped (and pooled when ``output`` is pooled), a model-pooled vector is
    kept.  ``meta["roi_window_geo"]`` records the window and, for pooled
    vectors made from the ROI's cells, ``meta["pooling"]`` is rs-embed's
    ``"roi_grid_<pooling>"``.
    """
    meta = dict(emb.meta)
    meta[WINDOW_KEY] = list(window)
    if meta.get("output") != "grid" and np.ndim(emb.to_numpy()) == 1:
        meta["roi_pooling"] = "model_pooled_whole_square"
        return Embedding(data=emb.data, meta=meta)
    g = crop_grid(emb.to_numpy(), _oriented(window, meta))
    if output.mode == "grid":
        for key in _GRID_KEYS:
            if key in meta:
                meta[key] = [int(g.shape[-2]), int(g.shape[-1])]
        meta["roi_grid_shape"] = [int(g.shape[-2]), int(g.shape[-1])]
        return Embedding(data=g, meta=meta)
    for key in (*_GRID_KEYS, "y_axis_direction"):
        meta.pop(key, None)
    meta["output"] = "pooled"
    meta["pooling"] = f"roi_grid_{output.pooling}"
    meta["roi_pooling"] = "roi_tokens"
    meta["roi_grid_shape"] = [int(g.shape[-2]), int(g.shape[-1])]
    return Embedding(data=_pool(g, output.pooling), meta=meta)


def roi_tile_weights(
    owned_rects: Sequence[tuple[int, int, int, int]], window: Window, input_hw: Sequence[int]
) -> np.ndarray:
    """Per tile, the area (px²) of its owned rectangle ``(y0, y1, x0, x1)`` inside the ROI window."""
    h, w = float(input_hw[0]), float(input_hw[1])
    ry0, ry1, rx0, rx1 = window[0] * h, window[1] * h, window[2] * w, window[3] * w
    out = [
        max(0.0, min(oy1, ry1) - max(oy0, ry0)) * max(0.0, min(ox1, rx1) - max(ox0, rx0))
        for oy0, oy1, ox0, ox1 in owned_rects
    ]
    return np.asarray(out, dtype=np.float64)


def roi_pool_tiles(vectors: Sequence[np.ndarray], weights: np.ndarray, pooling: str) -> np.ndarray | None:
    """Merge pooled tile vectors over the ROI: weighted mean, or the max over tiles touching it.

    Returns ``None`` when no tile overlaps the ROI (the caller then merges all
    tiles as without a window).
    """
    if float(weights.sum()) <= 0.0:
        return None
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    if pooling == "max":
        return np.asarray(stack[weights > 0.0].max(axis=0), dtype=np.float32)
    wts = weights.reshape(-1, *([1] * (stack.ndim - 1)))
    return np.asarray((stack * wts).sum(axis=0) / max(1.0, float(weights.sum())), dtype=np.float32)


def roi_input(x: np.ndarray, fetch_meta: Mapping[str, Any] | None) -> np.ndarray:
    """The ROI's own pixels of a squared fetch, for a model that does not square (it shares the fetch).

    ``x`` comes back unchanged when the fetch was not squared or the pixel
    box does not fit the array.
    """
    box = (fetch_meta or {}).get(PIXELS_KEY)
    if roi_window(fetch_meta) is None or box is None or len(box) != 4:
        return x
    r0, r1, c0, c1 = (int(v) for v in box)
    h, w = np.shape(x)[-2:]
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        return x
    return np.ascontiguousarray(np.asarray(x)[..., r0:r1, c0:c1])
