"""Paths mean the same on every worker: made absolute in the client; unseen targets refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import (
    ExportConfig,
    ExportTarget,
    PointBuffer,
    TemporalSpec,
    export_batch,
)
from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.export.paths import check_workers_see
from rs_embed_dask.export.plan import build_plan

REPO = Path(__file__).resolve().parents[1]
T = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(121.5, 31.2, 320), PointBuffer(120.5, 30.2, 320)]

# a scheduler and one worker process whose folder is the one given on the command line
_CLUSTER = r"""
import sys, time
from distributed import LocalCluster
cl = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, host="127.0.0.1")
print(cl.scheduler_address, flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def elsewhere_client(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A client of workers started in another folder (``tmp_path/workers``)."""
    from distributed import Client

    wdir = tmp_path / "workers"
    wdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["DASK_LOGGING__DISTRIBUTED"] = "error"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER], cwd=wdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        assert address.startswith("tcp://"), address
        with Client(address, set_as_default=False, timeout=60) as c:
            c.wait_for_workers(1, timeout=60)
            assert set(c.run(os.getcwd).values()) == {str(wdir)}
            yield c, wdir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.cluster
def test_relative_targets_are_written_where_the_client_asked(
    elsewhere_client: tuple[Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, wdir = elsewhere_client
    cdir = tmp_path / "client"
    cdir.mkdir()
    monkeypatch.chdir(cdir)
    cfg = ExportConfig(show_progress=False, chunk_size=2)
    man = export_batch(spatials=ROIS, temporal=T, models=["rcf"], target=ExportTarget.combined("out/run"),
                       config=cfg, backend="synthetic", client=client)  # fmt: skip
    assert man["status"] == "ok"
    assert (cdir / "out" / "run.npz").is_file()
    with np.load(cdir / "out" / "run.npz") as z:
        assert z["embeddings__rcf"].shape == (2, 512)
    res = export_batch(spatials=ROIS, temporal=T, models=["rcf"], target=ExportTarget.per_item("items"),
                       config=cfg, backend="synthetic", client=client)  # fmt: skip
    assert [r["status"] for r in res] == ["ok", "ok"]  # type: ignore[index]
    assert sorted(p.name for p in (cdir / "items").glob("*.npz")) == ["p00000.npz", "p00001.npz"]
    assert list(wdir.iterdir()) == []  # nothing in the workers' folder
    assert not list((cdir / "out").glob(".rs-embed-dask-probe-*"))


def test_every_target_of_the_plan_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    def plan(target: ExportTarget) -> Any:
        return build_plan(
            spatials=ROIS, temporal=T, models=["rcf"], target=target, config=ExportConfig(), backend="synthetic",
            device="auto", output=OutputSpec.pooled(), sensor=None, fetch=None, modality=None, input_prep=None,
        )  # fmt: skip

    assert plan(ExportTarget.combined("out/run")).out_file == str(tmp_path / "out" / "run.npz")
    assert plan(ExportTarget.per_item("items")).out_dir == str(tmp_path / "items")


def test_provider_and_model_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rs_embed_dask.export.paths import absolute_model_config, absolute_provider_options

    monkeypatch.chdir(tmp_path)
    opts = absolute_provider_options(["local"], {"path": ["tiles/*.tif", "~/x.tif"], "nodata": 0})
    assert opts == {"path": [str(tmp_path / "tiles" / "*.tif"), os.path.expanduser("~/x.tif")], "nodata": 0}
    assert absolute_provider_options(["local"], {"path": "s3://bucket/x.tif"}) == {"path": "s3://bucket/x.tif"}
    cfg = absolute_model_config({"weights": "ckpt/m.pt", "data_dir": "d", "variant": "base"})
    assert cfg == {"weights": str(tmp_path / "ckpt" / "m.pt"), "data_dir": str(tmp_path / "d"), "variant": "base"}


class _RemoteWorkers:
    """Workers on another machine: they look the probe up on their own file system, where it is not."""

    def run(self, fn: Any, path: str) -> dict[str, bool]:
        return {"tcp://10.0.0.7:40000": fn(path + ".on-another-machine")}


def test_a_target_the_workers_cannot_see_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"not visible to the workers \['tcp://10.0.0.7:40000'\].*shared file system"):
        check_workers_see(_RemoteWorkers(), str(tmp_path / "out"), what="the export target's folder")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the probe is removed
