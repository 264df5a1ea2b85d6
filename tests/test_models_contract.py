"""One contract every registered model passes, plus rcf's own semantics.

Adding a model: register it, then add its cases under ``tests/model_cases/``
(see that package's docstring).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from model_cases import ModelCase, collect
from model_cases.precomputed import PrecomputedCase

from rs_embed_dask import list_models, reset_runtime
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import OutputSpec, SensorSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import Embedder
from rs_embed_dask.resolve import LOAD_COUNTS, get_embedder

POOLED = OutputSpec.pooled()
GRID = OutputSpec.grid()


MODEL_CASES = collect()
MODELS = list_models()
#: models that read provider inputs (the torch contract); precomputed products have their own below
ONTHEFLY = [m for m in MODELS if get_model_class(m).model_type != "precomputed"]


def _inputs(embedder: Embedder, hw: tuple[int, int], n: int, seed: int) -> list[np.ndarray]:
    """Plausible raw inputs (Sentinel-2 DN) for the model's default sensor."""
    sensor = embedder.default_sensor()
    assert sensor is not None
    c = len(sensor.bands)
    rng = np.random.default_rng(seed)
    lead = () if embedder.n_frames is None else (embedder.n_frames,)
    return [rng.uniform(0, 6000, size=(*lead, c, *hw)).astype(np.float32) for _ in range(n)]


def _data(emb: Embedding) -> np.ndarray:
    return np.asarray(getattr(emb.data, "values", emb.data))


@pytest.fixture(params=ONTHEFLY)
def model_name(request) -> str:
    name = request.param
    if name not in MODEL_CASES:
        pytest.fail(f"model {name!r} is registered but has no ModelCase under tests/model_cases/")
    _require_available(name)
    return name


def _require_available(name: str) -> None:
    """Skip a model whose optional extra is missing, except under ``make test`` (every extra installed)."""
    try:
        get_model_class(name).check_available()
    except ModelError as exc:
        if os.environ.get("RS_EMBED_DASK_ALL_EXTRAS"):
            pytest.fail(f"{name}: its extra should be installed by `make test`: {exc}")
        pytest.skip(str(exc))


_WEIGHTS: dict[str, dict[str, Any]] = {}


@pytest.fixture
def weights(model_name, tmp_path_factory) -> dict[str, Any]:
    """The ``model_config`` entries pointing at the case's weights (written once per session)."""
    if model_name not in _WEIGHTS:
        setup = MODEL_CASES[model_name].setup
        _WEIGHTS[model_name] = dict(setup(tmp_path_factory.mktemp(f"weights_{model_name}")) or {}) if setup else {}
    return _WEIGHTS[model_name]


@pytest.fixture
def case(model_name, weights) -> ModelCase:
    c = MODEL_CASES[model_name]
    assert not isinstance(c, PrecomputedCase), f"{model_name!r} is on-the-fly but its case is a PrecomputedCase"
    return replace(
        c,
        config={**weights, **c.config},
        exact_pooling=[({**weights, **cfg}, hw) for cfg, hw in c.exact_pooling],
    )


@pytest.fixture
def embedder(model_name, case):
    return get_embedder(model_name, case.config, "cpu")


