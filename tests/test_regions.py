"""Region tiling on the common grid and ROIs read from files (``rs_embed_dask.regions``)."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import tracemalloc

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import Point, Polygon, box, mapping

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import BBox, PointBuffer
from rs_embed_dask.geometry import MERCATOR_HALF_WORLD, grid_window, lonlat_to_mercator, mercator_to_lonlat
from rs_embed_dask.regions import RegionTiles, read_spatials, tile_region


def merc_box(x0: float, y0: float, x1: float, y1: float) -> BBox:
    """A lon/lat BBox whose EPSG:3857 bounds are (x0, y0, x1, y1)."""
    lon0, lat0 = mercator_to_lonlat(x0, y0)
    lon1, lat1 = mercator_to_lonlat(x1, y1)
    return BBox(lon0, lat0, lon1, lat1)


def tile_merc_bounds(tile: BBox) -> tuple[float, float, float, float]:
    x0, y0 = lonlat_to_mercator(tile.minlon, tile.minlat)
    x1, y1 = lonlat_to_mercator(tile.maxlon, tile.maxlat)
    return x0, y0, x1, y1


def assert_on_lattice(tiles: RegionTiles) -> None:
    """Every tile's grid window is exactly tile_px a side, at its lattice position."""
    n = 0
    for (r, c), tile in zip(tiles.indices(), tiles, strict=True):
        w = grid_window(tile, tiles.scale_m)
        assert (w.width, w.height) == (tiles.tile_px, tiles.tile_px), (r, c, w)
        assert (w.col_off, w.row_off) == (c * tiles.stride_px, r * tiles.stride_px)
        assert w == tiles.window(r, c)
        n += 1
    assert n == len(tiles)


# -- boxes: counts and lattice ----------------------------------------------------------------
def test_aligned_box_gives_exact_tile_count() -> None:
    side = 2560.0
    region = merc_box(40 * side, 1000 * side, 50 * side, 1020 * side)  # 10 x 20 tiles
    tiles = tile_region(region, 2560, scale_m=10)
    assert len(tiles) == 200
    assert tiles.shape == (20, 10)
    assert tiles.cols == (40, 49)
    assert tiles.rows == (-1020, -1001)  # rows count southward from the equator
    assert len(list(tiles)) == 200
    assert_on_lattice(tiles)


def test_unaligned_box_keeps_every_overlapping_tile() -> None:
    side = 1280.0
    # starts 100 m into column 3 and ends 100 m into column 7 -> columns 3..7; rows likewise
    region = merc_box(3 * side + 100, -(9 * side + 100), 7 * side + 100, -(5 * side + 100))
    tiles = tile_region(region, 1280, scale_m=20)
    assert tiles.cols == (3, 7)
    assert tiles.rows == (5, 9)
    assert len(tiles) == 25
    # the tiles cover the region, and dropping an edge row/column would not
    minx, miny, maxx, maxy = shapely.union_all([box(*tile_merc_bounds(t)) for t in tiles]).bounds
    rx0, ry0, rx1, ry1 = tile_merc_bounds(region)
    assert minx <= rx0
    assert miny <= ry0
    assert maxx >= rx1
    assert maxy >= ry1
    assert minx > rx0 - side
    assert maxx < rx1 + side


@pytest.mark.parametrize(
    ("scale_m", "tile_m", "overlap_m"),
    [(10.0, 640.0, 0.0), (10.0, 640.0, 60.0), (30.0, 3840.0, 0.0), (320.0, 2560.0, 640.0), (0.5, 64.0, 8.0)],
)
def test_every_tile_is_whole_pixels_on_the_lattice(scale_m: float, tile_m: float, overlap_m: float) -> None:
    lon, lat = 11.3, 47.2
    x, y = lonlat_to_mercator(lon, lat)
    span = tile_m * 7.3
    region = merc_box(x, y, x + span, y + span * 0.6)
    tiles = tile_region(region, tile_m, overlap_m=overlap_m, scale_m=scale_m)
    assert tiles.tile_px == round(tile_m / scale_m)
    assert tiles.stride_px == round((tile_m - overlap_m) / scale_m)
    assert_on_lattice(tiles)


