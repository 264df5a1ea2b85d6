"""Value noise and fractal noise on metre grids, for the synthetic world.

Smooth value noise hashes an integer lattice (splitmix64), interpolates each
lattice row along x with a smoothstep weight, then interpolates between two
lattice rows along y per pixel.  The arithmetic each pixel sees is fixed (the
synthetic world's bytes depend on it):

* along x, on the lattice rows: ``l + (r - l) * sx``;
* along y, per pixel: ``v = a + (b - a) * sy`` with ``a``, ``b`` the two
  lattice rows around the pixel;
* noise ``n = v * 2.0 - 1.0``; fractal noise ``sum_o(amp_o * n_o) / sum_o(amp_o)``
  with ``amp_o = 0.5 ** o``, accumulated from a zero field, octave by octave.

The code gets the same bits with less work.  All fields of a render share one
pass over their lattices (:class:`NoiseBatch`); ``b - a`` is taken once per
lattice row pair instead of per pixel; the exact power-of-two factors
``2.0 * amp_o`` are folded into the lattice values, since scaling by a power of
two commutes with rounding (the values stay far from under- and overflow), so
``amp_o * (v * 2.0 - 1.0) == (2 amp_o a + (2 amp_o (b - a)) * sy) - amp_o`` bit
for bit; adding the first octave to the zero field is the identity (a noise
value is never ``-0.0``), so it is written directly; lattices far larger than
the pixel grid (cells smaller than pixels) are hashed only next to pixels; and
full-size temporaries come from a small pool of reusable buffers
(:func:`workspace`), sparing the page faults of fresh allocations.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

__all__ = [
    "NoiseBatch",
    "Workspace",
    "fbm",
    "hash01",
    "octave_fields",
    "raw_level",
    "value_noise",
    "workspace",
]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)

# scratch buffers above this many elements are allocated per call and not kept
_KEEP_MAX = 1 << 17  # 256 x 256 windows and smaller: at most ~8 MB kept per workspace
_POOL_MAX = 4


def _row_term(iy: np.ndarray, seed: np.uint64 | np.ndarray) -> np.ndarray:
    """The lattice row's part of the splitmix64 input; ``seed`` already reduced to 32 bits."""
    with np.errstate(over="ignore"):
        return (iy.astype(np.uint64) + seed * _M3) * _M2


def _mix(ix: np.ndarray, row_term: np.ndarray) -> np.ndarray:
    """splitmix64 of each lattice point (``ix`` as ``uint64``), its top 53 bits as ``uint64``."""
    with np.errstate(over="ignore"):
        h = ix * _M1 ^ row_term
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
    h >>= np.uint64(11)
    return h


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform ``[0, 1)`` per integer lattice point (splitmix64)."""
    h = _mix(ix.astype(np.uint64), _row_term(iy, np.uint64(seed & 0xFFFFFFFF)))
    return h.astype(np.float64) / float(1 << 53)


class Workspace:
    """Named scratch buffers, reused between calls of one thread at a time."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, distinct per ``name``."""
        n = 1
        for d in shape:
            n *= d
        key = f"{name}:{np.dtype(dtype).str}"
        flat = self._flat.get(key)
        if flat is None or flat.size < n:
            flat = np.empty(n, dtype=dtype)
            if n <= _KEEP_MAX:
                self._flat[key] = flat
        return flat[:n].reshape(shape)


_POOL: list[Workspace] = []
_POOL_LOCK = threading.Lock()


@contextmanager
def workspace() -> Iterator[Workspace]:
    """Borrow a :class:`Workspace` from a small pool (one per concurrent render)."""
    with _POOL_LOCK:
        ws = _POOL.pop() if _POOL else Workspace()
    try:
        yield ws
    finally:
        with _POOL_LOCK:
            if len(_POOL) < _POOL_MAX:
                _POOL.append(ws)


