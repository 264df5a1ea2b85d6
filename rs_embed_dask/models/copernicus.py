"""``copernicus``: the Copernicus-Embed 0.25-degree global embedding map (768-d, 2021).

Copernicus-Embed (Wang et al. 2025, arXiv:2503.11849) is one GeoTIFF,
``embed_map_310k.tif``: 768 float32 bands on an EPSG:4326 grid of 0.25 degree
pixels.  It is published as the Hugging Face dataset
``torchgeo/copernicus_embed`` (torchgeo's ``CopernicusEmbed`` dataset reads
the same file).  The file is found, first match wins, at

1. ``model_config["path"]``: the file, or a folder holding it;
2. ``$RS_EMBED_COPERNICUS_EMBED`` (same meaning);
3. ``model_config["data_dir"]`` or ``$RS_EMBED_COP_DIR`` (rs-embed's names): a
   folder holding it;
4. the Hugging Face hub cache (downloaded once unless ``HF_HUB_OFFLINE`` is set).

Pooled output averages the product's own pixels whose centres lie inside the
ROI (NaN-aware); an ROI smaller than a pixel (no centre inside) gets the
vector of the pixel under its centre, with ``meta["roi_smaller_than_pixel"]``.
Grid output is the product's pixels under the ROI's window of the common
EPSG:3857 grid (nearest-neighbour), at ``scale_m`` metres (default: 0.25
degree of longitude, 27 829.87 m, so grid columns coincide with product
columns).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.geometry import EARTH_RADIUS_M, GridWindow, mercator_bounds, mercator_to_lonlat
from rs_embed_dask.models.precomputed import PrecomputedEmbedder, nan_pool, reproject_nearest

__all__ = ["HF_FILENAME", "HF_REPO", "HF_REVISION", "CopernicusEmbedder", "find_product"]

HF_REPO = "torchgeo/copernicus_embed"
HF_FILENAME = "embed_map_310k.tif"
#: The revision torchgeo's ``CopernicusEmbed`` downloads.
HF_REVISION = "435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb"
PATH_ENV = "RS_EMBED_COPERNICUS_EMBED"
DIR_ENV = "RS_EMBED_COP_DIR"
#: 0.25 degree of longitude in EPSG:3857 metres.
QUARTER_DEGREE_M = 2.0 * math.pi * EARTH_RADIUS_M / 1440.0


def _as_file(value: str | os.PathLike[str], source: str) -> Path:
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / HF_FILENAME
    if not path.is_file():
        raise ModelError(f"{source} points at {str(path)!r}, which is not the Copernicus-Embed file {HF_FILENAME}.")
    return path


def find_product(config: Mapping[str, Any]) -> Path:
    """The local path of ``embed_map_310k.tif`` (see the module docstring for the order).

    Raises
    ------
    ModelError
        When no source gives the file; the message lists where it looked.
    """
    if config.get("path"):
        return _as_file(config["path"], "model_config['path']")
    if os.environ.get(PATH_ENV):
        return _as_file(os.environ[PATH_ENV], f"${PATH_ENV}")
    if config.get("data_dir"):
        return _as_file(config["data_dir"], "model_config['data_dir']")
    if os.environ.get(DIR_ENV):
        return _as_file(os.environ[DIR_ENV], f"${DIR_ENV}")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HF_REPO, HF_FILENAME, repo_type="dataset", revision=HF_REVISION))
    except Exception as exc:  # offline, not cached, missing package
        hub = f"{type(exc).__name__}: {exc}"
    raise ModelError(
        f"The Copernicus-Embed map {HF_FILENAME} was not found. Looked at model_config['path'], "
        f"${PATH_ENV}, model_config['data_dir'], ${DIR_ENV} (all unset) and the Hugging Face hub "
        f"dataset {HF_REPO}@{HF_REVISION[:8]} ({hub}). Download it once with network access "
        f"(huggingface-cli download --repo-type dataset {HF_REPO} {HF_FILENAME}) or point "
        f"model_config={{'path': '/path/to/{HF_FILENAME}'}} or ${PATH_ENV} at a copy."
    )


class CopernicusEmbedder(PrecomputedEmbedder):
    """Copernicus-Embed 0.25-degree embeddings (768-d, year 2021).

    ``model_config`` keys: ``path`` (the GeoTIFF or its folder), ``data_dir``
    (rs-embed's folder key) and ``scale_m`` (grid pixel size in EPSG:3857
    metres, default 0.25 degree of longitude).
    """

    name = "copernicus"
    requires = ("rasterio",)
    config_keys = frozenset({"path", "data_dir", "scale_m"})
    embedding_dim = 768
    product = "Copernicus-Embed 0.25-degree map"
    source = f"hf://datasets/{HF_REPO}/{HF_FILENAME}"
    native_crs = "EPSG:4326"
    native_resolution = "0.25 deg"
    default_scale_m = QUARTER_DEGREE_M
    years = (2021,)
    default_year = 2021
    resampling = "nearest"
    native_pooling = True

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self._path: Path | None = None
        self._lock_io = threading.Lock()

    def describe_extra(self) -> dict[str, Any]:
        """Access and year rules."""
        return {
            "temporal": "year 2021 only (None -> 2021; a range uses its start year, which must be 2021)",
            "access": (
                f"HF dataset {HF_REPO} file {HF_FILENAME} (revision {HF_REVISION[:8]}), or a local copy "
                f"at model_config['path'] / ${PATH_ENV} (folder: model_config['data_dir'] / ${DIR_ENV})"
            ),
            "pooling": (
                "NaN-aware mean or max over the product pixels whose centres lie in the ROI; an ROI "
                "smaller than a pixel gets the pixel under its centre"
            ),
        }

    @property
    def path(self) -> Path:
        """The product file (resolved once per instance)."""
        if self._path is None:
            self._path = find_product(self.model_config)
        return self._path

    # -- grid output: product pixels on the common grid --------------------------------------------
    def read_window(
        self, window: GridWindow, spatial: SpatialSpec, temporal: TemporalSpec | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Nearest-neighbour product pixels on ``window`` (NaN outside the map or at no-data)."""
        import rasterio
        from rasterio.windows import Window

        from rs_embed_dask.providers.local import LocalProvider

        out = np.full((self.embedding_dim, *window.shape), np.nan, dtype=np.float32)
        with self._lock_io, rasterio.open(self.path) as src:
            self._check(src)
            sl = LocalProvider._source_slices(window, src.crs, src.transform, src.height, src.width)
            if sl is not None:
                (r0, r1), (c0, c1) = sl
                win = Window(c0, r0, c1 - c0, r1 - r0)
                data = self._masked(src, src.read(window=win, out_dtype=np.float32))
                reproject_nearest(data, src.window_transform(win), src.crs, window, out=out)
        return out, {"copernicus_path": str(self.path)}

    # -- pooled output: the product's own pixels ----------------------------------------------------
    def pool_native(self, spatial: SpatialSpec, temporal: TemporalSpec, output: OutputSpec) -> Embedding:
        """The product pixels whose centres lie in the ROI, pooled (NaN-aware); the centre pixel for a tiny ROI."""
        import rasterio
        from rasterio.windows import Window

        minx, miny, maxx, maxy = mercator_bounds(spatial)
        lon0, lat0 = mercator_to_lonlat(minx, miny)
        lon1, lat1 = mercator_to_lonlat(maxx, maxy)
        with self._lock_io, rasterio.open(self.path) as src:
            self._check(src)
            t = src.transform
            # product columns / rows whose pixel centres lie in [lon0, lon1) x (lat0, lat1]
            c0 = math.ceil((lon0 - t.c) / t.a - 0.5)
            c1 = math.ceil((lon1 - t.c) / t.a - 0.5)
            r0 = math.ceil((lat1 - t.f) / t.e - 0.5)
            r1 = math.ceil((lat0 - t.f) / t.e - 0.5)
            smaller = c1 <= c0 or r1 <= r0
            if smaller:
                clon, clat = mercator_to_lonlat((minx + maxx) / 2.0, (miny + maxy) / 2.0)
                c0 = math.floor((clon - t.c) / t.a)
                r0 = math.floor((clat - t.f) / t.e)
                c1, r1 = c0 + 1, r0 + 1
            rc0, rc1 = max(0, c0), min(src.width, c1)
            rr0, rr1 = max(0, r0), min(src.height, r1)
            if rc1 > rc0 and rr1 > rr0:
                win = Window(rc0, rr0, rc1 - rc0, rr1 - rr0)
                values = self._masked(src, src.read(window=win, out_dtype=np.float32))
            else:
                values = np.full((self.embedding_dim, 0), np.nan, np.float32)
        flat = values.reshape(self.embedding_dim, -1)
        valid = np.isfinite(flat).any(axis=0)
        if not valid.any():
            raise ModelError(
                f"{self.name}: the ROI {spatial} has no valid {self.product} pixel (outside the map "
                f"{str(self.path)!r} or no data there)."
            )
        meta = self.product_meta(output, temporal)
        meta.update(
            {
                "copernicus_path": str(self.path),
                "native_pixels": int(valid.sum()),
                "native_window": {"col_off": c0, "row_off": r0, "width": c1 - c0, "height": r1 - r0},
                "roi_smaller_than_pixel": bool(smaller),
                "valid_fraction": float(valid.mean()),
            }
        )
        if smaller:
            meta["note"] = (
                "The ROI is smaller than one 0.25-degree product pixel: the embedding is that of the "
                "pixel under the ROI's centre."
            )
        return Embedding(data=nan_pool(flat, output.pooling), meta=meta)

    # -- helpers -----------------------------------------------------------------------------------
    def _check(self, src: Any) -> None:
        if src.count != self.embedding_dim:
            raise ModelError(
                f"{self.path} has {src.count} bands; the Copernicus-Embed map has {self.embedding_dim}."
            )
        if src.crs is None or src.crs.to_epsg() != 4326:
            raise ModelError(f"{self.path} is in {src.crs}; the Copernicus-Embed map is in EPSG:4326.")

    @staticmethod
    def _masked(src: Any, data: np.ndarray) -> np.ndarray:
        """``data`` with the file's no-data value as NaN."""
        nodata = src.nodata
        if nodata is not None and not np.isnan(nodata):
            data[data == nodata] = np.nan
        return data
