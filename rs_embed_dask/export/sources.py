"""ROIs from tabular sources: GeoDataFrames (points with a buffer, polygons as boxes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rs_embed_dask.errors import SpecError
from rs_embed_dask.specs import BBox, PointBuffer

__all__ = ["spatials_from_geodataframe"]


def spatials_from_geodataframe(gdf: Any, *, buffer_m: float | None = None) -> list[Any]:
    """One ROI per row of a GeoDataFrame.

    Points become ``PointBuffer`` (needs a ``buffer_m`` column or argument),
    other geometries their bounding ``BBox``; coordinates are converted from
    the frame's CRS to EPSG:4326.
    """
    if gdf.crs is None:
        raise SpecError("The GeoDataFrame has no CRS; set one with gdf.set_crs(...).")
    g = gdf.to_crs("EPSG:4326") if str(gdf.crs).upper() != "EPSG:4326" else gdf
    buffers = g["buffer_m"] if "buffer_m" in g.columns else None
    return list(_rows(g.geometry, buffers, buffer_m))


def _rows(geoms: Any, buffers: Any, default: float | None) -> Iterator[Any]:
    for i, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            raise SpecError(f"GeoDataFrame row {i} has an empty geometry.")
        if geom.geom_type == "Point":
            b = float(buffers.iloc[i]) if buffers is not None else default
            if b is None:
                raise SpecError("Point geometries need buffer_m= or a 'buffer_m' column.")
            yield PointBuffer(float(geom.x), float(geom.y), b)
        else:
            x0, y0, x1, y1 = geom.bounds
            yield BBox(float(x0), float(y0), float(x1), float(y1))
