"""The commands of ``rs-embed-dask`` beyond rs-embed's two: models, describe, demo, export, inspect, cluster.

Each ``cmd_*`` takes the parsed arguments and returns the exit code (see
:mod:`rs_embed_dask.cli`).  Heavy imports stay inside the commands so that
``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "cmd_cluster",
    "cmd_demo",
    "cmd_describe",
    "cmd_export",
    "cmd_inspect",
    "cmd_ls",
    "cmd_models",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def cmd_models(args: argparse.Namespace) -> int:
    """The registered models as a table (``--json``: rows as JSON; ``--names``: names only)."""
    from rs_embed_dask import list_models

    if args.names:
        for name in list_models(include_aliases=args.aliases):
            print(name)
        return EXIT_OK
    from rs_embed_dask.cli.model_table import format_models_table, model_rows

    rows = model_rows(include_aliases=args.aliases, check_weights=not args.no_weights)
    print(json.dumps(rows, indent=2) if args.json else format_models_table(rows))
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    """Print one model's description as JSON."""
    from rs_embed_dask import describe_model

    print(json.dumps(describe_model(args.model), indent=2, default=str))
    return 0


def _demo_spatials(n_side: int, buffer_m: float) -> list[Any]:
    from rs_embed_dask import PointBuffer

    # a small grid of ROIs around Shanghai's outskirts, spaced by twice the buffer (in degrees, roughly)
    step = 2 * buffer_m / 111_320.0 * 1.5
    return [
        PointBuffer(121.30 + step * i, 31.10 + step * j, buffer_m) for j in range(n_side) for i in range(n_side)
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo export: ``rcf`` on the synthetic provider over a small ROI grid, on a local cluster."""
    import numpy as np

    from rs_embed_dask import ExportConfig, ExportTarget, TemporalSpec, export_batch

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    spatials = _demo_spatials(args.side, args.buffer_m)
    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    print(f"rs-embed-dask demo: {len(spatials)} ROIs, model 'rcf', provider 'synthetic', local cluster")
    t0 = time.perf_counter()
    manifest = export_batch(
        spatials=spatials,
        temporal=temporal,
        models=["rcf"],
        target=ExportTarget.combined(os.path.join(out_dir, "demo_export")),
        backend="synthetic",
        config=ExportConfig(chunk_size=8, show_progress=not args.quiet),
    )
    dt = time.perf_counter() - t0
    assert isinstance(manifest, dict)
    print(f"export status={manifest['status']} in {dt:.1f} s ({len(spatials) / dt:.1f} ROIs/s)")
    print(f"files: {manifest['npz_path']}  +  {manifest.get('manifest_path')}")
    from rs_embed_dask import load_export

    res = load_export(manifest["npz_path"])
    emb = np.asarray(res.embedding("rcf"))
    print(f"loaded: layout={res.layout} n_items={res.n_items} embeddings {emb.shape} {emb.dtype}")
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    for i in range(min(3, emb.shape[0])):
        sp = res.spatials[i]
        print(f"  ROI {i} ({sp['lon']:.4f}, {sp['lat']:.4f}): {emb[i, :6]} ...")
    try:
        from rs_embed_dask.plot import plot_pooled_map

        png = os.path.join(out_dir, "demo_map.png")
        plot_pooled_map(res, "rcf", path=png)
        print(f"plot: {png}")
    except ImportError:
        pass
    return 0


def _cluster_override(args: argparse.Namespace, job: Any) -> Any:
    """The job's cluster, replaced by ``--local``/``--scheduler``/``--scheduler-file``/``--jobqueue``."""
    from pathlib import Path

    from rs_embed_dask.jobfile import ClusterChoice, jobqueue_choice

    if args.local:
        return ClusterChoice()
    if args.scheduler:
        return ClusterChoice(kind="scheduler", address=args.scheduler)
    if args.scheduler_file:
        return ClusterChoice(kind="scheduler_file", address=os.path.abspath(args.scheduler_file))
    if args.jobqueue:
        from rs_embed_dask.core.errors import SpecError

        def err(path: str, msg: str) -> SpecError:
            # "cluster.scale.cpu" -> "--scale: cpu: ..."
            _, flag, *rest = path.split(".")
            return SpecError(": ".join([f"--{flag}", *rest, msg]))

        scale = _pairs(args.scale, "--scale", int)
        adapt = {k: [int(x) for x in v.split(":")] for k, v in _pairs(args.adapt, "--adapt", str).items()}
        return jobqueue_choice(err, args.jobqueue, scale, adapt, Path.cwd())
    return job.cluster


def _pairs(items: list[str] | None, flag: str, conv: Any) -> dict[str, Any]:
    from rs_embed_dask.core.errors import SpecError

    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            out[k] = conv(v)
        except ValueError as exc:
            raise SpecError(f"{flag} expects POOL=VALUE (e.g. gpu=4, or gpu=1:8 for --adapt); got {item!r}.") from exc
    return out


@contextlib.contextmanager
def _client_for(choice: Any, *, wait_s: float) -> Iterator[Any]:
    """A client for the job's cluster; ``None`` lets the export start its embedded local cluster."""
    from distributed import Client

    from rs_embed_dask import cluster as clusters
    from rs_embed_dask.cluster.local import close_cluster

    if choice.kind == "local":
        if not choice.local:
            yield None
            return
        lc = clusters.local_cluster(**dict(choice.local))
        try:
            with Client(lc) as c:
                yield c
        finally:
            close_cluster(lc)
        return
    if choice.kind in ("scheduler", "scheduler_file"):
        kw = {"address": choice.address} if choice.kind == "scheduler" else {"scheduler_file": choice.address}
        client = clusters.connect(**kw, timeout=wait_s)
        try:
            _wait_for_pools(client, ("io", "gpu") if clusters.cluster_resources(client) else (), wait_s)
            yield client
        finally:
            client.close()
        return
    cfg = clusters.load_cluster_config(choice.address)
    make = clusters.slurm_cluster if cfg.kind == "slurm" else clusters.pbs_cluster
    jq = make(cfg, scale=dict(choice.scale) or None, adapt=dict(choice.adapt) or None)
    try:
        with Client(jq) as c:
            wanted = {cfg.pool(p).resource for p, n in choice.scale.items() if n} | {
                cfg.pool(p).resource for p, (lo, _) in choice.adapt.items() if lo
            }
            _wait_for_pools(c, tuple(sorted(wanted)), wait_s)
            yield c
    finally:
        jq.close()


def _wait_for_pools(client: Any, resources: tuple[str, ...], wait_s: float) -> None:
    """Wait until a worker is up and every resource in ``resources`` is advertised."""
    from rs_embed_dask.cluster import cluster_resources
    from rs_embed_dask.core.errors import ProviderError

    deadline = time.monotonic() + wait_s
    while True:
        info = client.scheduler_info(n_workers=-1).get("workers", {})
        have = cluster_resources(client)
        if info and all(have.get(r) for r in resources):
            return
        if time.monotonic() > deadline:
            raise ProviderError(
                f"no workers with resources {list(resources)} joined the scheduler within {wait_s:.0f} s "
                f"(workers: {len(info)}, resources: {have})."
            )
        time.sleep(0.5)


def cmd_export(args: argparse.Namespace) -> int:
    """Run the export of a YAML job file; exit 0 when every model is ok, 1 otherwise."""
    from dataclasses import replace

    from rs_embed_dask import export_batch
    from rs_embed_dask.jobfile import load_job

    job = load_job(args.job)
    job = job.with_cluster(_cluster_override(args, job))
    cfg = job.config
    if args.resume:
        cfg = replace(cfg, resume=True)
    if args.quiet:
        cfg = replace(cfg, show_progress=False)
    job = replace(job, config=cfg)
    # everything is validated: only now is a cluster started or connected
    t0 = time.perf_counter()
    with _client_for(job.cluster, wait_s=args.wait) as client:
        result = export_batch(**job.export_kwargs(), client=client)
    dt = time.perf_counter() - t0
    manifests = result if isinstance(result, list) else [result]
    statuses = [str(m.get("status", "ok")) for m in manifests]
    status = "ok" if all(s == "ok" for s in statuses) else ("failed" if all(s == "failed" for s in statuses) else "partial")
    where = job.target.out_file or job.target.out_dir
    print(f"rs-embed-dask: export {status}: {len(manifests) if isinstance(result, list) else manifests[0].get('n_items', '?')} "
          f"item(s) in {dt:.1f} s -> {where}")  # fmt: skip
    return EXIT_OK if status == "ok" else EXIT_FAILED


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise an export (table or ``--json``, error messages whole); exit 0 when its status is ok, 1 otherwise."""
    from rs_embed_dask.inspect_export import export_summary, format_summary

    if not os.path.exists(args.export):
        print(f"rs-embed-dask: error: export {args.export!r} does not exist.", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = export_summary(args.export)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
    return EXIT_OK if summary["status"] == "ok" else EXIT_FAILED


def cmd_ls(args: argparse.Namespace) -> int:
    """List the exports in a folder from their manifests (table or ``--json``); exit 2 when it is no folder."""
    from rs_embed_dask.cli.export_listing import export_rows, format_exports_table

    if not os.path.isdir(args.folder):
        print(f"rs-embed-dask: error: {args.folder!r} is not a folder.", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = export_rows(args.folder)
    print(json.dumps(rows, indent=2, default=str) if args.json else format_exports_table(rows, args.folder))
    return EXIT_OK


def cmd_cluster(args: argparse.Namespace) -> int:
    """Start a cluster (local, SLURM or PBS), print its address and run until Ctrl-C."""
    import signal

    from distributed import Client

    from rs_embed_dask import cluster as clusters

    if args.kind == "local":
        cl = clusters.local_cluster(
            io_workers=args.io_workers,
            io_threads=args.io_threads,
            inference_workers=args.inference_workers,
            dashboard_address=args.dashboard_address,
        )
    else:
        scale = _pairs(args.scale, "--scale", int)
        adapt = {k: tuple(int(x) for x in v.split(":")) for k, v in _pairs(args.adapt, "--adapt", str).items()}
        make = clusters.slurm_cluster if args.kind == "slurm" else clusters.pbs_cluster
        cl = make(args.config or args.kind, scale=scale or None, adapt=adapt or None)  # type: ignore[arg-type]
        if args.print_job_scripts:
            for pool in cl.pools:
                print(f"# --- job script of pool {pool!r} ---\n{cl.job_script(pool)}")
    if args.scheduler_file:
        with Client(cl) as c:
            c.write_scheduler_file(args.scheduler_file)
        print(f"rs-embed-dask: scheduler file {args.scheduler_file}", flush=True)
    print("rs-embed-dask: running; press Ctrl-C to stop.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("rs-embed-dask: stopping the cluster", flush=True)
    finally:
        cl.close()
    return EXIT_OK
