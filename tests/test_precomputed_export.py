"""An export mixing precomputed products and an on-the-fly model, on a real cluster, without Earth Engine."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from model_cases.copernicus import write_copernicus_map
from model_cases.tessera import write_tessera_cache

from rs_embed_dask import ExportConfig, ExportModelRequest, ExportTarget, export_batch, load_export
from rs_embed_dask.core.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_dask.models.copernicus import CopernicusEmbedder
from rs_embed_dask.models.tessera import TesseraEmbedder

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

#: Installed as ``ee`` in every process: any use of Earth Engine is logged, then fails.
POISON = r'''
import os, sys, types

class _PoisonedEarthEngine(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        with open({log!r}, "a") as f:
            f.write(f"{{os.getpid()}} ee.{{name}}\n")
        raise RuntimeError("Earth Engine was used by an export that must not need it")

sys.modules["ee"] = _PoisonedEarthEngine("ee")
'''


@pytest.fixture
def cluster():
    from distributed import Client, Nanny, Scheduler, SpecCluster

    # the io worker imports torch, rasterio and geotessera beside its tasks: about 800 MiB, which a
    # 1 GiB limit would pause (Dask pauses at 80 %), leaving the export waiting for ever
    workers = {
        "io": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"io": 2}, "memory_limit": "4GiB"}},
        "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"gpu": 1}, "memory_limit": "4GiB"}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as spec, Client(spec) as client:
        client.wait_for_workers(2)
        yield client


def test_mixed_export_never_touches_earth_engine(cluster, tmp_path, monkeypatch):
    from distributed import get_task_stream

    client = cluster
    log = tmp_path / "ee_calls.log"
    code = POISON.format(log=str(log))
    monkeypatch.setitem(sys.modules, "ee", None)  # restored after the test
    exec(code, {})  # the client process
    client.run(exec, code, {})  # every worker process
    cache = tmp_path / "tessera"
    write_tessera_cache(cache)
    cop_path = tmp_path / "cop" / "embed_map_310k.tif"
    write_copernicus_map(cop_path)
    spatials = [
        PointBuffer(5.96, 45.04, 200.0),
        BBox(5.99, 45.02, 6.01, 45.03),
        PointBuffer(6.05, 45.08, 150.0),
    ]
    models = [
        ExportModelRequest.configure("tessera", cache_dir=str(cache), download=False),
        ExportModelRequest.configure("copernicus", path=str(cop_path)),
        ExportModelRequest.configure("rcf", features=8),
    ]
    out = tmp_path / "mixed.npz"
    with get_task_stream(client) as ts:
        manifest = export_batch(
            spatials=spatials,
            temporal=TemporalSpec.year(2021),
            models=models,
            target=ExportTarget.combined(str(out)),
            backend="synthetic",  # the on-the-fly model's provider; products are their own source
            config=ExportConfig(chunk_size=2, show_progress=False, save_inputs=False),
            client=client,
        )
    assert manifest["status"] == "ok", manifest
    assert not log.exists(), log.read_text()
    assert client.run(eval, "type(__import__('sys').modules['ee']).__name__") == {
        w: "_PoisonedEarthEngine" for w in client.scheduler_info()["workers"]
    }

    # no fetch task for the products; their inference ran on the io worker, rcf's on the gpu worker
    workers = {w: info["name"] for w, info in client.scheduler_info()["workers"].items()}
    ran: dict[str, set[str]] = {}
    for rec in ts.data:
        key = str(rec["key"])
        if key.startswith("rsembed-"):
            kind, model = key.split("-")[1], key.split("-")[2]
            ran.setdefault(f"{kind}:{model}", set()).add(workers[rec["worker"]])
    assert ran["infer:tessera"] == {"io"}
    assert ran["infer:copernicus"] == {"io"}
    assert ran["infer:rcf"] == {"gpu"}
    assert not [k for k in ran if k.startswith("fetch:") and ("tessera" in k or "copernicus" in k)]
    assert len([k for k in ran if k.startswith("fetch:")]) == 1  # rcf's synthetic input only

    res = load_export(str(out))
    tess = TesseraEmbedder({"cache_dir": str(cache), "download": False}).embed_spatials(
        spatials, temporal=TemporalSpec.year(2021), output=OutputSpec.pooled(), sensor=None
    )
    cop = CopernicusEmbedder({"path": str(cop_path)}).embed_spatials(
        spatials, temporal=TemporalSpec.year(2021), output=OutputSpec.pooled(), sensor=None
    )
    emb_t = np.asarray(res.embedding("tessera"))
    emb_c = np.asarray(res.embedding("copernicus"))
    np.testing.assert_allclose(emb_t, np.stack([e.data for e in tess]), rtol=1e-6)
    np.testing.assert_allclose(emb_c, np.stack([e.data for e in cop]), rtol=1e-6)
    assert np.asarray(res.embedding("rcf")).shape == (3, 8)


def test_copernicus_grids_of_different_shapes_are_stored_per_item(tmp_path):
    """Native-grid outputs differ in shape per ROI: rs-embed's per-item ``embedding__<model>__<i>`` keys."""
    from _clusters import local_client

    cop_path = tmp_path / "embed_map_310k.tif"
    write_copernicus_map(cop_path)
    spatials = [BBox(5.1, 44.4, 5.8, 44.8), PointBuffer(5.6, 44.8, 20_000.0), BBox(6.5, 43.0, 7.6, 45.0)]
    out = tmp_path / "cop.npz"
    with local_client(io_threads=2, inference_workers=1) as client:
        manifest = export_batch(
            spatials=spatials,
            temporal=TemporalSpec.year(2021),
            models=[ExportModelRequest.configure("copernicus", path=str(cop_path))],
            target=ExportTarget.combined(str(out)),
            output=OutputSpec.grid(),
            config=ExportConfig(chunk_size=2, show_progress=False, save_inputs=False),
            client=client,
        )
    assert manifest["status"] == "ok", manifest
    with np.load(out) as z:
        assert sorted(z.files) == [f"embedding__copernicus__{i:05d}" for i in range(3)]
        stored = [z[f"embedding__copernicus__{i:05d}"] for i in range(3)]
    direct = CopernicusEmbedder({"path": str(cop_path)}).embed_spatials(
        spatials, temporal=TemporalSpec.year(2021), output=OutputSpec.grid(), sensor=None
    )
    assert [s.shape for s in stored] == [(768, 2, 4), (768, 3, 3), (768, 4, 2)]
    for s, d in zip(stored, direct, strict=True):
        np.testing.assert_array_equal(s, np.asarray(d.data))
    with pytest.warns(UserWarning, match="different shapes per item"):
        res = load_export(str(out))
    ragged = res.models["copernicus"].embeddings_ragged
    assert res.models["copernicus"].embeddings is None
    for i, s in enumerate(stored):
        np.testing.assert_array_equal(np.asarray(ragged[i]), s)
