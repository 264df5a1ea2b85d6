"""``synthetic``: a deterministic, georeferenced Sentinel-2-like world.

Every pixel value is a pure function of its centre on the common grid (and of
the date window), so neighbouring ROIs agree on their shared pixels and the
same request gives the same bytes in any process.  The world has land cover
(water, cropland, grassland, forest, urban, bare soil, snow at high
latitudes) from multi-octave value noise in metres, per-class Sentinel-2 L2A
spectra in digital numbers (0..10000), a seasonal vegetation cycle that flips
between hemispheres, pixel texture and optional clouds; Sentinel-1 ``VV`` /
``VH`` backscatter of the same land cover (linear power, or dB with
``SensorSpec(use_float_linear=False)``, as Earth Engine's two S1 GRD
collections).  Knobs for latency,
failures and clouds make it the workload for the demo, the tests and the
benchmarks.  It is never used unless asked for by name.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import random
import time
from datetime import date
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ProviderError, SpecError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import GridWindow, mercator_to_lonlat
from rs_embed_dask.providers.base import Provider, ProviderOption

__all__ = ["S1_BANDS", "S2_BANDS", "SyntheticProvider"]

#: Sentinel-2 L2A bands in rs-embed's canonical order.
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
_ALIASES = {
    "BLUE": "B2", "GREEN": "B3", "RED": "B4", "NIR": "B8", "NIR_BROAD": "B8", "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A", "RE1": "B5", "RE2": "B6", "RE3": "B7", "RE4": "B8A",
    "RED_EDGE_1": "B5", "RED_EDGE_2": "B6", "RED_EDGE_3": "B7", "RED_EDGE_4": "B8A",
    "SWIR1": "B11", "SWIR_1": "B11", "SWIR2": "B12", "SWIR_2": "B12",
}  # fmt: skip

CLASSES = ("water", "cropland", "grassland", "forest", "urban", "bare", "snow")
# Typical S2 L2A surface reflectance x 10000, per class, in S2_BANDS order.
_SPECTRA = np.array(
    [
        [1100, 900, 800, 550, 500, 420, 400, 300, 280, 120, 90, 60],  # water
        [1200, 800, 1100, 900, 1500, 2700, 3100, 3300, 3400, 800, 2400, 1500],  # cropland
        [1250, 900, 1150, 1100, 1600, 2400, 2700, 2900, 3000, 800, 2700, 1800],  # grassland
        [1100, 600, 850, 550, 1000, 2300, 2800, 3000, 3100, 700, 1600, 800],  # forest
        [1400, 1300, 1400, 1500, 1650, 1800, 1900, 2000, 2050, 700, 2300, 2100],  # urban
        [1500, 1500, 1900, 2300, 2500, 2700, 2800, 2900, 3000, 900, 3600, 3000],  # bare
        [9000, 8800, 8700, 8500, 8300, 8000, 7800, 7500, 7300, 2500, 900, 700],  # snow
    ],
    dtype=np.float32,
)
#: Sentinel-1 GRD polarisations the synthetic world renders.
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: MODIS bands the synthetic world renders (rs-embed's SatVision proxy sources), per collection:
#: MOD09GA surface reflectance x 10000 (from the Sentinel-2 band of the nearest wavelength), and
#: MOD21A1D land-surface temperature in its raw units (kelvin / 0.02).
MODIS_REFLECTANCE: dict[str, str] = {
    "sur_refl_b01": "B4", "sur_refl_b02": "B8A", "sur_refl_b03": "B2", "sur_refl_b04": "B3",
    "sur_refl_b05": "B8A", "sur_refl_b06": "B11", "sur_refl_b07": "B12",
}  # fmt: skip
MODIS_COLLECTIONS: dict[str, tuple[str, ...]] = {
    "MODIS/061/MOD09GA": tuple(MODIS_REFLECTANCE),
    "MODIS/061/MOD21A1D": ("LST_1KM",),
}
# Typical land-surface temperature (K) per class, in CLASSES order.
_LST_K = np.array([288.0, 299.0, 301.0, 296.0, 306.0, 311.0, 266.0], dtype=np.float32)
# Typical C-band backscatter in dB, per class, in S1_BANDS order.
_SIGMA0_DB = np.array(
    [[-22.0, -28.0], [-11.0, -18.0], [-13.0, -20.0], [-8.0, -14.0], [-3.0, -10.0], [-15.0, -24.0], [-12.0, -20.0]],
    dtype=np.float32,
)
_VEGETATED = np.array([0, 1, 1, 1, 0, 0, 0], dtype=np.float32)
_NIR_LIKE = np.array([0, 0, 0, 0, 0.3, 0.8, 1, 1, 1, 0.5, 0, 0], dtype=np.float32)
_RED_LIKE = np.array([0, 0.5, 0.4, 1, 0.3, 0, 0, 0, 0, 0, 0.2, 0.3], dtype=np.float32)
_CLOUD = np.array([6500, 6800, 7000, 7100, 7200, 7200, 7300, 7300, 7300, 3500, 4500, 3500], dtype=np.float32)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer lattice point (splitmix64)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * _M1 ^ (iy.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * _M3) * _M2
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _value_noise(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the (ys x xs) grid of metre coordinates."""
    if xs.size == 0 or ys.size == 0:
        return np.zeros((ys.size, xs.size))
    gx = xs / cell_m
    gy = ys / cell_m
    ix0 = np.floor(gx).astype(np.int64)
    iy0 = np.floor(gy).astype(np.int64)
    fx = gx - ix0
    fy = gy - iy0
    sx = fx * fx * (3 - 2 * fx)
    sy = fy * fy * (3 - 2 * fy)
    # hash each lattice corner once (a cell spans many pixels) and interpolate along x on the
    # lattice rows; gathering those rows per pixel row then does the same arithmetic per pixel
    x_lo, y_lo = int(ix0.min()), int(iy0.min())
    lattice = _hash01(
        np.arange(x_lo, int(ix0.max()) + 2, dtype=np.int64)[None, :],
        np.arange(y_lo, int(iy0.max()) + 2, dtype=np.int64)[:, None],
        seed,
    )
    cols, rows = ix0 - x_lo, iy0 - y_lo
    left, right = lattice[:, cols], lattice[:, cols + 1]
    along_x = left + (right - left) * sx[None, :]  # (lattice rows, W)
    a = along_x[rows]
    b = along_x[rows + 1]
    return (a + (b - a) * sy[:, None]) * 2.0 - 1.0


