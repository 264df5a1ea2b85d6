"""Acceptance criteria of the single-ROI API (get_embedding / get_embeddings_batch)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

from rs_embed_dask import (
    BBox,
    Embedding,
    FetchSpec,
    ModelError,
    OutputSpec,
    PointBuffer,
    ProviderError,
    SensorSpec,
    TemporalSpec,
    get_embedding,
    get_embeddings_batch,
)
from rs_embed_dask.geometry import grid_window
from rs_embed_dask.providers.synthetic import SyntheticProvider

ROI = PointBuffer(121.5, 31.2, 1280)
T = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = "COPERNICUS/S2_SR_HARMONIZED"


@pytest.fixture(scope="module")
def pooled() -> Embedding:
    return get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic")


def test_acceptance_pooled(pooled):
    assert isinstance(pooled, Embedding)
    assert isinstance(pooled.data, np.ndarray)
    assert pooled.data.dtype == np.float32
    assert pooled.data.shape == (512,)
    assert np.isfinite(pooled.data).all()
    assert pooled.data.std() > 0


def test_acceptance_bit_identical_in_new_process(pooled, run_python):
    code = (
        "import hashlib\n"
        "from rs_embed_dask import PointBuffer, TemporalSpec, get_embedding\n"
        "e = get_embedding('rcf', spatial=PointBuffer(121.5, 31.2, 1280), "
        "temporal=TemporalSpec.range('2022-06-01', '2022-09-01'), backend='synthetic')\n"
        "print(e.data.dtype, e.data.shape, hashlib.sha1(e.data.tobytes()).hexdigest())\n"
    )
    expected = f"{pooled.data.dtype} {pooled.data.shape} {hashlib.sha1(pooled.data.tobytes()).hexdigest()}"
    assert run_python(code) == expected


def test_same_call_twice_is_identical(pooled):
    again = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic")
    assert again.data.tobytes() == pooled.data.tobytes()


def test_grid_output():
    emb = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", output=OutputSpec.grid())
    assert emb.data.dtype == np.float32
    assert emb.data.shape == (512, 32, 32)  # 256 px -> 254 px maps -> ceil(254 / 8) cells
    assert emb.meta["grid_orientation_policy"] == "north_up"
    assert emb.meta["y_axis_direction"] == "north_to_south"
    # the pooled vector is the mean of the full-resolution maps, not of the cells
    pooled = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic")
    assert not np.allclose(pooled.data, emb.data.mean(axis=(1, 2)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(pooled.data, emb.data.mean(axis=(1, 2)), rtol=0.05, atol=0.05)


def test_grid_cells_partition_exactly():
    # 2 * 1310 / 10 = 262 px -> 260 px maps; grid_stride 2 -> 130 cells: the means agree
    roi = PointBuffer(121.5, 31.2, 1310)
    kw = {"spatial": roi, "temporal": T, "backend": "synthetic", "grid_stride": 2, "features": 32}
    g = get_embedding("rcf", output=OutputSpec.grid(), **kw)
    p = get_embedding("rcf", **kw)
    assert g.data.shape == (32, 130, 130)
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_meta(pooled):
    m = pooled.meta
    assert m["model"] == "rcf"
    assert m["backend"] == "synthetic"
    assert m["sensor"]["collection"] == S2
    assert m["sensor"]["bands"] == ["B2", "B3", "B4", "B8"]
    assert m["sensor"]["scale_m"] == 10
    assert m["temporal"] == {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}
    assert m["input_prep"]["requested_mode"] == "tile"
    assert m["input_grid"] == grid_window(ROI, 10).to_dict()
    assert m["input_grid"]["shape"] == [256, 256]
    assert m["device"] == "cpu" or m["device"].startswith(("cuda", "mps"))


def test_embedding_is_function_of_provider_pixels(pooled):
    # the API embeds exactly what the provider delivers for the ROI's window
    from rs_embed_dask.resolve import get_embedder

    x = SyntheticProvider().fetch(ROI, T, SensorSpec(S2, ("B2", "B3", "B4", "B8"))).data
    direct = get_embedder("rcf", None, pooled.meta["device"]).embed_inputs([x], output=OutputSpec.pooled())[0]
    assert direct.data.tobytes() == pooled.data.tobytes()


def test_batch_equals_individual_calls():
    rois = [PointBuffer(121.5, 31.2, 640), BBox(121.40, 31.10, 121.42, 31.12), PointBuffer(-60.0, -12.0, 400)]
    batch = get_embeddings_batch("rcf", spatials=rois, temporal=T, backend="synthetic", features=64)
    assert len(batch) == len(rois)
    singles = [get_embedding("rcf", spatial=r, temporal=T, backend="synthetic", features=64) for r in rois]
    for b, s, r in zip(batch, singles, rois, strict=True):
        assert b.data.shape == (64,)
        np.testing.assert_allclose(b.data, s.data, rtol=1e-6, atol=1e-6)
        assert b.meta["input_grid"] == s.meta["input_grid"] == grid_window(r, 10).to_dict()
    assert not np.allclose(batch[0].data, batch[2].data)  # order matters, ROIs differ


def test_batch_equal_shapes_share_a_forward():
    rois = [PointBuffer(121.5 + 0.01 * i, 31.2, 320) for i in range(3)]
    batch = get_embeddings_batch(
        "rcf", spatials=rois, temporal=T, backend="synthetic", output=OutputSpec.grid()
    )
    for r, b in zip(rois, batch, strict=True):
        s = get_embedding("rcf", spatial=r, temporal=T, backend="synthetic", output=OutputSpec.grid())
        np.testing.assert_allclose(b.data, s.data, rtol=1e-6, atol=1e-6)


def test_temporal_none_warns_and_uses_default_window(pooled):
    with pytest.warns(UserWarning, match="2022-06-01..2022-09-01"):
        emb = get_embedding("rcf", spatial=ROI, backend="synthetic")
    assert emb.meta["temporal"] == {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}
    assert emb.data.tobytes() == pooled.data.tobytes()


def test_explicit_temporal_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_embedding("rcf", spatial=PointBuffer(121.5, 31.2, 100), temporal=T, backend="synthetic")


def test_year_temporal():
    emb = get_embedding("rcf", spatial=ROI, temporal=TemporalSpec.year(2022), backend="synthetic")
    assert emb.meta["temporal"] == {"mode": "year", "year": 2022, "start": None, "end": None}


def test_model_kwargs():
    emb = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", features=64)
    assert emb.data.shape == (64,)
    with pytest.raises(ModelError) as info:
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", nonsense=1)
    assert str(info.value).startswith(
        "Model rcf does not accept model-specific keyword arguments for get_embedding(); got keys ['nonsense']."
    )
    with pytest.raises(ModelError, match="'features' must be an even integer"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", features=3)


def test_unknown_backend_lists_providers():
    with pytest.raises(ProviderError) as info:
        get_embedding("rcf", spatial=ROI, temporal=T, backend="nope")
    msg = str(info.value)
    assert "'nope'" in msg
    assert "'synthetic'" in msg


def test_auto_backend_follows_env(monkeypatch, pooled):
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "synthetic")
    emb = get_embedding("rcf", spatial=ROI, temporal=T)
    assert emb.meta["backend"] == "synthetic"
    assert emb.data.tobytes() == pooled.data.tobytes()


def test_auto_backend_without_provider_is_a_provider_error(monkeypatch):
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "not_installed_provider")
    with pytest.raises(ProviderError, match="not_installed_provider"):
        get_embedding("rcf", spatial=ROI, temporal=T)


def test_fetch_and_sensor_overrides():
    emb = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", fetch=FetchSpec(scale_m=20))
    assert emb.meta["input_grid"]["shape"] == [128, 128]
    assert emb.meta["sensor"]["scale_m"] == 20
    sensor = SensorSpec(S2, ("B4", "B8", "B11"), scale_m=40)
    emb = get_embedding(
        "rcf", spatial=ROI, temporal=T, backend="synthetic", sensor=sensor, bands=("B4", "B8", "B11")
    )
    assert emb.meta["input_grid"]["shape"] == [64, 64]
    assert emb.meta["sensor"]["bands"] == ["B4", "B8", "B11"]


def test_wrong_band_count_is_a_model_error():
    sensor = SensorSpec(S2, ("B4", "B8"))
    with pytest.raises(ModelError, match="expects 4 bands"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", sensor=sensor)


def test_projected_roi_equals_its_wgs84_twin():
    w = grid_window(PointBuffer(121.5, 31.2, 400), 10)
    minx, miny, maxx, maxy = w.bounds
    merc = get_embedding(
        "rcf", spatial=BBox(minx, miny, maxx, maxy, crs="EPSG:3857"), temporal=T, backend="synthetic"
    )
    ll = get_embedding("rcf", spatial=BBox(*w.lonlat_bounds()), temporal=T, backend="synthetic")
    assert merc.meta["input_grid"] == ll.meta["input_grid"] == w.to_dict()
    assert merc.data.tobytes() == ll.data.tobytes()


def test_pooled_max():
    emb = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", output=OutputSpec.pooled("max"))
    mean = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic")
    assert emb.meta["pooling"] == "max"
    assert (emb.data >= mean.data - 1e-6).all()


def test_output_must_be_an_output_spec():
    with pytest.raises(ValueError, match="output must be an OutputSpec"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", output="pooled")
