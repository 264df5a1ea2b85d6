"""Input inspection reports: per-band statistics of a fetched patch.

The per-item manifest of rs-embed carries, for every saved input, a report
of its values (finite and fill fractions, per-band min/max/mean/std,
quantiles and histograms) and the issues found (NaN/Inf, near-constant bands,
values outside an expected range, patches that are almost all fill).  The
fields and their order are rs-embed's, so its readers find what they expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rs_embed_dask.serialization import jsonable

__all__ = ["input_inspection", "inspect_chw"]

QUANTILES = (0.01, 0.5, 0.99)
HIST_BINS = 32
MAX_ELEMENTS = 1_500_000


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in a]


def inspect_chw(
    x: np.ndarray,
    *,
    name: str = "input",
    fill_value: float | None = 0.0,
    value_range: Sequence[float] | None = None,
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
    report: dict[str, Any] = {"name": name, "ok": True, "issues": [], "shape": list(arr.shape), "dtype": str(arr.dtype)}
    stride = 1
    while arr[:, ::stride, ::stride].size > MAX_ELEMENTS:
        stride += 1
    sample = arr[:, ::stride, ::stride]
    finite = np.isfinite(sample)
    report["finite_frac"] = float(finite.mean()) if sample.size else 0.0
    c = sample.shape[0]
    flat = [sample[b][finite[b]] for b in range(c)]
    nan = float("nan")
    report["band_min"] = [float(f.min()) if f.size else nan for f in flat]
    report["band_max"] = [float(f.max()) if f.size else nan for f in flat]
    report["band_mean"] = [float(f.mean(dtype=np.float64)) if f.size else nan for f in flat]
    report["band_std"] = [float(f.std()) if f.size else nan for f in flat]
    q = np.array(
        [np.quantile(f.astype(np.float64), QUANTILES) if f.size else [nan] * len(QUANTILES) for f in flat]
    )
    names = [f"p{round(p * 100):02d}" for p in QUANTILES]
    report["band_quantiles"] = {n: _floats(np.round(q[:, i], 6)) for i, n in enumerate(names)}
    for n in names:
        report[f"band_{n}"] = report["band_quantiles"][n]
    report["quantiles"] = list(QUANTILES)
    lo, hi = (float(np.nanmin(q[:, 0])), float(np.nanmax(q[:, -1]))) if c and np.isfinite(q).any() else (0.0, 0.0)
    lo, hi = round(lo, 6), round(hi, 6)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1).astype(np.float32)
    counts = [np.histogram(f, bins=edges)[0].astype(int).tolist() for f in flat]
    report["hist_bins"] = _floats(edges)
    report["band_hist"] = counts
    report["hist_range"] = [lo, hi]
    report["hist"] = {"bins": report["hist_bins"], "counts": counts, "range": [lo, hi]}
    report["fill_value"] = None if fill_value is None else float(fill_value)
    fill_frac = float((sample == fill_value).mean()) if fill_value is not None and sample.size else 0.0
    report["fill_frac"] = fill_frac
    issues: list[str] = report["issues"]
    if report["finite_frac"] < 0.999:
        issues.append(f"non-finite values: finite_frac={report['finite_frac']:.4f} < 0.999")
    for b, s in enumerate(report["band_std"]):
        if np.isfinite(s) and s < 1e-6:
            issues.append(f"band {b} is near-constant (std={s:.3g})")
    if value_range is not None:
        vmin, vmax = float(value_range[0]), float(value_range[1])
        vals = sample[finite]
        outside = float(((vals < vmin) | (vals > vmax)).mean()) if vals.size else 0.0
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