@settings(max_examples=25, deadline=None)
@given(
    lon=st.floats(-170, 170),
    lat=st.floats(-75, 75),
    w=st.floats(1.0, 9.0),
    h=st.floats(1.0, 9.0),
    scale=st.sampled_from([1.0, 10.0, 20.0, 60.0]),
    tile_px=st.integers(1, 64),
    overlap_frac=st.floats(0.0, 0.9),
)
def test_lattice_property(lon, lat, w, h, scale, tile_px, overlap_frac) -> None:
    tile_m = tile_px * scale
    overlap_m = math.floor(overlap_frac * tile_px) * scale
    x, y = lonlat_to_mercator(lon, lat)
    region = merc_box(x, y, x + w * tile_m, y + h * tile_m)
    tiles = tile_region(region, tile_m, overlap_m=overlap_m, scale_m=scale)
    assert_on_lattice(tiles)
    # the tile lattice covers the region's own pixel window
    rw = grid_window(region, scale)
    r0, r1 = tiles.rows
    c0, c1 = tiles.cols
    assert c0 * tiles.stride_px <= rw.col_off
    assert c1 * tiles.stride_px + tiles.tile_px >= rw.col_off + rw.width
    assert r0 * tiles.stride_px <= rw.row_off
    assert r1 * tiles.stride_px + tiles.tile_px >= rw.row_off + rw.height


def test_overlap_steps_by_tile_minus_overlap() -> None:
    side, overlap = 640.0, 160.0
    region = merc_box(0.0 + 5000, 5_000_000.0, 5000 + 10 * side, 5_000_000.0 + side)
    plain = tile_region(region, side, scale_m=10)
    over = tile_region(region, side, overlap_m=overlap, scale_m=10)
    assert over.stride_px == 48
    assert len(over) > len(plain)
    row = [t for (r, _), t in zip(over.indices(), over, strict=True) if r == over.rows[0]]
    for a, b in itertools.pairwise(row):
        ax0, _, ax1, _ = tile_merc_bounds(a)
        bx0, _, bx1, _ = tile_merc_bounds(b)
        assert bx0 - ax0 == pytest.approx(side - overlap, abs=1e-6)
        assert ax1 - bx0 == pytest.approx(overlap, abs=1e-6)
        assert bx1 - bx0 == pytest.approx(side, abs=1e-6)


def test_projected_bbox_gives_the_same_tiles_as_its_lonlat_box() -> None:
    region = BBox(1_000_000.0, 6_000_000.0, 1_030_000.0, 6_020_000.0, crs="EPSG:3857")
    a = list(tile_region(region, 2560, scale_m=10))
    b = list(tile_region(region.to_wgs84(), 2560, scale_m=10))
    assert a == b
    assert len(a) == 13 * 9


def test_region_tiles_pickle_round_trip() -> None:
    tiles = tile_region(Polygon([(5, 45), (5.3, 45), (5.1, 45.2)]), 1280)
    back = pickle.loads(pickle.dumps(tiles))
    assert list(back) == list(tiles)


# -- polygons ---------------------------------------------------------------------------------
def _brute_force(poly_lonlat, tiles: RegionTiles) -> set[tuple[int, int]]:
    """Tiles of the bounding lattice whose footprint overlaps the polygon with positive area."""
    to_m = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    poly = shapely.transform(
        shapely.segmentize(poly_lonlat, 0.01), lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1]))
    )
    step, side = tiles.stride_px * tiles.scale_m, tiles.tile_px * tiles.scale_m
    out = set()
    for r in range(tiles.rows[0], tiles.rows[1] + 1):
        for c in range(tiles.cols[0], tiles.cols[1] + 1):
            foot = box(c * step, -r * step - side, c * step + side, -r * step)
            if foot.intersection(poly).area > 1.0:
                out.add((r, c))
    return out


