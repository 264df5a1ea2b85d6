"""copernicus: the Copernicus-Embed 0.25-degree map read from a local GeoTIFF."""

from __future__ import annotations

import math

import numpy as np
import pytest
from model_cases.copernicus import ORIGIN, write_copernicus_map

from rs_embed_dask import describe_model, get_embedding
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_dask.geometry import grid_window, mercator_to_lonlat
from rs_embed_dask.models import copernicus as cop
from rs_embed_dask.models.copernicus import CopernicusEmbedder

Y2021 = TemporalSpec.year(2021)
POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    path = tmp_path_factory.mktemp("copernicus") / "embed_map_310k.tif"
    return path, write_copernicus_map(path)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    """The Hugging Face download is the network boundary: it must not be reached unless asked."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise OSError("hub blocked in tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.delenv(cop.PATH_ENV, raising=False)
    monkeypatch.delenv(cop.DIR_ENV, raising=False)


def _pixel(data, lon, lat):
    """The product vector of the pixel containing (lon, lat), by hand."""
    col = math.floor((lon - ORIGIN[0]) / 0.25)
    row = math.floor((ORIGIN[1] - lat) / 0.25)
    return data[:, row, col]


def test_roi_smaller_than_a_pixel_gets_that_pixel(product):
    path, data = product
    emb = CopernicusEmbedder({"path": str(path)})
    (e,) = emb.embed_spatials([PointBuffer(5.6, 44.8, 1500.0)], temporal=Y2021, output=POOLED, sensor=None)
    np.testing.assert_array_equal(e.data, _pixel(data, 5.6, 44.8))
    assert e.meta["roi_smaller_than_pixel"] is True
    assert "smaller than one 0.25-degree" in e.meta["note"]
    assert e.data.shape == (768,)


def test_pooled_averages_native_pixels_with_centres_inside(product):
    path, data = product
    emb = CopernicusEmbedder({"path": str(path)})
    roi = BBox(5.1, 44.4, 5.8, 44.8)  # centres at lon 5.25, 5.5, 5.75 and lat 44.5, 44.75
    (mean,) = emb.embed_spatials([roi], temporal=Y2021, output=POOLED, sensor=None)
    (mx,) = emb.embed_spatials([roi], temporal=Y2021, output=OutputSpec.pooled("max"), sensor=None)
    block = np.stack([_pixel(data, lon, lat) for lon in (5.25, 5.5, 5.75) for lat in (44.5, 44.75)], axis=1)
    np.testing.assert_allclose(mean.data, block.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(mx.data, block.max(axis=1))
    assert mean.meta["native_pixels"] == 6
    assert mean.meta["roi_smaller_than_pixel"] is False


def test_pooled_ignores_no_data_pixels(product):
    path, data = product
    roi = BBox(6.1, 45.1, 6.6, 45.4)  # centres lon 6.25, 6.5 and lat 45.25 (row 1: col 6 is NaN)
    (e,) = CopernicusEmbedder({"path": str(path)}).embed_spatials([roi], temporal=Y2021, output=POOLED, sensor=None)
    assert np.isnan(data[:, 1, 5:7]).any()
    np.testing.assert_allclose(e.data, np.nanmean(data[:, 1, 5:7], axis=1), rtol=1e-6)
    assert e.meta["valid_fraction"] == pytest.approx(0.5)


def test_grid_is_nearest_product_pixel_on_the_common_grid(product):
    path, data = product
    emb = CopernicusEmbedder({"path": str(path)})
    roi = BBox(5.0, 44.2, 7.5, 45.5)  # runs east beyond the map's edge at 6.875
    (g,) = emb.embed_spatials([roi], temporal=Y2021, output=GRID, sensor=None)
    w = grid_window(roi, cop.QUARTER_DEGREE_M)
    grid = np.asarray(g.data)
    assert grid.shape == (768, w.height, w.width)
    xs, ys = w.pixel_centers()
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            lon, lat = mercator_to_lonlat(x, y)
            if lon > ORIGIN[0] + 8 * 0.25 or lat < ORIGIN[1] - 6 * 0.25:
                assert np.isnan(grid[:, i, j]).all()
            else:
                np.testing.assert_array_equal(grid[:, i, j], _pixel(data, lon, lat))
    assert g.meta["crs"] == "EPSG:3857"
    assert g.meta["grid_hw"] == [w.height, w.width]


def test_year_rules_and_roi_outside(product):
    path, _ = product
    emb = CopernicusEmbedder({"path": str(path)})
    roi = PointBuffer(5.6, 44.8, 500.0)
    (ref,) = emb.embed_spatials([roi], temporal=None, output=POOLED, sensor=None)
    with pytest.warns(UserWarning, match="start year 2021"):
        (rng,) = emb.embed_spatials(
            [roi], temporal=TemporalSpec.range("2021-01-01", "2021-06-01"), output=POOLED, sensor=None
        )
    np.testing.assert_array_equal(rng.data, ref.data)
    with pytest.raises(ModelError, match=r"exists for year\(s\) \[2021\] only; got year 2022"):
        emb.embed_spatials([roi], temporal=TemporalSpec.year(2022), output=POOLED, sensor=None)
    with pytest.raises(ModelError, match=r"copernicus: the ROI .* no valid Copernicus-Embed"):
        emb.embed_spatials([PointBuffer(10.0, 44.8, 500.0)], temporal=Y2021, output=POOLED, sensor=None)


def test_file_resolution_order(product, monkeypatch, tmp_path):
    path, _ = product
    monkeypatch.setenv(cop.PATH_ENV, str(path))
    assert cop.find_product({}) == path
    monkeypatch.delenv(cop.PATH_ENV)
    monkeypatch.setenv(cop.DIR_ENV, str(path.parent))
    assert cop.find_product({}) == path
    assert cop.find_product({"data_dir": str(path.parent)}) == path
    with pytest.raises(ModelError, match=r"model_config\['path'\] points at .*not the Copernicus-Embed file"):
        cop.find_product({"path": str(tmp_path)})
    monkeypatch.delenv(cop.DIR_ENV)
    with pytest.raises(ModelError, match=r"torchgeo/copernicus_embed@435b4a7b \(OSError: hub blocked"):
        cop.find_product({})


def test_hub_download_is_the_last_resort(product, monkeypatch):
    import huggingface_hub

    path, _ = product
    seen = {}

    def fake(repo_id, filename, **kwargs):
        seen.update(repo_id=repo_id, filename=filename, **kwargs)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert cop.find_product({}) == path
    assert seen == {
        "repo_id": "torchgeo/copernicus_embed",
        "filename": "embed_map_310k.tif",
        "repo_type": "dataset",
        "revision": cop.HF_REVISION,
    }


def test_wrong_file_is_rejected(tmp_path):
    import rasterio
    from affine import Affine

    bad = tmp_path / "embed_map_310k.tif"
    with rasterio.open(
        bad, "w", driver="GTiff", width=4, height=4, count=3, dtype="float32", crs="EPSG:4326",
        transform=Affine(0.25, 0, 5, 0, -0.25, 45),
    ) as dst:  # fmt: skip
        dst.write(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ModelError, match="has 3 bands; the Copernicus-Embed map has 768"):
        CopernicusEmbedder({"path": str(bad)}).embed_spatials(
            [PointBuffer(5.3, 44.7, 100)], temporal=Y2021, output=POOLED, sensor=None
        )


def test_describe_and_api(product):
    path, data = product
    d = describe_model("copernicus")
    assert d["native_crs"] == "EPSG:4326"
    assert d["native_resolution"] == "0.25 deg"
    assert d["embedding_dim"] == 768
    assert d["years"] == [2021]
    e = get_embedding("copernicus", spatial=PointBuffer(5.6, 44.8, 500.0), path=str(path))
    np.testing.assert_array_equal(e.data, _pixel(data, 5.6, 44.8))
    assert e.meta["model"] == "copernicus"
    assert e.meta["year"] == 2021
