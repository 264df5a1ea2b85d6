"""Quick looks at embeddings with matplotlib: PCA pseudocolour images, ROI maps, input patches.

Figures are built with :class:`matplotlib.figure.Figure`, not ``pyplot``, so
nothing here needs a display or switches the user's backend: a script writes
PNGs (``path=``), a notebook shows the returned figure.  New figures use
matplotlib's constrained layout, so axis labels, tick labels, legends and
colour bars stay inside the image.  Colours are stretched between
percentiles (2 and 98 by default), so a few outliers do not wash out the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "input_rgb",
    "kmeans_classes",
    "pca_rgb",
    "plot_grid_pca",
    "plot_input_and_grid",
    "plot_pooled_map",
    "roi_footprints",
    "stretch",
]

#: Colour of failed ROIs (NaN embeddings) on maps.
_GREY = (0.85, 0.85, 0.85, 1.0)
#: Default percentile stretch of every colour channel.
PERCENTILES = (2.0, 98.0)
_LON, _LAT = "longitude (°)", "latitude (°)"


def stretch(values: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Scale each column of ``(N, C)`` values to [0, 1] between two of its percentiles.

    Values below the low percentile become 0, above the high one 1; a column
    without spread becomes 0.5.  Non-finite values stay NaN and are ignored
    when the percentiles are computed.

    Parameters
    ----------
    values : numpy.ndarray
        ``(N, C)`` values, one column per colour channel.
    percentiles : (float, float), default (2, 98)
        The low and high percentile of each column.

    Returns
    -------
    numpy.ndarray
        ``(N, C)`` float64 in [0, 1], NaN where ``values`` is not finite.

    Raises
    ------
    ValueError
        ``values`` is not 2-D, or the percentiles are not ``0 <= low < high <= 100``.
    """
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {tuple(percentiles)!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"stretch needs (N, C) values; got shape {v.shape}.")
    v = np.where(np.isfinite(v), v, np.nan)
    out = np.full(v.shape, np.nan)
    for c in range(v.shape[1]):
        col = v[:, c]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        lo, hi = np.percentile(col[ok], [lo_p, hi_p])
        out[ok, c] = np.clip((col[ok] - lo) / (hi - lo), 0.0, 1.0) if hi > lo else 0.5
    return out


def pca_rgb(x: np.ndarray, *, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Project ``(N, D)`` vectors onto their first 3 principal components, as colours in [0, 1].

    Each component is stretched on its own between two percentiles (see
    :func:`stretch`), so a few outlying vectors do not crowd the others into
    one colour.  Rows with NaN (failed items) come back as NaN.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, D)`` vectors.
    percentiles : (float, float), default (2, 98)
        The stretch of each component; ``(0, 100)`` is a min-max scaling.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float64 colours: components 1, 2 and 3 as red, green and blue.
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
    out[ok] = stretch(comps, percentiles)
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


