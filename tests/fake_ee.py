"""A fake Earth Engine service at the ``ee`` network boundary.

The real ``earthengine-api`` builds every expression (``ee.ImageCollection``,
``ee.Filter``, ``ee.Geometry`` ...): :meth:`FakeEarthEngine.install` only
replaces the calls that would leave the process (``ee.Initialize``'s server
handshake, ``ee.ServiceAccountCredentials``' key parsing, ``ee.data.computePixels``
and ``ee.data.computeValue``).  The fakes serialise the expression exactly as
the real client would before sending it (``ee.serializer.encode(...,
for_cloud_api=True)``) and evaluate that JSON graph with a small interpreter:
what the provider *sent* is what is checked, not how it was built.

Pixels are the synthetic world (``SyntheticProvider.render``) on the requested
grid, so values are checkable against an independent rendering; other
collections (Sentinel-1, Landsat, the Satellite Embedding) are deterministic
functions of it.  Requests over Earth Engine's limits fail as the service does
(HTTP 400), HTTP errors are raised as ``ee.data`` raises them (an
``EEException`` whose context is the ``googleapiclient`` ``HttpError``), and
concurrent computePixels calls are counted, across processes when
``state_dir`` is given (a file lock).

:class:`FakeEEWorkerPlugin` installs the same fake in every Dask worker process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import numpy as np

from rs_embed_dask.geometry import GridWindow
from rs_embed_dask.providers.synthetic import MODIS_COLLECTIONS, S2_BANDS, SyntheticProvider

MAX_BYTES = 48 * 2**20
MAX_SIDE = 32768
AUTH_MESSAGE = (
    "Please authorize access to your Earth Engine account by running\n\nearthengine authenticate\n\n"
    "in your command line, or ee.Authenticate() in Python, and then retry."
)
S2_ALL = (*S2_BANDS, "B10", "SCL", "QA60")
GSE_BANDS = tuple(f"A{i:02d}" for i in range(64))
LANDSAT_BANDS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL")
S1_BANDS = ("VV", "VH", "angle")


def collection_bands(collection_id: str) -> tuple[str, ...] | None:
    """Bands the fake knows for a collection (``None``: the asset does not exist)."""
    c = collection_id.upper()
    if c.startswith("COPERNICUS/S2"):
        return S2_ALL
    if c.startswith("COPERNICUS/S1_GRD"):
        return S1_BANDS
    if c.startswith("LANDSAT/"):
        return LANDSAT_BANDS
    if c == "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL":
        return GSE_BANDS
    if c == "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED":
        return ("cs", "cs_cdf")
    if c in MODIS_COLLECTIONS:  # satvision's proxy sources
        return MODIS_COLLECTIONS[c]
    return None


class FakeServiceAccount:
    """What ``ee.ServiceAccountCredentials`` returns in the fake: only the key's path."""

    def __init__(self, key_file: str) -> None:
        self.key_file = key_file


# -- the expression interpreter ------------------------------------------------------------------
class Coll:
    """An image collection: asset id, date window, property filters, mapped functions."""

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.dates: tuple[str, str] | None = None
        self.filters: list[tuple[str, Any, Any]] = []
        self.bounds: list[float] | None = None
        self.maps: list[dict[str, Any]] = []
        self.sorted_by: str | None = None

    def copy(self) -> Coll:
        c = Coll(self.id)
        c.dates, c.filters, c.bounds = self.dates, list(self.filters), self.bounds
        c.maps, c.sorted_by = list(self.maps), self.sorted_by
        return c

    def summary(self) -> dict[str, Any]:
        return {
            "collection": self.id,
            "dates": self.dates,
            "filters": list(self.filters),
            "bounds": self.bounds,
            "maps": list(self.maps),
            "sorted_by": self.sorted_by,
        }


class Img:
    """An image: its source collection, composite, band selection, type and fill."""

    def __init__(self, coll: Coll, composite: str) -> None:
        self.coll = coll
        self.composite = composite
        self.bands: list[str] | None = None
        self.float = False
        self.fill: float | None = None
        self.fill_same_footprint: bool | None = None


class EEError(Exception):
    """Raised inside the interpreter; converted to ``ee.EEException``."""


