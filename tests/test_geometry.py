"""Properties of the common pixel grid (EPSG:3857 lattice anchored at the origin)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import BBox, PointBuffer
from rs_embed_dask.geometry import (
    MAX_LAT,
    MERCATOR_HALF_WORLD,
    GridWindow,
    grid_window,
    lonlat_to_mercator,
    mercator_bounds,
    mercator_to_lonlat,
    split_window,
    square_spatial,
)

SETTINGS = settings(max_examples=50, deadline=None)

lons = st.floats(-170.0, 170.0, allow_nan=False)
lats = st.floats(-80.0, 80.0, allow_nan=False)
scales = st.sampled_from([1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 100.0, 0.3])
npix = st.integers(1, 200)
_TO_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def _centres_inside(window: GridWindow, bounds) -> None:
    """Every pixel centre of the window is in the ROI; the ring just outside is not."""
    minx, miny, maxx, maxy = bounds
    s = window.scale_m
    tol = 1e-6
    xs, ys = window.pixel_centers()
    assert xs[0] >= minx - tol
    assert xs[-1] < maxx + tol
    assert ys[-1] > miny - tol
    assert ys[0] <= maxy + tol
    # neighbours one pixel outside lie outside (the window is maximal)
    assert xs[0] - s < minx + tol
    assert xs[-1] + s >= maxx - tol
    assert ys[0] + s > maxy - tol
    assert ys[-1] - s <= miny + tol


# -- window size and alignment -----------------------------------------------------------------
@SETTINGS
@given(lon=lons, lat=lats, s=scales, n=npix)
def test_pointbuffer_window_is_2b_over_s(lon, lat, s, n):
    w = grid_window(PointBuffer(lon, lat, n * s / 2.0), s)
    assert w.shape == (n, n)


@SETTINGS
@given(lon=lons, lat=lats, s=scales, n=npix, ox=st.sampled_from([0.0, 0.5]), oy=st.sampled_from([0.0, 0.5]))
# found by search: a fixed 1e-9 pixel tolerance mis-sized these by one pixel at 0.3 m
@example(lon=117.1, lat=41.27, s=0.3, n=108, ox=0.5, oy=0.5)
@example(lon=-85.66, lat=21.24, s=0.3, n=164, ox=0.5, oy=0.5)
@example(lon=147.72, lat=-28.86, s=0.3, n=112, ox=0.5, oy=0.0)
@example(lon=109.0, lat=-25.06, s=0.3, n=199, ox=0.0, oy=0.5)
def test_pointbuffer_window_on_lattice_centres(lon, lat, s, n, ox, oy):
    # centres exactly on a pixel centre or corner put ROI edges on pixel centres: the
    # half-open rule must still give exactly n pixels
    x, y = lonlat_to_mercator(lon, lat)
    x = (math.floor(x / s) + ox) * s
    y = (math.floor(y / s) + oy) * s
    clon, clat = mercator_to_lonlat(x, y)
    w = grid_window(PointBuffer(clon, clat, n * s / 2.0), s)
    assert w.shape == (n, n)


@SETTINGS
@given(lon=lons, lat=lats, s=scales, buf=st.floats(0.6, 3000.0))
def test_window_size_rounds_2b_over_s(lon, lat, s, buf):
    w = grid_window(PointBuffer(lon, lat, buf), s)
    side = 2.0 * buf / s
    for n in w.shape:
        assert n >= 1
        assert math.floor(side) - 1e-9 <= n <= math.ceil(side) + 1e-9 or n == 1


@SETTINGS
@given(lon=lons, lat=lats, s=scales, buf=st.floats(1.0, 3000.0))
def test_window_is_the_pixels_whose_centres_are_inside(lon, lat, s, buf):
    pb = PointBuffer(lon, lat, buf)
    w = grid_window(pb, s)
    assume(2 * buf > s)  # smaller ROIs fall back to the pixel under their centre
    _centres_inside(w, mercator_bounds(pb))


@SETTINGS
@given(lon=lons, lat=lats, s=scales, dx=st.floats(0.01, 0.3), dy=st.floats(0.01, 0.3))
def test_bbox_window_alignment(lon, lat, s, dx, dy):
    bb = BBox(lon, lat, lon + dx, lat + dy)
    w = grid_window(bb, s)
    minx, miny, maxx, maxy = w.bounds
    for v in (minx, miny, maxx, maxy):
        assert v / s == pytest.approx(round(v / s), abs=1e-6)  # edges on the lattice
    a, b, c, d, e, f = w.transform_tuple
    assert (a, b, d, e) == (s, 0.0, 0.0, -s)
    assert (c, f) == (w.col_off * s, -w.row_off * s)
    assert tuple(w.transform)[:6] == w.transform_tuple
    assert w.to_dict() == {
        "crs": "EPSG:3857",
        "scale_m": s,
        "transform": list(w.transform_tuple),
        "shape": [w.height, w.width],
        "col_off": w.col_off,
        "row_off": w.row_off,
    }
    _centres_inside(w, mercator_bounds(bb))


@SETTINGS
@given(
    col=st.integers(-1_000_000, 1_000_000),
    row=st.integers(-1_000_000, 1_000_000),
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    s=st.sampled_from([1.0, 10.0, 30.0, 0.3]),
)
def test_window_lonlat_bounds_round_trip(col, row, w, h, s):
    # a ROI drawn on lattice lines (e.g. by a tiling helper) gives back that window
    win = GridWindow(col, row, w, h, s)
    assume(abs(win.bounds[1]) < 1.9e7 and abs(win.bounds[3]) < 1.9e7)
    assume(abs(win.bounds[0]) < MERCATOR_HALF_WORLD and abs(win.bounds[2]) < MERCATOR_HALF_WORLD)
    assert grid_window(BBox(*win.lonlat_bounds()), s) == win
    minx, miny, maxx, maxy = win.bounds
    assert grid_window(BBox(minx, miny, maxx, maxy, crs="EPSG:3857"), s) == win


# -- projection ---------------------------------------------------------------------------------
@SETTINGS
@given(lon=st.floats(-180.0, 180.0), lat=st.floats(-85.0, 85.0))
def test_lonlat_mercator_round_trip(lon, lat):
    x, y = lonlat_to_mercator(lon, lat)
    px, py = _TO_3857.transform(lon, lat)
    assert x == pytest.approx(px, abs=1e-6)
    assert y == pytest.approx(py, abs=1e-6)
    lon2, lat2 = mercator_to_lonlat(x, y)
    assert lon2 == pytest.approx(lon, abs=1e-9)
    assert lat2 == pytest.approx(lat, abs=1e-9)


def test_half_world_constant():
    assert lonlat_to_mercator(180.0, 0.0)[0] == pytest.approx(MERCATOR_HALF_WORLD)
    assert lonlat_to_mercator(0.0, MAX_LAT)[1] == pytest.approx(MERCATOR_HALF_WORLD, abs=1.0)


# -- high latitudes -------------------------------------------------------------------------------
@SETTINGS
@given(
    lon=lons,
    lat=st.one_of(st.floats(84.0, 90.0), st.floats(-90.0, -84.0)),
    buf=st.floats(1.0, 5000.0),
    s=scales,
)
def test_pointbuffer_near_poles_is_clamped(lon, lat, buf, s):
    w = grid_window(PointBuffer(lon, lat, buf), s)
    assert w.width >= 1
    assert w.height >= 1
    if abs(lat) >= MAX_LAT:
        clamped = math.copysign(MAX_LAT, lat)
        assert grid_window(PointBuffer(lon, clamped, buf), s) == w


@SETTINGS
@given(lon=lons, lat0=st.floats(80.0, 85.0), top=st.floats(85.0, 90.0), s=scales)
def test_bbox_reaching_past_the_clamp_is_non_empty(lon, lat0, top, s):
    assume(min(top, MAX_LAT) - lat0 > 1e-6)  # a 1-ulp box has no extent in float metres
    for bb in (BBox(lon, lat0, lon + 0.5, top), BBox(lon, -top, lon + 0.5, -lat0)):
        w = grid_window(bb, s)
        assert w.width >= 1
        assert w.height >= 1
        assert abs(w.lonlat_bounds()[1]) <= 90
        assert abs(w.lonlat_bounds()[3]) <= 90


def test_bbox_entirely_beyond_the_clamp_is_a_clear_error():
    with pytest.raises(SpecError, match="no extent"):
        grid_window(BBox(0, 86, 1, 89), 10)


def test_lat_clamp():
    assert lonlat_to_mercator(10, 89.0) == lonlat_to_mercator(10, MAX_LAT)
    assert lonlat_to_mercator(10, -95.0) == lonlat_to_mercator(10, -MAX_LAT)


# -- antimeridian --------------------------------------------------------------------------------
@pytest.mark.parametrize("lon", [179.99, -179.99])
def test_antimeridian_refused(lon):
    with pytest.raises(SpecError, match="antimeridian"):
        grid_window(PointBuffer(lon, 0.0, 50_000), 10)


@SETTINGS
@given(lon=st.floats(179.0, 180.0), sign=st.sampled_from([1, -1]), buf=st.floats(10.0, 200_000.0))
def test_antimeridian_property(lon, sign, buf):
    pb = PointBuffer(sign * lon, 10.0, buf)
    dist = MERCATOR_HALF_WORLD - abs(lonlat_to_mercator(pb.lon, 0.0)[0])
    assume(abs(dist - buf) > 1e-3)
    if buf > dist:
        with pytest.raises(SpecError, match="antimeridian"):
            grid_window(pb, 10)
    else:
        assert grid_window(pb, 10).width >= 1


# -- determinism and adjacency -------------------------------------------------------------------
@SETTINGS
@given(lon=lons, lat=lats, s=scales, buf=st.floats(1.0, 3000.0))
def test_same_roi_same_window(lon, lat, s, buf):
    pb = PointBuffer(lon, lat, buf)
    w = grid_window(pb, s)
    assert grid_window(PointBuffer(lon, lat, buf), s) == w
    assert grid_window(pickle.loads(pickle.dumps(pb)), s) == w
    assert grid_window(pb, s) == w


@SETTINGS
@given(
    lon=lons,
    lat=lats,
    s=scales,
    w1=st.floats(3.0, 80.0),
    w2=st.floats(3.0, 80.0),
    h=st.floats(3.0, 80.0),
)
def test_touching_bboxes_give_adjacent_windows(lon, lat, s, w1, w2, h):
    # widths and height in pixels, converted to lon/lat through the projection
    x0, y0 = lonlat_to_mercator(lon, lat)
    edges_x = [x0, x0 + w1 * s, x0 + (w1 + w2) * s]
    edges_y = [y0, y0 + h * s, y0 + 2 * h * s]
    ex = [mercator_to_lonlat(x, y0)[0] for x in edges_x]
    ey = [mercator_to_lonlat(x0, y)[1] for y in edges_y]
    west = grid_window(BBox(ex[0], ey[0], ex[1], ey[1]), s)
    east = grid_window(BBox(ex[1], ey[0], ex[2], ey[1]), s)
    north = grid_window(BBox(ex[0], ey[1], ex[1], ey[2]), s)
    whole = grid_window(BBox(ex[0], ey[0], ex[2], ey[1]), s)
    assert west.col_off + west.width == east.col_off  # no gap, no overlap
    assert (west.row_off, west.height) == (east.row_off, east.height)
    assert north.row_off + north.height == west.row_off  # rows count southward
    assert (north.col_off, north.width) == (west.col_off, west.width)
    assert whole.col_off == west.col_off
    assert whole.width == west.width + east.width


@SETTINGS
@given(lon=lons, lat=lats, s=scales, n=st.integers(2, 100))
def test_touching_pointbuffers_give_adjacent_windows(lon, lat, s, n):
    b = n * s / 2.0
    x, y = lonlat_to_mercator(lon, lat)
    left = PointBuffer(*mercator_to_lonlat(x, y), b)
    right = PointBuffer(*mercator_to_lonlat(x + 2 * b, y), b)
    wl, wr = grid_window(left, s), grid_window(right, s)
    assert wl.col_off + wl.width == wr.col_off
    assert wl.row_off == wr.row_off


# -- square_spatial ------------------------------------------------------------------------------
@SETTINGS
@given(lon=lons, lat=lats, s=scales, wpx=st.floats(4.0, 300.0), hpx=st.floats(4.0, 300.0))
def test_square_spatial_keeps_roi_inside_and_centred(lon, lat, s, wpx, hpx):
    assume(abs(wpx - hpx) > 1.0)
    x0, y0 = lonlat_to_mercator(lon, lat)
    lon1, lat1 = mercator_to_lonlat(x0 + wpx * s, y0 + hpx * s)
    roi = BBox(lon, lat, lon1, lat1)
    sq, (ry0, ry1, rx0, rx1) = square_spatial(roi)
    assert isinstance(sq, BBox)
    mx = mercator_bounds(sq)
    assert mx[2] - mx[0] == pytest.approx(mx[3] - mx[1], rel=1e-6)  # square in EPSG:3857
    wr, ws = grid_window(roi, s), grid_window(sq, s)
    assert abs(ws.width - ws.height) <= 1
    # the ROI's window lies inside the square's window ...
    assert ws.col_off <= wr.col_off
    assert wr.col_off + wr.width <= ws.col_off + ws.width
    assert ws.row_off <= wr.row_off
    assert wr.row_off + wr.height <= ws.row_off + ws.height
    # ... and is centred in it (margins differ by at most one pixel)
    left, right = wr.col_off - ws.col_off, ws.col_off + ws.width - wr.col_off - wr.width
    top, bottom = wr.row_off - ws.row_off, ws.row_off + ws.height - wr.row_off - wr.height
    assert abs(left - right) <= 1
    assert abs(top - bottom) <= 1
    # the normalised ROI window (y0, y1, x0, x1) describes the same placement
    assert 0.0 <= ry0 < ry1 <= 1.0
    assert 0.0 <= rx0 < rx1 <= 1.0
    assert ry0 == pytest.approx(1.0 - ry1, abs=1e-6)
    assert rx0 == pytest.approx(1.0 - rx1, abs=1e-6)
    assert (rx1 - rx0) / (ry1 - ry0) == pytest.approx(wpx / hpx, rel=1e-6)


def test_square_spatial_leaves_squares_and_points():
    pb = PointBuffer(10, 45, 500)
    assert square_spatial(pb) == (pb, (0.0, 1.0, 0.0, 1.0))
    x, y = lonlat_to_mercator(10, 45)
    lon1, lat1 = mercator_to_lonlat(x + 1000, y + 1000)
    sq = BBox(10, 45, lon1, lat1)
    assert square_spatial(sq) == (sq, (0.0, 1.0, 0.0, 1.0))


def test_square_spatial_converts_crs():
    x, y = lonlat_to_mercator(10, 45)
    bb = BBox(x, y, x + 2000, y + 1000, crs="EPSG:3857")
    sq, roi = square_spatial(bb)
    assert sq.crs == "EPSG:4326"
    assert roi[2:] == pytest.approx((0.0, 1.0), abs=1e-9)
    assert roi[:2] == pytest.approx((0.25, 0.75), abs=1e-6)


# -- split_window --------------------------------------------------------------------------------
@SETTINGS
@given(
    col=st.integers(-10_000, 10_000),
    row=st.integers(-10_000, 10_000),
    w=st.integers(1, 150),
    h=st.integers(1, 150),
    max_pixels=st.one_of(st.none(), st.integers(4, 5000)),
    max_side=st.one_of(st.none(), st.integers(1, 200)),
)
def test_split_window_tiles_exactly(col, row, w, h, max_pixels, max_side):
    win = GridWindow(col, row, w, h, 10.0)
    parts = split_window(win, max_pixels=max_pixels, max_side=max_side)
    cover = np.zeros((h, w), dtype=np.int32)
    y = row
    for band in parts:
        assert band, "empty row band"
        assert {p.row_off for p in band} == {y}
        assert len({p.height for p in band}) == 1
        x = col
        for p in band:
            assert p.col_off == x  # contiguous, west to east
            assert p.width >= 1
            assert p.height >= 1
            assert p.scale_m == win.scale_m
            if max_side is not None:
                assert p.width <= max_side
                assert p.height <= max_side
            if max_pixels is not None:
                assert p.width * p.height <= max_pixels
            cover[
                p.row_off - row : p.row_off - row + p.height, p.col_off - col : p.col_off - col + p.width
            ] += 1
            x += p.width
        assert x == col + w
        y += band[0].height
    assert y == row + h
    assert (cover == 1).all()  # union is the window, no overlap


def test_split_window_no_limits_is_identity():
    win = GridWindow(3, -7, 40, 30, 10.0)
    assert split_window(win) == [[win]]


@pytest.mark.parametrize(
    "kwargs", [{"max_pixels": 0}, {"max_side": 0}, {"max_side": -3}, {"max_pixels": 2.5}]
)
def test_split_window_rejects_impossible_limits(kwargs):
    with pytest.raises(SpecError):
        split_window(GridWindow(0, 0, 10, 10, 10.0), **kwargs)


def test_grid_window_bad_scale():
    for bad in (0, -10, float("nan"), "10"):
        with pytest.raises(SpecError, match="scale_m"):
            grid_window(PointBuffer(0, 0, 100), bad)


def test_known_window():
    # the acceptance ROI: 2 * 1280 m / 10 m = 256 pixels a side
    w = grid_window(PointBuffer(121.5, 31.2, 1280), 10)
    assert w.shape == (256, 256)
    cx, cy = lonlat_to_mercator(121.5, 31.2)
    minx, miny, maxx, maxy = w.bounds
    assert abs((minx + maxx) / 2 - cx) <= 5
    assert abs((miny + maxy) / 2 - cy) <= 5
