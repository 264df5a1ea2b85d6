"""A fake Earth Engine serving one deterministic Satellite Embedding world to both packages.

``gse`` reads ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` through Earth Engine:
rs-embed 0.3.1 with ``ee.Image.sampleRectangle(...).getInfo()`` (an
``ee.data.computeValue`` call, after ``size()`` and ``bandNames()`` calls),
ours with ``ee.data.computePixels`` on an explicit EPSG:3857 grid.  Both
packages build their expressions with the real ``earthengine-api`` (installed
in both environments), so the lowest boundary they share is ``ee.data``:
:func:`install` replaces ``ee.Initialize``'s server handshake,
``ee.data.computeValue`` and ``ee.data.computePixels`` in the calling process,
serialises each request exactly as the client would send it and evaluates
the JSON graph with a small interpreter.  Imports neither package (numpy and
``ee`` only), so each side process installs it itself.

The world (:func:`world_values`): on the EPSG:3857 lattice at the requested
scale, every pixel has a unit-length 64-d vector that depends on the seed,
the year and the pixel's row and column only, quantised to multiples of
1/127.5 before normalising as the product's dequantised values are not;
about 1 % of the pixels (and a 3 x 3 block in every 64 x 64 block) are masked.
A ``sampleRectangle`` region's pixels are those of the request lattice whose
centres lie in the region (:func:`parity.inputs.lattice_window`, the rule the
harness's provider fakes use for every model), masked pixels read as its
``defaultValue``; requests over Earth Engine's ``sampleRectangle`` limit
(262144 pixels) fail with the service's message, which makes rs-embed split
the box.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np

from parity.inputs import lattice_window

__all__ = ["COLLECTION", "GSE_BANDS", "SAMPLE_MAX_PIXELS", "YEARS", "install", "world_values"]

COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
GSE_BANDS = tuple(f"A{i:02d}" for i in range(64))
YEARS = tuple(range(2017, 2025))
SAMPLE_MAX_PIXELS = 262144


def _key(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()[:8], "little")


def _hash01(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = rows.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= cols.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        x ^= np.uint64(key & (2**64 - 1))
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mul)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def world_values(
    seed: int, year: int, row0: int, col0: int, height: int, width: int, scale_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(values (64, H, W) float32, masked (H, W) bool)`` of a lattice window of the fake product."""
    rows, cols = np.meshgrid(np.arange(row0, row0 + height), np.arange(col0, col0 + width), indexing="ij")
    out = np.empty((64, height, width), dtype=np.float64)
    for b in range(64):
        u = _hash01(rows, cols, _key(seed, "gse", year, scale_m, b))
        out[b] = np.round((2.0 * u - 1.0) * 127.5) / 127.5
    out /= np.maximum(np.sqrt((out**2).sum(axis=0)), 1e-12)
    masked = _hash01(rows, cols, _key(seed, "gse-mask", year, scale_m)) < 0.01
    masked |= ((rows % 64) < 3) & ((cols % 64) < 3)
    return out.astype(np.float32), masked


class _EEError(Exception):
    pass


class _Coll:
    def __init__(self, cid: str) -> None:
        self.id, self.dates, self.bounds = cid, None, None

    def with_(self, **kw: Any) -> _Coll:
        c = _Coll(self.id)
        c.dates, c.bounds = self.dates, self.bounds
        for k, v in kw.items():
            setattr(c, k, v)
        return c

    def years(self) -> list[int]:
        if self.id != COLLECTION:
            return []
        if self.dates is None:
            return list(YEARS)
        d0, d1 = (date.fromisoformat(str(d)[:10]) for d in self.dates)
        return [y for y in YEARS if d0 <= date(y, 1, 1) < d1]


class _Img:
    def __init__(self, coll: _Coll) -> None:
        self.coll = coll
        self.bands: list[str] = list(GSE_BANDS)
        self.scale: float | None = None
        self.float = False
        self.fill: float | None = None


def _run(encoded: dict[str, Any]) -> Any:
    values = encoded["values"]

    def node(n: dict[str, Any]) -> Any:
        if "constantValue" in n:
            return n["constantValue"]
        if "valueReference" in n:
            return node(values[n["valueReference"]])
        if "arrayValue" in n:
            return [node(v) for v in n["arrayValue"]["values"]]
        if "dictionaryValue" in n:
            return {k: node(v) for k, v in n["dictionaryValue"]["values"].items()}
        if "functionInvocationValue" in n:
            f = n["functionInvocationValue"]
            return _call(f["functionName"], {k: node(v) for k, v in f.get("arguments", {}).items()})
        raise _EEError(f"the parity fake does not evaluate {sorted(n)}")

    return node(values[encoded["result"]])


