"""The ROI plan and the deterministic pixels both fake providers serve.

numpy only: this module is imported by both sides, in two environments.

The fake world is a function of the lattice of the common grid (EPSG:3857 at
the fetch scale): a pixel's value depends on the seed, the band, the requested
time window (a composite: the whole window; a frame: its bin) and the pixel's
row and column only.  Each side's provider serves the window it is asked for,
so both return the same array for the same window whatever the order or the
batching of the calls, and overlapping arrays where the two packages ask for
different windows of the same ROI (rs-embed enlarges rectangles to squares).

Most ROIs are ``PointBuffer`` squares (centre, half side ``px * scale_m / 2``)
that both packages map to exactly ``px x px`` pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BAND_ALIASES",
    "S2_BANDS",
    "Case",
    "Plan",
    "Roi",
    "canonical_band",
    "lattice_window",
    "mercator",
    "sha256_f32",
    "spatial_bounds",
    "world_pixels",
]

#: Sentinel-2 L2A bands the fake providers know.
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")

#: Semantic band names (rs-embed's Prithvi asks for these) -> Sentinel-2 names.
BAND_ALIASES = {
    "BLUE": "B2", "GREEN": "B3", "RED": "B4", "NIR": "B8", "NIR_BROAD": "B8", "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A", "NIRN": "B8A", "RE4": "B8A", "RED_EDGE_4": "B8A",
    "RE1": "B5", "RED_EDGE_1": "B5", "RE2": "B6", "RED_EDGE_2": "B6", "RE3": "B7", "RED_EDGE_3": "B7",
    "SWIR1": "B11", "SWIR_1": "B11", "SWIR2": "B12", "SWIR_2": "B12",
}  # fmt: skip

# Typical surface-reflectance levels (DN) of vegetated land, per band.
_LEVEL = {
    "B1": 1100.0, "B2": 900.0, "B3": 1100.0, "B4": 1000.0, "B5": 1500.0, "B6": 2300.0,
    "B7": 2600.0, "B8": 2800.0, "B8A": 2900.0, "B9": 3000.0, "B11": 2100.0, "B12": 1300.0,
    # MODIS (satvision's proxy): MOD09GA surface reflectance x 10000, MOD21A1D LST_1KM in K / 0.02
    "SUR_REFL_B01": 1000.0, "SUR_REFL_B02": 2800.0, "SUR_REFL_B03": 900.0, "SUR_REFL_B04": 1100.0,
    "SUR_REFL_B06": 2100.0, "SUR_REFL_B07": 1300.0, "LST_1KM": 14500.0,
}  # fmt: skip

#: Sentinel-1 GRD polarisations the fake providers know: typical backscatter in dB
#: (served in linear power, as ``COPERNICUS/S1_GRD_FLOAT``; see :func:`world_pixels`).
S1_LEVEL_DB = {"VV": -9.0, "VH": -16.0}


_R = 6378137.0


def mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:3857 ``(x, y)`` of a WGS84 point (spherical, latitude clamped as Web Mercator does)."""
    lat = max(-85.05112878, min(85.05112878, lat))
    return _R * math.radians(lon), _R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def _mercator_box(lon: float, lat: float, half_w: float, half_h: float) -> tuple[float, float, float, float]:
    """The lon/lat box of the EPSG:3857 rectangle ``(x +- half_w, y +- half_h)`` around ``(lon, lat)``."""
    x, y = mercator(lon, lat)

    def inv(xx: float, yy: float) -> tuple[float, float]:
        return math.degrees(xx / _R), math.degrees(2 * math.atan(math.exp(yy / _R)) - math.pi / 2)

    (lon0, lat0), (lon1, lat1) = inv(x - half_w, y - half_h), inv(x + half_w, y + half_h)
    return lon0, lat0, lon1, lat1


def canonical_band(name: str) -> str:
    """The Sentinel-2 name of ``name`` (an S2 name or a semantic alias); ``KeyError`` otherwise."""
    up = str(name).strip().upper()
    up = BAND_ALIASES.get(up, up)
    if up not in _LEVEL and up not in S1_LEVEL_DB:
        raise KeyError(f"the parity providers know no band {name!r}")
    return up


