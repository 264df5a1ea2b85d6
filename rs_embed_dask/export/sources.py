"""ROIs from tabular and vector sources: GeoDataFrames, CSV, GeoJSON and GeoParquet.

Points become :class:`~rs_embed_dask.core.specs.PointBuffer` (with a ``buffer_m``
column or argument), any other geometry the :class:`~rs_embed_dask.core.specs.BBox`
of its bounds; coordinates are converted to EPSG:4326.  Files are read in
blocks (GeoParquet one row group batch at a time, CSV a few thousand rows at
a time), so a file of millions of ROIs streams into
:func:`rs_embed_dask.export_batch` without being held in memory.  Every error
names the file (or frame), the row and the field.
"""

from __future__ import annotations

import csv
import functools
import importlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import BBox, PointBuffer, SpatialSpec

__all__ = ["read_spatials", "spatials_from_geodataframe", "to_lonlat_geometry"]

_WGS84_NAMES = {
    "EPSG:4326",
    "WGS84",
    "OGC:CRS84",
    "URN:OGC:DEF:CRS:OGC:1.3:CRS84",
    "URN:OGC:DEF:CRS:EPSG::4326",
}
_BLOCK = 4096
# CSV / plain-table column names (lower case): point coordinates, box bounds
_POINT_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("lng", "lat"), ("x", "y"))
_BOX_COLUMNS = (("minlon", "minlat", "maxlon", "maxlat"), ("minx", "miny", "maxx", "maxy"))
_LONLAT_ONLY = {"lon", "lat", "longitude", "latitude", "lng", "minlon", "minlat", "maxlon", "maxlat"}


def _is_wgs84(crs: Any) -> bool:
    if crs is None:
        return True
    if isinstance(crs, str):
        return crs.strip().upper() in _WGS84_NAMES
    try:
        return bool(crs.to_epsg() == 4326) or crs.to_string().upper() in _WGS84_NAMES
    except Exception:
        return False


@functools.lru_cache(maxsize=32)
def _transformer(crs: Any) -> Any:
    from pyproj import CRS, Transformer

    return Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)


def _get_transformer(crs: Any, where: str) -> Any:
    from pyproj.exceptions import CRSError

    key = crs if isinstance(crs, str) else crs.to_wkt() if hasattr(crs, "to_wkt") else json.dumps(crs)
    try:
        return _transformer(key)
    except (CRSError, TypeError, ValueError) as exc:
        raise SpecError(
            f"{where}: crs {crs!r} is not a coordinate reference system that pyproj knows; "
            "use 'EPSG:4326' or another 'EPSG:<code>' / WKT / PROJ string."
        ) from exc


def to_lonlat_geometry(geom: Any, crs: Any, *, where: str = "geometry") -> Any:
    """A shapely geometry (or array of them) in ``crs`` converted to EPSG:4326 lon/lat."""
    if _is_wgs84(crs):
        return geom
    import shapely

    tr = _get_transformer(crs, where)

    def convert(xy: np.ndarray) -> np.ndarray:
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geom, convert)


def _check_buffer(value: Any, where: str) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise SpecError(f"{where}: buffer_m must be a positive number of metres; got {value!r}.")
    return float(value)


def _validated(spec: SpatialSpec, where: str) -> SpatialSpec:
    try:
        spec.validate()
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    # rs-embed leaves point ranges unchecked; a file with lat=95 is a mistake worth naming
    if isinstance(spec, PointBuffer) and not (-180 <= spec.lon <= 180 and -90 <= spec.lat <= 90):
        raise SpecError(
            f"{where}: point ({spec.lon}, {spec.lat}) is outside lon [-180, 180] / lat [-90, 90]; "
            "are the columns swapped or is the CRS wrong?"
        )
    return spec


