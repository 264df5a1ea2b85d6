"""``input_prep`` resize / tile / auto: rs-embed's tile geometry, stitching and pooling.

The geometry cases are rs-embed's (reference section 4.3-4.4 and the
acceptance seeds of section 11); the properties check the invariants the
geometry promises on any input size.  Model-level tests use small embedders
registered here whose outputs are known functions of their input.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_embed_dask import tiling
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import register_model, unregister_model
from rs_embed_dask.core.specs import (
    BBox,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    resolve_input_prep,
)
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.pipeline import embed_batch
from rs_embed_dask.resolve import ResolvedModel, reset_runtime, resolve_model

GRID = OutputSpec.grid()
POOLED = OutputSpec.pooled()
BANDS = ("B2", "B3", "B4", "B8")
POOL = "tiling_pool"
SOUTH = "tiling_southup"
VIT = "tiling_vitgrid"
ANY = "tiling_anysize"


class PoolEmbedder(TorchEmbedder):
    """Grid = ``k`` x ``k`` average pooling of the input (translation-equivariant); native input 32."""

    name = POOL
    input_size = 32
    config_keys = frozenset({"k"})

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "type": "onthefly",
            "backend": ["provider"],
            "output": ["pooled", "grid"],
            "inputs": {"collection": S2_SR, "bands": list(BANDS)},
            "defaults": {"scale_m": 10, "image_size": self.input_size},
            "embedding_dim": len(BANDS),
        }

    def build_module(self) -> Any:
        from torch import nn

        return nn.AvgPool2d(int(self.model_config.get("k", 1)))

    def preprocess(self, x: Any) -> Any:
        return x

    def forward_grid(self, x: Any) -> Any:
        return self.module(x)


class SouthUpEmbedder(PoolEmbedder):
    """The same grid, delivered south-up (row 0 = south) and declared so."""

    name = SOUTH

    def embed_inputs(
        self, inputs: Sequence[np.ndarray], *, output: OutputSpec, contexts: Any = None
    ) -> list[Embedding]:
        out = super().embed_inputs(inputs, output=output, contexts=contexts)
        if output.mode == "grid":
            for e in out:
                e.data = np.ascontiguousarray(e.data[..., ::-1, :])
                e.meta["y_axis_direction"] = "south_to_north"
        return out


class VitGridEmbedder(PoolEmbedder):
    """An image-level ViT patch-grid model as far as ``input_prep`` is concerned."""

    name = VIT
    image_level_vit_patch_grid = True


class AnySizeEmbedder(PoolEmbedder):
    """No native input size (like rcf)."""

    name = ANY
    input_size = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "defaults": {"scale_m": 10, "image_size": None}}


@pytest.fixture(scope="module", autouse=True)
def _models() -> Iterator[None]:
    classes = {POOL: PoolEmbedder, SOUTH: SouthUpEmbedder, VIT: VitGridEmbedder, ANY: AnySizeEmbedder}
    for name, cls in classes.items():
        register_model(name, cls, overwrite=True)
    yield
    for name in classes:
        unregister_model(name)
    reset_runtime()


def _rm(name: str = POOL, **config: Any) -> ResolvedModel:
    return resolve_model(name, backend="synthetic", model_config=config or None)


def _ctx(n: int) -> list[dict[str, Any]]:
    return [
        {"spatial": PointBuffer(10.0, 45.0, 500), "temporal": None, "sensor": None, "fetch_meta": None}
    ] * n


def _embed(x: np.ndarray, prep: Any, output: OutputSpec = GRID, name: str = POOL, **config: Any) -> Embedding:
    return embed_batch(
        _rm(name, **config), [x], output=output, contexts=_ctx(1), device="cpu", input_prep=prep
    )[0]


def _field(h: int, w: int, c: int = len(BANDS), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(c, h, w)).astype(np.float32)


# -- rs-embed's geometry cases -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("dim", "tile", "starts"),
    [
        (8, 4, [0, 4]),
        (6, 4, [0, 2]),
        (10, 4, [0, 4, 6]),
        (4, 4, [0]),
        (3, 4, [0]),
        (64, 32, [0, 32]),
        (70, 32, [0, 32, 38]),
    ],
)
def test_cover_shift_starts(dim, tile, starts):
    assert tiling.tile_starts(dim, tile) == starts


def test_tile_origins_row_major():
    plan = tiling.TilePlan.build(6, 10, 4)
    origins = [(m["y0"], m["x0"]) for m in plan.tiles()]
    assert origins == [(0, 0), (0, 4), (0, 6), (2, 0), (2, 4), (2, 6)]
    assert plan.tile_count == tiling.estimate_tile_count(6, 10, 4) == 6
    assert [(m["row"], m["col"]) for m in plan.tiles()][:3] == [(0, 0), (0, 1), (0, 2)]


def test_midpoint_ownership():
    assert tiling.owned_ranges([(0, 4), (2, 6)]) == [(0, 3), (3, 6)]
    assert tiling.owned_ranges([(0, 4), (4, 8)]) == [(0, 4), (4, 8)]
    assert tiling.owned_ranges([(0, 4), (4, 8), (6, 10)]) == [(0, 4), (4, 7), (7, 10)]


@pytest.mark.parametrize(
    ("starts", "dim", "cells", "crops"),
    [
        ([0, 2], 6, 2, [(0, 2), (1, 2)]),  # rs-embed's 6 x 6 / tile 4 / half resolution case
        ([0, 3], 7, 2, [(0, 2), (0, 2)]),  # a cut inside a cell: start at its floor, no gap
        ([0, 2], 6, 1, [(0, 1), (0, 1)]),
        ([0, 4, 6], 10, 2, [(0, 2), (0, 2), (1, 2)]),
        ([0, 4], 8, 4, [(0, 4), (0, 4)]),
    ],
)
def test_axis_crops(starts, dim, cells, crops):
    assert tiling.axis_crops(starts, dim, 4, cells) == crops


def test_gap_between_tiles_is_an_error():
    with pytest.raises(ModelError, match="gap"):
        tiling.owned_ranges([(0, 4), (5, 9)])


def test_six_by_six_half_resolution_model_stitches_to_three_by_three():
    x = _field(6, 6)
    emb = _embed(x, InputPrepSpec.tile(tile_size=4), k=2)
    prep = emb.meta["input_prep"]
    assert prep["tile_count"] == 4
    assert prep["stitched_grid_shape"] == [3, 3]
    assert emb.data.shape == (len(BANDS), 3, 3)
    assert emb.meta["grid_hw"] == [3, 3]
    # the first tile's top-left cell is the mean of x[:, :2, :2]
    np.testing.assert_allclose(emb.data[:, 0, 0], x[:, :2, :2].mean(axis=(1, 2)), rtol=1e-6)


def test_tiled_meta_keys():
    emb = _embed(_field(70, 64), None)
    prep = emb.meta["input_prep"]
    assert prep == {
        "prep_version": 1,
        "requested_mode": "tile",
        "resolved_mode": "tile",
        "tile_layout": "cover_shift",
        "tile_size": 32,
        "tile_stride": 32,
        "tile_count": 6,
        "pad_edges": True,
        "pad_policy": "edge_replicate",
        "max_tiles": 64,
        "max_tiles_hard": 1024,
        "input_hw": [70, 64],
        "tile_snap_frac": 0.1,
        "merged_output": "grid_stitch",
        "stitched_grid_shape": [70, 64],
        "stitch_policy": "midpoint_cut",
    }
    pooled = _embed(_field(70, 64), "tile", POOLED)
    assert pooled.meta["input_prep"]["merged_output"] == "pooled_reduce"
    assert "stitched_grid_shape" not in pooled.meta["input_prep"]


def test_resize_meta_and_untiled_call():
    x = _field(64, 64)
    emb = _embed(x, "resize")
    assert emb.meta["input_prep"] == {
        "prep_version": 1,
        "requested_mode": "resize",
        "resolved_mode": "resize",
    }
    np.testing.assert_allclose(emb.data, x, rtol=1e-6)  # k=1: the untiled model sees the whole input


def test_max_tiles_hard_is_an_error():
    with pytest.raises(ModelError, match=r"input_prep tile would create 9 tiles \(> max_tiles_hard=3\)"):
        _embed(_field(12, 12), InputPrepSpec.tile(tile_size=4, max_tiles=2, max_tiles_hard=3))


def test_max_tiles_warns_and_continues():
    with pytest.warns(UserWarning, match=r"9 tiles \(> max_tiles=4\)"):
        emb = _embed(_field(12, 12), InputPrepSpec.tile(tile_size=4, max_tiles=4))
    assert emb.meta["input_prep"]["tile_count"] == 9


def test_stride_other_than_tile_size_is_an_error():
    with pytest.raises(ModelError, match="tile_stride == tile_size only"):
        _embed(_field(64, 64), InputPrepSpec.tile(tile_stride=16))


@pytest.mark.parametrize(
    ("output", "hw", "name", "resolved"),
    [
        (GRID, (64, 64), POOL, "tile"),  # grid larger than the model's input: tiles
        (POOLED, (64, 64), POOL, "resize"),  # auto never tiles pooled requests
        (GRID, (32, 32), POOL, "resize"),  # one tile is a plain call
        (GRID, (64, 64), ANY, "resize"),  # no native size: nothing to tile to
    ],
)
def test_auto_tiles_only_large_grid_requests(output, hw, name, resolved):
    emb = _embed(_field(*hw), "auto", output, name=name)
    assert emb.meta["input_prep"]["requested_mode"] == "auto"
    assert emb.meta["input_prep"]["resolved_mode"] == resolved


def test_auto_respects_max_tiles():
    emb = _embed(_field(16, 16), InputPrepSpec.auto(tile_size=4, max_tiles=8))
    assert emb.meta["input_prep"]["resolved_mode"] == "resize"  # 16 tiles > max_tiles: plain call


def test_model_without_input_size_is_not_tiled_unless_asked():
    x = _field(64, 64)
    assert _embed(x, "tile", name=ANY).meta["input_prep"]["resolved_mode"] == "resize"
    emb = _embed(x, InputPrepSpec.tile(tile_size=16), name=ANY)
    assert emb.meta["input_prep"]["tile_count"] == 16
    np.testing.assert_allclose(emb.data, x, rtol=1e-6)


def test_snap_to_tile(monkeypatch):
    x = _field(66, 66)
    emb = _embed(x, "tile", POOLED)
    prep = emb.meta["input_prep"]
    assert (prep["snapped_from_hw"], prep["snapped_to_hw"]) == ([66, 66], [64, 64])
    assert prep["tile_count"] == 4
    monkeypatch.setenv("RS_EMBED_TILE_SNAP_FRAC", "0")
    emb = _embed(x, resolve_input_prep("tile"), POOLED)
    assert "snapped_to_hw" not in emb.meta["input_prep"]
    assert emb.meta["input_prep"]["tile_count"] == 9
    assert emb.meta["input_prep"]["tile_snap_frac"] == 0.0


def test_snap_hw_rule():
    assert tiling.snap_hw(66, 70, 32, 0.1) == (64, 70)  # 70 % 32 = 6 > round(3.2)
    assert tiling.snap_hw(30, 32, 32, 0.5) == (30, 32)  # never below one tile
    assert tiling.snap_hw(100, 100, 32, 0.0) == (100, 100)


def test_short_tiles_are_edge_padded():
    x = _field(20, 40)
    plan = tiling.TilePlan.build(20, 40, 32)
    tiles = tiling.extract_tiles(x, plan)
    assert [t.shape for t in tiles] == [(len(BANDS), 32, 32)] * 2
    np.testing.assert_array_equal(tiles[0][:, 20:, :], np.repeat(x[:, 19:20, :32], 12, axis=1))
    for pad in (True, False):
        emb = _embed(x, InputPrepSpec.tile(pad_edges=pad))
        np.testing.assert_allclose(emb.data, x, rtol=1e-6)
        assert emb.meta["input_prep"]["pad_policy"] == ("edge_replicate" if pad else "none")


def test_tiles_of_different_grid_shapes_are_an_error():
    plan = tiling.TilePlan.build(6, 6, 4)
    grids = [np.zeros((2, 2, 2))] * 3 + [np.zeros((2, 3, 2))]
    with pytest.raises(ModelError, match="different shapes"):
        tiling.stitch_grids(grids, plan)


def test_bbox_tiles_get_proportional_sub_boxes():
    box = BBox(10.0, 45.0, 10.4, 45.2)
    sub = tiling.tile_spatial(box, {"y0": 0, "y1": 5, "x0": 5, "x1": 10}, (10, 10))
    assert sub == pytest.approx(BBox(10.2, 45.1, 10.4, 45.2))
    pb = PointBuffer(10.0, 45.0, 100)
    assert tiling.tile_spatial(pb, {"y0": 0, "y1": 5, "x0": 0, "x1": 5}, (10, 10)) is pb


def test_tile_contexts_reach_the_model():
    seen: list[Mapping[str, Any]] = []

    class Recording(PoolEmbedder):
        name = "tiling_recording"

        def embed_inputs(self, inputs: Any, *, output: OutputSpec, contexts: Any = None) -> list[Embedding]:
            seen.extend(contexts)
            return super().embed_inputs(inputs, output=output, contexts=contexts)

    register_model(Recording.name, Recording, overwrite=True)
    try:
        ctx = [
            {"spatial": BBox(10.0, 45.0, 10.4, 45.2), "temporal": None, "sensor": None, "fetch_meta": None}
        ]
        embed_batch(
            _rm(Recording.name), [_field(40, 64)], output=GRID, contexts=ctx, device="cpu", input_prep="tile"
        )
    finally:
        unregister_model(Recording.name)
    assert [c["tile"]["x0"] for c in seen] == [0, 32, 0, 32]
    assert seen[3]["spatial"] == pytest.approx(BBox(10.2, 45.0, 10.4, 45.2 - 0.2 * 8 / 40))


# -- orientation ----------------------------------------------------------------------------------
def test_orientation_keys_for_north_up_models():
    emb = _embed(_field(16, 16), "resize")
    assert emb.meta["grid_orientation_policy"] == "north_up"
    assert emb.meta["grid_native_y_axis_direction"] == "north_to_south"
    assert emb.meta["grid_orientation_applied"] is False
    assert emb.meta["y_axis_direction"] == "north_to_south"
    assert "grid_orientation_policy" not in _embed(_field(16, 16), "resize", POOLED).meta


@pytest.mark.parametrize("prep", ["resize", "tile"])
def test_south_up_grid_is_flipped_for_north_up_and_kept_for_native(prep):
    x = _field(48, 64)
    north = _embed(x, prep, name=SOUTH)
    assert north.meta["grid_native_y_axis_direction"] == "south_to_north"
    assert north.meta["grid_orientation_applied"] is True
    assert north.meta["y_axis_direction"] == "north_to_south"
    np.testing.assert_allclose(north.data, x, rtol=1e-6)
    native = _embed(x, prep, OutputSpec.grid(grid_orientation="native"), name=SOUTH)
    assert native.meta["grid_orientation_applied"] is False
    assert native.meta["y_axis_direction"] == "south_to_north"
    np.testing.assert_allclose(native.data, x[:, ::-1, :], rtol=1e-6)


def test_image_level_vit_policy():
    with pytest.warns(UserWarning, match="seams"):
        emb = _embed(_field(64, 64), "auto", name=VIT)
    prep = emb.meta["input_prep"]
    assert prep["resolved_mode"] == "tile"
    assert prep["model_policy"] == "tile_default_for_image_level_vit_patch_grid"
    assert prep["resolved_by_model_policy"] is True
    assert prep["tiled_grid_seam_risk"] == "high"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = _embed(_field(64, 64), "resize", name=VIT)
    assert emb.meta["input_prep"]["resolved_mode"] == "resize"


# -- the same path for the API and the export ---------------------------------------------------------
def test_get_embedding_and_export_task_agree():
    from rs_embed_dask import get_embedding
    from rs_embed_dask.export.tasks import ChunkInputs, infer_chunk
    from rs_embed_dask.pipeline import fetch_input

    roi = PointBuffer(10.0, 45.0, 320)  # 64 x 64 px at 10 m: four 32 px tiles
    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    api = get_embedding(
        POOL, spatial=roi, temporal=temporal, output=GRID, backend="synthetic", device="cpu", k=4
    )
    assert api.meta["input_prep"]["tile_count"] == 4
    rm = _rm(POOL, k=4)
    fr = fetch_input(rm, roi, temporal)
    chunk = ChunkInputs(key="k", data=[fr.data], meta=[fr.meta], errors=[None])
    out = infer_chunk(
        rm, chunk, [roi], temporal, start=0, output=GRID, device="cpu", input_prep=resolve_input_prep(None),
        batch_size=3, max_retries=0, backoff_s=0.0, continue_on_error=False,
    )  # fmt: skip
    np.testing.assert_array_equal(out.data[0], api.to_numpy())
    assert out.meta[0]["input_prep"] == api.meta["input_prep"]
    # and tiling a translation-equivariant model changes nothing
    np.testing.assert_allclose(api.to_numpy(), _embed(fr.data, "resize", k=4).to_numpy(), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:input_prep tile creates 4 tiles:UserWarning")  # 16 x 16 > max_tiles
def test_export_task_fails_only_the_roi_over_max_tiles_hard():
    from rs_embed_dask.export.tasks import ChunkInputs, infer_chunk

    xs = [_field(16, 16, seed=1), _field(64, 64, seed=2), _field(8, 8, seed=3)]
    rois = [PointBuffer(10.0 + i, 45.0, 100) for i in range(3)]
    chunk = ChunkInputs(key="k", data=list(xs), meta=[{}, {}, {}], errors=[None] * 3)
    prep = InputPrepSpec.tile(tile_size=8, max_tiles=2, max_tiles_hard=4)  # 64 x 64 -> 64 tiles
    kw: dict[str, Any] = {"start": 0, "output": GRID, "device": "cpu", "input_prep": prep, "batch_size": 4}
    out = infer_chunk(_rm(), chunk, rois, None, max_retries=0, backoff_s=0.0, continue_on_error=True, **kw)
    assert out.errors[0] is None
    assert out.errors[2] is None
    assert "max_tiles_hard=4" in str(out.errors[1])
    np.testing.assert_allclose(out.data[0], xs[0], rtol=1e-6)
    with pytest.raises(ModelError, match="max_tiles_hard"):
        infer_chunk(_rm(), chunk, rois, None, max_retries=0, backoff_s=0.0, continue_on_error=False, **kw)


def test_tiles_of_several_inputs_are_batched_together():
    calls: list[int] = []

    class Counting(PoolEmbedder):
        name = "tiling_counting"

        def embed_inputs(self, inputs: Any, *, output: OutputSpec, contexts: Any = None) -> list[Embedding]:
            calls.append(len(inputs))
            return super().embed_inputs(inputs, output=output, contexts=contexts)

    register_model(Counting.name, Counting, overwrite=True)
    try:
        xs = [_field(64, 64, seed=1), _field(16, 16, seed=2), _field(40, 70, seed=3)]
        out = embed_batch(
            _rm(Counting.name),
            xs,
            output=GRID,
            contexts=_ctx(3),
            device="cpu",
            input_prep="tile",
            batch_size=5,
        )
    finally:
        unregister_model(Counting.name)
    assert calls == [5, 5, 1]  # 4 tiles + 1 whole input + 6 tiles, 5 arrays per model call
    for x, e in zip(xs, out, strict=True):
        np.testing.assert_allclose(e.data, x, rtol=1e-6)


# -- properties ---------------------------------------------------------------------------------------
dims = st.integers(min_value=1, max_value=300)
tiles = st.integers(min_value=1, max_value=64)


@given(dim=dims, tile=tiles)
@settings(deadline=None)
def test_tiles_cover_the_axis_exactly(dim, tile):
    starts = tiling.tile_starts(dim, tile)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    assert len(starts) == tiling.estimate_tile_count(dim, 1, tile)
    ends = [min(s + tile, dim) for s in starts]
    assert ends[-1] == dim
    assert all(b >= a for a, b in zip(starts[1:], ends[:-1], strict=True))  # no gaps
    assert all(s % tile == 0 for s in starts[:-1])  # stride == tile, only the last is shifted
    if dim >= tile:
        assert all(e - s == tile for s, e in zip(starts, ends, strict=True))


@given(h=dims, w=dims, tile=tiles)
@settings(max_examples=60, deadline=None)
def test_every_pixel_is_owned_by_exactly_one_tile(h, w, tile):
    plan = tiling.TilePlan.build(h, w, tile)
    rows, cols = plan.owned()
    owner = np.zeros((h, w), dtype=np.int32)
    for (r0, r1), s in zip(rows, plan.y_starts, strict=True):
        assert s <= r0 <= r1 <= min(s + tile, h)  # a tile owns only its own pixels
        for c0, c1 in cols:
            owner[r0:r1, c0:c1] += 1
    assert (owner == 1).all()


@given(dim=dims, tile=tiles, cells=st.integers(min_value=1, max_value=16), pad=st.booleans())
@settings(max_examples=80, deadline=None)
def test_stitched_cells_cover_the_axis_without_gaps(dim, tile, cells, pad):
    from fractions import Fraction

    starts = tiling.tile_starts(dim, tile)
    crops = tiling.axis_crops(starts, dim, tile, cells, pad_edges=pad)
    spans = []
    for s, (c0, c1) in zip(starts, crops, strict=True):
        cell = Fraction(tile if pad else min(s + tile, dim) - s, cells)
        assert 0 <= c0 <= c1 <= cells
        spans.append((s + c0 * cell, s + c1 * cell, cell))
    assert spans[0][0] == 0
    assert spans[-1][1] >= dim
    for (_, prev_end, _), (start, end, cell) in itertools.pairwise(spans):
        if end > start:  # a kept crop starts inside the previous one's last cell, never after it
            assert prev_end - cell < start <= prev_end


@given(h=dims, w=dims, tile=tiles)
@settings(max_examples=60, deadline=None)
def test_area_weights_sum_to_one(h, w, tile):
    plan = tiling.TilePlan.build(h, w, tile)
    wts = tiling.area_weights(plan)
    assert wts.shape == (plan.tile_count,)
    assert (wts > 0).all()
    assert wts.sum() == pytest.approx(1.0)
    rows, cols = plan.owned()
    if all(r1 > r0 for r0, r1 in rows) and all(c1 > c0 for c0, c1 in cols):
        areas = [(r1 - r0) * (c1 - c0) for r0, r1 in rows for c0, c1 in cols]
        np.testing.assert_allclose(wts, np.array(areas) / (h * w))


@given(
    h=dims,
    w=dims,
    tile=st.integers(min_value=1, max_value=40),
    pad=st.booleans(),
    coef=st.tuples(*[st.floats(-5, 5)] * 3),
)
@settings(max_examples=60, deadline=None)
def test_stitching_a_linear_field_reproduces_it(h, w, tile, pad, coef):
    a, b, c = coef
    yy, xx = np.mgrid[0:h, 0:w]
    field = (a * yy + b * xx + c)[None].astype(np.float64)
    plan = tiling.TilePlan.build(h, w, tile, pad_edges=pad)
    stitched = tiling.stitch_grids(tiling.extract_tiles(field, plan), plan)
    np.testing.assert_allclose(stitched, field)


@given(
    k=st.sampled_from([1, 2, 4]),
    hc=st.integers(min_value=1, max_value=24),
    wc=st.integers(min_value=1, max_value=24),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_translation_equivariant_model_tiled_equals_untiled(k, hc, wc, seed):
    x = _field(hc * k, wc * k, seed=seed)
    tiled = _embed(x, InputPrepSpec.tile(tile_snap_frac=0.0), k=k)
    whole = _embed(x, "resize", k=k)
    assert tiled.data.shape == whole.data.shape == (len(BANDS), hc, wc)
    np.testing.assert_allclose(tiled.data, whole.data, rtol=1e-5, atol=1e-4)


@given(h=st.integers(1, 100), w=st.integers(1, 100), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_pooled_max_over_tiles_is_the_global_max(h, w, seed):
    x = _field(h, w, seed=seed)
    emb = _embed(x, InputPrepSpec.tile(tile_size=16, tile_snap_frac=0.0), OutputSpec.pooled("max"))
    np.testing.assert_allclose(emb.data, x.max(axis=(1, 2)), rtol=1e-6)


@given(hn=st.integers(1, 4), wn=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_pooled_mean_over_non_overlapping_tiles_is_the_global_mean(hn, wn, seed):
    x = _field(hn * 16, wn * 16, seed=seed)
    emb = _embed(x, InputPrepSpec.tile(tile_size=16), POOLED)
    np.testing.assert_allclose(emb.data, x.mean(axis=(1, 2)), rtol=1e-5)
