"""The shared base of precomputed embedding products (``tessera``, ``copernicus``, ``gse``).

A precomputed product is its own source: no provider fetch, no forward pass.
A subclass implements one hook, :meth:`PrecomputedEmbedder.read_window`,
which returns the product's embeddings on a window of the common EPSG:3857
grid (:func:`rs_embed_dask.geometry.grid_window`) with NaN where the product
has no data.  The base turns those windows into rs-embed's outputs:

- pooled ``(D,)``: NaN-aware mean or max over the ROI's pixels;
- grid ``(D, H, W)``: the window itself, north-up (row 0 is the northern edge),
  with the window's CRS and transform in the metadata;
- an ROI without a single valid pixel is a :class:`~rs_embed_dask.core.errors.ModelError`
  naming the ROI and the product.

Annual products share rs-embed's year rules through :meth:`resolve_year`: a
``TemporalSpec.year`` is used as is, a range uses its start year with a
warning, and ``None`` uses the product's default year (with a warning where
rs-embed warns) or fails when the product has none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.geometry import WEB_MERCATOR, GridWindow, grid_window
from rs_embed_dask.models.base import Embedder

__all__ = ["PrecomputedEmbedder", "nan_pool", "reproject_nearest", "sample_nearest", "touched_grid_window"]

#: rs-embed's tolerance (in pixels) when snapping a ROI's edges outward to the lattice.
_SNAP_EPS = 1e-9


def touched_grid_window(spatial: SpatialSpec, scale_m: float) -> GridWindow:
    """The common-grid window of every pixel a ROI touches (edges snapped outward).

    rs-embed 0.3.1's ``common_grid`` rule for products it resamples itself
    (``tessera``): columns ``floor(minx / s) .. ceil(maxx / s)`` and rows
    ``floor(-maxy / s) .. ceil(-miny / s)`` of the EPSG:3857 lattice (1e-9 px
    tolerance), at least one pixel each way.  :func:`~rs_embed_dask.geometry.grid_window`
    takes the pixels whose centres lie inside instead (one pixel less each way
    for a ROI off the lattice).
    """
    from rs_embed_dask.geometry import mercator_bounds

    s = float(scale_m)
    minx, miny, maxx, maxy = mercator_bounds(spatial)
    c0, c1 = math.floor(minx / s + _SNAP_EPS), math.ceil(maxx / s - _SNAP_EPS)
    r0, r1 = math.floor(-maxy / s + _SNAP_EPS), math.ceil(-miny / s - _SNAP_EPS)
    return GridWindow(col_off=c0, row_off=r0, width=max(1, c1 - c0), height=max(1, r1 - r0), scale_m=s)


def sample_nearest(
    window: GridWindow, src_crs: Any, src_transform: Any, src_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest source pixel of each pixel centre of ``window``: ``(rows, cols, inside)``, each ``(H, W)``.

    The centres are projected to ``src_crs`` with pyproj (exact, no
    approximation) and the source pixel is the one containing the projected
    centre (``floor`` of the inverse affine), as rs-embed 0.3.1 resamples
    tiles.  ``inside`` marks centres that fall within the ``src_hw`` raster.
    """
    from affine import Affine
    from pyproj import CRS, Transformer

    minx, _, _, maxy = window.bounds
    s = float(window.scale_m)
    xs = minx + (np.arange(window.width, dtype=np.float64) + 0.5) * s
    ys = maxy - (np.arange(window.height, dtype=np.float64) + 0.5) * s
    gx, gy = np.meshgrid(xs, ys)
    if CRS.from_user_input(src_crs) != CRS.from_user_input(WEB_MERCATOR):
        tfm = Transformer.from_crs(WEB_MERCATOR, src_crs, always_xy=True)
        px, py = tfm.transform(gx.ravel(), gy.ravel())
        gx, gy = np.asarray(px).reshape(gx.shape), np.asarray(py).reshape(gy.shape)
    inv = ~Affine(*tuple(src_transform)[:6])
    col_f = inv.a * gx + inv.b * gy + inv.c
    row_f = inv.d * gx + inv.e * gy + inv.f
    ok = np.isfinite(col_f) & np.isfinite(row_f)
    cols = np.floor(np.where(ok, col_f, -1.0)).astype(np.int64)
    rows = np.floor(np.where(ok, row_f, -1.0)).astype(np.int64)
    inside = ok & (rows >= 0) & (rows < int(src_hw[0])) & (cols >= 0) & (cols < int(src_hw[1]))
    return rows, cols, inside


