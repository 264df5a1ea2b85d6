"""tessera: GeoTessera tiles from a local cache, mosaicked across UTM zones onto the common grid.

Pinned rs-embed-compatible choices (``docs/parity.md`` compares them with rs-embed itself):
the ROI's window holds every common-grid pixel the ROI touches (edges snapped
outward, rs-embed's ``common_grid``), each pixel takes the tile pixel that
contains its projected centre (pyproj, ``floor``), and where tiles overlap the
first in geotessera's manifest order (longitude, then latitude) wins.
"""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
from model_cases.tessera import write_tessera_cache

from rs_embed_dask import get_embedding
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_dask.geometry import grid_window
from rs_embed_dask.models.precomputed import touched_grid_window
from rs_embed_dask.models.tessera import TesseraEmbedder, _tile_centres

Y2021 = TemporalSpec.year(2021)
GRID = OutputSpec.grid()
POOLED = OutputSpec.pooled()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("tessera_cache")
    return root, write_tessera_cache(root)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection fails the test: the cache must be read offline."""
    calls: list[object] = []

    def refuse(self, address, *args, **kwargs):
        calls.append(address)
        raise OSError(f"network blocked in tests (connect to {address!r})")

    def resolve(host, *args, **kwargs):
        calls.append(host)
        raise OSError(f"network blocked in tests (resolve {host!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return calls


def _embedder(root, **cfg) -> TesseraEmbedder:
    return TesseraEmbedder({"cache_dir": str(root), "download": False, **cfg})


def _expected_grid(tiles, window) -> np.ndarray:
    """Nearest product vector under each grid pixel centre, computed point by point with pyproj."""
    from pyproj import Transformer

    xs, ys = window.pixel_centers()
    gx, gy = np.meshgrid(xs, ys)
    out = np.full((128, *gx.shape), np.nan, np.float32)
    for _, t in sorted(tiles.items()):  # geotessera's manifest order (lon, then lat): the reader's
        x, y = Transformer.from_crs("EPSG:3857", f"EPSG:{t['crs']}", always_xy=True).transform(gx, gy)
        col, row = ~t["transform"] @ (x, y)
        col, row = np.floor(col).astype(int), np.floor(row).astype(int)
        h, w = t["scales"].shape
        ok = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        r, c = np.where(ok, row, 0), np.where(ok, col, 0)
        s = t["scales"][r, c]
        ok &= s > 0
        vals = t["q"][r, c].astype(np.float32) * s[..., None]
        fill = ok & np.isnan(out[0])
        out[:, fill] = np.moveaxis(vals, -1, 0)[:, fill]
    return out


def test_grid_across_utm_zones_matches_the_tiles(cache, no_network):
    root, tiles = cache
    roi = BBox(5.985, 45.02, 6.015, 45.035)
    emb = _embedder(root)
    (g,) = emb.embed_spatials([roi], temporal=Y2021, output=GRID, sensor=None)
    window = touched_grid_window(roi, 10)
    expected = _expected_grid(tiles, window)
    got = np.asarray(g.data)
    assert got.shape == expected.shape
    assert np.isfinite(got).all()  # both zones cover the ROI: no seam
    np.testing.assert_array_equal(got, expected)
    assert g.meta["crosses_utm_zone"] is True
    assert g.meta["tessera_utm_crs"] == ["EPSG:32631", "EPSG:32632"]
    assert g.meta["tessera_tiles"] == ["grid_5.95_45.05", "grid_6.05_45.05"]
    assert g.meta["transform"] == list(window.transform_tuple)
    assert not no_network


def test_window_holds_every_touched_pixel():
    """rs-embed's common_grid: edges snapped outward, one pixel more each way than centres-inside."""
    import math

    from rs_embed_dask.geometry import lonlat_to_mercator

    roi = PointBuffer(5.93, 45.07, 160.0)  # 32 x 32 pixels wide, off the lattice
    x, y = lonlat_to_mercator(5.93, 45.07)
    w = touched_grid_window(roi, 10)
    assert (w.col_off, w.row_off) == (math.floor((x - 160) / 10), math.floor(-(y + 160) / 10))
    assert (w.height, w.width) == (33, 33)
    assert grid_window(roi, 10).shape == (32, 32)
    on_lattice = BBox(*_lonlat_box(1000.0, 2000.0, 1320.0, 2160.0))
    assert touched_grid_window(on_lattice, 10).shape == (16, 32)  # edges on lattice lines add nothing


def _lonlat_box(x0, y0, x1, y1):
    from rs_embed_dask.geometry import mercator_to_lonlat

    (lon0, lat0), (lon1, lat1) = mercator_to_lonlat(x0, y0), mercator_to_lonlat(x1, y1)
    return lon0, lat0, lon1, lat1


def test_tiles_in_manifest_order():
    assert _tile_centres((5.91, 44.96, 6.09, 45.14)) == [
        (5.95, 44.95), (5.95, 45.05), (5.95, 45.15), (6.05, 44.95), (6.05, 45.05), (6.05, 45.15),
    ]  # fmt: skip