class _Interpreter:
    def __init__(self, encoded: dict[str, Any]) -> None:
        self.values = encoded["values"]
        self.root = encoded["result"]

    def run(self) -> Any:
        return self.node(self.values[self.root])

    def node(self, n: dict[str, Any], args: dict[str, Any] | None = None) -> Any:
        if "constantValue" in n:
            return n["constantValue"]
        if "valueReference" in n:
            return self.node(self.values[n["valueReference"]], args)
        if "arrayValue" in n:
            return [self.node(v, args) for v in n["arrayValue"]["values"]]
        if "dictionaryValue" in n:
            return {k: self.node(v, args) for k, v in n["dictionaryValue"]["values"].items()}
        if "argumentReference" in n:
            return ("arg", n["argumentReference"])
        if "functionDefinitionValue" in n:
            return self.function_summary(self.values[n["functionDefinitionValue"]["body"]])
        if "functionInvocationValue" in n:
            f = n["functionInvocationValue"]
            a = {k: self.node(v, args) for k, v in f.get("arguments", {}).items()}
            return self.call(f["functionName"], a)
        raise EEError(f"unsupported node {sorted(n)}")

    def function_summary(self, body: dict[str, Any]) -> dict[str, Any]:
        """Names and constants inside a mapped function (its arguments stay symbolic)."""
        names: list[str] = []
        consts: list[Any] = []

        def walk(x: Any) -> None:
            if isinstance(x, dict):
                if "functionInvocationValue" in x:
                    names.append(x["functionInvocationValue"]["functionName"])
                if "constantValue" in x:
                    consts.append(x["constantValue"])
                if "valueReference" in x:
                    walk(self.values[x["valueReference"]])
                for v in x.values():
                    walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)

        walk(body)
        return {"functions": names, "constants": consts}

    def call(self, name: str, a: dict[str, Any]) -> Any:
        if name == "ImageCollection.load":
            if collection_bands(a["id"]) is None:
                raise EEError(f"ImageCollection.load: ImageCollection asset '{a['id']}' not found (does not exist or caller does not have access).")
            return Coll(a["id"])
        if name == "Collection.filter":
            c = a["collection"].copy()
            f = a["filter"]
            if f[0] == "dates":
                c.dates = f[1]
            elif f[0] == "bounds":
                c.bounds = f[1]
            else:
                c.filters.append(f)
            return c
        if name == "DateRange":
            return ("daterange", (a["start"], a["end"]))
        if name == "Filter.dateRangeContains":
            return ("dates", a["leftValue"][1])
        if name == "Filter.intersects":
            return ("bounds", a["rightValue"])
        if name == "Feature":
            return a["geometry"]
        if name == "GeometryConstructors.Rectangle":
            if a["crs"] != "EPSG:3857" or a.get("geodesic") is not False:
                raise EEError(f"the provider must filter with a planar EPSG:3857 rectangle; got {a}")
            return list(a["coordinates"])
        if name == "Projection":
            return a["crs"]
        if name == "Filter.not":
            inner = a["filter"]
            if inner[0] == ">":
                return ("<=", inner[1], inner[2])
            return ("not", inner, None)
        if name == "Filter.greaterThan":
            return (">", a["leftField"], a["rightValue"])
        if name == "Filter.equals":
            return ("==", a["leftField"], a["rightValue"])
        if name == "Filter.listContains":
            return ("contains", a["leftField"], a["rightValue"])
        if name == "Collection.map":
            c = a["collection"].copy()
            c.maps.append(a["baseAlgorithm"])
            return c
        if name == "Collection.limit":
            c = a["collection"].copy()
            c.sorted_by = a.get("key")
            return c
        if name == "reduce.median":
            return Img(a["collection"], "median")
        if name == "ImageCollection.mosaic":
            return Img(a["collection"], "mosaic")
        if name == "Collection.size":
            return a["collection"]
        if name == "Image.select":
            img = a["input"]
            known = collection_bands(img.coll.id) or ()
            for b in a["bandSelectors"]:
                if b not in known:
                    raise EEError(f"Image.select: Pattern '{b}' did not match any bands.")
            img.bands = list(a["bandSelectors"])
            return img
        if name == "Image.toFloat":
            a["value"].float = True
            return a["value"]
        if name == "Image.constant":
            return ("constant", a["value"])
        if name == "Image.unmask":
            img = a["input"]
            img.fill = float(a["value"][1])
            img.fill_same_footprint = a.get("sameFootprint", True)
            return img
        raise EEError(f"the fake Earth Engine does not know {name!r}")


