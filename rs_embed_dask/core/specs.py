"""Request specifications with rs-embed's public names, fields and defaults.

All specs are frozen dataclasses: hashable, picklable and tokenised by their
fields, so the same request always gives the same Dask keys.  As in rs-embed,
``validate()`` is not run on construction (except for :class:`OutputSpec`);
the public API validates every spec at its boundary, before anything is
scheduled.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Any, ClassVar, Literal

from rs_embed_dask.core.errors import ModelError, SpecError

__all__ = [
    "BBox",
    "FetchSpec",
    "InputPrepSpec",
    "OutputSpec",
    "PointBuffer",
    "SensorSpec",
    "SpatialSpec",
    "TemporalSpec",
]

WGS84 = "EPSG:4326"


def _crs_is_wgs84(crs: str) -> bool:
    return str(crs).strip().upper() in {"EPSG:4326", "WGS84", "OGC:CRS84"}


def _is_finite_number(v: Any) -> bool:
    """``True`` for finite real numbers, numpy scalars included (``bool`` excluded)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_crs(crs: str) -> Any:
    """Return a ``pyproj.CRS`` for ``crs`` or raise :class:`SpecError`."""
    try:
        from pyproj import CRS
        from pyproj.exceptions import CRSError
    except ImportError as exc:  # pragma: no cover - pyproj is a core dependency
        raise SpecError(f"crs={crs!r} needs pyproj to be converted to EPSG:4326") from exc
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise SpecError(
            f"crs={crs!r} is not a coordinate reference system that pyproj knows; "
            "use 'EPSG:4326' or another 'EPSG:<code>' / WKT / PROJ string."
        ) from exc


@dataclass(frozen=True)
class BBox:
    """A lon/lat (or projected) bounding box.

    Parameters
    ----------
    minlon, minlat, maxlon, maxlat : float
        Bounds.  In ``EPSG:4326`` they are degrees; in another ``crs`` they are
        that CRS's x/y units and are converted with :meth:`to_wgs84`.
    crs : str, default "EPSG:4326"
        Any CRS that pyproj understands.  rs-embed accepts only EPSG:4326.
    """

    minlon: float
    minlat: float
    maxlon: float
    maxlat: float
    crs: str = WGS84

    def validate(self) -> None:
        """Raise :class:`SpecError` when the box is not usable."""
        vals = (self.minlon, self.minlat, self.maxlon, self.maxlat)
        if not all(_is_finite_number(v) for v in vals):
            raise SpecError(f"BBox bounds must be finite numbers; got {vals}.")
        if not _crs_is_wgs84(self.crs):
            _check_crs(self.crs)
            if not (self.minlon < self.maxlon and self.minlat < self.maxlat):
                raise SpecError(
                    f"Invalid bbox bounds in {self.crs}: need minx < maxx and miny < maxy; "
                    f"got {vals}."
                )
            self.to_wgs84().validate()
            return
        if not (-180 <= self.minlon < self.maxlon <= 180):
            raise SpecError(
                "Invalid bbox bounds: longitudes must be in [-180, 180] with minlon < maxlon; "
                f"got minlon={self.minlon}, maxlon={self.maxlon}."
            )
        if not (-90 <= self.minlat < self.maxlat <= 90):
            raise SpecError(
                "Invalid bbox bounds: latitudes must be in [-90, 90] with minlat < maxlat; "
                f"got minlat={self.minlat}, maxlat={self.maxlat}."
            )

    def to_wgs84(self) -> BBox:
        """Return the same box in EPSG:4326 (itself when already there)."""
        if _crs_is_wgs84(self.crs):
            return self if self.crs == WGS84 else replace(self, crs=WGS84)
        from pyproj import Transformer

        tr = Transformer.from_crs(_check_crs(self.crs), WGS84, always_xy=True)
        x0, y0, x1, y1 = tr.transform_bounds(
            self.minlon, self.minlat, self.maxlon, self.maxlat, densify_pts=21
        )
        return BBox(float(x0), float(y0), float(x1), float(y1), crs=WGS84)

    @property
    def center(self) -> tuple[float, float]:
        """``(lon, lat)`` of the box centre (in the box's CRS)."""
        return (self.minlon + self.maxlon) / 2.0, (self.minlat + self.maxlat) / 2.0


