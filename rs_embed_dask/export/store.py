"""The zarr (v3) working store of a combined export.

Layout (root group; every per-item array is chunked along ``item`` exactly as
the engine's task chunks, so each write task owns whole chunks)::

    attrs["rs_embed_dask"]        request, models, inputs, fingerprint, manifest
    spatials (n,) str             JSON of each ROI
    lon, lat (n,) float64         ROI centres
    models/<key>/embeddings       (n, D) or (n, D, h, w) float32, NaN where not ok
    models/<key>/status           (n,) int8: 0 pending, 1 ok, 2 failed, 3 ok (ragged)
    models/<key>/error, meta      (n,) str
    models/<key>/ragged/<i>       items whose shape differs from the dense array
    inputs/<input_key>/...        the same for fetched inputs (n, [T,] C, H, W)

Every array carries zarr v3 ``dimension_names`` (``item`` first; ``<key>_dim``,
``<key>_y``/``<key>_x`` for embeddings; ``input__<key>_[time|band|y|x]`` for
inputs) and CF attributes (``lon``/``lat`` units and standard names, status
``flag_values``/``flag_meanings``), and the root holds an ``item`` index, so
``xarray.open_zarr(path)`` opens the ROI table (``item`` with ``lon``/``lat``
and ``spatials``) and ``xarray.open_zarr(path, group="models/<key>")`` a
model's ``embeddings``/``status``/``error``/``meta``, chunked along ``item``
by the export's ``chunk_size`` (one chunk per write task).  A finished zarr
export also has root-level views of the dense arrays under the names of
``to_xarray()`` (:mod:`rs_embed_dask.export.zarr_views`) and consolidated metadata.

Arrays are created by the first write task that has data for them, under a
cluster-wide lock; the status arrays are written last, so a chunk whose
statuses are all non-zero is complete.  Resume reads only the statuses.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "FAILED",
    "OK",
    "OK_RAGGED",
    "PENDING",
    "array_exists",
    "cf_attributes",
    "column",
    "creation_lock",
    "dimension_names",
    "drop_consolidated",
    "ensure_array",
    "open_root",
    "read_status",
    "resize_items",
    "rows_on_disk",
    "write_rows",
]

PENDING, OK, FAILED, OK_RAGGED = 0, 1, 2, 3
#: Item capacity of the arrays when the number of ROIs is not known up front.
UNBOUNDED = 10**12
_local_lock = threading.Lock()


def open_root(path: str, mode: str = "r") -> Any:
    """Open the store's root group."""
    import zarr

    return zarr.open_group(path, mode=mode, use_consolidated=False)  # type: ignore[arg-type]


