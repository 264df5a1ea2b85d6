"""One contract for every offline provider, plus the synthetic world's own properties.

Providers join the contract with a module under ``tests/provider_cases/``
(see that package's docstring).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import numpy as np
import pytest
from provider_cases import collect

from rs_embed_dask import BBox, PointBuffer, TemporalSpec, list_providers
from rs_embed_dask.core.errors import ProviderError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.providers.base import FetchResult, split_date_range
from rs_embed_dask.providers.synthetic import CLASSES, SyntheticProvider
from rs_embed_dask.resolve import get_provider, reset_runtime

PROVIDER_CONTRACT_CASES = collect()
S2 = "COPERNICUS/S2_SR_HARMONIZED"
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
CONTRACT_ROIS = [
    PointBuffer(121.5, 31.2, 320),  # 64 x 64 at 10 m
    BBox(121.49, 31.19, 121.505, 31.2),  # rectangular, edges off the lattice
]


@pytest.fixture(autouse=True)
def _fresh_runtime():
    yield
    reset_runtime()


@pytest.fixture(params=sorted(PROVIDER_CONTRACT_CASES))
def provider_case(request):
    """``(name, provider, sensor)`` for a provider under the contract."""
    name = request.param
    options, sensor = PROVIDER_CONTRACT_CASES[name](request, CONTRACT_ROIS)
    assert len(sensor.bands) >= 2, "the contract needs a sensor with at least two bands"
    return name, get_provider(name, options), sensor


def test_contract_cases_are_registered_providers():
    assert set(PROVIDER_CONTRACT_CASES) <= set(list_providers())


class TestProviderContract:
    """What :meth:`rs_embed_dask.providers.base.Provider.fetch` promises."""

    @pytest.mark.parametrize("roi", CONTRACT_ROIS, ids=["pointbuffer", "bbox"])
    @pytest.mark.parametrize("scale_factor", [1, 2])
    def test_fetch_on_the_common_grid(self, provider_case, roi, scale_factor):
        name, provider, sensor = provider_case
        sensor = replace(sensor, scale_m=sensor.scale_m * scale_factor)
        res = provider.fetch(roi, SUMMER, sensor)
        assert isinstance(res, FetchResult)
        window = grid_window(roi, sensor.scale_m)
        assert res.data.dtype == np.float32
        assert res.data.shape == (len(sensor.bands), *window.shape)
        assert np.isfinite(res.data).all()
        assert res.meta["grid"] == window.to_dict()
        assert res.meta["provider"] == name
        assert res.meta["bands"] == list(sensor.bands)

    def test_n_frames(self, provider_case):
        _, provider, sensor = provider_case
        roi = CONTRACT_ROIS[0]
        res = provider.fetch(roi, SUMMER, sensor, n_frames=3)
        window = grid_window(roi, sensor.scale_m)
        assert res.data.dtype == np.float32
        assert res.data.shape == (3, len(sensor.bands), *window.shape)
        assert res.meta["grid"] == window.to_dict()
        assert [f["start"] for f in res.meta["frames"]] == ["2022-06-01", "2022-07-01", "2022-08-01"]
        assert res.meta["frames"][-1]["end"] == "2022-09-01"

    def test_n_frames_needs_time(self, provider_case):
        _, provider, sensor = provider_case
        with pytest.raises(ProviderError):
            provider.fetch(CONTRACT_ROIS[0], None, sensor, n_frames=2)

    def test_unknown_band(self, provider_case):
        _, provider, sensor = provider_case
        with pytest.raises(ProviderError):
            provider.fetch(CONTRACT_ROIS[0], SUMMER, replace(sensor, bands=(*sensor.bands[:1], "NOT_A_BAND")))

    def test_band_order_is_respected(self, provider_case):
        _, provider, sensor = provider_case
        fwd = provider.fetch(CONTRACT_ROIS[0], SUMMER, sensor).data
        rev = provider.fetch(
            CONTRACT_ROIS[0], SUMMER, replace(sensor, bands=tuple(reversed(sensor.bands)))
        ).data
        np.testing.assert_array_equal(fwd, rev[::-1])


def test_split_date_range():
    from datetime import date

    bins = split_date_range(date(2022, 1, 1), date(2022, 1, 11), 3)
    assert bins == [
        (date(2022, 1, 1), date(2022, 1, 4)),
        (date(2022, 1, 4), date(2022, 1, 7)),
        (date(2022, 1, 7), date(2022, 1, 11)),
    ]


def test_fetch_frames_hook():
    """A provider compositing its bins itself: ``fetch`` checks and fills the pixels and dates the frames."""

    class OneSearch(SyntheticProvider):
        def fetch_frames(self, window, bins, sensor):
            shape = (4, *window.shape)  # whatever bands were asked for
            arrays = [np.full(shape, np.nan if i == 1 else float(i)) for i in range(len(bins))]
            return arrays, {"searches": 1, "frames": [{"empty": i == 1} for i in range(len(bins))]}

    sensor = replace(S2_4, fill_value=-9.0)
    res = OneSearch().fetch(ROI, SUMMER, sensor, n_frames=3)
    assert res.data.dtype == np.float32
    assert res.data.shape == (3, 4, *grid_window(ROI, sensor.scale_m).shape)
    np.testing.assert_array_equal(res.data[:, 0, 0, 0], [0.0, -9.0, 2.0])  # bin 1 all NaN -> fill_value
    assert (res.data == res.data[:, :1, :1, :1]).all()
    assert res.meta["searches"] == 1
    assert res.meta["provider"] == "synthetic"
    assert res.meta["frames"] == [
        {"start": "2022-06-01", "end": "2022-07-01", "empty": False},
        {"start": "2022-07-01", "end": "2022-08-01", "empty": True},
        {"start": "2022-08-01", "end": "2022-09-01", "empty": False},
    ]
    with pytest.raises(ProviderError, match="provider returned shape"):
        OneSearch().fetch(ROI, SUMMER, replace(sensor, bands=("B2",)), n_frames=3)


# -- the synthetic world ----------------------------------------------------------------------------
S2_4 = SensorSpec(S2, ("B2", "B3", "B4", "B8"))
ROI = PointBuffer(121.5, 31.2, 640)


def _sha1(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def _window_roi(w: GridWindow) -> BBox:
    """A BBox whose edges are the window's lattice lines (so it maps back to ``w``)."""
    bb = BBox(*w.lonlat_bounds())
    assert grid_window(bb, w.scale_m) == w
    return bb


