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
import threading
import time
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ProviderError, SpecError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import GridWindow, mercator_to_lonlat
from rs_embed_dask.providers._noise import NoiseBatch, Workspace, octave_fields, raw_level, workspace
from rs_embed_dask.providers._noise import fbm as _fbm
from rs_embed_dask.providers._noise import value_noise as _value_noise
from rs_embed_dask.providers.base import Provider, ProviderOption

__all__ = ["S1_BANDS", "S2_BANDS", "SyntheticProvider"]

#: Sentinel-2 L2A bands in rs-embed's canonical order.
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
# The world is computed, not downloaded: renders of one process take turns.  Their many small
# numpy steps release and retake the GIL at each call, so concurrent renders (an export runs
# dozens of fetches at once) only handed the GIL around, starving the inference thread beside them.
_RENDER_LOCK = threading.Lock()

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


def _row_lats(ys: np.ndarray) -> np.ndarray:
    """Latitude (degrees) of each pixel row's centre."""
    return np.degrees(2.0 * np.arctan(np.exp(ys / 6378137.0)) - np.pi / 2.0)


def _class_lut() -> np.ndarray:
    """Class per 7-bit code of the land-cover tests (see ``SyntheticProvider._cover``)."""
    lut = np.empty(128, dtype=np.int8)
    for code in range(128):
        snow, water, dry, wet, low_use, high_use, some_use = ((code >> k) & 1 for k in range(6, -1, -1))
        cls = 1 if some_use else 2  # cropland, else grassland
        cls = 3 if wet else cls  # forest
        cls = 5 if low_use else cls  # bare
        cls = 4 if high_use and dry else cls  # urban
        cls = 0 if water else cls
        lut[code] = 6 if snow and cls != 0 else cls
    return lut


_CLASS_LUT = _class_lut()
_CLASS_LUT_INTP = _CLASS_LUT.astype(np.intp)
# moisture and land use are 3-octave fractal noise: their undivided sums over this norm,
# tested against these levels, give the same answers as the noise against the class thresholds
_COVER_NORM = sum(f[2] for f in octave_fields(1.0, 0))
_COVER_LEVELS = tuple(
    (field, np.greater if above else np.less, raw_level(level, _COVER_NORM, above=above))
    for field, above, level in (
        ("moist", False, -0.45), ("moist", False, 0.1), ("moist", True, 0.25),
        ("use", False, -0.45), ("use", True, 0.5), ("use", True, 0.15),
    )
)  # fmt: skip