class TestModelContract:
    """The contract of :class:`rs_embed_dask.models.base.Embedder` implementations."""

    def test_describe(self, model_name, case):
        cls = get_model_class(model_name)
        d = cls(case.config).describe()
        for key in ("type", "backend", "output", "inputs", "defaults", "embedding_dim"):
            assert key in d, key
        assert d["type"] in ("onthefly", "precomputed")
        assert set(d["output"]) <= {"pooled", "grid"}
        assert d["output"]
        assert isinstance(d["embedding_dim"], int)
        assert d["embedding_dim"] > 0
        assert cls.name == model_name

    def test_default_sensor_matches_describe(self, model_name, case):
        emb = get_model_class(model_name)(case.config)
        d = emb.describe()
        sensor = emb.default_sensor()
        assert isinstance(sensor, SensorSpec)
        sensor.validate()
        assert list(sensor.bands) == list(d["inputs"]["bands"])
        assert sensor.collection == d["inputs"].get("collection", sensor.collection)
        assert sensor.scale_m == d["defaults"].get("scale_m", 10)

    def test_preprocessing_golden(self, embedder, case):
        out = embedder.preprocess(torch.from_numpy(case.raw.copy()))
        np.testing.assert_allclose(out.cpu().numpy(), case.expected, rtol=0, atol=1e-7)

    @pytest.mark.parametrize(
        "output", [POOLED, GRID, OutputSpec.pooled("max")], ids=["pooled", "grid", "max"]
    )
    def test_batch_equals_single_calls(self, embedder, case, output):
        if output.mode not in embedder.describe()["output"]:
            pytest.skip(f"model has no {output.mode} output")
        h, w = case.input_hw
        xs = _inputs(embedder, (h, w), 3, seed=1) + _inputs(embedder, (h + 3, w + 2), 1, seed=2)
        xs = [xs[0], xs[3], xs[1], xs[2]]  # mixed shapes, order must hold
        batch = embedder.embed_inputs(xs, output=output)
        assert len(batch) == len(xs)
        for x, b in zip(xs, batch, strict=True):
            (single,) = embedder.embed_inputs([x], output=output)
            np.testing.assert_allclose(_data(b), _data(single), rtol=0, atol=case.atol)

    def test_output_dims(self, embedder, case):
        d = embedder.describe()
        D = d["embedding_dim"]
        x = _inputs(embedder, case.input_hw, 1, seed=3)
        (pooled,) = embedder.embed_inputs(x, output=POOLED)
        assert _data(pooled).shape == (D,)
        assert _data(pooled).dtype == np.float32
        assert np.isfinite(_data(pooled)).all()
        if "grid" in d["output"]:
            (grid,) = embedder.embed_inputs(x, output=GRID)
            g = _data(grid)
            assert g.ndim == 3
            assert g.shape[0] == d.get("grid_dim", D)  # a grid may be wider than pooled (remoteclip)
            assert g.shape[1] >= 1
            assert g.shape[2] >= 1
            assert g.dtype == np.float32
            assert grid.meta["grid_hw"] == list(g.shape[1:])

    def test_pooled_mean_is_mean_of_grid(self, model_name, case):
        if case.pooled_is_not_grid_mean:
            pytest.skip(case.pooled_is_not_grid_mean)
        if not case.exact_pooling:
            pytest.fail(f"ModelCase for {model_name!r} lists no exact_pooling configurations")
        for cfg, hw in case.exact_pooling:
            emb = get_embedder(model_name, cfg, "cpu")
            x = _inputs(emb, hw, 2, seed=4)
            pooled = emb.embed_inputs(x, output=POOLED)
            grid = emb.embed_inputs(x, output=GRID)
            for p, g in zip(pooled, grid, strict=True):
                np.testing.assert_allclose(_data(p), _data(g).mean(axis=(-2, -1)), rtol=1e-5, atol=1e-6)

    def test_instance_cached_per_process(self, model_name, case, weights):
        reset_runtime()
        a = get_embedder(model_name, case.config, "cpu")
        b = get_embedder(model_name, dict(case.config), "cpu")
        assert a is b
        keys = [k for k in LOAD_COUNTS if k[0] == model_name and k[2] == "cpu"]
        assert len(keys) == 1
        assert LOAD_COUNTS[keys[0]] == 1
        other = get_embedder(model_name, dict(weights) or None, "cpu")  # another config: another instance
        assert (other is not a) == (case.config != weights)
        assert get_embedder(model_name, case.config, "cpu") is a
        assert LOAD_COUNTS[keys[0]] == 1

    def test_device_placement_cpu(self, embedder, case):
        assert embedder.device == "cpu"
        module = getattr(embedder, "module", None)
        if isinstance(module, torch.nn.Module):
            tensors = [*module.parameters(), *module.buffers()]
            assert tensors, "a torch model without parameters"
            assert all(t.device.type == "cpu" for t in tensors)
            assert not any(p.requires_grad for p in module.parameters())
            assert not module.training
        (out,) = embedder.embed_inputs(_inputs(embedder, case.input_hw, 1, seed=5), output=POOLED)
        assert out.meta["device"] == "cpu"
        assert out.meta["model"] == embedder.name


