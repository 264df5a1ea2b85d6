"""Local stand-ins for the precomputed products both packages read.

``copernicus``: ``embed_map_310k.tif`` as torchgeo's ``CopernicusEmbed``
publishes it: one uncompressed GeoTIFF, EPSG:4326, 0.25-degree pixels on the
global 721 x 1440 grid (rs-embed's reader accepts only that shape), 768
float32 bands pixel-interleaved, one row per strip.  The file is sparse:
seeded random embeddings only within a few degrees of the planned ROIs,
zeros elsewhere (3.2 GB nominal, a few hundred MB on disk).  Both sides find
it through ``RS_EMBED_COP_DIR`` (rs-embed's variable, which we honour).

``gse`` and ``tessera``: :mod:`parity.products_gse` (a fake Earth Engine at
the ``ee.data`` boundary, installed in both side processes) and
:mod:`parity.products_tessera` (geotessera's offline layout); their ROIs and
cases are :data:`PRODUCT_ROIS` and :func:`product_cases`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from parity.inputs import Case, Roi

__all__ = ["COPERNICUS_FILE", "PRODUCT_ROIS", "product_cases", "write_copernicus"]

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


# -- ROIs and cases of the products other than copernicus ------------------------------------
#: product -> (year, [(ROI name, spec)]): ``("pb", lon, lat, px)`` a PointBuffer of ``px`` 10 m pixels,
#: ``("box", lon, lat, h, w)`` a BBox of ``h x w`` 10 m pixels (EPSG:3857) centred on ``(lon, lat)``.
PRODUCT_ROIS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    # gse: a small and a larger point, a rectangle, and a box over Earth Engine's sampleRectangle
    # limit (262144 px), which rs-embed splits on a lattice line and stitches
    "gse": [
        ("gse_pb32", ("pb", 8.71, 47.31, 32)),
        ("gse_pb100", ("pb", 8.73, 47.32, 100)),
        ("gse_rect", ("box", 8.75, 47.33, 60, 96)),
        ("gse_big", ("box", 8.78, 47.35, 520, 530)),
    ],
    # tessera: inside one tile, across the UTM zone 32/33 boundary at 12 E and four tiles,
    # and a rectangle across two tiles of one zone (parity/products_tessera.py writes the tiles)
    "tessera": [
        ("tess_in", ("pb", 11.93, 47.27, 32)),
        ("tess_cross", ("pb", 12.0, 47.3, 64)),
        ("tess_rect", ("box", 11.95, 47.301, 48, 80)),
    ],
}
#: single calls only (too large to repeat in the batch)
_SINGLE_ONLY = {"gse_big"}


def product_cases(model: str, year: int, rois: dict[str, Roi], cases: list[Case]) -> None:
    """Add ``model``'s ROIs (:data:`PRODUCT_ROIS`) and its cases to a plan being built.

    Per output (pooled, grid): one ``get_embedding`` call per ROI and one
    ``get_embeddings_batch`` over the ROIs not in ``_SINGLE_ONLY``.
    """
    from parity.inputs import _mercator_box

    names = []
    for name, spec in PRODUCT_ROIS[model]:
        if spec[0] == "pb":
            _, lon, lat, px = spec
            rois[name] = Roi(name, lon, lat, px, 10)
        else:
            _, lon, lat, h, w = spec
            rois[name] = Roi(name, lon, lat, w, 10, _mercator_box(lon, lat, w * 10 / 2, h * 10 / 2), h)
        names.append(name)
    for output in ("pooled", "grid"):
        for name in names:
            cases.append(Case(f"{model}/{output}/{name}/default/single", model, output, (name,), None, "single", year))
        batch = tuple(n for n in names if n not in _SINGLE_ONLY)
        cases.append(Case(f"{model}/{output}/batch/default/batch", model, output, batch, None, "batch", year))
