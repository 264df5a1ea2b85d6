"""A GeoTessera tile cache in geotessera 0.10's offline layout, read by both packages.

rs-embed 0.3.1 builds ``GeoTessera(cache_dir=$RS_EMBED_TESSERA_CACHE)`` and
calls ``registry.load_blocks_for_region`` and ``fetch_embeddings``.
geotessera 0.10 keeps only its registry files under ``cache_dir`` and looks
for tiles under ``embeddings_dir``, which rs-embed leaves at its default, the
process's working directory.  Ours reads the tiles directly under its
``cache_dir`` (the same ``$RS_EMBED_TESSERA_CACHE``).  One folder serves both::

    <folder>/v1/manifest.parquet          embeddings manifest (year, lon, lat, grid_size, ...),
                                          sorted as geotessera's manifest writer sorts it
    <folder>/v1/landmasks.parquet         land-mask registry (lon, lat, file_size)
    <folder>/global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>.npy
    <folder>/global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>_scales.npy
    <folder>/global_0.1_degree_tiff_all/grid_<lon>_<lat>.tiff      (UTM CRS and transform)

and the rs-embed side runs its tessera cases with that folder as working
directory; geotessera's downloads are replaced by an immediate failure there
(:func:`offline_geotessera`), so the cached registry files are used.

The tiles: 0.1-degree cells around the UTM zone 32/33 boundary (12 E), each
the UTM rectangle of its cell snapped outward to a 40 m lattice of its zone
(real tiles have 10 m pixels; coarser ones keep the files small and the
readers take the resolution from the land mask).  A pixel's int8 vector and
scale depend on the seed, the zone and the pixel's lattice row and column only,
so neighbouring tiles of one zone agree where they overlap; every pixel is
valid (a positive scale).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["CELLS", "RES_M", "YEAR", "offline_geotessera", "write_tessera"]

#: cell centres (lon, lat) written: 2 x 2 cells around (12.0, 47.3), plus one cell further west
CELLS: tuple[tuple[float, float], ...] = ((11.95, 47.25), (11.95, 47.35), (12.05, 47.25), (12.05, 47.35), (11.85, 47.25))
RES_M = 40.0
YEAR = 2021


def _utm_epsg(lon: float, lat: float) -> int:
    return (32600 if lat >= 0 else 32700) + int((lon + 180.0) // 6.0) + 1


def _hash(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = rows.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= cols.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        x ^= np.uint64(key & (2**64 - 1))
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mul)
        return x ^ (x >> np.uint64(31))


def _key(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def write_tessera(folder: str | Path, seed: int, cells: Iterable[tuple[float, float]] = CELLS, year: int = YEAR) -> Path:
    """Write (once per seed) the tile cache and registry files into ``folder``; return it."""
    import pandas as pd  # type: ignore[import-untyped]
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    folder = Path(folder)
    stamp = folder / f".parity-seed-{seed}"
    if stamp.exists():
        return folder
    rows_m, rows_l = [], []
    for lon, lat in cells:
        name = f"grid_{lon:.2f}_{lat:.2f}"
        epsg = _utm_epsg(lon, lat)
        x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{epsg}", lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05)
        c0, c1 = math.floor(x0 / RES_M), math.ceil(x1 / RES_M)
        r0, r1 = math.floor(-y1 / RES_M), math.ceil(-y0 / RES_M)  # lattice rows count southward from y = 0
        h, w = r1 - r0, c1 - c0
        transform = Affine(RES_M, 0.0, c0 * RES_M, 0.0, -RES_M, -r0 * RES_M)
        rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        q = np.empty((h, w, 128), dtype=np.int8)
        for b in range(128):
            q[:, :, b] = (_hash(rr, cc, _key(seed, "tessera", year, epsg, b)) % np.uint64(255)).astype(np.int16) - 127
        u = (_hash(rr, cc, _key(seed, "tessera-scale", year, epsg)) >> np.uint64(11)).astype(np.float64) / 2.0**53
        scales = (0.01 + 0.09 * u).astype(np.float32)
        emb_dir = folder / "global_0.1_degree_representation" / str(year) / name
        emb_dir.mkdir(parents=True, exist_ok=True)
        np.save(emb_dir / f"{name}.npy", q)
        np.save(emb_dir / f"{name}_scales.npy", scales)
        mask_dir = folder / "global_0.1_degree_tiff_all"
        mask_dir.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            mask_dir / f"{name}.tiff", "w", driver="GTiff", width=w, height=h, count=1,
            dtype="uint8", crs=f"EPSG:{epsg}", transform=transform,
        ) as dst:  # fmt: skip
            dst.write(np.ones((1, h, w), np.uint8))
        rows_m.append({"year": year, "lon": round(lon, 2), "lat": round(lat, 2),
                       "grid_size": int((emb_dir / f"{name}.npy").stat().st_size),
                       "scales_size": int((emb_dir / f"{name}_scales.npy").stat().st_size)})  # fmt: skip
        rows_l.append({"lon": round(lon, 2), "lat": round(lat, 2),
                       "file_size": int((mask_dir / f"{name}.tiff").stat().st_size)})  # fmt: skip
    reg = folder / "v1"
    reg.mkdir(parents=True, exist_ok=True)
    man = pd.DataFrame(rows_m).sort_values(["year", "lon", "lat"])  # geotessera's manifest order
    for df in (man,):
        df["lon_i"] = (df["lon"] * 100).round().astype(np.int32)
        df["lat_i"] = (df["lat"] * 100).round().astype(np.int32)
    man.to_parquet(reg / "manifest.parquet", index=False)
    lm = pd.DataFrame(rows_l).sort_values(["lon", "lat"])
    lm.to_parquet(reg / "landmasks.parquet", index=False)
    stamp.write_text("ok")
    return folder


def offline_geotessera() -> None:
    """rs-embed environment only: geotessera's HTTP downloads fail at once (no retries on a dead network)."""
    import geotessera.registry as reg

    def refuse(url: str, *args: object, **kwargs: object) -> str:
        raise ConnectionError(f"offline (parity harness): {url}")

    reg.download_file_to_temp = refuse