class TestSynthetic:
    def test_deterministic_in_process(self):
        a = SyntheticProvider().fetch(ROI, SUMMER, S2_4).data
        b = SyntheticProvider().fetch(ROI, SUMMER, S2_4).data
        assert _sha1(a) == _sha1(b)
        assert _sha1(a) != _sha1(SyntheticProvider(seed=1).fetch(ROI, SUMMER, S2_4).data)

    def test_deterministic_across_processes(self, run_python):
        code = (
            "import hashlib, numpy as np\n"
            "from rs_embed_dask import PointBuffer, TemporalSpec, SensorSpec\n"
            "from rs_embed_dask.providers.synthetic import SyntheticProvider\n"
            "d = SyntheticProvider().fetch(PointBuffer(121.5, 31.2, 640), "
            "TemporalSpec.range('2022-06-01', '2022-09-01'), "
            "SensorSpec('COPERNICUS/S2_SR_HARMONIZED', ('B2', 'B3', 'B4', 'B8'))).data\n"
            "print(hashlib.sha1(np.ascontiguousarray(d).tobytes()).hexdigest())\n"
        )
        assert run_python(code) == _sha1(SyntheticProvider().fetch(ROI, SUMMER, S2_4).data)

    @pytest.mark.parametrize(
        ("lon", "lat"),
        [(121.5, 31.2), (10.0, 5.0), (-60.0, -12.0), (30.0, 0.004), (20.0, 70.0)],
        ids=["mid-north", "tropics", "south", "equator", "snowline"],
    )
    def test_continuity_sub_window(self, lon, lat):
        p = SyntheticProvider(cloud_fraction=0.4)
        big = grid_window(PointBuffer(lon, lat, 800), 10)  # 160 x 160
        sub = GridWindow(big.col_off + 37, big.row_off + 51, 70, 64, 10.0)
        t = TemporalSpec.range("2022-07-01", "2022-07-06")  # one scene: clouds included
        whole = p.fetch(_window_roi(big), t, S2_4).data
        part = p.fetch(_window_roi(sub), t, S2_4).data
        np.testing.assert_array_equal(part, whole[:, 51:115, 37:107])

    def test_continuity_adjacent_bboxes(self):
        p = SyntheticProvider()
        w = grid_window(PointBuffer(8.0, 12.0, 500), 10)
        west = GridWindow(w.col_off, w.row_off, 40, w.height, 10.0)
        east = GridWindow(w.col_off + 40, w.row_off, w.width - 40, w.height, 10.0)
        a = p.fetch(_window_roi(west), SUMMER, S2_4).data
        b = p.fetch(_window_roi(east), SUMMER, S2_4).data
        whole = p.fetch(_window_roi(w), SUMMER, S2_4).data
        np.testing.assert_array_equal(np.concatenate([a, b], axis=2), whole)

    def test_dn_range(self):
        p = SyntheticProvider(cloud_fraction=0.5)
        bands = SensorSpec(
            S2, ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"), scale_m=100
        )
        for lon, lat in [(121.5, 31.2), (20.0, 72.0), (-60.0, -35.0)]:
            d = p.fetch(
                PointBuffer(lon, lat, 20_000), TemporalSpec.range("2022-01-01", "2022-01-05"), bands
            ).data
            assert d.min() >= 0.0
            assert d.max() <= 10000.0
            assert d.std() > 0

    def test_per_class_spectra(self):
        p = SyntheticProvider()
        roi = PointBuffer(10.0, 45.0, 20_000)
        sensor = SensorSpec(S2, ("B4", "B8"), scale_m=100)
        w = grid_window(roi, 100)
        lc = p.land_cover(w)
        d = p.fetch(roi, SUMMER, sensor).data
        water = lc == CLASSES.index("water")
        veg = np.isin(lc, [CLASSES.index(c) for c in ("cropland", "grassland", "forest")])
        assert water.sum() > 100
        assert veg.sum() > 100
        red, nir = d[0], d[1]
        assert nir[water].mean() < 0.3 * nir[veg].mean()  # water is dark in NIR
        ndvi = (nir - red) / (nir + red)
        assert ndvi[veg].mean() > 0.4 > ndvi[water].mean()
        assert len(np.unique(lc)) >= 4  # a varied landscape

    @pytest.mark.parametrize(
        ("lat", "summer_greener"), [(45.0, True), (-35.0, False)], ids=["north", "south"]
    )
    def test_seasons(self, lat, summer_greener):
        p = SyntheticProvider()
        roi = PointBuffer(10.0, lat, 5000)
        sensor = SensorSpec(S2, ("B4", "B8"), scale_m=50)
        lc = p.land_cover(grid_window(roi, 50))
        veg = np.isin(lc, [1, 2, 3])
        assert veg.any()
        assert (~veg).any()
        jan = p.fetch(roi, TemporalSpec.range("2022-01-01", "2022-02-01"), sensor).data
        jul = p.fetch(roi, TemporalSpec.range("2022-07-01", "2022-08-01"), sensor).data
        nir_gain = jul[1] - jan[1]
        if summer_greener:
            assert (nir_gain[veg] > 0).all()
        else:
            assert (nir_gain[veg] < 0).all()
        np.testing.assert_array_equal(jul[:, ~veg], jan[:, ~veg])  # only vegetation follows the season

    def test_failure_rate(self):
        p = SyntheticProvider(failure_rate=1.0)
        with pytest.raises(ProviderError) as info:
            p.fetch(ROI, SUMMER, S2_4)
        assert not isinstance(info.value, TransientProviderError)
        # deterministic per window: a zero rate never fails
        SyntheticProvider(failure_rate=0.0).fetch(ROI, SUMMER, S2_4)

    def test_failure_rate_fraction(self):
        p = SyntheticProvider(failure_rate=0.5)
        sensor = replace(S2_4, scale_m=100)
        outcomes = []
        for i in range(40):
            try:
                p.fetch(PointBuffer(0.1 * i, 10.0, 200), None, sensor)
                outcomes.append(True)
            except ProviderError:
                outcomes.append(False)
        assert 5 < sum(outcomes) < 35
        again = []
        for i in range(40):
            try:
                p.fetch(PointBuffer(0.1 * i, 10.0, 200), None, sensor)
                again.append(True)
            except ProviderError:
                again.append(False)
        assert again == outcomes  # the same ROIs fail every time

    def test_transient_failure_rate(self):
        with pytest.raises(TransientProviderError) as info:
            SyntheticProvider(transient_failure_rate=1.0).fetch(ROI, SUMMER, S2_4)
        assert info.value.status == 429

    def test_latency(self):
        p = SyntheticProvider(latency_s=0.2)
        t0 = time.perf_counter()
        p.fetch(PointBuffer(121.5, 31.2, 50), SUMMER, S2_4)
        assert time.perf_counter() - t0 >= 0.2

    def test_clouds_brighten_visible_bands(self):
        t = TemporalSpec.range("2022-07-01", "2022-07-04")  # a single scene
        roi = PointBuffer(121.5, 31.2, 3000)
        sensor = replace(S2_4, scale_m=30)
        clear = SyntheticProvider().fetch(roi, t, sensor).data
        cloudy = SyntheticProvider(cloud_fraction=0.5).fetch(roi, t, sensor).data
        overcast = SyntheticProvider(cloud_fraction=1.0).fetch(roi, t, sensor).data
        changed = (cloudy != clear).any(axis=0)
        assert 0.05 < changed.mean() < 0.95
        vis = slice(0, 3)  # B2, B3, B4
        assert (cloudy[vis][:, changed] > clear[vis][:, changed]).all()
        assert (overcast[vis] > clear[vis]).all()
        # composites over long windows see fewer clouds
        long = SyntheticProvider(cloud_fraction=0.5).fetch(roi, SUMMER, sensor).data
        assert (long != SyntheticProvider().fetch(roi, SUMMER, sensor).data).any(
            axis=0
        ).mean() < changed.mean()

    @pytest.mark.parametrize(
        "kwargs",
        [{"failure_rate": 1.5}, {"transient_failure_rate": -0.1}, {"cloud_fraction": 2}, {"latency_s": -1}],
    )
    def test_bad_options(self, kwargs):
        with pytest.raises(ProviderError):
            SyntheticProvider(**kwargs)

    def test_band_aliases(self):
        p = SyntheticProvider()
        a = p.fetch(ROI, SUMMER, SensorSpec(S2, ("RED", "NIR"))).data
        b = p.fetch(ROI, SUMMER, SensorSpec(S2, ("B4", "B8"))).data
        np.testing.assert_array_equal(a, b)
