"""``stac``: any STAC catalogue through ``pystac-client`` and ``odc-stac``.

No Earth Engine account is needed: items are searched by bounding box,
datetime and ``eo:cloud_cover`` and their Cloud-Optimised GeoTIFF assets are
read by :func:`odc.stac.load` straight onto the common grid (the ROI's
EPSG:3857 :class:`~rs_embed_dask.geometry.GridWindow` given as an
:class:`odc.geo.geobox.GeoBox`), so the pixels line up with every other
provider's.  Where the catalogue and collection come from, in order:

- the provider options ``catalog_url=`` and ``collection=``;
- ``SensorSpec.collection`` of the form ``"stac:<collection>"``;
- an Earth Engine collection id of a known sensor (``COPERNICUS/S2_SR_HARMONIZED``,
  ``COPERNICUS/S1_GRD``, Landsat C2 L2), mapped to that catalogue's collection.

``catalog_url`` accepts the short names ``"earth-search"`` (the default,
Element 84's Earth Search v1) and ``"planetary-computer"`` (Microsoft's,
whose asset URLs are signed with ``planetary_computer.sign_inplace`` when
that package is installed), any STAC API URL, or the path or URL of a static
catalogue's ``catalog.json``.  A static catalogue has no ``/search``
endpoint (pystac-client offers no fallback for ``search``), so its items are
walked once per provider instance and filtered here with the same rules the
API applies.

Values stay in the assets' units (Sentinel-2 L2A digital numbers; scale and
offset from ``raster:bands`` are not applied), as Earth Engine's are.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ProviderError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.geometry import WEB_MERCATOR, GridWindow
from rs_embed_dask.providers.base import Provider, ProviderOption

__all__ = ["CATALOGS", "StacProvider", "asset_key", "stac_collection"]

#: Short names of well-known STAC APIs.
CATALOGS: dict[str, str] = {
    "earth-search": "https://earth-search.aws.element84.com/v1",
    "planetary-computer": "https://planetarycomputer.microsoft.com/api/stac/v1",
}
# Per catalogue: sensor family -> collection id (``None``: the catalogue has none).
_COLLECTIONS: dict[str, dict[str, str | None]] = {
    "earth-search": {
        "s2": "sentinel-2-l2a", "s2_l1c": "sentinel-2-l1c", "s1": None, "landsat": "landsat-c2-l2",
    },
    "planetary-computer": {
        "s2": "sentinel-2-l2a", "s2_l1c": None, "s1": "sentinel-1-rtc", "landsat": "landsat-c2-l2",
    },
    "": {"s2": "sentinel-2-l2a", "s2_l1c": "sentinel-2-l1c", "s1": "sentinel-1-rtc", "landsat": "landsat-c2-l2"},
}  # fmt: skip
# Sentinel-2 asset keys / common names -> the canonical band name (as Earth Engine spells it).
_S2_CANONICAL = {
    "COASTAL": "B1", "BLUE": "B2", "GREEN": "B3", "RED": "B4", "REDEDGE1": "B5", "REDEDGE2": "B6",
    "REDEDGE3": "B7", "NIR": "B8", "NIR08": "B8A", "NIR09": "B9", "CIRRUS": "B10", "SWIR16": "B11",
    "SWIR22": "B12", "RE1": "B5", "RE2": "B6", "RE3": "B7", "RE4": "B8A", "RED_EDGE_1": "B5",
    "RED_EDGE_2": "B6", "RED_EDGE_3": "B7", "RED_EDGE_4": "B8A", "NIR_NARROW": "B8A", "NIR_BROAD": "B8",
    "NIR_WIDE": "B8", "SWIR1": "B11", "SWIR_1": "B11", "SWIR2": "B12", "SWIR_2": "B12",
}  # fmt: skip
_PADDED = re.compile(r"^B0(\d)$")
_HTTP_STATUS = re.compile(r"(?:HTTP(?: response)?(?: code)?:?\s*|status(?:_code)?[=: ]\s*)(\d{3})", re.I)


def _catalog_key(url: str) -> str:
    for key, known in CATALOGS.items():
        if url.rstrip("/") == known or key.replace("-", "") in url.replace("-", "").lower():
            return key
    return ""


def _family(collection: str, sensor: SensorSpec) -> str | None:
    c = collection.upper()
    mod = (sensor.modality or "").lower().replace("-", "_")
    if "S1_GRD" in c or mod in ("s1", "sentinel1", "sentinel_1"):
        return "s1"
    if c.startswith("COPERNICUS/S2"):
        return "s2" if "_SR" in c else "s2_l1c"
    if c.startswith("LANDSAT/") and "L2" in c:
        return "landsat"
    return None


def stac_collection(sensor: SensorSpec, catalog_url: str, collection: str | None = None) -> str:
    """The STAC collection id a sensor asks for in ``catalog_url``.

    Parameters
    ----------
    sensor : SensorSpec
        ``collection`` is ``"stac:<id>"``, a STAC id, or an Earth Engine id of a
        known sensor (Sentinel-2 SR/L1C, Sentinel-1 GRD, Landsat C2 L2).
    catalog_url : str
        The catalogue (decides the mapping of Earth Engine ids).
    collection : str, optional
        An explicit collection id; wins over the sensor.

    Raises
    ------
    ProviderError
        When an Earth Engine id has no counterpart in the catalogue.
    """
    if collection:
        return str(collection)
    coll = sensor.collection.strip()
    if coll.lower().startswith("stac:"):
        return coll[len("stac:") :].strip()
    family = _family(coll, sensor)
    if family is None:
        if "/" in coll:
            raise ProviderError(
                f"stac provider cannot map SensorSpec.collection={coll!r} to a STAC collection; "
                "use collection='stac:<collection id>' or StacProvider(collection=...)."
            )
        return coll
    key = _catalog_key(catalog_url)
    found = _COLLECTIONS[key].get(family)
    if found is None:
        raise ProviderError(
            f"The STAC catalogue {catalog_url} has no collection for {coll!r} ({family}); "
            f"Sentinel-1 RTC is on 'planetary-computer' (sentinel-1-rtc), or pass StacProvider(collection=...)."
        )
    return found


def _canonical(name: str) -> str:
    key = str(name).strip().upper()
    m = _PADDED.match(key)
    if m:
        return f"B{m[1]}"
    return _S2_CANONICAL.get(key, key)


def _asset_names(key: str, asset: Any) -> list[str]:
    """Every name an asset answers to: its key and its single band's ``eo:bands`` names."""
    names = [key]
    extra = getattr(asset, "extra_fields", None) or (asset if isinstance(asset, dict) else {})
    bands = extra.get("eo:bands") or extra.get("bands") or []
    if len(bands) == 1 and isinstance(bands[0], dict):
        names += [str(bands[0][k]) for k in ("name", "common_name", "eo:common_name") if bands[0].get(k)]
    return names