@dataclass(frozen=True)
class PointBuffer:
    """A square of half-side ``buffer_m`` Web-Mercator metres around a point.

    Parameters
    ----------
    lon, lat : float
        Centre.  In a CRS other than EPSG:4326 these are that CRS's x/y.
    buffer_m : float
        Half side of the square, in EPSG:3857 metres (as rs-embed).
    crs : str, default "EPSG:4326"
        Any CRS that pyproj understands.
    """

    lon: float
    lat: float
    buffer_m: float
    crs: str = WGS84

    def validate(self) -> None:
        """Raise :class:`SpecError` when the point or buffer is not usable."""
        vals = (self.lon, self.lat, self.buffer_m)
        if not all(_is_finite_number(v) for v in vals):
            raise SpecError(f"PointBuffer lon, lat and buffer_m must be finite numbers; got {vals}.")
        if self.buffer_m <= 0:
            raise SpecError("buffer_m must be positive.")
        if not _crs_is_wgs84(self.crs):
            _check_crs(self.crs)
            self.to_wgs84().validate()

    def to_wgs84(self) -> PointBuffer:
        """Return the same point in EPSG:4326 (``buffer_m`` is unchanged)."""
        if _crs_is_wgs84(self.crs):
            return self if self.crs == WGS84 else replace(self, crs=WGS84)
        from pyproj import Transformer

        tr = Transformer.from_crs(_check_crs(self.crs), WGS84, always_xy=True)
        lon, lat = tr.transform(self.lon, self.lat)
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise SpecError(f"PointBuffer ({self.lon}, {self.lat}) in {self.crs} has no lon/lat.")
        return PointBuffer(float(lon), float(lat), self.buffer_m, crs=WGS84)

    @property
    def center(self) -> tuple[float, float]:
        """``(lon, lat)`` of the point."""
        return self.lon, self.lat


SpatialSpec = BBox | PointBuffer


class _YearConstructor:
    """``TemporalSpec.year`` is both a constructor (on the class) and a field.

    rs-embed declares a field and a static method of the same name, so its
    range specs carry the function object as ``year``.  This non-data
    descriptor gives the constructor on the class while instances keep their
    own ``year`` value (``None`` for range specs).
    """

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return objtype._from_year
        return obj.__dict__.get("year")


@dataclass(frozen=True)
class TemporalSpec:
    """A calendar year or a half-open date range ``[start, end)``.

    Use the constructors :meth:`TemporalSpec.year` and :meth:`TemporalSpec.range`.
    """

    mode: Literal["year", "range"]
    year: int | None = None
    start: str | None = None
    end: str | None = None

    @classmethod
    def _from_year(cls, y: int) -> TemporalSpec:
        """A calendar year ``y``: the window ``[y-01-01, (y+1)-01-01)``."""
        return cls(mode="year", year=y)

    @classmethod
    def range(cls, start: str, end: str) -> TemporalSpec:
        """Half-open date range ``[start, end)`` in ISO ``YYYY-MM-DD``."""
        return cls(mode="range", start=start, end=end)

    def validate(self) -> None:
        """Raise :class:`SpecError` when the spec is not usable."""
        if self.mode == "year":
            y = self.year
            if y is None:
                raise SpecError("TemporalSpec.year requires year.")
            if isinstance(y, bool):  # stricter than rs-embed, which takes True as year 1
                raise SpecError("TemporalSpec.year requires an integer year.")
            # stricter than rs-embed: 2022.7 is refused, not truncated to 2022 (2022.0 is fine)
            fractional = isinstance(y, numbers.Real) and not isinstance(y, numbers.Integral)
            if fractional and math.isfinite(y) and not float(y).is_integer():
                raise SpecError(f"TemporalSpec.year requires an integer year. Got {y!r}, which is not truncated.")
            try:
                yi = int(y)
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecError("TemporalSpec.year requires an integer year.") from exc
            if not 1 <= yi <= 9999:
                raise SpecError("TemporalSpec.year must be in [1, 9999].")
        elif self.mode == "range":
            if not self.start or not self.end:
                raise SpecError("TemporalSpec.range requires start and end.")
            try:
                s = date.fromisoformat(str(self.start))
                e = date.fromisoformat(str(self.end))
            except ValueError as exc:
                raise SpecError("TemporalSpec.range expects ISO dates 'YYYY-MM-DD'.") from exc
            if s >= e:
                raise SpecError("TemporalSpec.range requires start < end.")
        else:
            raise SpecError(f"Unknown TemporalSpec mode: {self.mode} (expected 'year' or 'range').")

    def date_range(self) -> tuple[date, date]:
        """Return ``(start, end)`` dates, end exclusive."""
        if self.mode == "year":
            y = int(self.year)  # type: ignore[arg-type]
            return date(y, 1, 1), date(y + 1, 1, 1)
        return date.fromisoformat(str(self.start)), date.fromisoformat(str(self.end))

    def to_dict(self) -> dict[str, Any]:
        """Serialise as rs-embed manifests do (with a real ``year``)."""
        return {"mode": self.mode, "year": self.year, "start": self.start, "end": self.end}


