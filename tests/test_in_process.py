"""Small requests run in this process (no cluster); the files are those of a cluster run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rs_embed_dask.cluster.local as local_mod
from rs_embed_dask import (
    ExportConfig,
    ExportTarget,
    PointBuffer,
    TemporalSpec,
    export_batch,
    export_npz,
    load_export,
)
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.export.inline import IN_PROCESS_ENV, run_in_process
from rs_embed_dask.export.plan import build_plan

ROI = PointBuffer(121.5, 31.2, 320)
T = TemporalSpec.range("2022-06-01", "2022-09-01")


def _spy_clusters(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the embedded clusters started (the real ``local_cluster`` still runs)."""
    started: list[int] = []
    real = local_mod.local_cluster

    def counting(**kw: Any) -> Any:
        started.append(1)
        return real(**kw)

    monkeypatch.setattr(local_mod, "local_cluster", counting)
    return started


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _manifest(path: Path) -> dict[str, Any]:
    man = json.loads(path.read_text(encoding="utf-8"))
    for k in ("created_at", "completed_at"):
        man.pop(k, None)
    for k in ("npz_path", "manifest_path", "out_file", "nc_path"):
        man.pop(k, None)
    return man


@pytest.mark.cluster
def test_export_npz_of_one_roi_starts_no_cluster_and_writes_a_cluster_runs_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _spy_clusters(monkeypatch)
    kw: dict[str, Any] = {"spatial": ROI, "temporal": T, "models": ["rcf"], "backend": "synthetic"}
    monkeypatch.delenv(IN_PROCESS_ENV, raising=False)
    man = export_npz(out_path=str(tmp_path / "inproc.npz"), **kw)
    assert started == []  # no cluster for one ROI
    assert man["status"] == "ok"

    monkeypatch.setenv(IN_PROCESS_ENV, "0")  # the documented setting: always a cluster
    export_npz(out_path=str(tmp_path / "cluster.npz"), **kw)
    assert started == [1]

    a, b = _npz(tmp_path / "inproc.npz"), _npz(tmp_path / "cluster.npz")
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _manifest(tmp_path / "inproc.json") == _manifest(tmp_path / "cluster.json")
    res = load_export(tmp_path / "inproc.npz")
    try:
        assert res.embedding("rcf").shape == (1, 512)
    finally:
        res.close()


def test_in_process_export_keeps_resume_and_failure_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed item in process: partial manifest, working store kept, resume retries only it."""
    started = _spy_clusters(monkeypatch)
    monkeypatch.delenv(IN_PROCESS_ENV, raising=False)
    rois = [PointBuffer(121.5 + 0.05 * i, 31.2, 320) for i in range(8)]
    out = tmp_path / "run.npz"
    common: dict[str, Any] = {
        "spatials": rois, "temporal": T, "models": ["rcf"], "backend": "synthetic",
        "target": ExportTarget.combined(str(out)),
    }  # fmt: skip
    cfg = ExportConfig(chunk_size=4, continue_on_error=True, show_progress=False)
    man = export_batch(config=cfg, provider_options={"failure_rate": 0.5}, **common)
    assert started == []
    assert man["models"][0]["status"] == "partial"
    assert 0 < len(man["models"][0]["failed_indices"]) < len(rois)
    assert os.path.isdir(str(out) + ".work.zarr")
    man2 = export_batch(config=ExportConfig(chunk_size=4, continue_on_error=True, resume=True, show_progress=False), **common)
    assert man2["models"][0]["status"] == "ok"
    assert started == []


def test_the_threshold_counts_chunks_and_a_client_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def plan(n: int, chunk: int) -> Any:
        return build_plan(
            spatials=[PointBuffer(121.5 + i * 0.01, 31.2, 320) for i in range(n)], temporal=T, models=["rcf"],
            target=ExportTarget.combined(str(tmp_path / "x.npz")), config=ExportConfig(chunk_size=chunk),
            backend="synthetic", device="auto", output=OutputSpec.pooled(), sensor=None, fetch=None,
            modality=None, input_prep=None,
        )  # fmt: skip

    monkeypatch.delenv(IN_PROCESS_ENV, raising=False)
    assert run_in_process(plan(8, 4), None)  # 2 chunks
    assert not run_in_process(plan(9, 4), None)  # 3 chunks
    assert not run_in_process(plan(1, 4), object())  # a client given: it runs there
    monkeypatch.setenv(IN_PROCESS_ENV, "5")
    assert run_in_process(plan(9, 2), None)
    monkeypatch.setenv(IN_PROCESS_ENV, "0")
    assert not run_in_process(plan(1, 4), None)
