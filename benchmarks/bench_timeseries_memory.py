"""Peak worker memory of a time-series export: 2,000 ROIs against 200 (issue 15).

    .venv/bin/python benchmarks/bench_timeseries_memory.py [--quick] [--memory-limit 4GiB]

Workload: ``olmoearth`` on a one-year window (twelve 30-day frames of its 12
Sentinel-2 bands) plus the single-frame ``rcf`` (4 bands), on 96 x 96 px ROIs
(PointBuffer buffer_m=480 at 10 m): 5.3 MB of time-series input a ROI.
olmoearth runs on random weights of a narrowed config (width 32, depth 1,
``image_size=16``, ``patch_size=8``; written in the published checkpoint
format by ``tests/model_cases/olmoearth.py``), so the forward pass is cheap
and the memory is the inputs'.  Synthetic provider without latency,
``save_inputs=False``, combined NPZ, ``chunk_size=64`` requested; the engine
sizes the chunks from the inputs' bytes and the workers' memory limit
(:mod:`rs_embed_dask.export.sizing`).

For each size (200, then 2,000 ROIs; ``--quick``: 100 and 500) a fresh
``local_cluster(memory_limit=...)`` is started (its default layout for this
machine: on a CPU-only machine one worker with both the IO and the inference
resource), the models are loaded by a warm-up export of 8 ROIs, and the
resident size of each worker process is sampled every 50 ms during the
measured export.  Reports each worker's peak, the chunk the engine chose and
the ratio of the peaks (target: 2,000 ROIs <= 1.2 x 200 ROIs).

Writes benchmarks/results/timeseries_memory.json and .md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):  # tests/: the tiny olmoearth checkpoint writer
    if path not in sys.path:
        sys.path.insert(0, path)

from benchmarks._common import write_results  # noqa: E402
from benchmarks.bench_memory import ProcessPeak  # noqa: E402
from rs_embed_dask import (  # noqa: E402
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    export_batch,
)
from rs_embed_dask.cluster import local_cluster  # noqa: E402

TEMPORAL = TemporalSpec.range("2022-01-01", "2023-01-01")  # twelve 30-day bins
BUFFER_M = 480  # 96 px at 10 m
CHUNK_SIZE = 64


def rois(n: int, offset: int = 0) -> list[PointBuffer]:
    return [PointBuffer(10.0 + 0.03 * ((i + offset) % 100), 45.0 + 0.03 * ((i + offset) // 100), BUFFER_M)
            for i in range(n)]  # fmt: skip


def models(weights: str) -> list[Any]:
    cfg = {"weights": weights, "image_size": 16, "patch_size": 8}
    return [ExportModelRequest("olmoearth", model_config=cfg), "rcf"]


def _probe(dask_worker: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "name": str(dask_worker.name), "resources": dict(dask_worker.state.total_resources),
            "memory_limit": int(dask_worker.memory_manager.memory_limit or 0)}  # fmt: skip


def one_size(n: int, weights: str, memory_limit: str, tmp: str) -> dict[str, Any]:
    from distributed import Client

    from rs_embed_dask.export.plan import build_plan
    from rs_embed_dask.export.sizing import chunk_sizing

    cfg = ExportConfig(format="npz", save_inputs=False, chunk_size=CHUNK_SIZE, show_progress=False)
    common = {"temporal": TEMPORAL, "models": models(weights), "backend": "synthetic", "device": "cpu",
              "output": OutputSpec.pooled(), "provider_options": {"latency_s": 0.0}}  # fmt: skip
    cluster = local_cluster(io_threads=8, memory_limit=memory_limit, dashboard_address=None, verbose=False)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(len(cluster.worker_spec), timeout=600)
            export_batch(spatials=rois(8, offset=5000), config=cfg, client=client,
                         target=ExportTarget.combined(os.path.join(tmp, f"warm-{n}.npz")), **common)  # fmt: skip
            plan = build_plan(spatials=rois(n), config=cfg, target=ExportTarget.combined(os.path.join(tmp, "p.npz")),
                              sensor=None, fetch=None, modality=None, input_prep=None, **common)  # fmt: skip
            sizing = chunk_sizing(plan, client)
            probes = client.run(_probe)
            peaks = {p["name"]: ProcessPeak(p["pid"], interval=0.05) for p in probes.values()}
            for mon in peaks.values():
                mon.__enter__()
            try:
                t0 = time.perf_counter()
                export_batch(spatials=rois(n), config=cfg, client=client,
                             target=ExportTarget.combined(os.path.join(tmp, f"run-{n}.npz")), **common)  # fmt: skip
                wall = time.perf_counter() - t0
            finally:
                for mon in peaks.values():
                    mon.__exit__(None, None, None)
    finally:
        cluster.close()
    mb = 2**20
    out = {"n": n, "wall_s": wall, "rois_per_s": n / wall, "chunk_items": sizing.items,
           "chunk_size_requested": sizing.requested, "max_in_flight": sizing.max_in_flight,
           "roi_mb": sizing.roi_bytes / mb, "budget_mb": sizing.budget_bytes / mb,
           "memory_limit_mb": (sizing.memory_limit or 0) / mb,
           "input_shapes": {k: list(v) for k, v in sizing.input_shapes.items()}}  # fmt: skip
    out["worker_peak_mb"] = {name: mon.peak / mb for name, mon in sorted(peaks.items())}
    out["max_worker_peak_mb"] = max(mon.peak for mon in peaks.values()) / mb
    out["sum_worker_peak_mb"] = sum(mon.peak for mon in peaks.values()) / mb
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 and 500 ROIs instead of 200 and 2,000")
    ap.add_argument("--memory-limit", default="4GiB", help="memory_limit of each worker (default 4GiB)")
    args = ap.parse_args()
    small, large = (100, 500) if args.quick else (200, 2000)
    from model_cases.olmoearth import write_checkpoint

    tmp = tempfile.mkdtemp(prefix="rsembed-tsmem-")
    res: dict[str, Any] = {
        "workload": {"models": ["olmoearth (width 32, depth 1, image_size 16, patch 8, random weights)", "rcf"],
                     "temporal": "2022-01-01..2023-01-01 (12 frames)", "roi_px": [96, 96], "provider": "synthetic",
                     "save_inputs": False, "layout": "combined npz", "chunk_size": CHUNK_SIZE,
                     "memory_limit": args.memory_limit},
        "runs": {},
    }  # fmt: skip
    try:
        weights = str(write_checkpoint(Path(tmp) / "olmoearth"))
        for n in (small, large):
            r = one_size(n, weights, args.memory_limit, tmp)
            res["runs"][str(n)] = r
            each = ", ".join(f"{k} {v:.0f} MB" for k, v in r["worker_peak_mb"].items())
            print(f"{n} ROIs: worker peaks {each}; chunks of {r['chunk_items']} ROIs "
                  f"({r['roi_mb']:.1f} MB a ROI), {r['rois_per_s']:.1f} ROI/s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = res["runs"][str(small)], res["runs"][str(large)]
    ratio = hi["max_worker_peak_mb"] / lo["max_worker_peak_mb"]
    res["ratio_peak"] = {f"{large}/{small}": ratio, "target": "<= 1.2"}
    md = ["| ROIs | peak per worker (MB) | ROIs per chunk (of 64) | MB a ROI | wall (s) | ROIs/s |",
          "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    md += [f"| {r['n']} | {', '.join(f'{k}: {v:.0f}' for k, v in r['worker_peak_mb'].items())} | "
           f"{r['chunk_items']} | {r['roi_mb']:.1f} | {r['wall_s']:.0f} | {r['rois_per_s']:.1f} |" for r in (lo, hi)]  # fmt: skip
    md += ["", f"Largest worker peak, {large} / {small} ROIs: **{ratio:.2f}** (target <= 1.2); worker "
           f"memory_limit {args.memory_limit}; olmoearth 12 frames x 12 bands + rcf 4 bands on 96 x 96 px ROIs."]  # fmt: skip
    text = "\n".join(md)
    print()
    print(text)
    command = "benchmarks/bench_timeseries_memory.py" + (" --quick" if args.quick else "")
    write_results("timeseries_memory", args.quick, res,
                  f"# time-series export memory benchmark\n\n`.venv/bin/python {command}`\n\n{text}\n")  # fmt: skip


if __name__ == "__main__":
    main()
