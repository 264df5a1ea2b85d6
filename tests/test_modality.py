"""``modality=`` selects the model's sensor for that modality, as in rs-embed.

croma declares an optical (Sentinel-2, 12 bands) and a radar (Sentinel-1
VV/VH) modality; ``modality="sar"`` (or rs-embed's ``"s1"``) must fetch
Sentinel-1 and run croma's radar encoder, in ``get_embedding`` and in
``export_batch``, exactly as ``model_config={"modality": "sar"}`` does.
Weights are a tiny random CROMA checkpoint in the published layout.
"""

from __future__ import annotations

import numpy as np
import pytest
from model_cases import torchgeo as tg_case

from rs_embed_dask import (
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    FetchSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    export_batch,
    get_embedding,
    load_export,
)
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.modality import modality_profiles, normalize_modality, resolve_modality
from rs_embed_dask.providers.synthetic import SyntheticProvider
from rs_embed_dask.resolve import resolve_model

ROI = PointBuffer(12.5, 41.9, 160)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(scope="module")
def croma_cfg(tmp_path_factory) -> dict:
    return tg_case.croma_setup(tmp_path_factory.mktemp("croma"))


def test_normalize_modality_follows_rs_embed_aliases():
    assert normalize_modality("Sentinel-1") == "s1"
    assert normalize_modality("sentinel_2") == "s2"
    assert normalize_modality("S2L2A") == "s2_l2a"
    assert normalize_modality(None) is None


def test_profiles_read_rs_embed_describe_format():
    desc = {
        "type": "onthefly",
        "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median", "modality": "s2"},
        "modalities": {
            "s2": {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": ["B4", "B3"]},
            "Sentinel-1": {"collection": "COPERNICUS/S1_GRD_FLOAT", "bands": ["VV", "VH"], "defaults": {"scale_m": 20}},
            "broken": {"bands": ["X"]},
        },
    }
    prof = modality_profiles(desc)
    assert sorted(prof) == ["s1", "s2"]
    assert prof["s1"].bands == ("VV", "VH")
    assert prof["s1"].scale_m == 20
    assert prof["s1"].modality == "s1"
    assert prof["s2"].scale_m == 10
    assert modality_profiles({**desc, "type": "precomputed"}) == {}
    # the default modality without a profile of its own passes, with no sensor of its own
    assert resolve_modality("m", {"defaults": {"modality": "rgb"}}, modality="RGB", sensor=None) == ("rgb", None)
    with pytest.raises(ModelError, match=r"^Model 'm' does not expose modality='s1'\.$"):
        resolve_modality("m", {"defaults": {"modality": "rgb"}}, modality="sentinel1", sensor=None)


def test_croma_modality_sar_resolves_sentinel1_and_the_radar_encoder(croma_cfg):
    for given in ("sar", "s1", "Sentinel-1"):
        rm = resolve_model("croma", backend="synthetic", modality=given, model_config=croma_cfg)
        assert rm.sensor.collection == "COPERNICUS/S1_GRD"
        assert rm.sensor.bands == ("VV", "VH")
        assert rm.sensor.modality == "sar"
        assert rm.config_dict["modality"] == "sar"
    optical = resolve_model("croma", backend="synthetic", model_config=croma_cfg)
    assert len(optical.sensor.bands) == 12
    assert optical.sensor.modality is None
    # fetch= applies to the modality's sensor
    rm = resolve_model("croma", backend="synthetic", modality="sar", fetch=FetchSpec(scale_m=20), model_config=croma_cfg)
    assert (rm.sensor.bands, rm.sensor.scale_m) == (("VV", "VH"), 20)
    # a sensor's own modality counts as the request
    s1 = SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"), modality="sar")
    assert resolve_model("croma", backend="synthetic", sensor=s1, model_config=croma_cfg).config_dict["modality"] == "sar"


