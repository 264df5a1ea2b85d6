"""A ``format="zarr"`` export is a zarr/xarray dataset: ``xr.open_zarr`` opens it as ``load_export`` reads it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch, load_export

xr = pytest.importorskip("xarray")

T = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(121.5 + 0.05 * i, 31.2 - 0.03 * i, 320) for i in range(6)]


def _export(path: Path, failure_rate: float = 0.3, **kw: Any) -> dict[str, Any]:
    cfg = ExportConfig(format="zarr", chunk_size=4, show_progress=False, continue_on_error=True, **kw)
    man = export_batch(spatials=ROIS, temporal=T, models=["rcf"], target=ExportTarget.combined(str(path)),
                       config=cfg, backend="synthetic", provider_options={"failure_rate": failure_rate})  # fmt: skip
    assert isinstance(man, dict)
    return man


def test_open_zarr_round_trip_equals_load_export(tmp_path: Path) -> None:
    path = tmp_path / "run.zarr"
    _export(path)
    res = load_export(path)
    try:
        ref = res.to_xarray()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no consolidated-metadata warning, no missing dimension names
            root = xr.open_zarr(path)
            model = xr.open_zarr(path, group="models/rcf")
            inputs = xr.open_zarr(path, group=f"inputs/{res.manifest['models'][0]['inputs']['zarr_array'].split('/')[1]}")
        # the ROI table: item index with lon/lat coordinates (CF) and the ROIs' JSON
        assert root.sizes["item"] == len(ROIS)
        np.testing.assert_array_equal(root["item"].values, ref["item"].values)
        np.testing.assert_allclose(root["lon"].values, ref["lon"].values)
        np.testing.assert_allclose(root["lat"].values, ref["lat"].values)
        assert root["lon"].attrs["units"] == "degrees_east"
        assert root["lat"].attrs["standard_name"] == "latitude"
        assert set(root.coords) >= {"lon", "lat", "item"}
        # the model: embeddings and statuses along item, chunked as the export's chunks
        emb = model["embeddings"]
        assert emb.dims == ("item", "rcf_dim")
        assert emb.chunks[0] == (4, 2)
        np.testing.assert_array_equal(emb.values, ref["rcf"].values)  # NaN rows where failed, in both
        np.testing.assert_array_equal(model["status"].values, ref["status__rcf"].values)
        assert model["status"].attrs["flag_meanings"] == "missing ok failed ok_ragged"
        assert (ref["status__rcf"].values == 2).any()  # the comparison covers failed items too
        inp = inputs["data"]
        assert inp.dims[0] == "item"
        np.testing.assert_array_equal(inp.values, ref["input__rcf"].values)
        # the root is the labelled dataset of load_export(p).to_xarray(): same variables, dims, values
        for v in ref.variables:
            xr.testing.assert_equal(root[v], ref[v])
        assert set(ref.data_vars) <= set(root.data_vars)
    finally:
        res.close()


def test_a_resumed_zarr_export_stays_readable(tmp_path: Path) -> None:
    """Consolidated metadata is dropped while the store changes again and rewritten when it is finished."""
    path = tmp_path / "run.zarr"
    first = _export(path)
    assert first["models"][0]["status"] == "partial"
    assert _export(path, failure_rate=0.0, resume=True)["models"][0]["status"] == "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, group="models/rcf")
        root = xr.open_zarr(path)
    res = load_export(path)
    try:
        ref = res.to_xarray()
        np.testing.assert_array_equal(ds["status"].values, np.asarray(ref["status__rcf"].values))
        assert (root["status__rcf"].values == 1).all()  # the retried items, not the first run's failures
        for v in ref.variables:  # the root views were rebuilt from the resumed store, not left stale
            xr.testing.assert_equal(root[v], ref[v])
    finally:
        res.close()
