"""Specs, exceptions and the single-ROI API's validation (reference §1.2, §1.10)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pyproj import Transformer

from rs_embed_dask import (
    BBox,
    Embedding,
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    FetchSpec,
    InputPrepSpec,
    ModelError,
    OutputSpec,
    PointBuffer,
    ProviderError,
    RSEmbedError,
    SensorSpec,
    SpecError,
    TemporalSpec,
    describe_model,
    get_embedding,
    get_embeddings_batch,
)
from rs_embed_dask.core.errors import TransientProviderError
from rs_embed_dask.core.specs import resolve_input_prep
from rs_embed_dask.core.types import ExportLayout
from rs_embed_dask.geometry import grid_window

S2 = "COPERNICUS/S2_SR_HARMONIZED"
ROI = PointBuffer(121.5, 31.2, 320)
T = TemporalSpec.range("2022-06-01", "2022-09-01")


# -- exception hierarchy ----------------------------------------------------------------
def test_exception_hierarchy():
    assert issubclass(SpecError, ValueError)
    assert issubclass(ModelError, ValueError)
    assert issubclass(ProviderError, RuntimeError)
    for cls in (SpecError, ModelError, ProviderError, TransientProviderError):
        assert issubclass(cls, RSEmbedError)
    assert issubclass(TransientProviderError, ProviderError)
    assert not issubclass(ProviderError, ValueError)


def test_transient_error_pickles_with_status():
    err = pickle.loads(pickle.dumps(TransientProviderError("slow down", status=429)))
    assert isinstance(err, TransientProviderError)
    assert err.status == 429
    assert str(err) == "slow down"


# -- §1.10 rows about specs ---------------------------------------------------------------
def _raises(exc_type, prefix, fn):
    with pytest.raises(exc_type) as info:
        fn()
    assert type(info.value) is exc_type
    assert str(info.value).startswith(prefix), str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("call", "exc_type", "prefix"),
    [
        (
            lambda: BBox(1, 0, 0, 1).validate(),
            SpecError,
            "Invalid bbox bounds: longitudes must be in [-180, 180] with minlon < maxlon; got minlon=1, maxlon=0.",
        ),
        (
            lambda: BBox(-181, 0, 0, 1).validate(),
            SpecError,
            "Invalid bbox bounds: longitudes must be in [-180, 180] with minlon < maxlon;",
        ),
        (
            lambda: BBox(0, 0, 181, 1).validate(),
            SpecError,
            "Invalid bbox bounds: longitudes must be in [-180, 180] with minlon < maxlon;",
        ),
        (
            lambda: BBox(0, 1, 1, 1).validate(),
            SpecError,
            "Invalid bbox bounds: latitudes must be in [-90, 90] with minlat < maxlat;",
        ),
        (
            lambda: BBox(0, -91, 1, 1).validate(),
            SpecError,
            "Invalid bbox bounds: latitudes must be in [-90, 90] with minlat < maxlat;",
        ),
        (lambda: PointBuffer(0, 0, 0).validate(), SpecError, "buffer_m must be positive."),
        (lambda: PointBuffer(0, 0, -5).validate(), SpecError, "buffer_m must be positive."),
        (lambda: TemporalSpec.year(0).validate(), SpecError, "TemporalSpec.year must be in [1, 9999]."),
        (lambda: TemporalSpec.year(10000).validate(), SpecError, "TemporalSpec.year must be in [1, 9999]."),
        (
            lambda: TemporalSpec.range("2022/01/01", "2022-02-01").validate(),
            SpecError,
            "TemporalSpec.range expects ISO dates 'YYYY-MM-DD'.",
        ),
        (
            lambda: TemporalSpec.range("2022-01-01", "2022-01-01").validate(),
            SpecError,
            "TemporalSpec.range requires start < end.",
        ),
        (
            lambda: TemporalSpec.range("2022-02-01", "2022-01-01").validate(),
            SpecError,
            "TemporalSpec.range requires start < end.",
        ),
        (
            lambda: OutputSpec(mode="foo"),
            SpecError,
            "Unknown output mode: 'foo' (expected 'grid' or 'pooled').",
        ),
        (lambda: OutputSpec.pooled("median"), SpecError, "Unknown pooling: 'median'"),
        (lambda: OutputSpec.grid(scale_m=10), SpecError, "OutputSpec.scale_m is no longer supported."),
        (lambda: OutputSpec.pooled(scale_m=10), SpecError, "OutputSpec.scale_m is no longer supported."),
        (lambda: OutputSpec.grid(foo=1), SpecError, "Unexpected OutputSpec.grid() keyword(s): ['foo']"),
        (
            lambda: OutputSpec(mode="grid", grid_orientation="sideways"),
            SpecError,
            "Unknown grid_orientation: 'sideways'",
        ),
        (
            lambda: ExportConfig(format="parquet").validate(),
            ModelError,
            "Unsupported export format: 'parquet'.",
        ),
    ],
    ids=lambda v: None if callable(v) or isinstance(v, type) else str(v)[:40],
)
def test_spec_exception_table(call, exc_type, prefix):
    _raises(exc_type, prefix, call)


def test_pointbuffer_latitude_not_checked():
    PointBuffer(0, 100, 10).validate()  # rs-embed: passes, lat is not checked


def test_equal_bbox_bounds_are_invalid():
    with pytest.raises(SpecError, match="longitudes"):
        BBox(1, 0, 1, 1).validate()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", None])
def test_bbox_non_numeric_bounds(bad):
    with pytest.raises(SpecError, match="finite numbers"):
        BBox(bad, 0, 1, 1).validate()


def test_numpy_scalar_bounds_accepted():
    # coordinates read from numpy / GeoDataFrames arrive as numpy scalars
    BBox(np.float32(0), np.float32(0), np.float64(1), np.int64(1)).validate()
    PointBuffer(np.float32(10.5), np.float32(45.0), np.int32(100)).validate()


# -- §1.10 rows about the single-ROI API -------------------------------------------------------
def _embed(**kw):
    args = {"spatial": ROI, "temporal": T, "backend": "synthetic", **kw}
    return get_embedding(args.pop("model", "rcf"), **args)


@pytest.mark.parametrize(
    ("call", "exc_type", "prefix"),
    [
        (lambda: describe_model("nope"), ModelError, "Unknown model 'nope'. Available: ["),
        (lambda: _embed(model="nope"), ModelError, "Unknown model 'nope'. Available: ["),
        (
            lambda: _embed(spatial=BBox(1, 0, 0, 1)),
            SpecError,
            "Invalid bbox bounds: longitudes must be in [-180, 180] with minlon < maxlon; got minlon=1, maxlon=0.",
        ),
        (lambda: _embed(spatial="x"), ModelError, "Invalid spatial spec type: <class 'str'>"),
        (
            lambda: _embed(sensor=SensorSpec(S2, ("B2", "B3", "B4", "B8")), fetch=FetchSpec(scale_m=20)),
            ModelError,
            "Use either sensor=... or fetch=..., not both.",
        ),
        (lambda: _embed(modality="s1"), ModelError, "Model 'rcf' does not expose modality='s1'."),
        (
            lambda: _embed(input_prep="foo"),
            ModelError,
            "input_prep string must be 'auto'/'resize'/'tile', got 'foo'",
        ),
        (
            lambda: _embed(foo=1),
            ModelError,
            "Model rcf does not accept model-specific keyword arguments for get_embedding(); got keys ['foo'].",
        ),
        (
            lambda: get_embeddings_batch("rcf", spatials=[], temporal=T, backend="synthetic"),
            ModelError,
            "spatials must be a non-empty list[SpatialSpec].",
        ),
        (
            lambda: get_embeddings_batch("rcf", spatials=(ROI,), temporal=T, backend="synthetic"),
            ModelError,
            "spatials must be a non-empty list[SpatialSpec].",
        ),
        (lambda: _embed(temporal=TemporalSpec.year(0)), SpecError, "TemporalSpec.year must be in [1, 9999]."),
        (lambda: _embed(spatial=PointBuffer(0, 0, 0)), SpecError, "buffer_m must be positive."),
        (
            lambda: _embed(output=OutputSpec.grid(), spatial=BBox(0, 1, 1, 1)),
            SpecError,
            "Invalid bbox bounds",
        ),
        (lambda: _embed(backend="nope"), ProviderError, "Unknown provider backend='nope'. Available: ["),
    ],
    ids=lambda v: None if callable(v) or isinstance(v, type) else str(v)[:40],
)
def test_api_exception_table(call, exc_type, prefix):
    _raises(exc_type, prefix, call)


def test_spec_error_wins_over_unknown_model():
    # rs-embed validates specs before it resolves the model
    with pytest.raises(SpecError):
        get_embedding("nope", spatial=BBox(1, 0, 0, 1), temporal=T, backend="synthetic")


def test_unknown_model_lists_available():
    err = _raises(ModelError, "Unknown model 'nope'.", lambda: describe_model("nope"))
    assert "'rcf'" in str(err)


# -- CRS: accepted and converted at the boundary (intended difference from rs-embed) -------------
def test_bbox_in_utm_converts_like_pyproj():
    bb = BBox(350000.0, 3450000.0, 360000.0, 3460000.0, crs="EPSG:32651")
    bb.validate()
    ll = bb.to_wgs84()
    assert ll.crs == "EPSG:4326"
    tr = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True)
    xs, ys = tr.transform(
        [350000.0, 360000.0, 350000.0, 360000.0], [3450000.0, 3450000.0, 3460000.0, 3460000.0]
    )
    # the lon/lat envelope of a small UTM box is the envelope of its corners
    np.testing.assert_allclose(
        [ll.minlon, ll.minlat, ll.maxlon, ll.maxlat], [min(xs), min(ys), max(xs), max(ys)], atol=1e-6
    )
    assert 121.0 < ll.minlon < ll.maxlon < 122.0
    assert 31.0 < ll.minlat < ll.maxlat < 31.5


def test_pointbuffer_in_web_mercator_converts_like_pyproj():
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(121.5, 31.2)
    pb = PointBuffer(x, y, 500, crs="EPSG:3857")
    pb.validate()
    ll = pb.to_wgs84()
    assert ll.crs == "EPSG:4326"
    assert ll.buffer_m == 500
    assert ll.lon == pytest.approx(121.5, abs=1e-9)
    assert ll.lat == pytest.approx(31.2, abs=1e-9)
    assert grid_window(pb, 10) == grid_window(PointBuffer(121.5, 31.2, 500), 10)


@pytest.mark.parametrize("crs", ["EPSG:0", "not-a-crs", "EPSG:99999999"])
def test_unknown_crs_is_a_spec_error(crs):
    for spec in (BBox(0, 0, 1, 1, crs=crs), PointBuffer(0, 0, 10, crs=crs)):
        with pytest.raises(SpecError, match="crs="):
            spec.validate()
    with pytest.raises(SpecError, match="crs="):
        _embed(spatial=BBox(0, 0, 1, 1, crs=crs))


def test_projected_bbox_needs_ordered_bounds():
    with pytest.raises(SpecError, match="EPSG:32651"):
        BBox(360000.0, 3450000.0, 350000.0, 3460000.0, crs="EPSG:32651").validate()


@pytest.mark.parametrize("crs", ["EPSG:4326", "epsg:4326", "WGS84", "OGC:CRS84"])
def test_wgs84_spellings(crs):
    bb = BBox(1, 2, 3, 4, crs=crs)
    bb.validate()
    assert bb.to_wgs84() == BBox(1, 2, 3, 4)


# -- TemporalSpec ---------------------------------------------------------------------------
def test_temporal_year():
    t = TemporalSpec.year(2022)
    assert (t.mode, t.year, t.start, t.end) == ("year", 2022, None, None)
    t.validate()
    assert [d.isoformat() for d in t.date_range()] == ["2022-01-01", "2023-01-01"]
    assert t.to_dict() == {"mode": "year", "year": 2022, "start": None, "end": None}


def test_temporal_range_has_year_none():
    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    t.validate()
    assert t.year is None  # rs-embed's quirk stores a function object here
    assert t.to_dict() == {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}
    assert [d.isoformat() for d in t.date_range()] == ["2022-06-01", "2022-09-01"]
    assert t == TemporalSpec(mode="range", start="2022-06-01", end="2022-09-01")
    assert hash(t) == hash(TemporalSpec.range("2022-06-01", "2022-09-01"))


def test_temporal_year_without_year_fails():
    """rs-embed 0.3.1's messages, word for word."""
    _raises(SpecError, "TemporalSpec.year requires year.", TemporalSpec(mode="year").validate)
    _raises(SpecError, "TemporalSpec.year requires an integer year.", TemporalSpec(mode="year", year="x").validate)
    _raises(SpecError, "TemporalSpec.year requires an integer year.", TemporalSpec(mode="year", year=float("inf")).validate)


