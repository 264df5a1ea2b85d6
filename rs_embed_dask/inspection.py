"""Input inspection reports: per-band statistics of a fetched patch.

The per-item manifest of rs-embed carries, for every saved input, a report
of its values (finite and fill fractions, per-band min/max/mean/std,
quantiles and histograms) and the issues found (NaN/Inf, near-constant bands,
values outside an expected range, patches that are almost all fill).  The
fields and their order are rs-embed's, so its readers find what they expect.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rs_embed_dask.serialization import jsonable

__all__ = [
    "checks_save_dir",
    "input_inspection",
    "inspect_chw",
    "rgb_band_indices",
    "save_quicklook_rgb",
]

QUANTILES = (0.01, 0.5, 0.99)
HIST_BINS = 32
MAX_ELEMENTS = 1_500_000


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in a]


class _BandStats:
    """Per-band statistics of the finite values of a sample, and its histograms.

    ``band_min``/``band_max``/``band_mean``/``band_std`` are lists of floats,
    ``q`` is ``(C, len(QUANTILES))`` float64 (NaN for a band without finite
    values).
    """

    finite_frac: float
    band_min: list[float]
    band_max: list[float]
    band_mean: list[float]
    band_std: list[float]
    q: np.ndarray

    def histograms(self, edges: np.ndarray) -> list[list[int]]:
        raise NotImplementedError

    def outside_frac(self, vmin: float, vmax: float) -> float:
        raise NotImplementedError


class _MaskedStats(_BandStats):
    """The general case: each band's finite values selected by a mask."""

    def __init__(self, sample: np.ndarray) -> None:
        finite = np.isfinite(sample)
        self.sample, self.finite = sample, finite
        self.finite_frac = float(finite.mean()) if sample.size else 0.0
        flat = [sample[b][finite[b]] for b in range(sample.shape[0])]
        nan = float("nan")
        self.flat = flat
        self.band_min = [float(f.min()) if f.size else nan for f in flat]
        self.band_max = [float(f.max()) if f.size else nan for f in flat]
        self.band_mean = [float(f.mean(dtype=np.float64)) if f.size else nan for f in flat]
        self.band_std = [float(f.std()) if f.size else nan for f in flat]
        nq = [nan] * len(QUANTILES)
        self.q = np.array([np.quantile(f.astype(np.float64), QUANTILES) if f.size else nq for f in flat])

    def histograms(self, edges: np.ndarray) -> list[list[int]]:
        return [np.histogram(f, bins=edges)[0].astype(int).tolist() for f in self.flat]

    def outside_frac(self, vmin: float, vmax: float) -> float:
        vals = self.sample[self.finite]
        return float(((vals < vmin) | (vals > vmax)).mean()) if vals.size else 0.0