@contextlib.contextmanager
def creation_lock(store_path: str) -> Iterator[None]:
    """Serialise array creation: a cluster-wide lock on a worker, a local one elsewhere."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        with _local_lock:
            yield
        return
    lock = Lock(f"rs-embed-dask-store-{os.path.abspath(store_path)}")
    with lock:
        yield


_FLAG_MEANINGS = "missing ok failed ok_ragged"
_CF: dict[str, dict[str, Any]] = {
    "lon": {"units": "degrees_east", "standard_name": "longitude", "long_name": "ROI centre longitude"},
    "lat": {"units": "degrees_north", "standard_name": "latitude", "long_name": "ROI centre latitude"},
    "item": {"long_name": "ROI index in request order"},
    "spatials": {"long_name": "ROI (JSON)", "coordinates": "lon lat"},
}


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """The zarr ``dimension_names`` of store array ``name``: ``item`` first, then per-array axes."""
    parts = name.split("/")
    if len(parts) < 3 or parts[-1] not in ("embeddings", "data"):
        return ("item", *(f"{parts[-1]}_d{j}" for j in range(1, ndim)))
    if parts[0] == "models":
        tail = {2: ("dim",), 4: ("dim", "y", "x")}.get(ndim, tuple(f"d{j}" for j in range(1, ndim)))
        prefix = parts[1]
    else:
        tail = {4: ("band", "y", "x"), 5: ("time", "band", "y", "x")}.get(ndim, tuple(f"d{j}" for j in range(1, ndim)))
        prefix = f"input__{parts[1]}"
    return ("item", *(f"{prefix}_{t}" for t in tail))


def cf_attributes(name: str) -> dict[str, Any]:
    """CF attributes of store array ``name`` (coordinates, status flags, data descriptions)."""
    leaf = name.split("/")[-1]
    if name in _CF:
        return dict(_CF[name])
    if leaf == "status":
        return {"flag_values": [0, 1, 2, 3], "flag_meanings": _FLAG_MEANINGS, "long_name": "item status"}
    if leaf == "embeddings":
        return {"long_name": "embedding", "coordinates": "lon lat"}
    if leaf == "data":
        return {"long_name": "model input", "coordinates": "lon lat"}
    return {}


def drop_consolidated(store_path: str) -> None:
    """Remove consolidated metadata (written when an export finishes) before the store changes again."""
    import json

    path = os.path.join(store_path, "zarr.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return
    if meta.get("consolidated_metadata") is None:
        return
    meta.pop("consolidated_metadata", None)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f)
    os.replace(tmp, path)


def array_exists(store_path: str, name: str) -> bool:
    """Whether array ``name`` of the store has been created (its ``zarr.json`` is there)."""
    return os.path.exists(os.path.join(store_path, *name.split("/"), "zarr.json"))


def ensure_array(
    store_path: str,
    name: str,
    *,
    item_shape: tuple[int, ...],
    capacity: int,
    chunk_size: int,
    dtype: Any,
    fill_value: Any,
) -> Any:
    """Open array ``name``, creating it (``(capacity, *item_shape)``) if missing."""
    import zarr

    full = os.path.join(store_path, *name.split("/"))
    if not array_exists(store_path, name):
        with creation_lock(store_path):
            if not array_exists(store_path, name):
                root = zarr.open_group(store_path, mode="a")
                root.create_array(
                    name,
                    shape=(capacity, *item_shape),
                    chunks=(chunk_size, *item_shape),
                    dtype=dtype,
                    fill_value=fill_value,
                    dimension_names=dimension_names(name, 1 + len(item_shape)),
                    attributes=cf_attributes(name),
                )
    return _open_for_writing(full)


_OPEN: dict[str, tuple[tuple[int, int], Any]] = {}
_open_lock = threading.Lock()


def _open_for_writing(full: str) -> Any:
    """Array ``full`` opened for writing, reused while its metadata file is unchanged.

    Opening parses the metadata and builds the codec pipeline (about a
    millisecond); a chunk writes a dozen arrays.  A resize (the client's, when
    an export starts or finishes) rewrites ``zarr.json``, whose size and mtime
    are the cache key, so a worker never writes through a stale shape.
    """
    import zarr

    meta = os.stat(os.path.join(full, "zarr.json"))
    stamp = (meta.st_mtime_ns, meta.st_size)
    with _open_lock:
        hit = _OPEN.get(full)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    # every written chunk goes to disk, even one that equals the fill value (NaN rows of a
    # no-data product): load_export takes a missing chunk of an ok item for a lost one
    with zarr.config.set({"array.write_empty_chunks": True}):
        arr = zarr.open_array(full, mode="r+")
    with _open_lock:
        if len(_OPEN) > 256:
            _OPEN.clear()
        _OPEN[full] = (stamp, arr)
    return arr


def column(
    store_path: str, name: str, values: np.ndarray, *, capacity: int, chunk_size: int, fill_value: Any
) -> Any:
    """Array ``name`` for rows like ``values`` (created if missing), opened for writing."""
    return ensure_array(
        store_path,
        name,
        item_shape=tuple(values.shape[1:]),
        capacity=capacity,
        chunk_size=chunk_size,
        dtype=str if values.dtype.kind in "OUT" else values.dtype,
        fill_value=fill_value,
    )


def rows_on_disk(store_path: str, name: str, row: int, arr: Any = None) -> bool:
    """Whether the chunk of array ``name`` holding ``row`` was ever written (its chunk file exists).

    ``arr``: the array, when it is already open.
    """
    import zarr

    if arr is None:
        arr = zarr.open_array(os.path.join(store_path, *name.split("/")), mode="r")
    key = arr.metadata.encode_chunk_key((row // arr.chunks[0],) + (0,) * (arr.ndim - 1))
    return os.path.exists(os.path.join(store_path, *name.split("/"), *key.split("/")))


def write_rows(writes: list[tuple[Any, int, np.ndarray]]) -> None:
    """Write ``(array, start, values)`` rows of several arrays in one pass of zarr's IO loop.

    A chunk writes a dozen small columns; one blocking round trip to zarr's
    event loop each cost more than the writes themselves.
    """
    if not writes:
        return
    import asyncio

    from zarr.core.sync import sync

    async def write_all() -> None:
        await asyncio.gather(
            *(arr.async_array.setitem((slice(start, start + v.shape[0]),), v) for arr, start, v in writes)
        )

    sync(write_all())


def write_column(
    store_path: str,
    name: str,
    start: int,
    values: np.ndarray,
    *,
    capacity: int,
    chunk_size: int,
    fill_value: Any,
) -> None:
    """Write ``values`` (one row per item) at ``[start, start + len)`` of array ``name``."""
    arr = column(store_path, name, values, capacity=capacity, chunk_size=chunk_size, fill_value=fill_value)
    arr[start : start + values.shape[0]] = values


def write_ragged(store_path: str, group: str, index: int, value: np.ndarray) -> None:
    """Store one item whose shape differs from its dense array."""
    import zarr

    root = zarr.open_group(store_path, mode="a")
    arr = root.create_array(
        f"{group}/ragged/{index}", shape=value.shape, chunks=value.shape, dtype=value.dtype, overwrite=True,
        dimension_names=tuple(f"ragged_{index}_d{j}" for j in range(value.ndim)),
    )  # fmt: skip
    arr[...] = value


def read_status(store_path: str, group: str, n: int | None = None) -> np.ndarray | None:
    """The int8 status column of ``group`` (``None`` when nothing was written yet)."""
    import zarr

    if not array_exists(store_path, f"{group}/status"):
        return None
    arr = zarr.open_array(os.path.join(store_path, *group.split("/"), "status"), mode="r")
    return np.asarray(arr[: (arr.shape[0] if n is None else n)])


def resize_items(store_path: str, n: int) -> None:
    """Shrink every per-item array to ``n`` items (the client calls this once all writes are done)."""
    import zarr

    def shrink(arr: Any) -> None:
        if not arr.shape or arr.shape[0] == n:
            return
        shape = (n, *arr.shape[1:])
        try:
            # no chunk was written past item n: skip zarr's search for chunks to delete, which
            # enumerates every chunk of the old shape (UNBOUNDED items -> MemoryError)
            from zarr.core.sync import sync

            sync(arr.async_array.resize(shape, delete_outside_chunks=False))
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - other zarr 3 releases
            arr.resize(shape)

    root = zarr.open_group(store_path, mode="r+")
    for _, arr in root.arrays():
        shrink(arr)
    for grp_name in ("models", "inputs"):
        if grp_name not in root:
            continue
        group = root[grp_name]
        assert isinstance(group, zarr.Group)
        for _, sub in group.groups():
            for _, arr in sub.arrays():
                shrink(arr)
