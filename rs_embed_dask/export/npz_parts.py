"""Combined NPZ members deflated chunk by chunk while the export runs.

A combined ``.npz`` holds one deflated ``<key>.npy`` member per array.
Compressing every input and embedding after the last inference leaves the
cluster idle while the client deflates: on the CPU benchmark, a quarter of
the wall time.  Instead each write task also deflates its chunk's rows of
every dense array into a *part* (:func:`write_part`): a raw deflate segment
ended with a sync flush, so that parts concatenate into one valid stream,
stored with the CRC-32 and length of its bytes.  The finish
(:func:`write_npz_from_parts`) writes, per member, a deflated ``.npy``
header, the parts in item order and deflate's final empty block, with the
parts' CRC-32s combined (:func:`crc32_combine`): a byte copy, no
compression.  Rows without a valid part (a run killed between the two
writes, other keys of the archive) are deflated from the store then, so the
archive is the same either way.

Each row of a part is its own deflate segment (with its length, its CRC-32
and the CRC-32 of the row as a whole one-item ``.npy`` member), so the same
part serves every layout the finish may need: the dense member (all
segments, the chunk's CRC-32), a dense member of the ok rows only
(``indices``), and rs-embed's per-item members of an export where some items
failed (one segment after the shared deflated header, its member CRC-32
stored): finishing copies bytes in O(chunks) file reads, never a slice per
item (:class:`StoreRows`).

The archive is a plain zip64 file that ``np.load(allow_pickle=False)`` and
:mod:`zipfile` read like one written by ``np.savez_compressed``.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rs_embed_dask.export.deflate import deflate_segment
from rs_embed_dask.export.writers import atomic_path, c_order_bytes, npy_header, npy_member

__all__ = [
    "StoreRows",
    "crc32_combine",
    "part_intact",
    "parts_dir",
    "read_part",
    "read_part_rows",
    "write_npz_from_parts",
    "write_part",
]

_MAGIC = b"RSEPART2"
_HEAD = struct.Struct("<8sQQI")  # magic, rows, raw bytes, crc32 of the rows together
_ROW = struct.Struct("<QII")  # deflated bytes, crc32 of the row, crc32 of the row's one-item .npy member
_FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed Huffman codes
_CRC_POLY = 0xEDB88320  # CRC-32 (zip), reflected


# -- CRC-32 of concatenated data --------------------------------------------------------------
def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the CRC polynomial (reflected bit order)."""
    m = 1 << 31
    p = 0
    while m:
        if a & m:
            p ^= b
            if not a & (m - 1):
                break
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return p


_X2N = [1 << 30]  # x**(2**k) modulo the polynomial, k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``, as zlib's ``crc32_combine``.

    Appending ``len2`` bytes multiplies ``A``'s remainder by ``x**(8 * len2)``;
    the power is built from the table of ``x**(2**k)``, so the cost grows
    with the number of bits of ``len2``, not with the data.
    """
    p = 1 << 31  # x**0
    n, k = int(len2), 3  # 8 * len2 = len2 * 2**3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


# -- parts ------------------------------------------------------------------------------------
def parts_dir(store_path: str) -> str:
    """The folder of a working store's NPZ parts (beside the store, so zarr never lists it)."""
    return os.fspath(store_path).rstrip("/\\") + ".npz-parts"


def _part_path(store_path: str, array: str, start: int) -> str:
    return os.path.join(parts_dir(store_path), array.replace("/", "__"), f"{int(start):012d}.part")


def _deflate(data: memoryview | bytes, level: int) -> bytes:
    return deflate_segment(data, level)


def write_part(store_path: str, array: str, start: int, block: np.ndarray, *, level: int = 1) -> str:
    """Deflate the rows ``block`` of store array ``array`` at item ``start``, row by row; atomically written."""
    block = np.ascontiguousarray(block)
    raw = c_order_bytes(block)
    member_crc0 = zlib.crc32(npy_header(tuple(block.shape[1:]), block.dtype))
    table, payloads = [], []
    for r in range(block.shape[0]):
        row = c_order_bytes(block[r])
        payload = _deflate(row, level)
        row_crc = zlib.crc32(row)
        table.append(_ROW.pack(len(payload), row_crc, zlib.crc32(row, member_crc0)))
        payloads.append(payload)
    path = _part_path(store_path, array, start)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp, "wb") as f:
        f.write(_HEAD.pack(_MAGIC, int(block.shape[0]), raw.nbytes, zlib.crc32(raw)))
        f.write(b"".join(table))
        f.write(b"".join(payloads))
    os.replace(tmp, path)
    return path


