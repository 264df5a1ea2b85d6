"""Which local-cluster layout uses a CPU-only machine whole (issue 17, item 1)?

    .venv/bin/python benchmarks/bench_cpu_layouts.py [--n 300] [--rounds 2] [--layouts a,b,...]

Runs ``bench_export.py``'s workload (synthetic provider with 0.2 s latency,
4x128x128 inputs, the ViT-S/16-sized model, ``save_inputs=True``, per-item
and combined NPZ, ``chunk_size=16``, ``num_workers=32``) on one cluster per
layout, started here with the same building blocks as
:func:`rs_embed_dask.cluster.local_cluster` (``RS_EMBED_TORCH_THREADS``,
``RS_EMBED_CPU_AFFINITY`` and the ``worker_setup`` preload), so that
``cluster/local.py`` is not changed to try them.  Each figure is the median
of ``--rounds``; the ceiling is the forward-only throughput on all cores in
a fresh process (``bench_export.bench_forward_all_cores``), measured once
per round with no cluster running, and every export is reported as a ratio
to its median (target >= 0.85).

Layouts (``N`` = this process's cores; IO worker: 32 fetch threads + 2):

``current``
    ``local_cluster()`` today: the inference worker pinned to half the
    cores with that many torch threads, the IO worker pinned to the rest.
``unpinned_1t``
    No pinning; inference worker with 1 torch thread.
``unpinned_Nt``
    No pinning; inference worker with ``N`` torch threads, IO worker beside it.
``Nt_io_nice``
    As ``unpinned_Nt``, the IO worker process at nice +10: fetch, decode,
    compression and writes run on the cycles inference leaves.
``{N}w_1t`` / ``{N}w_1t_io_nice``
    ``N`` inference workers of 1 torch thread each (data parallel across the
    cores instead of intra-op threads: a 1-thread forward pass does more per
    core-second than a 2-thread one on these batches), unpinned; the IO
    worker beside them (at nice +10 in the second).
``one_process``
    One worker process holding both resources (``gpu=1``, ``io=32``):
    inference with ``N`` torch threads and the IO threads in the same
    process (no inter-process transfer of the inputs).
``Nt_io_nice_nodeflate`` / ``one_process_nodeflate``
    As above with the export's deflate level 0 on the workers: the most that
    taking compression off the critical path could gain.

Writes benchmarks/results/cpu_layouts.json and cpu_layouts.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # worker processes (spawn) import benchmarks.* too

from benchmarks import _vits  # noqa: E402
from benchmarks._common import write_results  # noqa: E402
from benchmarks.bench_export import bench_forward_all_cores, median_run, run_export  # noqa: E402
from rs_embed_dask import ExportConfig  # noqa: E402

IO_THREADS = 32
_QUIET = {"DASK_LOGGING__DISTRIBUTED": "warning"}


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def layouts() -> dict[str, dict[str, Any]]:
    """Every layout's settings (see the module docstring)."""
    n = len(_cores())
    return {
        "current": {"current": True},
        "unpinned_1t": {"torch_threads": 1},
        f"unpinned_{n}t": {"torch_threads": n},
        f"{n}t_io_nice": {"torch_threads": n, "io_nice": 10},
        f"{n}w_1t": {"torch_threads": 1, "inference_workers": n},
        f"{n}w_1t_io_nice": {"torch_threads": 1, "inference_workers": n, "io_nice": 10},
        "one_process": {"torch_threads": n, "one_process": True},
        f"{n}t_io_nice_nodeflate": {"torch_threads": n, "io_nice": 10, "deflate": 0},
        "one_process_nodeflate": {"torch_threads": n, "one_process": True, "deflate": 0},
    }


def _worker(opts: dict[str, Any]) -> dict[str, Any]:
    from distributed import Nanny

    return {"cls": Nanny, "options": {"silence_logs": 30, **opts}}