def _axis(coords: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index below each coordinate and its smoothstep weight, per field: ``(F, N)`` each."""
    g = coords[None, :] / cells[:, None]
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    return i0, f * f * (3 - 2 * f)


class NoiseBatch:
    """Several value-noise fields on one ``(ys x xs)`` grid, their lattices computed together.

    Parameters
    ----------
    xs, ys : numpy.ndarray
        1-D metre coordinates of the columns and rows.
    fields : sequence of (cell_m, seed, amp)
        Lattice cell size, seed and amplitude (a power of two) of each field.
    """

    def __init__(self, xs: np.ndarray, ys: np.ndarray, fields: Sequence[tuple[float, int, float]]) -> None:
        cells = np.array([f[0] for f in fields], dtype=np.float64)
        self.amps = [float(f[2]) for f in fields]
        self.empty = xs.size == 0 or ys.size == 0
        if self.empty:
            return
        ix0, sx = _axis(xs, cells)
        iy0, self.sy = _axis(ys, cells)
        x_lo, y_lo = ix0.min(axis=1), iy0.min(axis=1)
        nx, ny = ix0.max(axis=1) - x_lo + 2, iy0.max(axis=1) - y_lo + 2
        seeds = np.array([f[1] & 0xFFFFFFFF for f in fields], dtype=np.uint64)
        scales = np.array([2.0 * a / float(1 << 53) for a in self.amps])
        if int((nx * ny).sum()) <= 4 * xs.size * ys.size + 4096:
            along, self.rows = _along_dense(ix0, sx, iy0, x_lo, y_lo, nx, ny, seeds, scales)
        else:  # cells much smaller than pixels: hash only the lattice points next to pixels
            along, self.rows = _along_sparse(ix0, sx, iy0, seeds, scales)
        self.along = along
        self.diff = along[1:] - along[:-1]  # rows across two fields are never read

    def noise_into(self, k: int, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
        """Field ``k``: ``amp * value_noise`` in ``out`` (``tmp``: scratch of ``out``'s shape).

        Per pixel row ``i`` on lattice row ``r``: ``(along[r] + diff[r] * sy[i]) - amp``,
        with whole-array passes (gathering rows, and spreading ``sy`` across the columns
        by a copy, are cheaper than broadcasting inside the arithmetic).
        """
        if self.empty:
            return out
        rows = self.rows[k]
        np.take(self.diff, rows, axis=0, out=out, mode="clip")  # rows are in range
        np.copyto(tmp, self.sy[k][:, None])
        out *= tmp
        np.take(self.along, rows, axis=0, out=tmp, mode="clip")
        out += tmp
        out -= self.amps[k]
        return out

    def fbm_into(
        self,
        k: int,
        octaves: int,
        out: np.ndarray,
        tmp: np.ndarray,
        tmp2: np.ndarray,
        *,
        normalize: bool = True,
    ) -> np.ndarray:
        """Fractal noise of fields ``k .. k + octaves - 1`` (see :func:`octave_fields`) in ``out``.

        ``normalize=False`` leaves the sum undivided by the sum of amplitudes (see :func:`raw_level`).
        """
        norm = 0.0
        for o in range(octaves):
            if o == 0:
                self.noise_into(k, out, tmp)
            else:
                out += self.noise_into(k + o, tmp, tmp2)
            norm += self.amps[k + o]
        if normalize:
            out /= norm
        return out


def _along_dense(
    ix0: np.ndarray,
    sx: np.ndarray,
    iy0: np.ndarray,
    x_lo: np.ndarray,
    y_lo: np.ndarray,
    nx: np.ndarray,
    ny: np.ndarray,
    seeds: np.ndarray,
    scales: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every field's whole lattice (``ny x nx`` points from ``(y_lo, x_lo)``), interpolated along x.

    Returns the lattice rows of all fields one after the other, ``(sum(ny), W)``,
    and the row of that array below each pixel row, ``(F, H)``.  The lattice
    values are the hash's ``h / 2**53`` times ``2 amp`` (``scales = 2 amp / 2**53``):
    the same values scaled by a power of two.
    """
    n = ix0.shape[0]
    first_row = np.cumsum(ny) - ny
    gid = np.repeat(np.arange(n), ny)  # field of each lattice row
    n_rows = int(first_row[-1] + ny[-1])
    row_len = nx[gid]
    row_start = np.cumsum(row_len) - row_len
    point_row = np.repeat(np.arange(n_rows), row_len)
    ix = np.arange(int(row_start[-1] + row_len[-1])) - row_start[point_row]
    ix += x_lo[gid][point_row]
    row_term = _row_term(np.arange(n_rows) - (first_row - y_lo)[gid], seeds[gid])
    lattice = _mix(ix.view(np.uint64), row_term[point_row]).astype(np.float64)  # int64 -> uint64 as astype
    lattice *= scales[gid][point_row]
    slope = np.zeros_like(lattice)  # right - left along each lattice row (junk at row ends, never read)
    np.subtract(lattice[1:], lattice[:-1], out=slope[:-1])
    at = (ix0 - x_lo[:, None])[gid]
    at += row_start[:, None]
    along = slope[at]
    along *= sx[gid]
    along += lattice[at]
    return along, iy0 - (y_lo - first_row)[:, None]


def _along_sparse(
    ix0: np.ndarray, sx: np.ndarray, iy0: np.ndarray, seeds: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_along_dense`, on the lattice columns and rows next to pixels only.

    A lattice index and the next one are both kept, so they stay neighbours in
    the kept set and the interpolation reads the same corners.
    """
    alongs, rows = [], []
    first = 0
    for f in range(ix0.shape[0]):
        xc, cols = np.unique(np.concatenate([ix0[f], ix0[f] + 1]), return_inverse=True)
        yc, rpos = np.unique(np.concatenate([iy0[f], iy0[f] + 1]), return_inverse=True)
        lattice = _mix(xc.astype(np.uint64)[None, :], _row_term(yc, seeds[f])[:, None]).astype(np.float64)
        lattice *= scales[f]
        slope = np.zeros_like(lattice)
        np.subtract(lattice[:, 1:], lattice[:, :-1], out=slope[:, :-1])
        c = cols[: ix0.shape[1]]
        along = slope[:, c]
        along *= sx[f]
        along += lattice[:, c]
        alongs.append(along)
        rows.append(rpos[: iy0.shape[1]] + first)
        first += yc.size
    return np.concatenate(alongs), np.stack(rows)


def raw_level(level: float, norm: float, *, above: bool) -> float:
    """The test of an undivided fractal-noise sum ``t`` equivalent to testing ``t / norm`` against ``level``.

    With ``above``, ``t / norm > level`` exactly when ``t > raw_level(...)``;
    otherwise ``t / norm < level`` exactly when ``t < raw_level(...)``.  Float64
    division by ``norm > 0`` is monotonic in ``t``, so the set of ``t`` passing
    the test is bounded by one float, found here by stepping from ``level * norm``.
    """
    t = level * norm
    if above:  # the largest t with t / norm <= level
        while t / norm > level:
            t = math.nextafter(t, -math.inf)
        while math.nextafter(t, math.inf) / norm <= level:
            t = math.nextafter(t, math.inf)
    else:  # the smallest t with t / norm >= level
        while t / norm < level:
            t = math.nextafter(t, math.inf)
        while math.nextafter(t, -math.inf) / norm >= level:
            t = math.nextafter(t, -math.inf)
    return t


def octave_fields(cell_m: float, seed: int, n: int = 3) -> list[tuple[float, int, float]]:
    """The fields of ``n``-octave fractal noise: halving cells, seeds ``+ 101`` per octave, halving amplitudes."""
    return [(cell_m / (2**o), seed + 101 * o, 0.5**o) for o in range(n)]


def value_noise(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    """Smooth value noise in ``[-1, 1]`` on the ``(ys x xs)`` grid of metre coordinates."""
    if xs.size == 0 or ys.size == 0:
        return np.zeros((ys.size, xs.size))
    out = np.empty((ys.size, xs.size))
    return NoiseBatch(xs, ys, [(cell_m, seed, 1.0)]).noise_into(0, out, np.empty_like(out))


def fbm(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise on the ``(ys x xs)`` grid (a new array)."""
    if xs.size == 0 or ys.size == 0:
        return np.zeros((ys.size, xs.size))
    out = np.empty((ys.size, xs.size))
    batch = NoiseBatch(xs, ys, octave_fields(cell_m, seed, octaves))
    return batch.fbm_into(0, octaves, out, np.empty_like(out), np.empty_like(out))