def test_temporal_fractional_year_is_refused_not_truncated():
    """Stricter than rs-embed, which turns 2022.7 into 2022 (issue 16)."""
    for y in (2022.7, -0.5, np.float32(2022.5)):
        _raises(SpecError, "TemporalSpec.year requires an integer year.", TemporalSpec(mode="year", year=y).validate)
    for y in (2022.0, np.int64(2022), "2022"):
        TemporalSpec(mode="year", year=y).validate()


def test_temporal_bad_mode_and_missing_dates():
    _raises(SpecError, "Unknown TemporalSpec mode: decade (expected 'year' or 'range').", TemporalSpec(mode="decade").validate)
    _raises(
        SpecError,
        "TemporalSpec.range requires start and end.",
        TemporalSpec(mode="range", start="2022-01-01").validate,
    )


# -- OutputSpec --------------------------------------------------------------------------------
def test_output_constructors():
    assert OutputSpec.pooled() == OutputSpec(mode="pooled", pooling="mean", grid_orientation="north_up")
    assert OutputSpec.pooled("max").pooling == "max"
    g = OutputSpec.grid()
    assert (g.mode, g.grid_orientation) == ("grid", "north_up")
    assert OutputSpec.grid(grid_orientation="native").grid_orientation == "native"


# -- InputPrepSpec -----------------------------------------------------------------------------
def test_input_prep_defaults_and_constructors():
    s = InputPrepSpec()
    assert (s.mode, s.tile_size, s.tile_stride, s.max_tiles, s.max_tiles_hard, s.pad_edges, s.tile_snap_frac) == (
        "tile", None, None, 64, 1024, True, 0.1,
    )  # fmt: skip
    assert InputPrepSpec.auto(tile_size=32).mode == "auto"
    assert InputPrepSpec.auto(tile_size=32).tile_size == 32
    assert InputPrepSpec.resize() == InputPrepSpec(mode="resize")
    assert InputPrepSpec.tile(max_tiles=8).max_tiles == 8