# -- precomputed products: the PrecomputedEmbedder contract ------------------------------------------
PRECOMPUTED = [m for m in MODELS if get_model_class(m).model_type == "precomputed"]


@pytest.fixture(params=PRECOMPUTED)
def product(request, monkeypatch) -> tuple[str, PrecomputedCase]:
    name = request.param
    c = MODEL_CASES.get(name)
    if not isinstance(c, PrecomputedCase):
        pytest.fail(f"precomputed model {name!r} has no PrecomputedCase under tests/model_cases/")
    _require_available(name)
    if c.patch is not None:
        c.patch(monkeypatch)
    return name, c


@pytest.fixture
def product_embedder(product, tmp_path_factory):
    name, c = product
    if name not in _WEIGHTS:
        _WEIGHTS[name] = dict(c.setup(tmp_path_factory.mktemp(f"product_{name}")) or {})
    return get_embedder(name, _WEIGHTS[name], "cpu")


class TestPrecomputedContract:
    """:class:`rs_embed_dask.models.precomputed.PrecomputedEmbedder` implementations."""

    def test_describe_states_native_crs_and_resolution(self, product, product_embedder):
        d = product_embedder.describe()
        assert d["type"] == "precomputed"
        assert product_embedder.is_precomputed
        assert product_embedder.default_sensor() is None
        for key in ("native_crs", "native_resolution", "grid_crs", "source", "embedding_dim", "output"):
            assert d.get(key), key
        if d["grid_crs"] == "EPSG:3857":  # products resampled onto the common grid
            assert d["defaults"]["scale_m"] > 0
        else:  # products on their own grid (copernicus: EPSG:4326, as rs-embed)
            assert d["grid_crs"] == d["native_crs"]
        assert set(d["output"]) == {"pooled", "grid"}

    def test_pooled_and_grid_shapes_north_up(self, product, product_embedder):
        _, c = product
        D = product_embedder.describe()["embedding_dim"]
        for sp in c.spatials:
            (p,) = product_embedder.embed_spatials([sp], temporal=c.temporal, output=POOLED, sensor=None)
            (g,) = product_embedder.embed_spatials([sp], temporal=c.temporal, output=GRID, sensor=None)
            assert _data(p).shape == (D,)
            assert _data(p).dtype == np.float32
            assert np.isfinite(_data(p)).all()
            assert g.meta["y_axis_direction"] == "north_to_south"
            assert g.meta["grid_hw"] == list(_data(g).shape[1:])
            assert g.meta["crs"] == product_embedder.describe()["grid_crs"]
            if g.meta["crs"] != "EPSG:3857":
                assert _data(g).shape[0] == D
                assert g.meta["transform"][4] < 0  # north-up
                continue
            w = product_embedder.window_for(sp, None)
            assert _data(g).shape == (D, w.height, w.width)
            assert g.meta["transform"] == list(w.transform_tuple)

    def test_grid_rows_run_north_to_south(self, product, product_embedder):
        """The grid of the northern rows of a ROI's window is the top of the ROI's grid."""
        from rs_embed_dask.core.specs import BBox
        from rs_embed_dask.geometry import mercator_to_lonlat

        _, c = product
        sp = c.spatials[0]
        if product_embedder.describe()["grid_crs"] != "EPSG:3857":
            # a native lon/lat grid: the box over the northern k rows of the ROI's grid
            (full,) = product_embedder.embed_spatials([sp], temporal=c.temporal, output=GRID, sensor=None)
            a, _, x0, _, e, y0 = full.meta["transform"]
            h, w_ = _data(full).shape[1:]
            assert h >= 2, "the case's first ROI must span two grid rows"
            k = h // 2
            eps = 1e-6 * a
            north = BBox(x0 + eps, y0 + k * e + eps, x0 + w_ * a - eps, y0 - eps)
            (top,) = product_embedder.embed_spatials([north], temporal=c.temporal, output=GRID, sensor=None)
            np.testing.assert_array_equal(_data(top), _data(full)[:, :k, :])
            return
        w = product_embedder.window_for(sp, None)
        assert w.height >= 2, "the case's first ROI must span two grid rows"
        k = w.height // 2
        minx, _, maxx, maxy = w.bounds
        lon0, lat0 = mercator_to_lonlat(minx, maxy - k * w.scale_m)
        lon1, lat1 = mercator_to_lonlat(maxx, maxy)
        north = BBox(lon0, lat0, lon1, lat1)
        (full,) = product_embedder.embed_spatials([sp], temporal=c.temporal, output=GRID, sensor=None)
        (top,) = product_embedder.embed_spatials([north], temporal=c.temporal, output=GRID, sensor=None)
        np.testing.assert_array_equal(_data(top), _data(full)[:, :k, :])

    @pytest.mark.parametrize("output", [POOLED, GRID, OutputSpec.pooled("max")], ids=["pooled", "grid", "max"])
    def test_batch_equals_single_calls(self, product, product_embedder, output):
        _, c = product
        sps = [c.spatials[1], c.spatials[0], c.partial, *c.spatials[2:]]
        batch = product_embedder.embed_spatials(sps, temporal=c.temporal, output=output, sensor=None)
        assert len(batch) == len(sps)
        for sp, b in zip(sps, batch, strict=True):
            (single,) = product_embedder.embed_spatials([sp], temporal=c.temporal, output=output, sensor=None)
            np.testing.assert_array_equal(_data(b), _data(single))

    def test_nan_aware_pooling(self, product, product_embedder):
        _, c = product
        (g,) = product_embedder.embed_spatials([c.partial], temporal=c.temporal, output=GRID, sensor=None)
        grid = _data(g)
        assert np.isnan(grid).any()
        assert np.isfinite(grid).any()
        for pooling in ("mean", "max"):
            (p,) = product_embedder.embed_spatials(
                [c.partial], temporal=c.temporal, output=OutputSpec.pooled(pooling), sensor=None
            )
            assert np.isfinite(_data(p)).all()
            if c.pooled_from_grid:
                ref = np.nanmax(grid, axis=(1, 2)) if pooling == "max" else np.nanmean(grid, axis=(1, 2))
                np.testing.assert_allclose(_data(p), ref, rtol=1e-6, atol=1e-7)

    def test_all_nan_roi_is_a_model_error(self, product, product_embedder):
        name, c = product
        for output in (POOLED, GRID):
            with pytest.raises(ModelError, match=rf"{name}.*no valid"):
                product_embedder.embed_spatials([c.outside], temporal=c.temporal, output=output, sensor=None)


