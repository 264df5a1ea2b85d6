"""SpatialBlock: a chunk's ROIs packed into arrays, rebuilt exactly."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest

from rs_embed_dask import BBox, PointBuffer
from rs_embed_dask.export.blocks import SpatialBlock, as_block
from rs_embed_dask.serialization import jsonable


def test_roundtrip_keeps_types_values_and_order() -> None:
    specs = [
        PointBuffer(8, 47, 640),
        BBox(8.1, 47.2, 8.3, 47.25),
        PointBuffer(-122.42, 37.77, 80.5),
        BBox(-105, 40, -104.99812, 40.00144),
    ]
    block = pickle.loads(pickle.dumps(SpatialBlock.from_specs(specs)))
    assert len(block) == 4
    assert list(block) == specs
    assert [jsonable(b) for b in block] == [jsonable(s) for s in specs]  # ints stay ints
    assert block[-1] == specs[-1]
    assert list(block[1:3]) == specs[1:3]
    with pytest.raises(IndexError):
        block[4]


def _unpickled_bytes(obj: object) -> int:
    data = pickle.dumps(obj)
    tracemalloc.start()
    try:
        kept = pickle.loads(data)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return size


def test_a_received_block_holds_far_less_memory_than_the_objects() -> None:
    # what a scheduler keeps of each task message it logged
    specs = [BBox(8 + i * 1e-3, 47.0, 8.001 + i * 1e-3, 47.001) for i in range(1000)]
    assert _unpickled_bytes(as_block(specs)) < _unpickled_bytes(specs) / 4


def test_mixed_crs_and_fallback() -> None:
    specs = [PointBuffer(8.0, 47.0, 100.0), PointBuffer(900000.0, 6000000.0, 100.0, crs="EPSG:3857")]
    assert list(SpatialBlock.from_specs(specs)) == specs
    assert as_block(["not a roi"]) == ["not a roi"]