def nan_pool(values: np.ndarray, pooling: str) -> np.ndarray:
    """Pool ``(D, ...)`` values over every axis but the first, ignoring NaN.

    Parameters
    ----------
    values : numpy.ndarray
        ``(D, H, W)`` (or ``(D, N)``) embeddings, NaN where there is no data.
    pooling : {"mean", "max"}
        The statistic.

    Returns
    -------
    numpy.ndarray
        ``(D,)`` float32; a channel without any valid value stays NaN.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(values.shape[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels stay NaN
        pooled = np.nanmax(flat, axis=1) if pooling == "max" else np.nanmean(flat, axis=1, dtype=np.float64)
    return np.asarray(pooled, dtype=np.float32)


def reproject_nearest(
    source: np.ndarray,
    src_transform: Any,
    src_crs: Any,
    window: GridWindow,
    *,
    out: np.ndarray | None = None,
    tolerance: float | None = None,
) -> np.ndarray:
    """Nearest-neighbour reprojection of product pixels onto a window of the common grid.

    Parameters
    ----------
    source : numpy.ndarray
        ``(D, h, w)`` float32 product pixels, NaN where there is no data.
    src_transform, src_crs : affine.Affine, CRS
        Where ``source`` lies.
    window : GridWindow
        The destination window (EPSG:3857).
    out : numpy.ndarray, optional
        ``(D, window.height, window.width)`` destination, written in place;
        default a new NaN-filled array.
    tolerance : float, optional
        rasterio's transformer error threshold in pixels (``0.0``: the exact
        transformer); ``None`` keeps rasterio's default.

    Returns
    -------
    numpy.ndarray
        The destination, NaN where no source pixel lands or at no-data.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dst = np.full((source.shape[0], *window.shape), np.nan, dtype=np.float32) if out is None else out
    extra = {} if tolerance is None else {"tolerance": tolerance}
    reproject(
        source=source,
        destination=dst,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=np.nan,
        dst_transform=window.transform,
        dst_crs=WEB_MERCATOR,
        dst_nodata=np.nan,
        resampling=Resampling.nearest,
        **extra,
    )
    return dst