def test_input_prep_clamps():
    assert InputPrepSpec(max_tiles=100, max_tiles_hard=10).max_tiles_hard == 100
    assert InputPrepSpec(tile_snap_frac=0.9).tile_snap_frac == 0.5
    assert InputPrepSpec(tile_snap_frac=-1).tile_snap_frac == 0.0


@pytest.mark.parametrize(
    ("value", "mode"), [(None, "tile"), ("auto", "auto"), (" RESIZE ", "resize"), ("Tile", "tile")]
)
def test_resolve_input_prep(value, mode):
    assert resolve_input_prep(value).mode == mode


def test_resolve_input_prep_passes_specs():
    spec = InputPrepSpec.tile(tile_size=64)
    assert resolve_input_prep(spec) == spec


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("foo", "input_prep string must be 'auto'/'resize'/'tile', got 'foo'"),
        (InputPrepSpec(tile_size=0), "input_prep tile_size must be positive"),
        (InputPrepSpec(tile_stride=-2), "input_prep tile_stride must be positive"),
        (InputPrepSpec(tile_size="big"), "input_prep tile_size must be positive"),
        (InputPrepSpec(mode="bogus"), "input_prep mode must be one of"),
        (3, "input_prep must be None, 'auto'/'resize'/'tile' or an InputPrepSpec"),
    ],
)
def test_resolve_input_prep_errors(value, prefix):
    _raises(ModelError, prefix, lambda: resolve_input_prep(value))


