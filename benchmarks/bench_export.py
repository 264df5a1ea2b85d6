"""Export throughput and memory benchmark.

    .venv/bin/python benchmarks/bench_export.py [--quick]

One workload: synthetic provider (0.2 s latency per fetch), 4x128x128 inputs
(PointBuffer buffer_m=640 at 10 m, bands B2,B3,B4,B8), a ViT-S/16-sized timm
model with random weights (``benchmarks/_vits.py``), save_inputs=True.

Measures ROIs/s of
  (a) a plain sequential loop (fetch -> embed batch of 1 -> np.savez_compressed per ROI),
  (b) export_batch per-item npz and combined npz on local_cluster(io_threads=32) (on a CPU-only
      machine its default layout: one worker holding both resources, inference on all cores),
  (c) the ceiling: forward-only throughput of the same model on ALL cores (batches of
      infer_batch_size, inputs in memory, torch's default thread count, in a fresh process
      started for each round, the cluster idle): what the machine can do, whatever the layout,
  (c') forward-only in this process at the inference worker's torch thread count (what one
      pinned inference worker can do; information only),
  (d) when ``.venv-parity`` (rs-embed 0.3.1) exists: rs-embed's ``export_batch`` per-item and
      combined on the same workload (``benchmarks/_rsembed_workload.py``, a subprocess per round),
(b), (c), (c') and (d) in --rounds interleaved rounds (default 3), each reported as the
median round, with ratios ours/ceiling and ours/rs-embed per layout; and the peak RSS
(client + all worker processes) of a combined export of N_big vs N_small ROIs (rcf
features=64, pooled, save_inputs=False, no latency).

Writes benchmarks/results/export_bench.json and export_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
    assert sensor is not None
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
    assert sensor is not None
    base = [prov.fetch(sp, TEMPORAL, sensor).data for sp in rois(min(n, 64))]
    inputs = [base[i % len(base)] for i in range(n)]
    emb.embed_inputs(inputs[:batch], output=OutputSpec.pooled())  # warm-up
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        emb.embed_inputs(inputs[s : s + batch], output=OutputSpec.pooled())
    wall = time.perf_counter() - t0
    return {"n": n, "batch": batch, "torch_threads": torch_threads, "wall_s": wall, "rois_per_s": n / wall}


def _child_env() -> dict[str, str]:
    """This environment without thread caps or Dask's allocator settings: a plain fresh process.

    Starting a ``Nanny`` writes ``distributed.nanny.pre-spawn-environ``
    (``MALLOC_TRIM_THRESHOLD_=65536``) into *this* process's environment;
    a child inheriting it runs the forward pass about a fifth slower, which
    would lower the ceiling the exports are compared with.
    """
    import dask

    spawn_vars = set(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    drop = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RS_EMBED_TORCH_THREADS",
            "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", *spawn_vars}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _result_line(out: str) -> dict[str, Any]:
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"no RESULT line in the child's output:\n{out[-2000:]}")
    return json.loads(line[len("RESULT ") :])


def bench_forward_all_cores(n: int, batch: int) -> dict[str, Any]:
    """The ceiling: forward-only in a fresh process with torch's default thread count (all cores)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--forward-only-child", "--n-forward", str(n),
           "--infer-batch-size", str(batch)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), check=False, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"forward-only child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return _result_line(proc.stdout)


def parity_python() -> str | None:
    """``.venv-parity``'s python (rs-embed 0.3.1), when the parity environment exists."""
    exe = os.path.join(ROOT, ".venv-parity", "bin", "python")
    return exe if os.path.exists(exe) else None