def asset_key(band: str, assets: dict[str, Any]) -> str | None:
    """The key of the asset that holds ``band``, or ``None``.

    Matching is case-insensitive, first on asset keys, then on the names and
    common names of single-band assets' ``eo:bands``, then on the canonical
    Sentinel-2 name (``"B2"``, ``"B02"``, ``"blue"`` and ``"BLUE"`` are one band),
    so Earth Engine band names work on Earth Search (``blue``) and Planetary
    Computer (``B02``) alike.
    """
    want = str(band).strip().lower()
    for key in assets:
        if key.lower() == want:
            return key
    for key, asset in assets.items():
        if want in (n.lower() for n in _asset_names(key, asset)[1:]):
            return key
    canon = _canonical(band)
    for key, asset in assets.items():
        if canon in (_canonical(n) for n in _asset_names(key, asset)):
            return key
    return None


def _transient(exc: BaseException) -> int | None:
    """The HTTP status of a retryable failure (429, 5xx, time-outs as 0), else ``None``."""
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        m = _HTTP_STATUS.search(str(exc))
        status = int(m[1]) if m else None
    if status is not None:
        return int(status) if int(status) == 429 or 500 <= int(status) < 600 else None
    name = type(exc).__name__.lower()
    return 0 if ("timeout" in name or "connectionerror" in name) else None