def _values(a: Any) -> np.ndarray:
    """The array of a numpy array, an :class:`Embedding` (``.data``) or a DataArray (``.values``)."""
    values = getattr(a, "values", None)
    if values is None or callable(values):
        values = getattr(a, "data", a)
    return np.asarray(values, dtype=np.float64)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` colours with NaN as an ``(H, W, 4)`` image, transparent where NaN."""
    ok = np.isfinite(rgb).all(axis=-1)
    return np.concatenate([np.nan_to_num(rgb, nan=0.0), ok[..., None].astype(np.float64)], axis=-1)


def _lonlat_axes(ax: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    """Longitude/latitude labels, a few ticks, and degrees shown at equal ground distance."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(_LON)
    ax.set_ylabel(_LAT)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(useOffset=False, style="plain")
    # degrees of longitude shrink with latitude: keep ground distances square
    ax.set_aspect(1.0 / max(0.05, math.cos(math.radians((y0 + y1) / 2))))


def _show(ax: Any, rgb: np.ndarray, spatial: Any, unit: str) -> None:
    """Draw an ``(H, W, 3)`` image over the lon/lat footprint of ``spatial``, or in ``unit`` indices."""
    extent = None
    if spatial is not None:
        foot = roi_footprints([spatial])[0]
        if not np.isfinite(foot).all():
            raise ValueError(f"spatial must be a BBox, a PointBuffer or their dict; got {spatial!r}.")
        extent = (foot[0], foot[2], foot[1], foot[3])
    ax.imshow(_rgba(rgb), interpolation="nearest", extent=extent)
    if extent is not None:
        _lonlat_axes(ax, extent[0], extent[2], extent[1], extent[3])
    else:
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")


def _grid_rgb(grid: Any, percentiles: tuple[float, float]) -> tuple[np.ndarray, tuple[int, ...]]:
    g = _values(grid)
    if g.ndim != 3:
        raise ValueError(f"plot_grid_pca needs a (D, H, W) grid embedding; got shape {g.shape}.")
    d, h, w = g.shape
    return pca_rgb(g.reshape(d, -1).T, percentiles=percentiles).reshape(h, w, 3), g.shape


def plot_grid_pca(
    grid: Any,
    *,
    spatial: Any = None,
    ax: Any = None,
    path: str | None = None,
    title: str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
) -> Any:
    """Show a grid embedding ``(D, H, W)`` as a PCA pseudocolour image.

    Parameters
    ----------
    grid : array-like or Embedding or xarray.DataArray
        ``(D, H, W)`` values (an object with ``.data`` or ``.values`` works).
    spatial : BBox or PointBuffer or dict, optional
        The ROI of the embedding: the axes are then longitude and latitude.
        Default: grid-cell indices.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes; default a new figure.
    path : str, optional
        Write the figure as an image (PNG by extension) here.
    title : str, optional
        Axes title (default names the shape).
    percentiles : (float, float), default (2, 98)
        The stretch of each principal component (see :func:`pca_rgb`).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        ``grid`` is not 3-D, or ``spatial`` is not a readable ROI.
    """
    rgb, (d, h, w) = _grid_rgb(grid, percentiles)
    fig, ax = _figure(ax, (5.5, 5))
    _show(ax, rgb, spatial, "grid cell")
    ax.set_title(title or f"PCA of a ({d}, {h}, {w}) grid embedding\ncomponents 1-3 as RGB", fontsize=10)
    _save(fig, path)
    return fig


#: Band names shown as red, green and blue when present, first match wins.
_RGB_NAMES = (("B4", "B3", "B2"), ("red", "green", "blue"), ("R", "G", "B"))


def _rgb_channels(n: int, bands: Any, rgb: Any) -> tuple[int, ...]:
    if rgb is not None:
        idx = tuple(int(i) for i in rgb)
        if len(idx) not in (1, 3) or not all(0 <= i < n for i in idx):
            raise ValueError(f"rgb must be 1 or 3 channel indices in [0, {n}); got {tuple(rgb)!r}.")
        return idx
    if bands is not None:
        names = [str(b).lower() for b in bands]
        if len(names) != n:
            raise ValueError(f"bands names {n} channels; got {len(names)} names {list(bands)!r}.")
        for triple in _RGB_NAMES:
            if all(t.lower() in names for t in triple):
                return tuple(names.index(t.lower()) for t in triple)
    return (0, 1, 2) if n >= 3 else (0,)


def input_rgb(
    x_chw: Any,
    *,
    bands: Any = None,
    rgb: Any = None,
    percentiles: tuple[float, float] = PERCENTILES,
) -> np.ndarray:
    """A display image of an input patch: three of its bands as red, green, blue, robust-stretched.

    The channels are ``rgb`` when given, else the bands named ``B4, B3, B2``
    (or ``red, green, blue``) in ``bands``, else the first three (one band
    is shown in grey).  Each channel is stretched between two of its
    percentiles (:func:`stretch`).

    Parameters
    ----------
    x_chw : array-like
        ``(C, H, W)`` values.
    bands : sequence of str, optional
        The name of each channel.
    rgb : sequence of int, optional
        Three channel indices (or one) to show.
    percentiles : (float, float), default (2, 98)
        The stretch of each channel.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` float64 in [0, 1], NaN where an input value is not finite.

    Raises
    ------
    ValueError
        ``x_chw`` is not 3-D, or ``bands``/``rgb`` do not fit its channels.
    """
    x = _values(x_chw)
    if x.ndim != 3:
        raise ValueError(f"input_rgb needs a (C, H, W) patch; got shape {x.shape}.")
    idx = _rgb_channels(x.shape[0], bands, rgb)
    if len(idx) == 1:
        idx = idx * 3
    h, w = x.shape[1:]
    cols = np.stack([x[i].reshape(-1) for i in idx], axis=1)
    return stretch(cols, percentiles).reshape(h, w, 3)


def plot_input_and_grid(
    x_chw: Any,
    grid: Any,
    *,
    bands: Any = None,
    rgb: Any = None,
    spatial: Any = None,
    path: str | None = None,
    title: str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
) -> Any:
    """The input patch (a robust-stretched RGB quick-look) beside the PCA image of its grid embedding.

    Parameters
    ----------
    x_chw : array-like
        ``(C, H, W)`` input patch, e.g. ``inspect_model_input(...,
        return_arrays=True)["frames"][0]["array_chw"]``.
    grid : array-like or Embedding or xarray.DataArray
        ``(D, h, w)`` grid embedding of the same ROI.
    bands : sequence of str, optional
        Channel names of ``x_chw`` (picks ``B4, B3, B2`` as RGB, see :func:`input_rgb`).
    rgb : sequence of int, optional
        Channel indices shown as RGB instead.
    spatial : BBox or PointBuffer or dict, optional
        The ROI: both panels then share longitude/latitude axes.
    path : str, optional
        Write the figure as an image (PNG by extension) here.
    title : str, optional
        Figure title.
    percentiles : (float, float), default (2, 98)
        The stretch of the input bands and of the principal components.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the input, then the embedding.

    Raises
    ------
    ValueError
        ``x_chw`` is not 3-D, ``grid`` is not 3-D, or ``bands``/``rgb``/``spatial`` do not fit.
    """
    from matplotlib.figure import Figure

    image = input_rgb(x_chw, bands=bands, rgb=rgb, percentiles=percentiles)
    emb_rgb, (d, h, w) = _grid_rgb(grid, percentiles)
    n = _values(x_chw).shape[0]
    idx = _rgb_channels(n, bands, rgb)
    names = [str(bands[i]) for i in idx] if bands is not None else [f"channel {i}" for i in idx]
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax_in, ax_emb = fig.subplots(1, 2, sharex=spatial is not None, sharey=spatial is not None)
    _show(ax_in, image, spatial, "pixel")
    shown = ", ".join(names) + (" as RGB" if len(names) == 3 else " in grey")
    ax_in.set_title(f"input patch {image.shape[1]} x {image.shape[0]} px\n{shown}", fontsize=10)
    _show(ax_emb, emb_rgb, spatial, "grid cell")
    ax_emb.set_title(f"grid embedding ({d}, {h}, {w})\nPCA components 1-3 as RGB", fontsize=10)
    if title:
        fig.suptitle(title)
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
    percentiles: tuple[float, float] = PERCENTILES,
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
    percentiles : (float, float), default (2, 98)
        The stretch of each principal component (``mode="pca"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        Unknown ``mode``, or as many footprints as embeddings cannot be found.
    KeyError
        ``model`` is not a variable of the dataset.

    Notes
    -----
    Failed ROIs (NaN embeddings) are drawn in light grey and counted in the
    legend; k-means classes are listed in the legend with their ROI counts.
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
        counts = np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1)
        handles = [
            Patch(color=cmap(c % cmap.N), label=f"class {c} ({counts[c]})") for c in range(int(labels.max()) + 1)
        ]
    else:
        rgb = pca_rgb(emb, percentiles=percentiles)
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
        _lonlat_axes(ax, x0, y0, x1, y1)
    else:
        ax.set_xlabel(_LON)
        ax.set_ylabel(_LAT)
    failed = int((~np.isfinite(emb).all(axis=1)).sum())
    if failed:
        handles.append(Patch(color=_GREY, label=f"failed ({failed})"))
    if handles:
        heading = "k-means class (ROIs)" if mode == "kmeans" else None
        ax.legend(handles=handles, title=heading, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if mode == "kmeans":
        how = f"k-means, k={k}"
    else:
        how = f"PCA components 1-3 as RGB, {percentiles[0]:g}-{percentiles[1]:g} % stretch"
    ax.set_title(title or f"{model}: pooled embeddings of {emb.shape[0]} ROIs\n{how}", fontsize=10)
    _save(fig, path)
    return fig
