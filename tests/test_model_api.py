"""The class API: ``Model`` (resolved and loaded once) and ``BatchExporter`` (rs-embed's low-level exporter)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import (
    BatchExporter,
    ExportConfig,
    ExportTarget,
    FetchSpec,
    Model,
    ModelConfig,
    ModelError,
    OutputSpec,
    PointBuffer,
    ProviderError,
    SensorSpec,
    SpecError,
    TemporalSpec,
    export_batch,
    get_embedding,
    get_embeddings_batch,
    list_models,
    reset_runtime,
)
from rs_embed_dask import resolve as _resolve

ROI = PointBuffer(121.5, 31.2, 1280)
ROI2 = PointBuffer(121.6, 31.3, 1280)
T = TemporalSpec.range("2022-06-01", "2022-09-01")


def _loads(model: str = "rcf") -> int:
    return sum(n for (name, _cfg, _dev), n in _resolve.LOAD_COUNTS.items() if name == model)


@pytest.fixture(scope="module")
def model() -> Model:
    return Model("rcf", backend="synthetic", device="cpu")


# -- Model -----------------------------------------------------------------------------------
def test_model_matches_get_embedding(model):
    emb = model.get_embedding(ROI, temporal=T)
    ref = get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", device="cpu")
    assert emb.data.dtype == np.float32
    assert emb.data.shape == (512,)
    assert emb.data.tobytes() == ref.data.tobytes()
    assert emb.meta["model"] == "rcf"


def test_model_batch_matches_function_in_order(model):
    got = model.get_embeddings_batch([ROI2, ROI], temporal=T)
    ref = get_embeddings_batch("rcf", spatials=[ROI2, ROI], temporal=T, backend="synthetic", device="cpu")
    assert [g.data.tobytes() for g in got] == [r.data.tobytes() for r in ref]
    assert got[0].data.tobytes() != got[1].data.tobytes()


def test_model_loads_once_and_stays_resident():
    reset_runtime()
    m = Model("rcf", backend="synthetic", device="cpu", features=64)
    assert _loads() == 1
    m.get_embedding(ROI, temporal=T)
    m.get_embeddings_batch([ROI, ROI2], temporal=T)
    assert _loads() == 1
    reset_runtime()  # the instance keeps its model, as rs-embed's Model keeps its embedder
    out = m.get_embedding(ROI, temporal=T)
    assert _loads() == 0
    assert out.data.shape == (64,)


def test_model_options_and_output_are_fixed_at_construction():
    m = Model("rcf", backend="synthetic", device="cpu", output=OutputSpec.grid(), features=32)
    emb = m.get_embedding(ROI, temporal=T)
    assert emb.data.shape[0] == 32
    assert emb.data.ndim == 3
    assert m.output == OutputSpec.grid()
    assert m.backend == "synthetic"
    assert m.device == "cpu"
    assert m.name == "rcf"


def test_model_rejects_bad_requests_at_construction():
    with pytest.raises(ModelError, match="does not accept model-specific keyword arguments"):
        Model("rcf", backend="synthetic", no_such_option=1)
    with pytest.raises(ModelError, match="Unknown model"):
        Model("no_such_model", backend="synthetic")
    with pytest.raises(ModelError, match=r"Use either sensor=\.\.\. or fetch=\.\.\., not both\."):
        Model(
            "rcf",
            backend="synthetic",
            sensor=SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2")),
            fetch=FetchSpec(scale_m=20),
        )
    with pytest.raises(SpecError, match="OutputSpec"):
        Model("rcf", backend="synthetic", output="pooled")  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="no_such_provider"):
        Model("rcf", backend="no_such_provider")


def test_model_fetch_override_applies(model):
    m = Model("rcf", backend="synthetic", device="cpu", fetch=FetchSpec(scale_m=20))
    assert m.sensor is not None
    assert m.sensor.scale_m == 20
    assert model.sensor is not None
    assert model.sensor.scale_m == 10
    emb = m.get_embedding(ROI, temporal=T)
    assert emb.meta["sensor"]["scale_m"] == 20


def test_model_call_validation(model):
    with pytest.raises(ModelError, match=r"spatials must be a non-empty list\[SpatialSpec\]\."):
        model.get_embeddings_batch([])
    with pytest.raises(ModelError, match=r"spatials must be a non-empty list\[SpatialSpec\]\."):
        model.get_embeddings_batch((ROI,))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="Invalid spatial spec type"):
        model.get_embedding("not a roi")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="buffer_m must be positive"):
        model.get_embedding(PointBuffer(0, 0, -1))
    with pytest.raises(SpecError, match=r"TemporalSpec\.range requires start < end\."):
        model.get_embedding(ROI, temporal=TemporalSpec.range("2022-09-01", "2022-06-01"))


def test_model_default_temporal_warns_at_the_callers_line(model):
    with pytest.warns(UserWarning, match="temporal=None") as rec:
        emb = model.get_embedding(ROI)
    assert rec[0].filename == __file__
    assert emb.meta["temporal"]["start"] == "2022-06-01"


def test_model_describe_and_list_models(model):
    desc = model.describe()
    assert desc["model"] == "rcf"
    assert "output" in desc
    assert Model.list_models() == list_models()
    assert Model.list_models(include_aliases=True) == list_models(include_aliases=True)
    assert model.list_models() == list_models()


def test_model_describe_is_empty_on_failure(model, monkeypatch):
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(model._embedder, "describe", broken)
    assert model.describe() == {}


def test_model_without_warnings_for_a_plain_construction():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Model("rcf", backend="synthetic", device="cpu")


# -- BatchExporter -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


def _exporter(target: ExportTarget, **kw: Any) -> BatchExporter:
    args: dict[str, Any] = {
        "spatials": [ROI, ROI2],
        "temporal": T,
        "models": [ModelConfig(name="rcf", backend="synthetic")],
        "target": target,
        "output": OutputSpec.pooled(),
        "config": ExportConfig(show_progress=False),
        "backend": "synthetic",
        "resolved_backend": {"rcf": "synthetic"},
        "device": "cpu",
    }
    args.update(kw)
    return BatchExporter(**args)


def test_batch_exporter_matches_export_batch(client, tmp_path: Path):
    man = _exporter(ExportTarget.combined(str(tmp_path / "a.npz")), client=client).run()
    ref = export_batch(
        spatials=[ROI, ROI2],
        temporal=T,
        models=["rcf"],
        target=ExportTarget.combined(str(tmp_path / "b.npz")),
        config=ExportConfig(show_progress=False),
        backend="synthetic",
        device="cpu",
        client=client,
    )
    assert isinstance(man, dict)
    assert man["status"] == ref["status"] == "ok"
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def test_batch_exporter_per_item(client, tmp_path: Path):
    out = _exporter(ExportTarget.per_item(str(tmp_path / "items"), names=["x", "y"]), client=client).run()
    assert isinstance(out, list)
    assert [m["status"] for m in out] == ["ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "items").glob("*.npz")) == ["x.npz", "y.npz"]


@pytest.mark.parametrize("hook", ["provider_factory", "fetch_fn", "inspect_fn", "progress_factory"])
def test_batch_exporter_refuses_in_process_hooks(hook, tmp_path: Path):
    with pytest.raises(ModelError, match=f"BatchExporter\\({hook}=\\.\\.\\.\\) is not supported"):
        _exporter(ExportTarget.combined(str(tmp_path / "x.npz")), **{hook: lambda *a, **k: None})


def test_batch_exporter_checks_backends_before_running(tmp_path: Path):
    exp = _exporter(
        ExportTarget.combined(str(tmp_path / "x.npz")),
        models=[ModelConfig(name="rcf", backend="synthetic"), ModelConfig(name="rcf_b", backend="local")],
        resolved_backend={},
    )
    with pytest.raises(ModelError, match="one provider"):
        exp.run()
    with pytest.raises(ModelError, match="models must be a non-empty list"):
        _exporter(ExportTarget.combined(str(tmp_path / "x.npz")), models=[]).run()
    assert not (tmp_path / "x.npz").exists()
