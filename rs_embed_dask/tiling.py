"""``input_prep`` tiling: rs-embed's tile geometry, stitching and pooling.

An input larger than a model's native square input is cut into
``tile_size`` x ``tile_size`` tiles (stride equal to the tile size), each
tile is embedded, and the tile outputs are merged back into one embedding:

* **cover-shift layout**: along an axis the tiles start at ``0, s, 2s, ...``
  while a tile still ends inside the input; the last tile starts at
  ``dim - tile`` so that it ends exactly at the edge (overlapping its
  neighbour unless ``dim`` is a multiple of the tile size);
* **midpoint cuts**: where two tiles overlap, each owns the pixels up to the
  middle of the overlap, so every pixel belongs to exactly one tile;
* **grid outputs** are the concatenation of each tile's feature cells over
  its owned range (cuts snapped to whole cells);
* **pooled outputs** are the mean of the tile vectors weighted by owned area
  (or the element-wise max for ``pooling="max"``).

Everything here is pure numpy (plus torch for the optional bilinear
snap-to-tile resize) and runs wherever :func:`rs_embed_dask.pipeline.embed_batch`
runs, so the single-ROI API and the export produce identical results.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import BBox, InputPrepSpec, OutputSpec

__all__ = [
    "TilePlan",
    "area_weights",
    "axis_crops",
    "estimate_tile_count",
    "extract_tiles",
    "owned_ranges",
    "plan_input_prep",
    "pool_tiles",
    "snap_hw",
    "snap_input",
    "stitch_grids",
    "tile_spatial",
    "tile_starts",
]

PREP_VERSION = 1


# -- 1-D geometry ---------------------------------------------------------------------
def tile_starts(dim: int, tile: int, stride: int | None = None) -> list[int]:
    """Cover-shift tile origins along one axis.

    Parameters
    ----------
    dim : int
        Length of the axis in pixels.
    tile : int
        Tile size in pixels.
    stride : int, optional
        Step between tiles; defaults to ``tile``.

    Returns
    -------
    list of int
        ``[0, s, 2s, ...]`` while ``k*s + tile < dim``, then ``dim - tile``
        (unless equal to the previous start); ``[0]`` when ``dim <= tile``.

    Examples
    --------
    >>> tile_starts(10, 4)
    [0, 4, 6]
    >>> tile_starts(6, 4)
    [0, 2]
    """
    step = int(stride or tile)
    if tile <= 0 or step <= 0:
        raise ModelError(f"input_prep tile_size and tile_stride must be positive, got {tile}, {step}")
    if dim <= tile:
        return [0]
    starts = [0]
    while starts[-1] + step + tile < dim:
        starts.append(starts[-1] + step)
    last = dim - tile
    if last != starts[-1]:
        starts.append(last)
    return starts


def _count_1d(dim: int, tile: int, stride: int) -> int:
    return 1 if dim <= tile else math.ceil((dim - tile) / stride) + 1


def estimate_tile_count(h: int, w: int, tile: int, stride: int | None = None) -> int:
    """Number of tiles of an ``h`` x ``w`` input: the product of the per-axis counts."""
    step = int(stride or tile)
    return _count_1d(h, tile, step) * _count_1d(w, tile, step)


def owned_ranges(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Split overlapping ``[start, end)`` intervals at the midpoints of their overlaps.

    The owned range of interval ``i`` runs from ``floor((end[i-1] + start[i]) / 2)``
    (never before the previous cut) to ``floor((end[i] + start[i+1]) / 2)``; the
    first and the last keep their outer edges.  The result partitions
    ``[start[0], end[-1])``.

    Raises
    ------
    ModelError
        When two consecutive intervals leave a gap.

    Examples
    --------
    >>> owned_ranges([(0, 4), (2, 6)])
    [(0, 3), (3, 6)]
    """
    iv = sorted((int(a), int(b)) for a, b in intervals)
    out: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(iv):
        if i > 0 and a > iv[i - 1][1]:
            raise ModelError(f"input_prep tiles leave a gap between {iv[i - 1]} and {(a, b)}")
        lo = a if i == 0 else max(out[-1][1], (iv[i - 1][1] + a) // 2)
        hi = b if i == len(iv) - 1 else max(lo, (b + iv[i + 1][0]) // 2)
        out.append((lo, hi))
    return out


def axis_crops(
    starts: Sequence[int], dim: int, tile: int, cells: int, *, pad_edges: bool = True
) -> list[tuple[int, int]]:
    """Per tile, the ``[c0, c1)`` range of its ``cells`` feature cells kept in the stitch.

    A tile's cells span ``tile`` pixels (the padded extent) when ``pad_edges``,
    else its valid extent.  Each crop starts at the floor of the previous tile's
    actual cut (in this tile's cells) and ends at its midpoint cut rounded to the
    nearest cell edge (half up, and never before the next tile's start); the
    last tile ends at the ceiling of its valid extent, so the crops tile the
    axis without gaps.
    """
    ends = [min(s + tile, dim) for s in starts]
    owned = owned_ranges(list(zip(starts, ends, strict=True)))
    crops: list[tuple[int, int]] = []
    prev_cut = Fraction(0)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        valid = e - s
        cell = Fraction(tile if pad_edges else valid, cells)
        c0 = 0 if i == 0 else max(0, math.floor((prev_cut - s) / cell))
        if i == len(starts) - 1:
            c1 = math.ceil(Fraction(valid) / cell)
        else:
            c1 = math.floor(Fraction(owned[i][1] - s) / cell + Fraction(1, 2))
            # an overlap under half a cell could round the cut before the next tile
            # starts; keep the cut there so that the stitched cells leave no gap
            c1 = max(c1, math.ceil(Fraction(starts[i + 1] - s) / cell))
        c1 = min(cells, max(c0, c1))
        prev_cut = s + c1 * cell
        crops.append((c0, c1))
    return crops


# -- the plan of one input --------------------------------------------------------------
@dataclass(frozen=True)
class TilePlan:
    """How one input is cut into tiles (after any snap-to-tile resize).

    Attributes
    ----------
    input_hw : tuple of int
        Height and width that are tiled (after snapping).
    tile_size : int
        Tile side in pixels (== stride).
    y_starts, x_starts : tuple of int
        Cover-shift origins per axis; tiles are enumerated row-major.
    pad_edges : bool
        Pad short tiles to ``tile_size`` by edge replication.
    """

    input_hw: tuple[int, int]
    tile_size: int
    y_starts: tuple[int, ...]
    x_starts: tuple[int, ...]
    pad_edges: bool = True

    @classmethod
    def build(cls, h: int, w: int, tile: int, *, pad_edges: bool = True) -> TilePlan:
        """The cover-shift plan of an ``h`` x ``w`` input."""
        return cls((h, w), tile, tuple(tile_starts(h, tile)), tuple(tile_starts(w, tile)), pad_edges)

    @property
    def tile_count(self) -> int:
        """Number of tiles."""
        return len(self.y_starts) * len(self.x_starts)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Tiles per column and per row."""
        return len(self.y_starts), len(self.x_starts)

    def tiles(self) -> list[dict[str, int]]:
        """Tile meta in row-major order: ``y0, y1, x0, x1, valid_h, valid_w, row, col``."""
        h, w = self.input_hw
        out = []
        for r, y0 in enumerate(self.y_starts):
            for c, x0 in enumerate(self.x_starts):
                y1, x1 = min(y0 + self.tile_size, h), min(x0 + self.tile_size, w)
                out.append(
                    {
                        "y0": y0,
                        "y1": y1,
                        "x0": x0,
                        "x1": x1,
                        "valid_h": y1 - y0,
                        "valid_w": x1 - x0,
                        "row": r,
                        "col": c,
                    }
                )
        return out

    def owned(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Owned pixel ranges per tile row and per tile column."""
        h, w = self.input_hw
        t = self.tile_size
        rows = owned_ranges([(s, min(s + t, h)) for s in self.y_starts])
        cols = owned_ranges([(s, min(s + t, w)) for s in self.x_starts])
        return rows, cols


def extract_tiles(x: np.ndarray, plan: TilePlan) -> list[np.ndarray]:
    """Cut ``x`` (``(..., H, W)``) into the plan's tiles, padding short ones by edge replication."""
    t = plan.tile_size
    out = []
    for m in plan.tiles():
        tile = x[..., m["y0"] : m["y1"], m["x0"] : m["x1"]]
        ph, pw = t - m["valid_h"], t - m["valid_w"]
        if plan.pad_edges and (ph or pw):
            pad = [(0, 0)] * (tile.ndim - 2) + [(0, ph), (0, pw)]
            tile = np.pad(tile, pad, mode="edge")
        out.append(np.ascontiguousarray(tile))
    return out


def snap_hw(h: int, w: int, tile: int, frac: float) -> tuple[int, int]:
    """Snap-to-tile target size: an axis whose remainder is at most ``round(frac * tile)`` drops it."""
    limit = round(frac * tile)

    def one(d: int) -> int:
        rem = d % tile
        return d - rem if d > tile and 0 < rem <= limit else d

    return one(h), one(w)


def snap_input(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize the last two axes of ``x`` to ``hw`` (no-op when equal or without torch)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # pragma: no cover - torch is installed wherever models run
        return x
    lead = x.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(1, -1, *x.shape[-2:])
    y = F.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)
    return y.reshape(*lead, *hw).numpy()


def tile_spatial(spatial: Any, m: Mapping[str, int], input_hw: tuple[int, int]) -> Any:
    """The spatial of one tile: a proportional sub-box of a BBox (y from the north edge).

    Other spatials (``PointBuffer``) are returned unchanged, as rs-embed does.
    """
    if not isinstance(spatial, BBox):
        return spatial
    h, w = input_hw
    dx = (spatial.maxlon - spatial.minlon) / w
    dy = (spatial.maxlat - spatial.minlat) / h
    return BBox(
        spatial.minlon + m["x0"] * dx,
        spatial.maxlat - m["y1"] * dy,
        spatial.minlon + m["x1"] * dx,
        spatial.maxlat - m["y0"] * dy,
        crs=spatial.crs,
    )


# -- merging ------------------------------------------------------------------------------
def stitch_grids(grids: Sequence[np.ndarray], plan: TilePlan) -> np.ndarray:
    """Concatenate each tile's owned feature cells into one ``(..., H', W')`` grid.

    Raises
    ------
    ModelError
        When the tiles' grids differ in shape.
    """
    if len(grids) != plan.tile_count:
        raise ModelError(f"input_prep expected {plan.tile_count} tile grids, got {len(grids)}")
    shapes = {tuple(g.shape) for g in grids}
    if len(shapes) != 1:
        raise ModelError(f"input_prep tiles produced feature grids of different shapes: {sorted(shapes)}")
    gh, gw = grids[0].shape[-2:]
    h, w = plan.input_hw
    rows = axis_crops(plan.y_starts, h, plan.tile_size, gh, pad_edges=plan.pad_edges)
    cols = axis_crops(plan.x_starts, w, plan.tile_size, gw, pad_edges=plan.pad_edges)
    ncol = len(plan.x_starts)
    bands = []
    for r, (r0, r1) in enumerate(rows):
        parts = [grids[r * ncol + c][..., r0:r1, c0:c1] for c, (c0, c1) in enumerate(cols)]
        bands.append(np.concatenate(parts, axis=-1))
    return np.ascontiguousarray(np.concatenate(bands, axis=-2))


def area_weights(plan: TilePlan) -> np.ndarray:
    """Per tile (row-major), its owned area ``max(1, h) * max(1, w)`` over the total; sums to 1."""
    rows, cols = plan.owned()
    a = np.array([max(1, r1 - r0) * max(1, c1 - c0) for r0, r1 in rows for c0, c1 in cols], dtype=np.float64)
    return a / a.sum()


def pool_tiles(vectors: Sequence[np.ndarray], plan: TilePlan, pooling: str = "mean") -> np.ndarray:
    """Merge pooled tile vectors: owned-area weighted mean, or element-wise max."""
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in vectors])
    if pooling == "max":
        return stack.max(axis=0).astype(np.float32)
    wts = area_weights(plan).reshape(-1, *([1] * (stack.ndim - 1)))
    return (stack * wts).sum(axis=0).astype(np.float32)


