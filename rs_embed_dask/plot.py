"""Quick looks at embeddings with matplotlib: PCA pseudocolour images and ROI maps.

Figures are built with :class:`matplotlib.figure.Figure`, not ``pyplot``, so
nothing here needs a display or switches the user's backend: a script writes
PNGs (``path=``), a notebook shows the returned figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["kmeans_classes", "pca_rgb", "plot_grid_pca", "plot_pooled_map", "roi_footprints"]

#: Colour of failed ROIs (NaN embeddings) on maps.
_GREY = (0.85, 0.85, 0.85, 1.0)


def pca_rgb(x: np.ndarray) -> np.ndarray:
    """Project ``(N, D)`` vectors onto their first 3 principal components, scaled to [0, 1].

    Each component is stretched between its 2nd and 98th percentile.  Rows
    with NaN (failed items) come back as NaN.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, D)`` vectors.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 colours.
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    out = np.full((x.shape[0], 3), np.nan)
    if ok.sum() == 0:
        return out
    xc = x[ok] - x[ok].mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(3, vt.shape[0])
    comps = xc @ vt[:k].T
    if k < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - k)))
    lo, hi = np.percentile(comps, 2, axis=0), np.percentile(comps, 98, axis=0)
    out[ok] = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    return out


def kmeans_classes(x: np.ndarray, k: int = 6, *, seed: int = 0) -> np.ndarray:
    """K-means classes of ``(N, D)`` vectors (scikit-learn), ``-1`` for rows with NaN.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, D)`` vectors.
    k : int, default 6
        Number of classes (fewer when there are fewer valid rows).
    seed : int, default 0
        Random state of the k-means initialisation.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 labels in ``[0, k)``, ``-1`` where a row is not finite.
    """
    from sklearn.cluster import KMeans

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}.")
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1)
    labels = np.full(x.shape[0], -1, dtype=np.int64)
    if ok.any():
        n = min(k, int(ok.sum()))
        labels[ok] = KMeans(n_clusters=n, n_init=4, random_state=seed).fit_predict(x[ok])
    return labels


def _figure(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | None) -> None:
    if path is not None:
        fig.savefig(path, dpi=120)


