"""copernicus: the Copernicus-Embed 0.25-degree map read from a local GeoTIFF, as rs-embed 0.3.1 reads it.

Pinned rs-embed-compatible choices (``docs/parity.md`` compares them with rs-embed itself):
a ``PointBuffer``'s ``buffer_m`` is ground metres turned into a degree box
(``buffer_m / 111320`` of latitude, ``buffer_m / (111320 cos(lat))`` of
longitude); every product pixel the box touches is used (floor/ceil of its
edges, after clipping to the map); the grid is the product's own EPSG:4326
pixels, not a resample onto the common EPSG:3857 grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from model_cases.copernicus import ORIGIN, write_copernicus_map

from rs_embed_dask import describe_model, get_embedding
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
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


def _embed(path, roi, output=POOLED):
    (e,) = CopernicusEmbedder({"path": str(path)}).embed_spatials([roi], temporal=Y2021, output=output, sensor=None)
    return e


def test_point_buffer_is_a_degree_box_of_ground_metres():
    lon0, lat0, lon1, lat1 = cop.footprint_4326(PointBuffer(5.6, 44.8, 20_000.0))
    # 20 km: 20000 / 111320 deg of latitude, 20000 / (111320 cos 44.8 deg) of longitude
    assert (lat1 - lat0) / 2 == pytest.approx(0.17966223499820339, abs=1e-12)
    assert (lon1 - lon0) / 2 == pytest.approx(0.2531984843049631, abs=1e-12)
    assert (lon0 + lon1) / 2 == pytest.approx(5.6)
    assert (lat0 + lat1) / 2 == pytest.approx(44.8)
    assert cop.footprint_4326(BBox(5.1, 44.4, 5.8, 44.8)) == (5.1, 44.4, 5.8, 44.8)


def test_touched_pixels_round_edges_outward():
    from affine import Affine

    t = Affine(0.25, 0.0, ORIGIN[0], 0.0, -0.25, ORIGIN[1])
    # west 5.1 -> col floor(0.9) = 0, east 5.8 -> ceil(3.7) = 4; north 44.8 -> row floor(3.3) = 3, south 44.4 -> ceil(4.9) = 5
    assert cop.touched_window((5.1, 44.4, 5.8, 44.8), t, 6, 8) == (3, 5, 0, 4)
    # a box on pixel edges touches no pixel beyond them
    assert cop.touched_window((5.125, 44.875, 5.625, 45.375), t, 6, 8) == (1, 3, 1, 3)
    # clipped to the map first (east edge 6.875, south edge 44.125)
    assert cop.touched_window((6.5, 43.0, 7.6, 45.0), t, 6, 8) == (2, 6, 6, 8)
    assert cop.touched_window((7.0, 44.5, 7.5, 45.0), t, 6, 8) is None


def test_pooled_is_the_mean_of_every_touched_pixel(product):
    path, data = product
    roi = BBox(5.1, 44.4, 5.8, 44.8)
    mean, mx = _embed(path, roi), _embed(path, roi, OutputSpec.pooled("max"))
    block = data[:, 3:5, 0:4].reshape(768, -1)  # 8 pixels; only 6 have their centre inside the box
    np.testing.assert_allclose(mean.data, block.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(mx.data, block.max(axis=1))
    assert mean.meta["native_pixels"] == 8
    assert mean.meta["native_window"] == {"row_off": 3, "col_off": 0, "height": 2, "width": 4}
    assert mean.meta["roi_smaller_than_pixel"] is False


def test_grid_is_the_native_window_north_up(product):
    path, data = product
    g = _embed(path, BBox(5.1, 44.4, 5.8, 44.8), GRID)
    np.testing.assert_array_equal(np.asarray(g.data), data[:, 3:5, 0:4])
    assert g.meta["crs"] == "EPSG:4326"
    assert g.meta["output_crs"] == "EPSG:4326"
    assert g.meta["grid_hw"] == [2, 4]
    assert g.meta["chw_shape"] == [768, 2, 4]
    assert g.meta["transform"] == pytest.approx([0.25, 0.0, ORIGIN[0], 0.0, -0.25, ORIGIN[1] - 3 * 0.25])
    assert g.meta["y_axis_direction"] == "north_to_south"
    assert g.meta["projection_mode"] == "product_native_fixed"


def test_point_buffer_grid_and_pooled_use_the_degree_box(product):
    path, data = product
    roi = PointBuffer(5.6, 44.8, 20_000.0)  # lon 5.3468..5.8532, lat 44.6203..44.9797
    g, p = _embed(path, roi, GRID), _embed(path, roi)
    # cols floor(1.888) = 1 .. ceil(3.914) = 4, rows floor(2.581) = 2 .. ceil(4.019) = 5
    np.testing.assert_array_equal(np.asarray(g.data), data[:, 2:5, 1:4])
    np.testing.assert_allclose(p.data, data[:, 2:5, 1:4].reshape(768, -1).mean(axis=1), rtol=1e-6)
    assert p.meta["bbox_4326"] == pytest.approx([5.6 - 0.2531984843049631, 44.8 - 0.17966223499820339,
                                                 5.6 + 0.2531984843049631, 44.8 + 0.17966223499820339])  # fmt: skip


def test_grids_of_different_rois_differ_in_shape_and_batch_equals_singles(product):
    path, _ = product
    emb = CopernicusEmbedder({"path": str(path)})
    rois = [BBox(5.1, 44.4, 5.8, 44.8), PointBuffer(5.6, 44.8, 20_000.0), BBox(6.5, 43.0, 7.6, 45.0)]
    batch = emb.embed_spatials(rois, temporal=Y2021, output=GRID, sensor=None)
    assert [np.asarray(b.data).shape for b in batch] == [(768, 2, 4), (768, 3, 3), (768, 4, 2)]
    for roi, b in zip(rois, batch, strict=True):
        np.testing.assert_array_equal(np.asarray(b.data), np.asarray(_embed(path, roi, GRID).data))


def test_roi_smaller_than_a_pixel_gets_the_pixel_it_touches(product):
    path, data = product
    e = _embed(path, PointBuffer(5.6, 44.8, 1500.0))  # inside the pixel centred at (5.5, 44.75)
    np.testing.assert_array_equal(e.data, data[:, 3, 2])
    assert e.meta["roi_smaller_than_pixel"] is True
    assert "smaller than one 0.25-degree" in e.meta["note"]
    # straddling a pixel corner: the four pixels around it
    e4 = _embed(path, BBox(5.6, 44.85, 5.65, 44.9))
    np.testing.assert_allclose(e4.data, data[:, 2:4, 2:4].reshape(768, -1).mean(axis=1), rtol=1e-6)


def test_pooled_ignores_no_data_pixels(product):
    path, data = product
    roi = BBox(6.2, 45.15, 6.6, 45.35)  # cols 5, 6 of row 1; (row 1, col 6) is NaN
    assert np.isnan(data[:, 1, 6]).all()
    e = _embed(path, roi)
    np.testing.assert_allclose(e.data, data[:, 1, 5], rtol=1e-6)
    assert e.meta["valid_fraction"] == pytest.approx(0.5)
    g = _embed(path, roi, GRID)
    assert np.isnan(np.asarray(g.data)[:, 0, 1]).all()


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
    with pytest.raises(ModelError, match=r"copernicus: the ROI .* no valid Copernicus-Embed .*outside the map"):
        emb.embed_spatials([PointBuffer(10.0, 44.8, 500.0)], temporal=Y2021, output=GRID, sensor=None)


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
    from rs_embed_dask.models.hub_reach import hub_offline

    assert seen.pop("local_files_only") is hub_offline()  # no retries when the hub cannot be reached
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
        _embed(bad, PointBuffer(5.3, 44.7, 100))


def test_describe_and_api(product):
    path, data = product
    d = describe_model("copernicus")
    assert d["native_crs"] == "EPSG:4326"
    assert d["grid_crs"] == "EPSG:4326"
    assert d["native_resolution"] == "0.25 deg"
    assert d["embedding_dim"] == 768
    assert d["years"] == [2021]
    assert "111320" in d["footprint"]
    e = get_embedding("copernicus", spatial=PointBuffer(5.6, 44.8, 500.0), path=str(path))
    np.testing.assert_array_equal(e.data, data[:, 3, 2])
    assert e.meta["model"] == "copernicus"
    assert e.meta["year"] == 2021
    assert math.isclose(e.meta["product_resolution_deg"][0], 0.25)
