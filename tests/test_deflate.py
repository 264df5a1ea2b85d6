"""Deflate segments of the NPZ writers: standard deflate, concatenable, read by numpy and zipfile."""

from __future__ import annotations

import zipfile
import zlib

import numpy as np
import pytest

from rs_embed_dask.export.deflate import deflate_segment, fast_deflate_available
from rs_embed_dask.export.writers import write_npz


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
def test_segments_concatenate_into_one_stream(level: int) -> None:
    rng = np.random.default_rng(level)
    parts = [rng.normal(size=n).astype(np.float32).tobytes() for n in (1000, 1, 50000)]
    stream = b"".join(deflate_segment(p, level) for p in parts) + b"\x03\x00"  # a final empty block
    assert zlib.decompress(stream, -15) == b"".join(parts)


def test_isal_is_installed_and_smaller_than_raw() -> None:
    # isal is a dependency: the fast path must be the one that runs
    assert fast_deflate_available()
    data = np.round(np.random.default_rng(0).normal(1000, 50, size=(4, 128, 128))).astype(np.float32).tobytes()
    assert len(deflate_segment(data, 1)) < 0.9 * len(data)


def test_write_npz_is_read_like_savez_compressed(tmp_path) -> None:
    arrays = {
        "embeddings": np.arange(24, dtype=np.float32).reshape(2, 12),
        "inputs_bchw": np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32),
        "ids": np.array(["a", "bb"]),
        "scalar": np.float64(3.5),
        "empty": np.zeros((0, 4), np.int16),
    }
    path = write_npz(tmp_path / "x.npz", arrays)
    with np.load(path, allow_pickle=False) as z:
        assert list(z.files) == list(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == np.asarray(v).dtype
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every member's CRC-32 checks
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
