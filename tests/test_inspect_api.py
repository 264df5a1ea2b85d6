"""rs-embed's inspection functions: inspect_provider_patch / inspect_gee_patch / inspect_model_input."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import (
    ModelError,
    PointBuffer,
    ProviderError,
    SensorSpec,
    SpecError,
    TemporalSpec,
    describe_model,
    inspect_gee_patch,
    inspect_model_input,
    inspect_provider_patch,
)
from rs_embed_dask.core.registry import (
    register_model,
    register_provider,
    unregister_model,
    unregister_provider,
)
from rs_embed_dask.models.rcf import RCFEmbedder
from rs_embed_dask.providers.synthetic import SyntheticProvider
from rs_embed_dask.resolve import get_provider

ROI = PointBuffer(121.5, 31.2, 640)
T = TemporalSpec.range("2022-06-01", "2022-09-01")
S2 = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2", "B8"))
REPORT_KEYS = [
    "name", "ok", "issues", "shape", "dtype", "finite_frac", "band_min", "band_max", "band_mean",
    "band_std", "band_quantiles", "band_p01", "band_p50", "band_p99", "quantiles", "hist_bins",
    "band_hist", "hist_range", "hist", "fill_value", "fill_frac",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_env_save_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RS_EMBED_CHECK_SAVE_DIR", raising=False)


class _EmptySecondBin(SyntheticProvider):
    """Synthetic pixels whose second time bin is reported empty (as gee/stac report bins without scenes)."""

    name = "synthetic_gap"

    def fetch_frames(self, window: Any, bins: Any, sensor: Any) -> Any:
        arrays, meta = super().fetch_frames(window, bins, sensor)
        meta["frames"] = [{"empty": i == 1} for i in range(len(bins))]
        meta["n_empty"] = 1
        return arrays, meta


class _Failing(SyntheticProvider):
    name = "synthetic_failing"

    def fetch_window(self, window: Any, dates: Any, sensor: Any) -> Any:
        raise ProviderError("no scene in the window")


class _ThreeFrames(RCFEmbedder):
    name = "rcf_three_frames"
    n_frames = 3


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> Iterator[None]:
    register_provider("synthetic_gap", _EmptySecondBin, overwrite=True)
    register_provider("synthetic_failing", _Failing, overwrite=True)
    register_model("rcf_three_frames", _ThreeFrames, overwrite=True)
    yield
    unregister_provider("synthetic_gap")
    unregister_provider("synthetic_failing")
    unregister_model("rcf_three_frames")


# -- inspect_provider_patch ------------------------------------------------------------------
def test_provider_patch_report():
    out = inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic")
    assert list(out) == ["ok", "report", "sensor", "temporal", "backend", "artifacts"]
    assert out["ok"] is True
    assert out["backend"] == "synthetic"
    assert out["artifacts"] is None
    assert out["sensor"] == asdict(S2)
    assert out["temporal"] == {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}
    rep = out["report"]
    assert list(rep)[: len(REPORT_KEYS)] == REPORT_KEYS
    assert rep["name"] == "gee_patch"
    assert rep["shape"][0] == 4
    assert rep["issues"] == []
    json.dumps(out)  # JSON-serialisable without the array


def test_provider_patch_array_is_the_provider_fetch():
    out = inspect_provider_patch(
        spatial=ROI, temporal=T, sensor=S2, backend="SYNTHETIC ", name="p", return_array=True
    )
    want = get_provider("synthetic").fetch(ROI, T, S2).data
    np.testing.assert_array_equal(out["array_chw"], want)
    assert out["report"]["name"] == "p"
    assert out["backend"] == "synthetic"


def test_provider_patch_value_range_issue():
    out = inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic", value_range=(0, 1))
    assert out["ok"] is False
    assert out["report"]["outside_range_frac"] > 0.5
    assert any("outside" in i for i in out["report"]["issues"])


def test_provider_patch_backend_errors():
    with pytest.raises(ProviderError, match=r"^backend must be a non-empty provider name\.$"):
        inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="  ")
    with pytest.raises(ProviderError, match=r"Unsupported provider backend='auto'"):
        inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="auto")
    with pytest.raises(ProviderError, match=r"Unsupported provider backend='nope'"):
        inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="nope")


def test_provider_patch_spec_errors():
    with pytest.raises(ModelError, match="Invalid spatial spec type"):
        inspect_provider_patch(spatial=(0, 0), sensor=S2, backend="synthetic")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="start < end"):
        inspect_provider_patch(
            spatial=ROI,
            temporal=TemporalSpec.range("2022-02-01", "2022-01-01"),
            sensor=S2,
            backend="synthetic",
        )
    with pytest.raises(SpecError, match="SensorSpec"):
        inspect_provider_patch(spatial=ROI, sensor="s2", backend="synthetic")  # type: ignore[arg-type]


def test_provider_fetch_failure_is_model_error():
    with pytest.raises(ModelError, match="no scene in the window"):
        inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic_failing")


def test_provider_patch_quicklook_from_sensor(tmp_path: Path):
    from matplotlib.image import imread

    out = inspect_provider_patch(
        spatial=ROI, temporal=T, sensor=replace(S2, check_save_dir=str(tmp_path / "ql")), backend="synthetic"
    )
    path = Path(out["artifacts"]["quicklook_rgb"])
    assert path.parent == tmp_path / "ql"
    assert path.name.startswith("gee_patch_")
    assert path.suffix == ".png"
    img = imread(path)
    assert img.shape[:2] == tuple(out["report"]["shape"][1:])
    assert img[..., :3].std() > 0  # stretched, not blank


def test_provider_patch_quicklook_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RS_EMBED_CHECK_SAVE_DIR", str(tmp_path))
    out = inspect_gee_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic", name="env")
    assert Path(out["artifacts"]["quicklook_rgb"]).exists()
    two_bands = replace(S2, bands=("B4", "B3"))
    out2 = inspect_provider_patch(spatial=ROI, temporal=T, sensor=two_bands, backend="synthetic")
    assert out2["artifacts"] is None  # a quick-look needs three bands


def test_gee_patch_is_the_same_report():
    a = inspect_gee_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic")
    b = inspect_provider_patch(spatial=ROI, temporal=T, sensor=S2, backend="synthetic")
    assert a == b


def test_cli_facing_signature_is_exact():
    want = [
        "spatial",
        "temporal",
        "sensor",
        "backend",
        "name",
        "value_range",
        "return_array",
        "provider_options",
    ]
    for fn in (inspect_provider_patch, inspect_gee_patch):
        params = inspect.signature(fn).parameters
        assert list(params) == want
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
        assert params["backend"].default == "gee"
        assert params["name"].default == "gee_patch"


# -- inspect_model_input ---------------------------------------------------------------------
def test_model_input_single_frame():
    out = inspect_model_input("RCF", spatial=ROI, temporal=T, backend="synthetic", return_arrays=True)
    assert list(out) == [
        "ok", "model", "backend", "n_frames", "n_empty", "frames", "fetch_meta", "sensor", "temporal", "artifacts",
    ]  # fmt: skip
    assert out["ok"] is True
    assert (out["model"], out["backend"], out["n_frames"], out["n_empty"]) == ("rcf", "synthetic", 1, 0)
    frame = out["frames"][0]
    assert (frame["index"], frame["start"], frame["end"], frame["empty"]) == (
        0,
        "2022-06-01",
        "2022-09-01",
        False,
    )
    assert frame["report"]["name"] == "rcf_input_t0"
    bands = describe_model("rcf")["inputs"]["bands"]
    assert out["sensor"]["bands"] == tuple(bands)
    assert frame["array_chw"].shape[0] == len(bands)
    assert out["fetch_meta"]["provider"] == "synthetic"
    assert "frames" not in out["fetch_meta"]


def test_model_input_is_what_the_model_fetches():
    from rs_embed_dask.pipeline import fetch_input
    from rs_embed_dask.resolve import resolve_model

    out = inspect_model_input("rcf", spatial=ROI, temporal=T, backend="synthetic", return_arrays=True)
    rm = resolve_model("rcf", backend="synthetic")
    np.testing.assert_array_equal(out["frames"][0]["array_chw"], fetch_input(rm, ROI, T).data)


def test_model_input_frames_and_empty_bins():
    out = inspect_model_input("rcf_three_frames", spatial=ROI, temporal=T, backend="synthetic_gap")
    assert out["n_frames"] == 3
    assert out["n_empty"] == 1
    assert [f["empty"] for f in out["frames"]] == [False, True, False]
    assert "report" not in out["frames"][1]
    assert out["frames"][0]["start"] == "2022-06-01"
    assert out["frames"][2]["end"] == "2022-09-01"
    assert out["ok"] is True
    assert "n_empty" not in out["fetch_meta"]


def test_model_input_quicklooks_per_frame(tmp_path: Path):
    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2", "B3", "B4", "B8"), check_save_dir=str(tmp_path))
    out = inspect_model_input(
        "rcf_three_frames", spatial=ROI, temporal=T, sensor=sensor, backend="synthetic_gap"
    )
    arts = out["artifacts"]
    assert sorted(arts) == ["quicklook_rgb_t0", "quicklook_rgb_t2"]
    assert all(Path(p).exists() for p in arts.values())


def test_model_input_errors():
    with pytest.raises(ProviderError, match=r"^backend must be a non-empty provider name\.$"):
        inspect_model_input("rcf", spatial=ROI, backend="")
    with pytest.raises(ProviderError, match="Unsupported provider backend='auto'"):
        inspect_model_input("rcf", spatial=ROI, backend="auto")
    with pytest.raises(ModelError, match="Unknown model"):
        inspect_model_input("nope", spatial=ROI, backend="synthetic")
    with pytest.raises(ModelError, match="serves precomputed embeddings"):
        inspect_model_input("tessera", spatial=ROI, backend="synthetic")
    with pytest.raises(ModelError, match="does not accept model-specific keyword arguments"):
        inspect_model_input("rcf", spatial=ROI, temporal=T, backend="synthetic", bogus=1)
    with pytest.raises(ModelError, match="no scene in the window"):
        inspect_model_input("rcf", spatial=ROI, temporal=T, backend="synthetic_failing")


def test_model_input_default_window_warns_at_caller():
    with pytest.warns(UserWarning, match="temporal=None") as rec:
        out = inspect_model_input("rcf", spatial=ROI, backend="synthetic")
    assert rec[0].filename == __file__
    assert out["temporal"] is None
    assert (out["frames"][0]["start"], out["frames"][0]["end"]) == ("2022-06-01", "2022-09-01")


# -- inspect_chw against a per-band reference -----------------------------------------------------
def _reference_report(
    x: np.ndarray,
    *,
    name: str = "input",
    fill_value: float | None = 0.0,
    value_range: tuple[float, float] | None = None,
    expected_channels: int | None = None,
) -> dict[str, Any]:
    """The report computed the plain way: each band's finite values, one numpy call per figure."""
    from rs_embed_dask.inspection import HIST_BINS, MAX_ELEMENTS, QUANTILES

    stride = 1
    while x[:, ::stride, ::stride].size > MAX_ELEMENTS:
        stride += 1
    sample = x[:, ::stride, ::stride]
    finite = np.isfinite(sample)
    bands = [sample[b][finite[b]] for b in range(sample.shape[0])]
    nan = float("nan")
    q = np.array(
        [np.quantile(f.astype(np.float64), QUANTILES) if f.size else [nan] * len(QUANTILES) for f in bands]
    )
    names = [f"p{round(p * 100):02d}" for p in QUANTILES]
    per_q = {n: [float(v) for v in np.round(q[:, i], 6)] for i, n in enumerate(names)}
    lo, hi = (float(np.nanmin(q[:, 0])), float(np.nanmax(q[:, -1]))) if np.isfinite(q).any() else (0.0, 0.0)
    lo, hi = round(lo, 6), round(hi, 6)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1).astype(np.float32)
    counts = [np.histogram(f, bins=edges)[0].astype(int).tolist() for f in bands]
    finite_frac = float(finite.mean()) if sample.size else 0.0
    fill_frac = float((sample == fill_value).mean()) if fill_value is not None and sample.size else 0.0
    stds = [float(f.std()) if f.size else nan for f in bands]
    rep: dict[str, Any] = {
        "name": name,
        "ok": True,
        "issues": [],
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "finite_frac": finite_frac,
        "band_min": [float(f.min()) if f.size else nan for f in bands],
        "band_max": [float(f.max()) if f.size else nan for f in bands],
        "band_mean": [float(f.mean(dtype=np.float64)) if f.size else nan for f in bands],
        "band_std": stds,
        "band_quantiles": per_q,
        **{f"band_{n}": per_q[n] for n in names},
        "quantiles": list(QUANTILES),
        "hist_bins": [float(e) for e in edges],
        "band_hist": counts,
        "hist_range": [lo, hi],
        "hist": {"bins": [float(e) for e in edges], "counts": counts, "range": [lo, hi]},
        "fill_value": None if fill_value is None else float(fill_value),
        "fill_frac": fill_frac,
    }
    issues = rep["issues"]
    if expected_channels is not None and sample.shape[0] != expected_channels:
        issues.append(f"channel mismatch: C={sample.shape[0]}, expected {expected_channels}")
    if finite_frac < 0.999:
        issues.append(f"non-finite values: finite_frac={finite_frac:.4f} < 0.999")
    issues += [
        f"band {b} is near-constant (std={s:.3g})" for b, s in enumerate(stds) if np.isfinite(s) and s < 1e-6
    ]
    if value_range is not None:
        vmin, vmax = float(value_range[0]), float(value_range[1])
        vals = sample[finite]
        outside = float(((vals < vmin) | (vals > vmax)).mean()) if vals.size else 0.0
        rep["outside_range_frac"] = outside
        if outside > 0.001:
            issues.append(f"{outside:.2%} of values outside [{vmin}, {vmax}]")
    if fill_frac > 0.98:
        issues.append(f"fill_frac={fill_frac:.4f} > 0.98: the patch is almost all no-data")
    if stride > 1:
        rep["downsample_stride"] = stride
    rep["ok"] = not issues
    return rep