def test_modality_conflicts_and_unknown_modalities_are_model_errors(croma_cfg):
    s2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4",), modality="s2")
    with pytest.raises(ModelError, match=r"Conflicting modality values: sensor.modality='s2', modality='s1'\."):
        resolve_model("croma", backend="synthetic", sensor=s2, modality="s1", model_config=croma_cfg)
    with pytest.raises(ModelError, match=r"Conflicting modality values: model_config\['modality'\]='optical'"):
        resolve_model("croma", backend="synthetic", modality="sar", model_config={**croma_cfg, "modality": "optical"})
    with pytest.raises(ModelError, match=r"Model 'croma' does not expose modality='thermal'\."):
        resolve_model("croma", backend="synthetic", modality="thermal", model_config=croma_cfg)


def test_synthetic_provider_renders_sentinel1_backscatter():
    prov = SyntheticProvider()
    s1 = SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"))
    lin = prov.fetch(ROI, WHEN, s1).data
    db = prov.fetch(ROI, WHEN, SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"), use_float_linear=False)).data
    assert lin.shape[0] == 2
    assert np.all(lin > 0)
    np.testing.assert_allclose(10 * np.log10(lin), db, atol=1e-3)
    assert np.median(db[0]) > np.median(db[1])  # VV above VH, as over land
    from rs_embed_dask.core.errors import ProviderError

    with pytest.raises(ProviderError, match="cannot mix Sentinel-1"):
        prov.fetch(ROI, WHEN, SensorSpec(collection="x", bands=("VV", "B4")))


def test_get_embedding_modality_sar_equals_the_sar_config(croma_cfg):
    by_modality = get_embedding("croma", spatial=ROI, temporal=WHEN, backend="synthetic", modality="sar", **croma_cfg)
    by_config = get_embedding("croma", spatial=ROI, temporal=WHEN, backend="synthetic", model_config={**croma_cfg, "modality": "sar"})
    optical = get_embedding("croma", spatial=ROI, temporal=WHEN, backend="synthetic", **croma_cfg)
    np.testing.assert_array_equal(by_modality.data, by_config.data)
    assert not np.allclose(by_modality.data, optical.data)
    assert by_modality.meta["sensor"]["bands"] == ["VV", "VH"] or tuple(by_modality.meta["sensor"]["bands"]) == ("VV", "VH")


@pytest.mark.slow
def test_export_batch_modality_sar_fetches_sentinel1(croma_cfg, tmp_path):
    from distributed import Client, LocalCluster

    rois = [PointBuffer(12.5 + 0.01 * i, 41.9, 160) for i in range(3)]
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster, Client(cluster) as client:
        export_batch(
            spatials=rois, temporal=WHEN, backend="synthetic", modality="sar",
            models=[ExportModelRequest("croma", model_config=croma_cfg)],
            target=ExportTarget.combined(str(tmp_path / "global")), config=ExportConfig(show_progress=False), client=client,
        )  # fmt: skip
        export_batch(
            spatials=rois, temporal=WHEN, backend="synthetic",
            models=[ExportModelRequest("croma", modality="s1", model_config=croma_cfg)],
            target=ExportTarget.combined(str(tmp_path / "request")), config=ExportConfig(show_progress=False), client=client,
        )  # fmt: skip
    a, b = load_export(tmp_path / "global.npz"), load_export(tmp_path / "request.npz")
    for res in (a, b):
        (inputs,) = [v for k, v in np.load(res.path).items() if k.startswith("inputs_")]
        assert inputs.shape[1] == 2  # VV, VH: not the 12 Sentinel-2 bands
        assert res.manifest["models"][0]["sensor"]["bands"] == ["VV", "VH"]
    np.testing.assert_array_equal(a.embedding("croma"), b.embedding("croma"))
    single = get_embedding("croma", spatial=rois[1], temporal=WHEN, backend="synthetic", modality="sar", output=OutputSpec.pooled(), **croma_cfg)
    np.testing.assert_allclose(a.embedding("croma")[1], single.data, rtol=1e-5, atol=1e-6)
