"""The ``gee`` provider against the fake Earth Engine boundary (``tests/fake_ee.py``).

The real ``earthengine-api`` builds every expression; the fake evaluates the
serialised request, so these tests check what would be sent to Earth Engine
(grid, collection, filters, bands, composite) and how the binary payload is
decoded.  Pixels are the synthetic world, so the provider's output is compared
with an independent rendering (``SyntheticProvider``) of the same window.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from fake_ee import MAX_BYTES, FakeEarthEngine, fake_ee_cluster  # noqa: E402

from rs_embed_dask import BBox, PointBuffer, TemporalSpec  # noqa: E402
from rs_embed_dask.core.errors import ProviderError, RSEmbedWarning, TransientProviderError  # noqa: E402
from rs_embed_dask.core.registry import get_provider_class  # noqa: E402
from rs_embed_dask.core.specs import SensorSpec  # noqa: E402
from rs_embed_dask.geometry import GridWindow, grid_window  # noqa: E402
from rs_embed_dask.providers import ee_session  # noqa: E402
from rs_embed_dask.providers.gee import GEEProvider, decode_pixels, pixel_grid  # noqa: E402
from rs_embed_dask.providers.synthetic import SyntheticProvider  # noqa: E402
from rs_embed_dask.resolve import reset_runtime  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
S2_3 = SensorSpec(S2, ("RED", "GREEN", "NIR"))
SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-SECRET-KEY-MATERIAL"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("EE_PROJECT", "test-project")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    f = FakeEarthEngine().install(monkeypatch)
    yield f
    reset_runtime()
    ee_session.reset_session()


def provider(**kw):
    kw.setdefault("retry_backoff_s", 0.0)
    return GEEProvider(**kw)


def expected_grid(w: GridWindow) -> dict:
    return {
        "dimensions": {"width": w.width, "height": w.height},
        "affineTransform": {
            "scaleX": w.scale_m, "shearX": 0.0, "translateX": w.col_off * w.scale_m,
            "shearY": 0.0, "scaleY": -w.scale_m, "translateY": -w.row_off * w.scale_m,
        },
        "crsCode": "EPSG:3857",
    }  # fmt: skip


# -- the request -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "roi",
    [PointBuffer(30.0, 0.0, 320), PointBuffer(10.0, 45.0, 320), PointBuffer(20.0, 70.0, 320), BBox(10.0, 44.99, 10.013, 45.0)],
    ids=["equator", "lat45", "lat70", "bbox45"],
)
def test_request_is_exact(fake, roi):
    res = provider().fetch(roi, SUMMER, S2_3)
    w = grid_window(roi, 10)
    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert req["grid"] == expected_grid(w)
    assert req["fileFormat"] == "NUMPY_NDARRAY"
    img = req["image"]
    assert img.coll.id == S2
    assert img.coll.dates == ("2022-06-01", "2022-09-01")
    assert img.coll.filters == [("<=", "CLOUDY_PIXEL_PERCENTAGE", 30)]
    assert img.coll.bounds == pytest.approx(list(w.bounds))
    assert img.bands == ["B4", "B3", "B8"]  # aliases resolved, order kept
    assert img.composite == "median"
    assert img.float
    assert img.fill == 0.0
    assert img.fill_same_footprint is False
    # decoded north-up, band order, equal to an independent rendering of the same window
    ref = SyntheticProvider().fetch(roi, SUMMER, SensorSpec(S2, ("B4", "B3", "B8"))).data
    assert res.data.dtype == np.float32
    assert res.data.shape == (3, *w.shape)
    np.testing.assert_array_equal(res.data, ref)
    assert res.meta["grid"] == w.to_dict()
    assert res.meta["n_requests"] == 1
    assert res.meta["bands_requested"] == ["B4", "B3", "B8"]


def test_mosaic_and_no_temporal(fake):
    provider().fetch(PointBuffer(10.0, 45.0, 100), None, replace(S2_3, composite="mosaic", cloudy_pct=10))
    img = fake.requests[0]["image"]
    assert img.composite == "mosaic"
    assert img.coll.sorted_by == "system:time_start"  # latest scene on top
    assert img.coll.dates is None  # no temporal: no date filter (rs-embed)
    assert img.coll.filters == [("<=", "CLOUDY_PIXEL_PERCENTAGE", 10)]


def test_decode_structured_payload_north_up():
    h, w = 3, 4
    payload = np.zeros((h, w), dtype=[("B8", "<f4"), ("B4", "<f8")])
    payload["B8"] = np.arange(h * w).reshape(h, w)
    payload["B4"] = -np.arange(h * w).reshape(h, w)
    out = decode_pixels(payload, 2, (h, w))
    assert out.dtype == np.float32
    assert out.shape == (2, h, w)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 2, 3])  # row 0 stays the northern row
    np.testing.assert_array_equal(out[1], -np.arange(h * w).reshape(h, w))
    with pytest.raises(ProviderError):
        decode_pixels(payload, 3, (h, w))
    with pytest.raises(ProviderError):
        decode_pixels(payload, 2, (w, h))


def test_pixel_grid_of_a_southern_window():
    w = GridWindow(col_off=-5, row_off=7, width=3, height=2, scale_m=30.0)
    assert pixel_grid(w) == expected_grid(w)
    assert pixel_grid(w)["affineTransform"]["translateY"] == -210.0


# -- limits: split and reassembly ----------------------------------------------------------------
def test_bbox_over_the_payload_limit_is_split_and_reassembled(fake):
    sensor = SensorSpec(S2, ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"), scale_m=10)
    roi = BBox(10.0, 45.0, 10.13, 45.065)  # ~1030 x 1030 px x 12 bands: 64 MB with mask bytes
    w = grid_window(roi, 10)
    assert w.width * w.height * 12 * 5 > MAX_BYTES
    res = provider().fetch(roi, SUMMER, sensor)
    grids = [r["grid"] for r in fake.requests]
    assert len(grids) >= 2
    covered = np.zeros(w.shape, dtype=int)
    for g in grids:
        d = g["dimensions"]
        assert d["width"] * d["height"] * 12 * 5 <= MAX_BYTES
        t = g["affineTransform"]
        x0 = round(t["translateX"] / 10) - w.col_off
        y0 = round(-t["translateY"] / 10) - w.row_off
        covered[y0 : y0 + d["height"], x0 : x0 + d["width"]] += 1
    assert (covered == 1).all()  # parts tile the window on lattice lines, no overlap
    ref = SyntheticProvider().fetch(roi, SUMMER, sensor).data
    np.testing.assert_array_equal(res.data, ref)
    assert res.meta["n_requests"] == len(grids)


def test_split_equals_single_request_and_side_limit(fake):
    roi = PointBuffer(20.0, 70.0, 640)
    single = provider().fetch(roi, SUMMER, S2_3).data
    n_single = len(fake.requests)
    many = provider(max_request_bytes=3 * 5 * 700).fetch(roi, SUMMER, S2_3).data
    assert n_single == 1
    assert len(fake.requests) - n_single >= 6
    np.testing.assert_array_equal(many, single)
    # a strip longer than 32,768 px is split on the side limit even though its payload is small
    strip = BBox(0.0, 0.0, 3.0, 0.00005)
    w = grid_window(strip, 10)
    assert w.width > 32768
    before = len(fake.requests)
    out = provider().fetch(strip, SUMMER, SensorSpec(S2, ("B4",))).data
    widths = [r["grid"]["dimensions"]["width"] for r in fake.requests[before:]]
    assert max(widths) <= 32768
    assert sum(widths) == w.width
    np.testing.assert_array_equal(out, SyntheticProvider().fetch(strip, SUMMER, SensorSpec(S2, ("B4",))).data)


def test_fake_refuses_requests_over_the_limit(fake):
    import ee

    provider().ensure_ready()
    img = ee.ImageCollection(S2).median().select(["B4"]).toFloat()
    grid = pixel_grid(GridWindow(0, 0, 4000, 4000, 10.0))  # 80 MB
    with pytest.raises(ee.EEException, match="Total request size"):
        ee.data.computePixels({"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": grid})


# -- errors and retries ---------------------------------------------------------------------------
def test_retry_after_429_and_503(fake):
    fake.fail = [429, 503]
    res = provider(retry_backoff_s=0.001).fetch(PointBuffer(10.0, 45.0, 100), SUMMER, S2_3)
    assert len(fake.requests) == 3
    ref = SyntheticProvider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, SensorSpec(S2, ("B4", "B3", "B8"))).data
    np.testing.assert_array_equal(res.data, ref)


def test_429_without_retries_is_transient(fake):
    fake.fail = [429]
    with pytest.raises(TransientProviderError) as info:
        provider(max_retries=0).fetch(PointBuffer(10.0, 45.0, 100), SUMMER, S2_3)
    assert info.value.status == 429


def test_error_classification():
    import ee

    assert ee_session.as_provider_error(FakeEarthEngine.http_error(500, "Internal error"), "x").status == 500
    bad = ee_session.as_provider_error(FakeEarthEngine.http_error(400, "Image.select: no band"), "x")
    assert isinstance(bad, ProviderError)
    assert not isinstance(bad, TransientProviderError)
    assert isinstance(ee_session.as_provider_error(TimeoutError("read"), "x"), TransientProviderError)
    assert isinstance(ee_session.as_provider_error(ee.EEException("Computation timed out."), "x"), TransientProviderError)
    quota = ee_session.as_provider_error(ee.EEException("Quota exceeded for quota metric 'read requests'"), "x")
    assert isinstance(quota, TransientProviderError)
    assert quota.status == 429


def test_empty_collection_names_collection_window_and_filters(fake):
    fake.empty = lambda s: s["collection"] == S2
    with pytest.raises(ProviderError) as info:
        provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, S2_3)
    msg = str(info.value)
    assert not isinstance(info.value, TransientProviderError)
    for part in (S2, "2022-06-01..2022-09-01", "CLOUDY_PIXEL_PERCENTAGE <= 30", "lon 9.99", "lat 44.99"):
        assert part in msg


def test_fill_value_for_masked_pixels(fake):
    fake.masked = lambda w: np.indices(w.shape)[1] < 3  # three western columns masked
    res = provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, replace(S2_3, fill_value=-1.0))
    assert (res.data[:, :, :3] == -1.0).all()
    assert (res.data[:, :, 3:] > 0).all()
    assert fake.requests[0]["image"].fill == -1.0


# -- sensors -----------------------------------------------------------------------------------
def test_sentinel1_filters_and_relax_iw_on_empty(fake):
    s1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), orbit="DESCENDING")
    res = provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, s1)
    img = fake.requests[-1]["image"]
    assert img.coll.id == "COPERNICUS/S1_GRD_FLOAT"  # use_float_linear=True (rs-embed)
    assert img.coll.filters == [
        ("==", "orbitProperties_pass", "DESCENDING"),
        ("==", "instrumentMode", "IW"),
        ("contains", "transmitterReceiverPolarisation", "VV"),
        ("contains", "transmitterReceiverPolarisation", "VH"),
    ]
    assert (res.data > 0).all()
    assert res.meta["s1_iw_applied"]
    db = provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, replace(s1, use_float_linear=False))
    assert fake.requests[-1]["image"].coll.id == "COPERNICUS/S1_GRD"
    assert (db.data < 0).all()
    fake.empty = lambda s: ("==", "instrumentMode", "IW") in s["filters"]
    relaxed = provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, s1)
    assert ("==", "instrumentMode", "IW") not in fake.requests[-1]["image"].coll.filters
    assert relaxed.meta["s1_iw_relaxed_on_empty"]
    assert not relaxed.meta["s1_iw_applied"]
    with pytest.raises(ProviderError, match="IW 0"):
        provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, replace(s1, s1_relax_iw_on_empty=False))
    with pytest.raises(ProviderError, match="orbit"):
        provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, replace(s1, orbit="sideways"))


def test_landsat_aliases_and_cloud_cover(fake):
    provider().fetch(PointBuffer(10.0, 45.0, 300), SUMMER, SensorSpec("LANDSAT/LC08/C02/T1_L2", ("RED", "NIR"), scale_m=30))
    img = fake.requests[-1]["image"]
    assert img.bands == ["SR_B4", "SR_B5"]
    assert img.coll.filters == [("<=", "CLOUD_COVER", 30)]
    provider().fetch(PointBuffer(10.0, 45.0, 300), SUMMER, SensorSpec("LANDSAT/LT05/C02/T1_L2", ("RED", "NIR"), scale_m=30))
    assert fake.requests[-1]["image"].bands == ["SR_B3", "SR_B4"]


def test_s2_cloud_masks(fake):
    roi = PointBuffer(10.0, 45.0, 100)
    provider(cloud_mask="cs_plus", cloud_score_threshold=0.65).fetch(roi, SUMMER, S2_3)
    (mapped, masked) = fake.requests[-1]["image"].coll.maps
    assert "Image.linkCollection" in mapped["functions"]
    assert "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED" in mapped["constants"]
    assert ["cs_cdf"] in mapped["constants"]
    assert "Image.gte" in masked["functions"]
    assert 0.65 in masked["constants"]
    provider(cloud_mask="scl").fetch(roi, SUMMER, S2_3)
    (scl,) = fake.requests[-1]["image"].coll.maps
    assert "Image.remap" in scl["functions"]
    assert [3, 8, 9, 10] in scl["constants"]
    assert ["SCL"] in scl["constants"]
    with pytest.raises(ProviderError, match="SCL"):
        provider(cloud_mask="scl").fetch(roi, SUMMER, SensorSpec("COPERNICUS/S2_HARMONIZED", ("B4", "B8")))
    with pytest.raises(ProviderError, match="cloud_mask"):
        provider(cloud_mask="fmask")


def test_n_frames_empty_bin_is_backfilled(fake):
    fake.empty = lambda s: s["dates"] == ("2022-07-01", "2022-08-01")
    roi = PointBuffer(10.0, 45.0, 100)
    with pytest.warns(RSEmbedWarning, match="1 of 3"):
        res = provider().fetch(roi, SUMMER, S2_3, n_frames=3)
    assert res.data.shape == (3, 3, *grid_window(roi, 10).shape)
    assert [f["empty"] for f in res.meta["frames"]] == [False, True, False]
    whole = provider().fetch(roi, SUMMER, S2_3).data
    np.testing.assert_array_equal(res.data[1], whole)
    ref = SyntheticProvider()
    june = ref.render(grid_window(roi, 10), (date(2022, 6, 1), date(2022, 7, 1)), [3, 2, 7])
    np.testing.assert_array_equal(res.data[0], june)
    assert len(fake.value_requests) == 1  # all bins counted in one request
    fake.empty = lambda s: True
    with pytest.raises(ProviderError, match="No images"):
        provider().fetch(roi, SUMMER, S2_3, n_frames=3)


# -- initialisation and secrets ---------------------------------------------------------------------
def test_init_uses_project_from_env_once_per_process(fake):
    p = provider()
    p.ensure_ready()
    p.ensure_ready()
    provider().fetch(PointBuffer(10.0, 45.0, 100), SUMMER, S2_3)
    assert fake.inits == [{"credentials": "persistent", "project": "test-project", "url": None, "pid": os.getpid()}]


def test_init_without_stored_credentials_says_earthengine_authenticate(fake):
    fake.authenticated = False
    with pytest.raises(ProviderError, match="earthengine authenticate") as info:
        provider().ensure_ready()
    assert "credentials_file" in str(info.value)


def test_init_without_project_says_ee_project(fake, monkeypatch):
    monkeypatch.delenv("EE_PROJECT")
    with pytest.raises(ProviderError, match="EE_PROJECT"):
        provider().ensure_ready()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "other")
    provider().ensure_ready()
    assert fake.inits[-1]["project"] == "other"


def test_missing_key_file(fake, tmp_path):
    with pytest.raises(ProviderError, match="does not exist"):
        provider(credentials_file=str(tmp_path / "nope.json")).ensure_ready()


def _key_file(tmp_path) -> str:
    path = tmp_path / "sa-key.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
                                "private_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n"}))  # fmt: skip
    return str(path)


def test_service_account_key_path_never_its_contents(fake, tmp_path, monkeypatch):
    import cloudpickle

    monkeypatch.delenv("EE_PROJECT")  # a service account uses its own project
    key = _key_file(tmp_path)
    p = provider(credentials_file=key)
    res = p.fetch(PointBuffer(10.0, 45.0, 100), SUMMER, S2_3)
    assert fake.inits[-1]["credentials"] == "service_account"
    plugin = GEEProvider.worker_plugin(p.options)
    for blob in (repr(p), json.dumps(p.options), json.dumps(res.meta, default=str), repr(plugin),
                 pickle.dumps(p).decode("latin-1"), cloudpickle.dumps(plugin).decode("latin-1")):  # fmt: skip
        assert SECRET not in blob
        assert "PRIVATE KEY" not in blob
    assert key in repr(p)  # the path is what travels
    # GOOGLE_APPLICATION_CREDENTIALS naming a service-account key is used the same way
    ee_session.reset_session()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", key)
    provider().ensure_ready()
    assert fake.inits[-1]["credentials"] == "service_account"


@pytest.mark.parametrize("opt", ["key_data", "credentials", "token"])
def test_secret_options_are_refused(opt):
    with pytest.raises(ProviderError, match="credentials_file"):
        GEEProvider(**{opt: "x"})


def test_options_and_concurrency_limit():
    cls = get_provider_class("gee")
    assert cls is GEEProvider
    assert cls.concurrency_limit({}) == 40
    assert cls.concurrency_limit({"max_concurrency": 3}) == 3
    with pytest.raises(ProviderError, match="max_concurrency"):
        cls.concurrency_limit({"max_concurrency": 0})
    with pytest.raises(ProviderError, match="Unknown gee provider option"):
        GEEProvider(colection="x")
    with pytest.raises(ProviderError, match="max_request_bytes"):
        GEEProvider(max_request_bytes=MAX_BYTES + 1)


def test_process_cap_bounds_threads(fake):
    fake.latency_s = 0.05
    p = provider(max_concurrency=2)
    rois = [PointBuffer(10.0 + 0.01 * i, 45.0, 50) for i in range(6)]
    threads = [threading.Thread(target=p.fetch, args=(r, SUMMER, S2_3)) for r in rois]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.requests) == 6
    assert fake.max_active == 2


# -- on a cluster ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.cluster
def test_cap_holds_across_worker_processes(tmp_path, monkeypatch):
    """Two exports on two worker processes: never more than ``max_concurrency`` requests at once."""
    from rs_embed_dask import ExportTarget, export_batch

    monkeypatch.setenv("EE_PROJECT", "cluster-project")
    state = str(tmp_path / "state")
    rois = [PointBuffer(10.0 + 0.01 * i, 45.0, 80) for i in range(16)]
    with fake_ee_cluster(state, threads_per_worker=2, latency_s=0.3) as client:
        results: dict = {}

        def one(name, part):
            try:
                results[name] = export_batch(
                    spatials=part, temporal=SUMMER, models=["rcf"], backend="gee",
                    target=ExportTarget.combined(str(tmp_path / f"{name}.npz")), client=client,
                    provider_options={"max_concurrency": 3}, chunk_size=8, show_progress=False,
                )  # fmt: skip
            except BaseException as exc:
                results[name] = exc

        threads = [threading.Thread(target=one, args=(n, p)) for n, p in (("a", rois[:8]), ("b", rois[8:]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        pids = set(client.run(os.getpid).values())
    for name in ("a", "b"):
        if isinstance(results.get(name), BaseException):
            raise results[name]
        assert results[name]["status"] == "ok"
    st = FakeEarthEngine.shared_state(state)
    assert st["calls"] == 16
    assert st["active"] == 0
    assert 2 <= st["max"] <= 3
    req_pids = FakeEarthEngine.request_pids(state)
    assert req_pids <= pids
    assert os.getpid() not in req_pids
