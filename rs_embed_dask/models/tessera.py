"""``tessera``: GeoTessera annual embeddings (128-d, 10 m), read from a local tile cache.

GeoTessera publishes one tile per 0.1 x 0.1 degree cell and year, each in the
UTM zone of the cell: an ``int8`` array ``(H, W, 128)`` with a ``float32``
scale per pixel (``(H, W)`` or ``(H, W, 128)``) and a land-mask GeoTIFF that
carries the tile's UTM CRS and transform.  The files sit under an
``embeddings_dir`` in geotessera's own layout::

    <cache>/global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>.npy
    <cache>/global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>_scales.npy
    <cache>/global_0.1_degree_tiff_all/grid_<lon>_<lat>.tiff

Tiles are located with geotessera's path helpers
(:func:`geotessera.registry.tile_from_world`, ``tile_to_embedding_paths``,
``tile_to_landmask_filename``) and opened with :meth:`geotessera.tiles.Tile.from_npy`
(CRS and transform from the land mask).  The ROI is read as rs-embed 0.3.1
reads it (checked against rs-embed by the parity comparison, ``make parity``):

- the window is every pixel of the common EPSG:3857 grid (10 m) the ROI
  touches, its edges snapped outward (rs-embed's ``common_grid``; see
  :func:`~rs_embed_dask.models.precomputed.touched_grid_window`);
- each window pixel takes the tile pixel that contains its centre projected
  into the tile's UTM zone with pyproj (``floor`` of the inverse affine), so
  tiles of different UTM zones mosaic without a seam and every output vector
  is an actual product vector;
- where tiles overlap, the first tile in geotessera's manifest order
  (longitude, then latitude) wins.

Only the tile pixels under the ROI are gathered from the memory-mapped
``.npy`` files and dequantised as :func:`geotessera.dequantize_embedding`
does (int8 to float32, times the scale).

Missing tiles are downloaded with :class:`geotessera.GeoTessera` when
``download`` is true (network needed); otherwise (or when the tile does not
exist) their pixels are NaN.  A pixel whose scale is not a positive finite
number is no data (NaN).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import SpatialSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow
from rs_embed_dask.models.precomputed import PrecomputedEmbedder, sample_nearest, touched_grid_window

__all__ = ["TesseraEmbedder", "default_cache_dir"]

CACHE_ENV = "RS_EMBED_TESSERA_CACHE"
_TILE_DEG = 0.1


def default_cache_dir() -> Path:
    """``$RS_EMBED_TESSERA_CACHE``, else ``~/.cache/rs_embed/tessera``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/rs_embed/tessera").expanduser()


