"""The ``stac`` provider against real catalogues built in ``tmp_path``.

A static catalogue of small COGs (``tests/stac_catalog.py``) is searched with
pystac-client and loaded with odc-stac for real.  The STAC API path runs
against a small STAC API served on the loopback interface from the same
items (only the HTTP boundary is stood in for; pystac-client, odc-stac and the
provider run unchanged).
"""

from __future__ import annotations

import json
import pickle
import threading
import warnings
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pystac_client")
pytest.importorskip("odc.stac")

from stac_catalog import Scene, build_catalog, expected_pixels

from rs_embed_dask.core.errors import ProviderError, TransientProviderError
from rs_embed_dask.core.specs import BBox, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.providers.stac import CATALOGS, StacProvider, asset_key, stac_collection
from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider

BANDS = ("B2", "B3", "B4", "B8")
ROI = PointBuffer(121.5, 45.0, 320)  # 64 x 64 at 10 m
WIN = grid_window(ROI, 10)
BIG = GridWindow(WIN.col_off - 12, WIN.row_off - 12, WIN.width + 24, WIN.height + 24, 10.0)
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = SensorSpec("stac:sentinel-2-l2a", BANDS, fill_value=-1.0)
# three clear scenes (one a month, told apart by an offset) and one cloudy scene
SCENES = [
    Scene("jun", "2022-06-10", BIG, cloud_cover=3.0),
    Scene("jul", "2022-07-12", BIG, cloud_cover=10.0, offset=400),
    Scene("jul-cloudy", "2022-07-20", BIG, cloud_cover=85.0, offset=3000),
    Scene("aug", "2022-08-15", BIG, cloud_cover=20.0, offset=100, nodata_cols=20),
]


def expect(names: list[str], window: GridWindow = WIN, bands: tuple[str, ...] = BANDS) -> list[np.ndarray]:
    by_id = {s.id: s for s in SCENES}
    return [expected_pixels(by_id[n], window, bands) for n in names]


