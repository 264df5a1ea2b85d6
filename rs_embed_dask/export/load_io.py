"""File access and lazy stacking shared by the export loaders (internal)."""

from __future__ import annotations

import functools
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import RSEmbedWarning

__all__ = [
    "F32",
    "clean_temporal",
    "digits_index",
    "lazy_array",
    "npz_headers",
    "open_nc",
    "read_array",
    "read_npz_rows",
    "read_rows",
    "realign_rows",
    "stack_rows",
    "summarize_statuses",
    "warn_load",
    "warn_ragged",
]

#: dtype of every loaded embedding and input (as rs-embed's loader).
F32 = np.dtype(np.float32)
#: Per-item files read by one dask task.
GROUP = 64


def warn_load(msg: str) -> None:
    """Warn at the caller of :func:`load_export` (the first frame outside this package)."""
    level = 1
    frame: FrameType | None = sys._getframe(1)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        level, frame = level + 1, frame.f_back
    warnings.warn(msg, RSEmbedWarning, stacklevel=level)


def clean_temporal(t: Any) -> dict[str, Any] | None:
    """A manifest's temporal dict, ``year`` set to ``None`` when rs-embed stored a function repr there."""
    if not t or not isinstance(t, dict):
        return None
    t = dict(t)
    if "year" in t and not (t["year"] is None or isinstance(t["year"], int)):
        t["year"] = None  # rs-embed range specs store "<function TemporalSpec.year at 0x...>"
    return t


def summarize_statuses(statuses: Sequence[str]) -> str:
    """``ok`` if every status is ok, ``failed`` if every one failed, else ``partial``."""
    if all(s == "ok" for s in statuses):
        return "ok"
    if all(s == "failed" for s in statuses):
        return "failed"
    return "partial"


def nc_engines() -> list[str | None]:
    """NetCDF engines to try, in rs-embed's order (``None``: xarray's choice)."""
    out: list[str | None] = []
    for eng, mods in (("netcdf4", ("netCDF4",)), ("h5netcdf", ("h5netcdf", "h5py"))):
        try:
            for mod in mods:
                __import__(mod)
            out.append(eng)
        except ImportError:
            pass
    return [*out, None]


def open_nc(path: str, **kw: Any) -> Any:
    """Open a NetCDF file with xarray, trying netCDF4, then h5netcdf, then xarray's default."""
    import xarray as xr

    from rs_embed_dask.core.errors import ExportIntegrityError

    err: Exception | None = None
    for eng in nc_engines():
        try:
            return xr.open_dataset(path, engine=eng, **kw)
        except Exception as exc:  # try the next engine
            err = exc
    if isinstance(err, FileNotFoundError):
        raise ExportIntegrityError(path, f"the NetCDF file is missing ({err})") from err
    raise ExportIntegrityError(path, f"cannot open the NetCDF file (truncated or damaged?): {err!r}") from err


def read_array(path: str, fmt: str, key: str) -> np.ndarray:
    """Read one array of an ``.npz`` / NetCDF file as float32 (:class:`ExportIntegrityError` when it cannot be)."""
    from rs_embed_dask.export.verify import reading

    with reading(path, f"member {key!r}"):
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                return np.asarray(z[key], dtype=F32)
        with open_nc(path) as ds:
            return np.asarray(ds[key].values, dtype=F32)


def npz_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every member of an ``.npz``, from the ``.npy`` headers only."""
    from rs_embed_dask.export.verify import reading

    with reading(path, "the NPZ archive"):
        return _npz_headers(path)


def _npz_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    fmt = np.lib.format
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            with zf.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:  # rare (3.0): read the array
                    f.close()
                    arr = read_array(path, "npz", key)
                    shape, dtype = arr.shape, arr.dtype
            out[key] = (tuple(shape), np.dtype(dtype))
    return out


def lazy_array(reader: Callable[[], np.ndarray], shape: tuple[int, ...], token: Any) -> Any:
    """A one-chunk float32 dask array whose value is ``reader()``, named from ``token``."""
    import dask
    import dask.array as da

    name = "rs-embed-load-" + dask.base.tokenize(token)
    return da.from_delayed(dask.delayed(reader, pure=True)(dask_key_name=name), shape=shape, dtype=F32)


def read_rows(readers: Sequence[Callable[[], np.ndarray] | None], shape: tuple[int, ...]) -> np.ndarray:
    """Call each reader (NaN row where ``None``) and check its shape."""
    from rs_embed_dask.core.errors import ExportIntegrityError

    out = np.full((len(readers), *shape), np.nan, dtype=F32)
    for i, r in enumerate(readers):
        if r is not None:
            a = r()
            if a.shape != shape:
                args: tuple[Any, ...] = tuple(getattr(r, "args", ()))
                where = str(args[0]) if args else "a per-item file"
                what = f"member {args[2]!r}" if len(args) > 2 else "an item array"
                raise ExportIntegrityError(where, f"{what} has shape {a.shape}, the manifest says {shape}")
            out[i] = a
    return out


def read_npz_rows(path: str, keys: Sequence[str | None], shape: tuple[int, ...]) -> np.ndarray:
    """Rows ``keys`` of one ``.npz`` (NaN where ``None``), opening the archive once."""
    from rs_embed_dask.core.errors import ExportIntegrityError
    from rs_embed_dask.export.verify import reading

    out = np.full((len(keys), *shape), np.nan, dtype=F32)
    with (
        reading(path, f"members {[k for k in keys if k is not None][:3]}..."),
        np.load(path, allow_pickle=False) as z,
    ):
        for i, k in enumerate(keys):
            if k is not None:
                a = np.asarray(z[k], dtype=F32)
                if a.shape != shape:
                    raise ExportIntegrityError(path, f"member {k!r} has shape {a.shape}, expected {shape}")
                out[i] = a
    return out


def stack_rows(
    items: Sequence[Any],
    shape: tuple[int, ...],
    token: Any,
    reader: Callable[[list[Any], tuple[int, ...]], np.ndarray] = read_rows,
) -> Any:
    """Lazily stack per-item arrays (NaN where ``None``), one dask task per group of items.

    ``reader(group, shape)`` reads a group: by default ``items`` are
    callables returning one array each (see :func:`read_rows`).
    """
    import dask.array as da

    parts = []
    for s in range(0, len(items), GROUP):
        group = list(items[s : s + GROUP])
        parts.append(
            lazy_array(functools.partial(reader, group, shape), (len(group), *shape), (token, s, shape))
        )
    return da.concatenate(parts) if parts else da.zeros((0, *shape), dtype=F32)


def warn_ragged(what: str, model: str, shapes: Any) -> None:
    """Warn that a model's per-item arrays cannot be stacked (fix (d) of load.py)."""
    warn_load(
        f"{what} of model {model!r} have different shapes per item ({sorted(set(shapes))}); "
        f"{what}=None, the per-item arrays are in ModelResult.{what}_ragged."
    )


def realign_rows(arr: Any, indices: Sequence[int], n: int) -> Any:
    """Rows of ``arr`` belong to items ``indices``; return ``(n, ...)`` with NaN rows elsewhere."""
    import dask.array as da

    src = np.full(n, len(indices), dtype=np.int64)
    src[np.asarray(indices, dtype=np.int64)] = np.arange(len(indices))
    pad = da.full((1, *arr.shape[1:]), np.nan, dtype=F32)
    return da.concatenate([arr.astype(F32), pad])[src]


def digits_index(key: str, j: int) -> int:
    """Item index from a key's trailing ``__<digits>``, else ``j``."""
    tail = key.rsplit("__", 1)[-1]
    return int(tail) if tail.isdigit() else j