@lru_cache(maxsize=256)
def _dn_table(
    bands: tuple[int, ...], row_off: int, height: int, scale_m: float, doy: int
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """DN before texture, per band, pixel row and class ``(C, H, K)``.

    Vegetated classes get ``spectrum * (1 + gain * (nir - 0.6 red))`` with a
    seasonal gain per pixel row (not per window, so neighbouring ROIs agree on
    shared pixels; its amplitude vanishes at the equator, where the hemisphere
    sign flips: peak mid-July in the north, mid-January in the south); the others
    their spectrum.  Also returns the DN per band and land-cover code ``(C, 128)``
    when every row has the same (as beyond 30 degrees of latitude; else ``None``),
    and whether the DN leave room for the texture (``|texture| <= 0.1``) within
    ``[0, 10000]`` (then clipping the image changes nothing).
    """
    _, ys = GridWindow(0, row_off, 0, height, scale_m).pixel_centers()
    lats = _row_lats(ys)
    phase = 2 * math.pi * (doy - 196) / 365.25
    season = np.where(lats >= 0, math.cos(phase), -math.cos(phase))
    amp = 0.25 * np.minimum(1.0, np.abs(lats) / 30.0)
    row_gain = (amp * season).astype(np.float32)  # (H,)
    idx = list(bands)
    gain = 1.0 + row_gain[None, :] * (_NIR_LIKE[idx] - 0.6 * _RED_LIKE[idx])[:, None]  # (C, H)
    veg = _VEGETATED.astype(bool)[None, None, :]
    table = _SPECTRA[:, idx].T[:, None, :] * np.where(veg, gain[:, :, None], np.float32(1.0))  # (C, H, K)
    by_code = table[:, 0, :][:, _CLASS_LUT] if height and (row_gain == row_gain[0]).all() else None
    for a in (table, by_code):
        if a is not None:
            a.flags.writeable = False
    in_range = table.size == 0 or bool(table.min() >= 0.0 and table.max() * 1.11 <= 10000.0)
    return table, by_code, in_range


@lru_cache(maxsize=512)
def _cloud_threshold(cseed: int, frac: float) -> float:
    """The cloud field's ``1 - frac`` quantile, estimated on a fixed 64 x 64 sample of the world."""
    if frac >= 1:
        return -2.0
    grid = np.linspace(0, 3e5, 64)
    return float(np.quantile(_fbm(grid, grid, 3000.0, cseed), 1.0 - frac))


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
        with workspace() as ws:
            code = self._cover(NoiseBatch(xs, ys, self._cover_fields()), xs, ys, ws)
            return _CLASS_LUT.take(code)

    def _cover_fields(self) -> list[tuple[float, int, float]]:
        return octave_fields(6000.0, self.seed) + octave_fields(2500.0, self.seed + 7)  # moisture, land use

    def _cover(self, batch: NoiseBatch, xs: np.ndarray, ys: np.ndarray, ws: Workspace) -> np.ndarray:
        """7-bit code per pixel of the land-cover tests (a ``ws`` buffer); :data:`_CLASS_LUT` maps it to classes.

        ``batch`` starts with :meth:`_cover_fields`.  From the high bit: snow, water
        (moist < -0.45), dry (moist < 0.1), wet (moist > 0.25), low use (< -0.45),
        high use (> 0.5), some use (> 0.15).
        """
        shape = (ys.size, xs.size)
        moist, use = ws.get("moist", shape), ws.get("use", shape)
        tmp, tmp2 = ws.get("tmp", shape), ws.get("tmp2", shape)
        # undivided sums, tested against the equivalent levels (_COVER_LEVELS)
        batch.fbm_into(0, 3, moist, tmp, tmp2, normalize=False)
        batch.fbm_into(3, 3, use, tmp, tmp2, normalize=False)
        code, bit = ws.get("code", shape, np.uint8), ws.get("bit", shape, np.bool_)
        bit8 = bit.view(np.uint8)  # True is 1
        _, lat0 = mercator_to_lonlat(0.0, float(ys.max()))
        _, lat1 = mercator_to_lonlat(0.0, float(ys.min()))
        if max(abs(lat0), abs(lat1)) > 60.0:
            np.divide(moist, _COVER_NORM, out=tmp)  # the moisture field itself
            tmp *= 8.0
            tmp += np.abs(_row_lats(ys))[:, None]
            np.greater(tmp, 68.0, out=bit)
            np.copyto(code, bit8)
        else:
            code.fill(0)
        for field, op, level in _COVER_LEVELS:
            np.add(code, code, out=code)  # shift left
            op(moist if field == "moist" else use, level, out=bit)
            code |= bit8
        return code

    def render(
        self, window: GridWindow, dates: tuple[date, date] | None, band_idx: list[int]
    ) -> np.ndarray:
        """``(C, H, W)`` float32 DN for the window, composited over ``dates``."""
        xs, ys = window.pixel_centers()
        bands = list(band_idx)
        # seasonal vegetation cycle: peak mid-July in the north, mid-January in the south
        if dates is not None:
            mid = dates[0] + (dates[1] - dates[0]) / 2
            doy = mid.timetuple().tm_yday
        else:
            doy = 196
        table, by_code, in_range = _dn_table(tuple(bands), window.row_off, window.height, float(window.scale_m), doy)
        fields = [*self._cover_fields(), (40.0, self.seed + 3, 1.0), *octave_fields(600.0, self.seed + 5, 2)]
        clouds = self.cloud_fraction > 0 and dates is not None
        if clouds and dates is not None:
            n_scenes = max(1, (dates[1] - dates[0]).days // 5)
            frac = self.cloud_fraction ** min(n_scenes, 6) if n_scenes > 1 else self.cloud_fraction
            cseed = self.seed + 1000 + dates[0].toordinal()
            fields += octave_fields(3000.0, cseed)
        batch = NoiseBatch(xs, ys, fields)
        with workspace() as ws:
            shape = (ys.size, xs.size)
            code = self._cover(batch, xs, ys, ws)
            if by_code is not None:
                img = np.take(by_code, code, axis=1, mode="clip")  # (C, H, W)
            else:
                idx = np.take(_CLASS_LUT_INTP, code, out=ws.get("idx", shape, np.intp), mode="clip")  # codes < 128
                idx += (np.arange(ys.size) * len(CLASSES))[:, None]
                img = np.take(table.reshape(len(bands), -1), idx, axis=1, mode="clip")
            tex, tmp, tmp2, fbm = ws.get("tex", shape), ws.get("tmp", shape), ws.get("tmp2", shape), ws.get("use", shape)
            batch.noise_into(6, tex, tmp)
            tex *= 0.04
            batch.fbm_into(7, 2, fbm, tmp, tmp2)
            fbm *= 0.06
            tex += fbm
            tex32 = ws.get("tex32", shape, np.float32)
            np.add(tex, 1.0, out=tex32)
            img *= tex32
            if clouds:
                cloud = batch.fbm_into(9, 3, ws.get("moist", shape), tmp, tmp2)
                mask = np.greater(cloud, _cloud_threshold(cseed, frac), out=ws.get("mask", shape, np.bool_))
                np.copyto(img, _CLOUD[bands][:, None, None], where=mask)
        if not in_range:  # (cloud DN are within [0, 10000])
            np.clip(img, 0.0, 10000.0, out=img)
        return img

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
            with _RENDER_LOCK:
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
        with _RENDER_LOCK:
            if sar:
                data = self.render_sar(window, sar, linear=sensor.use_float_linear)
            else:
                data = self.render(window, dates, band_idx)
        meta = {
            "composite": sensor.composite,
            "date_window": [dates[0].isoformat(), dates[1].isoformat()] if dates else None,
        }
        return data, meta