# -- resolving input_prep for one input ------------------------------------------------------
@dataclass(frozen=True)
class PrepDecision:
    """What :func:`plan_input_prep` decided for one input.

    ``plan`` is ``None`` for a plain (untiled) model call on ``input_hw``;
    ``meta`` is the ``meta["input_prep"]`` record (merge keys are added later).
    """

    plan: TilePlan | None
    input_hw: tuple[int, int]
    meta: dict[str, Any]


def resolve_tile_size(prep: InputPrepSpec, embedder: Any) -> int | None:
    """``prep.tile_size``, else the model's native input size, else ``None`` (no tiling)."""
    if prep.tile_size is not None:
        return int(prep.tile_size)
    return _model_input_size(embedder)


def _model_input_size(embedder: Any) -> int | None:
    if hasattr(embedder, "resolve_input_size"):
        size = embedder.resolve_input_size()
    else:
        size = getattr(embedder, "input_size", None)
    return int(size) if size else None


def plan_input_prep(
    prep: InputPrepSpec,
    embedder: Any,
    output: OutputSpec,
    hw: tuple[int, int],
) -> PrepDecision:
    """Decide resize vs tile for one ``(H, W)`` input, as rs-embed resolves it.

    Raises
    ------
    ModelError
        For ``tile_stride != tile_size`` or more tiles than ``max_tiles_hard``.

    Warns
    -----
    UserWarning
        For more tiles than ``max_tiles`` (mode ``tile``), and for tiled grid
        output of image-level ViT patch-grid models (seams).
    """
    requested = prep.mode
    mode = requested
    h, w = int(hw[0]), int(hw[1])
    plain = {"prep_version": PREP_VERSION, "requested_mode": requested, "resolved_mode": "resize"}
    if mode == "resize" or getattr(embedder, "manages_own_input_prep", False):
        return PrepDecision(None, (h, w), plain)
    policy: dict[str, Any] = {}
    if _is_image_level_vit(embedder):
        policy = {
            "model_policy": (
                "explicit_tile_for_image_level_vit_patch_grid"
                if requested == "tile"
                else "tile_default_for_image_level_vit_patch_grid"
            ),
            "resolved_by_model_policy": requested != "tile",
            "tiled_grid_seam_risk": "high",
            "tiled_grid_recommended": False,
        }
        mode = "tile"
    tile = resolve_tile_size(prep, embedder)
    if not tile:
        return PrepDecision(None, (h, w), plain)
    stride = int(prep.tile_stride or tile)
    if stride != tile:
        raise ModelError(
            "Current tiled input preprocessing supports tile_stride == tile_size only; "
            f"got tile_stride={stride}, tile_size={tile}."
        )
    sh, sw = snap_hw(h, w, tile, prep.tile_snap_frac)
    count = estimate_tile_count(sh, sw, tile, stride)
    if mode == "auto":
        fixed = bool(_model_input_size(embedder))
        if (
            output.mode != "grid"
            or count <= 1
            or count > prep.max_tiles
            or (min(sh, sw) <= tile and not fixed)
        ):
            return PrepDecision(None, (h, w), plain)
    if count > prep.max_tiles_hard:
        raise ModelError(
            f"input_prep tile would create {count} tiles (> max_tiles_hard={prep.max_tiles_hard}) "
            f"for an input of {h}x{w} with tile_size={tile}; use a smaller ROI, a larger "
            "tile_size or input_prep='resize'."
        )
    if count > prep.max_tiles:
        warnings.warn(
            f"input_prep tile creates {count} tiles (> max_tiles={prep.max_tiles}) for an input of "
            f"{h}x{w} with tile_size={tile}.",
            UserWarning,
            stacklevel=3,
        )
    if policy and output.mode == "grid" and count > 1:
        warnings.warn(
            f"Model {getattr(embedder, 'name', '?')!r} returns an image-level ViT patch grid; a tiled "
            "grid has seams between tiles. Pass input_prep='resize' for a seamless grid.",
            UserWarning,
            stacklevel=3,
        )
    meta: dict[str, Any] = {
        "prep_version": PREP_VERSION,
        "requested_mode": requested,
        "resolved_mode": "tile",
        "tile_layout": "cover_shift",
        "tile_size": tile,
        "tile_stride": stride,
        "tile_count": count,
        "pad_edges": bool(prep.pad_edges),
        "pad_policy": "edge_replicate" if prep.pad_edges else "none",
        "max_tiles": int(prep.max_tiles),
        "max_tiles_hard": int(prep.max_tiles_hard),
        "input_hw": [h, w],
        "tile_snap_frac": float(prep.tile_snap_frac),
        **policy,
    }
    if (sh, sw) != (h, w):
        meta["snapped_from_hw"] = [h, w]
        meta["snapped_to_hw"] = [sh, sw]
    plan = TilePlan.build(sh, sw, tile, pad_edges=prep.pad_edges) if count > 1 else None
    return PrepDecision(plan, (sh, sw), meta)


def _is_image_level_vit(embedder: Any) -> bool:
    return bool(
        getattr(embedder, "image_level_vit_patch_grid", False)
        or getattr(embedder, "_image_level_vit_patch_grid", False)
    )
