"""Galileo's temporal packaging, as rs-embed 0.3.1 does it (``onthefly_galileo.py``).

* **Mode.** ``temporal_mode="single"``: one composite of the whole window
  (``T = 1``).  ``"multi"``: a series.  ``"auto"`` (default): a series when
  the window spans two or more 30-day frames, else one composite.
* **Frame count** of a series: the number of 30-day frames from the window's
  start (the last one cut at the window's end), at most 12 (Galileo was
  pretrained on monthly series of up to 12 steps); a window that would lose
  30 days or more to that cap gives 12 frames (``stretched``, with a
  warning).  ``n_frames`` pins the count instead (in ``"multi"``, or in
  ``"auto"`` once it resolves to a series).
* **Fetch.** The series is fetched as ``T`` *equal* bins of the window
  (rs-embed's multi-frame fetch), not as the 30-day frames that sized it; a
  bin without imagery is filled by the provider with the whole-window
  composite and **kept** (rs-embed's rule for Galileo: the meta counts the
  distinct frames).
* **Months** (a side input): the month of each equal bin's midpoint, 0
  (January) to 11; ``month`` (rs-embed's ``RS_EMBED_GALILEO_MONTH``, 1-12)
  forces one month for every frame.

Dates are :class:`datetime.date`; bins are end-exclusive ``(start, end)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from rs_embed_dask.models import olmoearth_frames as frames

__all__ = [
    "FRAME_STRIDE_DAYS",
    "MAX_FRAMES",
    "FramePlan",
    "distinct_frame_count",
    "equal_bins",
    "frame_months",
    "plan_frames",
]

FRAME_STRIDE_DAYS = frames.FRAME_STRIDE_DAYS
MAX_FRAMES = frames.MAX_FRAMES
equal_bins = frames.equal_bins


@dataclass(frozen=True)
class FramePlan:
    """How many frames a window gives, and why.

    Attributes
    ----------
    n_frames : int
        Frames fetched (1: one composite).
    mode : {"single", "multi"}
        ``temporal_mode`` after ``"auto"`` is resolved.
    sampling : {"single", "manual", "fixed_stride", "equal_divided"}
        rs-embed's ``temporal_sampling``.
    stretched : bool
        The window exceeded 12 x 30 days and was divided into 12 frames.
    effective_stride_days : int or None
        Days per frame when stretched.
    """

    n_frames: int
    mode: str
    sampling: str
    stretched: bool = False
    effective_stride_days: int | None = None

    def meta(self) -> dict[str, Any]:
        """rs-embed's sampling keys of the embedding meta."""
        out: dict[str, Any] = {
            "temporal_mode": self.mode,
            "temporal_sampling": self.sampling,
            "temporal_spacing_stretched": self.stretched,
        }
        if self.effective_stride_days is not None:
            out["effective_stride_days"] = self.effective_stride_days
        return out


def plan_frames(temporal: Any, mode: str, n_frames: int | None) -> FramePlan:
    """The frame plan of a window (``None``: rs-embed's default window) for ``mode`` and an optional pinned count."""
    start, end = frames.window_of(temporal)
    bins, stretched = frames.temporal_bins(start, end)
    if mode == "auto":
        mode = "multi" if len(bins) >= 2 else "single"
    if mode == "single":
        return FramePlan(1, "single", "single")
    if n_frames is not None:
        return FramePlan(max(1, int(n_frames)), "multi", "manual")
    stride = None
    if stretched:
        stride = round((bins[-1][1] - bins[0][0]).days / max(1, len(bins)))
    return FramePlan(len(bins), "multi", "equal_divided" if stretched else "fixed_stride", stretched, stride)


def frame_months(
    temporal: Any,
    n_frames: int,
    *,
    recorded: Sequence[Mapping[str, Any]] | None = None,
    month: int | None = None,
) -> np.ndarray:
    """``(n_frames,)`` months (0-11) of a series: of each bin's midpoint, or ``month - 1`` for all.

    Bins are the fetch's (``fetch_meta["frames"]``) when it recorded
    ``n_frames`` of them, else ``n_frames`` equal bins of the window.  Like
    rs-embed, a list of months shorter than the series repeats its last one.
    """
    n = max(1, int(n_frames))
    if month is not None:
        return np.full((n,), max(1, min(12, int(month))) - 1, dtype=np.int64)
    if recorded is not None and len(recorded) == n and all("start" in f and "end" in f for f in recorded):
        bins = [(date.fromisoformat(str(f["start"])), date.fromisoformat(str(f["end"]))) for f in recorded]
    else:
        bins = equal_bins(*frames.window_of(temporal), n)
    months = [max(0, min(11, frames.midpoint(a, b).month - 1)) for a, b in bins]
    months += [months[-1]] * (n - len(months))
    return np.asarray(months[:n], dtype=np.int64)


def distinct_frame_count(x: np.ndarray) -> int:
    """Bit-distinct frames of a ``(T, C, H, W)`` series (back-filled empty bins repeat the composite)."""
    seen: list[np.ndarray] = []
    for frame in np.asarray(x):
        if not any(np.array_equal(frame, s) for s in seen):
            seen.append(frame)
    return len(seen)
