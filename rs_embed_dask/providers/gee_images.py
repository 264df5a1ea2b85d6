"""Earth Engine image expressions as rs-embed builds them.

Pure expression building (no request is sent here): the collection, its
bounds / date / scene-cloud filters, an optional per-pixel cloud mask for
Sentinel-2, the Sentinel-1 GRD filters, the composite and the final band
selection.  :class:`Query` keeps a plain-text description of the filters so
errors and fetch metadata can say exactly what was asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rs_embed_dask.core.errors import ProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import WEB_MERCATOR, GridWindow

__all__ = [
    "CLOUD_MASKS",
    "CLOUD_SCORE_PLUS",
    "GSE_ANNUAL",
    "NODATA_SENTINEL",
    "Query",
    "build_query",
    "collection_kind",
    "final_image",
    "resolve_band_aliases",
]

CLOUD_SCORE_PLUS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
GSE_ANNUAL = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
S1_FLOAT = "COPERNICUS/S1_GRD_FLOAT"
S1_DB = "COPERNICUS/S1_GRD"
#: ``cloud_mask`` option values: ``None``, Sentinel-2 scene classification, Cloud Score+.
CLOUD_MASKS = (None, "scl", "cs_plus")
#: Server-side fill for a non-finite ``fill_value`` (JSON has no NaN); mapped back client-side.
NODATA_SENTINEL = -9999.0
#: SCL classes masked by ``cloud_mask="scl"``: cloud shadow, cloud medium / high probability, cirrus.
DEFAULT_SCL_CLASSES = (3, 8, 9, 10)

_S2_ALIASES = {
    "BLUE": "B2", "GREEN": "B3", "RED": "B4", "NIR": "B8", "NIR_BROAD": "B8", "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A", "NIRN": "B8A", "NIRNARROW": "B8A", "NIR_N": "B8A", "RE4": "B8A",
    "RED_EDGE_4": "B8A", "RE1": "B5", "RED_EDGE_1": "B5", "RE2": "B6", "RE3": "B7",
    "SWIR1": "B11", "SWIR_1": "B11", "SWIR2": "B12", "SWIR_2": "B12",
}  # fmt: skip
_L89_ALIASES = {"BLUE": "SR_B2", "GREEN": "SR_B3", "RED": "SR_B4", "NIR": "SR_B5", "SWIR1": "SR_B6", "SWIR2": "SR_B7"}
_L457_ALIASES = {"BLUE": "SR_B1", "GREEN": "SR_B2", "RED": "SR_B3", "NIR": "SR_B4", "SWIR1": "SR_B5", "SWIR2": "SR_B7"}


def collection_kind(collection: str) -> str:
    """``"s2"``, ``"s1"``, ``"landsat"`` or ``"other"`` (rs-embed's substring rules)."""
    c = collection.upper()
    if "COPERNICUS/S2" in c:
        return "s2"
    if c.startswith("COPERNICUS/S1_GRD"):
        return "s1"
    if "LANDSAT/" in c:
        return "landsat"
    return "other"


def resolve_band_aliases(collection: str, bands: tuple[str, ...]) -> tuple[str, ...]:
    """Map rs-embed's band aliases (``RED``, ``NIR``, ``SWIR1``, ...) to the collection's names."""
    kind = collection_kind(collection)
    c = collection.upper()
    if kind == "s2":
        table = _S2_ALIASES
    elif kind == "landsat" and any(s in c for s in ("LC08", "LC09")):
        table = _L89_ALIASES
    elif kind == "landsat":
        table = _L457_ALIASES
    else:
        return tuple(bands)
    return tuple(table.get(b.strip().upper(), b) for b in bands)


@dataclass
class Query:
    """An image collection expression and what it was filtered by."""

    collection_id: str
    collection: Any
    dates: tuple[date, date] | None
    filters: list[str] = field(default_factory=list)
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def describe(self, window: GridWindow) -> str:
        """Collection, window and filters in words (for errors)."""
        when = f"{self.dates[0].isoformat()}..{self.dates[1].isoformat()}" if self.dates else "all dates"
        minlon, minlat, maxlon, maxlat = window.lonlat_bounds()
        return (
            f"collection={self.collection_id!r}, dates {when} (end exclusive), window "
            f"lon {minlon:.5f}..{maxlon:.5f} lat {minlat:.5f}..{maxlat:.5f} "
            f"({window.width}x{window.height} px at {window.scale_m:g} m), "
            f"filters: {', '.join(self.filters) if self.filters else 'none'}"
        )


def region(window: GridWindow) -> Any:
    """The window's rectangle in EPSG:3857 (planar), for ``filterBounds``."""
    import ee

    return ee.Geometry.Rectangle(list(window.bounds), proj=WEB_MERCATOR, geodesic=False)


def _s2_cloud_mask(col: Any, collection: str, mode: str, threshold: float, scl_classes: tuple[int, ...]) -> Any:
    import ee

    if mode == "scl":
        if "S2_SR" not in collection.upper():
            raise ProviderError(
                f"cloud_mask='scl' needs the Sentinel-2 L2A scene classification band (SCL), which "
                f"{collection!r} does not have; use cloud_mask='cs_plus' or a COPERNICUS/S2_SR* collection."
            )
        classes = [int(c) for c in scl_classes]
        return col.map(
            lambda img: img.updateMask(img.select("SCL").remap(classes, [0] * len(classes), 1))
        )
    cs = ee.ImageCollection(CLOUD_SCORE_PLUS)
    return col.linkCollection(cs, ["cs_cdf"]).map(
        lambda img: img.updateMask(img.select("cs_cdf").gte(float(threshold)))
    )


def build_query(
    sensor: SensorSpec,
    dates: tuple[date, date] | None,
    window: GridWindow,
    *,
    cloud_mask: str | None = None,
    cloud_score_threshold: float = 0.6,
    scl_classes: tuple[int, ...] = DEFAULT_SCL_CLASSES,
    require_iw: bool | None = None,
) -> Query:
    """The filtered collection of ``sensor`` over ``window`` and ``dates``.

    Parameters
    ----------
    sensor : SensorSpec
        Collection, scene cloud threshold and (Sentinel-1) orbit / IW options.
    dates : (date, date) or None
        End-exclusive window; ``None`` applies no date filter (as rs-embed).
    window : GridWindow
        The ROI's grid window (its rectangle filters the scenes).
    cloud_mask : {None, "scl", "cs_plus"}
        Per-pixel cloud mask for Sentinel-2 (ignored for other collections).
    require_iw : bool, optional
        Sentinel-1 only: overrides ``sensor.s1_require_iw`` (the relax-on-empty retry).
    """
    import ee

    kind = collection_kind(sensor.collection)
    coll_id = sensor.collection
    extra: dict[str, Any] = {}
    if kind == "s1":
        coll_id = S1_FLOAT if sensor.use_float_linear else S1_DB
    col = ee.ImageCollection(coll_id).filterBounds(region(window))
    filters = ["bounds intersect the window"]
    if dates is not None:
        col = col.filterDate(dates[0].isoformat(), dates[1].isoformat())
        filters.append(f"system:time_start in [{dates[0].isoformat()}, {dates[1].isoformat()})")
    prop = {"s2": "CLOUDY_PIXEL_PERCENTAGE", "landsat": "CLOUD_COVER"}.get(kind)
    if prop is not None:
        col = col.filter(ee.Filter.lte(prop, int(sensor.cloudy_pct)))
        filters.append(f"{prop} <= {int(sensor.cloudy_pct)}")
    if kind == "s2" and cloud_mask is not None:
        col = _s2_cloud_mask(col, sensor.collection, cloud_mask, cloud_score_threshold, scl_classes)
        filters.append(
            f"pixel mask cs_cdf >= {cloud_score_threshold:g}"
            if cloud_mask == "cs_plus"
            else f"pixel mask SCL not in {list(scl_classes)}"
        )
        extra["cloud_mask"] = cloud_mask
    if kind == "s1":
        orbit = (sensor.orbit or "").strip().upper() or None
        if orbit is not None and orbit not in ("ASCENDING", "DESCENDING"):
            raise ProviderError(
                f"SensorSpec.orbit must be 'ASCENDING', 'DESCENDING' or None for Sentinel-1; got {sensor.orbit!r}."
            )
        if orbit is not None:
            col = col.filter(ee.Filter.eq("orbitProperties_pass", orbit))
            filters.append(f"orbitProperties_pass == {orbit}")
        iw = sensor.s1_require_iw if require_iw is None else bool(require_iw)
        if iw:
            col = col.filter(ee.Filter.eq("instrumentMode", "IW"))
            filters.append("instrumentMode == IW")
        for pol in ("VV", "VH"):
            col = col.filter(ee.Filter.listContains("transmitterReceiverPolarisation", pol))
            filters.append(f"transmitterReceiverPolarisation contains {pol}")
        extra.update(
            s1_iw_requested=bool(sensor.s1_require_iw),
            s1_iw_applied=bool(iw),
            s1_iw_relaxed_on_empty=bool(sensor.s1_require_iw and not iw),
            s1_relax_iw_on_empty=bool(sensor.s1_relax_iw_on_empty),
            s1_orbit_requested=sensor.orbit,
            s1_orbit_applied=orbit,
            s1_collection_used=coll_id,
        )
    return Query(collection_id=coll_id, collection=col, dates=dates, filters=filters, extra_meta=extra)


def composite(col: Any, how: str) -> Any:
    """``median()``, or for ``"mosaic"`` the latest scene on top (``sort(time).mosaic()``)."""
    if how == "mosaic":
        return col.sort("system:time_start").mosaic()
    if how == "median":
        return col.median()
    raise ProviderError(f"SensorSpec.composite must be 'median' or 'mosaic'; got {how!r}.")


def server_fill(fill_value: float) -> float:
    """The value masked pixels get on the server (``fill_value``, or the sentinel for NaN/inf)."""
    return float(fill_value) if math.isfinite(float(fill_value)) else NODATA_SENTINEL


def final_image(image: Any, bands: tuple[str, ...], fill_value: float) -> Any:
    """Select ``bands`` in order, as float32, masked pixels filled (also outside the footprint)."""
    return image.select(list(bands)).toFloat().unmask(server_fill(fill_value), False)