class PrecomputedEmbedder(Embedder):
    """Base class of products served as precomputed embeddings.

    Subclasses set the class attributes below and implement
    :meth:`read_window`; they may override :meth:`read_windows` to share work
    (open files, tiles) across the ROIs of a batch, and set
    :attr:`native_pooling` with :meth:`pool_native` to pool the product's own
    pixels instead of the common-grid window.

    Class attributes
    ----------------
    embedding_dim : int
        Channels ``D`` of the product.
    product : str
        Human-readable product name (used in error messages).
    source : str
        Where the data comes from (dataset id, file or service).
    native_crs : str
        CRS of the product's own pixels (e.g. ``"EPSG:4326"``, ``"UTM (per tile)"``).
    native_resolution : str
        The product's own pixel size, with units (``"10 m"``, ``"0.25 deg"``).
    default_scale_m : float
        Pixel size (EPSG:3857 metres) of the common grid the product is read on,
        close to its native resolution; ``model_config["scale_m"]`` overrides it
        where a subclass lists ``"scale_m"`` in ``config_keys``.
    sensor_sets_scale : bool
        Whether ``SensorSpec.scale_m`` of the request sets the grid scale
        (``gse``, whose scale rs-embed takes from ``fetch.scale_m``).
    years : tuple of int or None
        Years the product exists for (``None``: not checked here).
    default_year : int or None
        Year used when the request has no temporal spec (``None``: a year is required).
    warn_default_year : bool
        Warn when :attr:`default_year` is used.
    resampling : str
        How native pixels reach the common grid (stated in ``describe()``).
    native_pooling : bool
        Pooled outputs come from :meth:`pool_native` (``copernicus``, whose
        pixels are much coarser than any ROI's window would be).
    provider : str or None
        Registered provider the product's reads go through (``gse``: ``"gee"``),
        whose cluster-wide request cap
        (:meth:`rs_embed_dask.providers.base.Provider.concurrency_limit`) an
        export applies to them; ``None`` for products read from files or
        services without a cap.  Such a product makes its requests for one ROI
        one at a time: an export holds one lease of the cap per ROI.
    """

    model_type = "precomputed"
    output_modes = ("pooled", "grid")
    embedding_dim: ClassVar[int] = 0
    product: ClassVar[str] = ""
    source: ClassVar[str] = ""
    native_crs: ClassVar[str] = ""
    native_resolution: ClassVar[str] = ""
    default_scale_m: ClassVar[float] = 10.0
    sensor_sets_scale: ClassVar[bool] = False
    years: ClassVar[tuple[int, ...] | None] = None
    default_year: ClassVar[int | None] = None
    warn_default_year: ClassVar[bool] = False
    resampling: ClassVar[str] = "nearest"
    native_pooling: ClassVar[bool] = False
    provider: ClassVar[str | None] = None
    #: Backends the product accepts (rs-embed: ``["auto"]`` for file-based products).
    backends: ClassVar[tuple[str, ...]] = ("auto",)

    # -- the hook subclasses implement -----------------------------------------------------------
    def read_window(
        self, window: GridWindow, spatial: SpatialSpec, temporal: TemporalSpec | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Read the product on ``window`` of the common grid.

        Parameters
        ----------
        window : GridWindow
            The ROI's window of the common EPSG:3857 grid.
        spatial : BBox or PointBuffer
            The ROI itself (for messages and products that need its exact extent).
        temporal : TemporalSpec or None
            ``TemporalSpec.year(y)`` with the year already resolved by
            :meth:`resolve_year` (``None`` only for products without years).

        Returns
        -------
        (numpy.ndarray, dict)
            ``(D, window.height, window.width)`` float32, row 0 the northern
            edge, NaN where the product has no data; and read metadata
            (files, tiles, notes), JSON-friendly.
        """
        raise NotImplementedError

    def read_windows(
        self,
        windows: Sequence[GridWindow],
        spatials: Sequence[SpatialSpec],
        temporal: TemporalSpec | None,
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Read several windows (default: :meth:`read_window` one by one)."""
        return [self.read_window(w, sp, temporal) for w, sp in zip(windows, spatials, strict=True)]

    def pool_native(self, spatial: SpatialSpec, temporal: TemporalSpec, output: OutputSpec) -> Embedding:
        """Pooled output of one ROI from the product's own pixels (where :attr:`native_pooling` is set).

        ``temporal`` is the resolved product year; the result is ``(D,)``
        with :meth:`product_meta` keys.
        """
        raise NotImplementedError

    # -- description -----------------------------------------------------------------------------
    def describe_extra(self) -> dict[str, Any]:
        """Product-specific ``describe()`` keys (access, temporal rule, model_config)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What the product is, where it comes from and how it reaches the common grid."""
        scale = self.grid_scale_m(None)
        d: dict[str, Any] = {
            "model": self.name,
            "type": "precomputed",
            "backend": list(self.backends),
            "output": list(self.output_modes),
            "inputs": {"product": self.product, "source": self.source},
            "defaults": {"scale_m": scale, "year": self.default_year},
            "embedding_dim": int(self.embedding_dim),
            "source": self.source,
            "native_crs": self.native_crs,
            "native_resolution": self.native_resolution,
            "grid_crs": WEB_MERCATOR,
            "grid": (
                f"({self.embedding_dim}, H, W): product pixels resampled ({self.resampling}) onto the "
                f"common {WEB_MERCATOR} grid at scale_m, north-up"
            ),
            "resampling": self.resampling,
            "pooling": "NaN-aware mean or max over the ROI's grid pixels",
            "years": list(self.years) if self.years is not None else None,
            "model_config": dict(self.model_config),
        }
        d.update(self.describe_extra())
        return d

    def default_sensor(self) -> SensorSpec | None:
        """Precomputed products read no provider input: ``None``."""
        return None

    # -- shared rules ----------------------------------------------------------------------------
    def grid_scale_m(self, sensor: SensorSpec | None) -> float:
        """Common-grid pixel size: ``model_config["scale_m"]``, else the sensor's (if honoured), else the default."""
        value = self.model_config.get("scale_m")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ModelError(f"{self.name} model_config 'scale_m' must be a positive number; got {value!r}.")
            return float(value)
        if self.sensor_sets_scale and sensor is not None:
            return float(sensor.scale_m)
        return float(self.default_scale_m)

    def resolve_year(self, temporal: TemporalSpec | None) -> int:
        """The product year a request asks for, with rs-embed's rules.

        Raises
        ------
        ModelError
            When no year is given and the product has no default, or the year
            is not one the product exists for.
        """
        if temporal is None:
            if self.default_year is None:
                raise ModelError(f"{self.name} requires TemporalSpec.year(year=...).")
            if self.warn_default_year:
                warnings.warn(
                    f"{self.name}: no temporal spec given; using the product year {self.default_year}. "
                    f"Pass TemporalSpec.year({self.default_year}) to silence this.",
                    UserWarning,
                    stacklevel=4,
                )
            year = int(self.default_year)
        elif temporal.mode == "year":
            year = int(temporal.year)  # type: ignore[arg-type]
        else:
            year = date.fromisoformat(str(temporal.start)).year
            warnings.warn(
                f"{self.name} is an annual product: TemporalSpec.range({temporal.start!r}, "
                f"{temporal.end!r}) uses its start year {year}. Pass TemporalSpec.year({year}) "
                "to silence this.",
                UserWarning,
                stacklevel=4,
            )
        if self.years is not None and year not in self.years:
            raise ModelError(
                f"{self.name} ({self.product}) exists for year(s) {list(self.years)} only; "
                f"got year {year}."
            )
        return year

    def product_temporal(self, temporal: TemporalSpec | None) -> TemporalSpec:
        """``TemporalSpec.year`` of the resolved product year."""
        return TemporalSpec(mode="year", year=self.resolve_year(temporal))

    def window_for(self, spatial: SpatialSpec, sensor: SensorSpec | None) -> GridWindow:
        """The ROI's window of the common grid at :meth:`grid_scale_m`."""
        return grid_window(spatial, self.grid_scale_m(sensor))

    # -- outputs ---------------------------------------------------------------------------------
    def embed_spatials(
        self,
        spatials: Sequence[Any],
        *,
        temporal: Any,
        output: OutputSpec,
        sensor: SensorSpec | None,
    ) -> list[Embedding]:
        """Read each ROI's embeddings and return pooled ``(D,)`` or grid ``(D, H, W)`` outputs.

        Parameters
        ----------
        spatials : sequence of BBox or PointBuffer
            The ROIs, validated.
        temporal : TemporalSpec or None
            The request's time (see :meth:`resolve_year`).
        output : OutputSpec
            Pooled (NaN-aware mean or max, or :meth:`pool_native`) or grid
            (north-up) output.
        sensor : SensorSpec or None
            Only its ``scale_m`` is used, and only when :attr:`sensor_sets_scale`.

        Returns
        -------
        list of Embedding
            One per ROI, in order.

        Raises
        ------
        ModelError
            An ROI with no valid pixel, a wrong read shape, or a bad year.
        """
        if not self._loaded:
            self.load(self.device)
        spatials = list(spatials)
        ptemporal = self.product_temporal(temporal)
        if output.mode == "pooled" and self.native_pooling:
            return [self.pool_native(sp, ptemporal, output) for sp in spatials]
        windows = [self.window_for(sp, sensor) for sp in spatials]
        reads = self.read_windows(windows, spatials, ptemporal)
        if len(reads) != len(spatials):
            raise ModelError(f"{self.name}: read {len(reads)} windows for {len(spatials)} ROIs.")
        return [
            self.finish(arr, meta, spatial=sp, window=w, output=output, temporal=ptemporal)
            for (arr, meta), sp, w in zip(reads, spatials, windows, strict=True)
        ]

    def finish(
        self,
        values: np.ndarray,
        read_meta: Mapping[str, Any],
        *,
        spatial: SpatialSpec,
        window: GridWindow,
        output: OutputSpec,
        temporal: TemporalSpec | None,
    ) -> Embedding:
        """Check one read window and turn it into the requested output with its metadata."""
        arr = np.asarray(values, dtype=np.float32)
        expected = (int(self.embedding_dim), window.height, window.width)
        if arr.shape != expected:
            raise ModelError(
                f"{self.name}: read_window returned shape {arr.shape}; expected {expected} "
                "(embedding_dim, window height, window width)."
            )
        valid = np.isfinite(arr).any(axis=0)
        if not valid.any():
            raise ModelError(
                f"{self.name}: the ROI {spatial} has no valid {self.product} pixel"
                f"{'' if temporal is None else f' for year {temporal.year}'} (all NaN: outside the "
                "product's coverage or masked)."
            )
        meta = self.product_meta(output, temporal)
        meta.update(dict(read_meta))
        meta["valid_fraction"] = float(valid.mean())
        meta["roi_grid"] = window.to_dict()
        if output.mode == "pooled":
            return Embedding(data=nan_pool(arr, output.pooling), meta=meta)
        self.grid_meta(meta, window, output)
        return Embedding(data=np.ascontiguousarray(arr), meta=meta)

    def product_meta(self, output: OutputSpec, temporal: TemporalSpec | None) -> dict[str, Any]:
        """rs-embed's standard meta keys for a precomputed result."""
        meta = self.base_meta(output)
        meta.update(
            {
                "backend": "auto",
                "source": self.source,
                "product": self.product,
                "sensor": None,
                "temporal": None if temporal is None else temporal.to_dict(),
                "year": None if temporal is None else temporal.year,
                "native_crs": self.native_crs,
                "native_resolution": self.native_resolution,
                "resampling": self.resampling,
            }
        )
        return meta

    @staticmethod
    def grid_meta(meta: dict[str, Any], window: GridWindow, output: OutputSpec) -> None:
        """Grid keys: shape, CRS, transform and the (already north-up) orientation."""
        meta["grid_hw"] = [window.height, window.width]
        meta["crs"] = WEB_MERCATOR
        meta["transform"] = list(window.transform_tuple)
        meta["grid_orientation_policy"] = output.grid_orientation
        meta["grid_native_y_axis_direction"] = "north_to_south"
        meta["grid_native_orientation_reason"] = "common_grid_north_up"
        meta["grid_orientation_applied"] = False
        meta["y_axis_direction"] = "north_to_south"
