"""The ``local`` provider: user rasters reprojected onto the common grid.

All data are written into ``tmp_path``: synthetic-provider patches saved as
GeoTIFF / zarr / NetCDF, read back through :class:`LocalProvider`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from affine import Affine  # noqa: E402

from rs_embed_dask.core.errors import ProviderError  # noqa: E402
from rs_embed_dask.core.specs import PointBuffer, SensorSpec, TemporalSpec  # noqa: E402
from rs_embed_dask.geometry import grid_window  # noqa: E402
from rs_embed_dask.providers.local import LocalProvider, date_from_name  # noqa: E402
from rs_embed_dask.providers.synthetic import SyntheticProvider  # noqa: E402

BANDS = ("B2", "B3", "B4", "B8")
# The synthetic world is a pure function of the pixel centre (and dates), so a
# sub-window of a big patch equals the patch of the smaller ROI exactly.
ROI = PointBuffer(121.5, 45.0, 320)
BIG = PointBuffer(121.5, 45.0, 1200)
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture
def sensor() -> SensorSpec:
    return SensorSpec(collection="unused", bands=BANDS, fill_value=-1.0)


@pytest.fixture(scope="module")
def big_patch() -> tuple[np.ndarray, object]:
    """The synthetic patch of BIG and its grid window."""
    s = SensorSpec(collection="synthetic", bands=BANDS)
    return SyntheticProvider().fetch(BIG, None, s).data, grid_window(BIG, 10)


def write_tif(path, data, transform, crs="EPSG:3857", bands=BANDS, nodata=None, dtype=None):
    data = np.asarray(data)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype=dtype or data.dtype, crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data.astype(dtype or data.dtype))
        if bands is not None:
            dst.descriptions = tuple(bands)
    return str(path)


def synthetic(spatial, sensor, temporal=None):
    return SyntheticProvider().fetch(spatial, temporal, sensor).data


def utm_transform(spatial, crs, res, margin_m):
    """Transform and shape of a north-up ``crs`` raster covering ``spatial`` plus a margin."""
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds("EPSG:3857", crs, *grid_window(spatial, 10).bounds)
    x0, y0, x1, y1 = x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m
    w, h = int(np.ceil((x1 - x0) / res)), int(np.ceil((y1 - y0) / res))
    return Affine(res, 0, x0, 0, -res, y1), (h, w)


# -- exactness on the common grid --------------------------------------------------------
def test_same_grid_geotiff_roundtrip_is_exact(tmp_path, sensor):
    win = grid_window(ROI, 10)
    ref = synthetic(ROI, sensor)
    path = write_tif(tmp_path / "roi.tif", ref, win.transform)
    res = LocalProvider(path=path).fetch(ROI, None, sensor)
    assert res.data.dtype == np.float32
    np.testing.assert_array_equal(res.data, ref)
    assert res.meta["grid"]["transform"] == list(win.transform_tuple)
    assert res.meta["provider"] == "local"
    assert res.meta["local_files"] == [path]


def test_bigger_geotiff_gives_the_synthetic_pixels_of_a_smaller_roi(tmp_path, sensor, big_patch):
    data, win = big_patch
    path = write_tif(tmp_path / "big.tif", data, win.transform)
    prov = LocalProvider(path=path)
    for roi in (ROI, PointBuffer(121.505, 45.003, 250)):
        np.testing.assert_array_equal(prov.fetch(roi, None, sensor).data, synthetic(roi, sensor))


# -- reprojection ---------------------------------------------------------------------------
def test_utm_raster_is_reprojected_onto_the_grid(tmp_path, sensor):
    crs = "EPSG:32651"
    tr, (h, w) = utm_transform(ROI, crs, 7.0, 100.0)
    const = np.broadcast_to(np.array([100, 200, 300, 400], np.int16)[:, None, None], (4, h, w))
    path = write_tif(tmp_path / "utm_const.tif", const, tr, crs=crs)
    win = grid_window(ROI, 10)
    for resampling in ("nearest", "bilinear"):
        res = LocalProvider(path=path, resampling=resampling).fetch(ROI, None, sensor)
        assert res.data.shape == (4, *win.shape)
        assert res.meta["grid"]["transform"] == list(win.transform_tuple)
        np.testing.assert_array_equal(res.data, np.broadcast_to(const[:, :1, :1], res.data.shape))


def test_utm_synthetic_scene_round_trips_plausibly(tmp_path, sensor, big_patch):
    from rasterio.warp import Resampling, reproject

    data, win = big_patch
    crs = "EPSG:32651"
    tr, shape = utm_transform(ROI, crs, 7.0, 300.0)
    utm = np.zeros((4, *shape), np.float32)
    reproject(data, utm, src_transform=win.transform, src_crs="EPSG:3857", dst_transform=tr,
              dst_crs=crs, resampling=Resampling.nearest)  # fmt: skip
    path = write_tif(tmp_path / "utm.tif", utm, tr, crs=crs)
    got = LocalProvider(path=path).fetch(ROI, None, sensor).data
    ref = synthetic(ROI, sensor)
    assert (got > 0).all()  # fully covered, no fill
    assert np.median(np.abs(got - ref) / ref) < 0.01  # two nearest resamplings: most pixels identical
    assert np.mean(np.abs(got - ref) / ref) < 0.05


def test_downsampling_reads_the_whole_kernel_footprint(tmp_path, sensor, big_patch):
    # 10 m source on an 80 m grid: a cubic kernel spans 2 x 8 source pixels each side of a centre
    from rasterio.warp import Resampling, reproject

    data, win = big_patch
    path = write_tif(tmp_path / "big.tif", data, win.transform)
    coarse = SensorSpec(collection="x", bands=BANDS, scale_m=80)
    dst = grid_window(ROI, 80)
    for resampling in ("bilinear", "cubic", "average"):
        ref = np.full((4, *dst.shape), np.nan, np.float32)
        reproject(data, ref, src_transform=win.transform, src_crs="EPSG:3857", dst_transform=dst.transform,
                  dst_crs="EPSG:3857", resampling=Resampling[resampling])  # fmt: skip
        got = LocalProvider(path=path, resampling=resampling).fetch(ROI, None, coarse).data
        np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_wgs84_raster_partially_outside_is_filled(tmp_path, sensor):
    # covers only the western half of the ROI: the eastern half gets fill_value
    w = grid_window(ROI, 10)
    lon0, lat0, lon1, lat1 = w.lonlat_bounds()
    mid = (lon0 + lon1) / 2
    res_deg = 0.00005
    tr = Affine(res_deg, 0, lon0 - 0.01, 0, -res_deg, lat1 + 0.01)
    width = round((mid - (lon0 - 0.01)) / res_deg)
    height = round((lat1 - lat0 + 0.02) / res_deg)
    data = np.full((4, height, width), 7.0, np.float32)
    path = write_tif(tmp_path / "west.tif", data, tr, crs="EPSG:4326")
    out = LocalProvider(path=path).fetch(ROI, None, sensor).data
    half = w.width // 2
    assert (out[:, :, : half - 1] == 7.0).all()
    assert (out[:, :, half + 1 :] == -1.0).all()


# -- no-data, bounds and bands -------------------------------------------------------------------
def test_nodata_and_nan_become_fill_value(tmp_path, sensor):
    win = grid_window(ROI, 10)
    dn = np.full((4, *win.shape), 1234, np.uint16)
    dn[:, :5, :7] = 0
    prov = LocalProvider(path=write_tif(tmp_path / "nd.tif", dn, win.transform, nodata=0))
    out = prov.fetch(ROI, None, sensor).data
    assert (out[:, :5, :7] == -1.0).all()
    assert (out[:, 5:, :] == 1234).all()
    fl = dn.astype(np.float32)
    fl[1, 10:12, 10:12] = np.nan
    path = write_tif(tmp_path / "nan.tif", fl, win.transform)
    out = LocalProvider(path=path, nodata=0).fetch(ROI, None, sensor).data  # option supplies nodata
    assert np.isfinite(out).all()
    assert (out[:, :5, :7] == -1.0).all()
    assert (out[1, 10:12, 10:12] == -1.0).all()
    assert out[0, 10, 10] == 1234


def test_roi_outside_the_data_names_both_bounds(tmp_path, sensor):
    win = grid_window(ROI, 10)
    path = write_tif(tmp_path / "roi.tif", synthetic(ROI, sensor), win.transform)
    far = PointBuffer(10.0, 50.0, 320)
    with pytest.raises(ProviderError, match="outside the data bounds") as exc:
        LocalProvider(path=path).fetch(far, None, sensor)
    fx0 = grid_window(far, 10).bounds[0]
    assert f"{fx0:.1f}" in str(exc.value)
    assert f"{win.bounds[0]:.1f}" in str(exc.value)


def test_missing_band_lists_the_available_ones(tmp_path, sensor):
    win = grid_window(ROI, 10)
    path = write_tif(tmp_path / "roi.tif", synthetic(ROI, sensor), win.transform)
    bad = SensorSpec(collection="x", bands=("B2", "B11"))
    with pytest.raises(ProviderError, match=r"\['B11'\].*available: \['B2', 'B3', 'B4', 'B8'\]"):
        LocalProvider(path=path).fetch(ROI, None, bad)


def test_bands_by_case_insensitive_name_or_1_based_index(tmp_path, sensor):
    win = grid_window(ROI, 10)
    ref = synthetic(ROI, sensor)
    named = LocalProvider(path=write_tif(tmp_path / "n.tif", ref, win.transform))
    anon = LocalProvider(path=write_tif(tmp_path / "a.tif", ref, win.transform, bands=None))
    out = named.fetch(ROI, None, SensorSpec(collection="x", bands=("b8", "B2")))
    np.testing.assert_array_equal(out.data, ref[[3, 0]])
    out = anon.fetch(ROI, None, SensorSpec(collection="x", bands=("4", "band_1", "BAND3")))
    np.testing.assert_array_equal(out.data, ref[[3, 0, 2]])
    with pytest.raises(ProviderError, match=r"available: \['band_1', 'band_2', 'band_3', 'band_4'\]"):
        anon.fetch(ROI, None, SensorSpec(collection="x", bands=("5",)))


def test_bad_options_and_no_rasters(tmp_path, sensor):
    with pytest.raises(ProviderError, match="resampling"):
        LocalProvider(resampling="fancy")
    prov = LocalProvider(path=str(tmp_path / "*.tif"))
    with pytest.raises(ProviderError, match="found no rasters"):
        prov.fetch(ROI, None, sensor)
    # a miss is not cached: files that appear later are found (and pathlib paths work)
    write_tif(tmp_path / "late.tif", np.ones((4, 4, 4), np.float32), grid_window(ROI, 10).transform)
    assert prov.sources() == [str(tmp_path / "late.tif")]
    assert LocalProvider(path=tmp_path / "late.tif").sources() == [str(tmp_path / "late.tif")]
    with pytest.raises(ProviderError, match="found no rasters"):
        LocalProvider().fetch(ROI, None, SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=BANDS))


# -- mosaics ----------------------------------------------------------------------------------------
def test_directory_of_four_tiles_equals_the_single_big_file(tmp_path, sensor, big_patch):
    data, win = big_patch
    big = write_tif(tmp_path / "big.tif", data, win.transform)
    tiles = tmp_path / "tiles"
    (tiles / "sub").mkdir(parents=True)
    h2, w2 = win.height // 2, win.width // 2
    for i, (r, c) in enumerate(((0, 0), (0, w2), (h2, 0), (h2, w2))):
        part = data[:, r : r + h2 if r == 0 else None, c : c + w2 if c == 0 else None]
        folder = tiles / "sub" if i % 2 else tiles
        write_tif(folder / f"tile_{i}.tif", part, win.transform @ Affine.translation(c, r))
    (tiles / "notes.txt").write_text("not a raster")
    one, four = LocalProvider(path=big), LocalProvider(path=str(tiles))
    assert len(four.sources()) == 4
    centre = PointBuffer(121.5, 45.0, 500)  # straddles all four tiles
    np.testing.assert_array_equal(four.fetch(centre, None, sensor).data, one.fetch(centre, None, sensor).data)
    np.testing.assert_array_equal(four.fetch(centre, None, sensor).data, synthetic(centre, sensor))
    # kernels see across seams: bilinear/cubic at another scale match the single file too
    for resampling in ("bilinear", "cubic"):
        s15 = SensorSpec(collection="x", bands=BANDS, scale_m=15)
        a = LocalProvider(path=big, resampling=resampling).fetch(centre, None, s15).data
        b = LocalProvider(path=str(tiles), resampling=resampling).fetch(centre, None, s15).data
        np.testing.assert_array_equal(a, b)
    # a ROI inside one quadrant opens only that tile
    x0, y0, x1, y1 = win.bounds
    from rs_embed_dask.geometry import mercator_to_lonlat

    lon, lat = mercator_to_lonlat(x0 + (x1 - x0) / 4, y1 - (y1 - y0) / 4)
    res = four.fetch(PointBuffer(lon, lat, 200), None, sensor)
    assert [p.rsplit("/", 1)[-1] for p in res.meta["local_files"]] == ["tile_0.tif"]


def test_concurrent_fetches_agree(tmp_path, sensor, big_patch):
    data, win = big_patch
    prov = LocalProvider(path=write_tif(tmp_path / "big.tif", data, win.transform))
    rois = [PointBuffer(121.5 + 0.001 * i, 45.0, 150) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: prov.fetch(r, None, sensor).data, rois * 2))
    for roi, arr in zip(rois * 2, got, strict=True):
        np.testing.assert_array_equal(arr, synthetic(roi, sensor))


# -- time --------------------------------------------------------------------------------------
def test_dates_in_file_names():
    assert date_from_name("/x/S2_20220615_T51.tif") == date(2022, 6, 15)
    assert date_from_name("s2_2022-07-01.tif") == date(2022, 7, 1)
    assert date_from_name("/20220101/s2_2022_08_20.tif") == date(2022, 8, 20)
    assert date_from_name("tile_123456789.tif") is None
    assert date_from_name("s2_20221341.tif") is None


def _dated_files(tmp_path, win):
    names = ("s2_20220610.tif", "s2_2022-07-15.tif", "s2_2022_08_20_v1.tif")
    for k, name in enumerate(names, start=1):
        write_tif(tmp_path / name, np.full((4, *win.shape), k, np.float32), win.transform)
    return str(tmp_path / "s2_*.tif")


def test_multi_frame_from_dated_files(tmp_path, sensor):
    win = grid_window(ROI, 10)
    prov = LocalProvider(path=_dated_files(tmp_path, win))
    res = prov.fetch(ROI, SUMMER, sensor, n_frames=3)
    assert res.data.shape == (3, 4, *win.shape)
    assert [float(res.data[t].mean()) for t in range(3)] == [1.0, 2.0, 3.0]
    assert prov.fetch(ROI, SUMMER, sensor).data.max() == 2.0  # median of 1, 2, 3
    mosaic = SensorSpec(collection="x", bands=BANDS, composite="mosaic")
    assert prov.fetch(ROI, SUMMER, mosaic).data.min() == 3.0  # latest on top
    with pytest.raises(ProviderError, match=r"dated within \[2022-09-01, 2022-10-01\).*2022-06-10"):
        prov.fetch(ROI, TemporalSpec.range("2022-09-01", "2022-10-01"), sensor)


def test_timeless_files_join_every_bin(tmp_path, sensor):
    win = grid_window(ROI, 10)
    _dated_files(tmp_path, win)
    write_tif(tmp_path / "s2_static.tif", np.full((4, *win.shape), 11, np.float32), win.transform)
    res = LocalProvider(path=str(tmp_path / "s2_*.tif")).fetch(ROI, SUMMER, sensor, n_frames=3)
    assert [float(res.data[t].mean()) for t in range(3)] == [6.0, 6.5, 7.0]  # median(k, 11)


def test_zarr_cube_with_time_dimension(tmp_path, sensor):
    import pandas as pd
    import xarray as xr

    win = grid_window(ROI, 10)
    ref = synthetic(ROI, sensor)
    xs, ys = win.pixel_centers()
    times = pd.to_datetime(["2022-06-05", "2022-07-05", "2022-07-25"])
    scale = np.array([1.0, 2.0, 4.0], np.float32)[:, None, None]
    ds = xr.Dataset(
        {b: (("time", "y", "x"), ref[i][None] * scale) for i, b in enumerate(BANDS)},
        coords={"time": times, "y": ys, "x": xs},
    ).rio.write_crs("EPSG:3857")
    ds.to_zarr(tmp_path / "cube.zarr")
    prov = LocalProvider(path=str(tmp_path))  # the directory holds one cube
    res = prov.fetch(ROI, TemporalSpec.range("2022-06-01", "2022-08-01"), sensor, n_frames=2)
    np.testing.assert_array_equal(res.data[0], ref)
    np.testing.assert_array_equal(res.data[1], ref * 3)  # median of 2x and 4x
    assert res.meta["local_dates"] == ["2022-07-05", "2022-07-25"]


def test_netcdf_lonlat_cube_with_band_coordinate(tmp_path, sensor):
    import xarray as xr

    lon0, lat0, lon1, lat1 = grid_window(ROI, 10).lonlat_bounds()
    lons = np.linspace(lon0 - 0.01, lon1 + 0.01, 200)
    lats = np.linspace(lat1 + 0.01, lat0 - 0.01, 200)
    vals = np.broadcast_to(np.array([5, 6, 7, 8], np.float32)[:, None, None], (4, 200, 200))
    da = xr.DataArray(
        vals, dims=("band", "lat", "lon"), coords={"band": list(BANDS), "lat": lats, "lon": lons}
    )
    da.to_dataset(name="reflectance").to_netcdf(tmp_path / "cube_20220701.nc")
    res = LocalProvider(path=str(tmp_path / "cube_20220701.nc")).fetch(
        ROI, SUMMER, SensorSpec(collection="x", bands=("B8", "B3"))
    )
    assert (res.data[0] == 8).all()
    assert (res.data[1] == 6).all()


# -- where the files come from ---------------------------------------------------------------------
def test_local_prefix_in_collection(tmp_path, sensor):
    win = grid_window(ROI, 10)
    ref = synthetic(ROI, sensor)
    write_tif(tmp_path / "scene.tif", ref, win.transform)
    for coll in (f"local:{tmp_path}/*.tif", str(tmp_path / "scene.tif"), f"local:{tmp_path}"):
        s = SensorSpec(collection=coll, bands=BANDS)
        np.testing.assert_array_equal(LocalProvider().fetch(ROI, None, s).data, ref)


def test_get_embedding_end_to_end_matches_the_synthetic_backend(tmp_path):
    from rs_embed_dask import get_embedding

    s = SensorSpec(collection="synthetic", bands=BANDS)
    win = grid_window(ROI, 10)
    path = write_tif(tmp_path / "scene.tif", synthetic(ROI, s, SUMMER), win.transform)
    local = get_embedding(
        "rcf", spatial=ROI, temporal=SUMMER, backend="local", device="cpu",
        sensor=SensorSpec(collection=path, bands=BANDS),
    )  # fmt: skip
    ref = get_embedding("rcf", spatial=ROI, temporal=SUMMER, backend="synthetic", device="cpu", sensor=s)
    assert local.meta["backend"] == "local"
    assert local.meta["input_grid"] == ref.meta["input_grid"]
    # identical input pixels; the synthetic array is not C-contiguous, which changes torch's
    # float summation order in the last bits, hence a tolerance rather than bit equality
    np.testing.assert_allclose(local.to_numpy(), ref.to_numpy(), rtol=1e-5, atol=1e-6)


# -- one file per band -------------------------------------------------------------------------
def _per_band_files(root, name_of, sensor, days):
    """Single-band uint16 GeoTIFFs of ROI per band and day (offset 100 per day); their expected stack."""
    win = grid_window(ROI, 10)
    ref = np.round(synthetic(ROI, sensor))
    stacks = []
    for k, day in enumerate(days):
        vals = ref + 100 * k
        for i, band in enumerate(BANDS):
            path = root / name_of(day, band)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tif(path, vals[i : i + 1], win.transform, bands=None, dtype="uint16")
        stacks.append(vals)
    return stacks


@pytest.mark.parametrize(
    "name_of",
    [
        lambda day, band: f"{day:%Y%m%d}_{band.replace('B', 'B0') if len(band) == 2 else band}.tif",
        lambda day, band: f"{band}/{day.isoformat()}.tif",
        lambda day, band: f"{day.isoformat()}/{band}.tif",
    ],
    ids=["date_band_names", "folder_per_band", "folder_per_date"],
)
def test_one_file_per_band_layouts(tmp_path, sensor, name_of):
    days = [date(2022, 6, 10), date(2022, 7, 10), date(2022, 8, 10)]
    stacks = _per_band_files(tmp_path, name_of, sensor, days)
    prov = LocalProvider(path=str(tmp_path))
    res = prov.fetch(ROI, SUMMER, sensor)
    assert res.meta["local_layout"] == "per-band"
    assert res.meta["local_dates"] == [d.isoformat() for d in days]
    np.testing.assert_array_equal(res.data, stacks[1])  # median of offsets 0, 100, 200
    mosaic = prov.fetch(ROI, SUMMER, SensorSpec("x", BANDS, composite="mosaic"))
    np.testing.assert_array_equal(mosaic.data, stacks[2])
    frames = prov.fetch(ROI, SUMMER, sensor, n_frames=3)
    for k in range(3):
        np.testing.assert_array_equal(frames.data[k], stacks[k])
    # band order follows the request, not the file listing
    rev = prov.fetch(ROI, SUMMER, SensorSpec("x", BANDS[::-1]))
    np.testing.assert_array_equal(rev.data, stacks[1][::-1])


def test_one_file_per_band_missing_band_is_named(tmp_path, sensor):
    _per_band_files(tmp_path, lambda day, band: f"{day:%Y%m%d}_{band}.tif", sensor, [date(2022, 6, 10)])
    (tmp_path / "20220610_B8.tif").unlink()
    with pytest.raises(ProviderError, match=r"no file for band\(s\) \['B8'\]"):
        LocalProvider(path=str(tmp_path)).fetch(ROI, SUMMER, sensor)
