"""Build a static STAC catalogue of small Cloud-Optimised GeoTIFFs for the tests.

Each scene is one STAC item with one COG per band (as Sentinel-2 L2A is
published), ``eo``, ``proj`` and ``raster`` extension fields, a datetime and
``eo:cloud_cover``.  Pixel values come from the synthetic world
(:class:`rs_embed_dask.providers.synthetic.SyntheticProvider`), so a test can
compute what every pixel must be: a scene written on an EPSG:3857 lattice
window holds exactly ``round(gain * world + offset)``; a scene in UTM or
EPSG:4326 holds the world resampled (nearest) into that CRS.

Asset keys follow the catalogue being imitated: ``"earth-search"`` (``blue``,
``nir08``, ...), ``"planetary-computer"`` (``B02``, ``B8A``, ...) or ``"s1"``
(``vv``, ``vh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.geometry import WEB_MERCATOR, GridWindow
from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider

__all__ = ["ASSET_KEYS", "Scene", "build_catalog", "expected_pixels"]

# fmt: off
_ES = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09",
       "swir16", "swir22")
_COMMON = ("coastal", "blue", "green", "red", "rededge", "rededge", "rededge", "nir", "nir08", "nir09",
           "swir16", "swir22")
_PC = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# fmt: on
#: Per layout: canonical band (``S2_BANDS`` / ``VV``, ``VH``) -> asset key.
ASSET_KEYS: dict[str, dict[str, str]] = {
    "earth-search": dict(zip(S2_BANDS, _ES, strict=True)),
    "planetary-computer": dict(zip(S2_BANDS, _PC, strict=True)),
    "s1": {"VV": "vv", "VH": "vh"},
}
NODATA = 0


@dataclass(frozen=True)
class Scene:
    """One item of the catalogue.

    Attributes
    ----------
    id : str
        Item id.
    when : str
        ISO date (or datetime) of acquisition, UTC.
    window : GridWindow
        The EPSG:3857 lattice window the scene covers (its footprint in any CRS).
    cloud_cover : float
        ``eo:cloud_cover`` in percent.
    crs : str
        CRS the COGs are written in; ``EPSG:3857`` keeps the lattice exactly.
    gain, offset : float
        Values are ``round(gain * world + offset)`` (tell scenes apart).
    nodata_cols : int
        Leftmost columns written as no-data (0), to test gaps and mosaics.
    """

    id: str
    when: str
    window: GridWindow
    cloud_cover: float = 5.0
    crs: str = WEB_MERCATOR
    gain: float = 1.0
    offset: float = 0.0
    nodata_cols: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def expected_pixels(scene: Scene, window: GridWindow, bands: tuple[str, ...]) -> np.ndarray:
    """``(C, H, W)`` float32 values an EPSG:3857 ``scene`` holds under ``window`` (NaN: no data or outside)."""
    world = SyntheticProvider().render(window, None, [S2_BANDS.index(b) for b in bands])
    vals = np.round(scene.gain * world + scene.offset).astype(np.float32)
    sw = scene.window
    cols = np.arange(window.col_off, window.col_off + window.width)
    rows = np.arange(window.row_off, window.row_off + window.height)
    inside_c = (cols >= sw.col_off + scene.nodata_cols) & (cols < sw.col_off + sw.width)
    inside_r = (rows >= sw.row_off) & (rows < sw.row_off + sw.height)
    mask = inside_r[:, None] & inside_c[None, :]
    return np.where(mask[None], vals, np.nan).astype(np.float32)


def _scene_arrays(scene: Scene, bands: tuple[str, ...]) -> tuple[np.ndarray, Any, str]:
    """uint16 ``(C, H, W)`` pixels of a scene in its CRS, their transform and the CRS."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    sw = scene.window
    world = SyntheticProvider().render(sw, None, [S2_BANDS.index(b) for b in bands])
    vals = np.clip(np.round(scene.gain * world + scene.offset), 1, 65535).astype(np.uint16)
    vals[:, :, : scene.nodata_cols] = NODATA
    if scene.crs == WEB_MERCATOR:
        return vals, sw.transform, WEB_MERCATOR
    transform, w, h = calculate_default_transform(
        WEB_MERCATOR, scene.crs, sw.width, sw.height, *sw.bounds, resolution=None
    )
    out = np.zeros((len(bands), h, w), dtype=np.uint16)
    reproject(
        vals, out, src_transform=sw.transform, src_crs=WEB_MERCATOR, dst_transform=transform,
        dst_crs=scene.crs, resampling=Resampling.nearest, src_nodata=NODATA, dst_nodata=NODATA,
    )  # fmt: skip
    return out, transform, scene.crs