def _linear_quantile_plan(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and weights of ``np.quantile(a, QUANTILES)`` (``method="linear"``) on ``n`` values.

    The same arithmetic as numpy's: virtual index ``(n - 1) * q``, its floor
    and the next position (both ``-1`` at or past the last value, both ``0``
    before the first), weight ``virtual`` minus the first position.
    """
    q = np.asarray(QUANTILES, dtype=np.float64)
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1
    nxt[above] = -1
    below = virtual < 0
    prev[below] = 0
    nxt[below] = 0
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = np.asarray(virtual - prev_i, dtype=virtual.dtype)
    return prev_i, next_i, gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The interpolation of numpy's quantile, operation for operation (so the result is bit-identical)."""
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe", dtype=np.float64)
    return out


class _SortedStats(_BandStats):
    """All values finite: one sort per band gives the quantiles and histograms.

    Every figure equals the general case's bit for bit: the quantiles are
    np.quantile's interpolation of the same order statistics, the histograms
    np.histogram's counts (the same searchsorted of its float32 edges on the
    band sorted in its own dtype), mean and std the same 1-D reductions of
    the same contiguous values.  Signed zeros are the exception (np.sort may
    turn -0.0 into +0.0, and which zero np.quantile or min picks depends on
    the algorithm): where an order statistic or extreme is zero and the band
    holds a -0.0, that band's extremes and quantiles are computed as in the
    general case.
    """

    def __init__(self, rows: np.ndarray) -> None:
        # rows: (C, N) C-contiguous, N > 0, every value finite.
        self.rows = rows
        self.finite_frac = 1.0
        n = rows.shape[1]
        s = np.sort(rows, axis=1)
        self.sorted = s
        prev_i, next_i, gamma = _linear_quantile_plan(n)
        a = s[:, prev_i].astype(np.float64)
        b = s[:, next_i].astype(np.float64)
        self.q = _lerp(a, b, gamma)
        lo_v, hi_v = s[:, 0], s[:, -1]
        self.band_min = [float(v) for v in lo_v]
        self.band_max = [float(v) for v in hi_v]
        if rows.dtype.kind == "f":
            touches_zero = (a == 0).any(axis=1) | (b == 0).any(axis=1) | (lo_v == 0) | (hi_v == 0)
            for band in np.flatnonzero(touches_zero):
                f = rows[band]
                if np.signbit(f[f == 0]).any():
                    self.band_min[band] = float(f.min())
                    self.band_max[band] = float(f.max())
                    self.q[band] = np.quantile(f.astype(np.float64), QUANTILES)
        self.band_mean = [float(f.mean(dtype=np.float64)) for f in rows]
        self.band_std = [float(f.std()) for f in rows]

    def histograms(self, edges: np.ndarray) -> list[list[int]]:
        if not np.isfinite(edges).all():
            return [np.histogram(f, bins=edges)[0].astype(int).tolist() for f in self.rows]
        first, last = edges[:-1], edges[-1:]
        out = []
        for row in self.sorted:
            cum = np.concatenate((row.searchsorted(first, "left"), row.searchsorted(last, "right")))
            out.append(np.diff(cum).astype(int).tolist())
        return out

    def outside_frac(self, vmin: float, vmax: float) -> float:
        return float(((self.rows < vmin) | (self.rows > vmax)).mean())


def _band_stats(sample: np.ndarray) -> _BandStats:
    c = sample.shape[0]
    if sample.size and sample.dtype.kind in "fiu" and sample.dtype.itemsize <= 8 and sample.dtype.isnative:
        rows = np.ascontiguousarray(sample.reshape(c, -1))
        if rows.dtype.kind != "f" or np.isfinite(rows).all():
            return _SortedStats(rows)
    return _MaskedStats(sample)


def inspect_chw(
    x: np.ndarray,
    *,
    name: str = "input",
    fill_value: float | None = 0.0,
    value_range: Sequence[float] | None = None,
    expected_channels: int | None = None,
) -> dict[str, Any]:
    """A report of a ``(C, H, W)`` array's values.

    Parameters
    ----------
    x : numpy.ndarray
        The patch, ``(C, H, W)``.
    name : str
        A label for the report.
    fill_value : float, optional
        The provider's no-data fill, counted in ``fill_frac``.
    value_range : (float, float), optional
        Values outside it (more than 0.1 %) are an issue.
    expected_channels : int, optional
        A different channel count is an issue (the sensor's band count).

    Returns
    -------
    dict
        ``name, ok, issues, shape, dtype, finite_frac, band_min, band_max,
        band_mean, band_std, band_quantiles, band_p01, band_p50, band_p99,
        quantiles, hist_bins, band_hist, hist_range, hist, fill_value,
        fill_frac`` (+ ``outside_range_frac``, ``downsample_stride``).
    """
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"inspect_chw expects a (C, H, W) array, got shape {arr.shape}")
    report: dict[str, Any] = {
        "name": name,
        "ok": True,
        "issues": [],
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
    }
    stride = 1
    while arr[:, ::stride, ::stride].size > MAX_ELEMENTS:
        stride += 1
    sample = arr[:, ::stride, ::stride]
    stats = _band_stats(sample)
    report["finite_frac"] = stats.finite_frac
    c = sample.shape[0]
    report["band_min"] = stats.band_min
    report["band_max"] = stats.band_max
    report["band_mean"] = stats.band_mean
    report["band_std"] = stats.band_std
    q = stats.q
    names = [f"p{round(p * 100):02d}" for p in QUANTILES]
    report["band_quantiles"] = {n: _floats(np.round(q[:, i], 6)) for i, n in enumerate(names)}
    for n in names:
        report[f"band_{n}"] = report["band_quantiles"][n]
    report["quantiles"] = list(QUANTILES)
    lo, hi = (
        (float(np.nanmin(q[:, 0])), float(np.nanmax(q[:, -1]))) if c and np.isfinite(q).any() else (0.0, 0.0)
    )
    lo, hi = round(lo, 6), round(hi, 6)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1).astype(np.float32)
    counts = stats.histograms(edges)
    report["hist_bins"] = _floats(edges)
    report["band_hist"] = counts
    report["hist_range"] = [lo, hi]
    report["hist"] = {"bins": report["hist_bins"], "counts": counts, "range": [lo, hi]}
    report["fill_value"] = None if fill_value is None else float(fill_value)
    fill_frac = float((sample == fill_value).mean()) if fill_value is not None and sample.size else 0.0
    report["fill_frac"] = fill_frac
    issues: list[str] = report["issues"]
    if expected_channels is not None and c != int(expected_channels):
        issues.append(f"channel mismatch: C={c}, expected {int(expected_channels)}")
    if report["finite_frac"] < 0.999:
        issues.append(f"non-finite values: finite_frac={report['finite_frac']:.4f} < 0.999")
    for b, s in enumerate(report["band_std"]):
        if np.isfinite(s) and s < 1e-6:
            issues.append(f"band {b} is near-constant (std={s:.3g})")
    if value_range is not None:
        vmin, vmax = float(value_range[0]), float(value_range[1])
        outside = stats.outside_frac(vmin, vmax)
        report["outside_range_frac"] = outside
        if outside > 0.001:
            issues.append(f"{outside:.2%} of values outside [{vmin}, {vmax}]")
    if fill_frac > 0.98:
        issues.append(f"fill_frac={fill_frac:.4f} > 0.98: the patch is almost all no-data")
    if stride > 1:
        report["downsample_stride"] = stride
    report["ok"] = not issues
    return report