def test_tile_snap_frac_env(monkeypatch):
    monkeypatch.setenv("RS_EMBED_TILE_SNAP_FRAC", "0.25")
    assert resolve_input_prep(None).tile_snap_frac == 0.25
    for bad in ("0.75", "-0.1", "abc"):
        monkeypatch.setenv("RS_EMBED_TILE_SNAP_FRAC", bad)
        _raises(
            ModelError,
            "RS_EMBED_TILE_SNAP_FRAC must be a float in [0, 0.5]",
            lambda: resolve_input_prep("tile"),
        )


# -- FetchSpec / SensorSpec ---------------------------------------------------------------------
def test_fetch_spec_applies_non_none_fields():
    base = SensorSpec(S2, ("B2", "B3"))
    out = FetchSpec(scale_m=20, composite="mosaic").apply(base)
    assert (out.scale_m, out.composite, out.cloudy_pct, out.fill_value) == (20, "mosaic", 30, 0.0)
    assert FetchSpec().apply(base) == base


def test_sensor_spec_defaults_and_list_bands():
    s = SensorSpec(S2, ["B2", "B3"])
    assert s.bands == ("B2", "B3")
    assert (s.scale_m, s.cloudy_pct, s.fill_value, s.composite) == (10, 30, 0.0, "median")
    hash(s)
    with pytest.raises(SpecError, match=r"SensorSpec\.scale_m"):
        SensorSpec(S2, ("B2",), scale_m=0).validate()
    with pytest.raises(SpecError, match=r"SensorSpec\.composite"):
        SensorSpec(S2, ("B2",), composite="mean").validate()


