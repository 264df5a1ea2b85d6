"""load_export on rs-embed 0.3.1's own files, on zarr stores, laziness and the quirks we fix."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

from rs_embed_dask.core.errors import RSEmbedWarning
from rs_embed_dask.export.load import load_export
from rs_embed_dask.export.results import ExportResult, LazyJSONList

#: rs-embed 0.3.1's files, copied into the repository (a missing file fails, never skips)
FIXTURES = Path(__file__).resolve().parent / "data" / "upstream_exports"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))["fixtures"]

#: Fixtures where rs_embed_dask deliberately differs from rs-embed's loader (see load.py's docstring).
FIXED_QUIRKS = {
    "per_item_npz_partial",  # (c) overall status counts partial models
    "per_item_npz_fetch_failed",  # (c)
    "combined_npz_model_failed",  # (a) error of an all-failed combined model
    "combined_npz_all_failed",  # (a)
    "combined_npz_fetch_failed",  # (b) inputs realigned to n_items
    "per_item_npz_ragged_inputs",  # (d) ragged per-item inputs do not crash
}
SAME_AS_UPSTREAM = sorted(set(EXPECTED) - FIXED_QUIRKS) or ["<no fixtures>"]


def fixture_path(name: str) -> Path:
    e = EXPECTED[name]
    if e["layout"] == "per_item":
        return FIXTURES / name
    return FIXTURES / (name + (".npz" if e["format"] == "npz" else ".nc"))


def summary(r: ExportResult) -> dict[str, Any]:
    """The fields expected.json records for rs-embed's load_export."""
    models = {}
    for name, mr in r.models.items():
        emb, inp = mr.embeddings, mr.inputs
        nan_rows = None
        if emb is not None:
            nan_rows = [int(i) for i in np.flatnonzero(np.isnan(emb.reshape(emb.shape[0], -1)).all(axis=1))]
            assert emb.dtype == np.float32
        models[name] = {
            "status": mr.status,
            "embeddings_shape": None if emb is None else list(emb.shape),
            "embeddings_nan_rows": nan_rows,
            "inputs_shape": None if inp is None else list(inp.shape),
            "n_meta": len(mr.meta),
            "error": mr.error,
        }
    return {
        "layout": r.layout,
        "n_items": r.n_items,
        "status": r.status,
        "n_spatials": len(r.spatials),
        "ok_models": r.ok_models,
        "failed_models": r.failed_models,
        "models": models,
    }


def expected_summary(name: str) -> dict[str, Any]:
    want = copy.deepcopy(EXPECTED[name]["load_export"])
    want.pop("temporal")
    return want


# ---------------------------------------------------------------------------
# rs-embed 0.3.1 fixtures
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rs_embed_dask.core.errors.RSEmbedWarning")  # combined ragged inputs
@pytest.mark.parametrize("name", SAME_AS_UPSTREAM)
def test_upstream_fixture_loads_like_rs_embed(name: str) -> None:
    r = load_export(fixture_path(name))
    assert summary(r) == expected_summary(name)
    assert r.temporal is not None
    assert r.temporal["start"] == "2022-06-01"
    assert r.temporal["year"] is None
    for mr in r.models.values():
        failed_rows = set(np.flatnonzero(mr.item_status == 2).tolist())
        assert all((m == {}) == (i in failed_rows) for i, m in enumerate(mr.meta))


@pytest.mark.parametrize("name", ["per_item_npz_partial", "per_item_npz_fetch_failed"])
def test_fixed_quirk_c_per_item_status_counts_partial_models(name: str) -> None:
    """rs-embed reports status 'ok' next to partial models; we report 'partial'."""
    r = load_export(fixture_path(name))
    want = expected_summary(name)
    assert want["status"] == "ok"  # upstream
    want["status"] = "partial"
    assert summary(r) == want


@pytest.mark.parametrize("name", ["combined_npz_model_failed", "combined_npz_all_failed"])
def test_fixed_quirk_a_combined_all_failed_model_has_an_error(name: str) -> None:
    """rs-embed gives error=None (no 'error' key); we take the first of errors_by_index."""
    r = load_export(fixture_path(name))
    want = expected_summary(name)
    assert want["models"]["toy_broken"]["error"] is None  # upstream
    want["models"]["toy_broken"]["error"] = "RuntimeError('toy_broken: simulated model failure')"
    assert summary(r) == want
    assert r.models["toy_broken"].errors == {
        i: "RuntimeError('toy_broken: simulated model failure')" for i in range(3)
    }
    with pytest.raises(
        ValueError, match=r"Model 'toy_broken' has no embeddings \(status='failed'\)\. Error: Runtime"
    ):
        r.embedding("toy_broken")


