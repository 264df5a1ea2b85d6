"""copernicus: a subset of the Copernicus-Embed map with the product's georeferencing.

EPSG:4326, 0.25 degree pixels centred on multiples of 0.25 degree (edges at
x.125, x.375, ...), 768 float32 bands, covering lon 4.875..6.875 and lat
44.125..45.625 (8 x 6 pixels); pixel (row 1, col 6) is no data (NaN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_cases.precomputed import PrecomputedCase
from rs_embed_dask.core.specs import BBox, PointBuffer, TemporalSpec

__all__ = ["ORIGIN", "write_copernicus_map"]

ORIGIN = (4.875, 45.625)  # west and north edges
SHAPE = (6, 8)


def write_copernicus_map(path: Path, *, seed: int = 0) -> np.ndarray:
    """Write the fixture GeoTIFF at ``path``; return its ``(768, 6, 8)`` values."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    data = (rng.random((768, *SHAPE), dtype=np.float32) * 2 - 1).astype(np.float32)
    data[:, 1, 6] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=SHAPE[1], height=SHAPE[0], count=768, dtype="float32",
        crs="EPSG:4326", transform=Affine(0.25, 0.0, ORIGIN[0], 0.0, -0.25, ORIGIN[1]),
        interleave="pixel",
    ) as dst:  # fmt: skip
        dst.write(data)
    return data


def _setup(directory: Path) -> dict[str, Any]:
    path = directory / "embed_map_310k.tif"
    write_copernicus_map(path)
    return {"path": str(path)}


CASES = {
    "copernicus": PrecomputedCase(
        setup=_setup,
        spatials=(
            BBox(5.2, 44.3, 5.9, 45.1),  # touches 4 x 4 product pixels
            PointBuffer(5.5, 45.0, 2000.0),  # smaller than a pixel
            BBox(4.9, 44.6, 5.4, 45.2),
        ),
        temporal=TemporalSpec.year(2021),
        # touches (row 1, col 5) and the no-data pixel (row 1, col 6); a ROI beyond the map's
        # edge is clipped to it (rs-embed's rule), so it would have no NaN cell
        partial=BBox(6.2, 45.15, 6.6, 45.35),
        outside=BBox(8.0, 44.5, 8.5, 45.0),
        pooled_from_grid=False,
    ),
}