@pytest.mark.parametrize("overlap_m", [0.0, 640.0])
def test_polygon_keeps_only_intersecting_tiles(overlap_m: float) -> None:
    # a concave "U": rows cross it in two separate spans
    u = Polygon(
        [
            (5.0, 45.0),
            (5.4, 45.0),
            (5.4, 45.3),
            (5.3, 45.3),
            (5.3, 45.1),
            (5.1, 45.1),
            (5.1, 45.3),
            (5.0, 45.3),
        ]
    )
    tiles = tile_region(u, 2560, overlap_m=overlap_m, scale_m=10)
    got = list(tiles.indices())
    assert len(got) == len(set(got)) == len(tiles)
    assert set(got) == _brute_force(u, tiles)
    rows, cols = tiles.shape
    assert len(tiles) < rows * cols  # the notch of the U is left out
    assert got == sorted(got)  # row-major, west to east
    assert_on_lattice(tiles)


def test_multipolygon_with_hole() -> None:
    outer = Polygon(
        [(8, 50), (8.5, 50), (8.5, 50.3), (8, 50.3)],
        holes=[[(8.1, 50.1), (8.4, 50.1), (8.4, 50.2), (8.1, 50.2)]],
    )
    island = Polygon([(9, 50), (9.05, 50), (9.05, 50.05), (9, 50.05)])
    geom = shapely.MultiPolygon([outer, island])
    tiles = tile_region(geom, 5120, scale_m=20)
    assert set(tiles.indices()) == _brute_force(geom, tiles)