def test_fixed_quirk_b_combined_fetch_failed_inputs_realigned() -> None:
    """rs-embed returns inputs (2,4,16,16) for 3 items; we return (3,4,16,16) with NaN row 1."""
    name = "combined_npz_fetch_failed"
    r = load_export(fixture_path(name))
    want = expected_summary(name)
    for m in want["models"].values():
        assert m["inputs_shape"] == [2, 4, 16, 16]  # upstream
        m["inputs_shape"] = [3, 4, 16, 16]
    assert summary(r) == want
    with np.load(fixture_path(name), allow_pickle=False) as z:
        raw = z["inputs_bchw__toy_stats"]
    for mr in r.models.values():
        assert np.isnan(mr.inputs[1]).all()
        np.testing.assert_array_equal(mr.inputs[[0, 2]], raw)
        assert mr.item_status.tolist() == [1, 2, 1]
        assert "simulated fetch failure" in mr.errors[1]


def test_fixed_quirk_d_per_item_ragged_inputs_do_not_raise() -> None:
    """rs-embed raises 'all input arrays must have the same shape'; we warn and keep the arrays."""
    assert EXPECTED["per_item_npz_ragged_inputs"]["load_export_error"].startswith("ValueError")
    with pytest.warns(RSEmbedWarning, match="different shapes per item"):
        r = load_export(fixture_path("per_item_npz_ragged_inputs"))
    mr = r.models["toy_stats"]
    assert (r.status, mr.status, mr.inputs) == ("ok", "ok", None)
    assert mr.embeddings.shape == (2, 8)
    assert {i: tuple(a.shape) for i, a in mr.inputs_ragged.items()} == {0: (4, 16, 16), 1: (4, 24, 24)}
    with np.load(fixture_path("per_item_npz_ragged_inputs") / "p00001.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(mr.inputs_ragged[1].compute(), z["input_chw__toy_stats"])


def test_combined_ragged_inputs_warn_and_are_kept() -> None:
    with pytest.warns(RSEmbedWarning, match="different shapes"):
        r = load_export(fixture_path("combined_npz_ragged_inputs"))
    assert summary(r) == expected_summary("combined_npz_ragged_inputs")
    assert sorted(r.models["toy_stats"].inputs_ragged) == [0, 1]


def test_fixed_quirk_e_per_item_gap_makes_models_partial(tmp_path: Path) -> None:
    """An item index with no file (failed build/write) is a NaN row and makes the model partial."""
    src = fixture_path("per_item_npz_pooled")
    for f in src.iterdir():
        if not f.name.startswith("p00001"):
            shutil.copy(f, tmp_path / f.name)
    r = load_export(tmp_path)
    assert (r.n_items, r.status) == (3, "partial")
    for mr in r.models.values():
        assert mr.status == "partial"
        assert mr.item_status.tolist() == [1, 0, 1]
        assert np.isnan(mr.embeddings[1]).all()
        assert not np.isnan(mr.embeddings[[0, 2]]).any()
    assert r.spatials[1] == {}
    assert r.to_xarray()["name"].values.tolist() == ["p00000", "", "p00002"]


def test_values_agree_across_layouts_and_formats() -> None:
    a = load_export(fixture_path("combined_npz_pooled"))
    b = load_export(fixture_path("combined_netcdf_pooled"))
    c = load_export(fixture_path("per_item_npz_pooled"))
    d = load_export(fixture_path("per_item_netcdf_pooled"))
    # the deduplicated input (stored once, under toy_stats) is one lazy array, read once
    for r in (a, c, d):
        assert r.models["toy_proj"].inputs_lazy.name == r.models["toy_stats"].inputs_lazy.name
        assert r.models["toy_proj"].inputs is r.models["toy_stats"].inputs
    for model in ("toy_stats", "toy_proj"):
        for other in (b, c, d):
            np.testing.assert_allclose(other.embedding(model), a.embedding(model), rtol=1e-6)
            np.testing.assert_array_equal(other.models[model].inputs, a.models[model].inputs)
    with np.load(fixture_path("combined_npz_partial"), allow_pickle=False) as z:
        r = load_export(fixture_path("combined_npz_partial"))
        np.testing.assert_array_equal(r.embedding("toy_flaky")[2], z["embedding__toy_flaky__00002"])


def test_embedding_accessor_errors_and_metadata() -> None:
    r = load_export(fixture_path("per_item_npz_model_failed"))
    with pytest.raises(
        KeyError, match=r"Model 'nope' not found in export\. Available models: \['toy_broken', 'toy_stats'\]"
    ):
        r.embedding("nope")
    assert r.embedding("toy_stats").shape == (3, 8)
    assert r.models["toy_broken"].error == "RuntimeError('toy_broken: simulated model failure')"
    assert r.created_at is not None
    assert r.created_at.utcoffset().total_seconds() == 0
    assert r.manifest["point_index"] == 0
    assert "toy_stats" in repr(r)
    assert "n_items=3" in repr(r)


# ---------------------------------------------------------------------------
# path rules
# ---------------------------------------------------------------------------


def test_json_path_pairs_with_npz_then_nc(tmp_path: Path) -> None:
    assert load_export(FIXTURES / "combined_npz_pooled.json").format == "npz"
    assert load_export(FIXTURES / "combined_netcdf_pooled.json").format == "netcdf"
    shutil.copy(FIXTURES / "combined_npz_pooled.npz", tmp_path / "x.npz")
    shutil.copy(FIXTURES / "combined_npz_pooled.npz", tmp_path / "y.npz")
    shutil.copy(FIXTURES / "combined_npz_pooled.json", tmp_path / "x.json")
    shutil.copy(FIXTURES / "combined_npz_pooled.npz", tmp_path / "x.dat")
    (tmp_path / "z.json").write_text("{}")
    (tmp_path / "w.npz").write_bytes((tmp_path / "x.npz").read_bytes())
    (tmp_path / "w.json").write_text("[1, 2]")
    with pytest.raises(FileNotFoundError, match="Export path does not exist"):
        load_export(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="no paired manifest"):
        load_export(tmp_path / "y.npz")
    with pytest.raises(ValueError, match=r"Unrecognised file extension '\.dat'"):
        load_export(tmp_path / "x.dat")
    with pytest.raises(FileNotFoundError, match=r"no paired \.npz or \.nc file"):
        load_export(tmp_path / "z.json")
    with pytest.raises(ValueError, match="is not a JSON object"):
        load_export(tmp_path / "w.npz")


def test_per_item_discovery_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No per-item export files found"):
        load_export(tmp_path)
    src = fixture_path("per_item_npz_pooled")
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    # a stray combined export in the folder is ignored
    shutil.copy(FIXTURES / "combined_npz_pooled.npz", tmp_path / "run.npz")
    shutil.copy(FIXTURES / "combined_npz_pooled.json", tmp_path / "run.json")
    assert load_export(tmp_path).n_items == 3
    # two files claiming one row
    shutil.copy(src / "p00001.npz", tmp_path / "roi_b.npz")
    shutil.copy(src / "p00001.json", tmp_path / "roi_b.json")
    with pytest.raises(ValueError, match="refusing to overwrite a row"):
        load_export(tmp_path)


# ---------------------------------------------------------------------------
# laziness and to_xarray
# ---------------------------------------------------------------------------


@pytest.fixture
def count_np_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = np.load

    def counting(*args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("allow_pickle") is False
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", counting)
    return calls


@pytest.mark.parametrize("name", ["per_item_npz_pooled", "combined_npz_partial", "per_item_netcdf_pooled"])
def test_npz_and_per_item_arrays_are_read_on_first_access(name: str, count_np_load: list[Any]) -> None:
    r = load_export(fixture_path(name))
    assert count_np_load == []
    mr = next(iter(r.models.values()))
    assert not mr.loaded
    assert isinstance(mr.embeddings_lazy, da.Array)
    emb = mr.embeddings
    assert mr.loaded
    assert isinstance(emb, np.ndarray)
    assert mr.embeddings is emb
    if name.endswith("npz_pooled") or name.startswith("combined"):
        assert count_np_load  # read now


def test_netcdf_export_is_dask_backed_until_touched() -> None:
    r = load_export(fixture_path("combined_netcdf_partial"))
    for mr in r.models.values():
        assert not mr.loaded
        assert isinstance(mr.embeddings_lazy, da.Array)
        assert isinstance(mr.inputs_lazy, da.Array)
    assert r.models["toy_flaky"].embeddings.shape == (3, 16)
    assert r.models["toy_flaky"].loaded
    assert not r.models["toy_stats"].loaded
    r.close()


def test_to_xarray_labels_items_and_models() -> None:
    ds = load_export(fixture_path("combined_npz_grid")).to_xarray()
    assert ds.sizes["item"] == 3
    np.testing.assert_allclose(ds["lon"].values, [-122.42, (-105.0 - 104.99812) / 2, 2.35])
    np.testing.assert_allclose(ds["lat"].values, [37.77, (40.0 + 40.00144) / 2, 48.86])
    assert ds["toy_stats"].dims == ("item", "toy_stats_dim", "toy_stats_y", "toy_stats_x")
    assert ds["toy_proj"].shape == (3, 16, 4, 4)
    assert ds["input__toy_proj"].dims == (
        "item",
        "input__toy_proj_band",
        "input__toy_proj_y",
        "input__toy_proj_x",
    )
    assert isinstance(ds["toy_stats"].data, da.Array)
    assert ds["status__toy_stats"].values.tolist() == [1, 1, 1]
    part = load_export(fixture_path("combined_npz_partial")).to_xarray(inputs=False)
    assert "input__toy_flaky" not in part
    assert part["status__toy_flaky"].values.tolist() == [1, 2, 1]
    assert part["status__toy_flaky"].attrs["model_status"] == "partial"
    assert np.isnan(part["toy_flaky"].sel(item=1).values).all()
    per = load_export(fixture_path("per_item_npz_pooled")).to_xarray()
    assert per["name"].values.tolist() == ["p00000", "p00001", "p00002"]
    assert per["toy_stats"].dims == ("item", "toy_stats_dim")


# ---------------------------------------------------------------------------
# zarr stores (format="zarr"), built here with zarr directly
# ---------------------------------------------------------------------------

UNBOUNDED = 10**12


def make_zarr_store(
    path: Path, *, n: int = 5, chunk: int = 2, complete: bool = True, known_count: bool = True
) -> Path:
    """Build a store in the layout rs_embed_dask's engine writes (see store.py / load.py)."""
    import zarr

    cap = n if known_count else UNBOUNDED
    g = zarr.open_group(path, mode="w")

    def col(name: str, values: np.ndarray, fill: Any) -> None:
        dtype = str if values.dtype.kind in "OUT" else values.dtype
        a = g.create_array(
            name,
            shape=(cap, *values.shape[1:]),
            chunks=(chunk, *values.shape[1:]),
            dtype=dtype,
            fill_value=fill,
        )
        a[: values.shape[0]] = values

    spatials = [{"lon": 10.0 + i, "lat": 40.0 + i, "buffer_m": 50.0, "crs": "EPSG:4326"} for i in range(n)]
    col("spatials", np.array([json.dumps(s) for s in spatials]), "")
    col("lon", np.array([s["lon"] for s in spatials]), np.nan)
    col("lat", np.array([s["lat"] for s in spatials]), np.nan)

    def model(key: str, emb: np.ndarray | None, status: list[int], errors: dict[int, str]) -> None:
        if emb is not None:
            col(f"models/{key}/embeddings", emb.astype(np.float32), np.nan)
        col(f"models/{key}/status", np.array(status, dtype=np.int8), 0)
        col(f"models/{key}/error", np.array([errors.get(i, "") for i in range(n)]), "")
        metas = ["" if status[i] == 2 else json.dumps({"model": key, "i": i}) for i in range(n)]
        col(f"models/{key}/meta", np.array(metas), "")

    a = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    model("toy_a", a, [1] * n, {})
    b = np.arange(n * 6, dtype=np.float32).reshape(n, 6) + 100
    b[[1, 3]] = np.nan
    model("toy_b", b, [1, 2, 1, 3, 1][:n], {1: "RuntimeError('b failed at 1')"})
    r = g.create_array("models/toy_b/ragged/3", shape=(7,), chunks=(7,), dtype="float32")
    r[:] = np.arange(7, dtype=np.float32)
    model("toy_c", None, [2] * n, {i: f"RuntimeError('c boom {i}')" for i in range(n)})
    col("inputs/s2/data", np.ones((n, 2, 3, 3), np.float32) * np.arange(n)[:, None, None, None], np.nan)
    col("inputs/s2/status", np.ones(n, np.int8), 0)
    g.attrs["rs_embed_dask"] = {
        "format_version": 1,
        "layout": "combined",
        "n_items": n if known_count else None,
        "chunk_size": chunk,
        "complete": complete,
        "request_fingerprint": "0" * 40,
        "models": [
            {"name": "toy-a", "key": "toy_a", "input_key": "s2", "sensor": None, "describe": {}},
            {"name": "toy-b", "key": "toy_b", "input_key": "s2", "sensor": None, "describe": {}},
            {"name": "toy-c", "key": "toy_c", "input_key": None, "sensor": None, "describe": {}},
        ],
        "inputs": {"s2": {"owner": "toy-a", "sensor": {}}},
        "temporal": {
            "mode": "range",
            "year": "<function TemporalSpec.year at 0x1>",
            "start": "2022-01-01",
            "end": "2022-02-01",
        },
        "output": {"mode": "pooled", "pooling": "mean", "grid_orientation": "north_up"},
        "backend": "synthetic",
        "device": "cpu",
        "spatials_count": n if known_count else None,
        "manifest": {"created_at": "2026-01-01T00:00:00Z", "status": "partial"} if complete else {},
    }
    return path


def test_zarr_store_loads_lazily(tmp_path: Path) -> None:
    store = make_zarr_store(tmp_path / "out.zarr")
    with pytest.warns(RSEmbedWarning, match="embeddings_ragged"):
        r = load_export(store)
    assert (r.layout, r.format, r.n_items, r.status) == ("combined", "zarr", 5, "partial")
    assert (r.ok_models, r.failed_models) == (["toy-a"], ["toy-c"])
    a, b, c = r.models["toy-a"], r.models["toy-b"], r.models["toy-c"]
    assert all(not m.loaded for m in (a, b))
    assert isinstance(a.embeddings_lazy, da.Array)
    assert isinstance(a.meta, LazyJSONList)
    assert isinstance(r.spatials, LazyJSONList)
    assert r.temporal["year"] is None
    np.testing.assert_array_equal(a.embeddings, np.arange(20, dtype=np.float32).reshape(5, 4))
    assert a.loaded
    assert a.status == "ok"
    assert a.error is None
    assert b.status == "partial"
    assert b.error is None
    assert dict(b.errors) == {1: "RuntimeError('b failed at 1')"}
    assert b.item_status.tolist() == [1, 2, 1, 3, 1]
    assert np.isnan(b.embeddings[[1, 3]]).all()
    assert not np.isnan(b.embeddings[[0, 2, 4]]).any()
    np.testing.assert_array_equal(b.embeddings_ragged[3].compute(), np.arange(7, dtype=np.float32))
    assert c.status == "failed"
    assert c.embeddings is None
    assert c.inputs is None
    assert c.error == "RuntimeError('c boom 0')"
    assert len(c.errors) == 5
    with pytest.raises(ValueError, match="c boom 0"):
        r.embedding("toy-c")
    assert a.meta[2] == {"model": "toy_a", "i": 2}
    assert b.meta[1] == {}
    assert len(b.meta) == 5
    assert list(b.meta)[4] == {"model": "toy_b", "i": 4}
    assert b.meta[-1] == b.meta[4]
    assert r.spatials[3]["lon"] == 13.0
    assert a.inputs.shape == (5, 2, 3, 3)
    assert b.inputs_lazy.name == a.inputs_lazy.name
    ds = r.to_xarray()
    assert isinstance(ds["lon"].data, da.Array)
    np.testing.assert_array_equal(ds["lon"].values, 10.0 + np.arange(5))
    assert ds["toy-b"].dims == ("item", "toy-b_dim")
    assert "toy-c" not in ds
    assert ds["status__toy-c"].values.tolist() == [2] * 5


def test_zarr_store_paired_with_json_and_zarr_json(tmp_path: Path) -> None:
    make_zarr_store(tmp_path / "out.zarr")
    (tmp_path / "out.json").write_text(json.dumps({"zarr_arrays": []}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RSEmbedWarning)
        assert load_export(tmp_path / "out.json").format == "zarr"
        assert load_export(tmp_path / "out.zarr" / "zarr.json").n_items == 5


def test_zarr_store_still_running_with_unknown_count(tmp_path: Path) -> None:
    store = make_zarr_store(tmp_path / "run.zarr", complete=False, known_count=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RSEmbedWarning)
        r = load_export(store)
    # arrays have a huge capacity; the item count comes from the written spatials chunks
    assert r.status == "running"
    assert r.n_items == 6
    a = r.models["toy-a"]
    assert a.status == "partial"
    assert a.item_status.tolist() == [1] * 5 + [0]
    assert a.embeddings.shape == (6, 4)
    assert np.isnan(a.embeddings[5]).all()
    assert r.manifest == {}


def test_zarr_without_rs_embed_attrs_is_refused(tmp_path: Path) -> None:
    import zarr

    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match="not an rs_embed_dask export"):
        load_export(tmp_path / "plain.zarr")
