"""Plots of embeddings (``rs_embed_dask.plot``): PCA pseudocolour, k-means, ROI maps."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from rs_embed_dask.core.specs import BBox, PointBuffer
from rs_embed_dask.export.results import ExportResult, ModelResult
from rs_embed_dask.geometry import mercator_bounds, mercator_to_lonlat
from rs_embed_dask.plot import kmeans_classes, pca_rgb, plot_grid_pca, plot_pooled_map, roi_footprints
from rs_embed_dask.serialization import jsonable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def two_clusters(n: int = 40, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    centres = rng.normal(size=(2, d)) * 10
    return centres[truth] + rng.normal(size=(n, d)) * 0.1, truth


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000


def fake_result(emb: np.ndarray, spatials: list) -> ExportResult:
    n = emb.shape[0]
    mr = ModelResult("rcf", "ok", emb.astype(np.float32), None, None)
    return ExportResult(
        layout="combined",
        spatials=[jsonable(s) for s in spatials],
        temporal=None,
        n_items=n,
        status="ok",
        models={"rcf": mr},
        manifest={},
    )


def tile_row(n: int) -> list[BBox]:
    return [BBox(5.0 + 0.01 * i, 45.0, 5.01 + 0.01 * i, 45.01) for i in range(n)]


def test_pca_rgb_range_nan_rows_and_separation() -> None:
    x, truth = two_clusters()
    x[3] = np.nan
    rgb = pca_rgb(x)
    assert rgb.shape == (40, 3)
    assert np.isnan(rgb[3]).all()
    ok = np.isfinite(rgb).all(axis=1)
    assert ok.sum() == 39
    assert rgb[ok].min() >= 0.0
    assert rgb[ok].max() <= 1.0
    # the first component separates the two clusters
    a, b = rgb[ok & (truth == 0), 0], rgb[ok & (truth == 1), 0]
    assert min(abs(a.mean() - b.mean()), 1.0) > 0.5
    assert np.isnan(pca_rgb(np.full((4, 3), np.nan))).all()


def test_kmeans_classes_recover_clusters() -> None:
    x, truth = two_clusters()
    x[5] = np.nan
    labels = kmeans_classes(x, 2)
    assert labels[5] == -1
    ok = labels >= 0
    # labels match the truth up to renaming
    assert (labels[ok] == truth[ok]).all() or (labels[ok] == 1 - truth[ok]).all()
    assert set(kmeans_classes(x[:3], 6)) <= {0, 1, 2}  # k shrinks to the valid rows
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        kmeans_classes(x, 0)


def test_plot_grid_pca_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(1)
    grid = rng.normal(size=(8, 12, 10)).astype(np.float32)
    path = tmp_path / "grid.png"
    fig = plot_grid_pca(grid, path=str(path))
    assert isinstance(fig, Figure)
    assert_png(path)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (12, 10, 3)
    with pytest.raises(ValueError, match=r"needs a \(D, H, W\) grid embedding"):
        plot_grid_pca(grid[0])


def test_roi_footprints_boxes_points_and_projected() -> None:
    pb = PointBuffer(5.0, 45.0, 500.0)
    x0, y0, x1, y1 = mercator_bounds(pb)
    expected_pb = (*mercator_to_lonlat(x0, y0), *mercator_to_lonlat(x1, y1))
    proj = BBox(500_000.0, 5_000_000.0, 510_000.0, 5_010_000.0, crs="EPSG:3857")
    foot = roi_footprints([BBox(5, 45, 6, 46), jsonable(pb), jsonable(proj), {"junk": 1}])
    np.testing.assert_allclose(foot[0], [5, 45, 6, 46])
    np.testing.assert_allclose(foot[1], expected_pb)
    w = proj.to_wgs84()
    np.testing.assert_allclose(foot[2], [w.minlon, w.minlat, w.maxlon, w.maxlat])
    assert np.isnan(foot[3]).all()


def test_pooled_map_pca_draws_one_rectangle_per_roi(tmp_path) -> None:
    emb, _ = two_clusters(n=12)
    emb[2] = np.nan
    tiles = tile_row(12)
    path = tmp_path / "map.png"
    fig = plot_pooled_map(fake_result(emb, tiles), "rcf", path=str(path))
    assert_png(path)
    (coll,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    paths = coll.get_paths()
    assert len(paths) == 12
    np.testing.assert_allclose(paths[4].vertices[:4].min(axis=0), [tiles[4].minlon, tiles[4].minlat])
    np.testing.assert_allclose(paths[4].vertices[:4].max(axis=0), [tiles[4].maxlon, tiles[4].maxlat])
    faces = coll.get_facecolors()
    rgb = pca_rgb(emb.astype(np.float32))
    np.testing.assert_allclose(faces[5, :3], rgb[5], atol=1e-6)
    np.testing.assert_allclose(faces[2, :3], [0.85, 0.85, 0.85])  # the failed ROI
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["failed"]


def test_pooled_map_kmeans_and_points(tmp_path) -> None:
    emb, truth = two_clusters(n=10)
    pts = [PointBuffer(5.0 + 0.02 * i, 45.0, 320.0) for i in range(10)]
    fig = plot_pooled_map(fake_result(emb, pts), "rcf", mode="kmeans", k=2, path=str(tmp_path / "k.png"))
    assert_png(tmp_path / "k.png")
    (coll,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    faces = coll.get_facecolors()
    # ROIs of one true cluster share one colour, and the two clusters differ
    assert np.allclose(faces[truth == 0], faces[truth == 0][0])
    assert not np.allclose(faces[truth == 0][0], faces[truth == 1][0])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["class 0", "class 1"]
    with pytest.raises(ValueError, match="mode must be 'pca' or 'kmeans'"):
        plot_pooled_map(fake_result(emb, pts), "rcf", mode="umap")


def test_pooled_map_from_xarray_dataset(tmp_path) -> None:
    emb, _ = two_clusters(n=6)
    tiles = tile_row(6)
    ds = fake_result(emb, tiles).to_xarray()
    # centres only: markers at lon/lat
    fig = plot_pooled_map(ds, "rcf")
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(offsets), [t.center for t in tiles])
    # with bound coordinates (or spatials=): rectangles
    foot = roi_footprints(tiles)
    ds2 = ds.assign_coords(
        {n: ("item", foot[:, i]) for i, n in enumerate(("minlon", "minlat", "maxlon", "maxlat"))}
    )
    for fig in (plot_pooled_map(ds2, "rcf"), plot_pooled_map(ds, "rcf", spatials=tiles)):
        (coll,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
        assert len(coll.get_paths()) == 6
    with pytest.raises(KeyError, match="not in the dataset"):
        plot_pooled_map(ds, "nope")
    # grid embeddings are pooled over their grid before mapping
    grid = np.repeat(np.repeat(emb[:, :, None, None], 2, axis=2), 3, axis=3)
    fig = plot_pooled_map(fake_result(grid, tiles), "rcf", path=str(tmp_path / "g.png"))
    (coll,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    np.testing.assert_allclose(coll.get_facecolors()[:, :3], pca_rgb(emb.astype(np.float32)), atol=1e-6)
