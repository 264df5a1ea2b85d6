"""Bring-your-own-data API: UserData, get_embedding(s)_from_data, list_models_for_data."""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

import rs_embed_dask
from rs_embed_dask import (
    ModelError,
    OutputSpec,
    PointBuffer,
    SpecError,
    TemporalSpec,
    UserData,
    api_data,
    get_embedding,
    get_embedding_from_data,
    get_embeddings_batch_from_data,
    list_models,
    list_models_for_data,
)
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import Embedder
from rs_embed_dask.user_data import COLLECTION_ALIASES, normalize_collection_id, resolve_declared_bands

S2 = "COPERNICUS/S2_SR_HARMONIZED"
S1 = "COPERNICUS/S1_GRD"
PROBE = "probe_rgb"
UTM33 = "EPSG:32633"


class ProbeRGB(Embedder):
    """Records the arrays and contexts it is given; the pooled embedding is the per-channel mean."""

    name = PROBE
    calls: ClassVar[list[dict[str, Any]]] = []

    def describe(self) -> dict[str, Any]:
        return {
            **self.describe_head({"collection": S2, "bands": ["B4", "B3", "B2"]}),
            "embedding_dim": 3,
        }

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        try:
            from distributed import get_worker

            get_worker()
            on_worker = True
        except (ImportError, ValueError):
            on_worker = False
        ctxs = list(contexts or [{}] * len(inputs))
        type(self).calls.append(
            {
                "arrays": [np.array(x, copy=True) for x in inputs],
                "temporals": [c.get("temporal") for c in ctxs],
                "spatials": [c.get("spatial") for c in ctxs],
                "on_worker": on_worker,
            }
        )
        out = []
        for x in inputs:
            arr = np.asarray(x, dtype=np.float32)
            data = arr.mean(axis=(-2, -1)) if output.mode == "pooled" else arr
            out.append(Embedding(data=np.ascontiguousarray(data), meta=self.base_meta(output)))
        return out


@pytest.fixture
def probe() -> Iterator[type[ProbeRGB]]:
    from rs_embed_dask.core.registry import register_model, unregister_model
    from rs_embed_dask.resolve import reset_runtime

    register_model(PROBE, ProbeRGB, overwrite=True)
    ProbeRGB.calls.clear()
    try:
        yield ProbeRGB
    finally:
        unregister_model(PROBE)
        reset_runtime()
        ProbeRGB.calls.clear()


def _constant_bands(values: Sequence[float], hw: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.stack([np.full(hw, v, dtype=np.float32) for v in values])


def _rng_s2(channels: int, hw: tuple[int, int] = (24, 24), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 4000, (channels, *hw)).astype(np.float32)


# -- UserData.validate ----------------------------------------------------------------
class _NotAffine:
    a = b = c = d = e = 1.0  # no "f"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"collection": " "}, "UserData.collection must be a non-empty collection id or alias."),
        ({"bands": ()}, "UserData.bands must be a non-empty tuple of band names, or None"),
        ({"bands": ("B2", " ", "B4")}, "UserData.bands must be a non-empty tuple of band names, or None"),
        ({"data": np.zeros((8, 8))}, "UserData.data must be [C,H,W] or [T,C,H,W], got shape=(8, 8)."),
        ({"data": np.zeros((1, 1, 3, 8, 8))}, "UserData.data must be [C,H,W] or [T,C,H,W], got shape="),
        ({"bands": ("B2", "B3")}, "UserData.data has 3 channels but declares 2 bands; one band name per"),
        ({"scale_m": 0}, "UserData.scale_m must be positive when provided."),
        ({"scale_m": -10}, "UserData.scale_m must be positive when provided."),
        ({"crs": UTM33}, "UserData.crs and UserData.transform must be given together; a georeferenced"),
        ({"transform": (10.0, 0, 0, 0, -10.0, 0)}, "UserData.crs and UserData.transform must be given"),
        ({"crs": UTM33, "transform": _NotAffine()}, "UserData.transform must be an affine.Affine"),
        (
            {"crs": UTM33, "transform": (10.0, 0, 0, 0, -10.0, 0)},
            "UserData.transform must be an affine.Affine (rasterio-style pixel -> CRS transform), got tuple.",
        ),
    ],
)
def test_validate_errors_and_wording(kwargs, message):
    base: dict[str, Any] = {"data": np.zeros((3, 8, 8)), "collection": "s2", "bands": ("B4", "B3", "B2")}
    d = UserData(**{**base, **kwargs})
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        d.validate()


