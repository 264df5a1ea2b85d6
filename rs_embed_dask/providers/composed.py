"""Collections served by composing bands of other collections (rs-embed's proxies).

rs-embed 0.3.1's SatVision-TOA reads the MODIS Level-1B collection
``MODIS/061/MOD021KM`` (14 bands, in SatVision's order), which Earth Engine
does not serve with its emissive brightness temperatures; rs-embed fetches
a proxy instead, from any provider: the six reflective bands from
``MODIS/061/MOD09GA`` surface reflectance (``sur_refl_b01, b02, b03, b04,
b06, b07``) and every emissive band from ``MODIS/061/MOD21A1D`` land-surface
temperature (``LST_1KM``).  :data:`MOD021KM_PROXY` states that mapping;
:meth:`rs_embed_dask.providers.base.Provider.fetch` serves a composed
collection by fetching each source collection once (its distinct bands, same
window, dates, scale, composite and fill) and placing the bands in the
requested order, in the sources' raw units (the model scales them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from rs_embed_dask.core.errors import ProviderError, SpecError
from rs_embed_dask.core.specs import SensorSpec

if TYPE_CHECKING:
    from rs_embed_dask.geometry import GridWindow
    from rs_embed_dask.providers.base import Provider

__all__ = [
    "MOD021KM_PROXY",
    "ComposedCollection",
    "check_composed_bands",
    "composed_collection",
    "fetch_composed",
]

MOD09GA = "MODIS/061/MOD09GA"
MOD21A1D = "MODIS/061/MOD21A1D"


@dataclass(frozen=True)
class ComposedCollection:
    """A collection whose bands are bands of other collections.

    Attributes
    ----------
    collection : str
        The collection id a sensor names.
    sources : mapping of str to (str, str)
        Each band -> ``(source collection, source band)``.
    note : str
        What the composition stands for (recorded in the fetch metadata).
    """

    collection: str
    sources: Mapping[str, tuple[str, str]]
    note: str


_LST = (MOD21A1D, "LST_1KM")
#: rs-embed's SatVision-TOA proxy of MODIS L1B (``onthefly_satvision_toa._fetch_toa_proxy_chw_from_gee``).
MOD021KM_PROXY = ComposedCollection(
    collection="MODIS/061/MOD021KM",
    sources={
        "1": (MOD09GA, "sur_refl_b01"), "2": (MOD09GA, "sur_refl_b02"), "3": (MOD09GA, "sur_refl_b03"),
        "26": (MOD09GA, "sur_refl_b04"), "6": (MOD09GA, "sur_refl_b06"), "7": (MOD09GA, "sur_refl_b07"),
        "20": _LST, "27": _LST, "28": _LST, "29": _LST, "31": _LST, "32": _LST, "33": _LST, "34": _LST,
    },
    note="rs-embed's SatVision-TOA proxy: reflective bands from MOD09GA surface reflectance, "
    "emissive bands from MOD21A1D LST_1KM",
)  # fmt: skip

_COMPOSED = {MOD021KM_PROXY.collection.upper(): MOD021KM_PROXY}


def composed_collection(collection: str) -> ComposedCollection | None:
    """The composition serving ``collection``, or ``None`` for an ordinary collection."""
    return _COMPOSED.get(str(collection).strip().upper())


def check_composed_bands(sensor: SensorSpec) -> None:
    """:class:`SpecError` when a composed collection's sensor asks for a band it does not compose."""
    comp = composed_collection(sensor.collection)
    if comp is None:
        return
    unknown = [b for b in sensor.bands if str(b).strip() not in comp.sources]
    if unknown:
        raise SpecError(
            f"SensorSpec.bands: {comp.collection!r} is served as {comp.note}; it has no band(s) {unknown}; "
            f"bands: {list(comp.sources)}."
        )


def fetch_composed(
    provider: Provider, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(C, H, W)`` raw pixels of a composed collection's bands: one :meth:`fetch_window` per source collection."""
    comp = composed_collection(sensor.collection)
    if comp is None:
        raise ProviderError(f"{sensor.collection!r} is not a composed collection.")
    try:
        check_composed_bands(sensor)
    except SpecError as exc:
        raise ProviderError(str(exc)) from None
    wanted = [comp.sources[str(b).strip()] for b in sensor.bands]
    per_source: dict[str, list[str]] = {}
    for src, band in wanted:
        bands = per_source.setdefault(src, [])
        if band not in bands:
            bands.append(band)
    arrays: dict[str, np.ndarray] = {}
    parts: list[dict[str, Any]] = []
    for src, bands in per_source.items():
        sub = replace(sensor, collection=src, bands=tuple(bands))
        arr, meta = provider.fetch_window(window, dates, sub)
        arrays[src] = provider._finish(arr, sub, window)
        parts.append(
            {"collection": src, "bands": list(bands), **{k: v for k, v in meta.items() if k != "bands"}}
        )
    out = np.stack([arrays[src][per_source[src].index(band)] for src, band in wanted])
    return out, {
        "composed_from": parts,
        "composition": comp.note,
        "source_collections_effective": list(per_source),
        "date_window": parts[0].get("date_window"),
    }
