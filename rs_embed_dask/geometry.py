"""The common pixel grid every provider delivers on.

Pixels are squares of ``scale_m`` metres in spherical Web-Mercator
(EPSG:3857), with edges on the lattice anchored at the projection origin, as
rs-embed's Earth Engine path does.  Lattice column ``c`` covers
``x in [c*s, (c+1)*s)``; lattice row ``r`` counts southward from the equator
and covers ``y in [-(r+1)*s, -r*s)``.  A region's window is the set of pixels
whose centres fall inside it (at least the pixel under its centre), so the
same ROI gives the same window, transform and shape whatever the provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import BBox, PointBuffer, SpatialSpec

__all__ = [
    "EARTH_RADIUS_M",
    "MAX_LAT",
    "MERCATOR_HALF_WORLD",
    "WEB_MERCATOR",
    "GridWindow",
    "grid_window",
    "lonlat_to_mercator",
    "mercator_bounds",
    "mercator_to_lonlat",
    "split_window",
    "square_spatial",
]

WEB_MERCATOR = "EPSG:3857"
EARTH_RADIUS_M = 6378137.0
MAX_LAT = 85.05112878
MERCATOR_HALF_WORLD = math.pi * EARTH_RADIUS_M  # 20037508.342789244
_EPS = 1e-9


def lonlat_to_mercator(lon: float, lat: float) -> tuple[float, float]:
    """Project lon/lat degrees to EPSG:3857 metres (latitude clamped to ±85.0511°)."""
    lat_c = max(-MAX_LAT, min(MAX_LAT, float(lat)))
    x = EARTH_RADIUS_M * math.radians(float(lon))
    y = EARTH_RADIUS_M * math.log(math.tan(math.pi / 4.0 + math.radians(lat_c) / 2.0))
    return x, y


def mercator_to_lonlat(x: float, y: float) -> tuple[float, float]:
    """Inverse of :func:`lonlat_to_mercator`."""
    lon = math.degrees(float(x) / EARTH_RADIUS_M)
    lat = math.degrees(2.0 * math.atan(math.exp(float(y) / EARTH_RADIUS_M)) - math.pi / 2.0)
    return lon, lat


def _as_wgs84(spatial: SpatialSpec) -> SpatialSpec:
    if not isinstance(spatial, (BBox, PointBuffer)):
        raise SpecError(f"Invalid spatial spec type: {type(spatial)}")
    return spatial.to_wgs84()


def mercator_bounds(spatial: SpatialSpec) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a ROI in EPSG:3857 metres.

    Raises
    ------
    SpecError
        When the region crosses the antimeridian (±180°), which the common
        grid cannot represent as one window.
    """
    sp = _as_wgs84(spatial)
    if isinstance(sp, PointBuffer):
        cx, cy = lonlat_to_mercator(sp.lon, sp.lat)
        b = float(sp.buffer_m)
        bounds = (cx - b, cy - b, cx + b, cy + b)
    else:
        x0, y0 = lonlat_to_mercator(sp.minlon, sp.minlat)
        x1, y1 = lonlat_to_mercator(sp.maxlon, sp.maxlat)
        bounds = (x0, y0, x1, y1)
    if bounds[0] < -MERCATOR_HALF_WORLD - 1e-6 or bounds[2] > MERCATOR_HALF_WORLD + 1e-6:
        raise SpecError(
            f"The region {spatial} crosses the antimeridian (±180° longitude); split it into "
            "one region on each side."
        )
    if bounds[1] >= bounds[3]:
        raise SpecError(
            f"The region {spatial} has no extent in Web-Mercator (latitudes beyond ±{MAX_LAT}° "
            "collapse onto the grid's edge)."
        )
    return bounds