def _read(store_path: str, array: str, start: int) -> tuple[int, int, int, list[tuple[int, int, int]], bytes] | None:
    """``(rows, raw bytes, crc32, [(deflated, row crc, member crc)], payload)`` of a valid part, else ``None``."""
    try:
        with open(_part_path(store_path, array, start), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _HEAD.size:
        return None
    magic, rows, nbytes, crc = _HEAD.unpack_from(data)
    end = _HEAD.size + rows * _ROW.size
    if magic != _MAGIC or rows <= 0 or nbytes % rows or len(data) < end:
        return None
    table = [_ROW.unpack_from(data, _HEAD.size + r * _ROW.size) for r in range(rows)]
    payload = data[end:]
    if not payload or sum(t[0] for t in table) != len(payload):
        return None
    return int(rows), int(nbytes), int(crc), table, payload


def part_intact(store_path: str, array: str, start: int, rows: int) -> bool:
    """Whether the part of ``array`` at ``start`` exists whole for ``rows`` rows (header and sizes; no payload read)."""
    path = _part_path(store_path, array, start)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return False
            magic, n, nbytes, _crc = _HEAD.unpack(head)
            if magic != _MAGIC or n != rows or nbytes % max(1, n):
                return False
            table = f.read(n * _ROW.size)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(table) < n * _ROW.size:
        return False
    payload = sum(_ROW.unpack_from(table, r * _ROW.size)[0] for r in range(n))
    return payload > 0 and size == _HEAD.size + n * _ROW.size + payload


def read_part(store_path: str, array: str, start: int) -> tuple[int, int, int, bytes] | None:
    """``(rows, raw bytes, crc32, deflated bytes)`` of a part, or ``None`` when there is no valid one."""
    got = _read(store_path, array, start)
    return None if got is None else (got[0], got[1], got[2], got[4])


def read_part_rows(store_path: str, array: str, start: int) -> list[tuple[int, int, int, bytes]] | None:
    """Per row of a part: ``(raw bytes, crc32, member crc32, deflated bytes)``; ``None`` when there is no valid one."""
    got = _read(store_path, array, start)
    if got is None:
        return None
    rows, nbytes, _crc, table, payload = got
    out, pos = [], 0
    for comp, row_crc, member_crc in table:
        out.append((nbytes // rows, row_crc, member_crc, payload[pos : pos + comp]))
        pos += comp
    return out


class StoreRows:
    """Rows of a working-store array, to be written from its parts (or the store where they are missing).

    Parameters
    ----------
    store_path, array : str
        The working store and the array in it (``models/<key>/embeddings``).
    rows : sequence of int
        The item indices.
    item_shape : tuple of int
        Shape of one row; ``dtype`` its dtype (float32).
    single : bool, default False
        One item as a member of shape ``item_shape`` (rs-embed's per-item
        members), else a member of shape ``(len(rows), *item_shape)``.
    """

    def __init__(
        self, store_path: str, array: str, rows: Any, item_shape: tuple[int, ...], dtype: Any = np.float32,
        *, single: bool = False,
    ) -> None:  # fmt: skip
        self.store_path, self.array = store_path, array
        self.rows = [int(i) for i in rows]
        self.item_shape, self.dtype, self.single = tuple(item_shape), np.dtype(dtype), single
        self.shape = self.item_shape if single else (len(self.rows), *self.item_shape)


class _PartCache:
    """The rows of the part last read, per array; parts are found from the store array's chunk length."""

    def __init__(self) -> None:
        self.key: tuple[str, str, int] | None = None
        self.rows: list[tuple[int, int, int, bytes]] | None = None
        self.chunk: dict[tuple[str, str], int] = {}
        self.arrays: dict[tuple[str, str], Any] = {}

    def _array(self, store_path: str, array: str) -> Any:
        k = (store_path, array)
        if k not in self.arrays:
            import zarr

            self.arrays[k] = zarr.open_array(os.path.join(store_path, *array.split("/")), mode="r")
            self.chunk[k] = int(self.arrays[k].chunks[0])
        return self.arrays[k]

    def row(self, store_path: str, array: str, i: int, row_bytes: int) -> tuple[int, int, int, bytes] | None:
        self._array(store_path, array)
        step = self.chunk[(store_path, array)]
        start = (i // step) * step
        if self.key != (store_path, array, start):
            self.key, self.rows = (store_path, array, start), read_part_rows(store_path, array, start)
        if self.rows is None or i - start >= len(self.rows) or self.rows[i - start][0] != row_bytes:
            return None
        return self.rows[i - start]

    def from_store(self, store_path: str, array: str, i: int, dtype: np.dtype) -> np.ndarray:
        arr = self._array(store_path, array)
        _require_rows_on_disk(store_path, array, i, arr)
        return np.ascontiguousarray(np.asarray(arr[i]), dtype=dtype)


def _require_rows_on_disk(store_path: str, array: str, row: int, arr: Any = None) -> None:
    """Raise when neither a part nor the store holds ``row`` (NPZ targets keep input rows in parts only)."""
    from rs_embed_dask.core.errors import ExportIntegrityError
    from rs_embed_dask.export.store import array_exists, rows_on_disk

    if arr is None and not array_exists(store_path, array):
        return  # rows given from elsewhere than the store
    if not rows_on_disk(store_path, array, row, arr):
        raise ExportIntegrityError(
            store_path,
            f"row {row} of {array!r} is marked written, but its part under {parts_dir(store_path)!r} is "
            "missing or damaged and the store holds no copy of it; run the export again with resume=True "
            "(the chunk is fetched and written again).",
        )


def _rows_member(value: StoreRows, level: int, cache: _PartCache, hdr: dict[Any, tuple[bytes, int, int, bytes]]) -> tuple[list[tuple[int, int, bytes]], int]:
    """Pieces and CRC-32 of a :class:`StoreRows` member."""
    shape_key = (value.shape, value.dtype.str)
    if shape_key not in hdr:
        header = npy_header(value.shape, value.dtype)
        hdr[shape_key] = (header, len(header), zlib.crc32(header), _deflate(header, level))
    _header, hlen, hcrc, hpayload = hdr[shape_key]
    row_bytes = int(np.prod(value.item_shape, dtype=np.int64)) * value.dtype.itemsize
    pieces: list[tuple[int, int, bytes]] = [(hlen, hcrc, hpayload)]
    crc, single_crc = hcrc, None
    for i in value.rows:
        got = cache.row(value.store_path, value.array, i, row_bytes)
        if got is None:
            raw = c_order_bytes(cache.from_store(value.store_path, value.array, i, value.dtype))
            nbytes, rcrc, payload = len(raw), zlib.crc32(raw), _deflate(raw, level)
            mcrc = zlib.crc32(raw, hcrc)
        else:
            nbytes, rcrc, mcrc, payload = got
        pieces.append((nbytes, rcrc, payload))
        if value.single:
            single_crc = mcrc  # the member's CRC-32, stored with the part: nothing to combine
        else:
            crc = crc32_combine(crc, rcrc, nbytes)
    return pieces, (single_crc if value.single and single_crc is not None else crc)


# -- the archive --------------------------------------------------------------------------------
def _dos_time(t: float) -> tuple[int, int]:
    y, mo, d, h, mi, s = time.localtime(t)[:6]
    return (h << 11) | (mi << 5) | (s // 2), ((max(y, 1980) - 1980) << 9) | (mo << 5) | d


class _Zip64Writer:
    """Deflated members from pieces ``(raw bytes, crc32, deflated bytes)``; zip64 sizes in every header."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.entries: list[tuple[bytes, int, int, int, int, int]] = []  # name, flags, crc, raw, comp, offset
        self.time, self.date = _dos_time(time.time())

    def member(self, name: str, pieces: Iterable[tuple[int, int, bytes]], crc: int | None = None) -> None:
        """Write member ``name`` from pieces ``(raw bytes, crc32, deflated)``; ``crc`` when already known."""
        try:
            bname, flags = name.encode("ascii"), 0
        except UnicodeEncodeError:
            bname, flags = name.encode("utf-8"), 0x800
        offset = self.f.tell()
        self._local_header(bname, flags, 0, 0, 0)
        known, crc = crc, 0
        raw = comp = 0
        for nbytes, pcrc, payload in pieces:
            if known is None:
                crc = crc32_combine(crc, pcrc, nbytes)
            raw += nbytes
            comp += len(payload)
            self.f.write(payload)
        self.f.write(_FINAL_BLOCK)
        comp += len(_FINAL_BLOCK)
        crc = crc if known is None else known
        end = self.f.tell()
        self.f.seek(offset)
        self._local_header(bname, flags, crc, raw, comp)
        self.f.seek(end)
        self.entries.append((bname, flags, crc, raw, comp, offset))

    def _local_header(self, name: bytes, flags: int, crc: int, raw: int, comp: int) -> None:
        extra = struct.pack("<HHQQ", 1, 16, raw, comp)
        self.f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, flags, 8, self.time, self.date, crc,
                                 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)))  # fmt: skip
        self.f.write(name + extra)

    def close(self) -> None:
        cd_start = self.f.tell()
        for name, flags, crc, raw, comp, offset in self.entries:
            extra_vals = [raw, comp] + ([offset] if offset >= 0xFFFFFFFF else [])
            extra = struct.pack(f"<HH{len(extra_vals)}Q", 1, 8 * len(extra_vals), *extra_vals)
            self.f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 45, 45, flags, 8, self.time,
                                     self.date, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0,
                                     0o600 << 16, min(offset, 0xFFFFFFFF)))  # fmt: skip
            self.f.write(name + extra)
        cd_end = self.f.tell()
        n, size = len(self.entries), cd_end - cd_start
        if n >= 0xFFFF or size >= 0xFFFFFFFF or cd_start >= 0xFFFFFFFF:
            self.f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, size, cd_start))
            self.f.write(struct.pack("<IIQI", 0x07064B50, 0, cd_end, 1))
        self.f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                                 min(size, 0xFFFFFFFF), min(cd_start, 0xFFFFFFFF), 0))  # fmt: skip


def _piece(raw: memoryview | bytes, level: int) -> tuple[int, int, bytes]:
    return len(raw), zlib.crc32(raw), _deflate(raw, level)


def _array_pieces(key: str, value: Any, level: int, parts: tuple[str, str] | None) -> Iterator[tuple[int, int, bytes]]:
    header, shape, dtype, blocks = npy_member(key, value)
    yield _piece(header, level)
    if parts is None or not shape:
        for block in blocks:
            yield _piece(c_order_bytes(block), level)
        return
    store_path, array = parts
    n = shape[0]
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    step = max(1, int(getattr(value, "chunksize", (n,))[0] or n))
    pos = 0
    while pos < n:
        part = read_part(store_path, array, pos)
        if part is not None and 0 < part[0] <= n - pos and part[1] == part[0] * row_bytes:
            rows, nbytes, crc, payload = part
            yield nbytes, crc, payload
            pos += rows
            continue
        stop = min(n, (pos // step + 1) * step)  # deflate the rest of this chunk from the store
        _require_rows_on_disk(store_path, array, pos)
        block = np.ascontiguousarray(np.asarray(value[pos:stop]), dtype=dtype)
        yield _piece(c_order_bytes(block), level)
        pos = stop


def write_npz_from_parts(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    parts: Mapping[str, tuple[str, str]],
    *,
    compresslevel: int = 1,
) -> Path:
    """Write a combined ``.npz`` atomically, using the parts of the arrays named in ``parts``.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    arrays : Mapping[str, array-like]
        Key -> array (numpy, dask, zarr) or :class:`StoreRows`, written in
        this order as ``<key>.npy``.
    parts : Mapping[str, tuple of str]
        Key -> ``(store_path, array name)`` for arrays that are rows ``[0, n)``
        of a working-store array whose chunks were written with
        :func:`write_part`; other keys are deflated here.
    compresslevel : int, default 1
        zlib level of what is deflated here (that of the parts is set when
        they are written).

    Returns
    -------
    pathlib.Path
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        zw = _Zip64Writer(f)
        cache, headers = _PartCache(), {}  # type: ignore[var-annotated]
        for key, value in arrays.items():
            if isinstance(value, StoreRows):
                pieces, crc = _rows_member(value, compresslevel, cache, headers)
                zw.member(f"{key}.npy", pieces, crc)
            else:
                zw.member(f"{key}.npy", _array_pieces(str(key), value, compresslevel, parts.get(key)))
        zw.close()
    return Path(path)
