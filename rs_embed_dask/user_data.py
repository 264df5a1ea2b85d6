"""Bring-your-own-data declarations: :class:`UserData` and its georeferencing helpers.

A :class:`UserData` is an array the caller already has, plus what it is: the
collection it came from and one band name per channel, in raw provider units
(Sentinel-2 L2A digital numbers ``0..10000``, exactly what a provider fetch
returns).  :mod:`rs_embed_dask.api_data` matches that declaration against a
model's input sensor and embeds it without any provider.

A georeferenced declaration (``crs`` + ``transform``, or an
``xarray.DataArray`` carrying them through rioxarray) is put on the common
EPSG:3857 lattice of :mod:`rs_embed_dask.geometry` at the model's
``scale_m`` by :func:`align_to_common_grid`, so a user raster reaches the
model on the same pixels a provider fetch of the same place would have.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, SpecError
from rs_embed_dask.core.specs import BBox, SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow, lonlat_to_mercator
from rs_embed_dask.providers.gee_images import resolve_band_aliases

__all__ = [
    "CANONICAL_BANDS",
    "COLLECTION_ALIASES",
    "UserData",
    "align_to_common_grid",
    "footprint_window",
    "match_bands",
    "normalize_collection_id",
    "raster_footprint",
    "resample_to_window",
    "resolve_declared_bands",
    "warn_if_normalized",
]

S2_SR = "COPERNICUS/S2_SR_HARMONIZED"
S1_GRD = "COPERNICUS/S1_GRD"

#: Short collection names accepted in ``UserData.collection`` (rs-embed's table);
#: any other value is taken as a full collection id.
COLLECTION_ALIASES: dict[str, str] = {
    "s2": S2_SR,
    "s2_sr": S2_SR,
    "s2_l2a": S2_SR,
    "sentinel2": S2_SR,
    "sentinel_2": S2_SR,
    "s1": S1_GRD,
    "s1_grd": S1_GRD,
    "sentinel1": S1_GRD,
    "sentinel_1": S1_GRD,
}

#: Channel order assumed when a declaration omits ``bands`` (only collections
#: with one unambiguous full band order).
CANONICAL_BANDS: dict[str, tuple[str, ...]] = {
    S2_SR: ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"),
}

# collections in surface-reflectance DN 0..10000 (the "already normalised?" warning)
_DN_COLLECTION_MARKERS = ("COPERNICUS/S2",)
# lattice snapping must not grow the grid by a pixel over float noise
_LATTICE_EPS = 1e-9


def normalize_collection_id(collection: str) -> str:
    """The full collection id of a user-facing alias (``"s2"`` -> ``COPERNICUS/S2_SR_HARMONIZED``).

    Case, ``-`` and spaces are ignored when matching an alias; anything that
    is not an alias is returned stripped, unchanged otherwise.
    """
    raw = str(collection or "").strip()
    key = raw.lower().replace("-", "_").replace(" ", "_")
    return COLLECTION_ALIASES.get(key, raw)


def _is_dataarray(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "xarray" and hasattr(obj, "dims")


def _scale_from_resolution(crs: Any, res_x: float, res_y: float) -> int | None:
    """Pixel size in metres for square pixels of a projected CRS (>= 1 m), else ``None``."""
    try:
        from pyproj import CRS

        projected = CRS.from_user_input(crs).is_projected
    except Exception:
        return None
    rx, ry = abs(float(res_x)), abs(float(res_y))
    if projected and abs(rx - ry) < 1e-6 and rx >= 1.0:
        return round(rx)
    return None


def _crs_string(crs: Any) -> str:
    to_string = getattr(crs, "to_string", None)
    return str(to_string()) if callable(to_string) else str(crs)


@dataclass(frozen=True)
class UserData:
    """User-provided imagery with a declaration of what its pixels are.

    Parameters
    ----------
    data : numpy.ndarray or xarray.DataArray
        ``[C, H, W]`` or ``[T, C, H, W]`` pixels, channels in ``bands`` order,
        in raw provider units of ``collection``.  A ``DataArray`` with a
        rioxarray CRS (``.rio.crs``) also gives ``crs`` and ``transform``
        (and ``scale_m`` for square pixels of a projected CRS) when those are
        not passed, has its spatial dimensions moved last, and gives
        ``bands`` when omitted and its channel coordinate holds band names
        (strings).
    collection : str
        Collection id (``"COPERNICUS/S2_SR_HARMONIZED"``) or an alias
        (``"s2"``, ``"sentinel_1"``, ... see :data:`COLLECTION_ALIASES`).
    spatial : BBox or PointBuffer, optional
        Where the imagery is.  Models that condition on location (prithvi)
        refuse data without it (or without ``crs`` + ``transform``).
    bands : tuple of str, optional
        One band name per channel; aliases such as ``"RED"`` resolve as in
        provider fetches.  ``None`` means the collection's canonical order
        (:data:`CANONICAL_BANDS`; Sentinel-2 L2A only).
    temporal : TemporalSpec, optional
        When the imagery was acquired (models that condition on time).
    scale_m : int, optional
        Nominal pixel size in metres, recorded as provenance.
    crs : str, optional
        CRS of the pixel grid (e.g. ``"EPSG:32633"``), together with
        ``transform``.  The array is then resampled onto the common
        EPSG:3857 grid at the model's scale before embedding, and its
        footprint stands in for ``spatial`` when that is omitted.
    transform : affine.Affine, optional
        Pixel -> CRS affine of the array (rasterio convention).

    Examples
    --------
    >>> import numpy as np
    >>> d = UserData(np.zeros((3, 32, 32), "float32"), "s2", bands=("B4", "B3", "B2"))
    >>> d.validate()
    """

    data: Any
    collection: str
    spatial: SpatialSpec | None = None
    bands: tuple[str, ...] | None = None
    temporal: TemporalSpec | None = None
    scale_m: int | None = None
    crs: str | None = None
    transform: Any | None = None

    def __post_init__(self) -> None:
        if _is_dataarray(self.data):
            self._adopt_dataarray()

    def _adopt_dataarray(self) -> None:
        """Fill ``crs``/``transform``/``scale_m``/``bands`` from a georeferenced DataArray."""
        import rioxarray  # noqa: F401 - registers the .rio accessor

        da = self.data
        try:
            y_dim, x_dim = da.rio.y_dim, da.rio.x_dim
        except Exception:  # no recognisable spatial dims: plain array semantics
            return
        if tuple(da.dims[-2:]) != (y_dim, x_dim):
            da = da.transpose(..., y_dim, x_dim)
            object.__setattr__(self, "data", da)
        rio_crs = da.rio.crs
        if rio_crs is not None:
            if self.crs is None:
                object.__setattr__(self, "crs", _crs_string(rio_crs))
            if self.transform is None:
                recalc = da.sizes[y_dim] > 1 and da.sizes[x_dim] > 1
                object.__setattr__(self, "transform", da.rio.transform(recalc=recalc))
            if self.scale_m is None and self.transform is not None:
                t = self.transform
                if abs(t.b) < 1e-12 and abs(t.d) < 1e-12:
                    object.__setattr__(self, "scale_m", _scale_from_resolution(rio_crs, t.a, t.e))
        if self.bands is None and da.ndim >= 3:
            chan = da.dims[-3]
            if chan in da.coords:
                labels = [v.item() if hasattr(v, "item") else v for v in np.asarray(da.coords[chan].values)]
                if labels and all(isinstance(v, str) and v.strip() for v in labels):
                    object.__setattr__(self, "bands", tuple(labels))

    @classmethod
    def from_raster(
        cls,
        path: str,
        *,
        collection: str,
        bands: tuple[str, ...] | None = None,
        temporal: TemporalSpec | None = None,
    ) -> UserData:
        """Declare a georeferenced raster file (GeoTIFF, ...) as user data.

        Pixels, CRS and affine transform are read with rioxarray, so the
        projection and footprint come from the file.  Values are kept as
        stored (raw provider units).  ``scale_m`` is the pixel size for
        square pixels of a projected CRS (>= 1 m), else ``None``.

        Parameters
        ----------
        path : str
            A raster GDAL can open.
        collection : str
            Collection id or alias.
        bands : tuple of str, optional
            One band name per raster band.
        temporal : TemporalSpec, optional
            Acquisition time.

        Returns
        -------
        UserData
            ``data`` is the ``[bands, rows, cols]`` numpy array.
        """
        try:
            import rioxarray
        except ImportError as exc:  # pragma: no cover - core dependency
            raise ImportError("UserData.from_raster needs rioxarray: pip install rioxarray") from exc
        import xarray as xr

        opened = rioxarray.open_rasterio(path)
        if not isinstance(opened, xr.DataArray):
            for ds in opened if isinstance(opened, list) else [opened]:
                ds.close()
            raise SpecError(f"UserData.from_raster expects a single raster, got subdatasets in {path!r}.")
        with opened as da:
            pixels = np.asarray(da.values)
            rio_crs = da.rio.crs
            crs = _crs_string(rio_crs) if rio_crs is not None else None
            transform = da.rio.transform() if rio_crs is not None else None
            res_x, res_y = da.rio.resolution()
        scale_m = _scale_from_resolution(rio_crs, res_x, res_y) if rio_crs is not None else None
        return cls(
            data=pixels,
            collection=collection,
            bands=bands,
            temporal=temporal,
            scale_m=scale_m,
            crs=crs,
            transform=transform,
        )

    def validate(self) -> None:
        """Check the declaration's internal consistency.

        Raises
        ------
        SpecError
            Empty collection; empty or blank band names; ``data`` not
            ``[C,H,W]``/``[T,C,H,W]``; a channel count other than
            ``len(bands)``; ``scale_m <= 0``; ``crs`` without ``transform``
            or the reverse; a ``transform`` without affine attributes a..f.
        """
        if not str(self.collection or "").strip():
            raise SpecError("UserData.collection must be a non-empty collection id or alias.")
        if self.bands is not None and (
            len(self.bands) == 0 or any(not str(b or "").strip() for b in self.bands)
        ):
            raise SpecError(
                "UserData.bands must be a non-empty tuple of band names, or "
                "None for the collection's canonical band order."
            )
        shape = tuple(int(v) for v in np.shape(self.data))
        if len(shape) not in (3, 4):
            raise SpecError(f"UserData.data must be [C,H,W] or [T,C,H,W], got shape={shape}.")
        if self.bands is not None and shape[-3] != len(self.bands):
            raise SpecError(
                f"UserData.data has {shape[-3]} channels but declares "
                f"{len(self.bands)} bands; one band name per channel is required."
            )
        if self.scale_m is not None and int(self.scale_m) <= 0:
            raise SpecError("UserData.scale_m must be positive when provided.")
        if (self.crs is None) != (self.transform is None):
            raise SpecError(
                "UserData.crs and UserData.transform must be given together; a "
                "georeferenced raster needs both its CRS and its pixel->CRS affine."
            )
        if self.transform is not None and not all(hasattr(self.transform, k) for k in "abcdef"):
            raise SpecError(
                "UserData.transform must be an affine.Affine (rasterio-style pixel -> CRS "
                f"transform), got {type(self.transform).__name__}."
            )

    def pixels(self) -> np.ndarray:
        """``data`` as a numpy array (a DataArray is read)."""
        return np.asarray(self.data.values if _is_dataarray(self.data) else self.data)


def resolve_declared_bands(data: UserData) -> tuple[str, ...]:
    """The band names of a declaration, the collection's canonical order when omitted.

    Raises
    ------
    SpecError
        ``bands`` omitted for a collection without a canonical order, or with
        a channel count other than that order's length.
    """
    if data.bands is not None:
        return tuple(data.bands)
    collection_id = normalize_collection_id(data.collection)
    default = CANONICAL_BANDS.get(collection_id.upper())
    if default is None:
        raise SpecError(
            f"UserData.bands was omitted, but collection '{data.collection}' "
            "has no canonical band order to default to; declare one band "
            "name per channel."
        )
    channels = int(np.shape(data.data)[-3])
    if channels != len(default):
        raise SpecError(
            f"UserData.bands was omitted; the canonical order for "
            f"'{collection_id}' has {len(default)} bands {list(default)}, but "
            f"the array has {channels} channels. Declare bands explicitly."
        )
    return default


def warn_if_normalized(data: UserData, pixels: np.ndarray, *, stacklevel: int = 3) -> None:
    """Warn when Sentinel-2 values look already scaled to reflectance (max <= 1.5)."""
    collection_id = normalize_collection_id(data.collection).upper()
    if not any(marker in collection_id for marker in _DN_COLLECTION_MARKERS):
        return
    finite = pixels[np.isfinite(pixels)]
    if finite.size == 0:
        return
    max_value = float(finite.max())
    if 0.0 < max_value <= 1.5:
        warnings.warn(
            f"UserData declared as '{data.collection}' has max value "
            f"{max_value:.3g}; raw surface-reflectance DN (0..10000) is "
            "expected. If your data is scaled reflectance, multiply by 10000 "
            "before embedding.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _canonical_bands(collection_id: str, bands: Sequence[str]) -> tuple[str, ...]:
    resolved = resolve_band_aliases(collection_id, tuple(str(b).strip() for b in bands))
    return tuple(str(b).strip().upper() for b in resolved)


def match_bands(data: UserData, sensor: SensorSpec, *, model_name: str) -> tuple[int, ...]:
    """Channel indices of ``data`` giving ``sensor``'s bands in the model's order.

    Raises
    ------
    ModelError
        Another collection than the model's, a repeated band name, or a
        model band the declaration lacks.
    SpecError
        ``bands`` omitted where no canonical order applies.
    """
    user_collection = normalize_collection_id(data.collection)
    model_collection = normalize_collection_id(sensor.collection)
    if user_collection.upper() != model_collection.upper():
        raise ModelError(
            f"Model '{model_name}' expects imagery from collection "
            f"'{sensor.collection}', but the provided data is declared as "
            f"'{data.collection}'. Raw units differ across collections, so "
            "this data cannot serve the model."
        )
    user_bands = _canonical_bands(user_collection, resolve_declared_bands(data))
    if len(set(user_bands)) != len(user_bands):
        dupes = sorted({b for b in user_bands if user_bands.count(b) > 1})
        raise ModelError(
            f"UserData.bands declares duplicate band name(s) {dupes}; channel selection would be ambiguous."
        )
    model_bands = _canonical_bands(model_collection, sensor.bands)
    missing = [b for b in model_bands if b not in user_bands]
    if missing:
        raise ModelError(
            f"Model '{model_name}' needs bands {list(model_bands)} from "
            f"'{sensor.collection}', but the provided data lacks {missing} "
            f"(declared bands: {list(user_bands)})."
        )
    return tuple(user_bands.index(b) for b in model_bands)


# -- georeferencing ------------------------------------------------------------------
def _affine(transform: Any) -> Any:
    from affine import Affine

    return Affine(*(float(getattr(transform, k)) for k in "abcdef"))


def raster_footprint(crs: Any, transform: Any, hw: tuple[int, int]) -> BBox:
    """EPSG:4326 box around the four corners of a ``hw`` raster in ``crs``."""
    from pyproj import Transformer

    t = _affine(transform)
    h, w = int(hw[0]), int(hw[1])
    xs, ys = zip(*(t * (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))), strict=True)
    try:
        tfm = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    except Exception as exc:
        raise SpecError(f"Unrecognized CRS {crs!r}: {exc}") from exc
    lons, lats = tfm.transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    if not (np.all(np.isfinite(lons)) and np.all(np.isfinite(lats))):
        raise SpecError(f"The raster's corners in {crs!r} have no lon/lat.")
    return BBox(float(np.min(lons)), float(np.min(lats)), float(np.max(lons)), float(np.max(lats)))


def footprint_window(footprint: BBox, scale_m: float) -> GridWindow:
    """The common-grid window covering ``footprint``, snapped *outward* to the lattice.

    Unlike :func:`rs_embed_dask.geometry.grid_window` (pixels whose centres
    fall in a ROI) every pixel touching the raster's footprint is kept, as
    rs-embed does for user rasters, so no part of the raster is cut off.
    """
    s = float(scale_m)
    if not (s > 0.0 and math.isfinite(s)):
        raise SpecError(f"scale_m must be positive, got {scale_m!r}.")
    minx, miny = lonlat_to_mercator(footprint.minlon, footprint.minlat)
    maxx, maxy = lonlat_to_mercator(footprint.maxlon, footprint.maxlat)
    col0 = math.floor(minx / s + _LATTICE_EPS)
    col1 = math.ceil(maxx / s - _LATTICE_EPS)
    row0 = math.floor(-maxy / s + _LATTICE_EPS)
    row1 = math.ceil(-miny / s - _LATTICE_EPS)
    return GridWindow(
        col_off=col0, row_off=row0, width=max(1, col1 - col0), height=max(1, row1 - row0), scale_m=s
    )


def resample_to_window(
    array: np.ndarray, *, src_crs: Any, src_transform: Any, window: GridWindow, fill_value: float = 0.0
) -> np.ndarray:
    """Nearest-neighbour resample of a ``[..., H, W]`` raster onto ``window``.

    Each output pixel takes the source pixel under its centre (projected
    with pyproj); pixels the source does not cover get ``fill_value``.
    Nearest keeps every value an actual sensor value.
    """
    from pyproj import CRS, Transformer

    arr = np.asarray(array, dtype=np.float32)
    xs, ys = window.pixel_centers()
    gx, gy = np.meshgrid(xs, ys)
    if CRS.from_user_input(src_crs) != CRS.from_user_input(window.crs):
        tfm = Transformer.from_crs(window.crs, src_crs, always_xy=True)
        sx, sy = tfm.transform(gx.ravel(), gy.ravel())
        gx = np.asarray(sx, dtype=np.float64).reshape(gy.shape)
        gy = np.asarray(sy, dtype=np.float64).reshape(gx.shape)
    inv = ~_affine(src_transform)
    col_f = inv.a * gx + inv.b * gy + inv.c
    row_f = inv.d * gx + inv.e * gy + inv.f
    finite = np.isfinite(col_f) & np.isfinite(row_f)
    cols = np.floor(np.where(finite, col_f, -1.0)).astype(np.int64)
    rows = np.floor(np.where(finite, row_f, -1.0)).astype(np.int64)
    h, w = arr.shape[-2:]
    inside = finite & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.full((*arr.shape[:-2], *window.shape), float(fill_value), dtype=np.float32)
    out[..., inside] = arr[..., rows[inside], cols[inside]]
    return out


def _warn_utm_seam(crs: str, footprint: BBox) -> None:
    """Warn when a UTM raster reaches into a neighbouring UTM zone (rs-embed's seam warning)."""
    import re

    from pyproj import CRS

    m = re.match(r"^EPSG:32[67](\d{2})$", CRS.from_user_input(crs).to_string())
    if m is None:
        return

    def zone(lon: float) -> int:
        return max(1, min(60, math.floor((lon + 180.0) / 6.0) + 1))

    zones = {int(m.group(1))} | set(range(zone(footprint.minlon), zone(footprint.maxlon) + 1))
    if len(zones) > 1:
        warnings.warn(
            f"user data in {crs}: the ROI straddles a UTM zone boundary (zones {sorted(zones)}). "
            "Data from different zones is resampled onto the common EPSG:3857 grid "
            "independently, so expect a resampling seam along the boundary and growing "
            "UTM distortion past a zone's edge.",
            UserWarning,
            stacklevel=4,
        )


def align_to_common_grid(
    array: np.ndarray, data: UserData, *, scale_m: float, fill_value: float
) -> tuple[np.ndarray, dict[str, Any], GridWindow | None]:
    """Put a georeferenced declaration's array on the common grid at ``scale_m``.

    Returns
    -------
    (array, projection, window)
        The resampled array (unchanged without georeferencing), rs-embed's
        ``meta["user_input"]["projection"]`` record and the grid window
        (``None`` without georeferencing).
    """
    if data.crs is None:
        return array, {"crs": None, "aligned": False}, None
    from pyproj import CRS

    try:
        label = CRS.from_user_input(data.crs).to_string()
    except Exception as exc:
        raise SpecError(f"Unrecognized CRS {data.crs!r}: {exc}") from exc
    hw = (int(array.shape[-2]), int(array.shape[-1]))
    footprint = raster_footprint(data.crs, data.transform, hw)
    _warn_utm_seam(label, footprint)
    window = footprint_window(footprint, scale_m)
    out = resample_to_window(
        array, src_crs=data.crs, src_transform=data.transform, window=window, fill_value=fill_value
    )
    return (
        out,
        {
            "crs": label,
            "input_transform": data.transform,
            "input_hw": hw,
            "aligned": True,
            "resampling": "nearest",
            "output_crs": window.crs,
            "scale_m": float(window.scale_m),
            "transform": window.transform,
            "grid_hw": window.shape,
        },
        window,
    )