# -- pickling ----------------------------------------------------------------------------------
PICKLE_CASES = [
    BBox(1.0, 2.0, 3.0, 4.0),
    BBox(350000.0, 3450000.0, 360000.0, 3460000.0, crs="EPSG:32651"),
    PointBuffer(121.5, 31.2, 1280),
    TemporalSpec.year(2022),
    TemporalSpec.range("2022-06-01", "2022-09-01"),
    SensorSpec(S2, ("B2", "B3", "B4"), scale_m=20, orbit="ASCENDING"),
    FetchSpec(scale_m=20, cloudy_pct=10, fill_value=-1.0, composite="mosaic"),
    OutputSpec.pooled("max"),
    OutputSpec.grid(grid_orientation="native"),
    InputPrepSpec.auto(tile_size=64, max_tiles=4),
    ExportTarget.combined("out/run.npz"),
    ExportTarget.per_item("out/items", names=["a", "b"]),
    ExportConfig(format="zarr", chunk_size=4, input_prep=InputPrepSpec.resize(), resume=True),
    ExportModelRequest.configure("rcf", fetch=FetchSpec(scale_m=20), features=64),
    ExportModelRequest("rcf", sensor=SensorSpec(S2, ("B4",))),
    Embedding(np.arange(8, dtype=np.float32), {"model": "rcf", "input_grid": {"shape": [4, 4]}}),
    Embedding(np.arange(24, dtype=np.float32).reshape(2, 3, 4), {"model": "rcf"}),
]


@pytest.mark.parametrize("obj", PICKLE_CASES, ids=lambda o: type(o).__name__)
def test_pickle_round_trip(obj):
    back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is type(obj)
    assert back == obj
    if not isinstance(obj, Embedding):
        assert hash(back) == hash(obj)


def test_pickled_temporal_keeps_constructor():
    back = pickle.loads(pickle.dumps(TemporalSpec.range("2022-06-01", "2022-09-01")))
    assert back.year is None
    assert TemporalSpec.year(2021).year == 2021  # class attribute still the constructor


def test_embedding_equality_compares_values():
    a = Embedding(np.ones(4, np.float32), {"model": "rcf"})
    assert a == Embedding(np.ones(4, np.float32), {"model": "rcf"})
    assert a != Embedding(np.zeros(4, np.float32), {"model": "rcf"})
    assert a != Embedding(np.ones(4, np.float64), {"model": "rcf"})
    assert a != Embedding(np.ones(4, np.float32), {"model": "other"})


def test_export_target_constructors():
    c = ExportTarget.combined("x.npz")
    assert (c.layout, c.out_file, c.out_dir) == (ExportLayout.COMBINED, "x.npz", None)
    p = ExportTarget.per_item("d", names=["a"])
    assert (p.layout, p.out_dir, p.names) == (ExportLayout.PER_ITEM, "d", ("a",))
    assert ExportTarget(layout="per_item", out_dir="d").layout is ExportLayout.PER_ITEM
    with pytest.raises(ModelError, match=r"ExportTarget\.layout"):
        ExportTarget(layout="sideways")


def test_export_target_names_must_be_a_list_not_a_string():
    """A str would become one name per character (issue 16)."""
    with pytest.raises(TypeError, match=r"names must be a list of file names, one per ROI; got the string 'abc'"):
        ExportTarget.per_item("d", names="abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ExportTarget names must be a list of file names"):
        ExportTarget(layout="per_item", out_dir="d", names="abc")  # type: ignore[arg-type]
    assert ExportTarget.per_item("d", names=("a", "b")).names == ("a", "b")


def test_export_config_effective_sizes():
    assert ExportConfig().effective_infer_batch_size == 16
    assert ExportConfig(chunk_size=4, infer_batch_size=2).effective_infer_batch_size == 2
    assert ExportConfig(chunk_size=0).effective_chunk_size == 1
    assert ExportConfig(format="NPZ").normalized_format == "npz"
    with pytest.raises(ModelError, match=r"ExportConfig\.chunk_size"):
        ExportConfig(chunk_size=0).validate()


def test_api_boundary_refuses_a_point_off_the_globe() -> None:
    from rs_embed_dask.resolve import normalize_spatial

    with pytest.raises(SpecError, match=r"lat in \[-90, 90\]; got lon=8, lat=95"):
        normalize_spatial(PointBuffer(8, 95, 100))
    with pytest.raises(SpecError, match=r"lon must be in \[-180, 180\]"):
        normalize_spatial(PointBuffer(181, 0, 100))
    assert normalize_spatial(PointBuffer(8, 47, 100)) == PointBuffer(8, 47, 100)
