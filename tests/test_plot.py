"""Plots of embeddings (``rs_embed_dask.plot``): PCA pseudocolour, k-means, ROI maps."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from rs_embed_dask.core.specs import BBox, PointBuffer
from rs_embed_dask.export.results import ExportResult, ModelResult
from rs_embed_dask.geometry import mercator_bounds, mercator_to_lonlat
from rs_embed_dask.plot import (
    input_rgb,
    kmeans_classes,
    pca_rgb,
    plot_grid_pca,
    plot_input_and_grid,
    plot_pooled_map,
    roi_footprints,
    stretch,
)
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


def assert_text_inside(fig: Figure) -> None:
    """Every axes with its drawn tick labels, axis labels, title and legend lies inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    assert any(t.get_text() for ax in fig.axes for t in ax.get_yticklabels())
    for ax in fig.axes:
        assert ax.get_xlabel()
        assert ax.get_ylabel()
        e = ax.get_tightbbox(renderer)  # what is drawn of the axes: labels, ticks, title, legend
        assert box.x0 - 0.5 <= e.x0, (e, box)
        assert e.x1 <= box.x1 + 0.5, (e, box)
        assert box.y0 - 0.5 <= e.y0, (e, box)
        assert e.y1 <= box.y1 + 0.5, (e, box)
        legend = ax.get_legend()
        if legend is not None:
            le = legend.get_window_extent(renderer)
            assert le.x1 <= box.x1 + 0.5, (le, box)


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
    assert image.shape == (12, 10, 4)  # RGB and alpha (transparent where an embedding is NaN)
    np.testing.assert_allclose(image[..., :3], pca_rgb(grid.reshape(8, -1).T).reshape(12, 10, 3))
    assert (image[..., 3] == 1).all()
    assert fig.axes[0].get_xlabel() == "x (grid cell)"
    grid[:, 0, 0] = np.nan
    assert plot_grid_pca(grid).axes[0].get_images()[0].get_array()[0, 0, 3] == 0
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
    assert legend == ["failed (1)"]
    assert_text_inside(fig)


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
    counts = [int((truth == 0).sum()), int((truth == 1).sum())]
    legend = fig.axes[0].get_legend()
    assert legend.get_title().get_text() == "k-means class (ROIs)"
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(f"class {c} ({n})" for c, n in enumerate(counts))
    assert_text_inside(fig)
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


def test_stretch_ignores_outliers_and_nan() -> None:
    rng = np.random.default_rng(3)
    v = rng.uniform(0, 1, size=(200, 2))
    v[0, 0] = 1e6  # one outlier
    v[1, 1] = np.nan
    out = stretch(v)
    assert np.isnan(out[1, 1])
    ok = np.isfinite(out)
    assert out[ok].min() >= 0.0
    assert out[ok].max() <= 1.0
    assert out[0, 0] == 1.0  # clipped, not stretching the others into a corner
    # the other values keep the full range of colours (a min-max scale would put them all below 1e-6)
    assert np.ptp(out[1:, 0]) == 1.0
    assert np.percentile(out[1:, 0], 90) - np.percentile(out[1:, 0], 10) > 0.6
    np.testing.assert_allclose(stretch(np.full((5, 1), 3.0)), 0.5)
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        stretch(v, (98, 2))
    with pytest.raises(ValueError, match=r"needs \(N, C\) values"):
        stretch(v[:, 0])


def test_pca_colours_not_dominated_by_outliers() -> None:
    x, truth = two_clusters(n=100)
    x[0] += 1e4  # one far outlier along a direction of its own
    rgb = pca_rgb(x)
    minmax = pca_rgb(x, percentiles=(0, 100))
    # with min-max scaling the outlier takes one component's whole range
    spread = [np.ptp(rgb[1:, c]) for c in range(3)]
    spread_minmax = [np.ptp(minmax[1:, c]) for c in range(3)]
    assert min(spread) > 0.9
    assert min(spread_minmax) < 0.01
    # the two clusters stay apart in some component
    sep = [abs(rgb[1:][truth[1:] == 0, c].mean() - rgb[1:][truth[1:] == 1, c].mean()) for c in range(3)]
    assert max(sep) > 0.5


def test_input_rgb_picks_true_colour_bands_and_stretches() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 3000, size=(4, 6, 5))
    x[2, 0, 0] = np.nan
    bands = ["B2", "B3", "B4", "B8"]
    img = input_rgb(x, bands=bands)
    assert img.shape == (6, 5, 3)
    assert np.isnan(img[0, 0, 0])  # B4 (red) is channel 2
    np.testing.assert_allclose(img[..., 1], stretch(x[1].reshape(-1, 1)).reshape(6, 5))  # green: B3
    np.testing.assert_allclose(img[..., 2], stretch(x[0].reshape(-1, 1)).reshape(6, 5))  # blue: B2
    np.testing.assert_allclose(input_rgb(x, rgb=[3, 3, 3])[..., 0], stretch(x[3].reshape(-1, 1)).reshape(6, 5))
    np.testing.assert_allclose(input_rgb(x)[..., 2], input_rgb(x, rgb=[0, 1, 2])[..., 2])  # first three
    grey = input_rgb(x[:1])
    np.testing.assert_allclose(grey[..., 0], grey[..., 2])
    with pytest.raises(ValueError, match="bands names 4 channels"):
        input_rgb(x, bands=bands[:3])
    with pytest.raises(ValueError, match="rgb must be 1 or 3 channel indices"):
        input_rgb(x, rgb=[0, 9, 1])
    with pytest.raises(ValueError, match=r"needs a \(C, H, W\) patch"):
        input_rgb(x[0])


def test_input_beside_its_grid_on_lonlat_axes(tmp_path) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 3000, size=(4, 32, 32))
    grid = rng.normal(size=(8, 4, 4))
    roi = PointBuffer(5.0, 45.0, 160.0)
    path = tmp_path / "side.png"
    fig = plot_input_and_grid(x, grid, bands=["B2", "B3", "B4", "B8"], spatial=roi, path=str(path), title="one ROI")
    assert_png(path)
    ax_in, ax_emb = fig.axes
    assert ax_in.get_images()[0].get_array().shape == (32, 32, 4)
    assert ax_emb.get_images()[0].get_array().shape == (4, 4, 4)
    foot = roi_footprints([roi])[0]
    for ax in (ax_in, ax_emb):
        np.testing.assert_allclose(ax.get_images()[0].get_extent(), [foot[0], foot[2], foot[1], foot[3]])
    assert ax_in.get_xlabel() == "longitude (°)"
    assert ax_in.get_ylabel() == "latitude (°)"
    assert "B4, B3, B2 as RGB" in ax_in.get_title()
    assert_text_inside(fig)
    # without an ROI: pixel and grid-cell indices
    fig = plot_input_and_grid(x, grid)
    assert fig.axes[0].get_xlabel() == "x (pixel)"
    assert fig.axes[1].get_xlabel() == "x (grid cell)"
    assert "channel 0, channel 1, channel 2 as RGB" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="spatial must be a BBox"):
        plot_input_and_grid(x, grid, spatial={"junk": 1})


def test_grid_pca_with_lonlat_labels_inside_the_figure() -> None:
    grid = np.random.default_rng(6).normal(size=(8, 12, 10))
    fig = plot_grid_pca(grid, spatial=BBox(5.0, 45.0, 5.02, 45.02))
    assert fig.axes[0].get_ylabel() == "latitude (°)"
    assert_text_inside(fig)