def build_cluster(spec: dict[str, Any]) -> Any:
    """A ``SpecCluster`` of one layout (``{"current": True}``: ``local_cluster()`` itself)."""
    from distributed import Scheduler, SpecCluster

    from rs_embed_dask.cluster import local_cluster

    if spec.get("current"):
        return local_cluster(io_threads=IO_THREADS, dashboard_address=None, verbose=False)
    env = dict(_QUIET)
    env["RS_EMBED_TORCH_THREADS"] = str(spec["torch_threads"])
    if "deflate" in spec:
        env["RS_EMBED_BENCH_DEFLATE"] = str(spec["deflate"])
    preload = ["benchmarks._layout_preload"]
    workers: dict[str, Any] = {}
    if spec.get("one_process"):
        workers["all-0"] = _worker({"nthreads": IO_THREADS + 3, "resources": {"io": IO_THREADS, "gpu": 1},
                                    "env": env, "preload": preload})  # fmt: skip
    else:
        io_env = {**env, "RS_EMBED_BENCH_NICE": str(spec.get("io_nice", 0))}
        io_env.pop("RS_EMBED_TORCH_THREADS")
        workers["io-0"] = _worker({"nthreads": IO_THREADS + 2, "resources": {"io": IO_THREADS},
                                   "env": io_env, "preload": preload})  # fmt: skip
        for i in range(int(spec.get("inference_workers", 1))):
            workers[f"gpu-{i}"] = _worker({"nthreads": 1, "resources": {"gpu": 1}, "env": env, "preload": preload})
    scheduler = {"cls": Scheduler, "options": {"dashboard": False, "dashboard_address": ":0", "host": "127.0.0.1"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40)


def run_layout(name: str, spec: dict[str, Any], n: int, rounds: int, cfg: ExportConfig, tmp: str) -> dict[str, Any]:
    from distributed import Client

    cluster = build_cluster(spec)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(len(cluster.workers), timeout=180)
            # enough chunks that every inference worker loads the model before the timed rounds
            warm = 2 * cfg.effective_chunk_size * len(cluster.workers)
            run_export(client, "per_item", warm, tmp, cfg, f"{name}-wpi", offset=50000)
            run_export(client, "combined", warm, tmp, cfg, f"{name}-wc", offset=50000)
            threads = client.run(lambda: __import__("torch").get_num_threads())
            runs: dict[str, list[dict[str, Any]]] = {"per_item": [], "combined": []}
            for r in range(rounds):
                for lay in runs:
                    runs[lay].append(run_export(client, lay, n, tmp, cfg, f"{name}-{lay}{r}"))
            out = {lay: median_run(v) for lay, v in runs.items()}
            out["torch_threads"] = threads
            return out
    finally:
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="ROIs per export (default 300)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layouts", default="", help="comma-separated subset of the layouts (default all)")
    ap.add_argument("--chunk-size", type=int, default=16)
    args = ap.parse_args()
    _vits.register()
    every = layouts()
    chosen = [s.strip() for s in args.layouts.split(",") if s.strip()] or list(every)
    unknown = sorted(set(chosen) - set(every))
    if unknown:
        raise SystemExit(f"unknown layouts {unknown}; choose from {list(every)}")
    cfg = ExportConfig(format="npz", save_inputs=True, num_workers=32, chunk_size=args.chunk_size,
                       infer_batch_size=args.chunk_size, show_progress=False)  # fmt: skip
    res: dict[str, Any] = {"n": args.n, "rounds": args.rounds, "cores": len(_cores()), "ceiling_rounds": [],
                           "layouts": {}}  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="rsembed-layouts-")
    try:
        for name in chosen:
            # the ceiling before each layout, no cluster running: the machine's state drifts
            ceil = bench_forward_all_cores(max(args.n, 160), cfg.effective_infer_batch_size)
            res["ceiling_rounds"].append(ceil["rois_per_s"])
            t0 = time.perf_counter()
            res["layouts"][name] = {"spec": every[name], **run_layout(name, every[name], args.n, args.rounds, cfg, tmp)}
            r = res["layouts"][name]
            print(f"{name}: per-item {r['per_item']['rois_per_s']:.2f}, combined {r['combined']['rois_per_s']:.2f} "
                  f"ROI/s (ceiling now {ceil['rois_per_s']:.2f}; {time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ceiling = statistics.median(res["ceiling_rounds"])
    res["ceiling_rois_per_s"] = ceiling
    md = [f"Ceiling (forward-only, all {res['cores']} cores, fresh process; median of "
          f"{len(res['ceiling_rounds'])}): {ceiling:.2f} ROI/s "
          f"({', '.join(f'{c:.2f}' for c in res['ceiling_rounds'])}).", "",
          "| layout | per-item ROI/s | / ceiling | combined ROI/s | / ceiling | infer busy (pi, c) |",
          "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for name, r in res["layouts"].items():
        pi, c = r["per_item"]["rois_per_s"], r["combined"]["rois_per_s"]
        busy = [r[k]["task_stream"].get("infer_worker_busy_frac", float("nan")) for k in ("per_item", "combined")]
        r["ratio_per_item"], r["ratio_combined"] = pi / ceiling, c / ceiling
        md.append(f"| {name} | {pi:.2f} | {pi / ceiling:.2f} | {c:.2f} | {c / ceiling:.2f} | "
                  f"{busy[0]:.2f}, {busy[1]:.2f} |")  # fmt: skip
    md += ["", f"{args.n} ROIs per export, median of {args.rounds} rounds per layout, target >= 0.85 of the ceiling."]
    text = "\n".join(md)
    print()
    print(text)
    write_results("cpu_layouts", False, res, f"# CPU layouts\n\n`.venv/bin/python benchmarks/bench_cpu_layouts.py`\n\n{text}\n")


if __name__ == "__main__":
    main()
