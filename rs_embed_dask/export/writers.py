"""Low-level export writers in rs-embed's exact file formats.

Every writer is atomic: it writes ``<path>.tmp-<pid>-<random>`` in the target
folder and moves it into place with :func:`os.replace`, so a reader never
sees a half-written file and a writer that fails (or is killed) leaves no
partial file under the final name.  Parent folders are created.

* :func:`write_json` -- UTF-8, ``ensure_ascii=False``, ``indent=2`` (no
  trailing newline), as rs-embed writes its sidecar manifests.
* :func:`write_npz` -- an ``np.savez_compressed``-compatible archive that is
  streamed one array at a time and chunk by chunk along axis 0, so numpy,
  dask and zarr arrays far larger than memory can be written.
* :func:`netcdf_dims` / :func:`write_netcdf` -- rs-embed's NetCDF layout
  (one float32 variable per key, no coordinates, dimension names from the key
  and rank, ``<dim>__<key>`` renaming on size conflicts, CF global attributes).
* :func:`check_item_name` -- refuses per-item file names that would escape
  the output folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "NETCDF_HISTORY",
    "atomic_path",
    "c_order_bytes",
    "check_item_name",
    "netcdf_dims",
    "npy_header",
    "npy_member",
    "tmp_path_for",
    "write_json",
    "write_netcdf",
    "write_npz",
]

#: ``history`` global attribute of rs-embed's NetCDF files (kept so the files match).
NETCDF_HISTORY = "Created by rs-embed export_batch (format=netcdf)"

#: Upper bound on the bytes one streamed block of rows holds in memory.
_BLOCK_BYTES = 4 * 1024**2

_NC_SAFE_RE = re.compile(r"[^0-9A-Za-z_]")


# ---------------------------------------------------------------------------
# atomic files
# ---------------------------------------------------------------------------


def tmp_path_for(path: str | os.PathLike[str]) -> Path:
    """Return a unique temporary name next to ``path``.

    Parameters
    ----------
    path : str or path-like
        The final file name.

    Returns
    -------
    pathlib.Path
        ``<path>.tmp-<pid>-<8 random hex digits>`` in the same folder.
    """
    return Path(f"{os.fspath(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write to a temporary file and move it onto ``path`` on success.

    Parameters
    ----------
    path : str or path-like
        The final file name.  Its parent folders are created.

    Yields
    ------
    pathlib.Path
        The temporary file to write.  When the ``with`` block raises, the
        temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON the way rs-embed writes manifests, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    obj : Any
        A JSON-serialisable object (pass it through
        :func:`rs_embed_dask.serialization.jsonable` first).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# ---------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------


def _is_dask(value: Any) -> bool:
    return type(value).__module__.startswith("dask.") and hasattr(value, "dask")


def _is_zarr(value: Any) -> bool:
    return type(value).__module__.startswith("zarr") and hasattr(value, "chunks")


def _row_bounds(chunk_rows: tuple[int, ...], row_bytes: int) -> Iterator[tuple[int, int]]:
    """Group consecutive chunks along axis 0 into blocks of at most ``_BLOCK_BYTES``."""
    start = stop = 0
    for n in chunk_rows:
        if stop > start and (stop - start + n) * row_bytes > _BLOCK_BYTES:
            yield start, stop
            start = stop
        stop += n
    if stop > start:
        yield start, stop


def _row_blocks(value: Any) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """Shape, dtype and an iterator of row blocks (C order) of an array-like."""
    if hasattr(value, "dims") and hasattr(value, "data") and not isinstance(value, np.ndarray):
        value = value.data  # xarray.DataArray -> numpy / dask
    if not (_is_dask(value) or _is_zarr(value)):
        value = np.asarray(value)
    if any(np.isnan(s) for s in value.shape):
        raise ValueError("write_npz needs arrays of known shape (dask chunk sizes are unknown)")
    shape = tuple(int(s) for s in value.shape)
    dtype = np.dtype(value.dtype)
    if not shape:
        return shape, dtype, iter([np.asarray(value[()] if _is_zarr(value) else value)])
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if _is_dask(value):
        chunk_rows = tuple(int(c) for c in value.chunks[0])
    elif _is_zarr(value):
        step = max(1, int(value.chunks[0]))
        chunk_rows = tuple(min(step, shape[0] - s) for s in range(0, shape[0], step))
    else:
        step = max(1, _BLOCK_BYTES // max(1, row_bytes))
        chunk_rows = tuple(min(step, shape[0] - s) for s in range(0, shape[0], step))

    def blocks() -> Iterator[np.ndarray]:
        for a, b in _row_bounds(chunk_rows, row_bytes):
            block = value[a:b]
            if _is_dask(block):
                block = block.compute()
            yield np.asarray(block)

    return shape, dtype, blocks()


def c_order_bytes(block: np.ndarray) -> memoryview:
    """The C-order bytes of ``block``, without a copy when it is contiguous."""
    return memoryview(np.ascontiguousarray(block).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _checked_blocks(key: str, shape: tuple[int, ...], dtype: np.dtype, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    rows = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.shape[1:] != shape[1:] or (shape and rows + block.shape[0] > shape[0]):
            raise ValueError(f"array {key!r}: a block of shape {block.shape} does not fit {shape}")
        rows += block.shape[0] if shape else 1
        if block.size:
            yield block
    if rows != (shape[0] if shape else 1):
        raise ValueError(f"array {key!r}: wrote {rows} rows, expected {shape[0]}")


def npy_header(shape: tuple[int, ...], dtype: Any) -> bytes:
    """The version 1.0 (2.0 when longer than 64 KiB) ``.npy`` header of a C-order array."""
    return _npy_header(tuple(int(d) for d in shape), np.dtype(dtype))


def npy_member(key: str, value: Any) -> tuple[bytes, tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """The ``.npy`` header, shape, dtype and checked C-order row blocks of one NPZ member.

    Blocks are read lazily (whole chunks along axis 0, about 4 MiB); the
    iterator raises ``ValueError`` when they do not add up to ``shape``.
    Object arrays (they would need pickle) raise ``ValueError`` at once.
    """
    shape, dtype, blocks = _row_blocks(value)
    if dtype.hasobject:
        raise ValueError(f"array {key!r}: object arrays cannot be saved when allow_pickle=False")
    return _npy_header(shape, dtype), shape, dtype, _checked_blocks(key, shape, dtype, blocks)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any], *, compresslevel: int = 1) -> Path:
    """Write a compressed ``.npz`` archive, streaming each array, atomically.

    The result is read by ``np.load(path, allow_pickle=False)`` exactly like
    ``np.savez_compressed(path, **arrays)``: one deflated ``<key>.npy``
    member per key (zip64, in the given order) holding a version 1.0 ``.npy``
    header and the C-order bytes.  Arrays are written one at a time and in
    blocks of whole chunks along axis 0 (about 4 MiB, or one chunk when a
    chunk is bigger), so peak memory is about one chunk, never a whole array.

    Parameters
    ----------
    path : str or path-like
        Destination file, used as given (no ``.npz`` is appended).
    arrays : Mapping[str, array-like]
        Key -> numpy array, dask array, zarr array, xarray.DataArray or
        anything :func:`numpy.asarray` accepts.  Dtypes are kept.
    compresslevel : int, default 1
        Deflate level as zlib counts it.  Level 1 compresses float32 imagery
        and embeddings about as well as ``np.savez_compressed``'s 6 (within a
        few percent) in a fraction of the time, and the export's writers are
        on the critical path; levels 1 to 3 use ISA-L
        (:mod:`rs_embed_dask.export.deflate`).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Object arrays (they would need pickle), arrays of unknown shape, or a
        chunk that does not match the declared shape.  No file is left behind.
    """
    from rs_embed_dask.export.npz_parts import write_npz_from_parts  # it builds on this module

    return write_npz_from_parts(path, arrays, {}, compresslevel=compresslevel)


# ---------------------------------------------------------------------------
# NetCDF
# ---------------------------------------------------------------------------


def _base_dims(key: str, ndim: int) -> tuple[str, ...]:
    """rs-embed's dimension names for an array key of rank ``ndim`` (first match wins)."""
    if "bchw" in key and ndim == 4:
        return ("point", "band", "y", "x")
    if "chw" in key and ndim == 3:
        return ("band", "y", "x")
    if "embeddings" in key and ndim == 2:
        return ("point", "dim")
    if "embeddings" in key and ndim == 4:
        return ("point", "band", "y", "x")
    if "embedding" in key and ndim == 1:
        return ("dim",)
    if "embedding" in key and ndim == 3:
        return ("band", "y", "x")
    return tuple(f"d{i}" for i in range(ndim))