def _specs_from_geometries(
    geoms: np.ndarray,
    buffers: np.ndarray | None,
    default_buffer: float | None,
    where: str,
    first_row: int,
    row_label: str = "row",
) -> list[SpatialSpec]:
    """ROIs of an array of lon/lat shapely geometries (vectorised; errors name the row)."""
    import shapely

    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise SpecError(
            f"{where}, {row_label} {first_row + i}, field 'geometry': the geometry is missing or empty."
        )
    is_point = shapely.get_type_id(geoms) == 0
    pts = geoms.copy()
    pts[~is_point] = None
    xs, ys = shapely.get_x(pts), shapely.get_y(pts)
    bounds = shapely.bounds(geoms)
    out: list[SpatialSpec] = []
    for i in range(len(geoms)):
        row = f"{where}, {row_label} {first_row + i}"
        if not np.isfinite(bounds[i]).all():
            raise SpecError(
                f"{row}, field 'geometry': coordinates are not finite after conversion to EPSG:4326."
            )
        spec: SpatialSpec
        if is_point[i]:
            b = float(buffers[i]) if buffers is not None and np.isfinite(buffers[i]) else default_buffer
            if b is None:
                raise SpecError(
                    f"{row}, field 'buffer_m': point geometries need buffer_m= or a 'buffer_m' column."
                )
            spec = PointBuffer(float(xs[i]), float(ys[i]), _check_buffer(b, row) or 0.0)
        else:
            x0, y0, x1, y1 = (float(v) for v in bounds[i])
            spec = BBox(x0, y0, x1, y1)
        out.append(_validated(spec, row))
    return out


def _buffer_column(values: Any, where: str, first_row: int, row_label: str = "row") -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    out = np.full(len(arr), np.nan)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError) as exc:
            raise SpecError(
                f"{where}, {row_label} {first_row + i}, field 'buffer_m': {v!r} is not a number."
            ) from exc
        if not math.isnan(out[i]):
            _check_buffer(out[i], f"{where}, {row_label} {first_row + i}")
    return out


def spatials_from_geodataframe(gdf: Any, *, buffer_m: float | None = None) -> list[Any]:
    """One ROI per row of a GeoDataFrame.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        Rows with a geometry and a CRS; an optional ``buffer_m`` column gives
        the half side of point ROIs (its empty values fall back to ``buffer_m``).
    buffer_m : float, optional
        Half side in metres of point ROIs without a ``buffer_m`` value.

    Returns
    -------
    list of PointBuffer or BBox
        In EPSG:4326: points as ``PointBuffer``, other geometries as the
        ``BBox`` of their bounds.
    """
    if gdf.crs is None:
        raise SpecError("The GeoDataFrame has no CRS; set one with gdf.set_crs(...).")
    default = _check_buffer(buffer_m, "spatials_from_geodataframe")
    where = "GeoDataFrame"
    out: list[Any] = []
    for start in range(0, len(gdf), _BLOCK):
        block = gdf.iloc[start : start + _BLOCK]
        geoms = to_lonlat_geometry(np.asarray(block.geometry.values, dtype=object), gdf.crs, where=where)
        buffers = _buffer_column(block["buffer_m"], where, start) if "buffer_m" in block.columns else None
        out.extend(_specs_from_geometries(np.asarray(geoms, dtype=object), buffers, default, where, start))
    return out


