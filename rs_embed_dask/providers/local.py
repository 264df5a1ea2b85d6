"""``local``: the user's own rasters, reprojected onto the common grid.

The HPC case: imagery already sits on a (parallel) file system as GeoTIFF,
COG, VRT, JPEG2000, NetCDF or zarr.  Where the files are comes from the
provider option ``path`` or, without it, from ``SensorSpec.collection``
(an optional ``local:`` prefix is stripped), so both of these work::

    LocalProvider(path="/data/s2/*.tif")
    SensorSpec(collection="local:/data/s2/*.tif", bands=("B2", "B3", "B4", "B8"))

``path`` is a file, a glob (``**`` allowed) or a directory searched
recursively for rasters (``.tif .tiff .vrt .jp2 .img .nc .nc4 .zarr``); a
``.zarr`` directory is one cube.  GDAL rasters are opened lazily with
:func:`rioxarray.open_rasterio` (lock-free, one handle per thread) and NetCDF /
zarr cubes with :func:`xarray.open_dataset`; only the source pixels under the
requested window (plus a margin for the resampling kernel) are read, then
reprojected with ``rio.reproject`` onto the window's EPSG:3857 grid.

Tiles whose footprint intersects the window are read (their headers are
scanned first, once); those of one date and CRS are merged with
:func:`rioxarray.merge.merge_arrays` (first valid pixel, path order) and
reprojected once, so kernels see across tile seams as with a VRT; tiles in
different CRSs are reprojected separately and stacked first-valid.  This
stands in for a GDAL VRT on purpose: rasterio cannot build one and the GDAL
Python bindings are not a dependency, and a VRT over a whole directory would
still be opened per request, whereas merging only the tiles under the window
reads nothing else.

Besides multi-band files, one file per band works: a single-band raster
serves band ``B4`` when its description, a token of its name
(``20220615_B04.tif``) or its folder (``B04/2022-06-15.tif``) spells it; each
band is then mosaicked and composited over its own files.  Dates may also sit
in the folder name (``2022-06-15/B04.tif``).

Acquisition dates come from the file name (``20220615``, ``2022-06-15`` or
``2022_06_15``) or a cube's ``time`` dimension; a frame whose date falls in the requested ``[start, end)`` is used,
dateless files are timeless and used for every time window.  Frames are
combined per ``SensorSpec.composite``: ``"median"`` (per-pixel median of valid
values) or ``"mosaic"`` (latest valid pixel on top, timeless files at the
bottom).  No-data (the file's no-data value, or the ``nodata`` option) and NaN
become ``SensorSpec.fill_value``.  Values stay in the file's units: GeoTIFF
scale/offset tags are not applied, NetCDF/zarr cubes are CF-decoded.
"""

from __future__ import annotations

import contextlib
import glob
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import MERCATOR_HALF_WORLD, WEB_MERCATOR, GridWindow
from rs_embed_dask.providers.base import Provider, ProviderOption

__all__ = ["RASTER_SUFFIXES", "LocalProvider", "date_from_name"]

#: File suffixes a directory search picks up.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc", ".nc4", ".zarr")
_CUBE_SUFFIXES = (".nc", ".nc4", ".zarr")
_DATE_RE = re.compile(r"(?<!\d)((?:19|20)\d\d)([-_]?)(\d\d)\2(\d\d)(?!\d)")
_INDEX_RE = re.compile(r"^(?:band[_ ]?)?(\d+)$", re.IGNORECASE)
_MARGIN = 3  # kernel radius (grid pixels) read around the window, for bilinear/cubic/lanczos


def date_from_name(path: str) -> date | None:
    """Return the first valid ``YYYYMMDD`` / ``YYYY-MM-DD`` / ``YYYY_MM_DD`` date in a file's name.

    Parameters
    ----------
    path : str
        File path; only its base name is searched.

    Returns
    -------
    datetime.date or None
    """
    for m in _DATE_RE.finditer(os.path.basename(path.rstrip("/\\"))):
        with contextlib.suppress(ValueError):
            return date(int(m[1]), int(m[3]), int(m[4]))
    return None


def _file_date(path: str) -> date | None:
    """The date in a file's name, else in its folder's (``2022-06-15/B04.tif``)."""
    return date_from_name(path) or date_from_name(os.path.dirname(path.rstrip("/\\")))


@dataclass(frozen=True)
class _Item:
    """One readable frame: a raster file, or one time step of a cube."""

    path: str
    cube: bool
    date: date | None
    time_index: int | None
    bounds: tuple[float, float, float, float]  # footprint in EPSG:3857
    names: tuple[str | None, ...]  # band descriptions / variable names
    tags: tuple[str, ...] = ()  # single-band files: the band names their path spells