def sha256_f32(arr: Any) -> str:
    """sha256 of the C-order float32 bytes of ``arr`` (first 16 hex digits)."""
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


def _seed(*parts: Any) -> int:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: well-spread uint64 from uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """A uniform [0, 1) value per lattice pixel (a hash of its row, column and ``key``)."""
    with np.errstate(over="ignore"):
        r = rows.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        c = cols.astype(np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h = _mix(r ^ _mix(c ^ np.uint64(key & (2**64 - 1))))
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def world_pixels(
    seed: int, bands: Sequence[str], start: str, end: str,
    row0: int, col0: int, height: int, width: int, scale_m: float,
) -> np.ndarray:  # fmt: skip
    """Sentinel-2-like digital numbers ``(C, H, W)`` float32 of a window of the common grid.

    The value of a pixel is a function of the seed, the band, the requested
    time window and the pixel's position on the EPSG:3857 lattice at
    ``scale_m`` (row ``row0 + i``, column ``col0 + j``) only, so two requests
    for overlapping windows agree where they overlap, whichever ROI asked.

    Parameters
    ----------
    seed : int
        The harness seed.
    bands : sequence of str
        Band names (S2 names or aliases, see :data:`BAND_ALIASES`).
    start, end : str
        The requested time window (ISO dates, end exclusive): a composite's
        whole window or one frame's bin.
    row0, col0, height, width : int
        The window on the lattice.
    scale_m : float
        Lattice pixel size (m).

    Returns
    -------
    numpy.ndarray
        Integer-valued float32 DN: smooth fields around each band's typical
        level, pixel noise, and small saturated patches above 10000 (so that
        both sides' clipping is exercised).  Sentinel-1 bands (``VV``, ``VH``)
        are linear backscatter instead: ``10 ** (dB / 10)`` of a smooth dB
        field around the band's level with speckle-like noise, not rounded,
        with small no-data patches of ``0``.
    """
    rows, cols = np.meshgrid(np.arange(row0, row0 + height), np.arange(col0, col0 + width), indexing="ij")
    out = np.empty((len(bands), height, width), dtype=np.float32)
    for i, band in enumerate(bands):
        name = canonical_band(band)
        key = _seed(seed, name, start, end, scale_m)
        rng = np.random.default_rng(key)
        field = np.zeros((height, width))
        for _ in range(4):
            fy, fx = rng.uniform(-1.5, 1.5, size=2)
            phase = rng.uniform(0, 2 * math.pi)
            field += rng.uniform(0.5, 1.0) * np.sin(2 * math.pi * (fy * (rows % 6400) + fx * (cols % 6400)) / 64 + phase)
        if name in S1_LEVEL_DB:
            db = S1_LEVEL_DB[name] + 2.0 * field + 3.0 * (_uniform(rows, cols, key) - 0.5)
            nodata = _uniform(rows // 6, cols // 6, key ^ 0x5A5A5A5A) < 0.004
            out[i] = np.where(nodata, 0.0, 10.0 ** (db / 10.0))
            continue
        level = _LEVEL[name] * rng.uniform(0.8, 1.2)
        noise = (_uniform(rows, cols, key) - 0.5) * (0.05 * level * math.sqrt(12.0))
        img = level * (1.0 + 0.2 * field) + noise
        patch = _uniform(rows // 6, cols // 6, key ^ 0x5A5A5A5A) < 0.004
        img = np.where(patch, 10200.0 + 1800.0 * _uniform(rows // 6, cols // 6, key ^ 0x0F0F), img)
        out[i] = np.clip(np.round(img), 0.0, 15000.0)
    return out


def s1_units(arr: np.ndarray, linear: bool) -> np.ndarray:
    """Linear S1 backscatter as served (``linear``), else in dB (``COPERNICUS/S1_GRD``; no-data stays 0)."""
    if linear:
        return arr
    with np.errstate(divide="ignore"):
        return np.where(arr > 0, 10.0 * np.log10(np.maximum(arr, 1e-30)), 0.0).astype(np.float32)


def spatial_bounds(spatial: Any) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` in EPSG:3857 of a ``PointBuffer`` or ``BBox`` of either package."""
    if hasattr(spatial, "buffer_m"):
        x, y = mercator(float(spatial.lon), float(spatial.lat))
        b = float(spatial.buffer_m)
        return x - b, y - b, x + b, y + b
    x0, y0 = mercator(float(spatial.minlon), float(spatial.minlat))
    x1, y1 = mercator(float(spatial.maxlon), float(spatial.maxlat))
    return x0, y0, x1, y1


def _first_index(v: float, tol: float) -> int:
    k = round(v)
    return int(k) if abs(v - k) <= tol else math.ceil(v)


def lattice_window(bounds: tuple[float, float, float, float], scale_m: float) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)``: the lattice pixels whose centres lie in ``bounds``.

    The rule of our ``rs_embed_dask.geometry.grid_window`` (re-stated here so that
    the rs-embed side, which cannot import our package, serves the same window
    for the same ROI).
    """
    s = float(scale_m)
    minx, miny, maxx, maxy = bounds
    tol = max(1e-9, 1e-6 / s)
    c0, c1 = _first_index(minx / s - 0.5, tol), _first_index(maxx / s - 0.5, tol)
    r0, r1 = _first_index(-maxy / s - 0.5, tol), _first_index(-miny / s - 0.5, tol)
    if c1 <= c0:
        c0 = math.floor((minx + maxx) / 2.0 / s)
        c1 = c0 + 1
    if r1 <= r0:
        r0 = math.floor(-(miny + maxy) / 2.0 / s)
        r1 = r0 + 1
    return r0, c0, r1 - r0, c1 - c0


@dataclass(frozen=True)
class Roi:
    """A square ROI: centre (WGS84), side in pixels and fetch scale.

    ``bbox``: the ROI is that ``BBox`` (minlon, minlat, maxlon, maxlat)
    instead of a ``PointBuffer``: a box on product pixel edges (products), or
    (``rect_h`` set) a rectangle ``rect_h x px`` pixels centred on ``(lon,
    lat)`` that both packages enlarge to the ``px x px`` square around it
    before fetching and crop back to afterwards.
    """

    name: str
    lon: float
    lat: float
    px: int
    scale_m: int
    bbox: tuple[float, float, float, float] | None = None
    rect_h: int | None = None

    @property
    def buffer_m(self) -> float:
        """Half side in (Web-Mercator) metres, as ``PointBuffer.buffer_m``."""
        return self.px * self.scale_m / 2.0


@dataclass(frozen=True)
class Case:
    """One comparison: a model, an output, ROIs, an ``input_prep`` and the API call used.

    ``call`` is ``"single"`` (``get_embedding`` on the one ROI) or
    ``"batch"`` (``get_embeddings_batch`` on all ROIs).  ``input_prep`` is
    ``None`` (each package's default) or ``"resize"``.  ``year`` (products)
    replaces the plan's range by ``TemporalSpec.year(year)``, ``window`` by
    ``TemporalSpec.range(*window)``.
    """

    id: str
    model: str
    output: str
    rois: tuple[str, ...]
    input_prep: str | None
    call: str
    year: int | None = None
    window: tuple[str, str] | None = None
    modality: str | None = None


@dataclass
class Plan:
    """Everything both sides need to run the same requests.

    Attributes
    ----------
    seed : int
        Seeds the pixels (and, elsewhere, the weights).
    start, end : str
        The temporal window of every request (``TemporalSpec.range``).
    rois : dict
        ROI name -> :class:`Roi`.
    cases : list of Case
    """

    seed: int
    start: str
    end: str
    rois: dict[str, Roi]
    cases: list[Case]

    def to_json(self, path: str | Path) -> None:
        """Write the plan as JSON."""
        doc = {
            "seed": self.seed,
            "start": self.start,
            "end": self.end,
            "rois": [asdict(r) for r in self.rois.values()],
            "cases": [asdict(c) for c in self.cases],
        }
        Path(path).write_text(json.dumps(doc, indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> Plan:
        """Read a plan written by :meth:`to_json`."""
        doc = json.loads(Path(path).read_text())
        rois = {r["name"]: Roi(**{**r, "bbox": tuple(r["bbox"]) if r.get("bbox") else None}) for r in doc["rois"]}
        cases = [
            Case(**{**c, "rois": tuple(c["rois"]), "window": tuple(c["window"]) if c.get("window") else None})
            for c in doc["cases"]
        ]
        return cls(seed=int(doc["seed"]), start=doc["start"], end=doc["end"], rois=rois, cases=cases)

    def find_roi(self, lon: float, lat: float, half_side_m: float | None = None, *, tol_deg: float = 1e-6) -> Roi:
        """The ROI centred at ``(lon, lat)`` within ``tol_deg`` (and of half side ``half_side_m`` when given).

        Raises ``LookupError`` when no ROI of the plan is there: a request the
        harness did not plan (e.g. a package enlarged the ROI).
        """
        best, best_d = None, math.inf
        for r in self.rois.values():
            if half_side_m is not None and abs(r.buffer_m - half_side_m) > 1e-3 * r.buffer_m + 1e-6:
                continue
            d = math.hypot(r.lon - lon, r.lat - lat)
            if d < best_d:
                best, best_d = r, d
        if best is None or best_d > tol_deg:
            raise LookupError(f"no planned ROI at lon={lon}, lat={lat}, half side={half_side_m}")
        return best

    def pixels(self, roi: Roi, bands: Iterable[str], start: str, end: str) -> np.ndarray:
        """The pixels of the window of ``roi`` (its ``PointBuffer`` or ``BBox``) for ``bands`` over ``[start, end)``."""
        if roi.bbox:
            x0, y0 = mercator(roi.bbox[0], roi.bbox[1])
            x1, y1 = mercator(roi.bbox[2], roi.bbox[3])
            bounds = (x0, y0, x1, y1)
        else:
            x, y = mercator(roi.lon, roi.lat)
            bounds = (x - roi.buffer_m, y - roi.buffer_m, x + roi.buffer_m, y + roi.buffer_m)
        r0, c0, h, w = lattice_window(bounds, roi.scale_m)
        return world_pixels(self.seed, list(bands), start, end, r0, c0, h, w, roi.scale_m)


#: Extra time windows per model: Prithvi's frame count follows the window on both sides
#: (rs-embed: clamp(days // 28, 1, 4) frames, one composite below 56 days).
WINDOWS: dict[str, tuple[tuple[tuple[str, str], int], ...]] = {
    "prithvi": ((("2022-06-01", "2022-08-01"), 61), (("2022-06-01", "2022-07-01"), 30)),
}


def build_plan(
    seed: int,
    models: Mapping[str, int],
    *,
    sizes: Sequence[int] = (224, 128, 300),
    native: Mapping[str, int] | None = None,
    start: str = "2022-01-01",
    end: str = "2023-01-01",
    quick: bool = False,
    products: Mapping[str, int] | None = None,
) -> Plan:
    """The ROIs and cases of a run.

    Parameters
    ----------
    seed : int
        Pixel seed.
    models : mapping
        Model id -> its default fetch scale (m).
    sizes : sequence of int
        ROI sides in pixels; the first is the model's native input size.
    native : mapping, optional
        Model id -> native input size, replacing ``sizes[0]``.
    start, end : str
        Temporal window (a year: four 91-day frames for Prithvi on both sides).
    quick : bool
        Only the native size and the largest one, single calls.
    products : mapping, optional
        Precomputed product -> the year it covers: ROIs of 80 and 240 km
        (several product pixels), pooled and grid, single and batch calls.

    Returns
    -------
    Plan
    """
    rois: dict[str, Roi] = {}
    cases: list[Case] = []
    from parity import families

    native = {**families.native(), **(native or {})}
    # a family's WINDOW replaces the plan's window for its model's cases; its WINDOWS add cases
    default_window = {m: w for fam in families.families() for m, w in getattr(fam, "WINDOW", {}).items()}
    extra_windows = {**WINDOWS, **{m: w for fam in families.families() for m, w in getattr(fam, "WINDOWS", {}).items()}}

    def roi_for(px: int, scale: int) -> Roi:
        name = f"r{px}_s{scale}"
        if name not in rois:
            k = len(rois)
            rois[name] = Roi(name, round(8.5 + 0.05 * k, 6), round(47.3 + 0.03 * k, 6), px, scale)
        return rois[name]

    for model, scale in models.items():
        px_list = list(sizes)
        if native and model in native:
            px_list[0] = native[model]
        if quick:
            px_list = [px_list[0], max(px_list)]
        for output in ("pooled", "grid"):
            for i, px in enumerate(px_list):
                r = roi_for(px, scale)
                preps: tuple[str | None, ...] = (None,) if i == 0 else (None, "resize")
                for prep in preps:
                    cases.append(
                        Case(f"{model}/{output}/{px}px/{prep or 'default'}/single", model, output, (r.name,), prep, "single")
                    )
            # rectangles: one that fits a tile once squared, one whose square is tiled (largest size)
            for w in sorted({px_list[0], max(px_list)}):
                h = round(0.625 * w)
                name = f"rect{h}x{w}_s{scale}"
                if name not in rois:
                    k = len(rois)
                    lon, lat = round(8.5 + 0.05 * k, 6), round(47.3 + 0.03 * k, 6)
                    box = _mercator_box(lon, lat, w * scale / 2, h * scale / 2)
                    rois[name] = Roi(name, lon, lat, w, scale, box, h)
                cases.append(Case(f"{model}/{output}/{h}x{w}px-rect/default/single", model, output, (name,), None, "single"))
            for win, days in extra_windows.get(model, ()):
                r = roi_for(px_list[0], scale)
                cases.append(Case(f"{model}/{output}/{px_list[0]}px/default/single/{days}d", model, output,
                                  (r.name,), None, "single", None, win))  # fmt: skip
            if not quick:
                names = tuple(roi_for(px, scale).name for px in px_list)
                cases.append(Case(f"{model}/{output}/{'+'.join(str(p) for p in px_list)}px/default/batch",
                                  model, output, names, None, "batch"))  # fmt: skip
    for model, mods in families.modalities().items():  # the same calls again with modality=
        if model not in models:
            continue
        scale = models[model]
        for mod, px0 in mods.items():
            px_mod = [px0, max(sizes)] if quick else [px0, *sizes[1:]]
            for output in ("pooled", "grid"):
                for i, px in enumerate(px_mod):
                    r = roi_for(px, scale)
                    for prep in (None,) if i == 0 else (None, "resize"):
                        cases.append(Case(f"{model}/{output}/{px}px/{prep or 'default'}/single/{mod}", model,
                                          output, (r.name,), prep, "single", modality=mod))  # fmt: skip
                if not quick:
                    names = tuple(roi_for(px, scale).name for px in px_mod)
                    cases.append(Case(f"{model}/{output}/{'+'.join(str(p) for p in px_mod)}px/default/batch/{mod}",
                                      model, output, names, None, "batch", modality=mod))  # fmt: skip
    for model, year in (products or {}).items():
        if model != "copernicus":  # gse, tessera: their own ROIs (parity/products.py)
            from parity.products import product_cases

            product_cases(model, year, rois, cases)
            continue
        # a BBox on product pixel edges (lon -180 + k/4, lat 90.125 - k/4: 4 x 3 pixels) and two PointBuffers
        rois["bbox_aligned"] = Roi("bbox_aligned", 8.5, 47.5, 0, 0, (8.0, 47.125, 9.0, 47.875))
        names = ("bbox_aligned", roi_for(8, 10_000).name, roi_for(24, 10_000).name)
        for output in ("pooled", "grid"):
            for name in names:
                label = "aligned-bbox" if name == "bbox_aligned" else f"{rois[name].px * 10}km"
                cases.append(Case(f"{model}/{output}/{label}/default/single", model, output, (name,), None, "single", year))
            cases.append(Case(f"{model}/{output}/all/default/batch", model, output, names, None, "batch", year))
    cases = [replace(c, window=default_window[c.model]) if c.model in default_window and not (c.window or c.year)
             else c for c in cases]  # fmt: skip
    return Plan(seed=seed, start=start, end=end, rois=rois, cases=cases)