TemporalSpec.year = _YearConstructor()  # type: ignore[assignment]


@dataclass(frozen=True)
class SensorSpec:
    """What to fetch: collection, bands and compositing, as rs-embed's ``SensorSpec``."""

    collection: str
    bands: tuple[str, ...]
    scale_m: int = 10
    cloudy_pct: int = 30
    fill_value: float = 0.0
    composite: Literal["median", "mosaic"] = "median"
    modality: str | None = None
    orbit: str | None = None
    use_float_linear: bool = True
    s1_require_iw: bool = True
    s1_relax_iw_on_empty: bool = True
    check_input: bool = False
    check_raise: bool = True
    check_save_dir: str | None = None

    def __post_init__(self) -> None:
        # rs-embed callers pass lists; keep the spec hashable.
        if isinstance(self.bands, list):
            object.__setattr__(self, "bands", tuple(self.bands))

    def validate(self) -> None:
        """Raise :class:`SpecError` for values no provider can use."""
        if not isinstance(self.collection, str) or not self.collection.strip():
            raise SpecError("SensorSpec.collection must be a non-empty string.")
        if not isinstance(self.bands, tuple) or not all(isinstance(b, str) and b for b in self.bands):
            raise SpecError("SensorSpec.bands must be a tuple of non-empty band names.")
        if not (isinstance(self.scale_m, (int, float)) and self.scale_m > 0):
            raise SpecError(f"SensorSpec.scale_m must be a positive number; got {self.scale_m!r}.")
        if self.composite not in ("median", "mosaic"):
            raise SpecError(
                f"SensorSpec.composite must be 'median' or 'mosaic'; got {self.composite!r}."
            )
        if not (0 <= self.cloudy_pct <= 100):
            raise SpecError(f"SensorSpec.cloudy_pct must be in [0, 100]; got {self.cloudy_pct!r}.")

    def identity(self) -> dict[str, Any]:
        """The fields that decide which pixels are fetched (input-sharing key)."""
        keys = (
            "collection", "bands", "scale_m", "cloudy_pct", "fill_value", "composite",
            "modality", "orbit", "use_float_linear", "s1_require_iw", "s1_relax_iw_on_empty",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class FetchSpec:
    """Partial override of a model's default sensor (non-``None`` fields win)."""

    scale_m: int | None = None
    cloudy_pct: int | None = None
    fill_value: float | None = None
    composite: Literal["median", "mosaic"] | None = None

    def apply(self, sensor: SensorSpec) -> SensorSpec:
        """Return ``sensor`` with this spec's non-``None`` fields applied."""
        changes: dict[str, Any] = {}
        if self.scale_m is not None:
            changes["scale_m"] = int(self.scale_m)
        if self.cloudy_pct is not None:
            changes["cloudy_pct"] = int(self.cloudy_pct)
        if self.fill_value is not None:
            changes["fill_value"] = float(self.fill_value)
        if self.composite is not None:
            changes["composite"] = str(self.composite)
        return replace(sensor, **changes)


_OUTPUT_MODES = ("grid", "pooled")
_POOLINGS = ("mean", "max")
_ORIENTATIONS = ("north_up", "native")


def _reject_output_kwargs(ctor: str, kwargs: dict[str, Any]) -> None:
    if "scale_m" in kwargs:
        raise SpecError(
            "OutputSpec.scale_m is no longer supported. Use fetch=FetchSpec(scale_m=...) "
            "or sensor=SensorSpec(..., scale_m=...) instead."
        )
    if kwargs:
        raise SpecError(f"Unexpected OutputSpec.{ctor}() keyword(s): {sorted(kwargs)}")


@dataclass(frozen=True)
class OutputSpec:
    """Pooled vector ``(D,)`` or grid ``(D, H, W)`` output."""

    mode: Literal["grid", "pooled"]
    pooling: Literal["mean", "max"] = "mean"
    grid_orientation: Literal["north_up", "native"] = "north_up"

    def __post_init__(self) -> None:
        if self.mode not in _OUTPUT_MODES:
            raise SpecError(f"Unknown output mode: {self.mode!r} (expected 'grid' or 'pooled').")
        if self.pooling not in _POOLINGS:
            raise SpecError(f"Unknown pooling: {self.pooling!r} (expected 'mean' or 'max').")
        if self.grid_orientation not in _ORIENTATIONS:
            raise SpecError(
                f"Unknown grid_orientation: {self.grid_orientation!r} "
                "(expected 'north_up' or 'native')."
            )

    @classmethod
    def pooled(cls, pooling: Literal["mean", "max"] = "mean", **kwargs: Any) -> OutputSpec:
        """Pooled output with ``pooling`` in ``{"mean", "max"}``."""
        _reject_output_kwargs("pooled", kwargs)
        return cls(mode="pooled", pooling=pooling, grid_orientation="north_up")

    @classmethod
    def grid(
        cls, *, grid_orientation: Literal["north_up", "native"] = "north_up", **kwargs: Any
    ) -> OutputSpec:
        """Grid output, north-up unless ``grid_orientation="native"``."""
        _reject_output_kwargs("grid", kwargs)
        return cls(mode="grid", grid_orientation=grid_orientation)


_PREP_MODES = ("auto", "resize", "tile")


@dataclass(frozen=True)
class InputPrepSpec:
    """How inputs larger than a model's image size are prepared (rs-embed semantics)."""

    mode: Literal["auto", "resize", "tile"] = "tile"
    tile_size: int | None = None
    tile_stride: int | None = None
    max_tiles: int = 64
    max_tiles_hard: int = 1024
    pad_edges: bool = True
    tile_snap_frac: float = 0.1

    MODES: ClassVar[tuple[str, ...]] = _PREP_MODES

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_tiles_hard", max(int(self.max_tiles_hard), int(self.max_tiles)))
        object.__setattr__(self, "tile_snap_frac", min(0.5, max(0.0, float(self.tile_snap_frac))))

    @classmethod
    def auto(
        cls,
        *,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        max_tiles: int = 64,
        max_tiles_hard: int = 1024,
        pad_edges: bool = True,
        tile_snap_frac: float = 0.1,
    ) -> InputPrepSpec:
        """Tile grid requests when useful, otherwise resize."""
        return cls("auto", tile_size, tile_stride, max_tiles, max_tiles_hard, pad_edges, tile_snap_frac)

    @classmethod
    def resize(cls) -> InputPrepSpec:
        """Resize the whole input to the model's image size."""
        return cls(mode="resize")

    @classmethod
    def tile(
        cls,
        *,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        max_tiles: int = 64,
        max_tiles_hard: int = 1024,
        pad_edges: bool = True,
        tile_snap_frac: float = 0.1,
    ) -> InputPrepSpec:
        """Cut the input into model-sized tiles and stitch or pool the results."""
        return cls("tile", tile_size, tile_stride, max_tiles, max_tiles_hard, pad_edges, tile_snap_frac)

    def validate(self) -> None:
        """Raise :class:`ModelError` as rs-embed's resolution does."""
        if self.mode not in _PREP_MODES:
            raise ModelError(f"input_prep mode must be one of {list(_PREP_MODES)}, got {self.mode!r}")
        for name in ("tile_size", "tile_stride"):
            v = getattr(self, name)
            if v is None:
                continue
            try:
                ok = not isinstance(v, bool) and int(v) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ModelError(f"input_prep {name} must be positive, got {v!r}")


def resolve_input_prep(value: InputPrepSpec | str | None) -> InputPrepSpec:
    """Normalise ``None`` / ``"auto"|"resize"|"tile"`` / a spec into a spec.

    The environment variable ``RS_EMBED_TILE_SNAP_FRAC`` (a float in
    ``[0, 0.5]``) overrides ``tile_snap_frac``, as in rs-embed.

    Raises
    ------
    ModelError
        For an unknown string, invalid tile fields or an invalid
        ``RS_EMBED_TILE_SNAP_FRAC``.
    """
    if value is None:
        spec = InputPrepSpec()
    elif isinstance(value, str):
        key = value.strip().lower()
        if key not in _PREP_MODES:
            raise ModelError(f"input_prep string must be 'auto'/'resize'/'tile', got {value!r}")
        spec = InputPrepSpec(mode=key)  # type: ignore[arg-type]
    elif isinstance(value, InputPrepSpec):
        spec = value
    else:
        raise ModelError(
            "input_prep must be None, 'auto'/'resize'/'tile' or an InputPrepSpec; "
            f"got {type(value).__name__}"
        )
    spec.validate()
    env = os.environ.get("RS_EMBED_TILE_SNAP_FRAC")
    if env is not None and env.strip():
        try:
            frac = float(env)
        except ValueError:
            frac = math.nan
        if not 0.0 <= frac <= 0.5:
            raise ModelError(f"RS_EMBED_TILE_SNAP_FRAC must be a float in [0, 0.5], got {env!r}")
        spec = replace(spec, tile_snap_frac=frac)
    return spec


def spec_fields(obj: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` without deep copies (specs hold only plain values)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