def test_validate_accepts_good_declarations():
    from affine import Affine

    UserData(np.zeros((3, 8, 8)), "s2", bands=("B4", "B3", "B2")).validate()
    UserData(np.zeros((2, 3, 8, 8)), "s2", bands=("B4", "B3", "B2"), scale_m=10).validate()
    UserData(np.zeros((12, 8, 8)), "s2").validate()  # bands=None: resolved later
    UserData(
        np.zeros((3, 8, 8)), "s2", bands=("B4", "B3", "B2"), crs=UTM33, transform=Affine.identity()
    ).validate()


def test_signatures_match_rs_embed():
    sig = inspect.signature(UserData)
    assert list(sig.parameters) == [
        "data",
        "collection",
        "spatial",
        "bands",
        "temporal",
        "scale_m",
        "crs",
        "transform",
    ]
    assert all(sig.parameters[p].default is None for p in list(sig.parameters)[2:])
    fr = inspect.signature(UserData.from_raster)
    assert [(p.name, p.kind.name, p.default) for p in fr.parameters.values()] == [
        ("path", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("collection", "KEYWORD_ONLY", inspect.Parameter.empty),
        ("bands", "KEYWORD_ONLY", None),
        ("temporal", "KEYWORD_ONLY", None),
    ]
    one = inspect.signature(get_embedding_from_data).parameters
    assert list(one) == ["model", "data", "modality", "output", "device", "input_prep", "model_kwargs"]
    many = inspect.signature(get_embeddings_batch_from_data).parameters
    assert list(many) == [
        "model",
        "datas",
        "modality",
        "output",
        "device",
        "batch_size",
        "input_prep",
        "model_kwargs",
    ]
    for params in (one, many):
        assert params["modality"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["output"].default == OutputSpec.pooled()
        assert params["device"].default == "auto"
        assert params["input_prep"].default is None
        assert params["model_kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert many["batch_size"].default is None
    assert {
        "UserData",
        "get_embedding_from_data",
        "get_embeddings_batch_from_data",
        "list_models_for_data",
    } <= set(rs_embed_dask.__all__)


# -- aliases, band matching -----------------------------------------------------------
@pytest.mark.parametrize("alias", ["s2", "s2_sr", "s2_l2a", "sentinel2", "sentinel_2", "S2", "Sentinel-2"])
def test_s2_aliases(alias):
    assert normalize_collection_id(alias) == S2


@pytest.mark.parametrize("alias", ["s1", "s1_grd", "sentinel1", "sentinel_1", "Sentinel-1"])
def test_s1_aliases(alias):
    assert normalize_collection_id(alias) == S1


def test_full_ids_pass_through():
    assert normalize_collection_id(" LANDSAT/LC08/C02/T1_L2 ") == "LANDSAT/LC08/C02/T1_L2"
    assert set(COLLECTION_ALIASES.values()) == {S1, S2}


def test_bands_sliced_and_reordered_to_the_model_order(probe):
    data = _constant_bands([1000, 2000, 3000, 8000])  # B2, B3, B4, B8
    emb = get_embedding_from_data(PROBE, UserData(data, "sentinel_2", bands=("B2", "B3", "B4", "B8")))
    (received,) = probe.calls[-1]["arrays"]
    assert received.shape == (3, 8, 8)
    assert received.dtype == np.float32
    np.testing.assert_array_equal(received[:, 0, 0], [3000, 2000, 1000])  # B4, B3, B2
    np.testing.assert_array_equal(emb.data, [3000, 2000, 1000])
    ui = emb.meta["user_input"]
    assert ui == {
        "source": "user_data",
        "collection": S2,
        "declared_bands": ["B2", "B3", "B4", "B8"],
        "bands_used": ["B4", "B3", "B2"],
        "channel_indices": [2, 1, 0],
        "declared_scale_m": None,
        "projection": {"crs": None, "aligned": False},
    }


def test_band_aliases_and_canonical_default(probe):
    rgb = _constant_bands([10.0, 20.0, 30.0])
    emb = get_embedding_from_data(PROBE, UserData(rgb, "s2", bands=("blue", "GREEN", "Red")))
    np.testing.assert_array_equal(emb.data, [30, 20, 10])
    twelve = _constant_bands([float(100 * (i + 1)) for i in range(12)])  # B1..B12 incl. B8A
    emb = get_embedding_from_data(PROBE, UserData(twelve, "s2"))
    np.testing.assert_array_equal(emb.data, [400, 300, 200])  # B4 = 4th, B3 = 3rd, B2 = 2nd
    assert emb.meta["user_input"]["declared_bands"][8] == "B8A"
    assert emb.meta["user_input"]["channel_indices"] == [3, 2, 1]


def test_bands_omitted_needs_a_canonical_order(probe):
    with pytest.raises(SpecError, match="canonical order for 'COPERNICUS/S2_SR_HARMONIZED' has 12 bands"):
        get_embedding_from_data(PROBE, UserData(_constant_bands([1, 2, 3]), "s2"))
    with pytest.raises(SpecError, match="has no canonical band order"):
        resolve_declared_bands(UserData(_constant_bands([1, 2]), "s1"))


def test_matching_refusals(probe):
    rgb = _constant_bands([1000, 2000, 3000])
    with pytest.raises(
        ModelError, match=r"^Model 'probe_rgb' expects imagery from collection 'COPERNICUS/S2_SR_HARMONIZED'"
    ):
        get_embedding_from_data(PROBE, UserData(rgb, "s1", bands=("B4", "B3", "B2")))
    with pytest.raises(ModelError, match=re.escape("but the provided data lacks ['B2']")):
        get_embedding_from_data(PROBE, UserData(rgb, "s2", bands=("B4", "B3", "B8")))
    with pytest.raises(ModelError, match=re.escape("UserData.bands declares duplicate band name(s) ['B4']")):
        get_embedding_from_data(PROBE, UserData(rgb, "s2", bands=("B4", "RED", "B2")))
    assert probe.calls == []


def test_request_refusals(probe):
    good = UserData(_constant_bands([1000, 2000, 3000]), "s2", bands=("B4", "B3", "B2"))
    with pytest.raises(ModelError, match=re.escape("datas must be a non-empty list[UserData].")):
        get_embeddings_batch_from_data(PROBE, [])
    with pytest.raises(ModelError, match=re.escape("datas must be a non-empty list[UserData].")):
        get_embeddings_batch_from_data(PROBE, (good,))  # type: ignore[arg-type]
    with pytest.raises(
        ModelError,
        match=r"^Model 'gse' serves precomputed embeddings; it does not embed user-provided imagery. ",
    ):
        get_embedding_from_data("gse", good)
    with pytest.raises(ModelError, match=r"^Model 'tessera' serves precomputed embeddings"):
        get_embedding_from_data("tessera", good)
    with pytest.raises(ModelError, match=re.escape("batch_size must be >= 1, got 0.")):
        get_embeddings_batch_from_data(PROBE, [good], batch_size=0)
    with pytest.raises(ModelError, match=r"^Unknown model 'nope'"):
        get_embedding_from_data("nope", good)
    with pytest.raises(SpecError, match="scale_m must be positive"):
        get_embedding_from_data(PROBE, UserData(good.data, "s2", bands=good.bands, scale_m=0))
    with pytest.raises(ModelError, match=r"embeds single images \[C,H,W\]"):
        get_embedding_from_data(PROBE, UserData(np.stack([good.data, good.data]), "s2", bands=good.bands))
    assert probe.calls == []


def test_georef_conditioned_model_needs_a_location():
    six = UserData(_rng_s2(6, (8, 8)), "s2", bands=("B2", "B3", "B4", "B8A", "B11", "B12"))
    with pytest.raises(ModelError, match=r"^Model 'prithvi' conditions on request geometry"):
        get_embedding_from_data("prithvi", six)
    report = {r["model"]: r for r in list_models_for_data(six)}
    assert report["prithvi"]["compatible"] is False
    assert report["prithvi"]["reason"].startswith("Model 'prithvi' conditions on request geometry")
    located = UserData(six.data, "s2", bands=six.bands, spatial=PointBuffer(12.0, 45.0, 40))
    assert {r["model"]: r for r in list_models_for_data(located)}["prithvi"]["compatible"] is True


def test_warns_when_s2_values_look_normalised(probe):
    scaled = UserData(_constant_bands([0.1, 0.2, 0.3]), "s2", bands=("B4", "B3", "B2"))
    with pytest.warns(UserWarning, match=r"has max value 0\.3; raw surface-reflectance DN") as rec:
        get_embedding_from_data(PROBE, scaled)
    assert any(r.filename == __file__ for r in rec)  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_embedding_from_data(
            PROBE, UserData(_constant_bands([1000, 2, 3]), "s2", bands=("B4", "B3", "B2"))
        )


def test_batch_groups_by_temporal_and_keeps_order(probe):
    t1, t2 = TemporalSpec.year(2021), TemporalSpec.range("2022-06-01", "2022-09-01")
    temporals = [t1, t2, t1, None, t2]
    datas = [
        UserData(_constant_bands([i, 10 + i, 20 + i]), "s2", bands=("B2", "B3", "B4"), temporal=t)
        for i, t in enumerate(temporals)
    ]
    embs = get_embeddings_batch_from_data(PROBE, datas, batch_size=1)
    for i, e in enumerate(embs):
        np.testing.assert_array_equal(e.data, [20 + i, 10 + i, i])
        assert e.meta["temporal"] == (temporals[i].to_dict() if temporals[i] else None)
    seen = [c["temporals"] for c in probe.calls]
    assert all(len(set(map(repr, ts))) == 1 for ts in seen)  # one temporal per forward call
    assert [ts[0] for ts in seen] == [t1, t1, t2, t2, None]  # batch_size=1, groups in first-seen order


# -- georeferenced rasters ------------------------------------------------------------
def _utm_raster(hw: tuple[int, int] = (20, 30)) -> tuple[np.ndarray, Any]:
    from affine import Affine

    h, w = hw
    rows, cols = np.mgrid[0:h, 0:w]
    data = np.stack([(k + 1) * 100000 + rows * 1000 + cols for k in range(4)]).astype(np.float32)
    return data, Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 5_000_000.0)  # ~12.4 E: rotated vs the lattice


@pytest.fixture
def geotiff(tmp_path) -> str:
    import rioxarray  # noqa: F401
    import xarray as xr

    data, t = _utm_raster()
    h, w = data.shape[1:]
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": [1, 2, 3, 4],
            "y": t.f + (np.arange(h) + 0.5) * t.e,
            "x": t.c + (np.arange(w) + 0.5) * t.a,
        },
    ).rio.write_crs(UTM33)
    path = str(tmp_path / "utm33.tif")
    da.rio.to_raster(path)
    return path