def test_grid_shape_follows_the_touched_window(cache):
    root, _ = cache
    roi = PointBuffer(5.93, 45.07, 160.0)
    (g,) = _embedder(root).embed_spatials([roi], temporal=Y2021, output=GRID, sensor=None)
    w = touched_grid_window(roi, 10)
    assert np.asarray(g.data).shape == (128, 33, 33)
    assert g.meta["grid_hw"] == [33, 33]
    assert g.meta["transform"] == list(w.transform_tuple)


def test_known_pixel_is_dequantised_int8_times_scale(cache):
    root, tiles = cache
    t = tiles[(5.95, 45.05)]
    r, c = 40, 30
    assert t["scales"][r, c] > 0
    x, y = t["transform"] @ (c + 0.5, r + 0.5)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(f"EPSG:{t['crs']}", "EPSG:4326", always_xy=True).transform(x, y)
    (p,) = _embedder(root).embed_spatials([PointBuffer(lon, lat, 5.0)], temporal=Y2021, output=POOLED, sensor=None)
    np.testing.assert_allclose(p.data, t["q"][r, c].astype(np.float32) * t["scales"][r, c], rtol=1e-6)


def test_missing_tile_is_nan_and_pooling_ignores_it(cache):
    root, _ = cache
    roi = BBox(6.09, 45.04, 6.11, 45.05)  # half in the absent cell (6.15, 45.05)
    emb = _embedder(root)
    (g,) = emb.embed_spatials([roi], temporal=Y2021, output=GRID, sensor=None)
    grid = np.asarray(g.data)
    xs, _ = touched_grid_window(roi, 10).pixel_centers()
    east = xs > (6.1 + 0.004) * 6378137.0 * np.pi / 180.0  # beyond the fixture's margin
    assert np.isnan(grid[:, :, east]).all()
    assert np.isfinite(grid[:, :, ~east][:, 2:-2]).any()
    assert g.meta["tessera_missing_tiles"] == ["grid_6.15_45.05"]
    (p,) = emb.embed_spatials([roi], temporal=Y2021, output=POOLED, sensor=None)
    np.testing.assert_allclose(p.data, np.nanmean(grid, axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert 0.3 < p.meta["valid_fraction"] < 0.7


def test_roi_without_tiles_is_a_model_error(cache):
    root, _ = cache
    with pytest.raises(ModelError, match=r"tessera: the ROI PointBuffer.*no valid GeoTessera"):
        _embedder(root).embed_spatials([PointBuffer(6.25, 45.05, 300)], temporal=Y2021, output=POOLED, sensor=None)


def test_download_of_missing_tiles_goes_through_geotessera(no_network, tmp_path):
    emb = TesseraEmbedder({"cache_dir": str(tmp_path), "download": True, "registry_dir": str(tmp_path)})
    with pytest.raises(ModelError, match=r"could not download tile grid_6.25_45.05 \(2021\)"):
        emb.embed_spatials([PointBuffer(6.25, 45.05, 300)], temporal=Y2021, output=POOLED, sensor=None)
    assert no_network  # geotessera tried to fetch its registry: the only network use
    no_network.clear()


def test_year_rules(cache):
    root, _ = cache
    emb = _embedder(root)
    roi = PointBuffer(5.93, 45.07, 100)
    (ref,) = emb.embed_spatials([roi], temporal=Y2021, output=POOLED, sensor=None)
    with pytest.warns(UserWarning, match="using the product year 2021"):
        (none,) = emb.embed_spatials([roi], temporal=None, output=POOLED, sensor=None)
    with pytest.warns(UserWarning, match="start year 2021"):
        (rng,) = emb.embed_spatials(
            [roi], temporal=TemporalSpec.range("2021-03-01", "2022-02-01"), output=POOLED, sensor=None
        )
    np.testing.assert_array_equal(none.data, ref.data)
    np.testing.assert_array_equal(rng.data, ref.data)
    assert ref.meta["year"] == 2021
    with pytest.raises(ModelError, match="no valid GeoTessera annual embeddings pixel for year 2022"):
        emb.embed_spatials([roi], temporal=TemporalSpec.year(2022), output=POOLED, sensor=None)


def test_get_embedding_api(cache):
    root, _ = cache
    roi = PointBuffer(6.04, 45.04, 120.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a year given: no warning
        e = get_embedding("tessera", spatial=roi, temporal=Y2021, cache_dir=str(root), download=False)
    (ref,) = _embedder(root).embed_spatials([roi], temporal=Y2021, output=POOLED, sensor=None)
    np.testing.assert_array_equal(e.data, ref.data)
    assert e.meta["model"] == "tessera"
    assert e.meta["type"] == "precomputed"
    assert e.data.shape == (128,)


def test_config_errors():
    with pytest.raises(ModelError, match="'download' must be True or False"):
        TesseraEmbedder({"download": "yes"})
    with pytest.raises(ModelError, match="does not accept"):
        TesseraEmbedder({"weights": "x"})