def _chw_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20260601)
    cases: dict[str, np.ndarray] = {
        "float32": (rng.random((4, 128, 128)) * 3000).astype(np.float32),
        "one_channel": (rng.standard_normal((1, 33, 17)) * 50).astype(np.float32),
        "twelve_channels": (rng.standard_normal((12, 64, 64)) * 500 + 1000).astype(np.float32),
        "float64": rng.standard_normal((3, 20, 21)) * 1e3,
        "float16": (rng.random((2, 30, 30)) * 100).astype(np.float16),
        "uint16_ties": rng.integers(0, 10000, (4, 64, 64)).astype(np.uint16),
        "int16_few_levels": rng.integers(-3, 4, (3, 31, 29)).astype(np.int16),
        # integer levels on a float grid: many ties, and the quantiles (hence edges) fall on data values
        "float_ties_on_edges": rng.integers(0, 33, (5, 50, 50)).astype(np.float32),
        "all_fill": np.zeros((4, 32, 32), np.float32),
        "one_pixel": np.array([[[3.5]]], np.float32),
        "transposed": (rng.random((3, 19, 17)) * 5).astype(np.float32).transpose(0, 2, 1),
        "large_strided": (rng.random((2, 900, 900)) * 1e4).astype(np.float32),
    }
    x = (rng.random((4, 40, 40)) * 3000).astype(np.float32)
    x[0, ::7, ::3] = np.nan
    x[2, 5, 5] = np.inf
    x[3, 1, :] = -np.inf
    cases["nan_inf"] = x
    x = (rng.random((3, 32, 32)) * 100).astype(np.float32)
    x[1] = 7.25
    cases["constant_band"] = x
    x = (rng.random((4, 32, 32)) * 100).astype(np.float32)
    x[:, :20] = 0.0
    cases["mostly_fill"] = x
    # Band 0's median is a zero: whether np.quantile returns +0.0 or -0.0 depends on the
    # order of the values (np.sort does not keep the signs of zeros), the report must agree.
    x = (np.random.default_rng(2).random((2, 16, 16)) - 0.5).astype(np.float32)
    x[0, :2] = 0.0
    x[0, 2:10] = -0.0
    cases["signed_zeros"] = x
    x = np.stack([np.full((8, 8), np.nan, np.float32), np.ones((8, 8), np.float32)])
    cases["all_nan_band"] = x
    x = cases["large_strided"].copy()
    x[1, 4, 4] = np.nan
    cases["large_strided_nan"] = x
    cases["empty_band"] = np.zeros((3, 0, 5), np.float32)
    return cases


