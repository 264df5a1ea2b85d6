"""Peak inference-worker memory against ``chunk_size`` (issue 17, item 3).

    .venv/bin/python benchmarks/bench_memory.py [--quick] [--memory-limit 3GiB]

Workload: ``rcf`` (512 features, pooled) on 256x256 px ROIs (PointBuffer
buffer_m=1280 at 10 m, 4 bands; about 335 MB of activations per ROI in one
forward pass), synthetic provider without latency, ``save_inputs=False``,
combined NPZ, on ``local_cluster(memory_limit=...)`` (default 3 GiB per
worker, the limit under which a chunk of 16 used to end in ``KilledWorker``).

For each ``chunk_size`` (default 8 and 64) a fresh cluster is started, the
model is loaded by a warm-up export of one chunk, and the inference worker
process's resident size is sampled every 20 ms during the measured export.
Reports each peak, the resident size after the warm-up, the batch size the
memory bound chose, and the ratio peak(64) / peak(8) (target <= 1.3).

Writes benchmarks/results/memory_bench.json and memory_bench.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._common import write_results  # noqa: E402
from rs_embed_dask import ExportConfig, ExportTarget, OutputSpec, PointBuffer, TemporalSpec, export_batch  # noqa: E402
from rs_embed_dask.cluster import local_cluster  # noqa: E402

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
BUFFER_M = 1280  # 256 px at 10 m


def rois(n: int, offset: int = 0) -> list[PointBuffer]:
    return [PointBuffer(10.0 + 0.03 * ((i + offset) % 100), 45.0 + 0.03 * ((i + offset) // 100), BUFFER_M)
            for i in range(n)]  # fmt: skip


class ProcessPeak:
    """Peak RSS of one process (by pid), sampled every ``interval`` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.samples += 1
            except Exception:  # the worker died (e.g. killed for memory)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessPeak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _worker_probe(dask_worker: Any) -> dict[str, Any]:
    """Runs on each worker (``client.run``): pid, memory limit, resident size, resources."""
    import psutil

    w = dask_worker
    return {
        "pid": os.getpid(),
        "memory_limit": int(w.memory_manager.memory_limit or 0),
        "rss": int(psutil.Process().memory_info().rss),
        "resources": dict(w.state.total_resources),
    }


def _memory_batch_on_worker(shape: tuple[int, ...], requested: int) -> int:
    from rs_embed_dask.models.memory import memory_batch_size
    from rs_embed_dask.resolve import get_embedder

    return memory_batch_size(get_embedder("rcf", {}, "cpu"), [shape], requested=requested, device="cpu")


def one_setting(chunk_size: int, n: int, memory_limit: str, tmp: str) -> dict[str, Any]:
    from distributed import Client

    cfg = ExportConfig(format="npz", save_inputs=False, chunk_size=chunk_size, show_progress=False)
    cluster = local_cluster(io_threads=8, memory_limit=memory_limit, dashboard_address=None, verbose=False)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=180)
            common = {"temporal": TEMPORAL, "models": ["rcf"], "backend": "synthetic", "device": "cpu",
                      "output": OutputSpec.pooled(), "client": client, "provider_options": {"latency_s": 0.0}}  # fmt: skip
            # warm-up: one chunk loads the model on the inference worker
            export_batch(spatials=rois(chunk_size, offset=5000), config=cfg,
                         target=ExportTarget.combined(os.path.join(tmp, f"warm-{chunk_size}.npz")), **common)  # fmt: skip
            probes = client.run(_worker_probe)
            inf_addr, inf = next((a, p) for a, p in probes.items() if "gpu" in p["resources"])
            # as a task (get_worker() works there, as in the inference task)
            batch = client.submit(_memory_batch_on_worker, (4, 256, 256), chunk_size, workers=[inf_addr],
                                  resources={"gpu": 1}, pure=False).result()  # fmt: skip
            with ProcessPeak(inf["pid"]) as mon:
                t0 = time.perf_counter()
                export_batch(spatials=rois(n), config=cfg,
                             target=ExportTarget.combined(os.path.join(tmp, f"run-{chunk_size}.npz")), **common)  # fmt: skip
                wall = time.perf_counter() - t0
            return {
                "chunk_size": chunk_size, "n": n, "wall_s": wall, "rois_per_s": n / wall,
                "memory_limit_mb": inf["memory_limit"] / 2**20, "rss_after_warmup_mb": inf["rss"] / 2**20,
                "peak_rss_mb": mon.peak / 2**20, "samples": mon.samples, "memory_batch_after_warmup": batch,
            }  # fmt: skip
    finally:
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64 ROIs instead of 128")
    ap.add_argument("--memory-limit", default="3GiB", help="memory_limit of each worker (default 3GiB)")
    ap.add_argument("--chunk-sizes", default="8,64")
    args = ap.parse_args()
    n = 64 if args.quick else 128
    sizes = [int(s) for s in args.chunk_sizes.split(",")]
    env = os.environ.get("RS_EMBED_INFER_MEMORY")
    res: dict[str, Any] = {
        "workload": {"model": "rcf features=512 pooled", "input": [4, 256, 256], "provider": "synthetic",
                     "latency_s": 0.0, "save_inputs": False, "layout": "combined npz", "n": n,
                     "memory_limit": args.memory_limit, "RS_EMBED_INFER_MEMORY": env},
        "runs": {},
    }  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="rsembed-mem-")
    try:
        for cs in sizes:
            r = one_setting(cs, n, args.memory_limit, tmp)
            res["runs"][str(cs)] = r
            print(f"chunk_size={cs}: peak {r['peak_rss_mb']:.0f} MB (after warm-up {r['rss_after_warmup_mb']:.0f} MB, "
                  f"batch {r['memory_batch_after_warmup']}), {r['rois_per_s']:.2f} ROI/s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = str(min(sizes)), str(max(sizes))
    ratio = res["runs"][hi]["peak_rss_mb"] / res["runs"][lo]["peak_rss_mb"]
    res["ratio_peak"] = {f"{hi}/{lo}": ratio, "target": "<= 1.3"}
    md = ["| chunk_size | ROIs | inference worker peak RSS (MB) | RSS after warm-up (MB) | memory batch | ROIs/s |",
          "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    md += [f"| {r['chunk_size']} | {r['n']} | {r['peak_rss_mb']:.0f} | {r['rss_after_warmup_mb']:.0f} | "
           f"{r['memory_batch_after_warmup']} | {r['rois_per_s']:.2f} |" for r in res["runs"].values()]  # fmt: skip
    md += ["", f"Peak ratio chunk_size {hi} / {lo}: **{ratio:.2f}** (target <= 1.3); worker memory_limit "
           f"{args.memory_limit}; rcf (512 features) on 4x256x256 inputs, about 335 MB of activations per ROI."]  # fmt: skip
    text = "\n".join(md)
    print()
    print(text)
    command = "benchmarks/bench_memory.py" + (" --quick" if args.quick else "")
    write_results("memory_bench", args.quick, res, f"# inference memory benchmark\n\n`.venv/bin/python {command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