# -- files -------------------------------------------------------------------------------------
def read_spatials(
    path: str | os.PathLike[str], *, buffer_m: float | None = None, layer: str | None = None
) -> Iterator[SpatialSpec]:
    """Stream ROIs from a CSV, GeoJSON, GeoParquet or other vector file.

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv`` with ``lon``/``lat`` (or ``longitude``/``latitude``) columns,
        or ``x``/``y`` plus a ``crs`` column, or box columns
        ``minlon, minlat, maxlon, maxlat`` (``minx, miny, maxx, maxy`` with a
        ``crs`` column); an optional ``buffer_m`` column.
        ``.geojson``/``.json``: a FeatureCollection (``buffer_m`` in the
        features' properties).  ``.parquet``: GeoParquet (WKB geometry, CRS
        from its ``geo`` metadata), read one row-group batch at a time, or a
        plain Parquet table with the CSV columns.  Anything else is read with
        ``geopandas.read_file`` (GeoPackage, Shapefile, FlatGeobuf, ...).
    buffer_m : float, optional
        Half side in metres of point ROIs whose row has no ``buffer_m`` value.
    layer : str, optional
        Layer of a multi-layer file (GeoPackage); not used by CSV, GeoJSON
        and GeoParquet.

    Returns
    -------
    Iterator of PointBuffer or BBox
        One ROI per row or feature, in file order, in EPSG:4326.

    Raises
    ------
    SpecError
        A missing file or column, an unknown CRS, or a bad row: the message
        names the file, the row (1-based data row) and the field.  Problems
        with the file as a whole are raised by this call; problems with a row
        when the iterator reaches it.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise SpecError(f"spatials file {p!r} does not exist.")
    default = _check_buffer(buffer_m, f"read_spatials({p!r})")
    ext = os.path.splitext(p)[1].lower()
    if layer is not None and ext in (".csv", ".geojson", ".json", ".parquet", ".geoparquet"):
        raise SpecError(
            f"{p}: layer={layer!r} applies to multi-layer formats (GeoPackage, ...), not {ext} files."
        )
    if ext == ".csv":
        return _read_csv(p, default)
    if ext in (".geojson", ".json"):
        return _read_geojson(p, default)
    if ext in (".parquet", ".geoparquet"):
        return _read_parquet(p, default)
    return _read_vector(p, default, layer)


def _pick_columns(names: Sequence[str], where: str) -> tuple[str, tuple[str, ...], str | None, str | None]:
    """``(kind, coordinate columns, crs column, buffer column)`` from a table's column names."""
    lower = {n.strip().lower(): n for n in names}
    crs_col = lower.get("crs")
    buf_col = lower.get("buffer_m")
    for kind, options in (("box", _BOX_COLUMNS), ("point", _POINT_COLUMNS)):
        for cols in options:
            if all(c in lower for c in cols):
                if crs_col is None and not set(cols) <= _LONLAT_ONLY:
                    raise SpecError(
                        f"{where}: columns {', '.join(cols)} need a 'crs' column (e.g. 'EPSG:32633'); "
                        "or name lon/lat columns 'lon', 'lat' (EPSG:4326)."
                    )
                return kind, tuple(lower[c] for c in cols), crs_col, buf_col
    raise SpecError(
        f"{where}: no coordinate columns; need 'lon' and 'lat' (or 'longitude'/'latitude', or 'x'/'y' with "
        "'crs'), or box columns 'minlon', 'minlat', 'maxlon', 'maxlat'; "
        f"found {list(names)}."
    )


def _number(v: Any, where: str, field: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x):
        raise SpecError(f"{where}, field {field!r}: {v!r} is not a finite number.")
    return x


def _table_specs(
    rows: list[tuple[int, list[Any], Any, Any]],
    kind: str,
    cols: tuple[str, ...],
    default: float | None,
    where: str,
) -> list[SpatialSpec]:
    """ROIs of a block of ``(row number, coordinates, crs, buffer)`` rows, CRS converted in groups."""
    coords = np.array(
        [
            [_number(v, f"{where}, row {n}", c) for v, c in zip(vals, cols, strict=True)]
            for n, vals, _, _ in rows
        ],
        dtype=np.float64,
    ).reshape(len(rows), len(cols))
    crss = [
        str(crs).strip() if crs is not None and str(crs).strip() else "EPSG:4326" for _, _, crs, _ in rows
    ]
    for crs in set(crss):
        if _is_wgs84(crs):
            continue
        idx = np.array([i for i, c in enumerate(crss) if c == crs])
        tr = _get_transformer(crs, f"{where}, row {rows[int(idx[0])][0]}, field 'crs'")
        if kind == "point":
            coords[idx, 0], coords[idx, 1] = tr.transform(coords[idx, 0], coords[idx, 1])
        else:
            for i in idx:
                coords[i] = tr.transform_bounds(*coords[i], densify_pts=21)
    out: list[SpatialSpec] = []
    for (n, _, _, buf), xy in zip(rows, coords, strict=True):
        row = f"{where}, row {n}"
        if not np.isfinite(xy).all():
            raise SpecError(f"{row}, field 'crs': the coordinates have no EPSG:4326 equivalent.")
        spec: SpatialSpec
        if kind == "point":
            b: Any = default
            if buf is not None and not (isinstance(buf, str) and not buf.strip()):
                b = _number(buf, row, "buffer_m")
            if b is None:
                raise SpecError(f"{row}, field 'buffer_m': point rows need buffer_m= or a 'buffer_m' value.")
            spec = PointBuffer(float(xy[0]), float(xy[1]), _check_buffer(b, row) or 0.0)
        else:
            x0, y0, x1, y1 = (float(v) for v in xy)
            spec = BBox(x0, y0, x1, y1)
        out.append(_validated(spec, row))
    return out