@pytest.mark.parametrize("case", list(_chw_cases()))
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"fill_value": None, "value_range": (0.0, 1000.0), "expected_channels": 4}, {"fill_value": 7.25}],
    ids=["defaults", "range", "fill"],
)
def test_inspect_chw_matches_per_band_reference(case: str, kwargs: dict[str, Any]):
    from rs_embed_dask.inspection import inspect_chw

    x = _chw_cases()[case]
    with np.errstate(all="ignore"):
        got = inspect_chw(x, name=case, **kwargs)
        want = _reference_report(x, name=case, **kwargs)
    assert json.dumps(got, sort_keys=False) == json.dumps(want, sort_keys=False)


def test_inspect_chw_reference_covers_the_cases():
    """The cases reach what the comparison is meant to cover (stride, ties on edges, signed zeros)."""
    from rs_embed_dask.inspection import inspect_chw

    cases = _chw_cases()
    assert inspect_chw(cases["large_strided"])["downsample_stride"] == 2
    rep = inspect_chw(cases["float_ties_on_edges"])
    on_edge = np.isin(cases["float_ties_on_edges"], np.asarray(rep["hist_bins"], np.float32))
    assert on_edge.mean() > 0.5
    assert sum(rep["band_hist"][0]) == cases["float_ties_on_edges"][0].size  # last bin closed
    assert inspect_chw(cases["signed_zeros"])["band_p50"][0] == 0.0


def test_input_inspection_tchw_matches_reference():
    from rs_embed_dask.inspection import input_inspection

    rng = np.random.default_rng(7)
    x = (rng.random((3, 4, 32, 32)) * 100).astype(np.float32)
    x[0] = 0.0  # all fill: the second frame is inspected
    out = input_inspection(x, {"fill_value": 0.0}, name="t")
    assert out["inspected_frame"] == 1
    assert json.dumps(out["report"]) == json.dumps(_reference_report(x[1], name="t", fill_value=0.0))
    chw = input_inspection(x[2], {"fill_value": 0.0}, name="c")
    assert json.dumps(chw["report"]) == json.dumps(_reference_report(x[2], name="c", fill_value=0.0))
