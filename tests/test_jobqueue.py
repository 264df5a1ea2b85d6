"""Jobqueue pools from ``cluster/*.yaml``: the batch scripts they submit, and real pools of local jobs.

No batch system is needed: job scripts are rendered by dask-jobqueue's own
job classes, and the pool machinery is exercised end to end with
dask-jobqueue's ``LocalJob`` (the job script runs as a local process).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rs_embed_dask.cluster import JobQueuePools, job_script, load_cluster_config
from rs_embed_dask.core.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


def test_cluster_files_have_a_gpu_pool_and_an_io_pool() -> None:
    for name in ("slurm", "pbs"):
        cfg = load_cluster_config(REPO / "cluster" / f"{name}.yaml")
        assert cfg.kind == name
        assert {p.name: p.resource for p in cfg.pools} == {"gpu": "gpu", "io": "io"}
        assert cfg.pool("gpu").slots == 1
        assert cfg.pool("io").slots > 1
    # names resolve to the files in cluster/
    assert load_cluster_config("slurm").path == str(REPO / "cluster" / "slurm.yaml")


def test_slurm_job_scripts() -> None:
    gpu = job_script("slurm", "gpu", scheduler="tcp://10.1.2.3:8786")
    io = job_script("slurm", "io", scheduler="tcp://10.1.2.3:8786")
    for script in (gpu, io):
        assert script.startswith("#!/usr/bin/env bash")
        assert "#SBATCH -t 04:00:00" in script
        assert "#SBATCH -n 1" in script
        assert "distributed.cli.dask_worker tcp://10.1.2.3:8786" in script
        assert "--lifetime 225m --lifetime-stagger 10m" in script
        assert "--nanny" in script
    assert "#SBATCH -p gpu" in gpu
    assert "#SBATCH -p cpu" in io
    assert "#SBATCH --gres=gpu:1" in gpu
    assert "--gres" not in io
    assert "#SBATCH --cpus-per-task=8" in gpu  # CPU cores for preprocessing, one dask thread
    assert "--nthreads 1 " in gpu
    assert "--resources gpu=1" in gpu
    assert "--nthreads 16 " in io
    assert "--resources io=14" in io
    assert "#SBATCH --mem=" in gpu


def test_pbs_job_scripts() -> None:
    gpu = job_script("pbs", "gpu")
    io = job_script("pbs", "io")
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=64GB" in gpu
    assert "ngpus" not in io
    assert "#PBS -l select=1:ncpus=16:mem=32GB" in io
    for script in (gpu, io):
        assert "#PBS -l walltime=04:00:00" in script
        assert "--lifetime 225m --lifetime-stagger 10m" in script
    assert "--resources gpu=1" in gpu
    assert "--nthreads 1 " in gpu
    assert "--resources io=14" in io


def test_bad_cluster_files_name_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: slurm\npools:\n  gpu:\n    gres: 1\n    worker-extra-args: ['--resources', 'gpu=1']\n")
    with pytest.raises(SpecError, match=r"pools\.gpu\.gres: unknown key; allowed keys: \[.*'job-extra-directives'"):
        load_cluster_config(bad)
    bad.write_text("kind: slurm\npools:\n  gpu:\n    cores: 1\n")
    with pytest.raises(SpecError, match=r"pools\.gpu\.worker-extra-args must advertise a resource"):
        load_cluster_config(bad)
    bad.write_text("kind: lsf\npools: {}\n")
    with pytest.raises(SpecError, match=r"kind must be one of \['slurm', 'pbs', 'local'\]"):
        load_cluster_config(bad)
    with pytest.raises(SpecError, match="known names"):
        load_cluster_config("no-such-cluster")


def test_slurm_pools_start_a_local_scheduler_without_submitting() -> None:
    cfg = load_cluster_config("slurm")
    cluster = JobQueuePools(cfg, scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}, keep_alive=0)
    try:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        assert f"dask_worker {addr} " in cluster.job_script("gpu")
        assert cluster.pool_workers("gpu") == []
        assert not cluster.workers
        with pytest.raises(SpecError, match="per pool"):
            cluster.scale(3)
        with pytest.raises(SpecError, match="pools are"):
            cluster.adapt(3, 4)
    finally:
        cluster.close()


@pytest.mark.slow
@pytest.mark.cluster
def test_local_job_pools_scale_per_pool_and_advertise_resources(tmp_path: Path) -> None:
    from distributed import Client

    from rs_embed_dask.cluster import cluster_resources

    cfg_file = tmp_path / "local.yaml"
    cfg_file.write_text(
        "kind: local\n"
        "pools:\n"
        "  gpu: {cores: 1, memory: 1GB, processes: 1, worker-extra-args: ['--resources', 'gpu=1', '--no-dashboard']}\n"
        "  io: {cores: 3, memory: 1GB, processes: 1, worker-extra-args: ['--resources', 'io=2', '--no-dashboard']}\n"
    )
    cluster = JobQueuePools(
        load_cluster_config(cfg_file), scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}, keep_alive=0
    )
    try:
        with Client(cluster, set_as_default=False) as c:
            cluster.scale(gpu=2, io=1)
            c.wait_for_workers(3, timeout=120)
            assert cluster_resources(c) == {"gpu": 2, "io": 2}
            names = {w["name"]: w for w in c.scheduler_info(n_workers=-1)["workers"].values()}
            assert sorted(names) == sorted(cluster.pool_workers("gpu") + cluster.pool_workers("io"))
            assert all(w["nthreads"] == 1 for n, w in names.items() if n.startswith("gpu-"))
            cluster.scale(gpu=0)
            deadline = time.monotonic() + 60
            while cluster_resources(c).get("gpu") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert cluster_resources(c) == {"io": 2}
            assert cluster.pool_workers("io")
            assert not cluster.pool_workers("gpu")
    finally:
        cluster.close()