def bench_rsembed(exe: str, n: int, cfg: ExportConfig) -> dict[str, Any]:
    """rs-embed 0.3.1's per-item and combined export of the same workload, one round, in ``exe``."""
    cmd = [exe, os.path.join(ROOT, "benchmarks", "_rsembed_workload.py"), "--n", str(n), "--rounds", "1",
           "--chunk-size", str(cfg.chunk_size), "--infer-batch-size", str(cfg.effective_infer_batch_size),
           "--num-workers", str(cfg.num_workers), "--latency-s", str(LATENCY_S)]  # fmt: skip
    env = _child_env()
    env.pop("PYTHONPATH", None)  # rs-embed's environment: not this checkout's packages
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"rs-embed workload failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = _result_line(proc.stdout)
    return {"per_item": {"n": n, "rois_per_s": res["per_item"][0]},
            "combined": {"n": n, "rois_per_s": res["combined"][0]}, "torch_threads": res["torch_threads"]}  # fmt: skip


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
    ap.add_argument("--n", type=int, default=None, help="ROIs per export and forward-only run (default 600; quick 96)")
    ap.add_argument("--inference-threads", type=int, default=None,
                    help="torch threads of the CPU inference worker (default: all cores)")
    ap.add_argument("--mem-small", type=int, default=None, help="ROIs of the small memory run (default 2000; quick 500)")
    ap.add_argument("--mem-big", type=int, default=None, help="ROIs of the big memory run (default 20000; quick 5000)")
    ap.add_argument("--skip-rsembed", action="store_true", help="do not run rs-embed 0.3.1 (.venv-parity)")
    ap.add_argument("--forward-only-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n-forward", type=int, default=600, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forward_only_child:  # the ceiling's fresh process: torch's default threads
        import torch

        _vits.register()
        child = bench_forward_only(args.n_forward, args.infer_batch_size, torch.get_num_threads())
        print("RESULT " + json.dumps(child), flush=True)
        return
    if args.quick:
        n_seq, n_exp, n_fwd, n_mem_small, n_mem_big = 12, 96, 96, 500, 5000
        args.rounds = min(args.rounds, 1)
    else:
        n_seq, n_exp, n_fwd, n_mem_small, n_mem_big = 60, 600, 600, 2000, 20000
    if args.n:
        n_exp = n_fwd = args.n
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
            rs_exe = None if args.skip_rsembed else parity_python()
            runs: dict[str, list[dict[str, Any]]] = {
                "forward_only": [], "forward_worker_threads": [], "export_per_item": [], "export_combined": [],
                **({"rsembed_per_item": [], "rsembed_combined": []} if rs_exe else {}),
            }  # fmt: skip
            for r in range(args.rounds):
                # the ceiling: all cores, fresh process, cluster idle
                runs["forward_only"].append(bench_forward_all_cores(n_fwd, cfg.effective_infer_batch_size))
                # what one inference worker's threads can do (information)
                runs["forward_worker_threads"].append(
                    bench_forward_only(n_fwd, cfg.effective_infer_batch_size, inf_threads))
                runs["export_per_item"].append(run_export(client, "per_item", n_exp, tmp, cfg, f"pi{r}"))
                runs["export_combined"].append(run_export(client, "combined", n_exp, tmp, cfg, f"c{r}"))
                if rs_exe:
                    ref = bench_rsembed(rs_exe, n_exp, cfg)
                    runs["rsembed_per_item"].append(ref["per_item"])
                    runs["rsembed_combined"].append(ref["combined"])
                    res["rsembed_torch_threads"] = ref["torch_threads"]
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
    has_ref = "rsembed_per_item" in res
    for lay in ("per_item", "combined"):
        r = res[f"export_{lay}"]["rois_per_s"]
        ratios[f"{lay}/forward_only"] = r / fwd
        ratios[f"{lay}/sequential"] = r / seq
        if has_ref:
            ratios[f"{lay}/rs_embed"] = r / res[f"rsembed_{lay}"]["rois_per_s"]
    ratios["rounds"] = args.rounds
    if "memory" in res:
        ratios["peak_rss_big/small"] = res["memory"]["ratio_big_small"]
    res["ratios"] = ratios
    res["targets"] = {"export/forward_only (all cores)": ">= 0.85", "export/sequential": ">= 3",
                      "peak_rss_big/small": "<= 1.2"}  # fmt: skip

    def vs(lay: str) -> str:
        text = f"{ratios[f'{lay}/forward_only']:.2f}x ceiling, {ratios[f'{lay}/sequential']:.1f}x seq"
        return text + (f", {ratios[f'{lay}/rs_embed']:.2f}x rs-embed" if has_ref else "")

    fwd_w = res["forward_worker_threads"]["rois_per_s"]

    fwd_threads = res["forward_only"].get("torch_threads")
    rows = [
        ("(a) sequential loop (fetch, embed b=1, savez_compressed)", res["sequential"]["n"], seq, ""),
        ("(b) export_batch per-item npz", n_exp, res["export_per_item"]["rois_per_s"], vs("per_item")),
        ("(b) export_batch combined npz", n_exp, res["export_combined"]["rois_per_s"], vs("combined")),
        (f"(c) ceiling: forward-only on all cores (batch {cfg.effective_infer_batch_size}, {fwd_threads} thr, "
         "fresh process)", n_fwd, fwd, ""),
        (f"(c') forward-only at the inference worker's threads ({inf_threads} thr)", n_fwd, fwd_w,
         f"{fwd_w / fwd:.2f}x ceiling"),
    ]  # fmt: skip
    if has_ref:
        rows += [(f"(d) rs-embed 0.3.1 export_batch {lay.replace('_', '-')} npz", n_exp,
                  res[f"rsembed_{lay}"]["rois_per_s"], f"{res[f'rsembed_{lay}']['rois_per_s'] / fwd:.2f}x ceiling")
                 for lay in ("per_item", "combined")]  # fmt: skip
    md = ["| measurement | ROIs | ROIs/s | ratios |", "|---|---:|---:|---|"]
    md += [f"| {a} | {b} | {c:.2f} | {d} |" for a, b, c, d in rows]
    md += ["", f"ROIs/s per round ({args.rounds} rounds, medians above): " + "; ".join(
        f"{k} " + ", ".join(f"{x:.2f}" for x in res[k]["rounds_rois_per_s"])
        for k in runs) + "."]  # fmt: skip
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