@dataclass(frozen=True)
class GridWindow:
    """A window of the common grid: lattice offsets, shape and pixel size.

    Attributes
    ----------
    col_off, row_off : int
        Lattice column and row of the top-left pixel.
    width, height : int
        Number of columns and rows.
    scale_m : float
        Pixel size in EPSG:3857 metres.
    """

    col_off: int
    row_off: int
    width: int
    height: int
    scale_m: float

    crs = WEB_MERCATOR

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the pixel edges in EPSG:3857."""
        s = self.scale_m
        return (
            self.col_off * s,
            -(self.row_off + self.height) * s,
            (self.col_off + self.width) * s,
            -self.row_off * s,
        )

    @property
    def transform(self) -> Any:
        """North-up :class:`affine.Affine` of the window (pixel -> EPSG:3857)."""
        from affine import Affine

        minx, _, _, maxy = self.bounds
        return Affine(self.scale_m, 0.0, minx, 0.0, -self.scale_m, maxy)

    @property
    def transform_tuple(self) -> tuple[float, float, float, float, float, float]:
        """The affine transform as ``(a, b, c, d, e, f)`` (GDAL order a..f)."""
        minx, _, _, maxy = self.bounds
        return (float(self.scale_m), 0.0, float(minx), 0.0, -float(self.scale_m), float(maxy))

    def pixel_centers(self) -> tuple[Any, Any]:
        """1-D arrays of pixel-centre x (west to east) and y (north to south)."""
        import numpy as np

        s = self.scale_m
        xs = (np.arange(self.col_off, self.col_off + self.width) + 0.5) * s
        ys = -(np.arange(self.row_off, self.row_off + self.height) + 0.5) * s
        return xs, ys

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """``(minlon, minlat, maxlon, maxlat)`` of the window's edges."""
        minx, miny, maxx, maxy = self.bounds
        lon0, lat0 = mercator_to_lonlat(minx, miny)
        lon1, lat1 = mercator_to_lonlat(maxx, maxy)
        return lon0, lat0, lon1, lat1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (CRS, transform, shape, lattice offsets)."""
        return {
            "crs": WEB_MERCATOR,
            "scale_m": float(self.scale_m),
            "transform": list(self.transform_tuple),
            "shape": [self.height, self.width],
            "col_off": self.col_off,
            "row_off": self.row_off,
        }


#: ROI edges closer than this (EPSG:3857 metres) to a pixel centre count as on it.
#: Lon/lat -> metre round trips carry errors of ~1e-8 m at the world's edge, which
#: a fixed tolerance in *pixels* (1e-9) does not absorb at fine scales (0.3 m).
_EDGE_TOL_M = 1e-6


def _first_index(v: float, tol: float) -> int:
    """Smallest integer ``>= v``, treating ``v`` within ``tol`` of an integer as that integer."""
    k = round(v)
    if abs(v - k) <= tol:
        return int(k)
    return math.ceil(v)


def grid_window(spatial: SpatialSpec, scale_m: float) -> GridWindow:
    """The common-grid window of a ROI at ``scale_m`` metres.

    Parameters
    ----------
    spatial : BBox or PointBuffer
        The ROI (any CRS pyproj knows).
    scale_m : float
        Pixel size in EPSG:3857 metres.

    Returns
    -------
    GridWindow
        Pixels whose centres lie in the ROI; never empty.
    """
    if not (isinstance(scale_m, (int, float)) and scale_m > 0 and math.isfinite(scale_m)):
        raise SpecError(f"scale_m must be a positive number; got {scale_m!r}.")
    s = float(scale_m)
    minx, miny, maxx, maxy = mercator_bounds(spatial)
    tol = max(_EPS, _EDGE_TOL_M / s)
    # column c is inside when minx <= (c + 0.5) s < maxx
    c0 = _first_index(minx / s - 0.5, tol)
    c1 = _first_index(maxx / s - 0.5, tol)
    # row r (centre y = -(r + 0.5) s) is inside when miny < y <= maxy
    r0 = _first_index(-maxy / s - 0.5, tol)
    r1 = _first_index(-miny / s - 0.5, tol)
    if c1 <= c0:
        c0 = math.floor((minx + maxx) / 2.0 / s)
        c1 = c0 + 1
    if r1 <= r0:
        r0 = math.floor(-(miny + maxy) / 2.0 / s)
        r1 = r0 + 1
    return GridWindow(col_off=c0, row_off=r0, width=c1 - c0, height=r1 - r0, scale_m=s)


def square_spatial(spatial: SpatialSpec) -> tuple[SpatialSpec, tuple[float, float, float, float]]:
    """Enlarge a rectangular BBox to the centred EPSG:3857 square around it.

    Returns
    -------
    (spatial, roi_window)
        The square ROI and the original ROI's window inside it as normalised
        ``(y0, y1, x0, x1)`` (rs-embed's ``roi_window_geo``).  PointBuffers and
        already-square boxes come back unchanged with ``(0, 1, 0, 1)``.  When
        the square would leave the valid world the original box is kept.
    """
    full = (0.0, 1.0, 0.0, 1.0)
    sp = _as_wgs84(spatial)
    if isinstance(sp, PointBuffer):
        return sp, full
    minx, miny, maxx, maxy = mercator_bounds(sp)
    w, h = maxx - minx, maxy - miny
    side = max(w, h)
    if abs(w - h) <= 1e-4 * side:
        return sp, full
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    sx0, sx1, sy0, sy1 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
    lon0, lat0 = mercator_to_lonlat(sx0, sy0)
    lon1, lat1 = mercator_to_lonlat(sx1, sy1)
    square = BBox(lon0, lat0, lon1, lat1)
    try:
        square.validate()
        mercator_bounds(square)
    except SpecError:
        return sp, full
    raw = ((sy1 - maxy) / side, (sy1 - miny) / side, (minx - sx0) / side, (maxx - sx0) / side)
    y0, y1, x0, x1 = (min(1.0, max(0.0, v)) for v in raw)  # rounding can step past 0 or 1
    return square, (y0, y1, x0, x1)


def split_window(
    window: GridWindow, *, max_pixels: int | None = None, max_side: int | None = None
) -> list[list[GridWindow]]:
    """Split a window on lattice lines into a row-major grid of sub-windows.

    Every sub-window has at most ``max_pixels`` pixels and ``max_side`` pixels
    a side; sub-windows tile the window exactly (no overlap, no gap), so
    concatenating their arrays row by row reproduces the whole window.

    Returns
    -------
    list of list of GridWindow
        ``parts[i][j]`` is the i-th band of rows (north to south), j-th column.

    Raises
    ------
    SpecError
        When a limit is below 1 (no split could satisfy it).
    """
    for label, limit in (("max_pixels", max_pixels), ("max_side", max_side)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise SpecError(f"split_window {label} must be None or an integer >= 1; got {limit!r}.")
    ny = nx = 1
    while True:
        th = math.ceil(window.height / ny)
        tw = math.ceil(window.width / nx)
        too_tall = max_side is not None and th > max_side
        too_wide = max_side is not None and tw > max_side
        too_big = max_pixels is not None and th * tw > max_pixels
        if not (too_tall or too_wide or too_big):
            break
        if too_tall or (too_big and not too_wide and th >= tw):
            ny += 1
        else:
            nx += 1
    row_edges = [window.height * i // ny for i in range(ny + 1)]
    col_edges = [window.width * j // nx for j in range(nx + 1)]
    return [
        [
            GridWindow(
                col_off=window.col_off + col_edges[j],
                row_off=window.row_off + row_edges[i],
                width=col_edges[j + 1] - col_edges[j],
                height=row_edges[i + 1] - row_edges[i],
                scale_m=window.scale_m,
            )
            for j in range(nx)
        ]
        for i in range(ny)
    ]
