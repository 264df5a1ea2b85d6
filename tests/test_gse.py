"""``gse`` (annual Google Satellite Embedding) against the fake Earth Engine (``tests/fake_ee.py``)."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from fake_ee import MAX_BYTES, FakeEarthEngine, fake_ee_cluster  # noqa: E402

from rs_embed_dask import BBox, OutputSpec, PointBuffer, TemporalSpec  # noqa: E402
from rs_embed_dask.core.errors import ModelError  # noqa: E402
from rs_embed_dask.core.registry import get_model_class  # noqa: E402
from rs_embed_dask.geometry import grid_window  # noqa: E402
from rs_embed_dask.models.gse import GSE_BANDS, GSEAnnualEmbedder  # noqa: E402
from rs_embed_dask.providers import ee_session  # noqa: E402
from rs_embed_dask.providers.gee_images import GSE_ANNUAL, NODATA_SENTINEL  # noqa: E402
from rs_embed_dask.resolve import reset_runtime  # noqa: E402

Y2023 = TemporalSpec.year(2023)
ROI = PointBuffer(10.0, 45.0, 200)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("EE_PROJECT", "test-project")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    reset_runtime()
    f = FakeEarthEngine().install(monkeypatch)
    yield f
    reset_runtime()
    ee_session.reset_session()


def reference(fake, roi, year=2023, scale=10.0):
    from datetime import date

    w = grid_window(roi, scale)
    return fake.values(GSE_ANNUAL, list(GSE_BANDS), w, (date(year, 1, 1), date(year + 1, 1, 1))).astype(np.float32)


def embed(roi=ROI, temporal=Y2023, output=None):
    return GSEAnnualEmbedder().embed_spatials([roi], temporal=temporal, output=output or OutputSpec.grid(), sensor=None)[0]


def test_registered_and_described():
    assert get_model_class("gse") is GSEAnnualEmbedder
    d = GSEAnnualEmbedder().describe()
    assert d["type"] == "precomputed"
    assert d["embedding_dim"] == 64
    assert "UTM" in d["native_crs"]
    assert d["native_resolution"] == "10 m"
    assert d["grid_crs"] == "EPSG:3857"
    assert d["inputs"]["collection"] == GSE_ANNUAL


def test_request_and_decoding(fake):
    emb = embed()
    w = grid_window(ROI, 10)
    (req,) = fake.requests
    img = req["image"]
    assert img.coll.id == GSE_ANNUAL
    assert img.coll.dates == ("2023-01-01", "2024-01-01")
    assert img.coll.filters == []  # no scene cloud filter for the product
    assert img.composite == "mosaic"
    assert img.coll.sorted_by == "system:time_start"
    assert img.bands == list(GSE_BANDS)
    assert img.float
    assert img.fill == NODATA_SENTINEL
    assert req["grid"]["dimensions"] == {"width": w.width, "height": w.height}
    assert req["grid"]["affineTransform"]["translateX"] == w.col_off * 10.0
    assert req["grid"]["affineTransform"]["translateY"] == -w.row_off * 10.0
    assert emb.data.shape == (64, *w.shape)
    np.testing.assert_array_equal(emb.data, reference(fake, ROI))
    assert np.abs(emb.data).max() <= 1.0
    assert emb.meta["year"] == 2023
    assert emb.meta["grid_hw"] == list(w.shape)


def test_masked_pixels_are_nan_and_pooling_ignores_them(fake):
    fake.masked = lambda w: np.indices(w.shape)[1] < 5  # five western columns
    grid = embed().data
    ref = reference(fake, ROI)
    assert np.isnan(grid[:, :, :5]).all()
    np.testing.assert_array_equal(grid[:, :, 5:], ref[:, :, 5:])
    mean = embed(output=OutputSpec.pooled()).data
    mx = embed(output=OutputSpec.pooled("max")).data
    np.testing.assert_allclose(mean, ref[:, :, 5:].reshape(64, -1).mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mx, ref[:, :, 5:].reshape(64, -1).max(axis=1))
    assert np.isfinite(mean).all()


def test_all_masked_roi_is_a_model_error(fake):
    fake.masked = lambda w: np.ones(w.shape, dtype=bool)
    with pytest.raises(ModelError, match="no valid"):
        embed(output=OutputSpec.pooled())


def test_missing_year_is_a_model_error(fake):
    fake.empty = lambda s: s["dates"][0].startswith("2010")
    with pytest.raises(ModelError, match="No images"):
        embed(temporal=TemporalSpec.year(2010))
    with pytest.raises(ModelError, match=r"TemporalSpec\.year"):
        embed(temporal=None)


def test_range_uses_start_year_with_warning(fake):
    with pytest.warns(UserWarning, match="start year 2021"):
        emb = embed(temporal=TemporalSpec.range("2021-05-01", "2022-03-01"))
    assert fake.requests[-1]["image"].coll.dates == ("2021-01-01", "2022-01-01")
    np.testing.assert_array_equal(emb.data, reference(fake, ROI, year=2021))


def test_large_roi_split_and_reassembled_exactly(fake):
    roi = BBox(10.0, 45.0, 10.06, 45.04)  # ~670 x 630 px x 64 bands: over the 48 MiB limit
    w = grid_window(roi, 10)
    assert w.width * w.height * 64 * 5 > MAX_BYTES
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = embed(roi=roi)
    assert len(fake.requests) >= 2
    for r in fake.requests:
        d = r["grid"]["dimensions"]
        assert d["width"] * d["height"] * 64 * 5 <= MAX_BYTES
    np.testing.assert_array_equal(emb.data, reference(fake, roi))  # no duplicated or missing strip
    assert emb.meta["n_requests"] == len(fake.requests)


def test_scale_from_sensor(fake):
    from rs_embed_dask.core.specs import SensorSpec

    sensor = SensorSpec(GSE_ANNUAL, GSE_BANDS, scale_m=30)
    emb = GSEAnnualEmbedder().embed_spatials([ROI], temporal=Y2023, output=OutputSpec.grid(), sensor=sensor)[0]
    assert emb.data.shape == (64, *grid_window(ROI, 30).shape)
    assert fake.requests[-1]["grid"]["affineTransform"]["scaleX"] == 30.0


# -- on a cluster ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.cluster
def test_export_holds_the_gee_cap_across_worker_processes(tmp_path, monkeypatch):
    """gse reads through the gee provider: an export shares its cluster-wide cap (here 2).

    Six chunks of two ROIs can run on six worker threads in two processes, so
    without the cap up to six computePixels calls would be in flight at once.
    """
    from datetime import date

    from rs_embed_dask import ExportTarget, export_batch, load_export
    from rs_embed_dask.models.precomputed import nan_pool

    assert GSEAnnualEmbedder.provider == "gee"
    monkeypatch.setenv("EE_PROJECT", "cluster-project")  # inherited by the worker processes
    state = str(tmp_path / "state")
    rois = [PointBuffer(10.0 + 0.01 * i, 45.0, 60) for i in range(12)]
    with fake_ee_cluster(state, threads_per_worker=3, latency_s=0.3) as client:
        manifest = export_batch(
            spatials=rois, temporal=Y2023, models=["gse"], target=ExportTarget.combined(str(tmp_path / "gse.npz")),
            client=client, provider_options={"max_concurrency": 2}, chunk_size=2, show_progress=False,
        )  # fmt: skip
        pids = set(client.run(os.getpid).values())
    assert manifest["status"] == "ok", manifest
    st = FakeEarthEngine.shared_state(state)
    assert st["calls"] == len(rois)
    assert st["active"] == 0
    assert st["max"] == 2  # reached (the reads overlap) and never exceeded
    req_pids = FakeEarthEngine.request_pids(state)
    assert req_pids <= pids
    assert os.getpid() not in req_pids
    # what was written is the product on each ROI's window, pooled
    got = np.asarray(load_export(str(tmp_path / "gse.npz")).embedding("gse"))
    dates = (date(2023, 1, 1), date(2024, 1, 1))
    want = np.stack([
        nan_pool(FakeEarthEngine().values(GSE_ANNUAL, list(GSE_BANDS), grid_window(r, 10), dates).astype(np.float32), "mean")
        for r in rois
    ])  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_parity_harness_fake_serves_the_same_world_to_our_reader(monkeypatch):
    """The differential harness's fake Earth Engine (``parity/products_gse.py``) behind our gse.

    rs-embed reads the same fake through ``sampleRectangle``; here: our
    ``computePixels`` requests get the fake's world, masked pixels become NaN
    and the pooled vector ignores them.
    """
    repo = os.path.dirname(TESTS_DIR)
    monkeypatch.syspath_prepend(repo)
    from parity.products_gse import install, world_values

    monkeypatch.setenv("EE_PROJECT", "test-project")
    reset_runtime()
    ee_session.reset_session()
    served = []
    install(3, log=lambda label, arr: served.append(label), setattr_=monkeypatch.setattr)
    try:
        roi = BBox(8.75, 47.33, 8.756, 47.334)
        grid = embed(roi, TemporalSpec.year(2022))
        pooled = embed(roi, TemporalSpec.year(2022), OutputSpec.pooled())
    finally:
        reset_runtime()
        ee_session.reset_session()
    w = grid_window(roi, 10.0)
    vals, masked = world_values(3, 2022, w.row_off, w.col_off, w.height, w.width, 10.0)
    expected = np.where(masked[None], np.nan, vals)
    assert masked.any()
    assert not masked.all()
    np.testing.assert_array_equal(np.asarray(grid.data), expected)
    np.testing.assert_allclose(pooled.data, np.nanmean(expected, axis=(1, 2)), rtol=1e-6, atol=1e-8)
    assert served == [f"r{w.row_off} c{w.col_off} {w.height}x{w.width}@10m"] * 2
