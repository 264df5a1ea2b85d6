"""Quick looks at embeddings with matplotlib: PCA pseudocolour and ROI maps."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pca_rgb", "plot_grid_pca", "plot_pooled_map"]


def pca_rgb(x: np.ndarray) -> np.ndarray:
    """Project ``(N, D)`` vectors onto their first 3 principal components, scaled to [0, 1].

    Rows with NaN (failed items) come back as NaN.
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


def plot_grid_pca(grid: Any, *, ax: Any = None, path: str | None = None) -> Any:
    """Show a grid embedding ``(D, H, W)`` as a PCA pseudocolour image."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.asarray(getattr(grid, "values", grid), dtype=np.float64)
    d, h, w = g.shape
    rgb = pca_rgb(g.reshape(d, -1).T).reshape(h, w, 3)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.nan_to_num(rgb), interpolation="nearest")
    ax.set_title(f"PCA of a ({d}, {h}, {w}) grid embedding")
    ax.set_axis_off()
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    return ax


def plot_pooled_map(
    result: Any, model: str, *, mode: str = "pca", k: int = 6, ax: Any = None, path: str | None = None
) -> Any:
    """Map pooled embeddings over their ROI centres, coloured by PCA (RGB) or k-means class."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rs_embed_dask.export.results import spatial_centre

    emb = np.asarray(result.embedding(model), dtype=np.float64)
    xy = np.array([spatial_centre(s) for s in result.spatials], dtype=np.float64)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    if mode == "kmeans":
        from sklearn.cluster import KMeans

        ok = np.isfinite(emb).all(axis=1)
        labels = np.full(emb.shape[0], -1)
        labels[ok] = KMeans(n_clusters=min(k, int(ok.sum())), n_init=4, random_state=0).fit_predict(emb[ok])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=40, marker="s")
        ax.figure.colorbar(sc, ax=ax, label="k-means class")
    else:
        rgb = np.nan_to_num(pca_rgb(emb))
        ax.scatter(xy[:, 0], xy[:, 1], c=rgb, s=40, marker="s")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"{model}: pooled embeddings ({'k-means' if mode == 'kmeans' else 'PCA RGB'})")
    ax.set_aspect("equal", adjustable="datalim")
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    return ax