def _fbm(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int, octaves: int = 3) -> np.ndarray:
    total = np.zeros((ys.size, xs.size))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * _value_noise(xs, ys, cell_m / (2**o), seed + 101 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def _band_key(band: str) -> str:
    key = str(band).strip().upper()
    key = _ALIASES.get(key, key)
    return "B11" if key == "B10" else key  # cirrus band: close enough to SWIR for a synthetic world


def _band_index(band: str) -> int:
    key = _band_key(band)
    if key not in S2_BANDS:
        raise ProviderError(
            f"synthetic provider has no band {band!r}; bands: {list(S2_BANDS)} or {list(S1_BANDS)} "
            f"(aliases {sorted(_ALIASES)})."
        )
    return S2_BANDS.index(key)


def _stable_hash(*parts: Any) -> float:
    digest = hashlib.sha1(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


class SyntheticProvider(Provider):
    """A deterministic Sentinel-2-like world on the common grid.

    Parameters
    ----------
    seed : int, default 0
        World seed.
    latency_s : float, default 0.0
        Sleep per fetch, to mimic a remote service.
    failure_rate : float, default 0.0
        Fraction of ROIs whose fetch always fails (deterministic per ROI window
        and seed) with :class:`ProviderError`.
    transient_failure_rate : float, default 0.0
        Probability that any single call fails with a retryable
        :class:`TransientProviderError` (HTTP 429-like).
    cloud_fraction : float, default 0.0
        Fraction of each scene covered by clouds; composites over longer
        windows see fewer clouds (a median of several scenes).
    """

    name = "synthetic"
    option_specs = (
        ProviderOption("seed", (numbers.Integral,), doc="world seed"),
        ProviderOption("latency_s", (numbers.Real,), minimum=0.0, doc="sleep per fetch"),
        ProviderOption("failure_rate", (numbers.Real,), minimum=0.0, maximum=1.0),
        ProviderOption("transient_failure_rate", (numbers.Real,), minimum=0.0, maximum=1.0),
        ProviderOption("cloud_fraction", (numbers.Real,), minimum=0.0, maximum=1.0),
    )

    @classmethod
    def check_sensor(cls, sensor: SensorSpec, options: Any = None) -> None:
        """Refuse bands the synthetic world does not render, listing those it does."""
        from rs_embed_dask.providers.composed import check_composed_bands, composed_collection

        if composed_collection(sensor.collection) is not None:
            check_composed_bands(sensor)
            return
        modis = MODIS_COLLECTIONS.get(str(sensor.collection).strip().upper())
        if modis is not None:
            unknown = [b for b in sensor.bands if b not in modis]
            if unknown:
                raise SpecError(
                    f"SensorSpec.bands: the synthetic provider has no band(s) {unknown} in {sensor.collection!r}; "
                    f"bands: {list(modis)}."
                )
            return
        names = [str(b).strip().upper() for b in sensor.bands]
        sar = [b for b in names if b in S1_BANDS]
        if sar and len(sar) != len(names):
            raise SpecError(
                f"SensorSpec.bands: the synthetic provider cannot mix Sentinel-1 bands {list(S1_BANDS)} "
                f"with optical bands in one sensor; got {list(sensor.bands)}."
            )
        if sar:
            return
        unknown = [b for b in sensor.bands if _band_key(b) not in S2_BANDS]
        if unknown:
            raise SpecError(
                f"SensorSpec.bands: the synthetic provider has no band(s) {unknown}; bands: "
                f"{list(S2_BANDS)} (and B10), aliases {sorted(_ALIASES)}, or Sentinel-1 {list(S1_BANDS)}."
            )

    def __init__(
        self,
        *,
        seed: int = 0,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        transient_failure_rate: float = 0.0,
        cloud_fraction: float = 0.0,
    ) -> None:
        for key, val in (
            ("failure_rate", failure_rate),
            ("transient_failure_rate", transient_failure_rate),
            ("cloud_fraction", cloud_fraction),
        ):
            if not 0.0 <= float(val) <= 1.0:
                raise ProviderError(f"synthetic provider option {key} must be in [0, 1]; got {val!r}")
        if float(latency_s) < 0:
            raise ProviderError(f"synthetic provider option latency_s must be >= 0; got {latency_s!r}")
        super().__init__(
            seed=seed,
            latency_s=latency_s,
            failure_rate=failure_rate,
            transient_failure_rate=transient_failure_rate,
            cloud_fraction=cloud_fraction,
        )
        self.seed = int(seed)
        self.latency_s = float(latency_s)
        self.failure_rate = float(failure_rate)
        self.transient_failure_rate = float(transient_failure_rate)
        self.cloud_fraction = float(cloud_fraction)

    # -- the world -----------------------------------------------------------------
    def land_cover(self, window: GridWindow) -> np.ndarray:
        """``(H, W)`` int class index into :data:`CLASSES` for the window."""
        xs, ys = window.pixel_centers()
        moist = _fbm(xs, ys, 6000.0, self.seed)
        use = _fbm(xs, ys, 2500.0, self.seed + 7)
        cls = np.full(moist.shape, 2, dtype=np.int8)  # grassland
        cls[use > 0.15] = 1  # cropland
        cls[moist > 0.25] = 3  # forest
        cls[use < -0.45] = 5  # bare
        cls[(use > 0.5) & (moist < 0.1)] = 4  # urban
        cls[moist < -0.45] = 0  # water
        _, lat0 = mercator_to_lonlat(0.0, float(ys.max()))
        _, lat1 = mercator_to_lonlat(0.0, float(ys.min()))
        if max(abs(lat0), abs(lat1)) > 60.0:
            lats = np.degrees(2.0 * np.arctan(np.exp(ys / 6378137.0)) - np.pi / 2.0)
            snow = (np.abs(lats)[:, None] + 8.0 * moist) > 68.0
            cls[snow & (cls != 0)] = 6
        return cls

    def render(
        self, window: GridWindow, dates: tuple[date, date] | None, band_idx: list[int]
    ) -> np.ndarray:
        """``(C, H, W)`` float32 DN for the window, composited over ``dates``."""
        cls = self.land_cover(window)
        xs, ys = window.pixel_centers()
        spectra = _SPECTRA[:, band_idx]  # (K, C)
        img = spectra[cls].transpose(2, 0, 1).astype(np.float32)  # (C, H, W)
        # seasonal vegetation cycle: peak mid-July in the north, mid-January in the south
        if dates is not None:
            mid = dates[0] + (dates[1] - dates[0]) / 2
            doy = mid.timetuple().tm_yday
        else:
            doy = 196
        # per pixel row (not per window), so neighbouring ROIs agree on shared pixels;
        # the amplitude vanishes at the equator, where the hemisphere sign flips
        lats = np.degrees(2.0 * np.arctan(np.exp(ys / 6378137.0)) - np.pi / 2.0)
        phase = 2 * math.pi * (doy - 196) / 365.25
        season = np.where(lats >= 0, math.cos(phase), -math.cos(phase))
        amp = 0.25 * np.minimum(1.0, np.abs(lats) / 30.0)
        row_gain = (amp * season).astype(np.float32)[None, :, None]  # (1, H, 1)
        veg = _VEGETATED[cls][None]  # (1, H, W)
        nir = _NIR_LIKE[band_idx][:, None, None]
        red = _RED_LIKE[band_idx][:, None, None]
        img *= 1.0 + veg * row_gain * (nir - 0.6 * red)
        texture = _value_noise(xs, ys, 40.0, self.seed + 3) * 0.04 + _fbm(xs, ys, 600.0, self.seed + 5, 2) * 0.06
        img *= (1.0 + texture).astype(np.float32)[None]
        if self.cloud_fraction > 0 and dates is not None:
            n_scenes = max(1, (dates[1] - dates[0]).days // 5)
            frac = self.cloud_fraction ** min(n_scenes, 6) if n_scenes > 1 else self.cloud_fraction
            cseed = self.seed + 1000 + dates[0].toordinal()
            cloud = _fbm(xs, ys, 3000.0, cseed)
            thresh = np.quantile(_fbm(np.linspace(0, 3e5, 64), np.linspace(0, 3e5, 64), 3000.0, cseed), 1.0 - frac) if frac < 1 else -2.0
            mask = (cloud > thresh)[None]
            img = np.where(mask, _CLOUD[band_idx][:, None, None], img)
        return np.clip(img, 0.0, 10000.0).astype(np.float32)

    def render_sar(self, window: GridWindow, bands: list[int], *, linear: bool = True) -> np.ndarray:
        """``(C, H, W)`` float32 Sentinel-1 backscatter (linear power, or dB) for the window."""
        cls = self.land_cover(window)
        xs, ys = window.pixel_centers()
        db = _SIGMA0_DB[:, bands][cls].transpose(2, 0, 1)  # (C, H, W)
        # speckle-like texture, deterministic in metres like the optical texture
        db = db + (_value_noise(xs, ys, 30.0, self.seed + 11) * 1.5 + _fbm(xs, ys, 500.0, self.seed + 13, 2))[None]
        return (10.0 ** (db / 10.0) if linear else db).astype(np.float32)

    def render_modis(self, window: GridWindow, dates: tuple[date, date] | None, bands: list[str]) -> np.ndarray:
        """``(C, H, W)`` float32 MODIS values: MOD09GA reflectance x 10000, MOD21A1D ``LST_1KM`` (K / 0.02)."""
        out = np.empty((len(bands), window.height, window.width), dtype=np.float32)
        refl = [b for b in bands if b in MODIS_REFLECTANCE]
        if refl:
            img = self.render(window, dates, [S2_BANDS.index(MODIS_REFLECTANCE[b]) for b in refl])
            for b, arr in zip(refl, img, strict=True):
                out[bands.index(b)] = arr
        if "LST_1KM" in bands:
            xs, ys = window.pixel_centers()
            lats = np.degrees(2.0 * np.arctan(np.exp(ys / 6378137.0)) - np.pi / 2.0)
            doy = (dates[0] + (dates[1] - dates[0]) / 2).timetuple().tm_yday if dates is not None else 196
            season = np.where(lats >= 0, 1.0, -1.0) * math.cos(2 * math.pi * (doy - 196) / 365.25)
            kelvin = (
                _LST_K[self.land_cover(window)]
                - 0.35 * np.maximum(np.abs(lats) - 20.0, 0.0)[:, None]
                + (8.0 * season * np.minimum(1.0, np.abs(lats) / 30.0))[:, None]
                + 1.5 * _fbm(xs, ys, 800.0, self.seed + 17, 2)
            )
            out[bands.index("LST_1KM")] = np.round(kelvin / 0.02).astype(np.float32)
        return out

    # -- the provider contract ---------------------------------------------------------
    def fetch_window(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[np.ndarray, dict[str, Any]]:
        modis = MODIS_COLLECTIONS.get(str(sensor.collection).strip().upper())
        if modis is not None:
            missing = [b for b in sensor.bands if b not in modis]
            if missing:
                raise ProviderError(f"synthetic provider has no band(s) {missing} in {sensor.collection!r}; bands: {list(modis)}.")
            meta = {"composite": sensor.composite,
                    "date_window": [dates[0].isoformat(), dates[1].isoformat()] if dates else None}  # fmt: skip
            return self.render_modis(window, dates, list(sensor.bands)), meta
        names = [str(b).strip().upper() for b in sensor.bands]
        sar = [S1_BANDS.index(b) for b in names if b in S1_BANDS]
        if sar and len(sar) != len(names):
            raise ProviderError(
                f"synthetic provider: one sensor cannot mix Sentinel-1 bands {list(S1_BANDS)} "
                f"with optical bands; got {list(sensor.bands)}."
            )
        band_idx = [] if sar else [_band_index(b) for b in sensor.bands]
        if self.latency_s:
            time.sleep(self.latency_s)
        if self.transient_failure_rate and random.random() < self.transient_failure_rate:
            raise TransientProviderError("synthetic provider: simulated HTTP 429 Too Many Requests", status=429)
        if self.failure_rate and _stable_hash(self.seed, window.col_off, window.row_off, window.scale_m) < self.failure_rate:
            raise ProviderError(
                f"synthetic provider: simulated fetch failure at window "
                f"(col_off={window.col_off}, row_off={window.row_off})"
            )
        if sar:
            data = self.render_sar(window, sar, linear=sensor.use_float_linear)
        else:
            data = self.render(window, dates, band_idx)
        meta = {
            "composite": sensor.composite,
            "date_window": [dates[0].isoformat(), dates[1].isoformat()] if dates else None,
        }
        return data, meta