def plot_grid_pca(grid: Any, *, ax: Any = None, path: str | None = None, title: str | None = None) -> Any:
    """Show a grid embedding ``(D, H, W)`` as a PCA pseudocolour image.

    Parameters
    ----------
    grid : array-like or Embedding or xarray.DataArray
        ``(D, H, W)`` values (an object with ``.data`` or ``.values`` works).
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; default a new figure.
    path : str, optional
        Write the figure as an image (PNG by extension) here.
    title : str, optional
        Axes title (default names the shape).

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = getattr(grid, "values", None)
    if values is None:
        values = getattr(grid, "data", grid)
    g = np.asarray(values, dtype=np.float64)
    if g.ndim != 3:
        raise ValueError(f"plot_grid_pca needs a (D, H, W) grid embedding; got shape {g.shape}.")
    d, h, w = g.shape
    rgb = pca_rgb(g.reshape(d, -1).T).reshape(h, w, 3)
    fig, ax = _figure(ax, (5, 5))
    ax.imshow(np.nan_to_num(rgb, nan=0.5), interpolation="nearest")
    ax.set_title(title or f"PCA of a ({d}, {h}, {w}) grid embedding")
    ax.set_axis_off()
    _save(fig, path)
    return fig


def _footprint(s: Any) -> tuple[float, float, float, float]:
    from rs_embed_dask.core.specs import BBox, PointBuffer
    from rs_embed_dask.geometry import mercator_bounds, mercator_to_lonlat

    if isinstance(s, Mapping):
        d = {
            k: v
            for k, v in s.items()
            if k in ("lon", "lat", "buffer_m", "minlon", "minlat", "maxlon", "maxlat", "crs")
        }
        crs = str(d.pop("crs", None) or "EPSG:4326")
        s = PointBuffer(crs=crs, **d) if "lon" in d else BBox(crs=crs, **d)
    if isinstance(s, PointBuffer):
        x0, y0, x1, y1 = mercator_bounds(s)
        lon0, lat0 = mercator_to_lonlat(x0, y0)
        lon1, lat1 = mercator_to_lonlat(x1, y1)
        return lon0, lat0, lon1, lat1
    b = s.to_wgs84()
    return b.minlon, b.minlat, b.maxlon, b.maxlat


def roi_footprints(spatials: Iterable[Any]) -> np.ndarray:
    """``(N, 4)`` lon/lat ``(minlon, minlat, maxlon, maxlat)`` of ROIs.

    Parameters
    ----------
    spatials : iterable of BBox, PointBuffer or their serialised dicts
        As in ``ExportResult.spatials``; a ``PointBuffer`` is its square of
        ±``buffer_m`` Web-Mercator metres.  Entries that cannot be read give NaN.

    Returns
    -------
    numpy.ndarray
    """
    rows = []
    for s in spatials:
        try:
            rows.append(_footprint(s))
        except Exception:
            rows.append((math.nan,) * 4)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _pooled_and_footprints(result: Any, model: str, spatials: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(result, "data_vars"):  # an xarray.Dataset from ExportResult.to_xarray()
        if model not in result.data_vars:
            raise KeyError(
                f"Model {model!r} not in the dataset; variables: {sorted(map(str, result.data_vars))}"
            )
        emb = np.asarray(result[model].values, dtype=np.float64)
        if spatials is None:
            names = ("minlon", "minlat", "maxlon", "maxlat")
            if all(n in result.coords for n in names):
                foot = np.column_stack([np.asarray(result[n].values, dtype=np.float64) for n in names])
            else:  # centres only: a zero-size footprint is drawn as a marker
                lon = np.asarray(result["lon"].values, dtype=np.float64)
                lat = np.asarray(result["lat"].values, dtype=np.float64)
                foot = np.column_stack([lon, lat, lon, lat])
        else:
            foot = roi_footprints(spatials)
    else:
        emb = np.asarray(result.embedding(model), dtype=np.float64)
        foot = roi_footprints(result.spatials if spatials is None else spatials)
    if emb.ndim > 2:  # grid embeddings: pool over the grid to map one colour per ROI
        with np.errstate(all="ignore"):
            emb = np.nanmean(emb.reshape(emb.shape[0], emb.shape[1], -1), axis=2)
    if foot.shape[0] != emb.shape[0]:
        raise ValueError(f"{foot.shape[0]} ROI footprints for {emb.shape[0]} embeddings.")
    return emb, foot


def plot_pooled_map(
    result: Any,
    model: str,
    *,
    mode: str = "pca",
    k: int = 6,
    ax: Any = None,
    path: str | None = None,
    spatials: Iterable[Any] | None = None,
    title: str | None = None,
) -> Any:
    """Map pooled embeddings over their ROI footprints, coloured by PCA (RGB) or k-means class.

    Parameters
    ----------
    result : ExportResult or xarray.Dataset
        A loaded export, or its ``to_xarray()`` dataset.
    model : str
        The model whose embeddings are mapped (grid embeddings are averaged
        over their grid first).
    mode : {"pca", "kmeans"}, default "pca"
        Colour each ROI by the first three principal components as RGB, or by
        its k-means class.
    k : int, default 6
        Number of k-means classes.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; default a new figure.
    path : str, optional
        Write the figure as an image (PNG by extension) here.
    spatials : iterable, optional
        ROI footprints to draw (default: the export's spatials; a dataset
        without ``minlon``/``minlat``/``maxlon``/``maxlat`` coordinates
        shows its ``lon``/``lat`` centres as markers).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Failed ROIs (NaN embeddings) are drawn in light grey.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    if mode not in ("pca", "kmeans"):
        raise ValueError(f"mode must be 'pca' or 'kmeans'; got {mode!r}.")
    emb, foot = _pooled_and_footprints(result, model, spatials)
    grey = np.array(_GREY)
    handles: list[Any] = []
    if mode == "kmeans":
        from matplotlib import colormaps

        labels = kmeans_classes(emb, k)
        cmap = colormaps["tab10" if k <= 10 else "tab20"]
        colours = np.array([cmap(int(c) % cmap.N) if c >= 0 else grey for c in labels])
        handles = [Patch(color=cmap(c % cmap.N), label=f"class {c}") for c in range(int(labels.max()) + 1)]
    else:
        rgb = pca_rgb(emb)
        colours = np.tile(grey, (emb.shape[0], 1))
        ok = np.isfinite(rgb).all(axis=1)
        colours[ok, :3] = rgb[ok]
    fig, ax = _figure(ax, (7, 6))
    drawn = np.isfinite(foot).all(axis=1)
    areal = drawn & (foot[:, 2] > foot[:, 0]) & (foot[:, 3] > foot[:, 1])
    if areal.any():
        f = foot[areal]
        verts = np.stack(
            [f[:, [0, 1]], f[:, [2, 1]], f[:, [2, 3]], f[:, [0, 3]]],
            axis=1,
        )
        ax.add_collection(PolyCollection(list(verts), facecolors=colours[areal], edgecolors="none"))
    points = drawn & ~areal
    if points.any():
        ax.scatter(foot[points, 0], foot[points, 1], c=colours[points], s=30, marker="s")
    if drawn.any():
        x0, y0 = np.nanmin(foot[drawn, 0]), np.nanmin(foot[drawn, 1])
        x1, y1 = np.nanmax(foot[drawn, 2]), np.nanmax(foot[drawn, 3])
        pad_x, pad_y = max(0.02 * (x1 - x0), 1e-4), max(0.02 * (y1 - y0), 1e-4)
        ax.set_xlim(x0 - pad_x, x1 + pad_x)
        ax.set_ylim(y0 - pad_y, y1 + pad_y)
        # degrees of longitude shrink with latitude: keep ground distances square
        ax.set_aspect(1.0 / max(0.05, math.cos(math.radians((y0 + y1) / 2))))
    if (~np.isfinite(emb).all(axis=1)).any():
        handles.append(Patch(color=_GREY, label="failed"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    label = "k-means classes" if mode == "kmeans" else "PCA RGB"
    ax.set_title(title or f"{model}: pooled embeddings of {emb.shape[0]} ROIs ({label})")
    _save(fig, path)
    return fig