def netcdf_dims(arrays: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Dimension names rs-embed gives each array in its NetCDF files.

    Names come from the key and rank (``inputs_bchw`` 4-D ->
    ``(point, band, y, x)``, ``input_chw`` 3-D -> ``(band, y, x)``,
    ``embeddings`` 2-D -> ``(point, dim)`` / 4-D -> ``(point, band, y, x)``,
    ``embedding`` 1-D -> ``(dim,)`` / 3-D -> ``(band, y, x)``, else
    ``d0, d1, ...``).  Keys are processed in order; a name already used with a
    different size becomes ``<dim>__<key>`` (characters outside
    ``[0-9A-Za-z_]`` replaced by ``_``), then ``<dim>__<key>_2``, ``_3`` ...

    Parameters
    ----------
    arrays : Mapping[str, array-like]
        Key -> anything with a ``shape``.

    Returns
    -------
    dict[str, tuple[str, ...]]
        Key -> dimension names.
    """
    sizes: dict[str, int] = {}
    out: dict[str, tuple[str, ...]] = {}
    for key, arr in arrays.items():
        shape = tuple(int(s) for s in (arr.shape if hasattr(arr, "shape") else np.shape(arr)))
        safe = _NC_SAFE_RE.sub("_", str(key))
        dims: list[str] = []
        for base, n in zip(_base_dims(str(key), len(shape)), shape, strict=True):
            name, k = base, 1
            while (name in sizes and sizes[name] != n) or name in dims:
                k += 1
                name = f"{base}__{safe}" if k == 2 else f"{base}__{safe}_{k - 1}"
            sizes[name] = n
            dims.append(name)
        out[str(key)] = tuple(dims)
    return out


def _netcdf_engine(engine: str | None) -> str:
    if engine is not None:
        return engine
    for name, modules in (("netcdf4", ("netCDF4",)), ("h5netcdf", ("h5netcdf", "h5py"))):
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            continue
        return name
    raise ImportError("Writing NetCDF exports needs netCDF4 or h5netcdf: pip install netCDF4")


def _as_float32(value: Any) -> Any:
    if hasattr(value, "dims") and hasattr(value, "data") and not isinstance(value, np.ndarray):
        value = value.data
    if _is_zarr(value):
        import dask.array as da

        value = da.from_zarr(value)
    if _is_dask(value):
        return value.astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _global_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"Conventions": "CF-1.8", "history": NETCDF_HISTORY}
    for key, value in (attrs or {}).items():
        if value is None:
            continue
        if key == "n_items" or isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            out[key] = value
        else:
            out[key] = json.dumps(value, ensure_ascii=False)
    return out


def write_netcdf(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    *,
    engine: str | None = None,
    scheduler: str | None = "synchronous",
) -> Path:
    """Write arrays in rs-embed's NetCDF layout, atomically.

    One float32 data variable per key (insertion order), dimensions from
    :func:`netcdf_dims`, no coordinates.  Global attributes are
    ``Conventions="CF-1.8"``, ``history`` (:data:`NETCDF_HISTORY`), then
    ``attrs`` in order (``created_at``, ``backend``, ``device`` as strings and
    ``n_items`` as an integer for combined files; ``None`` values are
    skipped, other non-scalar values are stored as JSON text).  Dask- and
    zarr-backed values are written chunk by chunk by xarray, never loaded
    whole.

    Parameters
    ----------
    path : str or path-like
        Destination ``.nc`` file.
    arrays : Mapping[str, array-like]
        Key -> numpy, dask or zarr array or xarray.DataArray.
    attrs : Mapping[str, Any], optional
        Extra global attributes; may override ``history``.
    engine : {"netcdf4", "h5netcdf"}, optional
        Default: ``netcdf4`` (NETCDF4/HDF5, as rs-embed) when importable,
        else ``h5netcdf``.
    scheduler : str or None, default "synchronous"
        Dask scheduler used to compute dask-backed values (one chunk at a
        time); ``None`` uses the ambient one.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ImportError
        Neither netCDF4 nor h5netcdf is installed.
    """
    import xarray as xr

    eng = _netcdf_engine(engine)
    dims = netcdf_dims(arrays)
    ds = xr.Dataset(
        {str(k): (dims[str(k)], _as_float32(v)) for k, v in arrays.items()},
        attrs=_global_attrs(attrs),
    )
    cfg: Any = contextlib.nullcontext()
    if scheduler is not None:
        import dask

        cfg = dask.config.set(scheduler=scheduler)
    with atomic_path(path) as tmp, cfg:
        ds.to_netcdf(tmp, engine=eng, format="NETCDF4")  # type: ignore[call-overload]
    return Path(path)


# ---------------------------------------------------------------------------
# per-item names
# ---------------------------------------------------------------------------


def check_item_name(out_dir: str | os.PathLike[str], name: Any) -> str:
    """Refuse a per-item file name that would escape ``out_dir``.

    Parameters
    ----------
    out_dir : str or path-like
        The per-item output folder.
    name : str
        The file name without extension (``p00000`` or a user name).

    Returns
    -------
    str
        ``name`` unchanged when it is safe.

    Raises
    ------
    ModelError
        ``name`` is not a string, is empty, contains NUL, a path separator or
        a drive, is absolute, is ``.`` or ``..``, or resolves outside
        ``out_dir``.
    """
    if not isinstance(name, str):
        raise ModelError(f"Per-item name {name!r} must be a string.")
    why = None
    if not name.strip():
        why = "is empty"
    elif "\x00" in name:
        why = "contains a NUL character"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name) or os.sep in name:
        why = "contains a path separator"
    elif os.path.isabs(name) or PureWindowsPath(name).drive:
        why = "is an absolute path"
    elif name in (".", ".."):
        why = "is a relative folder reference"
    else:
        root = Path(out_dir).resolve()
        target = (root / name).resolve()
        if target.parent != root:
            why = "would be written outside the output folder"
    if why is not None:
        raise ModelError(
            f"Per-item name {name!r} {why}; names must be plain file names inside {os.fspath(out_dir)!r}."
        )
    return name
