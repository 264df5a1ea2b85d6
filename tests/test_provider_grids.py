"""Every provider delivers on the same common grid, and ``backend="auto"`` picks the right one.

For one ROI and ``scale_m``, each provider's ``FetchResult.meta["grid"]``
(CRS, affine transform, shape, lattice offsets) must equal
:func:`rs_embed_dask.geometry.grid_window`'s, whatever the latitude and
however the ROI's edges fall on the lattice.  Providers whose data are
written from the synthetic world (``local``: GeoTIFFs, ``stac``: a static
catalogue of COGs) must also give the synthetic world's pixels exactly: the
world is a pure function of the pixel centre, and nearest resampling from
10 m onto the 30 m lattice picks the 10 m pixel with the same centre.  The
``gee`` provider talks to the fake Earth Engine boundary (``tests/fake_ee.py``),
which renders the same world on the grid of each computePixels request: its
pixels are compared too, and so is the grid the request sent.

A provider joins with a factory in ``GRID_FACTORIES``: ``factory(root, rois,
monkeypatch) -> (provider options, sensor, sent)`` preparing data that cover
every ROI; ``sent`` is the list the network boundary records its requests in
(each with the ``grid`` it asked for), or ``None`` for providers without one.
``monkeypatch`` is undone after that provider's tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask.core.errors import ProviderError
from rs_embed_dask.core.registry import list_providers
from rs_embed_dask.core.specs import BBox, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.providers import ee_session
from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider
from rs_embed_dask.resolve import (
    get_provider,
    provider_for_collection,
    reset_runtime,
    resolve_backend,
    resolve_model,
)

BANDS = ("B2", "B4", "B8")
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
GRID_ROIS = {
    "equator": PointBuffer(10.0, 0.0, 300),
    "lat45": PointBuffer(-73.6, 45.5, 300),
    "lat70": PointBuffer(23.7, 70.0, 300),
    "southern": PointBuffer(151.2, -33.9, 250),
    "bbox_off_lattice": BBox(121.49133, 31.19071, 121.50517, 31.20129),
}
SCALES = (10, 30)
MARGIN = 8  # 10 m pixels of data around each ROI's window


def _cover(roi: Any) -> GridWindow:
    w = grid_window(roi, 10)
    return GridWindow(
        w.col_off - MARGIN, w.row_off - MARGIN, w.width + 2 * MARGIN, w.height + 2 * MARGIN, 10.0
    )


def _world(window: GridWindow, bands: Sequence[str] = BANDS) -> np.ndarray:
    return SyntheticProvider().render(window, None, [S2_BANDS.index(b) for b in bands])


#: (provider options, sensor, the requests the network boundary records or None)
FactoryResult = tuple[dict[str, Any], SensorSpec, list[Any] | None]


def synthetic_factory(root: Path, rois: Sequence[Any], monkeypatch: pytest.MonkeyPatch) -> FactoryResult:
    return {}, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS), None


def local_factory(root: Path, rois: Sequence[Any], monkeypatch: pytest.MonkeyPatch) -> FactoryResult:
    import rasterio

    folder = root / "local_tiles"
    folder.mkdir()
    for i, roi in enumerate(rois):
        w = _cover(roi)
        with rasterio.open(
            folder / f"tile_{i}.tif", "w", driver="GTiff", width=w.width, height=w.height,
            count=len(BANDS), dtype="float32", crs="EPSG:3857", transform=w.transform,
        ) as dst:  # fmt: skip
            dst.write(np.round(_world(w)))
            dst.descriptions = BANDS
    return {"path": str(folder)}, SensorSpec("local", BANDS), None


def stac_factory(root: Path, rois: Sequence[Any], monkeypatch: pytest.MonkeyPatch) -> FactoryResult:
    pytest.importorskip("odc.stac")
    from stac_catalog import Scene, build_catalog

    scenes = [Scene(f"roi{i}", "2022-07-01", _cover(roi)) for i, roi in enumerate(rois)]
    catalog = build_catalog(root / "stac", scenes, bands=BANDS)
    return {"catalog_url": catalog}, SensorSpec("stac:sentinel-2-l2a", BANDS), None


def gee_factory(root: Path, rois: Sequence[Any], monkeypatch: pytest.MonkeyPatch) -> FactoryResult:
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from fake_ee import FakeEarthEngine

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    fake = FakeEarthEngine().install(monkeypatch)  # the synthetic world, served on any grid
    options = {"project": "grid-project", "retry_backoff_s": 0.0}
    return options, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS), fake.requests


#: provider name -> data factory
GRID_FACTORIES: dict[str, Callable[[Path, Sequence[Any], pytest.MonkeyPatch], FactoryResult]] = {
    "synthetic": synthetic_factory,
    "local": local_factory,
    "stac": stac_factory,
    "gee": gee_factory,
}
#: providers whose data are the synthetic world (pixels compared exactly)
WORLD_PROVIDERS = ("synthetic", "local", "stac", "gee")
#: providers that render the world per request, composited over the request's dates
RENDERING_PROVIDERS = ("synthetic", "gee")


@pytest.fixture(scope="module", params=sorted(GRID_FACTORIES))
def provider_and_sensor(request, tmp_path_factory):
    name = request.param
    with pytest.MonkeyPatch.context() as mp:
        options, sensor, sent = GRID_FACTORIES[name](
            tmp_path_factory.mktemp(f"grid_{name}"), list(GRID_ROIS.values()), mp
        )
        yield name, get_provider(name, options), sensor, sent
        reset_runtime()
    ee_session.reset_session()  # a session the fake Earth Engine started is gone with it


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("roi_id", sorted(GRID_ROIS))
def test_every_provider_is_on_the_common_grid(provider_and_sensor, roi_id, scale):
    name, provider, sensor, sent = provider_and_sensor
    roi = GRID_ROIS[roi_id]
    n_sent = len(sent) if sent is not None else 0
    res = provider.fetch(roi, SUMMER, replace(sensor, scale_m=scale))
    window = grid_window(roi, scale)
    assert res.meta["grid"] == window.to_dict()
    assert res.meta["grid"]["crs"] == "EPSG:3857"
    assert res.meta["grid"]["transform"][:1] == [float(scale)]
    assert res.data.shape == (len(sensor.bands), *window.shape)
    assert res.meta["provider"] == name
    if sent is not None:  # what went over the network asked for exactly this grid, in one request
        (req,) = sent[n_sent:]
        a, b, c, d, e, f = window.transform_tuple
        assert req["grid"] == {
            "crsCode": "EPSG:3857",
            "affineTransform": {
                "scaleX": a, "shearX": b, "translateX": c, "shearY": d, "scaleY": e, "translateY": f,
            },
            "dimensions": {"width": window.width, "height": window.height},
        }  # fmt: skip
        assert [c, f] == [window.col_off * scale, -window.row_off * scale]
    if name in WORLD_PROVIDERS:
        if name in RENDERING_PROVIDERS:
            want = SyntheticProvider().render(window, SUMMER.date_range(), [S2_BANDS.index(b) for b in BANDS])
        else:
            want = np.round(_world(window))
        np.testing.assert_array_equal(res.data, want.astype(np.float32))


def test_the_grid_list_names_registered_providers():
    assert set(GRID_FACTORIES) <= set(list_providers())


def test_grid_windows_of_the_rois_are_what_the_lattice_says():
    # an independent statement of the rule: pixel edges on multiples of scale_m from the origin
    for roi in GRID_ROIS.values():
        for scale in SCALES:
            w = grid_window(roi, scale)
            t = w.transform_tuple
            assert t[2] == w.col_off * scale
            assert t[5] == -w.row_off * scale
            assert t[2] % scale == 0
            assert t[5] % scale == 0


# -- choosing the provider (backend="auto") -----------------------------------------------------------
@pytest.mark.parametrize(
    ("collection", "expected"),
    [
        ("local:/data/s2/*.tif", "local"),
        ("LOCAL:relative/dir", "local"),
        ("/data/scene.tif", "local"),
        ("./tiles", "local"),
        ("~/imagery/*.tif", "local"),
        ("cube.zarr", "local"),
        ("local", "local"),
        ("stac:sentinel-2-l2a", "stac"),
        ("STAC:landsat-c2-l2", "stac"),
        ("synthetic", "synthetic"),
        ("synthetic:world", "synthetic"),
        ("COPERNICUS/S2_SR_HARMONIZED", "gee"),
        ("LANDSAT/LC09/C02/T1_L2", "gee"),
    ],
)
def test_auto_picks_the_provider_the_collection_needs(monkeypatch, collection, expected):
    monkeypatch.delenv("RS_EMBED_DEFAULT_PROVIDER", raising=False)
    assert provider_for_collection(collection) == expected


def test_earth_engine_ids_follow_the_default_provider_variable(monkeypatch):
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "Synthetic")
    assert provider_for_collection("COPERNICUS/S2_SR_HARMONIZED") == "synthetic"
    assert provider_for_collection("stac:sentinel-2-l2a") == "stac"  # a prefix wins over the variable


def test_resolve_backend_auto_explicit_and_unknown(monkeypatch):
    monkeypatch.delenv("RS_EMBED_DEFAULT_PROVIDER", raising=False)
    provider_model = {"model": "m", "backend": ["provider"]}
    stac_sensor = SensorSpec("stac:sentinel-2-l2a", BANDS)
    assert resolve_backend("auto", provider_model, stac_sensor) == "stac"
    assert resolve_backend(None, provider_model, SensorSpec("local:/x/*.tif", BANDS)) == "local"
    assert resolve_backend("AUTO", provider_model, SensorSpec("synthetic", BANDS)) == "synthetic"
    for name in ("stac", "local", "synthetic"):
        assert resolve_backend(name, provider_model, stac_sensor) == name  # explicit wins
    with pytest.raises(ProviderError) as info:
        resolve_backend("nope", provider_model, stac_sensor)
    for name in ("'nope'", "'local'", "'stac'", "'synthetic'"):
        assert name in str(info.value)
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "not_a_provider")
    with pytest.raises(ProviderError, match="not_a_provider"):
        resolve_backend("auto", provider_model, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS))


def test_precomputed_products_stay_auto_and_touch_no_provider(monkeypatch):
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "not_a_provider")  # would fail if looked up
    precomputed = {"model": "tessera", "backend": ["auto"]}
    assert resolve_backend("auto", precomputed) == "auto"
    assert resolve_backend("auto", precomputed, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS)) == "auto"


def test_resolve_model_picks_the_provider_from_the_sensor(monkeypatch):
    monkeypatch.delenv("RS_EMBED_DEFAULT_PROVIDER", raising=False)
    rm = resolve_model(
        "rcf", backend="auto", sensor=SensorSpec("stac:sentinel-2-l2a", ("B2", "B3", "B4", "B8"))
    )
    assert rm.backend == "stac"
    rm = resolve_model("rcf", sensor=SensorSpec("local:/data/*.tif", ("B2", "B3", "B4", "B8")))
    assert rm.backend == "local"
    rm = resolve_model(
        "rcf", backend="synthetic", sensor=SensorSpec("stac:sentinel-2-l2a", ("B2", "B3", "B4", "B8"))
    )
    assert rm.backend == "synthetic"
    monkeypatch.setenv("RS_EMBED_DEFAULT_PROVIDER", "synthetic")
    assert resolve_model("rcf").backend == "synthetic"  # the default sensor is an Earth Engine id
