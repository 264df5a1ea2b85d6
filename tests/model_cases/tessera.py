"""tessera: a GeoTessera tile cache written in geotessera's own layout.

Two 0.1-degree cells on either side of the UTM zone 31/32 boundary (6 deg E),
each in its own UTM zone, with 100 m pixels (real tiles have 10 m; the reader
takes the resolution from the land mask, and coarse pixels keep the fixture
small).  Pixels more than about two pixels outside the tile's lon/lat cell
have scale 0 (no data); where neighbouring tiles overlap the western one wins.  The
cell east of them (6.15, 45.05) is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases.precomputed import PrecomputedCase
from rs_embed_dask.core.specs import BBox, PointBuffer, TemporalSpec

__all__ = ["CELLS", "RES_M", "utm_epsg", "write_tessera_cache"]

CELLS: tuple[tuple[float, float], ...] = ((5.95, 45.05), (6.05, 45.05))
RES_M = 100.0


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone of a point."""
    zone = int((lon + 180.0) // 6.0) + 1
    return (32600 if lat >= 0 else 32700) + zone


def write_tessera_cache(
    root: Path, *, year: int = 2021, cells: tuple[tuple[float, float], ...] = CELLS, seed: int = 0
) -> dict[tuple[float, float], dict[str, Any]]:
    """Write tiles under ``root`` (geotessera's ``embeddings_dir`` layout); return their arrays.

    Returns
    -------
    dict
        Per cell centre: ``q`` (int8 ``(H, W, 128)``), ``scales`` (float32
        ``(H, W)``), ``crs`` (EPSG code) and ``transform`` (affine).
    """
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from rasterio.warp import transform_bounds

    rng = np.random.default_rng(seed)
    out: dict[tuple[float, float], dict[str, Any]] = {}
    for lon, lat in cells:
        name = f"grid_{lon:.2f}_{lat:.2f}"
        epsg = utm_epsg(lon, lat)
        x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{epsg}", lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05)
        x0, y0 = np.floor(x0 / RES_M) * RES_M, np.floor(y0 / RES_M) * RES_M
        x1, y1 = np.ceil(x1 / RES_M) * RES_M, np.ceil(y1 / RES_M) * RES_M
        w, h = round((x1 - x0) / RES_M), round((y1 - y0) / RES_M)
        transform = Affine(RES_M, 0.0, x0, 0.0, -RES_M, y1)
        q = rng.integers(-127, 128, size=(h, w, 128), dtype=np.int8)
        scales = rng.uniform(0.01, 0.1, size=(h, w)).astype(np.float32)
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        xs, ys = transform @ (cols, rows)
        plon, plat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(xs, ys)
        # no data beyond a 2-pixel margin around the cell: neighbouring tiles overlap slightly,
        # as UTM rectangles of adjacent lon/lat cells do
        m = 0.003
        inside = (plon >= lon - 0.05 - m) & (plon < lon + 0.05 + m) & (plat >= lat - 0.05 - m) & (plat < lat + 0.05 + m)
        scales[~inside] = 0.0
        emb_dir = root / "global_0.1_degree_representation" / str(year) / name
        emb_dir.mkdir(parents=True, exist_ok=True)
        np.save(emb_dir / f"{name}.npy", q)
        np.save(emb_dir / f"{name}_scales.npy", scales)
        mask_dir = root / "global_0.1_degree_tiff_all"
        mask_dir.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            mask_dir / f"{name}.tiff", "w", driver="GTiff", width=w, height=h, count=1,
            dtype="uint8", crs=f"EPSG:{epsg}", transform=transform,
        ) as dst:  # fmt: skip
            dst.write(inside.astype(np.uint8)[None])
        out[(lon, lat)] = {"q": q, "scales": scales, "crs": epsg, "transform": transform}
    return out


def _setup(directory: Path) -> dict[str, Any]:
    write_tessera_cache(directory)
    return {"cache_dir": str(directory), "download": False}


CASES = {
    "tessera": PrecomputedCase(
        setup=_setup,
        spatials=(
            BBox(5.985, 45.02, 6.015, 45.03),  # across the zone boundary
            PointBuffer(5.93, 45.07, 250.0),
            PointBuffer(6.04, 45.04, 120.0),
        ),
        temporal=TemporalSpec.year(2021),
        partial=BBox(6.09, 45.04, 6.11, 45.05),  # half in the absent cell 6.15
        outside=PointBuffer(6.25, 45.05, 300.0),
    ),
}