def test_geojson_path_geodataframe_and_shapely_agree(tmp_path) -> None:
    import geopandas as gpd

    tri = Polygon([(5, 45), (6, 45), (5.5, 46)])
    feature = {"type": "Feature", "geometry": mapping(tri), "properties": {}}
    collection = {"type": "FeatureCollection", "features": [feature]}
    path = tmp_path / "region.geojson"
    path.write_text(json.dumps(collection))
    gdf = gpd.GeoDataFrame(geometry=[tri], crs="EPSG:4326").to_crs("EPSG:32631")
    ref = list(tile_region(tri, 2560).indices())
    assert list(tile_region(feature, 2560).indices()) == ref
    assert list(tile_region(mapping(tri), 2560).indices()) == ref
    assert list(tile_region(collection, 2560).indices()) == ref
    assert list(tile_region(str(path), 2560).indices()) == ref
    assert list(tile_region(path, 2560).indices()) == ref
    # the GeoDataFrame came back from UTM: vertices move by millimetres, edges by far less than a tile
    via_gdf = set(tile_region(gdf, 2560).indices())
    assert len(via_gdf ^ set(ref)) <= 0.02 * len(ref)


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_m": 25, "scale_m": 10}, "tile_m must be a whole number of pixels at scale_m=10"),
        ({"tile_m": 640, "overlap_m": 15, "scale_m": 10}, "overlap_m must be a whole number of pixels"),
        ({"tile_m": 640, "overlap_m": 640}, "overlap_m must be smaller than tile_m"),
        ({"tile_m": -640}, "tile_m must be a positive number"),
        ({"tile_m": 640, "overlap_m": -10}, "overlap_m must be a number >= 0"),
        ({"tile_m": 640, "scale_m": 0}, "scale_m must be a positive number"),
        ({"tile_m": float("nan")}, "tile_m must be a positive number"),
    ],
)
def test_bad_sizes_raise_spec_error(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        tile_region(BBox(5, 45, 5.1, 45.1), **kwargs)


def test_antimeridian_raises_spec_error_like_geometry() -> None:
    with pytest.raises(SpecError, match="longitudes must be in"):
        tile_region(BBox(179.5, 0.0, 180.5, 1.0), 2560)
    with pytest.raises(SpecError, match="antimeridian"):
        tile_region(Polygon([(179.5, 0), (180.5, 0), (180.5, 1), (179.5, 1)]), 2560)
    # inside the world, but the last lattice tile would reach past 180°
    assert (MERCATOR_HALF_WORLD / 2560) % 1 != 0
    with pytest.raises(SpecError, match="antimeridian"):
        tile_region(BBox(179.99, 0.0, 180.0, 0.01), 2560)
    with pytest.raises(SpecError, match="antimeridian"):
        tile_region(BBox(-180.0, 0.0, -179.99, 0.01), 2560)


@pytest.mark.parametrize(
    ("region", "match"),
    [
        (Point(5, 45), "must be a Polygon or MultiPolygon"),
        ({"type": "FeatureCollection", "features": []}, "has no geometry"),
        ({"foo": 1}, "not GeoJSON"),
        (42, "region must be a BBox, a GeoJSON dict"),
        ("/nonexistent/region.geojson", "does not exist"),
        (BBox(5, 45, 4, 46), "longitudes must be in"),
    ],
)
def test_bad_regions_raise_spec_error(region, match) -> None:
    with pytest.raises(SpecError, match=match):
        tile_region(region, 2560)


# -- laziness ---------------------------------------------------------------------------------
def _continent_box() -> BBox:
    x0, y0 = 1_000_000.0, 5_000_000.0
    return merc_box(x0, y0, x0 + 1_000_000.0, y0 + 1_000_000.0)


def test_len_does_not_materialise_tiles() -> None:
    # a polygon of ~2.4 million tiles: counting holds row spans only
    big = Polygon([(0, 30), (40, 30), (20, 60)])
    tracemalloc.start()
    try:
        tiles = tile_region(big, 1280, scale_m=10)
        n = len(tiles)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 2_000_000
    assert peak < 16 * 2**20  # a list of 2 million BBoxes would take > 300 MB


def test_continental_box_streams_150k_tiles_with_flat_memory() -> None:
    tiles = tile_region(_continent_box(), 2560, scale_m=320)
    assert len(tiles) >= 150_000
    it = iter(tiles)
    for _ in range(1000):
        next(it)
    tracemalloc.start()
    try:
        count = 1000
        last = None
        for tile in it:
            count += 1
            last = tile
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(tiles)
    assert isinstance(last, BBox)
    assert peak < 512 * 1024  # one row of tiles at a time


def test_partitions() -> None:
    tiles = tile_region(Polygon([(5, 45), (5.5, 45), (5.25, 45.4)]), 2560)
    parts = list(tiles.partitions(7))
    assert [len(p) for p in parts[:-1]] == [7] * (len(parts) - 1)
    assert 1 <= len(parts[-1]) <= 7
    assert [t for p in parts for t in p] == list(tiles)
    with pytest.raises(SpecError, match="n_per_partition must be an integer >= 1"):
        next(tiles.partitions(0))


# -- read_spatials ----------------------------------------------------------------------------
def test_csv_lonlat_with_buffer_column(tmp_path) -> None:
    p = tmp_path / "pts.csv"
    p.write_text("id,Lon,Lat,buffer_m\na,5.0,45.0,320\nb,5.1,45.2,\nc,-3.5,40.4,1000\n")
    out = list(read_spatials(p, buffer_m=640))
    assert out == [
        PointBuffer(5.0, 45.0, 320.0),
        PointBuffer(5.1, 45.2, 640.0),
        PointBuffer(-3.5, 40.4, 1000.0),
    ]


def test_csv_xy_with_crs_is_converted(tmp_path) -> None:
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    x, y = to_utm.transform(15.2, 48.1)
    p = tmp_path / "utm.csv"
    p.write_text(f"x,y,crs\n{x},{y},EPSG:32633\n{x + 1000},{y},EPSG:32633\n16.0,47.0,EPSG:4326\n")
    out = list(read_spatials(p, buffer_m=100))
    assert out[0].lon == pytest.approx(15.2, abs=1e-9)
    assert out[0].lat == pytest.approx(48.1, abs=1e-9)
    assert out[0].crs == "EPSG:4326"
    assert out[0].buffer_m == 100
    assert out[1].lon > out[0].lon
    assert (out[2].lon, out[2].lat) == (16.0, 47.0)


def test_csv_boxes(tmp_path) -> None:
    p = tmp_path / "boxes.csv"
    p.write_text("minlon,minlat,maxlon,maxlat\n5,45,5.1,45.1\n")
    assert list(read_spatials(p)) == [BBox(5.0, 45.0, 5.1, 45.1)]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        (
            "lon,lat\n5,45\n5,abc\n",
            {"buffer_m": 10},
            r"pts\.csv, row 2, field 'lat': 'abc' is not a finite number",
        ),
        ("lon,lat\n5,45\n", {}, r"pts\.csv, row 1, field 'buffer_m': point rows need buffer_m="),
        ("lon,lat,buffer_m\n5,45,-3\n", {}, r"pts\.csv, row 1: buffer_m must be a positive number"),
        ("name,value\na,1\n", {}, r"pts\.csv: no coordinate columns; need 'lon' and 'lat'"),
        ("x,y\n1,2\n", {}, r"columns x, y need a 'crs' column"),
        (
            "x,y,crs\n1,2,EPSG:999999\n",
            {},
            r"row 1, field 'crs': crs 'EPSG:999999' is not a coordinate reference system",
        ),
        ("lon,lat\n5,95\n", {"buffer_m": 10}, r"pts\.csv, row 1"),
        ("minlon,minlat,maxlon,maxlat\n5,45,4,46\n", {}, r"row 1: Invalid bbox bounds"),
    ],
)
def test_csv_errors_name_file_row_and_field(tmp_path, text, kwargs, match) -> None:
    p = tmp_path / "pts.csv"
    p.write_text(text)
    with pytest.raises(SpecError, match=match):
        list(read_spatials(p, **kwargs))


