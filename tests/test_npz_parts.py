"""The combined NPZ assembled from parts deflated chunk by chunk (``rs_embed_dask.export.npz_parts``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from rs_embed_dask.export import npz_parts as parts

STORE_ARRAY = "inputs/k/data"


@settings(max_examples=200, deadline=None)
@given(hst.binary(max_size=3000), hst.binary(max_size=3000))
def test_crc32_combine_is_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert parts.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_of_long_data() -> None:
    b = np.random.default_rng(1).bytes(3 * 2**20 + 7)
    assert parts.crc32_combine(zlib.crc32(b"head"), zlib.crc32(b), len(b)) == zlib.crc32(b"head" + b)


def _chunked(tmp_path: Path, x: np.ndarray, step: int, skip: tuple[int, ...] = ()) -> tuple[str, da.Array]:
    store = str(tmp_path / "run.npz.work.zarr")
    for s0 in range(0, x.shape[0], step):
        if s0 not in skip:
            parts.write_part(store, STORE_ARRAY, s0, x[s0 : s0 + step])
    return store, da.from_array(x, chunks=(step, *x.shape[1:]))


def _load(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("skip", [(), (0,), (16, 32)], ids=["all-parts", "first-missing", "middle-missing"])
def test_archive_reads_as_savez_compressed(tmp_path: Path, skip: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 4, 9, 9)).astype(np.float32)
    x[5] = np.nan
    emb = rng.normal(size=(37, 16)).astype(np.float32)
    store, xd = _chunked(tmp_path, x, 8, skip)
    out = tmp_path / "run.npz"
    parts.write_npz_from_parts(
        out, {"inputs_bchw__m": xd, "embeddings__m": emb, "scalar": np.float32(3.5)}, {"inputs_bchw__m": (store, STORE_ARRAY)}
    )
    ref = tmp_path / "ref.npz"
    np.savez_compressed(ref, inputs_bchw__m=x, embeddings__m=emb, scalar=np.float32(3.5))
    got, want = _load(out), _load(ref)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype
        assert got[k].shape == want[k].shape
        assert got[k].tobytes() == want[k].tobytes(), k
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None  # every member's CRC-32 and size check out
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-tqq", str(out)], capture_output=True).returncode == 0


def test_parts_are_used_as_written(tmp_path: Path) -> None:
    """The member holds the parts' bytes: a part for other data than the store's is what gets read."""
    x = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    store, xd = _chunked(tmp_path, x, 8)
    decoy = -x[8:16]
    parts.write_part(store, STORE_ARRAY, 8, decoy)
    out = tmp_path / "run.npz"
    parts.write_npz_from_parts(out, {"a": xd}, {"a": (store, STORE_ARRAY)})
    got = _load(out)["a"]
    np.testing.assert_array_equal(got[8:16], decoy)
    np.testing.assert_array_equal(got[:8], x[:8])


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrong-rows"])
def test_a_damaged_part_is_deflated_again_from_the_store(tmp_path: Path, damage: str) -> None:
    x = np.random.default_rng(2).normal(size=(20, 5)).astype(np.float32)
    store, xd = _chunked(tmp_path, x, 8)
    path = parts._part_path(store, STORE_ARRAY, 8)
    if damage == "truncated":
        Path(path).write_bytes(Path(path).read_bytes()[:10])
    elif damage == "empty":
        Path(path).write_bytes(b"")
    else:  # a part of 3 rows where the store's chunk has 8 of another width
        parts.write_part(store, STORE_ARRAY, 8, np.zeros((3, 7), np.float32))
    out = tmp_path / "run.npz"
    parts.write_npz_from_parts(out, {"a": xd}, {"a": (store, STORE_ARRAY)})
    np.testing.assert_array_equal(_load(out)["a"], x)


def test_many_members_get_zip64_end_records(tmp_path: Path) -> None:
    n = 0x10000 + 3  # more members than a classic end record can count
    arrays = {f"embedding__m__{i:05d}": np.float32(i) for i in range(n)}
    out = tmp_path / "many.npz"
    parts.write_npz_from_parts(out, arrays, {})
    with zipfile.ZipFile(out) as z:
        assert len(z.infolist()) == n
    with np.load(out, allow_pickle=False) as z:
        assert len(z.files) == n
        assert z[f"embedding__m__{n - 1:05d}"] == np.float32(n - 1)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "run.npz"
    with pytest.raises(ValueError, match="object arrays"):
        parts.write_npz_from_parts(out, {"ok": np.ones(3), "bad": np.array([{}, 1], dtype=object)}, {})
    assert os.listdir(tmp_path) == []