# -- rcf: MOSAIKS semantics checked against an independent numpy implementation --------------------
def _rcf_reference(x: np.ndarray, features: int, k: int, seed: int, bias: float) -> np.ndarray:
    """``(features, H-k+1, W-k+1)`` relu(conv) / relu(-conv) maps, with numpy only."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn((features // 2, x.shape[0], k, k), generator=gen, dtype=torch.float32).numpy()
    xr = np.clip(x / 10000.0, 0.0, 1.0).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(xr, (k, k), axis=(1, 2))  # C, h, w, k, k
    conv = np.einsum("chwij,fcij->fhw", windows, weight.astype(np.float64)) + bias
    return np.concatenate([np.maximum(conv, 0), np.maximum(-conv, 0)], axis=0)


class TestRCF:
    @pytest.mark.parametrize(
        "cfg", [{"features": 8}, {"features": 6, "kernel_size": 5, "seed": 3, "bias": -0.5}]
    )
    def test_pooled_is_mean_and_max_of_full_resolution_maps(self, cfg):
        emb = get_embedder("rcf", cfg, "cpu")
        x = np.random.default_rng(0).uniform(-500, 11000, size=(4, 19, 22)).astype(np.float32)
        ref = _rcf_reference(
            x, cfg["features"], cfg.get("kernel_size", 3), cfg.get("seed", 0), cfg.get("bias", 0.0)
        )
        (mean,) = emb.embed_inputs([x], output=POOLED)
        (mx,) = emb.embed_inputs([x], output=OutputSpec.pooled("max"))
        np.testing.assert_allclose(mean.data, ref.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mx.data, ref.max(axis=(1, 2)), rtol=1e-5, atol=1e-6)

    def test_grid_averages_cells(self):
        emb = get_embedder("rcf", {"features": 4, "grid_stride": 4}, "cpu")
        x = np.random.default_rng(1).uniform(0, 8000, size=(4, 22, 14)).astype(np.float32)
        ref = _rcf_reference(x, 4, 3, 0, 0.0)  # 20 x 12 maps -> 5 x 3 cells
        (grid,) = emb.embed_inputs([x], output=GRID)
        assert grid.data.shape == (4, 5, 3)
        cells = ref.reshape(4, 5, 4, 3, 4).mean(axis=(2, 4))
        np.testing.assert_allclose(grid.data, cells, rtol=1e-5, atol=1e-6)

    def test_grid_size_rounds_up(self):
        emb = get_embedder("rcf", {"features": 4}, "cpu")
        (grid,) = emb.embed_inputs(_inputs(emb, (256, 256), 1, seed=0), output=GRID)
        assert grid.data.shape == (4, 32, 32)  # ceil(254 / 8)

    def test_same_seed_same_features_other_seed_differs(self):
        x = _inputs(get_embedder("rcf", {"features": 8}, "cpu"), (16, 16), 1, seed=9)
        a = get_embedder("rcf", {"features": 8, "seed": 0}, "cpu").embed_inputs(x, output=POOLED)[0].data
        b = get_embedder("rcf", {"features": 8}, "cpu").embed_inputs(x, output=POOLED)[0].data
        c = get_embedder("rcf", {"features": 8, "seed": 1}, "cpu").embed_inputs(x, output=POOLED)[0].data
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)

    @pytest.mark.parametrize(
        ("cfg", "match"),
        [
            ({"features": 7}, "'features' must be an even integer"),
            ({"features": True}, "'features' must be an even integer"),
            ({"kernel_size": 0}, "'kernel_size' must be an integer >= 1"),
            ({"grid_stride": 0}, "'grid_stride' must be an integer >= 1"),
            ({"bands": ()}, "'bands' must be a non-empty list"),
        ],
    )
    def test_config_errors(self, cfg, match):
        with pytest.raises(ModelError, match=match):
            get_model_class("rcf")(cfg)

    def test_wrong_channels_and_small_inputs(self):
        emb = get_embedder("rcf", {"features": 4}, "cpu")
        with pytest.raises(ModelError, match="expects 4 bands"):
            emb.embed_inputs([np.zeros((3, 8, 8), np.float32)], output=POOLED)
        with pytest.raises(ModelError, match="at least 3x3"):
            emb.embed_inputs([np.zeros((4, 2, 8), np.float32)], output=POOLED)

    def test_custom_bands(self):
        emb = get_embedder("rcf", {"features": 4, "bands": "B4, B8,B11"}, "cpu")
        assert emb.default_sensor().bands == ("B4", "B8", "B11")
        (out,) = emb.embed_inputs([np.ones((3, 5, 5), np.float32)], output=POOLED)
        assert out.data.shape == (4,)