def _window_from_grid(grid: dict[str, Any]) -> GridWindow:
    t = grid["affineTransform"]
    s = float(t["scaleX"])
    if grid.get("crsCode") != "EPSG:3857" or t["shearX"] != 0 or t["shearY"] != 0 or t["scaleY"] != -s:
        raise EEError(f"the fake only serves north-up EPSG:3857 grids; got {grid}")
    col, row = t["translateX"] / s, -t["translateY"] / s
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise EEError(f"grid origin off the lattice: {t}")
    dims = grid["dimensions"]
    return GridWindow(round(col), round(row), int(dims["width"]), int(dims["height"]), s)


class FakeEarthEngine:
    """Fake Earth Engine endpoints, recording every request.

    Parameters
    ----------
    authenticated : bool
        Whether stored user credentials exist (``ee.Initialize()`` without a key).
    latency_s : float
        Sleep inside each computePixels call (to make concurrency observable).
    state_dir : str, optional
        Folder for the cross-process concurrency counter and request log.
    empty : callable, optional
        ``empty(collection_summary) -> bool``: collections the service finds no scene in.
    masked : callable, optional
        ``masked(window) -> bool (H, W)``: pixels masked in every scene.
    fail : list of int, optional
        HTTP statuses the next computePixels calls fail with, in order.
    seed : int
        Seed of the synthetic world.
    revoked : bool
        ``ee.Initialize`` succeeds but every request is refused with HTTP 401
        (a revoked key, expired credentials), as the service answers then.
    """

    def __init__(
        self,
        *,
        authenticated: bool = True,
        latency_s: float = 0.0,
        state_dir: str | None = None,
        empty: Callable[[dict[str, Any]], bool] | None = None,
        masked: Callable[[GridWindow], np.ndarray] | None = None,
        fail: list[int] | None = None,
        seed: int = 0,
        revoked: bool = False,
    ) -> None:
        self.authenticated = authenticated
        self.revoked = revoked
        self.latency_s = latency_s
        self.state_dir = state_dir
        self.empty = empty
        self.masked = masked
        self.fail = list(fail or [])
        self.world = SyntheticProvider(seed=seed)
        self.inits: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.value_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._active = 0
        self.max_active = 0
        self._saved: list[tuple[Any, str, Any]] = []

    # -- install -------------------------------------------------------------------------------
    def install(self, monkeypatch: Any = None) -> FakeEarthEngine:
        """Patch the ``ee`` boundary (with pytest's ``monkeypatch`` when given)."""
        import ee
        from ee import apitestcase

        real_initialize = ee.Initialize

        def initialize(credentials: Any = "persistent", url: str | None = None, cloud_api_key: Any = None,
                       http_transport: Any = None, project: str | None = None) -> None:  # fmt: skip
            kind = "service_account" if isinstance(credentials, FakeServiceAccount) else str(credentials)
            self.inits.append({"credentials": kind, "project": project, "url": url, "pid": os.getpid()})
            if kind == "persistent" and not self.authenticated:
                raise ee.EEException(AUTH_MESSAGE)
            if not project and kind != "service_account":
                raise ee.EEException(ee.NO_PROJECT_EXCEPTION)
            real_initialize(None, "", project=project or "service-account-project")

        def service_account(email: Any = None, key_file: str | None = None, key_data: Any = None) -> Any:
            assert key_data is None, "key contents must never be passed"
            with open(str(key_file), encoding="utf-8") as f:
                json.load(f)  # a real parser would fail on a broken key too
            return FakeServiceAccount(str(key_file))

        patches = [
            (ee, "Initialize", initialize),
            (ee, "ServiceAccountCredentials", service_account),
            (ee.data, "getAlgorithms", apitestcase.GetAlgorithms),
            (ee.data, "_install_cloud_api_resource", lambda: None),
            (ee.data, "computePixels", self.compute_pixels),
            (ee.data, "computeValue", self.compute_value),
        ]
        for obj, attr, val in patches:
            if monkeypatch is not None:
                monkeypatch.setattr(obj, attr, val)
            else:
                self._saved.append((obj, attr, getattr(obj, attr)))
                setattr(obj, attr, val)
        from rs_embed_dask.providers import ee_session

        ee_session.reset_session()
        return self

    def uninstall(self) -> None:
        """Undo :meth:`install` without monkeypatch."""
        while self._saved:
            obj, attr, val = self._saved.pop()
            setattr(obj, attr, val)

    # -- errors as the real client raises them -------------------------------------------------
    @staticmethod
    def http_error(status: int, message: str) -> Exception:
        """The ``EEException`` ``ee.data`` raises for an HTTP error (context: the HttpError)."""
        import ee
        import httplib2
        from googleapiclient.errors import HttpError

        body = json.dumps({"error": {"code": status, "message": message}}).encode()
        try:
            raise HttpError(httplib2.Response({"status": status}), body)
        except HttpError as http:
            try:
                raise ee.data._translate_cloud_exception(http)
            except ee.EEException as exc:
                return exc

    def _ee_error(self, exc: EEError) -> Exception:
        import ee

        return ee.EEException(str(exc))

    # -- concurrency accounting ----------------------------------------------------------------
    def _counter(self, delta: int) -> None:
        if self.state_dir is None:
            with self._lock:
                self._active += delta
                self.max_active = max(self.max_active, self._active)
            return
        path = os.path.join(self.state_dir, "active.json")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 4096).decode() or '{"active": 0, "max": 0, "calls": 0}'
            st = json.loads(raw)
            st["active"] += delta
            st["max"] = max(st["max"], st["active"])
            st["calls"] += 1 if delta > 0 else 0
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(st).encode())
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def shared_state(state_dir: str) -> dict[str, int]:
        """``{"active", "max", "calls"}`` of the cross-process counter."""
        with open(os.path.join(state_dir, "active.json"), encoding="utf-8") as f:
            return json.load(f)

    @staticmethod
    def request_pids(state_dir: str) -> set[int]:
        """The process ids that sent the computePixels calls logged in ``state_dir``."""
        with open(os.path.join(state_dir, "requests.jsonl"), encoding="utf-8") as f:
            return {json.loads(line)["pid"] for line in f}

    # -- endpoints -----------------------------------------------------------------------------
    def _n_scenes(self, coll: Coll) -> int:
        if self.empty is not None and self.empty(coll.summary()):
            return 0
        if coll.dates is None:
            return 400
        d0, d1 = (date.fromisoformat(d[:10]) for d in coll.dates)
        return max(1, (d1 - d0).days // 5)

    def compute_value(self, obj: Any) -> Any:
        import ee

        encoded = ee.serializer.encode(obj, for_cloud_api=True)
        self.value_requests.append({"expression": encoded})
        if self.revoked:
            raise self.http_error(401, "Request had invalid authentication credentials.")
        try:
            val = _Interpreter(encoded).run()
        except EEError as exc:
            raise self._ee_error(exc) from None

        def conv(v: Any) -> Any:
            if isinstance(v, Coll):
                return self._n_scenes(v)
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v

        return conv(val)

    def compute_pixels(self, params: dict[str, Any]) -> np.ndarray:
        import ee

        if self.revoked:
            raise self.http_error(401, "Request had invalid authentication credentials.")
        self._counter(+1)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            encoded = ee.serializer.encode(params["expression"], for_cloud_api=True)
            record = {
                "expression": encoded,
                "fileFormat": params.get("fileFormat"),
                "grid": params.get("grid"),
                "pid": os.getpid(),
            }
            with self._lock:
                self.requests.append(record)
                status = self.fail.pop(0) if self.fail else None
            if self.state_dir is not None:
                with open(os.path.join(self.state_dir, "requests.jsonl"), "a", encoding="utf-8") as f:
                    f.write(json.dumps({"grid": record["grid"], "pid": record["pid"]}) + "\n")
            if status is not None:
                raise self.http_error(status, {429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "Error"))
            if params.get("fileFormat") != "NUMPY_NDARRAY":
                raise ee.EEException(f"the fake serves NUMPY_NDARRAY only, not {params.get('fileFormat')!r}")
            try:
                img = _Interpreter(encoded).run()
                if not isinstance(img, Img):
                    raise EEError("computePixels needs an image expression")
                record["image"] = img
                window = _window_from_grid(params["grid"])
                return self._render(img, window)
            except EEError as exc:
                raise self._ee_error(exc) from None
        finally:
            self._counter(-1)

    def _render(self, img: Img, window: GridWindow) -> np.ndarray:
        bands = img.bands or list(collection_bands(img.coll.id) or ())
        if self._n_scenes(img.coll) == 0:
            # an empty collection composites to an image without bands
            raise EEError(f"Image.select: Pattern '{bands[0]}' did not match any bands.")
        size = 4 if img.float else 8
        total = window.width * window.height * len(bands) * (size + 1)
        if window.width > MAX_SIDE or window.height > MAX_SIDE:
            raise self.http_error(400, f"Grid dimensions must be at most {MAX_SIDE} pixels a side.")
        if total > MAX_BYTES:
            raise self.http_error(400, f"Total request size ({total} bytes) must be less than or equal to {MAX_BYTES} bytes.")
        dates = None
        if img.coll.dates is not None:
            dates = tuple(date.fromisoformat(d[:10]) for d in img.coll.dates)
        data = self.values(img.coll.id, bands, window, dates)  # type: ignore[arg-type]
        mask = self.masked(window) if self.masked is not None else None
        if mask is not None and mask.any():
            data[:, mask] = img.fill if img.fill is not None else 0.0
        dtype = np.dtype([(b, "<f4" if img.float else "<f8") for b in bands])
        out = np.empty((window.height, window.width), dtype=dtype)
        for i, b in enumerate(bands):
            out[b] = data[i]
        return out

    def values(self, cid: str, bands: list[str], window: GridWindow, dates: tuple[date, date] | None) -> np.ndarray:
        """The fake's pixel values ``(C, H, W)`` float64 (an independent reference for tests)."""
        c = cid.upper()
        if c.startswith("COPERNICUS/S2"):
            idx = [S2_BANDS.index(b) if b in S2_BANDS else 0 for b in bands]
            out = self.world.render(window, dates, idx).astype(np.float64)
            for i, b in enumerate(bands):
                if b == "SCL":
                    out[i] = 4.0
            return out
        if c == "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL":
            base = self.world.render(window, dates, list(range(12))).astype(np.float64)
            k = np.array([int(b[1:]) for b in bands])
            return np.sin(base[k % 12] / 1000.0 + k[:, None, None])
        if c.startswith("LANDSAT/"):
            idx = [min(int(b[-1]), 11) if b.startswith("SR_B") else 0 for b in bands]
            return self.world.render(window, dates, idx).astype(np.float64) + 7273.0
        if c.startswith("COPERNICUS/S1_GRD"):
            base = self.world.render(window, dates, [7, 10]).astype(np.float64)
            db = np.stack([-(base[0] / 500.0) - 5.0 if b == "VV" else -(base[1] / 400.0) - 12.0 for b in bands])
            return db if c == "COPERNICUS/S1_GRD" else np.power(10.0, db / 10.0)
        if c in MODIS_COLLECTIONS:
            return self.world.render_modis(window, dates, list(bands)).astype(np.float64)
        raise EEError(f"no values for {cid}")


# -- installing the fake in Dask worker processes --------------------------------------------
def _plugin_base() -> type:
    from distributed.diagnostics.plugin import WorkerPlugin

    return WorkerPlugin


class FakeEEWorkerPlugin(_plugin_base()):  # type: ignore[misc]
    """Install a :class:`FakeEarthEngine` (built from ``kwargs``) in each worker process."""

    name = "rs-embed-dask-tests-fake-ee"
    idempotent = False

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.fake: FakeEarthEngine | None = None

    def setup(self, worker: Any = None) -> None:
        self.fake = FakeEarthEngine(**self.kwargs).install()

    def teardown(self, worker: Any = None) -> None:
        if self.fake is not None:
            self.fake.uninstall()


@contextlib.contextmanager
def fake_ee_cluster(state_dir: str, *, threads_per_worker: int, latency_s: float) -> Iterator[Any]:
    """A client of two worker processes sharing one fake Earth Engine, counted in ``state_dir`` (created)."""
    from distributed import Client, LocalCluster

    os.mkdir(state_dir)
    # the client authenticates too (the export's pre-flight check): same fake, not counted in state_dir
    client_side = FakeEarthEngine().install()
    try:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=threads_per_worker, processes=True, dashboard_address=":0"
            ) as lc,
            Client(lc, set_as_default=False) as client,
        ):
            client.register_plugin(FakeEEWorkerPlugin(state_dir=state_dir, latency_s=latency_s))
            yield client
    finally:
        client_side.uninstall()
        from rs_embed_dask.providers import ee_session

        ee_session.reset_session()


def installed_with_test_project(monkeypatch: Any) -> Iterator[FakeEarthEngine]:
    """The body of a ``fake`` fixture: the fake installed for project ``test-project``, no credentials in the env.

    Yields the fake; after the test, the resolved runtime and the Earth
    Engine session are reset.  Use as ``yield from installed_with_test_project(monkeypatch)``.
    """
    from rs_embed_dask.providers import ee_session
    from rs_embed_dask.resolve import reset_runtime

    monkeypatch.setenv("EE_PROJECT", "test-project")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield FakeEarthEngine().install(monkeypatch)
    reset_runtime()
    ee_session.reset_session()