def _expected_window(t: Any, hw: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """``(col_off, row_off, width, height)`` of the outward-snapped lattice window, computed with pyproj."""
    from pyproj import Transformer

    h, w = hw
    corners = [t * (0, 0), t * (w, 0), t * (0, h), t * (w, h)]
    to_ll = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    to_m = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    lons, lats = to_ll.transform(*zip(*corners, strict=True))
    (x0, x1), (y0, y1) = to_m.transform([min(lons), max(lons)], [min(lats), max(lats)])
    c0, c1 = math.floor(x0 / scale), math.ceil(x1 / scale)
    r0, r1 = math.floor(-y1 / scale), math.ceil(-y0 / scale)
    return c0, r0, c1 - c0, r1 - r0


def test_from_raster_reads_pixels_and_georeferencing(geotiff):
    d = UserData.from_raster(geotiff, collection="s2", bands=("B2", "B3", "B4", "B8"))
    data, t = _utm_raster()
    np.testing.assert_array_equal(d.data, data)
    assert d.crs == UTM33
    assert tuple(d.transform)[:6] == tuple(t)[:6]
    assert d.scale_m == 10
    assert d.spatial is None
    assert d.temporal is None
    d.validate()


def test_georeferenced_raster_is_resampled_onto_the_lattice(geotiff, probe):
    from pyproj import Transformer

    d = UserData.from_raster(geotiff, collection="s2", bands=("B2", "B3", "B4", "B8"))
    emb = get_embedding_from_data(PROBE, d)
    (received,) = probe.calls[-1]["arrays"]
    data, t = _utm_raster()
    c0, r0, w, h = _expected_window(t, data.shape[1:], 10.0)
    assert received.shape == (3, h, w)
    assert h > data.shape[1]
    assert w > data.shape[2]
    proj = emb.meta["user_input"]["projection"]
    assert proj["crs"] == UTM33
    assert proj["aligned"] is True
    assert proj["resampling"] == "nearest"
    assert proj["output_crs"] == "EPSG:3857"
    assert proj["scale_m"] == 10.0
    assert tuple(proj["grid_hw"]) == (h, w)
    assert tuple(proj["input_hw"]) == (20, 30)
    assert tuple(proj["transform"])[:6] == (10.0, 0.0, c0 * 10.0, 0.0, -10.0, -r0 * 10.0)
    assert emb.meta["input_grid"]["col_off"] == c0
    assert emb.meta["input_grid"]["row_off"] == r0
    spatial = probe.calls[-1]["spatials"][0]  # the footprint stands in for spatial
    lon_c, lat_c = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(300_150.0, 4_999_900.0)
    assert spatial.minlon < lon_c < spatial.maxlon
    assert spatial.minlat < lat_c < spatial.maxlat
    assert spatial.maxlon - spatial.minlon < 0.005
    # a few pixels by hand: the source pixel under each output pixel's centre
    to_utm = Transformer.from_crs("EPSG:3857", UTM33, always_xy=True)
    for i, j in [(h // 2, w // 2), (3, 4), (h - 4, w - 5), (h // 3, 2 * w // 3)]:
        x, y = to_utm.transform((c0 + j + 0.5) * 10.0, -(r0 + i + 0.5) * 10.0)
        r, c = math.floor((t.f - y) / 10.0), math.floor((x - t.c) / 10.0)
        assert 0 <= r < 20
        assert 0 <= c < 30
        # model order B4, B3, B2 = declared channels 2, 1, 0
        np.testing.assert_array_equal(received[:, i, j], data[[2, 1, 0], r, c])
    # outside the raster: the sensor's fill value (0); inside: actual raster values only
    assert (received == 0).any()
    assert set(np.unique(received[0][received[0] != 0])) <= set(np.unique(data[2]))
    # agrees with GDAL's nearest-neighbour warp onto the same window
    import rioxarray  # noqa: F401
    import xarray as xr
    from affine import Affine

    src = xr.DataArray(
        data[2], dims=("y", "x"),
        coords={"y": t.f + (np.arange(20) + 0.5) * t.e, "x": t.c + (np.arange(30) + 0.5) * t.a},
    ).rio.write_crs(UTM33).rio.write_nodata(0)  # fmt: skip
    warped = src.rio.reproject(
        "EPSG:3857",
        transform=Affine(10.0, 0.0, c0 * 10.0, 0.0, -10.0, -r0 * 10.0),
        shape=(h, w),
        resampling=0,
    ).values
    assert np.mean(warped == received[0]) > 0.97


@pytest.mark.parametrize(
    ("col", "row", "scale"), [(123456, -500012, 10.0), (-700000, 420000, 10.0), (12345, 54321, 30.0)]
)
def test_raster_already_on_the_lattice_is_unchanged(col, row, scale):
    from affine import Affine

    from rs_embed_dask.user_data import align_to_common_grid

    arr = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7) + 1
    t = Affine(scale, 0.0, col * scale, 0.0, -scale, -row * scale)
    d = UserData(arr, "s2", bands=("B4", "B3", "B2"), crs="EPSG:3857", transform=t)
    out, proj, window = align_to_common_grid(arr, d, scale_m=scale, fill_value=0.0)
    np.testing.assert_array_equal(out, arr)
    assert (window.col_off, window.row_off, window.shape) == (col, row, (5, 7))
    assert proj["crs"] == "EPSG:3857"


def test_dataarray_with_crs(geotiff, probe):
    import rioxarray

    da = rioxarray.open_rasterio(geotiff).load()
    da = da.assign_coords(band=["B2", "B3", "B4", "B8"]).transpose("y", "x", "band")
    d = UserData(da, "s2")  # bands from the band coordinate, georeferencing from .rio
    assert d.bands == ("B2", "B3", "B4", "B8")
    assert d.crs == UTM33
    assert d.scale_m == 10
    assert d.data.dims == ("band", "y", "x")
    from_file = UserData.from_raster(geotiff, collection="s2", bands=("B2", "B3", "B4", "B8"))
    assert tuple(d.transform)[:6] == tuple(from_file.transform)[:6]
    a = get_embedding_from_data(PROBE, d, output=OutputSpec.grid())
    b = get_embedding_from_data(PROBE, from_file, output=OutputSpec.grid())
    np.testing.assert_array_equal(a.data, b.data)
    # rcf end to end on the DataArray
    e = get_embedding_from_data("rcf", d)
    assert e.data.shape == (512,)
    assert np.isfinite(e.data).all()
    assert e.data.std() > 0
    assert e.meta["user_input"]["projection"]["aligned"] is True
    # a plain DataArray without a CRS is a plain array
    import xarray as xr

    plain = UserData(
        xr.DataArray(np.zeros((3, 4, 4)), dims=("band", "y", "x")), "s2", bands=("B4", "B3", "B2")
    )
    assert plain.crs is None
    assert plain.transform is None
    plain.validate()


# -- list_models_for_data -------------------------------------------------------------
def test_list_models_for_data_records():
    d = UserData(np.zeros((4, 4, 4)), "s2", bands=("B8", "B4", "B3", "B2"))
    report = list_models_for_data(d)
    assert [r["model"] for r in report] == list_models()
    assert all(set(r) == {"model", "compatible", "bands_used", "reason"} for r in report)
    by = {r["model"]: r for r in report}
    assert by["rcf"] == {
        "model": "rcf",
        "compatible": True,
        "bands_used": ["B2", "B3", "B4", "B8"],
        "reason": None,
    }
    assert by["remoteclip"] == {
        "model": "remoteclip", "compatible": True, "bands_used": ["B4", "B3", "B2"], "reason": None,
    }  # fmt: skip
    assert by["gse"]["compatible"] is False
    assert by["gse"]["bands_used"] is None
    assert by["gse"]["reason"].startswith(
        "Model 'gse' serves precomputed embeddings; it does not embed user-provided imagery."
    )
    rgb = {
        r["model"]: r
        for r in list_models_for_data(UserData(np.zeros((3, 4, 4)), "s2", bands=("B4", "B3", "B2")))
    }
    assert rgb["rcf"]["compatible"] is False
    assert "lacks ['B8']" in rgb["rcf"]["reason"]
    assert rgb["remoteclip"]["compatible"] is True
    with pytest.raises(SpecError):
        list_models_for_data(UserData(np.zeros((3, 4, 4)), "", bands=("B4", "B3", "B2")))


def test_list_models_for_data_loads_no_weights(monkeypatch):
    from rs_embed_dask.resolve import LOAD_COUNTS

    before = dict(LOAD_COUNTS)
    list_models_for_data(UserData(np.zeros((12, 4, 4)), "s2"))
    assert dict(LOAD_COUNTS) == before


# -- rcf end to end -------------------------------------------------------------------
def test_rcf_matches_the_provider_path():
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model

    roi, t = PointBuffer(121.5, 31.2, 320), TemporalSpec.range("2022-06-01", "2022-09-01")
    fetched = fetch_input(resolve_model("rcf", backend="synthetic"), roi, t).data  # B2, B3, B4, B8
    ref = get_embedding("rcf", spatial=roi, temporal=t, backend="synthetic")
    mine = get_embedding_from_data(
        "rcf", UserData(fetched, "s2", bands=("B2", "B3", "B4", "B8"), spatial=roi, temporal=t)
    )
    np.testing.assert_allclose(mine.data, ref.data, rtol=1e-6, atol=1e-7)
    # superset, shuffled bands: the same channels reach the model
    extra = np.full_like(fetched[:1], 7777.0)
    shuffled = np.concatenate([fetched[[3, 1]], extra, fetched[[2, 0]]])
    other = get_embedding_from_data("rcf", UserData(shuffled, "s2", bands=("nir", "B3", "B11", "B4", "B2")))
    np.testing.assert_array_equal(other.data, mine.data)
    assert other.meta["user_input"]["channel_indices"] == [4, 1, 3, 0]
    grid = get_embedding_from_data(
        "rcf", UserData(fetched, "s2", bands=("B2", "B3", "B4", "B8")), output=OutputSpec.grid()
    )
    assert grid.data.ndim == 3
    assert grid.data.shape[0] == 512
    # model kwargs reach the model; unknown ones are refused before any work
    small = get_embedding_from_data(
        "rcf", UserData(fetched, "s2", bands=("B2", "B3", "B4", "B8")), features=64
    )
    assert small.data.shape == (64,)
    with pytest.raises(ModelError, match="does not accept model-specific keyword arguments"):
        get_embedding_from_data("rcf", UserData(fetched, "s2", bands=("B2", "B3", "B4", "B8")), nope=1)


# -- on a Dask cluster ----------------------------------------------------------------
@pytest.mark.cluster
def test_batch_runs_on_an_active_distributed_client(probe, monkeypatch):
    from distributed import Client, LocalCluster

    datas = [
        UserData(
            _rng_s2(4, (16, 16), seed=i),
            "s2",
            bands=("B2", "B3", "B4", "B8"),
            temporal=TemporalSpec.year(2020 + i % 2),
        )
        for i in range(5)
    ]
    here = get_embeddings_batch_from_data("rcf", datas)
    here_probe = get_embeddings_batch_from_data(PROBE, datas)
    assert not any(c["on_worker"] for c in probe.calls)
    probe.calls.clear()
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        monkeypatch.setattr(api_data, "CLUSTER_CHUNK_SIZE", 2)
        remote = get_embeddings_batch_from_data("rcf", datas)
        remote_probe = get_embeddings_batch_from_data(PROBE, datas)
        assert probe.calls
        assert all(c["on_worker"] for c in probe.calls)
        assert max(len(c["arrays"]) for c in probe.calls) <= 2
        probe.calls.clear()
        one = get_embedding_from_data(PROBE, datas[0])  # the single form stays in this process
        assert len(probe.calls) == 1
        assert not probe.calls[0]["on_worker"]
        np.testing.assert_array_equal(one.data, remote_probe[0].data)
        # a large list without an active client goes to a cluster too (export_client's)
        probe.calls.clear()
        monkeypatch.setattr(api_data, "CLUSTER_MIN_ITEMS", 3)
        monkeypatch.setattr(api_data, "_active_client", lambda: None)

        @contextlib.contextmanager
        def fake_export_client(c=None, **_):
            assert c is None
            yield client

        monkeypatch.setattr("rs_embed_dask.cluster.export_client", fake_export_client)
        big = get_embeddings_batch_from_data(PROBE, datas)
        assert probe.calls
        assert all(c["on_worker"] for c in probe.calls)
        probe.calls.clear()
        get_embeddings_batch_from_data(PROBE, datas[:2])  # below the threshold: here
        assert probe.calls
        assert not any(c["on_worker"] for c in probe.calls)
    for a, b in zip(here, remote, strict=True):  # other forward batches: float32 rounding only
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)
        assert a.meta["user_input"] == b.meta["user_input"]
    for a, b, c in zip(here_probe, remote_probe, big, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.data, c.data)