def _tile_centres(lonlat: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Centres (geotessera's naming) of the 0.1-degree tiles a lon/lat box touches."""
    from geotessera.registry import tile_from_world

    lon0, lat0, lon1, lat1 = lonlat
    # tile_from_world rejects |lon| > 180: clamp the window's (pixel-edge) bounds
    lon0, lon1 = max(-180.0, lon0), min(179.999999, lon1)
    lat0, lat1 = max(-90.0, lat0), min(89.999999, lat1)
    c_lon0, c_lat0 = tile_from_world(lon0, lat0)
    c_lon1, c_lat1 = tile_from_world(lon1, lat1)
    n_lon = round((c_lon1 - c_lon0) / _TILE_DEG) + 1
    n_lat = round((c_lat1 - c_lat0) / _TILE_DEG) + 1
    # geotessera's manifest order (year, lon, lat), in which rs-embed receives the tiles
    return [
        (round(c_lon0 + i * _TILE_DEG, 2), round(c_lat0 + j * _TILE_DEG, 2))
        for i in range(n_lon)
        for j in range(n_lat)
    ]


class TesseraEmbedder(PrecomputedEmbedder):
    """GeoTessera embeddings on the common EPSG:3857 grid.

    ``model_config`` keys: ``cache_dir`` (geotessera ``embeddings_dir``;
    default ``$RS_EMBED_TESSERA_CACHE`` or ``~/.cache/rs_embed/tessera``),
    ``download`` (bool, default ``True``: fetch missing tiles with geotessera),
    ``registry_dir`` (a folder with geotessera's ``registry.parquet`` /
    ``landmasks.parquet`` for downloads without fetching the registry) and
    ``scale_m`` (grid pixel size, default 10).
    """

    name = "tessera"
    requires = ("geotessera", "rasterio")
    extra = "tessera"
    config_keys = frozenset({"cache_dir", "download", "registry_dir", "scale_m"})
    embedding_dim = 128
    product = "GeoTessera annual embeddings"
    source = "geotessera (dl2.geotessera.org tiles, local cache)"
    native_crs = "UTM zone of each 0.1-degree tile (EPSG:326xx / 327xx)"
    native_resolution = "10 m"
    default_scale_m = 10.0
    default_year = 2021
    warn_default_year = True
    resampling = "nearest"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        download = self.model_config.get("download", True)
        if not isinstance(download, bool):
            raise ModelError(f"tessera model_config 'download' must be True or False; got {download!r}.")
        self.download = download
        cache = self.model_config.get("cache_dir")
        self.cache_dir = Path(cache).expanduser() if cache else default_cache_dir()
        reg = self.model_config.get("registry_dir")
        self.registry_dir = Path(reg).expanduser() if reg else None
        self._tiles: OrderedDict[tuple[int, float, float], Any] = OrderedDict()
        self._client: Any = None
        self._io_lock = threading.Lock()

    def describe_extra(self) -> dict[str, Any]:
        """Access and year rules."""
        return {
            "temporal": (
                "annual: TemporalSpec.year(y); a range uses its start year (warning); "
                "None uses 2021 (warning)"
            ),
            "access": (
                f"geotessera tile cache at model_config['cache_dir'] or ${CACHE_ENV} "
                "(geotessera's embeddings_dir layout; fill it with `geotessera download`); "
                "missing tiles are downloaded when model_config['download'] is true"
            ),
            "model_config": {
                "cache_dir": str(self.cache_dir),
                "download": self.download,
                "registry_dir": None if self.registry_dir is None else str(self.registry_dir),
                "scale_m": self.grid_scale_m(None),
            },
        }

    # -- tiles -----------------------------------------------------------------------------------
    def _paths(self, year: int, lon: float, lat: float) -> tuple[Path, Path, Path]:
        from geotessera.registry import (
            EMBEDDINGS_DIR_NAME,
            LANDMASKS_DIR_NAME,
            tile_to_embedding_paths,
            tile_to_landmask_filename,
        )

        emb, scales = tile_to_embedding_paths(lon, lat, year)
        base = self.cache_dir / EMBEDDINGS_DIR_NAME
        landmask = self.cache_dir / LANDMASKS_DIR_NAME / tile_to_landmask_filename(lon, lat)
        return base / emb, base / scales, landmask

    def _download(self, year: int, lon: float, lat: float) -> None:
        """Fetch one tile into the cache with geotessera (network)."""
        try:
            if self._client is None:
                from geotessera import GeoTessera

                self._client = GeoTessera(
                    embeddings_dir=self.cache_dir,
                    registry_dir=None if self.registry_dir is None else self.registry_dir,
                )
            # False when the cell is not in the registry (no coverage): its pixels stay NaN
            self._client.download_tile(lon, lat, year)
        except Exception as exc:
            raise ModelError(
                f"tessera could not download tile grid_{lon:.2f}_{lat:.2f} ({year}) into "
                f"{self.cache_dir}: {exc!r}. Pre-fill the cache with `geotessera download` "
                "or pass model_config={'download': False} to treat missing tiles as no data."
            ) from exc

    def _tile(self, year: int, lon: float, lat: float) -> Any:
        """The geotessera ``Tile`` of a cell (CRS and transform loaded), or ``None`` when absent."""
        key = (year, lon, lat)
        with self._io_lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
            emb, scales, landmask = self._paths(year, lon, lat)
            present = emb.exists() and scales.exists() and landmask.exists()
            if not present and self.download:
                self._download(year, lon, lat)
                present = emb.exists() and scales.exists() and landmask.exists()
            tile = None
            if present:
                from geotessera.tiles import Tile

                try:
                    tile = Tile.from_npy(emb, self.cache_dir)
                except Exception as exc:
                    raise ModelError(f"tessera could not open tile {emb}: {exc!r}") from exc
            self._tiles[key] = tile
            while len(self._tiles) > 256:
                self._tiles.popitem(last=False)
            return tile

    def window_for(self, spatial: SpatialSpec, sensor: Any) -> GridWindow:
        """Every common-grid pixel the ROI touches (rs-embed's ``common_grid``: edges snapped outward)."""
        return touched_grid_window(spatial, self.grid_scale_m(sensor))

    def _fill_from_tile(self, tile: Any, window: GridWindow, out: np.ndarray, filled: np.ndarray) -> bool:
        """Write ``tile``'s nearest pixels into the unfilled cells of ``out``; whether any landed."""
        rows, cols, inside = sample_nearest(window, tile.crs, tile.transform, (tile.height, tile.width))
        inside &= ~filled  # the first tile (geotessera's manifest order) wins where tiles overlap
        if not inside.any():
            return False
        q = np.load(tile._embedding_path, mmap_mode="r")
        s = np.load(tile._scales_path, mmap_mode="r")
        if q.shape[:2] != (tile.height, tile.width):
            raise ModelError(
                f"tessera tile {tile.grid_name} ({tile.year}): embedding shape {q.shape} does not match "
                f"its land mask ({tile.height}, {tile.width})."
            )
        r, c = rows[inside], cols[inside]
        ss = np.asarray(s[r, c], dtype=np.float32)
        # geotessera's dequantize_embedding on the gathered pixels: int8 -> float32 times the scale
        vals = np.asarray(q[r, c]).astype(np.float32) * (ss[:, None] if ss.ndim == 1 else ss)  # (N, 128)
        scale_px = ss if ss.ndim == 1 else ss.min(axis=-1)
        vals[~(np.isfinite(scale_px) & (scale_px > 0))] = np.nan
        out[:, inside] = vals.T
        filled |= inside
        return True

    def read_window(
        self, window: GridWindow, spatial: SpatialSpec, temporal: TemporalSpec | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Mosaic the tiles under ``window`` (any UTM zones) onto the common grid, nearest pixel."""
        if temporal is None or temporal.year is None:
            raise ModelError("tessera reads one product year: pass TemporalSpec.year(...).")
        year = int(temporal.year)
        out = np.full((self.embedding_dim, *window.shape), np.nan, dtype=np.float32)
        filled = np.zeros(window.shape, dtype=bool)
        used: list[str] = []
        missing: list[str] = []
        zones: set[str] = set()
        for lon, lat in _tile_centres(window.lonlat_bounds()):
            tile = self._tile(year, lon, lat)
            name = f"grid_{lon:.2f}_{lat:.2f}"
            if tile is None:
                missing.append(name)
                continue
            if self._fill_from_tile(tile, window, out, filled):
                used.append(name)
                zones.add(str(tile.crs))
        meta = {
            "tessera_cache_dir": str(self.cache_dir),
            "tessera_tiles": used,
            "tessera_missing_tiles": missing,
            "tessera_utm_crs": sorted(zones),
            "crosses_utm_zone": len(zones) > 1,
            "coverage": float(filled.mean()),
        }
        return out, meta