def _band_tag(name: str) -> str:
    """Normalised band name: lower case, ``b04`` -> ``b4``."""
    key = str(name).strip().lower()
    m = re.match(r"^b0+(\d+a?)$", key)
    return f"b{m[1]}" if m else key


def _path_tags(path: str, names: tuple[str | None, ...]) -> tuple[str, ...]:
    """Band tags of a single-band raster: its description, file-name tokens and folder name."""
    stem = os.path.basename(path.rstrip("/\\"))
    stem = stem[: -len(os.path.splitext(stem)[1]) or None]
    parts = [n for n in names if n] + re.split(r"[_\-. ]+", stem) + [os.path.basename(os.path.dirname(path))]
    return tuple(dict.fromkeys(_band_tag(p) for p in parts if p and not p.isdigit()))


def _mercator_bounds(crs: Any, bounds: tuple[float, ...]) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds(crs, WEB_MERCATOR, *bounds, densify_pts=21)
    h = MERCATOR_HALF_WORLD
    return (max(x0, -h), max(y0, -h), min(x1, h), min(y1, h))


def _is_cube(path: str) -> bool:
    p = path.rstrip("/\\").lower()
    return p.endswith(_CUBE_SUFFIXES) or (
        os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in ("zarr.json", ".zgroup"))
    )


def _fmt(bounds: tuple[float, ...], digits: int = 1) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in bounds) + ")"


@contextlib.contextmanager
def _open_cube(path: str) -> Iterator[tuple[Any, list[str], Any]]:
    """Yield ``(dataset, band variables, band coordinate or None)`` of a NetCDF/zarr cube."""
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    engine = "zarr" if path.rstrip("/\\").lower().endswith(".zarr") or os.path.isdir(path) else None
    with xr.open_dataset(path, engine=engine, decode_coords="all", chunks=None) as ds:
        dims = {d: n for d, n in (("lon", "x"), ("lat", "y")) if d in ds.dims}
        geo = ds.rename(dims) if dims else ds
        spatial = [str(v) for v in geo.data_vars if {"x", "y"} <= set(geo[v].dims)] or [
            str(v) for v in geo.data_vars if geo[v].ndim >= 2
        ]
        if not spatial:
            raise ProviderError(f"local provider: {path} has no variable with spatial dimensions.")
        crs = geo.rio.crs if geo.rio.crs is not None else geo[spatial[0]].rio.crs
        if crs is None and dims:
            crs = "EPSG:4326"
        if crs is None:
            raise ProviderError(f"local provider: {path} has no CRS (write one with ds.rio.write_crs).")
        geo = geo.rio.write_crs(crs)
        band = (
            geo[spatial[0]]["band"].values if len(spatial) == 1 and "band" in geo[spatial[0]].dims else None
        )
        yield geo, spatial, band


