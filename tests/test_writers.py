"""rs-embed-exact writers: npz streaming, NetCDF layout, JSON, atomicity, item names."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.export.writers import (
    NETCDF_HISTORY,
    check_item_name,
    netcdf_dims,
    write_json,
    write_netcdf,
    write_npz,
)

#: rs-embed 0.3.1's files, copied into the repository (a missing file fails, never skips)
FIXTURES = Path(__file__).resolve().parent / "data" / "upstream_exports"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------


def test_write_npz_roundtrip_matches_savez_compressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "inputs_bchw__m": rng.normal(size=(3, 4, 5, 6)).astype(np.float32),
        "embeddings__m": rng.normal(size=(3, 8)).astype(np.float32),
        "ints": np.arange(10, dtype=np.int64),
        "scalar": np.float64(3.5),
        "empty": np.zeros((0, 3), np.float32),
        "flags": np.array([True, False]),
        "text": np.array(["a", "bcd"]),
        "fortran": np.asfortranarray(rng.normal(size=(4, 3))),
    }
    ours, ref = tmp_path / "ours.npz", tmp_path / "ref.npz"
    write_npz(ours, arrays)
    np.savez_compressed(ref, **arrays)
    with np.load(ours, allow_pickle=False) as z:
        assert z.files == list(arrays)  # keys in the given order
        for k, v in arrays.items():
            assert z[k].dtype == np.asarray(v).dtype
            np.testing.assert_array_equal(z[k], v)
    za, zb = zipfile.ZipFile(ours), zipfile.ZipFile(ref)
    assert za.namelist() == zb.namelist()
    for name in zb.namelist():  # identical .npy members (header + C-order bytes)
        if name != "fortran.npy":  # numpy keeps Fortran order; we always write C order
            assert za.read(name) == zb.read(name), name
        assert za.getinfo(name).compress_type == zipfile.ZIP_DEFLATED


def _ramp(n_rows: int) -> da.Array:
    rows = da.arange(n_rows, chunks=16, dtype=np.float32)[:, None]
    return (da.ones((n_rows, 16384), chunks=(16, 16384), dtype=np.float32) * rows).astype(np.float32)


def _peak_write(path: Path, x: da.Array) -> int:
    tracemalloc.start()
    try:
        write_npz(path, {"embeddings__big": x})
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_write_npz_streams_dask_chunk_by_chunk(tmp_path: Path) -> None:
    # 1 MiB chunks, written in ~4 MiB blocks: the peak does not grow with the array (24 vs 96 MiB).
    small, big = _ramp(384), _ramp(1536)
    peak_small = _peak_write(tmp_path / "small.npz", small)
    peak_big = _peak_write(tmp_path / "big.npz", big)
    assert peak_big < big.nbytes / 3, f"peak {peak_big / 2**20:.1f} MiB: the array was not streamed"
    assert peak_big < 1.5 * peak_small + 2**20
    with np.load(tmp_path / "big.npz", allow_pickle=False) as z:
        got = z["embeddings__big"]
    assert got.shape == (1536, 16384)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0], np.arange(1536, dtype=np.float32))
    np.testing.assert_array_equal(got, big.compute())


def test_write_npz_from_zarr_and_xarray(tmp_path: Path) -> None:
    import zarr

    data = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    z = zarr.open_array(tmp_path / "a.zarr", mode="w", shape=data.shape, chunks=(2, 3, 2), dtype="float32")
    z[:] = data
    write_npz(tmp_path / "z.npz", {"from_zarr": z, "from_xr": xr.DataArray(da.from_array(data, chunks=2))})
    with np.load(tmp_path / "z.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["from_zarr"], data)
        np.testing.assert_array_equal(f["from_xr"], data)


def test_write_npz_refuses_object_arrays_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allow_pickle"):
        write_npz(tmp_path / "o.npz", {"ok": np.ones(3), "bad": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def _failing_dask(n_ok_blocks: int) -> da.Array:
    def boom(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info and block_info[None]["chunk-location"][0] >= n_ok_blocks:
            raise RuntimeError("simulated worker failure")
        return block

    return da.ones((40, 4), chunks=(10, 4), dtype=np.float32).map_blocks(boom, dtype=np.float32)


def test_write_npz_is_atomic_when_a_chunk_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    write_npz(target, {"old": np.zeros(2)})
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="simulated worker failure"):
        write_npz(target, {"a": np.ones(3), "b": _failing_dask(2)})
    assert target.read_bytes() == before  # the previous complete file is untouched
    assert _leftovers(tmp_path) == []
    fresh = tmp_path / "sub" / "new.npz"
    with pytest.raises(RuntimeError):
        write_npz(fresh, {"b": _failing_dask(1)})
    assert not fresh.exists()
    assert _leftovers(fresh.parent) == []


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def test_write_json_format_and_atomicity(tmp_path: Path) -> None:
    obj = {"model": "Zürich-ViT", "shape": [3, 8], "nested": {"a": None, "b": 1.5}}
    p = write_json(tmp_path / "deep" / "m.json", obj)
    text = p.read_text(encoding="utf-8")
    assert text == json.dumps(obj, ensure_ascii=False, indent=2)
    assert "Zürich" in text
    assert not text.endswith("\n")
    with pytest.raises(TypeError):
        write_json(p, {"bad": object()})
    assert json.loads(p.read_text(encoding="utf-8")) == obj
    assert _leftovers(p.parent) == []


def test_write_json_matches_rs_embed_manifest_bytes(tmp_path: Path) -> None:
    src = FIXTURES / "combined_npz_partial.json"
    out = write_json(tmp_path / "m.json", json.loads(src.read_text(encoding="utf-8")))
    assert out.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------------------
# NetCDF
# ---------------------------------------------------------------------------


def test_netcdf_dims_rules_and_conflicts() -> None:
    shapes = {
        "inputs_bchw__a": np.zeros((3, 4, 16, 16)),
        "embeddings__a": np.zeros((3, 8)),
        "embeddings__b": np.zeros((3, 16)),
        "embeddings__g": np.zeros((3, 4, 4, 4)),
        "input_chw__a__00000": np.zeros((4, 16, 16)),
        "embedding__c": np.zeros((8,)),
        "embedding__d": np.zeros((3, 2, 2)),
        "inputs_bchw__t": np.zeros((3, 2, 4, 16, 16)),
        "embedding.x": np.zeros((32,)),
        "embedding-x": np.zeros((64,)),
    }
    dims = netcdf_dims(shapes)
    assert dims["inputs_bchw__a"] == ("point", "band", "y", "x")
    assert dims["embeddings__a"] == ("point", "dim")
    assert dims["embeddings__b"] == ("point", "dim__embeddings__b")
    assert dims["embeddings__g"] == ("point", "band", "y__embeddings__g", "x__embeddings__g")
    assert dims["input_chw__a__00000"] == ("band", "y", "x")
    assert dims["embedding__c"] == ("dim",)
    assert dims["embedding__d"] == ("band__embedding__d", "y__embedding__d", "x__embedding__d")
    assert dims["inputs_bchw__t"] == ("d0", "d1", "d2", "d3", "d4")
    assert dims["embedding.x"] == ("dim__embedding_x",)
    assert dims["embedding-x"] == ("dim__embedding_x_2",)


@pytest.mark.parametrize(
    ("npz", "nc"),
    [
        ("combined_npz_pooled.npz", "combined_netcdf_pooled.nc"),
        ("combined_npz_partial.npz", "combined_netcdf_partial.nc"),
        *[(f"per_item_npz_pooled/p{i:05d}.npz", f"per_item_netcdf_pooled/p{i:05d}.nc") for i in range(3)],
    ],
)
def test_write_netcdf_reproduces_rs_embed_files(tmp_path: Path, npz: str, nc: str) -> None:
    ref = xr.open_dataset(FIXTURES / nc)
    manifest = json.loads((FIXTURES / nc).with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(FIXTURES / npz, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(map(str, ref.data_vars))
        arrays = {str(k): z[str(k)] for k in ref.data_vars}  # rs-embed's insertion order
    attrs = {k: manifest.get(k) for k in ("created_at", "backend", "device")}
    if "n_items" in manifest:
        attrs["n_items"] = manifest["n_items"]
    out = write_netcdf(tmp_path / "out.nc", arrays, attrs)
    import netCDF4

    with netCDF4.Dataset(out) as raw:
        assert raw.file_format == "NETCDF4"
    ours = xr.open_dataset(out)
    assert list(ours.data_vars) == list(ref.data_vars)
    assert not ours.coords
    assert not ref.coords
    for k in ref.data_vars:
        assert ours[k].dims == ref[k].dims, k
        assert ours[k].dtype == np.float32
        np.testing.assert_array_equal(ours[k].values, ref[k].values)
    assert ours.attrs == ref.attrs
    assert ours.attrs["history"] == NETCDF_HISTORY
    expected = json.loads((FIXTURES / "expected.json").read_text())["fixtures"]
    fixture = nc.split("/")[0].removesuffix(".nc")
    recorded = expected[fixture]["files"][Path(nc).name]
    assert {k: tuple(v[2]) for k, v in recorded.items()} == netcdf_dims(arrays)
    ours.close()
    ref.close()


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
def test_write_netcdf_dask_values_and_engines(tmp_path: Path, engine: str) -> None:
    for module in ("h5netcdf", "h5py") if engine == "h5netcdf" else ("netCDF4",):
        pytest.importorskip(module)
    data = np.arange(6 * 8, dtype=np.float64).reshape(6, 8)
    arrays = {"embeddings__m": da.from_array(data, chunks=(2, 8)), "inputs_bchw__m": np.ones((6, 2, 3, 3))}
    out = write_netcdf(
        tmp_path / "d.nc", arrays, {"backend": "synthetic", "n_items": 6, "extra": {"a": 1}}, engine=engine
    )
    with xr.open_dataset(out) as ds:
        assert ds["embeddings__m"].dtype == np.float32
        np.testing.assert_array_equal(ds["embeddings__m"].values, data.astype(np.float32))
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert int(ds.attrs["n_items"]) == 6
        assert json.loads(ds.attrs["extra"]) == {"a": 1}
        assert "created_at" not in ds.attrs


def test_write_netcdf_is_atomic_when_a_chunk_fails(tmp_path: Path) -> None:
    target = tmp_path / "x.nc"
    with pytest.raises(RuntimeError, match="simulated worker failure"):
        write_netcdf(target, {"embeddings__m": _failing_dask(2)})
    assert not target.exists()
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# per-item names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "..",
        ".",
        "../evil",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "x\x00y",
        "C:evil",
        "sub/../../x",
        5,
        None,
    ],
)
def test_check_item_name_refuses_escaping_names(tmp_path: Path, name: object) -> None:
    with pytest.raises(ModelError) as info:
        check_item_name(tmp_path, name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["p00000", "roi-1", "Zürich", ".hidden", "a..b", "with space"])
def test_check_item_name_accepts_plain_names(tmp_path: Path, name: str) -> None:
    assert check_item_name(tmp_path, name) == name
    assert check_item_name(os.fspath(tmp_path), name) == name
