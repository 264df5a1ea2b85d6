"""A chunk's ROIs as one compact, picklable sequence.

Every chunk's ROIs travel to three tasks (fetch, inference, write), and the
scheduler keeps each task message in its recent-message log (a thousand per
worker by default).  As a list of ``BBox``/``PointBuffer`` objects a chunk of
a thousand ROIs pickles into thousands of objects; as one float array it is
a few arrays of about 40 bytes a ROI, so the client of a continental export stays
small while the log fills.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from rs_embed_dask.core.specs import BBox, PointBuffer

__all__ = ["SpatialBlock", "as_block"]

_BBOX, _POINT = 0, 1


class SpatialBlock(Sequence[Any]):
    """ROIs of one chunk: ``BBox`` and ``PointBuffer`` rebuilt on access.

    Parameters
    ----------
    kinds : numpy.ndarray
        ``int8`` per ROI: 0 for a BBox, 1 for a PointBuffer.
    values : numpy.ndarray
        ``(n, 4)`` float64: ``minlon, minlat, maxlon, maxlat`` or
        ``lon, lat, buffer_m, nan``.
    crs : tuple of str
        One CRS for all ROIs, or one per ROI.
    ints : numpy.ndarray
        ``(n, 4)`` bool: the fields given as Python ``int`` (rebuilt as such,
        so manifests and fingerprints are those of the ROIs as given).
    """

    __slots__ = ("crs", "ints", "kinds", "values")

    def __init__(self, kinds: np.ndarray, values: np.ndarray, crs: tuple[str, ...], ints: np.ndarray) -> None:
        self.kinds = kinds
        self.values = values
        self.crs = crs
        self.ints = ints

    @classmethod
    def from_specs(cls, specs: Sequence[Any]) -> SpatialBlock:
        """Pack BBoxes and PointBuffers (anything else raises ``TypeError``)."""
        n = len(specs)
        kinds = np.empty(n, dtype=np.int8)
        values = np.full((n, 4), np.nan, dtype=np.float64)
        ints = np.zeros((n, 4), dtype=bool)
        crs = []
        for i, sp in enumerate(specs):
            if type(sp) is BBox:
                kinds[i] = _BBOX
                fields: tuple[Any, ...] = (sp.minlon, sp.minlat, sp.maxlon, sp.maxlat)
            elif type(sp) is PointBuffer:
                kinds[i] = _POINT
                fields = (sp.lon, sp.lat, sp.buffer_m)
            else:
                raise TypeError(f"SpatialBlock holds BBox and PointBuffer, got {type(sp).__name__}")
            for j, f in enumerate(fields):
                if not isinstance(f, (int, float)) or isinstance(f, bool):
                    raise TypeError(f"SpatialBlock holds numbers, got {type(f).__name__}")
                values[i, j] = f
                ints[i, j] = isinstance(f, int)
            crs.append(sp.crs)
        return cls(kinds, values, tuple(set(crs)) if len(set(crs)) == 1 else tuple(crs), ints)

    def __len__(self) -> int:
        return int(self.kinds.shape[0])

    def _one(self, i: int) -> Any:
        crs = self.crs[0] if len(self.crs) == 1 else self.crs[i]
        v = [int(x) if k else float(x) for x, k in zip(self.values[i], self.ints[i], strict=True)]
        if self.kinds[i] == _BBOX:
            return BBox(v[0], v[1], v[2], v[3], crs=crs)
        return PointBuffer(v[0], v[1], v[2], crs=crs)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> SpatialBlock: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            crs = self.crs if len(self.crs) == 1 else self.crs[i]
            return SpatialBlock(self.kinds[i], self.values[i], crs, self.ints[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"SpatialBlock index {i} out of range for {n} ROIs")
        return self._one(i % n)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self._one(i)

    def __repr__(self) -> str:
        return f"SpatialBlock({len(self)} ROIs)"


def as_block(specs: Sequence[Any]) -> Sequence[Any]:
    """``specs`` packed as a :class:`SpatialBlock` when they are all BBoxes/PointBuffers."""
    try:
        return SpatialBlock.from_specs(specs)
    except TypeError:
        return list(specs)