class LocalProvider(Provider):
    """Rasters on a local or parallel file system, on the common grid.

    Parameters
    ----------
    path : str or list of str, optional
        A raster file, a glob or a directory of tiles (several of them in a
        list).  Default: ``SensorSpec.collection``, minus a ``local:`` prefix.
    resampling : str, default "nearest"
        A :class:`rasterio.enums.Resampling` name (``"bilinear"``, ``"cubic"``,
        ``"average"``, ...).  Nearest on a raster already on the common grid
        returns its pixels exactly.
    nodata : float, optional
        No-data value overriding (or supplying) the files' own.

    Notes
    -----
    Bands are matched by name against GeoTIFF band descriptions (the
    ``long_name`` rioxarray reports) or cube variable / ``band`` coordinate
    names, case-insensitively; otherwise ``"3"``, ``"band3"`` or ``"band_3"``
    select the third band.  File lists and headers are scanned once per
    provider instance (one per worker process and option set).
    """

    name = "local"
    requires = ("rioxarray", "rasterio", "xarray")
    option_specs = (
        ProviderOption("path", (str, os.PathLike, list, tuple), nullable=True, items=(str, os.PathLike), path=True,
                       doc="a raster, a glob, a folder, or a list of them"),
        ProviderOption("resampling", (str,), doc="a rasterio Resampling name"),
        ProviderOption("nodata", (numbers.Real,), nullable=True, finite=False, doc="no-data value of the files"),
    )  # fmt: skip

    def __init__(
        self, *, path: str | list[str] | None = None, resampling: str = "nearest", nodata: float | None = None
    ) -> None:
        from rasterio.enums import Resampling

        if str(resampling) not in Resampling.__members__:
            raise ProviderError(
                f"local provider option resampling={resampling!r} is not one of "
                f"{sorted(Resampling.__members__)}"
            )
        super().__init__(path=path, resampling=resampling, nodata=nodata)
        self.path = path
        self.resampling = str(resampling)
        self.nodata = None if nodata is None else float(nodata)
        self._files: dict[str, list[str]] = {}
        self._items: dict[str, list[_Item]] = {}

    # -- discovery -------------------------------------------------------------
    def sources(self, sensor: SensorSpec | None = None) -> list[str]:
        """Sorted raster paths the option ``path`` (else ``sensor.collection``) names."""
        spec = self.path if self.path is not None else (sensor.collection if sensor is not None else None)
        if spec is None or (isinstance(spec, str) and not spec.strip()):
            raise ProviderError(
                "local provider needs a path: LocalProvider(path=...) or "
                "SensorSpec(collection='local:/data/*.tif')."
            )
        specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
        out: list[str] = []
        for s in specs:
            s = os.fspath(s).strip()
            s = os.path.expanduser(s[len("local:") :] if s.lower().startswith("local:") else s)
            if s not in self._files and (found := self._expand(s)):  # misses are not cached
                self._files[s] = found
            out.extend(self._files.get(s, []))
        if not out:
            raise ProviderError(
                f"local provider found no rasters at {spec!r} (a file, a glob or a directory of "
                f"{'/'.join(RASTER_SUFFIXES)} files; set LocalProvider(path=...) or "
                "SensorSpec(collection='local:<path>'))."
            )
        return sorted(dict.fromkeys(out))

    @staticmethod
    def _expand(spec: str) -> list[str]:
        if any(ch in spec for ch in "*?["):
            found = glob.glob(spec, recursive=True)
            return sorted(p for p in found if os.path.isfile(p) or _is_cube(p))
        if os.path.isdir(spec) and not _is_cube(spec):
            hits = []
            for root, dirs, files in os.walk(spec):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                hits += [os.path.join(root, d) for d in dirs if d.lower().endswith(".zarr")]
                dirs[:] = [d for d in dirs if not d.lower().endswith(".zarr")]
                hits += [os.path.join(root, f) for f in files if f.lower().endswith(RASTER_SUFFIXES)]
            return sorted(hits)
        return [spec] if os.path.exists(spec) else []

    def items(self, path: str) -> list[_Item]:
        """Frames of one raster or cube (cached header scan)."""
        if path not in self._items:
            try:
                self._items[path] = self._scan_cube(path) if _is_cube(path) else self._scan_raster(path)
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(f"local provider could not read {path}: {exc!r}") from exc
        return self._items[path]

    @staticmethod
    def _scan_raster(path: str) -> list[_Item]:
        import rasterio

        with rasterio.open(path) as src:
            if src.crs is None:
                raise ProviderError(f"local provider: {path} has no CRS; cannot place it on the grid.")
            bounds = _mercator_bounds(src.crs, tuple(src.bounds))
            names = tuple(src.descriptions)
            tags = _path_tags(path, names) if src.count == 1 else ()
            return [_Item(path, False, _file_date(path), None, bounds, names, tags)]

    @staticmethod
    def _scan_cube(path: str) -> list[_Item]:
        with _open_cube(path) as (ds, variables, band):
            da = ds[variables[0]]
            bounds = _mercator_bounds(ds.rio.crs, da.rio.bounds(recalc=True))
            names = tuple(str(b) for b in band) if band is not None else tuple(variables)
            if "time" not in da.dims:
                return [_Item(path, True, date_from_name(path), None, bounds, names)]
            days = np.asarray(ds["time"].values).astype("datetime64[D]").astype(object)
            return [_Item(path, True, d, i, bounds, names) for i, d in enumerate(days)]

    # -- reading ---------------------------------------------------------------
    @staticmethod
    def band_indices(item: _Item, bands: tuple[str, ...]) -> list[int]:
        """0-based band positions of ``bands`` in ``item`` (by name, else 1-based index)."""
        lower = [None if n is None else str(n).strip().lower() for n in item.names]
        idx, missing = [], []
        for b in bands:
            key = str(b).strip().lower()
            m = _INDEX_RE.match(key)
            if key in lower:
                idx.append(lower.index(key))
            elif m and 1 <= int(m[1]) <= len(lower):
                idx.append(int(m[1]) - 1)
            else:
                missing.append(b)
        if missing:
            avail = [n if n is not None else f"band_{i + 1}" for i, n in enumerate(item.names)]
            raise ProviderError(
                f"local provider: band(s) {missing} not found in {item.path}; available: {avail} "
                f"(or 1-based indices '1'..'{len(avail)}')."
            )
        return idx

    def _load(self, item: _Item, band_idx: list[int], window: GridWindow) -> Any:
        """Float32 DataArray of the item's pixels under ``window`` (source CRS, NaN = no data)."""
        import rioxarray
        import xarray as xr
        from affine import Affine

        with contextlib.ExitStack() as stack:
            if item.cube:
                ds, variables, band = stack.enter_context(_open_cube(item.path))
                sel = {"time": item.time_index} if item.time_index is not None else {}
                if band is not None:
                    das = [ds[variables[0]].isel(band=i, **sel) for i in band_idx]
                else:
                    das = [ds[variables[i]].isel(**sel) for i in band_idx]
                full_t, crs = das[0].rio.transform(recalc=True), ds.rio.crs
            else:
                da: Any = rioxarray.open_rasterio(item.path, lock=False, cache=False, masked=False)
                stack.callback(da.close)
                das, full_t, crs = [da.isel(band=band_idx)], da.rio.transform(), da.rio.crs
            ref = das[0]
            ydim, xdim = ref.rio.y_dim, ref.rio.x_dim
            sl = self._source_slices(window, crs, full_t, ref.sizes[ydim], ref.sizes[xdim])
            if sl is None:
                return None
            (r0, r1), (c0, c1) = sl
            isel = {ydim: slice(r0, r1), xdim: slice(c0, c1)}
            subs = [d.isel(isel).load().transpose(..., ydim, xdim) for d in das]  # reads the window only
            nodata = self.nodata if self.nodata is not None else ref.rio.nodata
        vals = np.concatenate([np.asarray(d.values).reshape(-1, r1 - r0, c1 - c0) for d in subs])
        data = vals.astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            data[vals == nodata] = np.nan
        coords = {"y": subs[0][ydim].values, "x": subs[0][xdim].values}
        sub = xr.DataArray(data, dims=("band", "y", "x"), coords=coords).rio.write_crs(crs)
        sub = sub.rio.write_transform(full_t @ Affine.translation(c0, r0))
        return sub.rio.write_nodata(np.nan, encoded=False)

    def _warp(self, subs: list[Any], window: GridWindow) -> np.ndarray:
        """Mosaic same-CRS sources (first valid on top) and reproject them onto ``window``."""
        from rasterio.enums import Resampling
        from rioxarray.merge import merge_arrays

        da = subs[0] if len(subs) == 1 else merge_arrays(subs, nodata=np.nan)
        out = da.rio.reproject(
            WEB_MERCATOR,
            shape=window.shape,
            transform=window.transform,
            resampling=Resampling[self.resampling],
            nodata=np.nan,
        )
        return np.asarray(out.values, dtype=np.float32)

    @staticmethod
    def _source_slices(window: GridWindow, crs: Any, transform: Any, rows: int, cols: int) -> Any:
        """Source row/column ranges covering ``window`` plus a kernel margin, or ``None``."""
        from rasterio.warp import transform_bounds

        x0, y0, x1, y1 = transform_bounds(WEB_MERCATOR, crs, *window.bounds, densify_pts=21)
        inv = ~transform
        cs, rs = zip(*(inv @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
        if not all(map(math.isfinite, cs + rs)):
            return ((0, rows), (0, cols))
        # a downsampling kernel spans (source pixels per grid pixel) x its radius
        ratio = max(1.0, (max(cs) - min(cs)) / window.width, (max(rs) - min(rs)) / window.height)
        m = math.ceil(_MARGIN * ratio)
        r0, r1 = max(0, math.floor(min(rs)) - m), min(rows, math.ceil(max(rs)) + m)
        c0, c1 = max(0, math.floor(min(cs)) - m), min(cols, math.ceil(max(cs)) + m)
        return ((r0, r1), (c0, c1)) if r1 > r0 and c1 > c0 else None

    @staticmethod
    def _per_band(hits: list[_Item], bands: tuple[str, ...]) -> dict[str, list[_Item]] | None:
        """Items per band for a one-file-per-band layout, or ``None`` for multi-band files.

        A single-band file serves band ``b`` when its description, a token of
        its name (``20220615_B04.tif``) or its folder (``B04/20220615.tif``)
        spells ``b`` (``B4`` and ``B04`` alike).
        """
        want = {b: _band_tag(b) for b in bands}
        if not any(t in it.tags for it in hits for t in want.values()):
            return None
        layout = {b: [it for it in hits if tag in it.tags] for b, tag in want.items()}
        missing = [b for b, its in layout.items() if not its]
        if missing:
            names = sorted(
                {os.path.relpath(it.path, os.path.dirname(os.path.dirname(it.path))) for it in hits}
            )
            raise ProviderError(
                f"local provider: one-file-per-band layout has no file for band(s) {missing} under the "
                f"ROI window; files there: {names[:20]}."
            )
        return layout

    def _composite(
        self, hits: list[_Item], bands: tuple[str, ...], window: GridWindow, how: str
    ) -> tuple[np.ndarray, list[date | None]]:
        """``(C, H, W)`` composite of ``hits`` (NaN = no data) and the dates it used, oldest first."""
        by_date: dict[date | None, dict[str, list[Any]]] = {}
        for it in sorted(hits, key=lambda i: (i.date or date.min, i.path, i.time_index or 0)):
            idx = [0] * len(bands) if it.tags and len(bands) == 1 and _band_tag(bands[0]) in it.tags else None
            idx = idx or self.band_indices(it, bands)
            try:
                sub = self._load(it, idx, window)
            except Exception as exc:
                raise ProviderError(f"local provider could not read {it.path}: {exc!r}") from exc
            if sub is not None:  # tiles of one date are mosaicked per CRS before reprojection
                by_date.setdefault(it.date, {}).setdefault(str(sub.rio.crs), []).append(sub)
        groups: dict[date | None, np.ndarray] = {}
        for day, by_crs in by_date.items():
            for subs in by_crs.values():
                arr, prev = self._warp(subs, window), groups.get(day)
                groups[day] = arr if prev is None else np.where(np.isnan(prev), arr, prev)
        if not groups:
            return np.full((len(bands), *window.shape), np.nan, np.float32), []
        frames = list(groups.values())  # oldest first, timeless (None) before dated
        if len(frames) == 1:
            out = frames[0]
        elif how == "mosaic":
            out = frames[0]
            for fr in frames[1:]:
                out = np.where(np.isnan(fr), out, fr)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
                out = np.nanmedian(np.stack(frames), axis=0)
        return out, list(groups)

    # -- the provider contract ------------------------------------------------------
    def fetch_window(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Read, reproject, mosaic and composite the rasters under ``window`` over ``dates``."""
        items = [it for p in self.sources(sensor) for it in self.items(p)]
        wx0, wy0, wx1, wy1 = window.bounds
        hits = [
            it
            for it in items
            if it.bounds[0] < wx1 and it.bounds[2] > wx0 and it.bounds[1] < wy1 and it.bounds[3] > wy0
        ]
        if not hits:
            ub = tuple(f(it.bounds[k] for it in items) for k, f in enumerate((min, min, max, max)))
            raise ProviderError(
                f"local provider: the ROI window {_fmt(window.bounds)} (EPSG:3857, lon/lat "
                f"{_fmt(window.lonlat_bounds(), 5)}) lies outside the data bounds {_fmt(ub)} "
                f"(EPSG:3857) of {len(items)} raster frame(s)."
            )
        if dates is not None:
            inside = [it for it in hits if it.date is None or dates[0] <= it.date < dates[1]]
            if not inside:
                avail = sorted({it.date.isoformat() for it in hits if it.date is not None})
                raise ProviderError(
                    f"local provider: no raster under the ROI window {_fmt(window.bounds)} is dated "
                    f"within [{dates[0]}, {dates[1]}); dates there: {avail}."
                )
            hits = inside
        bands = tuple(sensor.bands)
        layout = self._per_band(hits, bands)
        if layout is None:  # multi-band files (or cubes): every frame holds every band
            out, days = self._composite(hits, bands, window, sensor.composite)
        else:  # one file per band: composite each band over its own files
            parts = [self._composite(layout[b], (b,), window, sensor.composite) for b in bands]
            out = np.concatenate([p[0] for p in parts])
            days = list(dict.fromkeys(d for p in parts for d in p[1]))
        out = np.where(np.isnan(out), np.float32(sensor.fill_value), out).astype(np.float32)
        meta = {
            "composite": sensor.composite,
            "resampling": self.resampling,
            "date_window": [dates[0].isoformat(), dates[1].isoformat()] if dates else None,
            "local_files": sorted({it.path for it in hits}),
            "local_dates": [d.isoformat() if d else None for d in days],
            "local_layout": "multi-band" if layout is None else "per-band",
        }
        return out, meta
