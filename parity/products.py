"""Local stand-ins for the precomputed products both packages read.

``copernicus``: ``embed_map_310k.tif`` as torchgeo's ``CopernicusEmbed``
publishes it: one uncompressed GeoTIFF, EPSG:4326, 0.25-degree pixels on the
global 721 x 1440 grid (rs-embed's reader accepts only that shape), 768
float32 bands pixel-interleaved, one row per strip.  The file is sparse:
seeded random embeddings only within a few degrees of the planned ROIs,
zeros elsewhere (3.2 GB nominal, a few hundred MB on disk).  Both sides find
it through ``RS_EMBED_COP_DIR`` (rs-embed's variable, which we honour).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from parity.inputs import Roi

__all__ = ["COPERNICUS_FILE", "write_copernicus"]

COPERNICUS_FILE = "embed_map_310k.tif"
_H, _W, _D, _RES = 721, 1440, 768, 0.25
_TOP, _LEFT = 90.125, -180.0


def write_copernicus(folder: str | Path, seed: int, rois: Iterable[Roi], margin_deg: float = 2.0) -> Path:
    """Write (once per seed) the sparse Copernicus-Embed map into ``folder``; return its path."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / COPERNICUS_FILE
    stamp = folder / f".parity-seed-{seed}"
    if path.exists() and stamp.exists():
        return path
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)
    extratags = [
        (33550, "d", 3, (_RES, _RES, 0.0), True),  # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, _LEFT, _TOP, 0.0), True),  # ModelTiepoint
        (34735, "H", len(geokeys), geokeys, True),  # GeoKeyDirectory: geographic, pixel is area, EPSG:4326
    ]
    mm = tifffile.memmap(
        str(path), shape=(_H, _W, _D), dtype="float32", photometric="minisblack",
        planarconfig="contig", rowsperstrip=1, extratags=extratags,
    )  # fmt: skip
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}|copernicus".encode()).digest()[:8], "little"))
    for r in rois:
        half = r.buffer_m / 111_320.0 / max(0.2, math.cos(math.radians(r.lat))) + margin_deg
        r0, r1 = int((_TOP - (r.lat + half)) / _RES), math.ceil((_TOP - (r.lat - half)) / _RES)
        c0, c1 = int((r.lon - half - _LEFT) / _RES), math.ceil((r.lon + half - _LEFT) / _RES)
        block = rng.normal(0.0, 1.0, size=(r1 - r0, c1 - c0, _D)).astype(np.float32)
        block += np.linspace(-1, 1, _D, dtype=np.float32)  # a per-band offset, as real embeddings have
        mm[r0:r1, c0:c1] = block
    mm.flush()
    del mm
    stamp.write_text("ok")
    return path
