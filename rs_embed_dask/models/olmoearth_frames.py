"""OlmoEarth's temporal packaging, as rs-embed 0.3.1 does it (``onthefly_olmoearth.py``).

* **Bins.** ``temporal_mode="multi"`` (and ``"auto"`` over a window of two or
  more bins) fetches one composite per 30-day bin anchored at the window's
  start, the last bin cut at the window's end, at most 12 bins (OlmoEarth's
  pretraining cadence).  A window that would lose a whole 30 days or more to
  that cap is instead cut into 12 equal bins (``stretched``), with a warning.
* **Empty bins** (no scene in the bin) are dropped from the series, with
  their timestamps; a series without any frame left is an error.
* **Timestamps** are ``(day, month - 1, year)`` integers: of each kept bin's
  start for a series, of the window's midpoint for one composite.

Dates are :class:`datetime.date`; bins are end-exclusive ``(start, end)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "DEFAULT_WINDOW",
    "FRAME_STRIDE_DAYS",
    "MAX_FRAMES",
    "equal_bins",
    "kept_frames",
    "midpoint",
    "temporal_bins",
    "timestamp",
    "window_of",
]

FRAME_STRIDE_DAYS = 30
MAX_FRAMES = 12
#: rs-embed's window when the request gives none (``temporal_to_range(None)``).
DEFAULT_WINDOW = (date(2022, 6, 1), date(2022, 9, 1))


def window_of(temporal: Any) -> tuple[date, date]:
    """``(start, end)`` of a ``TemporalSpec`` (a year is its whole year), rs-embed's default window for ``None``."""
    if temporal is None:
        return DEFAULT_WINDOW
    start, end = temporal.date_range()
    return start, end


def equal_bins(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """rs-embed's ``split_date_range``: ``n`` end-exclusive bins with edges ``start + total * i // n`` days.

    A bin that would be empty (fewer days than bins) is widened to one day,
    or dropped at the window's end.  Also Galileo's and AnySat's bins.
    """
    total = max(1, (end - start).days)
    n = max(1, int(n))
    edges = [start + timedelta(days=(total * i) // n) for i in range(n + 1)]
    edges[-1] = end
    out: list[tuple[date, date]] = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            b = min(end, a + timedelta(days=1))
        if b > a:
            out.append((a, b))
    return out or [(start, end)]


def temporal_bins(
    start: date, end: date, *, stride_days: int = FRAME_STRIDE_DAYS, max_bins: int = MAX_FRAMES
) -> tuple[list[tuple[date, date]], bool]:
    """The time bins of a window and whether they were stretched to equal division.

    Parameters
    ----------
    start, end : datetime.date
        The window, end exclusive (``start < end``).
    stride_days : int, default 30
        Length of the fixed bins.
    max_bins : int, default 12
        Most bins.

    Returns
    -------
    (list of (date, date), bool)
        Fixed ``stride_days`` bins from ``start`` (the last cut at ``end``),
        at most ``max_bins``; or, when that cap would drop ``stride_days`` or
        more of the window's end, ``max_bins`` equal bins (``True``).
    """
    if end <= start:
        raise ModelError(f"olmoearth needs a time window with start < end; got {start} .. {end}")
    fixed: list[tuple[date, date]] = []
    cur = start
    while cur < end and len(fixed) < max_bins:
        nxt = min(end, cur + timedelta(days=stride_days))
        fixed.append((cur, nxt))
        cur = nxt
    if (end - fixed[-1][1]).days < stride_days:
        return fixed, False
    return equal_bins(start, end, max_bins), True


def timestamp(d: date) -> tuple[int, int, int]:
    """OlmoEarth's timestamp of a date: ``(day, month - 1, year)`` (months count from 0)."""
    return d.day, d.month - 1, d.year


def midpoint(start: date, end: date) -> date:
    """The date of ``start + (end - start) / 2`` (a half day rounds down), rs-embed's ``temporal_midpoint_str``."""
    a = datetime(start.year, start.month, start.day)
    return (a + (datetime(end.year, end.month, end.day) - a) / 2).date()


def kept_frames(x: np.ndarray, frames: Sequence[Mapping[str, Any]] | None) -> list[int]:
    """Indices of the frames of a ``(T, C, H, W)`` series that hold imagery.

    A frame is dropped when the provider flagged its bin ``empty`` in
    ``fetch_meta["frames"]`` (Earth Engine, STAC: no scene in the bin; the
    provider filled it with the whole-window composite) or when every value
    of it is NaN (rs-embed's sentinel of an empty bin).
    """
    n = int(x.shape[0])
    flagged = {i for i, f in enumerate(frames or ()) if isinstance(f, Mapping) and f.get("empty")}
    if frames is not None and len(frames) != n:
        flagged = set()
    return [i for i in range(n) if i not in flagged and not bool(np.isnan(x[i]).all())]
