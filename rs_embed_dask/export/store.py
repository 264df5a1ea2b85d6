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
    "creation_lock",
    "ensure_array",
    "open_root",
    "read_status",
    "resize_items",
]

PENDING, OK, FAILED, OK_RAGGED = 0, 1, 2, 3
#: Item capacity of the arrays when the number of ROIs is not known up front.
UNBOUNDED = 10**12
_local_lock = threading.Lock()


def open_root(path: str, mode: str = "r") -> Any:
    """Open the store's root group."""
    import zarr

    return zarr.open_group(path, mode=mode)  # type: ignore[arg-type]


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


def _array_exists(store_path: str, name: str) -> bool:
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
    if not _array_exists(store_path, name):
        with creation_lock(store_path):
            if not _array_exists(store_path, name):
                root = zarr.open_group(store_path, mode="a")
                root.create_array(
                    name,
                    shape=(capacity, *item_shape),
                    chunks=(chunk_size, *item_shape),
                    dtype=dtype,
                    fill_value=fill_value,
                )
    # every written chunk goes to disk, even one that equals the fill value (NaN rows of a
    # no-data product): load_export takes a missing chunk of an ok item for a lost one
    with zarr.config.set({"array.write_empty_chunks": True}):
        return zarr.open_array(full, mode="r+")


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
    arr = ensure_array(
        store_path,
        name,
        item_shape=tuple(values.shape[1:]),
        capacity=capacity,
        chunk_size=chunk_size,
        dtype=str if values.dtype.kind in "OUT" else values.dtype,
        fill_value=fill_value,
    )
    arr[start : start + values.shape[0]] = values


def write_ragged(store_path: str, group: str, index: int, value: np.ndarray) -> None:
    """Store one item whose shape differs from its dense array."""
    import zarr

    root = zarr.open_group(store_path, mode="a")
    arr = root.create_array(
        f"{group}/ragged/{index}", shape=value.shape, chunks=value.shape, dtype=value.dtype, overwrite=True
    )
    arr[...] = value


def read_status(store_path: str, group: str, n: int | None = None) -> np.ndarray | None:
    """The int8 status column of ``group`` (``None`` when nothing was written yet)."""
    import zarr

    if not _array_exists(store_path, f"{group}/status"):
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
