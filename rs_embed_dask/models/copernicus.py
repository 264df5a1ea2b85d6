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

The ROI is read as rs-embed 0.3.1 reads it (checked against rs-embed by the
parity comparison, ``parity/products.py``):

- **footprint**: a ``BBox`` is its lon/lat box; a ``PointBuffer`` becomes the
  degree box ``lon +- buffer_m / (111320 cos(lat))``, ``lat +- buffer_m /
  111320``, i.e. ``buffer_m`` is taken as ground metres (not the
  Web-Mercator metres of the common grid);
- **pixels**: every product pixel the box touches (its edges rounded outward,
  ``floor``/``ceil``), after clipping the box to the map's coverage;
- **pooled** ``(768,)``: the mean (or max) of those pixels (NaN-aware, so a
  no-data pixel does not poison the vector; the published map has none);
- **grid** ``(768, h, w)``: those pixels on the product's own EPSG:4326 grid,
  north-up, with the window's transform in the metadata.  Grids of different
  ROIs differ in shape; an export stores them per item (rs-embed's
  ``embedding__<model>__<i>`` keys).

rs-embed refuses a box narrower or lower than one pixel; here such a ROI gets
the pixels it touches (one to four), flagged ``meta["roi_smaller_than_pixel"]``.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.precomputed import PrecomputedEmbedder, nan_pool

__all__ = [
    "HF_FILENAME",
    "HF_REPO",
    "HF_REVISION",
    "M_PER_DEG",
    "CopernicusEmbedder",
    "find_product",
    "footprint_4326",
    "touched_window",
]

HF_REPO = "torchgeo/copernicus_embed"
HF_FILENAME = "embed_map_310k.tif"
#: The revision torchgeo's ``CopernicusEmbed`` downloads.
HF_REVISION = "435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb"
PATH_ENV = "RS_EMBED_COPERNICUS_EMBED"
DIR_ENV = "RS_EMBED_COP_DIR"
#: Metres per degree of latitude in rs-embed's buffer-to-degree rule.
M_PER_DEG = 111_320.0
PROJECTION_NOTE = (
    "Copernicus-Embed embeddings stay on the product's own EPSG:4326 grid (0.25 degree pixels), "
    "not on the common EPSG:3857 grid of provider-backed models; PointBuffer.buffer_m is read "
    "as ground metres (a degree box around the point)."
)


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

        from rs_embed_dask.models.hub_reach import hub_offline

        return Path(
            hf_hub_download(HF_REPO, HF_FILENAME, repo_type="dataset", revision=HF_REVISION,
                            local_files_only=hub_offline())  # unreachable hub: no retries
        )  # fmt: skip
    except Exception as exc:  # offline, not cached, missing package
        hub = f"{type(exc).__name__}: {exc}"
    raise ModelError(
        f"The Copernicus-Embed map {HF_FILENAME} was not found. Looked at model_config['path'], "
        f"${PATH_ENV}, model_config['data_dir'], ${DIR_ENV} (all unset) and the Hugging Face hub "
        f"dataset {HF_REPO}@{HF_REVISION[:8]} ({hub}). Download it once with network access "
        f"(huggingface-cli download --repo-type dataset {HF_REPO} {HF_FILENAME}) or point "
        f"model_config={{'path': '/path/to/{HF_FILENAME}'}} or ${PATH_ENV} at a copy."
    )


def footprint_4326(spatial: SpatialSpec) -> tuple[float, float, float, float]:
    """``(minlon, minlat, maxlon, maxlat)`` of a ROI as rs-embed's Copernicus reader sees it.

    A ``BBox`` is its own lon/lat box (converted to EPSG:4326 first when given
    in another CRS).  A ``PointBuffer`` is the degree box of half sides
    ``buffer_m / M_PER_DEG`` (latitude) and ``buffer_m / (M_PER_DEG *
    cos(lat))`` (longitude; ``cos`` floored at 1e-6 near the poles).
    """
    if isinstance(spatial, PointBuffer):
        sp = spatial.to_wgs84()
        dlat = float(sp.buffer_m) / M_PER_DEG
        dlon = float(sp.buffer_m) / (M_PER_DEG * max(1e-6, math.cos(math.radians(float(sp.lat)))))
        return sp.lon - dlon, sp.lat - dlat, sp.lon + dlon, sp.lat + dlat
    if isinstance(spatial, BBox):
        b = spatial.to_wgs84()
        return float(b.minlon), float(b.minlat), float(b.maxlon), float(b.maxlat)
    raise ModelError(f"copernicus takes a BBox or a PointBuffer; got {type(spatial).__name__}.")