@contextlib.contextmanager
def _as_provider_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:
        status = _transient(exc)
        if status is not None:
            raise TransientProviderError(f"{what}: {exc!r}", status=status or None) from exc
        raise ProviderError(f"{what}: {exc!r}") from exc


def _item_interval(item: Any) -> tuple[datetime, datetime] | None:
    props = item.properties
    if item.datetime is not None:
        return item.datetime, item.datetime
    start, end = props.get("start_datetime"), props.get("end_datetime")
    if start and end:
        from pystac.utils import str_to_datetime

        return str_to_datetime(start), str_to_datetime(end)
    return None


def _utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class StacProvider(Provider):
    """Imagery from a STAC API or static catalogue, loaded with odc-stac.

    Parameters
    ----------
    catalog_url : str, default "earth-search"
        A STAC API URL, a static ``catalog.json`` path or URL, or a short name
        of :data:`CATALOGS`.
    collection : str, optional
        The STAC collection id; default: from ``SensorSpec.collection``
        (see :func:`stac_collection`).
    sign : {"auto", "planetary-computer", "none"}, default "auto"
        Sign asset URLs with ``planetary_computer.sign_inplace``: ``"auto"``
        does so for Planetary Computer when the package is installed,
        ``"planetary-computer"`` requires it.
    cloud_filter : bool, optional
        Keep items with ``eo:cloud_cover <= SensorSpec.cloudy_pct``; default:
        on for optical collections, off for Sentinel-1 (no cloud cover).
    resampling : str, default "nearest"
        odc-stac resampling (``"nearest"``, ``"bilinear"``, ``"cubic"``, ``"average"``, ...).
    max_items : int, default 500
        Most items a search returns; more is an error asking for a shorter window.
    groupby : str, default "solar_day"
        How odc-stac groups items into one time slice (tiles of one pass
        are mosaicked before compositing over time).
    use_overviews : bool, default False
        Read COG overviews when ``scale_m`` is coarser than the assets.  Off by
        default so that every scale resamples the full-resolution pixels, as
        the ``local`` provider does; on reads less at coarse scales.

    Notes
    -----
    Composites follow ``SensorSpec.composite``: ``"median"`` is the per-pixel
    median of valid values over the time slices, ``"mosaic"`` the latest
    valid pixel on top (Earth Engine's ``sort("system:time_start").mosaic()``).
    Multi-frame fetches search the whole range once and composite each of the
    ``n_frames`` equal bins; an empty bin gets the whole-range composite, as
    rs-embed does.  No-data becomes ``SensorSpec.fill_value``.  Sentinel-1
    with ``use_float_linear=False`` is returned in dB.
    """

    name = "stac"
    requires = ("pystac", "pystac_client", "odc.stac")
    extra = "stac"
    option_specs = (
        ProviderOption("catalog_url", (str,), doc="a STAC API URL, a catalog.json path or a known name"),
        ProviderOption("collection", (str,), nullable=True),
        ProviderOption("sign", (str,), choices=("auto", "planetary-computer", "none")),
        ProviderOption("cloud_filter", (bool,), nullable=True),
        ProviderOption("resampling", (str,)),
        ProviderOption("max_items", (int,), minimum=1),
        ProviderOption("groupby", (str,)),
        ProviderOption("use_overviews", (bool,)),
    )

    def __init__(
        self,
        *,
        catalog_url: str = "earth-search",
        collection: str | None = None,
        sign: str = "auto",
        cloud_filter: bool | None = None,
        resampling: str = "nearest",
        max_items: int = 500,
        groupby: str = "solar_day",
        use_overviews: bool = False,
    ) -> None:
        if sign not in ("auto", "planetary-computer", "none"):
            raise ProviderError(
                f"stac provider option sign={sign!r} is not one of 'auto', 'planetary-computer', 'none'."
            )
        if not (isinstance(max_items, int) and max_items >= 1):
            raise ProviderError(f"stac provider option max_items must be an integer >= 1; got {max_items!r}.")
        if not isinstance(catalog_url, str) or not catalog_url.strip():
            raise ProviderError(
                f"stac provider option catalog_url must be a URL, a catalog.json path or one of "
                f"{sorted(CATALOGS)}; got {catalog_url!r}."
            )
        super().__init__(
            catalog_url=catalog_url, collection=collection, sign=sign, cloud_filter=cloud_filter,
            resampling=resampling, max_items=max_items, groupby=groupby,
            use_overviews=use_overviews,
        )  # fmt: skip
        self.catalog_url = CATALOGS.get(catalog_url.strip().lower(), catalog_url.strip())
        self.collection = collection
        self.sign = sign
        self.cloud_filter = cloud_filter
        self.resampling = str(resampling)
        self.max_items = int(max_items)
        self.groupby = str(groupby)
        self.use_overviews = bool(use_overviews)
        self._client: Any = None
        self._static_items: dict[str, list[Any]] = {}

    # -- catalogue ----------------------------------------------------------------
    def _modifier(self) -> Callable[[Any], Any] | None:
        if self.sign == "none":
            return None
        if self.sign == "auto" and _catalog_key(self.catalog_url) != "planetary-computer":
            return None
        try:
            import planetary_computer  # type: ignore[import-untyped]
        except ImportError as exc:
            if self.sign == "auto":
                return None
            raise ProviderError(
                "stac provider option sign='planetary-computer' needs the package "
                "'planetary-computer': pip install 'rs-embed-dask[planetary]'"
            ) from exc
        return planetary_computer.sign_inplace  # type: ignore[no-any-return, unused-ignore]

    def client(self) -> Any:
        """The ``pystac_client.Client`` of the catalogue (opened once)."""
        if self._client is None:
            from pystac_client import Client

            with (
                warnings.catch_warnings(),
                _as_provider_errors(f"stac: cannot open catalogue {self.catalog_url}"),
            ):
                warnings.simplefilter("ignore")  # static catalogues warn that they advertise no conformance
                self._client = Client.open(self.catalog_url, modifier=self._modifier())
        return self._client

    def _static_collection_items(self, collection: str) -> list[Any]:
        if collection not in self._static_items:
            client = self.client()
            with warnings.catch_warnings(), _as_provider_errors(f"stac: cannot read {self.catalog_url}"):
                warnings.simplefilter("ignore")  # FallbackToPystac: expected for a static catalogue
                coll = client.get_collection(collection)
                # without a /collections endpoint pystac-client can hand back the last
                # collection it walked past, so check the id
                if coll is None or coll.id != collection:
                    known = sorted(c.id for c in client.get_collections())
                    raise ProviderError(
                        f"stac: the catalogue {self.catalog_url} has no collection {collection!r}; "
                        f"collections: {known}."
                    )
                self._static_items[collection] = list(coll.get_items(recursive=True))
        return self._static_items[collection]

    def _use_cloud_filter(self, collection: str, sensor: SensorSpec) -> bool:
        if self.cloud_filter is not None:
            return bool(self.cloud_filter)
        return not ("sentinel-1" in collection.lower() or _family(sensor.collection, sensor) == "s1")

    def search(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[list[Any], dict[str, Any]]:
        """Items over ``window`` in ``[start, end)`` passing the cloud filter, oldest first.

        Returns
        -------
        (items, filters)
            The items and a description of the search (for errors and metadata).

        Raises
        ------
        ProviderError
            When nothing matches, naming catalogue, collection, window and filters.
        TransientProviderError
            For HTTP 429/5xx and time-outs.
        """
        from pystac_client import ConformanceClasses

        collection = stac_collection(sensor, self.catalog_url, self.collection)
        bbox = window.lonlat_bounds()
        cloud = sensor.cloudy_pct if self._use_cloud_filter(collection, sensor) else None
        filters: dict[str, Any] = {
            "catalog": self.catalog_url,
            "collection": collection,
            "bbox": [round(v, 6) for v in bbox],
            "datetime": [dates[0].isoformat(), dates[1].isoformat()] if dates else None,
            "eo:cloud_cover_lte": cloud,
        }
        client = self.client()
        if client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            kw: dict[str, Any] = {"collections": [collection], "bbox": bbox, "max_items": self.max_items + 1}
            if dates is not None:
                end = _utc(dates[1]) - timedelta(microseconds=1)  # STAC ranges are closed
                kw["datetime"] = f"{dates[0].isoformat()}T00:00:00Z/{end.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
            if cloud is not None:
                kw["query"] = {"eo:cloud_cover": {"lte": cloud}}
            with _as_provider_errors(f"stac: search of {collection!r} at {self.catalog_url} failed"):
                items = list(client.search(**kw).items())
        else:
            items = [
                it
                for it in self._static_collection_items(collection)
                if self._matches(it, bbox, dates, cloud)
            ]
        if not items:
            raise ProviderError(
                f"stac: no items found in catalogue {self.catalog_url} collection {collection!r} for "
                f"the window {window.to_dict()['shape']} px at lon/lat "
                f"{tuple(round(v, 5) for v in bbox)} with filters datetime={filters['datetime']} "
                f"(end exclusive), eo:cloud_cover <= {cloud}."
            )
        if len(items) > self.max_items:
            raise ProviderError(
                f"stac: more than max_items={self.max_items} items match {filters}; shorten the time "
                "window or raise StacProvider(max_items=...)."
            )
        items.sort(key=lambda it: (_item_interval(it) or (datetime.min.replace(tzinfo=UTC),))[0])
        return items, filters

    @staticmethod
    def _matches(
        item: Any,
        bbox: tuple[float, float, float, float],
        dates: tuple[date, date] | None,
        cloud: float | None,
    ) -> bool:
        """The API's rules for one item of a static catalogue."""
        ib = item.bbox
        if ib is None or not (
            ib[0] <= bbox[2] and ib[2] >= bbox[0] and ib[1] <= bbox[3] and ib[3] >= bbox[1]
        ):
            return False
        if dates is not None:
            span = _item_interval(item)
            if span is None:
                return False
            t0, t1 = _aware(span[0]), _aware(span[1])
            if not (t0 < _utc(dates[1]) and t1 >= _utc(dates[0])):
                return False
        if cloud is not None:
            cc = item.properties.get("eo:cloud_cover")
            if cc is None or float(cc) > float(cloud):
                return False
        return True

    # -- loading ----------------------------------------------------------------------
    def band_assets(self, items: Sequence[Any], bands: Sequence[str]) -> list[str]:
        """Asset keys for ``bands`` (see :func:`asset_key`), checked on the first item."""
        assets = dict(items[0].assets)
        keys: list[str] = []
        missing: list[str] = []
        for b in bands:
            k = asset_key(b, assets)
            if k is None:
                missing.append(b)
            else:
                keys.append(k)
        if missing:
            raise ProviderError(
                f"stac: band(s) {missing} not found in the assets of {items[0].collection_id!r} "
                f"item {items[0].id!r}; assets: {sorted(assets)}."
            )
        return keys

    def load(
        self, items: Sequence[Any], window: GridWindow, sensor: SensorSpec
    ) -> tuple[np.ndarray, list[Any]]:
        """``(T, C, H, W)`` float32 of ``items`` on ``window`` (NaN = no data) and the slice times."""
        import odc.stac
        from odc.geo.geobox import GeoBox

        keys = self.band_assets(items, sensor.bands)
        geobox = GeoBox(window.shape, window.transform, WEB_MERCATOR)
        with (
            warnings.catch_warnings(),
            _as_provider_errors(f"stac: loading {len(items)} item(s) of {items[0].collection_id!r} failed"),
        ):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # odc-geo on shapely 2.1
            ds = odc.stac.load(
                items, bands=list(dict.fromkeys(keys)), geobox=geobox, groupby=self.groupby,
                resampling=self.resampling, dtype="float32", nodata=float("nan"), chunks=None,
                use_overviews=self.use_overviews,
            )  # fmt: skip
        data = np.stack([np.asarray(ds[k].values, dtype=np.float32) for k in keys], axis=1)
        return data, list(np.asarray(ds["time"].values))

    @staticmethod
    def composite(stack: np.ndarray, how: str) -> np.ndarray:
        """Composite ``(T, C, H, W)`` oldest-first slices: ``"median"`` or ``"mosaic"`` (latest valid on top)."""
        if stack.shape[0] == 1:
            return stack[0]
        if how == "mosaic":
            out = stack[0].copy()
            for fr in stack[1:]:
                np.copyto(out, fr, where=~np.isnan(fr))
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            return np.nanmedian(stack, axis=0).astype(np.float32)

    @staticmethod
    def _units(arr: np.ndarray, sensor: SensorSpec, collection: str) -> np.ndarray:
        if not sensor.use_float_linear and "sentinel-1" in collection.lower():
            with np.errstate(divide="ignore", invalid="ignore"):
                arr = np.where(arr > 0, 10.0 * np.log10(arr), np.nan).astype(np.float32)
        return arr

    def fetch_window(
        self, window: GridWindow, dates: tuple[date, date] | None, sensor: SensorSpec
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Search, load and composite the items over ``window`` and ``dates``."""
        items, filters = self.search(window, dates, sensor)
        stack, times = self.load(items, window, sensor)
        out = self._units(self.composite(stack, sensor.composite), sensor, filters["collection"])
        return out, self._meta(sensor, dates, filters, items, times)

    def fetch_frames(
        self, window: GridWindow, bins: list[tuple[date, date]], sensor: SensorSpec
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Per-bin composites (see :meth:`Provider.fetch_frames`) from one search and load.

        The whole range is searched and loaded once, then composited per
        bin; empty bins get the whole-range composite.
        """
        rng = (bins[0][0], bins[-1][1])
        items, filters = self.search(window, rng, sensor)
        stack, times = self.load(items, window, sensor)
        days = [np.datetime64(t, "D").astype(object) for t in times]
        whole: np.ndarray | None = None
        frames, empty = [], []
        for i, (b0, b1) in enumerate(bins):
            sel = [k for k, d in enumerate(days) if b0 <= d < b1]
            if sel:
                arr = self.composite(stack[sel], sensor.composite)
            else:
                empty.append(i)
                if whole is None:
                    whole = self.composite(stack, sensor.composite)
                arr = whole
            frames.append(self._units(arr, sensor, filters["collection"]))
        meta = self._meta(sensor, rng, filters, items, times)
        meta.update(frames=[{"empty": i in empty} for i in range(len(bins))], n_empty=len(empty))
        return frames, meta

    def _meta(
        self,
        sensor: SensorSpec,
        dates: tuple[date, date] | None,
        filters: dict[str, Any],
        items: Sequence[Any],
        times: Sequence[Any],
    ) -> dict[str, Any]:
        return {
            "composite": sensor.composite,
            "resampling": self.resampling,
            "date_window": [dates[0].isoformat(), dates[1].isoformat()] if dates else None,
            "stac_catalog": filters["catalog"],
            "stac_collection": filters["collection"],
            "stac_filters": {k: filters[k] for k in ("bbox", "datetime", "eo:cloud_cover_lte")},
            "stac_items": [it.id for it in items],
            "stac_times": [str(np.datetime_as_string(np.datetime64(t, "s"))) for t in times],
            "n_items": len(items),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None  # live HTTP sessions stay in their process
        return state
