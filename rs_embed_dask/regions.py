"""ROIs at scale: tile a region on the common grid, read ROIs from files.

:func:`tile_region` cuts a region (a box, a GeoJSON polygon, a shapely
geometry or a GeoDataFrame) into square tiles of ``tile_m`` metres whose
edges lie on the lines of the common EPSG:3857 pixel lattice
(:mod:`rs_embed_dask.geometry`).  The tile lattice is anchored at the
projection origin, like the pixel lattice: tile ``(row, col)`` covers lattice
pixels ``[col * stride, col * stride + tile)`` and ``[row * stride, row *
stride + tile)`` (``stride = tile - overlap``, in pixels), so every tile is
exactly ``tile_m / scale_m`` pixels a side and two regions that overlap share
identical tiles.  The result is lazy: a continent's millions of tiles are
counted and streamed row by row, never held in memory, which is how
:func:`rs_embed_dask.export_batch` consumes them.

:func:`read_spatials` (from :mod:`rs_embed_dask.export.sources`) streams ROIs
from CSV, GeoJSON and GeoParquet files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import BBox, PointBuffer
from rs_embed_dask.export.sources import read_spatials, to_lonlat_geometry
from rs_embed_dask.geometry import (
    EARTH_RADIUS_M,
    MAX_LAT,
    MERCATOR_HALF_WORLD,
    GridWindow,
    mercator_bounds,
    mercator_to_lonlat,
)

__all__ = ["RegionTiles", "read_spatials", "tile_region"]

#: Edges closer than this (EPSG:3857 metres) count as touching, not overlapping:
#: lon/lat round trips of lattice lines carry errors of ~1e-8 m.
_TOL_M = 1e-6
#: Longest segment (degrees) of a polygon edge before it is projected: edges are
#: straight in lon/lat (RFC 7946), not in Web-Mercator.
_DENSIFY_DEG = 0.01


def _whole_pixels(value: float, scale_m: float, label: str) -> int:
    px = value / scale_m
    n = round(px)
    if abs(px - n) > 1e-9 * max(1.0, abs(px)):
        raise SpecError(
            f"{label} must be a whole number of pixels at scale_m={scale_m:g}; got {label}={value:g} "
            f"({px:g} px): use a multiple of {scale_m:g} m."
        )
    return int(n)


def _check_number(value: Any, label: str, *, positive: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        kind = "a positive number" if positive else "a number >= 0"
        raise SpecError(f"{label} must be {kind} (metres); got {value!r}.")
    return float(value)


class RegionTiles:
    """The tiles of a region on the common grid: a lazy, sized iterable of ``BBox``.

    Built by :func:`tile_region`.  Tiles come in row-major order (north to
    south, west to east) as :class:`~rs_embed_dask.core.specs.BBox` in EPSG:4326
    whose :func:`~rs_embed_dask.geometry.grid_window` at ``scale_m`` is
    exactly ``tile_px`` pixels a side.  ``len()`` counts them without
    building them; iteration streams them; :meth:`partitions` groups them.

    Attributes
    ----------
    tile_m, overlap_m, scale_m : float
        Tile side, overlap between neighbours and pixel size (EPSG:3857 metres).
    tile_px, stride_px : int
        Tile side and tile step in pixels (``stride_px = tile_px - overlap_px``).
    rows, cols : tuple of int
        First and last tile row / column of the region's bounding box.
    """

    def __init__(
        self,
        *,
        tile_m: float,
        overlap_m: float,
        scale_m: float,
        bounds: tuple[float, float, float, float],
        geometry: Any = None,
    ) -> None:
        self.tile_m = float(tile_m)
        self.overlap_m = float(overlap_m)
        self.scale_m = float(scale_m)
        self.tile_px = _whole_pixels(self.tile_m, self.scale_m, "tile_m")
        overlap_px = _whole_pixels(self.overlap_m, self.scale_m, "overlap_m")
        if self.tile_px < 1:
            raise SpecError(
                f"tile_m must be at least one pixel ({self.scale_m:g} m); got tile_m={self.tile_m:g}."
            )
        if overlap_px >= self.tile_px:
            raise SpecError(
                f"overlap_m must be smaller than tile_m; got overlap_m={self.overlap_m:g}, tile_m={self.tile_m:g}."
            )
        self.stride_px = self.tile_px - overlap_px
        self._geometry = geometry  # EPSG:3857 shapely geometry, or None for a box
        self._bounds = bounds
        minx, miny, maxx, maxy = bounds
        step, side = self._step_m, self._side_m
        # tile k spans [k * step, k * step + side); keep those overlapping (minx, maxx) by more than _TOL_M
        c0 = math.floor((minx + _TOL_M - side) / step) + 1
        c1 = math.ceil((maxx - _TOL_M) / step) - 1
        r0 = math.floor((-maxy + _TOL_M - side) / step) + 1
        r1 = math.ceil((-miny - _TOL_M) / step) - 1
        if c1 < c0 or r1 < r0:
            raise SpecError(f"The region has no extent on the grid (bounds {bounds} in EPSG:3857).")
        self.cols = (c0, c1)
        self.rows = (r0, r1)
        west, east = c0 * step, c1 * step + side
        north, south = -r0 * step, -(r1 * step + side)
        if west < -MERCATOR_HALF_WORLD - _TOL_M or east > MERCATOR_HALF_WORLD + _TOL_M:
            raise SpecError(
                f"Tiles of {self.tile_m:g} m along the region's edge would cross the antimeridian "
                "(±180° longitude); keep the region at least one tile away from it or split it."
            )
        if south < -MERCATOR_HALF_WORLD - _TOL_M or north > MERCATOR_HALF_WORLD + _TOL_M:
            raise SpecError(
                f"Tiles of {self.tile_m:g} m along the region's edge would leave the Web-Mercator world "
                f"(latitudes beyond ±{MAX_LAT}°); keep the region at least one tile inside it."
            )
        self._spans: list[tuple[int, tuple[tuple[int, int], ...]]] | None = None
        self._n: int | None = None

    @property
    def _step_m(self) -> float:
        return self.stride_px * self.scale_m

    @property
    def _side_m(self) -> float:
        return self.tile_px * self.scale_m

    @property
    def is_box(self) -> bool:
        """Whether the region is a box (every tile of its bounding lattice is kept)."""
        return self._geometry is None

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)`` of the tile lattice over the region's bounding box."""
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1

    def _row_spans(self) -> Iterator[tuple[int, tuple[tuple[int, int], ...]]]:
        """``(row, ((c0, c1), ...))`` for every tile row that has tiles, north to south."""
        if self._spans is not None:
            yield from self._spans
            return
        r0, r1 = self.rows
        if self._geometry is None:
            for r in range(r0, r1 + 1):
                yield r, (self.cols,)
            return
        spans = []
        for r in range(r0, r1 + 1):
            cols = self._polygon_row(r)
            if cols:
                spans.append((r, cols))
        self._spans = spans  # one entry per tile row: small even for a continent
        yield from spans

    def _polygon_row(self, r: int) -> tuple[tuple[int, int], ...]:
        """Columns of the tiles of row ``r`` that overlap the polygon (with positive area)."""
        import shapely

        step, side = self._step_m, self._side_m
        c0, c1 = self.cols
        top = -r * step
        band = shapely.clip_by_rect(self._geometry, c0 * step, top - side, c1 * step + side, top)
        ranges: list[tuple[int, int]] = []
        # a connected piece of the polygon inside the band projects onto an x interval, and
        # every tile of the band whose x range overlaps that interval overlaps the piece
        for part in shapely.get_parts(band):
            if part.area <= _TOL_M * side:
                continue
            px0, _, px1, _ = part.bounds
            k0 = max(c0, math.floor((px0 + _TOL_M - side) / step) + 1)
            k1 = min(c1, math.ceil((px1 - _TOL_M) / step) - 1)
            if k1 >= k0:
                ranges.append((k0, k1))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for k0, k1 in ranges:
            if merged and k0 <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], k1))
            else:
                merged.append((k0, k1))
        return tuple(merged)

    def __len__(self) -> int:
        if self._n is None:
            if self._geometry is None:
                rows, cols = self.shape
                self._n = rows * cols
            else:
                self._n = sum(k1 - k0 + 1 for _, spans in self._row_spans() for k0, k1 in spans)
        return self._n

    def window(self, row: int, col: int) -> GridWindow:
        """The common-grid window of tile ``(row, col)``."""
        return GridWindow(
            col_off=col * self.stride_px,
            row_off=row * self.stride_px,
            width=self.tile_px,
            height=self.tile_px,
            scale_m=self.scale_m,
        )

    def bbox(self, row: int, col: int) -> BBox:
        """Tile ``(row, col)`` as a ``BBox`` in EPSG:4326 (the same values iteration gives)."""
        for tile in self._row_tiles(row, col, col):
            return tile
        raise AssertionError("unreachable")  # pragma: no cover

    def indices(self) -> Iterator[tuple[int, int]]:
        """``(row, col)`` lattice indices of the tiles, in iteration order."""
        for r, spans in self._row_spans():
            for k0, k1 in spans:
                for c in range(k0, k1 + 1):
                    yield r, c

    def _row_tiles(self, row: int, k0: int, k1: int) -> Iterator[BBox]:
        step, side = self._step_m, self._side_m
        top = -row * step
        lat_n = mercator_to_lonlat(0.0, top)[1]
        lat_s = mercator_to_lonlat(0.0, top - side)[1]
        x0 = np.arange(k0, k1 + 1, dtype=np.float64) * step
        lon0 = np.degrees(x0 / EARTH_RADIUS_M).tolist()
        lon1 = np.degrees((x0 + side) / EARTH_RADIUS_M).tolist()
        for a, b in zip(lon0, lon1, strict=True):
            yield BBox(a, lat_s, b, lat_n)

    def __iter__(self) -> Iterator[BBox]:
        # one span of a row at a time, vectorised; nothing beyond a row is held
        for r, spans in self._row_spans():
            for k0, k1 in spans:
                yield from self._row_tiles(r, k0, k1)

    def partitions(self, n_per_partition: int) -> Iterator[list[BBox]]:
        """Consecutive lists of at most ``n_per_partition`` tiles, in iteration order.

        Parameters
        ----------
        n_per_partition : int
            Tiles per list (>= 1); the last list may be shorter.
        """
        if isinstance(n_per_partition, bool) or not isinstance(n_per_partition, int) or n_per_partition < 1:
            raise SpecError(f"n_per_partition must be an integer >= 1; got {n_per_partition!r}.")
        part: list[BBox] = []
        for tile in self:
            part.append(tile)
            if len(part) == n_per_partition:
                yield part
                part = []
        if part:
            yield part

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minlon, minlat, maxlon, maxlat)`` of the tile lattice over the region."""
        step, side = self._step_m, self._side_m
        lon0, lat0 = mercator_to_lonlat(self.cols[0] * step, -(self.rows[1] * step + side))
        lon1, lat1 = mercator_to_lonlat(self.cols[1] * step + side, -self.rows[0] * step)
        return lon0, lat0, lon1, lat1

    def __repr__(self) -> str:
        n = str(len(self)) if self.is_box or self._n is not None else "?"
        return (
            f"RegionTiles(n={n}, tile_m={self.tile_m:g}, overlap_m={self.overlap_m:g}, scale_m={self.scale_m:g}, "
            f"lattice={self.shape[0]}x{self.shape[1]}, {'box' if self.is_box else 'polygon'})"
        )


def _to_mercator(geom: Any) -> Any:
    """Project a lon/lat shapely geometry to EPSG:3857 (spherical, as the common grid)."""
    import shapely

    minlon, minlat, maxlon, maxlat = geom.bounds
    if minlon < -180.0 - 1e-9 or maxlon > 180.0 + 1e-9:
        raise SpecError(
            f"The region spans longitudes {minlon:g}..{maxlon:g}: it crosses the antimeridian (±180°); "
            "split it into one region on each side."
        )
    if minlat < -90.0 or maxlat > 90.0:
        raise SpecError(f"The region's latitudes {minlat:g}..{maxlat:g} are outside [-90, 90].")
    dense = shapely.segmentize(geom, _DENSIFY_DEG)

    def project(xy: np.ndarray) -> np.ndarray:
        lat = np.clip(xy[:, 1], -MAX_LAT, MAX_LAT)
        x = EARTH_RADIUS_M * np.radians(xy[:, 0])
        y = EARTH_RADIUS_M * np.log(np.tan(np.pi / 4.0 + np.radians(lat) / 2.0))
        return np.column_stack([x, y])

    return shapely.transform(dense, project)


def _polygonal(geom: Any, where: str) -> Any:
    import shapely

    parts = [
        p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty
    ]
    if not parts:
        raise SpecError(
            f"{where} must be a Polygon or MultiPolygon (or a BBox); got {geom.geom_type}. "
            "Points and lines have no area to tile: buffer them first."
        )
    merged = shapely.union_all(parts)
    return merged if merged.is_valid else shapely.make_valid(merged)


def _region_from_geojson(obj: Mapping[str, Any], where: str) -> Any:
    import shapely.geometry

    kind = obj.get("type")
    crs = _geojson_crs(obj)
    if kind == "FeatureCollection":
        geoms = [f.get("geometry") for f in obj.get("features") or []]
    elif kind == "Feature":
        geoms = [obj.get("geometry")]
    elif isinstance(kind, str):
        geoms = [obj]
    else:
        raise SpecError(
            f"{where} is not GeoJSON: it has no 'type' (Feature, FeatureCollection or a geometry)."
        )
    shapes = []
    for i, g in enumerate(geoms):
        if not g:
            continue
        try:
            shapes.append(shapely.geometry.shape(g))
        except Exception as exc:
            raise SpecError(f"{where}: geometry {i} is not valid GeoJSON ({exc}).") from exc
    if not shapes:
        raise SpecError(f"{where} has no geometry.")
    import shapely as _shapely

    return to_lonlat_geometry(_shapely.union_all(shapes), crs, where=where)


def _geojson_crs(obj: Mapping[str, Any]) -> str:
    # RFC 7946 GeoJSON is lon/lat; files from older tools may still carry a named "crs" member
    crs = obj.get("crs")
    if isinstance(crs, Mapping):
        name = (crs.get("properties") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    return "EPSG:4326"


def _region_geometry(region: Any) -> tuple[tuple[float, float, float, float], Any]:
    """``(EPSG:3857 bounds, EPSG:3857 polygon or None for boxes)`` of any region input."""
    if isinstance(region, (BBox, PointBuffer)):
        region.validate()
        return mercator_bounds(region.to_wgs84()), None
    if isinstance(region, (str, os.PathLike)):
        path = os.fspath(region)
        if not os.path.exists(path):
            raise SpecError(f"region file {path!r} does not exist.")
        if path.lower().endswith((".json", ".geojson")):
            with open(path, encoding="utf-8") as f:
                try:
                    obj = json.load(f)
                except ValueError as exc:
                    raise SpecError(f"region file {path!r} is not valid JSON ({exc}).") from exc
            geom = _region_from_geojson(obj, f"region file {path!r}")
        else:
            import geopandas as gpd

            return _region_geometry(gpd.read_file(path))
        where = f"region file {path!r}"
    elif isinstance(region, Mapping):
        geom, where = _region_from_geojson(region, "region (GeoJSON)"), "region (GeoJSON)"
    elif hasattr(region, "geometry") and hasattr(region, "crs") and hasattr(region, "to_crs"):
        if region.crs is None:
            raise SpecError("The region GeoDataFrame has no CRS; set one with gdf.set_crs(...).")
        import shapely

        lonlat = region.to_crs("EPSG:4326") if region.crs.to_epsg() != 4326 else region
        geom, where = shapely.union_all(np.asarray(lonlat.geometry.values)), "region (GeoDataFrame)"
    elif hasattr(region, "geom_type") and hasattr(region, "bounds"):
        geom, where = region, "region (shapely geometry)"
    else:
        raise SpecError(
            "region must be a BBox, a GeoJSON dict (Feature, FeatureCollection or geometry), a path to a "
            f"GeoJSON/vector file, a shapely geometry in EPSG:4326 or a GeoDataFrame; got {type(region).__name__}."
        )
    if geom.is_empty:
        raise SpecError(f"{where} is empty.")
    poly = _to_mercator(_polygonal(geom, where))
    return tuple(float(v) for v in poly.bounds), poly  # type: ignore[return-value]


def tile_region(region: Any, tile_m: float, *, overlap_m: float = 0.0, scale_m: float = 10.0) -> RegionTiles:
    """Cut a region into square tiles on the common grid.

    Parameters
    ----------
    region : BBox, dict, str, os.PathLike, shapely geometry or geopandas.GeoDataFrame
        The area to cover: a ``BBox`` (any CRS, via ``to_wgs84``), a GeoJSON
        Feature, FeatureCollection or geometry (EPSG:4326), a path to a
        GeoJSON file (or any vector file geopandas reads), a shapely
        (Multi)Polygon in EPSG:4326, or a GeoDataFrame (any CRS; its
        geometries are merged).
    tile_m : float
        Tile side in EPSG:3857 metres; a whole number of pixels at ``scale_m``.
    overlap_m : float, default 0.0
        Overlap of neighbouring tiles in metres, a whole number of pixels
        below ``tile_m``; tiles step by ``tile_m - overlap_m``.
    scale_m : float, default 10.0
        Pixel size of the common grid the tiles are aligned to (use the
        ``scale_m`` of the sensor the export fetches).

    Returns
    -------
    RegionTiles
        A lazy, sized iterable of ``BBox`` (EPSG:4326), row-major from the
        north-west.  A box region keeps every tile that overlaps it; a polygon
        region only the tiles that overlap the polygon.

    Raises
    ------
    SpecError
        For sizes that are not whole pixels, a region of an unknown kind, with
        no area, or one that crosses the antimeridian (±180°) or leaves the
        Web-Mercator world.

    Examples
    --------
    >>> tiles = tile_region(BBox(5.0, 45.0, 6.0, 46.0), 2560, scale_m=10)
    >>> len(tiles), next(iter(tiles))  # doctest: +SKIP
    """
    scale = _check_number(scale_m, "scale_m", positive=True)
    tile = _check_number(tile_m, "tile_m", positive=True)
    overlap = _check_number(overlap_m, "overlap_m", positive=False)
    bounds, geometry = _region_geometry(region)
    return RegionTiles(tile_m=tile, overlap_m=overlap, scale_m=scale, bounds=bounds, geometry=geometry)