def _read_csv(path: str, default: float | None) -> Iterator[SpatialSpec]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise SpecError(f"{path}: the CSV file is empty (it needs a header row).")
    kind, cols, crs_col, buf_col = _pick_columns(header, path)

    def rows() -> Iterator[SpatialSpec]:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            block: list[tuple[int, list[Any], Any, Any]] = []
            for n, rec in enumerate(reader, start=1):
                vals = [rec.get(c) for c in cols]
                block.append(
                    (n, vals, rec.get(crs_col) if crs_col else None, rec.get(buf_col) if buf_col else None)
                )
                if len(block) == _BLOCK:
                    yield from _table_specs(block, kind, cols, default, path)
                    block = []
            if block:
                yield from _table_specs(block, kind, cols, default, path)

    return rows()


def _read_geojson(path: str, default: float | None) -> Iterator[SpatialSpec]:
    import shapely.geometry

    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except ValueError as exc:
            raise SpecError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(obj, dict) or "type" not in obj:
        raise SpecError(f"{path}: not GeoJSON (no 'type' member).")
    crs: Any = "EPSG:4326"
    legacy = obj.get("crs")
    if isinstance(legacy, dict) and isinstance((legacy.get("properties") or {}).get("name"), str):
        crs = legacy["properties"]["name"]  # pre-RFC 7946 files may name their CRS
    if obj["type"] == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise SpecError(f"{path}: a FeatureCollection needs a 'features' list.")
    elif obj["type"] == "Feature":
        features = [obj]
    else:
        features = [{"type": "Feature", "geometry": obj, "properties": {}}]
    if crs != "EPSG:4326":
        _get_transformer(crs, f"{path}, member 'crs'")

    def rows() -> Iterator[SpatialSpec]:
        for start in range(0, len(features), _BLOCK):
            block = features[start : start + _BLOCK]
            geoms = np.empty(len(block), dtype=object)
            buffers = np.full(len(block), np.nan)
            for i, feat in enumerate(block):
                n = start + i + 1
                g = feat.get("geometry") if isinstance(feat, dict) else None
                if not g:
                    raise SpecError(f"{path}, feature {n}, field 'geometry': the geometry is missing.")
                try:
                    geoms[i] = shapely.geometry.shape(g)
                except Exception as exc:
                    raise SpecError(
                        f"{path}, feature {n}, field 'geometry': not a valid GeoJSON geometry ({exc})."
                    ) from exc
                b = (feat.get("properties") or {}).get("buffer_m")
                if b is not None:
                    buffers[i] = _number(b, f"{path}, feature {n}", "buffer_m")
            lonlat = to_lonlat_geometry(geoms, crs, where=path)
            yield from _specs_from_geometries(
                np.asarray(lonlat, dtype=object), buffers, default, path, start + 1, "feature"
            )

    return rows()


