"""Export throughput and memory benchmark.

    .venv/bin/python benchmarks/bench_export.py [--quick]

One workload: synthetic provider (0.2 s latency per fetch), 4x128x128 inputs
(PointBuffer buffer_m=640 at 10 m, bands B2,B3,B4,B8), a ViT-S/16-sized timm
model with random weights (``benchmarks/_vits.py``), save_inputs=True.

Measures ROIs/s of
  (a) a plain sequential loop (fetch -> embed batch of 1 -> np.savez_compressed per ROI),
  (b) export_batch per-item npz and combined npz on local_cluster(io_threads=32),
  (c) the forward-only ceiling (same model, batches of infer_batch_size, inputs in memory,
      in this process with the cluster idle, the inference worker's torch thread count),
(b) and (c) in --rounds interleaved rounds (default 3), each reported as the median round,
and the peak RSS (client + all worker processes) of a combined export of N_big vs
N_small ROIs (rcf features=64, pooled, save_inputs=False, no latency).

Writes benchmarks/results/export_bench.json and export_bench.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # workers inherit sys.path (spawn), so benchmarks._vits unpickles there

from benchmarks import _vits  # noqa: E402
from benchmarks._common import PeakRSS, write_results  # noqa: E402
from rs_embed_dask import (  # noqa: E402
    ExportConfig,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    export_batch,
)
from rs_embed_dask.cluster import local_cluster  # noqa: E402

LATENCY_S = 0.2
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")


def rois(n: int, offset: int = 0) -> list[PointBuffer]:
    # distinct ROIs on a grid, 640 m buffer -> 128x128 px at 10 m
    out = []
    for i in range(offset, offset + n):
        out.append(PointBuffer(10.0 + 0.02 * (i % 200), 45.0 + 0.02 * (i // 200), 640))
    return out


def task_stream_summary(ts: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Busy time per task kind (fetch/infer/write) from client.get_task_stream()."""
    out: dict[str, Any] = {}
    for rec in ts:
        key = str(rec.get("key"))
        kind = "other"
        for k in ("fetch", "infer", "write"):
            if f"rsembed-{k}-" in key:
                kind = k
        compute = sum(s["stop"] - s["start"] for s in rec.get("startstops", ()) if s.get("action") == "compute")
        transfer = sum(s["stop"] - s["start"] for s in rec.get("startstops", ()) if s.get("action") == "transfer")
        d = out.setdefault(kind, {"n": 0, "compute_s": 0.0, "transfer_s": 0.0})
        d["n"] += 1
        d["compute_s"] += compute
        d["transfer_s"] += transfer
    for d in out.values():
        d["mean_compute_s"] = d["compute_s"] / max(1, d["n"])
    if "infer" in out:
        out["infer_worker_busy_frac"] = (out["infer"]["compute_s"] + out["infer"]["transfer_s"]) / wall
    return out


def bench_sequential(n: int, tmp: str, torch_threads: int) -> dict[str, Any]:
    import torch

    from rs_embed_dask.providers.synthetic import SyntheticProvider

    torch.set_num_threads(torch_threads)
    emb = _vits.ViTSEmbedder()
    emb.load("cpu")
    sensor = emb.default_sensor()
    prov = SyntheticProvider(latency_s=LATENCY_S)
    out_dir = os.path.join(tmp, "seq")
    os.makedirs(out_dir, exist_ok=True)
    # warm-up (model build excluded)
    emb.embed_inputs([np.zeros((4, 128, 128), np.float32)], output=OutputSpec.pooled())
    t_fetch = t_embed = t_save = 0.0
    t0 = time.perf_counter()
    for i, sp in enumerate(rois(n)):
        a = time.perf_counter()
        fr = prov.fetch(sp, TEMPORAL, sensor)
        b = time.perf_counter()
        e = emb.embed_inputs([fr.data], output=OutputSpec.pooled())[0]
        c = time.perf_counter()
        np.savez_compressed(os.path.join(out_dir, f"p{i:05d}.npz"), input_bench_vits=fr.data, embedding_bench_vits=e.data)
        d = time.perf_counter()
        t_fetch += b - a
        t_embed += c - b
        t_save += d - c
    wall = time.perf_counter() - t0
    return {
        "n": n, "wall_s": wall, "rois_per_s": n / wall,
        "per_roi_s": {"fetch": t_fetch / n, "embed": t_embed / n, "savez_compressed": t_save / n},
    }  # fmt: skip


