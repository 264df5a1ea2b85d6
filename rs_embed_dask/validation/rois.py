"""Every ROI's grid window, checked on the client.

A ROI passes when, at the pixel size of every sensor of the request, its
window on the common grid (:func:`rs_embed_dask.geometry.grid_window`)

- exists: the region is not beyond Web-Mercator's latitude limit (±85.0511°),
  where it would collapse onto the grid's edge;
- does not cross the antimeridian (a ``PointBuffer`` whose square reaches
  past ±180°);
- has at most :func:`max_window_pixels` pixels (default 100,000,000; set
  ``$RS_EMBED_MAX_WINDOW_PIXELS`` to raise or lower it), so one ROI cannot
  ask a worker for terabytes;
- is at least as large as the model's smallest input (e.g. ``rcf``'s kernel).

ROIs given as a list are all checked before anything runs; ROIs streamed
from an iterator are checked as they are read (:func:`checked_stream`), and
the error names the ROI's index.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.geometry import grid_window, mercator_bounds

__all__ = [
    "DEFAULT_MAX_WINDOW_PIXELS",
    "MAX_WINDOW_PIXELS_ENV",
    "WindowRule",
    "check_roi",
    "check_rois",
    "checked_stream",
    "max_window_pixels",
    "window_rules",
]

#: Environment variable holding the largest grid window (pixels per ROI) a request may ask for.
MAX_WINDOW_PIXELS_ENV = "RS_EMBED_MAX_WINDOW_PIXELS"
#: Default of :data:`MAX_WINDOW_PIXELS_ENV`: 10^8 pixels (a 100 km square at 10 m).
DEFAULT_MAX_WINDOW_PIXELS = 100_000_000


def max_window_pixels() -> int:
    """The largest grid window, in pixels per ROI (``$RS_EMBED_MAX_WINDOW_PIXELS``, default 10^8).

    Raises
    ------
    SpecError
        When the variable is set but not a positive integer.
    """
    raw = os.environ.get(MAX_WINDOW_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_WINDOW_PIXELS
    try:
        value = int(float(raw)) if raw.lower().count("e") == 1 else int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(f"${MAX_WINDOW_PIXELS_ENV} must be a positive integer (pixels per ROI); got {raw!r}.")
    return value


@dataclass(frozen=True)
class WindowRule:
    """What one sensor of a request needs of a ROI's window.

    Attributes
    ----------
    scale_m : float or None
        Pixel size in metres; ``None`` for a product that is its own source
        (only the window's existence is checked).
    min_side : int
        Smallest number of pixels on each side the model accepts.
    models : tuple of str
        The models reading this sensor (for messages).
    """

    scale_m: float | None
    min_side: int = 1
    models: tuple[str, ...] = ()


def _min_side(embedder: Any) -> int:
    """Smallest input side a model accepts.

    Models without a fixed input size are not resized, and a convolution of
    ``kernel_size`` needs at least that many pixels (``rcf``).
    """
    try:
        if embedder.resolve_input_size() is not None:
            return 1
    except Exception:
        return 1
    k = getattr(embedder, "kernel_size", None)
    return int(k) if isinstance(k, int) and not isinstance(k, bool) and k > 1 else 1


def window_rules(models: Sequence[Any]) -> tuple[WindowRule, ...]:
    """The distinct window rules of resolved models (:class:`~rs_embed_dask.resolve.ResolvedModel`)."""
    from rs_embed_dask.core.registry import get_model_class

    rules: dict[tuple[float | None, int], list[str]] = {}
    for m in models:
        if m.sensor is None or m.is_precomputed:
            rules.setdefault((None, 1), []).append(m.name)
            continue
        try:
            side = _min_side(get_model_class(m.canonical)(m.config_dict))
        except Exception:  # resolution already built this model; be lenient here
            side = 1
        rules.setdefault((float(m.sensor.scale_m), side), []).append(m.name)
    return tuple(WindowRule(scale, side, tuple(names)) for (scale, side), names in rules.items())


def check_roi(spatial: Any, rules: Iterable[WindowRule], index: int, *, limit: int | None = None) -> None:
    """Raise :class:`SpecError` naming ``spatials[index]`` when a rule's window is not usable."""
    cap = max_window_pixels() if limit is None else limit
    for rule in rules:
        try:
            if rule.scale_m is None:
                mercator_bounds(spatial)
                continue
            w = grid_window(spatial, rule.scale_m)
        except SpecError as exc:
            raise SpecError(f"spatials[{index}]: {exc}") from None
        n = w.width * w.height
        if n > cap:
            raise SpecError(
                f"spatials[{index}]: its grid window at scale_m={rule.scale_m:g} is {w.height} x {w.width} = "
                f"{n:,} pixels, over the limit of {cap:,} pixels per ROI. Split the region into smaller ROIs "
                f"(rs_embed_dask.regions.tile_region), use a coarser scale_m, or raise the limit with the "
                f"environment variable {MAX_WINDOW_PIXELS_ENV}={n}."
            )
        if min(w.width, w.height) < rule.min_side:
            raise SpecError(
                f"spatials[{index}]: its grid window at scale_m={rule.scale_m:g} is {w.height} x {w.width} "
                f"pixels; model(s) {list(rule.models)} need at least {rule.min_side} x {rule.min_side}. "
                "Use a larger ROI or a finer scale_m."
            )


def check_rois(spatials: Sequence[Any], rules: Sequence[WindowRule]) -> None:
    """Check a list of validated ROIs (:func:`check_roi` on each)."""
    cap = max_window_pixels()
    for i, sp in enumerate(spatials):
        check_roi(sp, rules, i, limit=cap)


def checked_stream(items: Iterable[Any], rules: Sequence[WindowRule]) -> Iterator[Any]:
    """Yield ROIs of a stream, checking each as it is read.

    The engine reads the stream chunk by chunk: a bad ROI stops the export
    before its chunk is submitted, with a :class:`SpecError` naming its index;
    the chunks already written stay in the working store, so the export
    resumes (``resume=True``) once the ROI is fixed.
    """
    cap = max_window_pixels()
    for i, sp in enumerate(items):
        check_roi(sp, rules, i, limit=cap)
        yield sp