def _geo_metadata(schema: Any, path: str) -> dict[str, Any] | None:
    meta = schema.metadata or {}
    raw = meta.get(b"geo")
    if raw is None:
        return None
    try:
        geo = json.loads(raw)
        col = geo["primary_column"]
        info = geo["columns"][col]
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{path}: the GeoParquet 'geo' metadata is malformed ({exc}).") from exc
    encoding = str(info.get("encoding", "WKB")).upper()
    if encoding != "WKB":
        raise SpecError(
            f"{path}: GeoParquet geometry encoding {encoding!r} is not supported; write it as 'WKB'."
        )
    crs = info.get("crs", "OGC:CRS84")
    return {"column": col, "crs": "OGC:CRS84" if crs is None else crs}


def _read_parquet(path: str, default: float | None) -> Iterator[SpatialSpec]:
    pq = importlib.import_module("pyarrow.parquet")  # untyped; imported on first use
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise SpecError(f"{path}: not a readable Parquet file ({exc}).") from exc
    schema = pf.schema_arrow
    geo = _geo_metadata(schema, path)
    buf_col = next((n for n in schema.names if n.strip().lower() == "buffer_m"), None)
    if geo is None:
        kind, cols, crs_col, buf_col = _pick_columns(schema.names, path)
        wanted = [*cols, *(c for c in (crs_col, buf_col) if c)]
    else:
        if geo["column"] not in schema.names:
            raise SpecError(f"{path}: the GeoParquet primary column {geo['column']!r} is not in the file.")
        wanted = [geo["column"], *([buf_col] if buf_col else [])]
        crs: Any = geo["crs"]
        if not _is_wgs84(crs):
            from pyproj import CRS

            try:
                crs = CRS.from_json_dict(crs) if isinstance(crs, dict) else CRS.from_user_input(crs)
            except Exception as exc:
                raise SpecError(f"{path}: the GeoParquet CRS is not one pyproj knows ({exc}).") from exc
            crs = "EPSG:4326" if _is_wgs84(crs) else crs
            _get_transformer(crs, path)

    def rows() -> Iterator[SpatialSpec]:
        import shapely

        start = 1
        for batch in pf.iter_batches(batch_size=_BLOCK, columns=wanted):
            if geo is None:
                table = {c: batch.column(c).to_pylist() for c in wanted}
                block = [
                    (start + i, [table[c][i] for c in cols], table[crs_col][i] if crs_col else None,
                     table[buf_col][i] if buf_col else None)
                    for i in range(batch.num_rows)
                ]  # fmt: skip
                yield from _table_specs(block, kind, cols, default, path)
            else:
                wkb = np.asarray(batch.column(geo["column"]).to_pylist(), dtype=object)
                try:
                    geoms = shapely.from_wkb(wkb)
                except Exception as exc:
                    raise SpecError(
                        f"{path}, rows {start}..{start + batch.num_rows - 1}, field {geo['column']!r}: bad WKB ({exc})."
                    ) from exc
                buffers = _buffer_column(batch.column(buf_col).to_pylist(), path, start) if buf_col else None
                lonlat = to_lonlat_geometry(geoms, crs, where=path)
                yield from _specs_from_geometries(
                    np.asarray(lonlat, dtype=object), buffers, default, path, start
                )
            start += batch.num_rows

    return rows()


def _read_vector(path: str, default: float | None, layer: str | None) -> Iterator[SpatialSpec]:
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path, layer=layer)
    except Exception as exc:
        raise SpecError(f"{path}: not a vector file geopandas can read ({exc}).") from exc
    if gdf.crs is None:
        raise SpecError(f"{path}: the file has no CRS.")

    def rows() -> Iterator[SpatialSpec]:
        for start in range(0, len(gdf), _BLOCK):
            block = gdf.iloc[start : start + _BLOCK]
            geoms = to_lonlat_geometry(np.asarray(block.geometry.values, dtype=object), gdf.crs, where=path)
            buffers = (
                _buffer_column(block["buffer_m"], path, start + 1) if "buffer_m" in block.columns else None
            )
            yield from _specs_from_geometries(
                np.asarray(geoms, dtype=object), buffers, default, path, start + 1
            )

    return rows()