def _call(name: str, a: dict[str, Any]) -> Any:
    if name == "ImageCollection.load":
        if a["id"] != COLLECTION:
            raise _EEError(f"ImageCollection.load: the parity fake serves {COLLECTION} only, not {a['id']!r}")
        return _Coll(a["id"])
    if name == "Collection.filter":
        kind, val = a["filter"]
        return a["collection"].with_(**{kind: val})
    if name == "DateRange":
        return (a["start"], a["end"])
    if name == "Filter.dateRangeContains":
        return ("dates", a["leftValue"])
    if name == "Filter.intersects":
        return ("bounds", a["rightValue"])
    if name in ("Feature", "Projection"):
        return a.get("geometry", a.get("crs"))
    if name == "GeometryConstructors.Rectangle":
        if a["crs"] != "EPSG:3857" or a.get("geodesic") is not False:
            raise _EEError(f"the parity fake takes planar EPSG:3857 rectangles only; got {a}")
        return tuple(float(v) for v in a["coordinates"])
    if name == "Collection.limit":  # sort("system:time_start"): one image per year here
        return a["collection"]
    if name == "Collection.size":
        return len(a["collection"].years())
    if name == "ImageCollection.mosaic":
        return _Img(a["collection"])
    if name == "Image.reproject":
        if a["crs"] != "EPSG:3857":
            raise _EEError(f"Image.reproject: the parity fake serves EPSG:3857 only, not {a['crs']!r}")
        a["image"].scale = float(a["scale"])
        return a["image"]
    if name == "Image.clip":
        return a["input"]
    if name == "Image.bandNames":
        img = a["image"]
        return list(img.bands) if img.coll.years() else []
    if name == "Image.select":
        img = a["input"]
        bad = [b for b in a["bandSelectors"] if b not in GSE_BANDS]
        if bad or not img.coll.years():
            raise _EEError(f"Image.select: Pattern '{(bad or a['bandSelectors'])[0]}' did not match any bands.")
        img.bands = list(a["bandSelectors"])
        return img
    if name == "Image.toFloat":
        a["value"].float = True
        return a["value"]
    if name == "Image.constant":
        return float(a["value"])
    if name == "Image.unmask":
        a["input"].fill = float(a["value"])
        return a["input"]
    if name == "Image.sampleRectangle":
        return ("sample", a["image"], a["region"], float(a.get("defaultValue", 0.0)))
    raise _EEError(f"the parity fake Earth Engine does not know {name!r}")


def install(
    seed: int,
    log: Callable[[str, np.ndarray], None] | None = None,
    setattr_: Callable[[Any, str, Any], None] = setattr,
) -> None:
    """Replace the ``ee`` network boundary in this process by the fake (see the module docstring).

    ``log(label, array)`` is called with every pixel array served (for the
    harness's raw-pixel hashes); ``setattr_`` applies the patches (a test
    passes pytest's ``monkeypatch.setattr`` to have them undone).
    """
    import os

    import ee
    from ee import apitestcase

    if not os.environ.get("EE_PROJECT"):
        os.environ["EE_PROJECT"] = "parity-fake"
    real_initialize = ee.Initialize

    def initialize(credentials: Any = "persistent", url: Any = None, cloud_api_key: Any = None,
                   http_transport: Any = None, project: Any = None) -> None:  # fmt: skip
        real_initialize(None, "", project=project or "parity-fake")

    def serve(img: _Img, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        years = img.coll.years()
        if not years:
            raise _EEError("Image.select: Pattern 'A00' did not match any bands.")
        scale = float(img.scale or 10.0)
        vals, masked = world_values(seed, max(years), r0, c0, h, w, scale)
        idx = [GSE_BANDS.index(b) for b in img.bands]
        out = vals[idx]
        if log is not None:
            log(f"r{r0} c{c0} {h}x{w}@{scale:g}m", np.where(masked[None], np.nan, out))
        return out, masked

    def compute_value(obj: Any) -> Any:
        try:
            val = _run(ee.serializer.encode(obj, for_cloud_api=True))
            if isinstance(val, tuple) and val and val[0] == "sample":
                _, img, region, default = val
                scale = float(img.scale or 10.0)
                r0, c0, h, w = lattice_window(region, scale)
                if h * w > SAMPLE_MAX_PIXELS:
                    raise _EEError(
                        f"Image.sampleRectangle: Too many pixels in sample; must be <= {SAMPLE_MAX_PIXELS}. Got {h * w}."
                    )
                out, masked = serve(img, r0, c0, h, w)
                out = np.where(masked[None], np.float32(default), out)
                props = {b: out[i].astype(np.float64).tolist() for i, b in enumerate(img.bands)}
                return {"type": "Feature", "geometry": None, "properties": props}
            if isinstance(val, (_Coll, _Img)):
                raise _EEError("the parity fake returns no collection or image descriptions")
            return val
        except _EEError as exc:
            raise ee.EEException(str(exc)) from None

    def compute_pixels(params: dict[str, Any]) -> np.ndarray:
        try:
            if params.get("fileFormat") != "NUMPY_NDARRAY":
                raise _EEError(f"the parity fake serves NUMPY_NDARRAY only, not {params.get('fileFormat')!r}")
            img = _run(ee.serializer.encode(params["expression"], for_cloud_api=True))
            if not isinstance(img, _Img):
                raise _EEError("computePixels needs an image expression")
            grid = params["grid"]
            t, dims = grid["affineTransform"], grid["dimensions"]
            s = float(t["scaleX"])
            if grid.get("crsCode") != "EPSG:3857" or t["shearX"] or t["shearY"] or t["scaleY"] != -s:
                raise _EEError(f"the parity fake serves north-up EPSG:3857 grids only; got {json.dumps(grid)}")
            c0, r0 = round(t["translateX"] / s), round(-t["translateY"] / s)
            img.scale = s
            h, w = int(dims["height"]), int(dims["width"])
            out, masked = serve(img, r0, c0, h, w)
            if img.fill is not None:
                out = np.where(masked[None], np.float32(img.fill), out)
            else:
                out = np.where(masked[None], np.float32(0.0), out)
            arr = np.empty((h, w), dtype=[(b, "<f4" if img.float else "<f8") for b in img.bands])
            for i, b in enumerate(img.bands):
                arr[b] = out[i]
            return arr
        except _EEError as exc:
            raise ee.EEException(str(exc)) from None

    setattr_(ee, "Initialize", initialize)
    setattr_(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    setattr_(ee.data, "_install_cloud_api_resource", lambda: None)
    setattr_(ee.data, "computeValue", compute_value)
    setattr_(ee.data, "computePixels", compute_pixels)