def test_missing_file_and_layer_misuse(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        read_spatials(tmp_path / "nope.csv")
    p = tmp_path / "pts.csv"
    p.write_text("lon,lat\n5,45\n")
    with pytest.raises(SpecError, match="layer='x' applies to multi-layer formats"):
        read_spatials(p, layer="x")


def test_geojson_points_and_polygons(tmp_path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": mapping(Point(5, 45)), "properties": {"buffer_m": 250}},
            {"type": "Feature", "geometry": mapping(box(5, 45, 5.2, 45.1)), "properties": {}},
            {"type": "Feature", "geometry": mapping(Point(6, 46)), "properties": None},
        ],
    }
    p = tmp_path / "rois.geojson"
    p.write_text(json.dumps(fc))
    assert list(read_spatials(p, buffer_m=500)) == [
        PointBuffer(5.0, 45.0, 250.0),
        BBox(5.0, 45.0, 5.2, 45.1),
        PointBuffer(6.0, 46.0, 500.0),
    ]
    fc["features"][1]["geometry"] = None
    p.write_text(json.dumps(fc))
    with pytest.raises(SpecError, match=r"rois\.geojson, feature 2, field 'geometry'"):
        list(read_spatials(p, buffer_m=500))


def test_geoparquet_is_read_in_row_groups_and_converted(tmp_path) -> None:
    import geopandas as gpd
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    lon = rng.uniform(-10, 30, 20_000)
    lat = rng.uniform(35, 60, 20_000)
    gdf = gpd.GeoDataFrame(
        {"buffer_m": np.where(np.arange(20_000) % 2 == 0, 320.0, np.nan)},
        geometry=gpd.points_from_xy(lon, lat),
        crs="EPSG:4326",
    ).to_crs("EPSG:3857")
    path = tmp_path / "pts.parquet"
    gdf.to_parquet(path, row_group_size=2_000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    it = read_spatials(path, buffer_m=640)
    tracemalloc.start()
    try:
        out = [next(it)]
        count = 1
        for i, sp in enumerate(it, start=1):
            count += 1
            if i < 5 or i % 4999 == 0:
                out.append(sp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 8 * 2**20  # one batch at a time (20,000 specs and geometries would be far more)
    first = out[0]
    assert isinstance(first, PointBuffer)
    assert first.buffer_m == 320.0
    assert first.lon == pytest.approx(lon[0], abs=1e-9)
    assert first.lat == pytest.approx(lat[0], abs=1e-9)
    assert out[1].buffer_m == 640.0


def test_geoparquet_polygons_become_boxes(tmp_path) -> None:
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        geometry=[box(5, 45, 5.2, 45.1), Polygon([(6, 46), (6.1, 46), (6.05, 46.2)])], crs="EPSG:4326"
    )
    path = tmp_path / "polys.parquet"
    gdf.to_parquet(path)
    out = list(read_spatials(path))
    assert out[0] == BBox(5.0, 45.0, 5.2, 45.1)
    assert out[1].minlon == pytest.approx(6.0)
    assert out[1].maxlat == pytest.approx(46.2)


def test_plain_parquet_and_geopackage(tmp_path) -> None:
    import geopandas as gpd
    import pandas as pd

    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"lon": [5.0, 6.0], "lat": [45.0, 46.0], "buffer_m": [100.0, 200.0]}).to_parquet(plain)
    assert list(read_spatials(plain)) == [PointBuffer(5.0, 45.0, 100.0), PointBuffer(6.0, 46.0, 200.0)]
    gpkg = tmp_path / "rois.gpkg"
    gdf = gpd.GeoDataFrame(geometry=[Point(5, 45)], crs="EPSG:4326")
    gdf.to_file(gpkg, layer="sites", driver="GPKG")
    assert list(read_spatials(gpkg, layer="sites", buffer_m=50)) == [PointBuffer(5.0, 45.0, 50.0)]