def nanmedian(arrays: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        return np.nanmedian(np.stack(arrays), axis=0)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> str:
    return build_catalog(tmp_path_factory.mktemp("stac_es"), SCENES)


@pytest.fixture(scope="module")
def provider(catalog) -> StacProvider:
    return StacProvider(catalog_url=catalog)


# -- the static catalogue itself ---------------------------------------------------------------
def test_static_catalogue_opens_with_pystac_client_and_has_no_search(catalog):
    from pystac_client import Client, ConformanceClasses

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = Client.open(catalog)
        assert not client.conforms_to(ConformanceClasses.ITEM_SEARCH)
        items = list(client.get_collection("sentinel-2-l2a").get_items())
    assert sorted(it.id for it in items) == sorted(s.id for s in SCENES)
    item = next(it for it in items if it.id == "jun")
    assert item.properties["eo:cloud_cover"] == 3.0
    assert item.properties["proj:code"] == "EPSG:3857"
    assert item.assets["blue"].extra_fields["eo:bands"][0]["name"] == "B02"
    assert not item.assets["blue"].href.startswith("/")  # self-contained: relative asset hrefs
    assert item.assets["blue"].get_absolute_href().endswith(".tif")


# -- search, load, composite --------------------------------------------------------------------
def test_median_of_clear_scenes_equals_the_source_pixels(provider):
    res = provider.fetch(ROI, SUMMER, S2)
    assert res.data.dtype == np.float32
    assert res.data.shape == (4, 64, 64)
    assert res.meta["grid"] == WIN.to_dict()
    assert res.meta["stac_items"] == ["jun", "jul", "aug"]  # the cloudy one is filtered, oldest first
    assert res.meta["stac_filters"]["eo:cloud_cover_lte"] == 30
    want = nanmedian(expect(["jun", "jul", "aug"]))
    np.testing.assert_array_equal(res.data, want)
    # where aug has no data, the median is of the two other scenes
    np.testing.assert_array_equal(
        res.data[:, :, 0], (expect(["jun"])[0][:, :, 0] + expect(["jul"])[0][:, :, 0]) / 2
    )


def test_cloud_filter_is_inclusive_and_follows_cloudy_pct(provider):
    res = provider.fetch(ROI, SUMMER, replace(S2, cloudy_pct=85))
    assert res.meta["stac_items"] == ["jun", "jul", "jul-cloudy", "aug"]
    np.testing.assert_array_equal(res.data, nanmedian(expect(["jun", "jul", "jul-cloudy", "aug"])))
    res = provider.fetch(ROI, SUMMER, replace(S2, cloudy_pct=10))
    assert res.meta["stac_items"] == ["jun", "jul"]
    off = StacProvider(catalog_url=provider.catalog_url, cloud_filter=False).fetch(
        ROI, SUMMER, replace(S2, cloudy_pct=0)
    )
    assert off.meta["stac_items"] == ["jun", "jul", "jul-cloudy", "aug"]


def test_mosaic_puts_the_latest_valid_pixel_on_top(provider):
    res = provider.fetch(ROI, SUMMER, replace(S2, composite="mosaic"))
    jul, aug = expect(["jul", "aug"])
    want = np.where(np.isnan(aug), jul, aug)  # aug's no-data columns show july
    np.testing.assert_array_equal(res.data, want)
    assert np.isnan(aug[:, :, 0]).all()
    assert not np.isnan(want).any()


def test_single_scene_window_and_nodata_become_fill_value(provider):
    aug = TemporalSpec.range("2022-08-01", "2022-09-01")
    res = provider.fetch(ROI, aug, S2)
    assert res.meta["stac_items"] == ["aug"]
    want = expect(["aug"])[0]
    nodata = np.isnan(want)
    assert nodata[:, :, :8].all()
    assert not nodata[:, :, 9:].any()
    np.testing.assert_array_equal(res.data[nodata], -1.0)
    np.testing.assert_array_equal(res.data[~nodata], want[~nodata])
    # a ROI reaching past the scenes' edge: fill value outside
    edge = PointBuffer(*_lonlat_of(BIG, col=BIG.width - 4, row=BIG.height // 2), 200)
    out = provider.fetch(edge, aug, S2)
    assert (out.data == -1.0).any()
    assert (out.data > 0).any()


def _lonlat_of(window: GridWindow, *, col: int, row: int) -> tuple[float, float]:
    from rs_embed_dask.geometry import mercator_to_lonlat

    s = window.scale_m
    return mercator_to_lonlat((window.col_off + col + 0.5) * s, -(window.row_off + row + 0.5) * s)


def test_multi_frame_composites_each_bin(provider):
    res = provider.fetch(ROI, SUMMER, S2, n_frames=3)
    assert res.data.shape == (3, 4, 64, 64)
    assert res.meta["grid"] == WIN.to_dict()
    assert [f["start"] for f in res.meta["frames"]] == ["2022-06-01", "2022-07-01", "2022-08-01"]
    assert res.meta["n_empty"] == 0
    jun, jul, aug = expect(["jun", "jul", "aug"])
    np.testing.assert_array_equal(res.data[0], jun)
    np.testing.assert_array_equal(res.data[1], jul)
    np.testing.assert_array_equal(res.data[2], np.where(np.isnan(aug), -1.0, aug))


def test_multi_frame_empty_bin_gets_the_whole_range_composite(provider):
    t = TemporalSpec.range("2022-06-01", "2022-07-31")  # bins: Jun 1-30, Jun 30-Jul 31
    res = provider.fetch(ROI, t, S2, n_frames=4)
    flags = [f["empty"] for f in res.meta["frames"]]
    assert flags == [False, True, False, True]
    whole = nanmedian(expect(["jun", "jul"]))
    np.testing.assert_array_equal(res.data[1], whole)
    np.testing.assert_array_equal(res.data[3], whole)
    np.testing.assert_array_equal(res.data[0], expect(["jun"])[0])


def test_coarser_scale_is_on_the_coarser_grid(provider):
    res = provider.fetch(ROI, SUMMER, replace(S2, scale_m=20))
    w20 = grid_window(ROI, 20)
    assert res.data.shape == (4, *w20.shape)
    assert res.meta["grid"] == w20.to_dict()
    assert np.isfinite(res.data).all()
    # nearest resampling picks source pixels: every value is one of the median's
    ref = provider.fetch(ROI, SUMMER, S2).data
    assert np.isin(res.data[0], ref[0]).mean() > 0.9


# -- band names -----------------------------------------------------------------------------------
@pytest.mark.parametrize("names", [("B2", "B8"), ("blue", "nir"), ("BLUE", "NIR"), ("B02", "B08")])
def test_band_names_map_to_earth_search_assets(provider, names):
    res = provider.fetch(ROI, SUMMER, replace(S2, bands=names))
    want = nanmedian(expect(["jun", "jul", "aug"], bands=("B2", "B8")))
    np.testing.assert_array_equal(res.data, want)


def test_planetary_computer_layout(tmp_path):
    scenes = [Scene("s", "2022-06-10", BIG)]
    cat = build_catalog(tmp_path, scenes, layout="planetary-computer", bands=("B2", "B8A", "B11"))
    prov = StacProvider(catalog_url=cat)
    for names in [("B2", "B8A", "B11"), ("blue", "nir08", "swir16"), ("B02", "B8A", "B11")]:
        res = prov.fetch(ROI, SUMMER, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", names))
        np.testing.assert_array_equal(res.data, expected_pixels(scenes[0], WIN, ("B2", "B8A", "B11")))
        assert res.meta["stac_collection"] == "sentinel-2-l2a"


def test_unknown_band_lists_the_assets(provider):
    with pytest.raises(ProviderError, match=r"NOT_A_BAND.*assets: \['blue', 'green', 'nir', 'red'\]"):
        provider.fetch(ROI, SUMMER, replace(S2, bands=("B2", "NOT_A_BAND")))


def test_asset_key_matching():
    assets = {"blue": {"eo:bands": [{"name": "B02", "common_name": "blue"}]}, "nir08": {}, "scl": {}}
    assert asset_key("B2", assets) == "blue"
    assert asset_key("b02", assets) == "blue"
    assert asset_key("B8A", assets) == "nir08"
    assert asset_key("NIR_NARROW", assets) == "nir08"
    assert asset_key("SCL", assets) == "scl"
    assert asset_key("B12", assets) is None


# -- Sentinel-1 -----------------------------------------------------------------------------------
def test_sentinel1_rtc_without_cloud_cover_and_in_db(tmp_path):
    scenes = [Scene("s1a", "2022-06-10", BIG), Scene("s1b", "2022-06-22", BIG, offset=50)]
    cat = build_catalog(tmp_path, scenes, collection="sentinel-1-rtc", layout="s1")
    prov = StacProvider(catalog_url=cat)
    s1 = SensorSpec("COPERNICUS/S1_GRD_FLOAT", ("VV", "VH"), fill_value=-99.0, composite="mosaic")
    lin = prov.fetch(ROI, SUMMER, s1)
    assert lin.meta["stac_collection"] == "sentinel-1-rtc"
    assert lin.meta["stac_filters"]["eo:cloud_cover_lte"] is None
    want = expected_pixels(scenes[1], WIN, ("B8", "B4"))
    np.testing.assert_array_equal(lin.data, want)
    db = prov.fetch(ROI, SUMMER, replace(s1, use_float_linear=False))
    np.testing.assert_allclose(db.data, 10 * np.log10(want), rtol=1e-6)


def test_collection_mapping():
    es, pc = CATALOGS["earth-search"], CATALOGS["planetary-computer"]
    s2 = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS)
    assert stac_collection(s2, es) == "sentinel-2-l2a"
    assert stac_collection(SensorSpec("COPERNICUS/S2_HARMONIZED", BANDS), es) == "sentinel-2-l1c"
    assert stac_collection(SensorSpec("LANDSAT/LC09/C02/T1_L2", ("SR_B4",)), pc) == "landsat-c2-l2"
    s1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"))
    assert stac_collection(s1, pc) == "sentinel-1-rtc"
    with pytest.raises(ProviderError, match="planetary-computer"):
        stac_collection(s1, es)
    assert stac_collection(SensorSpec("stac:my-coll", BANDS), es) == "my-coll"
    assert stac_collection(s2, es, collection="explicit") == "explicit"
    with pytest.raises(ProviderError, match="stac:<collection id>"):
        stac_collection(SensorSpec("USGS/SRTMGL1_003", ("elevation",)), es)


# -- errors, options, signing ---------------------------------------------------------------------
def test_empty_search_names_catalogue_collection_window_and_filters(provider, catalog):
    winter = TemporalSpec.range("2021-01-01", "2021-02-01")
    with pytest.raises(ProviderError) as info:
        provider.fetch(ROI, winter, S2)
    msg = str(info.value)
    for part in (catalog, "'sentinel-2-l2a'", "[64, 64]", "2021-01-01", "2021-02-01", "eo:cloud_cover <= 30"):
        assert part in msg
    far = BBox(10.0, 10.0, 10.01, 10.01)
    with pytest.raises(ProviderError, match="no items found"):
        provider.fetch(far, SUMMER, S2)
    with pytest.raises(ProviderError, match=r"no collection 'nope'.*sentinel-2-l2a"):
        provider.fetch(ROI, SUMMER, replace(S2, collection="stac:nope"))


def test_options_are_checked():
    with pytest.raises(ProviderError, match="sign"):
        StacProvider(sign="yes")
    with pytest.raises(ProviderError, match="max_items"):
        StacProvider(max_items=0)
    with pytest.raises(ProviderError, match="catalog_url"):
        StacProvider(catalog_url="")
    assert StacProvider().catalog_url == CATALOGS["earth-search"]
    assert StacProvider(catalog_url="planetary-computer").catalog_url == CATALOGS["planetary-computer"]


def test_planetary_computer_signing_modifier():
    planetary_computer = pytest.importorskip("planetary_computer")
    assert StacProvider(catalog_url="planetary-computer")._modifier() is planetary_computer.sign_inplace
    assert StacProvider(catalog_url="planetary-computer", sign="none")._modifier() is None
    assert StacProvider(catalog_url="earth-search")._modifier() is None
    assert StacProvider(catalog_url="earth-search", sign="planetary-computer")._modifier() is not None


def test_provider_pickles_without_its_client(provider):
    provider.fetch(ROI, SUMMER, S2)
    assert provider._client is not None
    clone = pickle.loads(pickle.dumps(provider))
    assert clone._client is None
    np.testing.assert_array_equal(clone.fetch(ROI, SUMMER, S2).data, provider.fetch(ROI, SUMMER, S2).data)


def test_utm_scene_is_reprojected_onto_the_grid(tmp_path):
    scene = Scene("utm", "2022-06-10", BIG, crs="EPSG:32651")
    prov = StacProvider(catalog_url=build_catalog(tmp_path, [scene]))
    res = prov.fetch(ROI, SUMMER, S2)
    assert res.meta["grid"] == WIN.to_dict()
    assert np.isfinite(res.data).all()
    assert (res.data != -1.0).all()
    world = SyntheticProvider().render(WIN, None, [S2_BANDS.index(b) for b in BANDS])
    # two nearest-neighbour warps (3857 -> UTM when written, back when read) move pixels by at most one
    assert np.median(np.abs(res.data - np.round(world)) / world) < 0.05
    assert np.corrcoef(res.data[3].ravel(), world[3].ravel())[0, 1] > 0.6


# -- a STAC API on the loopback interface ----------------------------------------------------------
class _Api:
    """A minimal STAC API (landing page + POST /search) over a static catalogue's items."""

    def __init__(self, catalog: str) -> None:
        import pystac

        cat = pystac.Catalog.from_file(catalog)
        self.items = []
        for item in cat.get_items(recursive=True):
            item.make_asset_hrefs_absolute()
            self.items.append(item)
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._send(200, api.landing())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(body)
                if api.fail_status is not None:
                    self._send(api.fail_status, {"code": "Error", "description": "try later"})
                    return
                self._send(200, {"type": "FeatureCollection", "features": api.search(body), "links": []})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def landing(self) -> dict[str, Any]:
        base = "https://api.stacspec.org/v1.0.0"
        return {
            "type": "Catalog", "id": "loopback", "description": "test API", "stac_version": "1.0.0",
            "conformsTo": [f"{base}/core", f"{base}/item-search", f"{base}/item-search#query"],
            "links": [
                {"rel": "self", "href": self.url}, {"rel": "root", "href": self.url},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }  # fmt: skip

    def search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        from datetime import datetime

        t0, t1 = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in body["datetime"].split("/"))
        x0, y0, x1, y1 = body["bbox"]
        lte = body.get("query", {}).get("eo:cloud_cover", {}).get("lte", 100)
        return [
            it.to_dict()
            for it in self.items
            if it.collection_id in body["collections"]
            and t0 <= it.datetime <= t1
            and it.bbox[0] <= x1 and it.bbox[2] >= x0 and it.bbox[1] <= y1 and it.bbox[3] >= y0
            and it.properties["eo:cloud_cover"] <= lte
        ]  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(catalog):
    srv = _Api(catalog)
    yield srv
    srv.close()


def test_stac_api_search_request_and_load(api, provider):
    prov = StacProvider(catalog_url=api.url)
    res = prov.fetch(ROI, SUMMER, S2)
    (req,) = api.requests
    assert req["collections"] == ["sentinel-2-l2a"]
    assert req["datetime"] == "2022-06-01T00:00:00Z/2022-08-31T23:59:59.999999Z"
    assert req["query"] == {"eo:cloud_cover": {"lte": 30}}
    np.testing.assert_allclose(req["bbox"], WIN.lonlat_bounds())
    assert res.meta["stac_items"] == ["jun", "jul", "aug"]
    np.testing.assert_array_equal(res.data, provider.fetch(ROI, SUMMER, S2).data)


@pytest.mark.parametrize("status", [429, 503])
def test_stac_api_overload_is_transient(api, status):
    api.fail_status = status
    with pytest.raises(TransientProviderError) as info:
        StacProvider(catalog_url=api.url).fetch(ROI, SUMMER, S2)
    assert info.value.status == status


def test_stac_api_client_error_is_not_transient(api):
    api.fail_status = 400
    with pytest.raises(ProviderError) as info:
        StacProvider(catalog_url=api.url).fetch(ROI, SUMMER, S2)
    assert not isinstance(info.value, TransientProviderError)


def test_unreachable_catalogue_is_a_provider_error(tmp_path):
    with pytest.raises(ProviderError, match="cannot open catalogue"):
        StacProvider(catalog_url=str(tmp_path / "missing" / "catalog.json")).fetch(ROI, SUMMER, S2)