def input_inspection(x: np.ndarray, sensor: Any, *, name: str) -> dict[str, Any]:
    """The ``inspection`` entry of a per-item manifest's ``input`` reference.

    A ``(T, C, H, W)`` input is inspected on its first frame that is not
    all fill (``inspected_frame``).
    """
    arr = np.asarray(x)
    fill = sensor.get("fill_value", 0.0) if isinstance(sensor, dict) else getattr(sensor, "fill_value", 0.0)
    frame: int | None = None
    chw = arr
    if arr.ndim == 4:
        frame = 0
        for t in range(arr.shape[0]):
            if not np.all(arr[t] == fill):
                frame = t
                break
        chw = arr[frame]
    report = inspect_chw(chw, name=name, fill_value=fill)
    return {
        "ok": report["ok"],
        "report": report,
        "sensor": jsonable(sensor),
        "input_ndim": int(arr.ndim),
        "n_frames": int(arr.shape[0]) if arr.ndim == 4 else None,
        "inspected_frame": frame,
    }


def checks_save_dir(sensor: Any = None) -> str | None:
    """Where quick-look PNGs go: ``$RS_EMBED_CHECK_SAVE_DIR``, else ``sensor.check_save_dir``."""
    env = os.environ.get("RS_EMBED_CHECK_SAVE_DIR")
    if env:
        return env
    d = getattr(sensor, "check_save_dir", None)
    return str(d) if d else None


def rgb_band_indices(bands: Sequence[str] | None, n_channels: int) -> tuple[int, int, int]:
    """Channels of a true-colour quick-look: ``B4, B3, B2`` when the band names have them, else ``0, 1, 2``."""
    names = [str(b).upper() for b in (bands or ())]
    if len(names) == n_channels and {"B4", "B3", "B2"} <= set(names):
        return names.index("B4"), names.index("B3"), names.index("B2")
    return 0, 1, 2


def save_quicklook_rgb(
    x_chw: np.ndarray,
    *,
    path: str,
    bands: tuple[int, int, int] = (0, 1, 2),
    pmin: float = 2.0,
    pmax: float = 98.0,
) -> str:
    """Write a PNG of three channels, each stretched between its ``pmin`` and ``pmax`` percentiles.

    Non-finite values count as 0; a channel without spread is black.  Needs
    matplotlib (``pip install 'rs-embed-dask[plot]'``).

    Parameters
    ----------
    x_chw : numpy.ndarray
        ``(C, H, W)`` with ``C > max(bands)``.
    path : str
        The PNG to write (its directory is created).
    bands : (int, int, int), default (0, 1, 2)
        The channels shown as red, green and blue.
    pmin, pmax : float, default 2 and 98
        The percentile stretch.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        ``x_chw`` is not 3-D or has too few channels.
    ImportError
        matplotlib is not installed.
    """
    arr = np.asarray(x_chw)
    if arr.ndim != 3:
        raise ValueError(f"save_quicklook_rgb expects a (C, H, W) array, got shape {arr.shape}")
    if max(bands) >= arr.shape[0]:
        raise ValueError(f"bands={tuple(bands)} out of range for C={arr.shape[0]}")
    from matplotlib.image import imsave

    rgb = np.nan_to_num(
        np.stack([arr[b] for b in bands], axis=-1).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0
    )
    out = np.zeros_like(rgb)
    for ch in range(3):
        lo, hi = np.percentile(rgb[..., ch], (pmin, pmax))
        if hi > lo + 1e-6:
            out[..., ch] = (rgb[..., ch] - lo) / (hi - lo)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    imsave(path, np.clip(out, 0.0, 1.0), format="png")
    return path
