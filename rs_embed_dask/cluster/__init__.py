"""Clusters for exports: local pools, dask-jobqueue pools and running schedulers.

Every cluster an export runs on has two pools of workers: IO workers
advertising the resource ``io`` and inference workers advertising ``gpu``.

- :func:`local_cluster`: both pools on this machine (the embedded default,
  :mod:`rs_embed_dask.cluster.local`).
- :func:`slurm_cluster` / :func:`pbs_cluster`: both pools as batch jobs, from
  a YAML file in the repository's ``cluster/`` folder
  (:mod:`rs_embed_dask.cluster.jobqueue`).
- :func:`connect`: a client of a scheduler that is already running (an
  address or a ``--scheduler-file``), e.g. one started by
  ``cluster/sbatch_export.sh`` (:mod:`rs_embed_dask.cluster.client`).

:mod:`rs_embed_dask.cluster.worker_setup` is the workers' ``--preload``
module (core pinning, torch threads, the allocator of inference workers).
"""

from __future__ import annotations

from rs_embed_dask.cluster.client import cluster_resources, connect, print_dashboard
from rs_embed_dask.cluster.jobqueue import (
    ClusterConfig,
    JobQueuePools,
    PoolConfig,
    job_script,
    load_cluster_config,
    pbs_cluster,
    slurm_cluster,
)
from rs_embed_dask.cluster.local import export_client, local_cluster

__all__ = [
    "ClusterConfig",
    "JobQueuePools",
    "PoolConfig",
    "cluster_resources",
    "connect",
    "export_client",
    "job_script",
    "load_cluster_config",
    "local_cluster",
    "pbs_cluster",
    "print_dashboard",
    "slurm_cluster",
]