def _write_cog(path: Path, band: np.ndarray, transform: Any, crs: str) -> None:
    import rasterio

    with rasterio.open(
        path, "w", driver="COG", width=band.shape[1], height=band.shape[0], count=1,
        dtype=band.dtype, crs=crs, transform=transform, nodata=NODATA, blocksize=32,
    ) as dst:  # fmt: skip
        dst.write(band, 1)


def build_catalog(
    root: Path | str,
    scenes: list[Scene],
    *,
    collection: str = "sentinel-2-l2a",
    layout: str = "earth-search",
    bands: tuple[str, ...] = ("B2", "B3", "B4", "B8"),
) -> str:
    """Write COGs and a self-contained static catalogue under ``root``.

    Parameters
    ----------
    root : path
        Empty folder for the catalogue.
    scenes : list of Scene
        The items.
    collection : str
        Collection id.
    layout : {"earth-search", "planetary-computer", "s1"}
        Asset naming.
    bands : tuple of str
        Canonical bands to write (``S2_BANDS`` names; for ``"s1"``, written
        from the world's B8/B4 digital numbers as ``VV``/``VH``).

    Returns
    -------
    str
        Path of ``catalog.json``.
    """
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension
    from rasterio.warp import transform_bounds

    root = Path(root)
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = ASSET_KEYS[layout]
    src_bands = ("B8", "B4") if layout == "s1" else bands
    names = ("VV", "VH") if layout == "s1" else bands
    items = []
    for sc in scenes:
        arr, transform, crs = _scene_arrays(sc, src_bands)
        bbox = list(transform_bounds(WEB_MERCATOR, "EPSG:4326", *sc.window.bounds))
        ring = [[bbox[i], bbox[j]] for i, j in ((0, 1), (2, 1), (2, 3), (0, 3), (0, 1))]
        geom = {"type": "Polygon", "coordinates": [ring]}
        when = datetime.fromisoformat(sc.when)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        props: dict[str, Any] = {"eo:cloud_cover": float(sc.cloud_cover), **sc.extra}
        if layout == "s1":
            props.pop("eo:cloud_cover")
        item = pystac.Item(sc.id, geom, bbox, when, props, collection=collection)
        EOExtension.add_to(item)
        ProjectionExtension.add_to(item)
        RasterExtension.add_to(item)
        proj = ProjectionExtension.ext(item)
        proj.apply(code=crs, shape=[int(arr.shape[1]), int(arr.shape[2])], transform=list(transform)[:6])
        for i, name in enumerate(names):
            key = keys[name]
            path = data_dir / f"{sc.id}_{key}.tif"
            _write_cog(path, arr[i], transform, crs)
            asset = pystac.Asset(str(path), media_type=pystac.MediaType.COG, roles=["data"])
            item.add_asset(key, asset)
            if layout != "s1":
                idx = S2_BANDS.index(name)
                EOExtension.ext(asset).bands = [Band.create(name=_PC[idx], common_name=_COMMON[idx])]
            RasterExtension.ext(asset).bands = [RasterBand.create(nodata=NODATA, data_type=DataType.UINT16)]
        items.append(item)
    lons = [v for it in items for v in (it.bbox[0], it.bbox[2])]
    lats = [v for it in items for v in (it.bbox[1], it.bbox[3])]
    times = sorted(it.datetime for it in items)
    extent = pystac.Extent(
        pystac.SpatialExtent([[min(lons), min(lats), max(lons), max(lats)]]),
        pystac.TemporalExtent([[times[0], times[-1]]]),
    )
    coll = pystac.Collection(collection, f"test {layout} collection", extent, license="CC-BY-4.0")
    coll.add_items(items)
    catalog = pystac.Catalog("rs-embed-dask-test", "static test catalogue of COGs")
    catalog.add_child(coll)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.normalize_and_save(str(root), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return str(root / "catalog.json")