def bench_forward_only(n: int, batch: int, torch_threads: int) -> dict[str, Any]:
    import torch

    from rs_embed_dask.providers.synthetic import SyntheticProvider

    torch.set_num_threads(torch_threads)
    emb = _vits.ViTSEmbedder()
    emb.load("cpu")
    prov = SyntheticProvider(latency_s=0.0)
    sensor = emb.default_sensor()
    base = [prov.fetch(sp, TEMPORAL, sensor).data for sp in rois(min(n, 64))]
    inputs = [base[i % len(base)] for i in range(n)]
    emb.embed_inputs(inputs[:batch], output=OutputSpec.pooled())  # warm-up
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        emb.embed_inputs(inputs[s : s + batch], output=OutputSpec.pooled())
    wall = time.perf_counter() - t0
    return {"n": n, "batch": batch, "torch_threads": torch_threads, "wall_s": wall, "rois_per_s": n / wall}


def run_export(client: Any, layout: str, n: int, tmp: str, cfg: ExportConfig, tag: str, offset: int = 0) -> dict[str, Any]:
    if layout == "per_item":
        target = ExportTarget.per_item(os.path.join(tmp, f"pi-{tag}"))
    else:
        target = ExportTarget.combined(os.path.join(tmp, f"comb-{tag}.npz"))
    sps = rois(n, offset)
    from distributed import get_task_stream

    with get_task_stream(client=client) as ts:
        t0 = time.perf_counter()
        export_batch(
            spatials=sps, temporal=TEMPORAL, models=[_vits.NAME], target=target, config=cfg,
            backend="synthetic", device="cpu", output=OutputSpec.pooled(), client=client,
            provider_options={"latency_s": LATENCY_S},
        )  # fmt: skip
        wall = time.perf_counter() - t0
    return {"n": n, "wall_s": wall, "rois_per_s": n / wall, "task_stream": task_stream_summary(ts.data, wall)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ROIs/s (the lower middle one for an even count), with every round's ROIs/s."""
    ordered = sorted(runs, key=lambda r: r["rois_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds_rois_per_s": [r["rois_per_s"] for r in runs]}


def _rcf_request() -> Any:
    try:
        from rs_embed_dask.core.types import ExportModelRequest

        return ExportModelRequest("rcf", model_config={"features": 64})
    except Exception:  # pragma: no cover
        raise


def bench_memory_runs(n_small: int, n_big: int, tmp: str, chunk_size: int) -> dict[str, Any]:
    from distributed import Client

    cfg = ExportConfig(format="npz", save_inputs=False, num_workers=32, chunk_size=chunk_size, show_progress=False)
    out: dict[str, Any] = {"chunk_size": chunk_size, "model": "rcf(features=64) pooled", "save_inputs": False}
    cluster = local_cluster(io_threads=32, dashboard_address=None)
    try:
        with Client(cluster) as client:
            req = _rcf_request()

            def one(n: int, tag: str) -> dict[str, Any]:
                path = os.path.join(tmp, f"mem-{tag}.npz")
                with PeakRSS(0.2) as mon:
                    t0 = time.perf_counter()
                    export_batch(
                        spatials=rois(n), temporal=TEMPORAL, models=[req], target=ExportTarget.combined(path),
                        config=cfg, backend="synthetic", device="cpu", output=OutputSpec.pooled(), client=client,
                        provider_options={"latency_s": 0.0},
                    )  # fmt: skip
                    wall = time.perf_counter() - t0
                for p in (path, path + ".work.zarr"):
                    if os.path.isdir(p):
                        shutil.rmtree(p, ignore_errors=True)
                return {"n": n, "wall_s": wall, "rois_per_s": n / wall, "start_rss_mb": sum(mon.start) / 2**20,
                        "peak_rss_mb": mon.peaks()["total_mb"], "samples": len(mon.timeline)}  # fmt: skip

            one(64, "warm")
            out["small"] = one(n_small, "small")
            print(f"  memory {n_small}: peak {out['small']['peak_rss_mb']:.0f} MB", flush=True)
            out["big"] = one(n_big, "big")
            print(f"  memory {n_big}: peak {out['big']['peak_rss_mb']:.0f} MB", flush=True)
            out["ratio_big_small"] = out["big"]["peak_rss_mb"] / out["small"]["peak_rss_mb"]
    finally:
        cluster.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--infer-batch-size", type=int, default=16)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of forward-only / per-item / combined (medians)")
    ap.add_argument("--inference-threads", type=int, default=None,
                    help="torch threads of the CPU inference worker (default: all cores)")
    ap.add_argument("--mem-small", type=int, default=None, help="ROIs of the small memory run (default 2000; quick 500)")
    ap.add_argument("--mem-big", type=int, default=None, help="ROIs of the big memory run (default 20000; quick 5000)")
    args = ap.parse_args()
    if args.quick:
        n_seq, n_exp, n_fwd, n_mem_small, n_mem_big = 12, 96, 96, 500, 5000
        args.rounds = min(args.rounds, 1)
    else:
        n_seq, n_exp, n_fwd, n_mem_small, n_mem_big = 60, 600, 600, 2000, 20000
    n_mem_small = args.mem_small or n_mem_small
    n_mem_big = args.mem_big or n_mem_big
    _vits.register()
    import torch
    from distributed import Client

    res: dict[str, Any] = {
        "quick": args.quick,
        "workload": {"provider": "synthetic", "latency_s": LATENCY_S, "input": [4, 128, 128],
                     "model": "timm vit_small_patch16_224 img_size=128 in_chans=4 random weights, pooled",
                     "save_inputs": True, "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="rsembed-bench-")
    cfg = ExportConfig(format="npz", save_inputs=True, num_workers=32, chunk_size=args.chunk_size,
                       infer_batch_size=args.infer_batch_size, show_progress=False)  # fmt: skip
    res["export_config"] = {"num_workers": 32, "chunk_size": args.chunk_size, "infer_batch_size": args.infer_batch_size}
    try:
        cluster = local_cluster(io_threads=32, inference_threads=args.inference_threads)
        with Client(cluster) as client:
            res["dashboard"] = client.dashboard_link
            # warm-up: model load + plugin registration on the workers
            run_export(client, "per_item", 16, tmp, cfg, "warm-pi", offset=50000)
            run_export(client, "combined", 16, tmp, cfg, "warm-c", offset=50000)
            print("warm-up done", flush=True)
            # after the model load, which applies RS_EMBED_TORCH_THREADS on the inference workers
            worker_threads = client.run(lambda: __import__("torch").get_num_threads())
            res["worker_torch_threads"] = worker_threads
            gpu_workers = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if "gpu" in (w.get("resources") or {})]
            inf_threads = int(worker_threads[gpu_workers[0]]) if gpu_workers else torch.get_num_threads()
            res["torch_threads_inference_worker"] = inf_threads
            print(f"torch threads per worker: {worker_threads}", flush=True)
            # rounds of (forward-only, per-item, combined), each figure the median over the rounds:
            # the machine is shared, and interleaving keeps a slow spell from landing on one side only
            runs: dict[str, list[dict[str, Any]]] = {"forward_only": [], "export_per_item": [], "export_combined": []}
            for r in range(args.rounds):
                # the ceiling in this process, single-threaded like the inference worker, cluster idle
                runs["forward_only"].append(bench_forward_only(n_fwd, cfg.effective_infer_batch_size, inf_threads))
                runs["export_per_item"].append(run_export(client, "per_item", n_exp, tmp, cfg, f"pi{r}"))
                runs["export_combined"].append(run_export(client, "combined", n_exp, tmp, cfg, f"c{r}"))
                print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{k} {v[-1]['rois_per_s']:.2f}" for k, v in runs.items()) + " ROI/s", flush=True)  # fmt: skip
            for k, v in runs.items():
                res[k] = median_run(v)
        cluster.close()
        res["sequential"] = bench_sequential(n_seq, tmp, inf_threads)
        print(f"  sequential: {res['sequential']['rois_per_s']:.2f} ROI/s", flush=True)
        if not args.skip_memory:
            res["memory"] = bench_memory_runs(n_mem_small, n_mem_big, tmp, chunk_size=64)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    fwd = res["forward_only"]["rois_per_s"]
    seq = res["sequential"]["rois_per_s"]
    ratios = {}
    for lay in ("per_item", "combined"):
        r = res[f"export_{lay}"]["rois_per_s"]
        ratios[f"{lay}/forward_only"] = r / fwd
        ratios[f"{lay}/sequential"] = r / seq
    if "memory" in res:
        ratios["peak_rss_big/small"] = res["memory"]["ratio_big_small"]
    res["ratios"] = ratios
    res["targets"] = {"export/forward_only": ">= 0.85", "export/sequential": ">= 3", "peak_rss_big/small": "<= 1.2"}

    rows = [
        ("(a) sequential loop (fetch, embed b=1, savez_compressed)", res["sequential"]["n"], seq, ""),
        ("(b) export_batch per-item npz", n_exp, res["export_per_item"]["rois_per_s"],
         f"{ratios['per_item/forward_only']:.2f}x fwd, {ratios['per_item/sequential']:.1f}x seq"),
        ("(b) export_batch combined npz", n_exp, res["export_combined"]["rois_per_s"],
         f"{ratios['combined/forward_only']:.2f}x fwd, {ratios['combined/sequential']:.1f}x seq"),
        (f"(c) forward-only ceiling (batch {cfg.effective_infer_batch_size}, {inf_threads} thr)", n_fwd, fwd, ""),
    ]  # fmt: skip
    md = ["| measurement | ROIs | ROIs/s | ratios |", "|---|---:|---:|---|"]
    md += [f"| {a} | {b} | {c:.2f} | {d} |" for a, b, c, d in rows]
    md += ["", "ROIs/s per round: " + "; ".join(
        f"{k} " + ", ".join(f"{x:.2f}" for x in res[k]["rounds_rois_per_s"])
        for k in ("forward_only", "export_per_item", "export_combined")) + " (medians above)."]  # fmt: skip
    if "memory" in res:
        m = res["memory"]
        md += ["", "| peak RSS, combined export (rcf f=64, pooled, no inputs, client+workers) | ROIs | peak MB | ROIs/s |",
               "|---|---:|---:|---:|",
               f"| small | {m['small']['n']} | {m['small']['peak_rss_mb']:.0f} | {m['small']['rois_per_s']:.0f} |",
               f"| big | {m['big']['n']} | {m['big']['peak_rss_mb']:.0f} | {m['big']['rois_per_s']:.0f} |",
               f"| ratio big/small | | {m['ratio_big_small']:.3f} (target <= 1.2) | |"]  # fmt: skip
    md += ["", f"Inference worker busy fraction (task stream): per-item "
           f"{res['export_per_item']['task_stream'].get('infer_worker_busy_frac', float('nan')):.2f}, combined "
           f"{res['export_combined']['task_stream'].get('infer_worker_busy_frac', float('nan')):.2f}; "
           f"torch threads per worker {res['worker_torch_threads']}."]  # fmt: skip
    text = "\n".join(md)
    print()
    print(text)
    command = "benchmarks/bench_export.py" + (" --quick" if args.quick else "")
    write_results("export_bench", args.quick, res, f"# export benchmark\n\n`.venv/bin/python {command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