def touched_window(
    box: tuple[float, float, float, float], transform: Any, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)``: the product pixels a lon/lat box touches, or ``None``.

    The box is clipped to the map's coverage, then its edges are rounded
    outward to pixel edges (``floor`` of the west/north offsets, ``ceil`` of
    the east/south ones).  ``transform`` is the map's north-up affine.
    """
    xres, yres = float(transform.a), -float(transform.e)
    left, top = float(transform.c), float(transform.f)
    right, bottom = left + width * xres, top - height * yres
    minlon, minlat, maxlon, maxlat = box
    w, e = max(minlon, left), min(maxlon, right)
    s, n = max(minlat, bottom), min(maxlat, top)
    if e <= w or n <= s:
        return None
    col0 = min(width - 1, max(0, math.floor((w - left) / xres)))
    col1 = min(width, math.ceil((e - left) / xres))
    row0 = min(height - 1, max(0, math.floor((top - n) / yres)))
    row1 = min(height, math.ceil((top - s) / yres))
    if col1 <= col0 or row1 <= row0:
        return None
    return row0, row1, col0, col1


class CopernicusEmbedder(PrecomputedEmbedder):
    """Copernicus-Embed 0.25-degree embeddings (768-d, year 2021), on the product's own grid.

    ``model_config`` keys: ``path`` (the GeoTIFF or its folder) and
    ``data_dir`` (rs-embed's folder key).
    """

    name = "copernicus"
    requires = ("rasterio",)
    config_keys = frozenset({"path", "data_dir"})
    embedding_dim = 768
    product = "Copernicus-Embed 0.25-degree map"
    source = f"hf://datasets/{HF_REPO}/{HF_FILENAME}"
    native_crs = "EPSG:4326"
    native_resolution = "0.25 deg"
    years = (2021,)
    default_year = 2021
    resampling = "none (the product's own pixels)"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self._path: Path | None = None
        self._lock_io = threading.Lock()

    def describe_extra(self) -> dict[str, Any]:
        """Access, year and footprint rules; the grid is the product's own."""
        return {
            "temporal": "year 2021 only (None -> 2021; a range uses its start year, which must be 2021)",
            "access": (
                f"HF dataset {HF_REPO} file {HF_FILENAME} (revision {HF_REVISION[:8]}), or a local copy "
                f"at model_config['path'] / ${PATH_ENV} (folder: model_config['data_dir'] / ${DIR_ENV})"
            ),
            "footprint": (
                "BBox: its lon/lat box; PointBuffer: lon/lat +- buffer_m / (111320 m * cos(lat)) and "
                "buffer_m / 111320 m (buffer_m in ground metres), as rs-embed 0.3.1"
            ),
            "pooling": "NaN-aware mean or max over every product pixel the footprint touches (floor/ceil)",
            "grid": "(768, h, w): the touched product pixels on the native EPSG:4326 0.25-degree grid, north-up",
            "grid_crs": "EPSG:4326",
            "defaults": {"scale_m": None, "year": self.default_year, "resolution_deg": 0.25},
        }

    @property
    def path(self) -> Path:
        """The product file (resolved once per instance)."""
        if self._path is None:
            self._path = find_product(self.model_config)
        return self._path

    # -- reading ------------------------------------------------------------------------------------
    def embed_spatials(
        self,
        spatials: Sequence[Any],
        *,
        temporal: Any,
        output: OutputSpec,
        sensor: SensorSpec | None,
    ) -> list[Embedding]:
        """Pooled ``(768,)`` or native grid ``(768, h, w)`` of each ROI (see the module docstring).

        Raises
        ------
        ModelError
            A ROI outside the map or without a valid pixel, a bad year, or a
            file that is not the Copernicus-Embed map.
        """
        if not self._loaded:
            self.load(self.device)
        ptemporal = self.product_temporal(temporal)
        import rasterio

        out: list[Embedding] = []
        with self._lock_io, rasterio.open(self.path) as src:
            self._check(src)
            for sp in spatials:
                out.append(self._one(src, sp, ptemporal, output))
        return out

    def _one(self, src: Any, spatial: SpatialSpec, temporal: TemporalSpec, output: OutputSpec) -> Embedding:
        from rasterio.windows import Window

        box = footprint_4326(spatial)
        t = src.transform
        win = touched_window(box, t, src.height, src.width)
        if win is None:
            raise ModelError(
                f"{self.name}: the ROI {spatial} (lon/lat box {tuple(round(v, 6) for v in box)}) has no valid "
                f"{self.product} pixel: it lies outside the map {str(self.path)!r}."
            )
        row0, row1, col0, col1 = win
        window = Window(col0, row0, col1 - col0, row1 - row0)
        chw = self._masked(src, src.read(window=window, out_dtype=np.float32))
        valid = np.isfinite(chw).any(axis=0)
        if not valid.any():
            raise ModelError(
                f"{self.name}: the ROI {spatial} has no valid {self.product} pixel (no data in rows "
                f"{row0}:{row1}, columns {col0}:{col1} of {str(self.path)!r})."
            )
        xres, yres = float(t.a), -float(t.e)
        smaller = (box[2] - box[0]) < xres or (box[3] - box[1]) < yres
        wt = src.window_transform(window)
        meta = self.product_meta(output, temporal)
        meta.update(
            {
                "copernicus_path": str(self.path),
                "dataset_path": str(self.path),
                "bbox_4326": [float(v) for v in box],
                "chw_shape": [int(v) for v in chw.shape],
                "native_window": {"row_off": row0, "col_off": col0, "height": row1 - row0, "width": col1 - col0},
                "native_pixels": int(valid.sum()),
                "valid_fraction": float(valid.mean()),
                "input_crs": "EPSG:4326",
                "output_crs": "EPSG:4326",
                "projection_mode": "product_native_fixed",
                "projection_note": PROJECTION_NOTE,
                "product_resolution_deg": [xres, yres],
                "roi_smaller_than_pixel": bool(smaller),
            }
        )
        if smaller:
            meta["note"] = (
                "The ROI is smaller than one 0.25-degree product pixel (rs-embed refuses it): the "
                "embedding comes from the pixel(s) it touches."
            )
        if output.mode == "pooled":
            meta["pooling"] = output.pooling
            return Embedding(data=nan_pool(chw, output.pooling), meta=meta)
        meta.update(
            {
                "grid_hw": [row1 - row0, col1 - col0],
                "crs": "EPSG:4326",
                "transform": [wt.a, wt.b, wt.c, wt.d, wt.e, wt.f],
                "grid_orientation_policy": output.grid_orientation,
                "grid_native_y_axis_direction": "north_to_south",
                "grid_native_orientation_reason": "product rows run north to south (transform e < 0)",
                "grid_orientation_applied": False,
                "y_axis_direction": "north_to_south",
            }
        )
        return Embedding(data=np.ascontiguousarray(chw), meta=meta)

    # -- helpers -----------------------------------------------------------------------------------
    def _check(self, src: Any) -> None:
        if src.count != self.embedding_dim:
            raise ModelError(
                f"{self.path} has {src.count} bands; the Copernicus-Embed map has {self.embedding_dim}."
            )
        if src.crs is None or src.crs.to_epsg() != 4326:
            raise ModelError(f"{self.path} is in {src.crs}; the Copernicus-Embed map is in EPSG:4326.")
        t = src.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise ModelError(f"{self.path} is not a north-up lon/lat grid (transform {tuple(t)[:6]}).")

    @staticmethod
    def _masked(src: Any, data: np.ndarray) -> np.ndarray:
        """``data`` with the file's no-data value as NaN."""
        nodata = src.nodata
        if nodata is not None and not np.isnan(nodata):
            data[data == nodata] = np.nan
        return data