def test_geodataframe_rows_name_the_row() -> None:
    import geopandas as gpd

    from rs_embed_dask.export.sources import spatials_from_geodataframe

    gdf = gpd.GeoDataFrame(geometry=[Point(5, 45), Point(6, 46)], crs="EPSG:4326")
    assert spatials_from_geodataframe(gdf, buffer_m=10) == [
        PointBuffer(5.0, 45.0, 10.0),
        PointBuffer(6.0, 46.0, 10.0),
    ]
    with pytest.raises(SpecError, match=r"GeoDataFrame, row 0, field 'buffer_m'"):
        spatials_from_geodataframe(gdf)
    with pytest.raises(SpecError, match="no CRS"):
        spatials_from_geodataframe(gpd.GeoDataFrame(geometry=[Point(5, 45)]))


# -- into an export ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.cluster
def test_tiles_stream_through_export_and_keep_their_coordinates(tmp_path) -> None:
    from distributed import Client, LocalCluster

    from rs_embed_dask import (
        ExportConfig,
        ExportModelRequest,
        ExportTarget,
        FetchSpec,
        TemporalSpec,
        export_batch,
        load_export,
    )

    tiles = tile_region(Polygon([(5, 45), (5.6, 45), (5.3, 45.4)]), 2560, scale_m=320)
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    try:
        with Client(cluster) as client:
            export_batch(
                spatials=tiles,
                temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                models=[ExportModelRequest("rcf", model_config={"features": 8})],
                target=ExportTarget.combined(str(tmp_path / "tiles.zarr")),
                config=ExportConfig(format="zarr", chunk_size=64, save_inputs=True, show_progress=False),
                backend="synthetic",
                fetch=FetchSpec(scale_m=320),
                client=client,
            )
    finally:
        cluster.close()
    res = load_export(str(tmp_path / "tiles.zarr"))
    ds = res.to_xarray()
    assert ds.sizes["item"] == len(tiles)
    assert ds["input__rcf"].shape[-2:] == (8, 8)  # 2560 m tiles at 320 m
    ref = np.array([t.center for t in tiles])
    np.testing.assert_allclose(ds["lon"].values, ref[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ds["lat"].values, ref[:, 1], rtol=0, atol=1e-9)
    first_three = next(tiles.partitions(3))
    assert [BBox(**{k: v for k, v in s.items() if k != "crs"}) for s in res.spatials[:3]] == first_three
    assert np.isfinite(ds["rcf"].values).all()
