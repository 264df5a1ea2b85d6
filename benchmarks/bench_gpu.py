"""GPU throughput: forward-only vs a whole ``export_batch``, per model.

    python benchmarks/bench_gpu.py [--models remoteclip satmae] [--n 2048] [--batch 64] [--compile]

For each model (default: ``remoteclip`` ViT-B/32 and ``satmae`` ViT-L/16, both
224 x 224 RGB) it measures images per second of

(a) **forward-only**: ``preprocess`` + forward on raw inputs that are already
    on the GPU, in batches of ``--batch``, under the model's autocast setting
    (the ceiling of the inference path);
(b) **export**: ``export_batch`` of ``--n`` ROIs from the synthetic provider
    (no latency) to a zarr store, on ``local_cluster`` whose inference worker
    holds the GPU (``infer_batch_size = chunk_size = --batch``);

and reports (b) / (a).  Results go to ``benchmarks/results/gpu_bench.json``
and ``gpu_bench.md``.

The weights are **random** and written by this script in each model's own
checkpoint format into a temporary folder (``model_config={"weights": dir}``),
so the run needs no network; throughput does not depend on the weight values.
On a machine without CUDA the script prints a message and exits with status 0.
``--smoke`` runs the whole script on tiny architectures (on the CPU when there
is no GPU) to check that it works; it writes no results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RESULTS = os.path.join(ROOT, "benchmarks", "results")
MODELS = ("remoteclip", "satmae")
TEMPORAL = ("2022-06-01", "2022-09-01")
#: architecture overrides of ``--smoke`` (the families' documented test-only keys)
TINY: dict[str, dict[str, Any]] = {
    "remoteclip": {"image_size": 64, "width": 64, "layers": 1, "embed_dim": 32},
    "satmae": {"image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2},
    "scalemae": {"image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2},
}


# -- random weights in each family's checkpoint format ----------------------------------------
def _write_remoteclip(directory: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A full-size open_clip CLIP state dict under RemoteCLIP's file name (``torch.save``)."""
    import torch

    from rs_embed_dask.models.remoteclip import RemoteCLIPEmbedder

    emb = RemoteCLIPEmbedder(cfg)
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.CLIP(**emb._clip_config())
    torch.save(clip.state_dict(), os.path.join(directory, emb.filename))
    return {**cfg, "weights": directory}


def _write_satmae(directory: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A ViT-L/16 encoder state dict (the keys the satmae loader keeps) as safetensors."""
    import torch
    from safetensors.torch import save_file

    from rs_embed_dask.models.satmae import SatMAEEmbedder
    from rs_embed_dask.models.vit import timm_vit

    emb = SatMAEEmbedder(cfg)
    torch.manual_seed(0)
    module = timm_vit(
        image_size=emb.image_size,
        patch_size=16,
        embed_dim=emb.embed_dim,
        depth=emb.depth,
        num_heads=emb.num_heads,
    )
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, os.path.join(directory, "model.safetensors"))
    return {**cfg, "weights": directory}


WRITERS = {"remoteclip": _write_remoteclip, "satmae": _write_satmae, "scalemae": _write_satmae}


# -- measurements -------------------------------------------------------------------------------
def bench_forward(name: str, cfg: dict[str, Any], n: int, batch: int, device: str = "cuda") -> dict[str, Any]:
    """Images/s of preprocess + forward on inputs already on the device."""
    import torch

    from rs_embed_dask.core.registry import get_model_class
    from rs_embed_dask.core.specs import OutputSpec

    emb = get_model_class(name)(cfg)
    emb.load(device)
    cuda = device.startswith("cuda")
    size = emb.resolve_input_size()
    sensor = emb.default_sensor()
    c = len(sensor.bands) if sensor is not None else 3
    gen = torch.Generator(device=device).manual_seed(0)
    raw = torch.rand((batch, c, size, size), generator=gen, device=device) * 4000.0
    output = OutputSpec.pooled()
    emb._maybe_compile()  # the opt-in torch.compile wrapper, as embed_inputs applies it

    def step() -> None:
        # the same work embed_inputs does per batch once the input is on the device
        y = emb._forward(emb.preprocess(raw), output)
        y.float()

    with torch.inference_mode(), emb._autocast():
        for _ in range(3):  # warm-up: cuDNN/cuBLAS autotuning, torch.compile if enabled
            step()
        if cuda:
            torch.cuda.synchronize()
        iters = max(1, n // batch)
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    out = {
        "images": iters * batch,
        "batch": batch,
        "wall_s": wall,
        "images_per_s": iters * batch / wall,
        "input": [c, size, size],
        "autocast": emb.autocast_settings(),
        "compile": emb.compile_backend(),
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
    }
    return out


def _rois(n: int, size: int, scale_m: int, offset: int = 0) -> list[Any]:
    from rs_embed_dask import PointBuffer

    half = size * scale_m / 2.0  # a square of size x size pixels on the common grid
    return [
        PointBuffer(5.0 + 0.05 * ((i + offset) % 400), 40.0 + 0.05 * ((i + offset) // 400), half)
        for i in range(n)
    ]


def bench_export(client: Any, name: str, cfg: dict[str, Any], n: int, batch: int, tmp: str) -> dict[str, Any]:
    """Images/s of export_batch (synthetic provider, zarr, pooled) on the running cluster."""
    from rs_embed_dask import ExportConfig, ExportTarget, OutputSpec, TemporalSpec, export_batch
    from rs_embed_dask.core.registry import get_model_class
    from rs_embed_dask.core.types import ExportModelRequest

    emb = get_model_class(name)(cfg)
    size = int(emb.resolve_input_size() or 224)
    sensor = emb.default_sensor()
    scale = sensor.scale_m if sensor is not None else 10
    request = ExportModelRequest(name, model_config=cfg)
    config = ExportConfig(
        format="zarr", save_inputs=False, chunk_size=batch, infer_batch_size=batch, show_progress=False
    )

    def run(count: int, tag: str, offset: int) -> float:
        target = ExportTarget.combined(os.path.join(tmp, f"{name}-{tag}.zarr"))
        t0 = time.perf_counter()
        export_batch(
            spatials=_rois(count, size, scale, offset), temporal=TemporalSpec.range(*TEMPORAL), models=[request],
            target=target, config=config, backend="synthetic", device="auto", output=OutputSpec.pooled(),
            client=client, provider_options={"latency_s": 0.0},
        )  # fmt: skip
        return time.perf_counter() - t0

    run(2 * batch, "warmup", 100_000)  # model load on the inference worker, CUDA init
    wall = run(n, "timed", 0)
    return {"images": n, "batch": batch, "wall_s": wall, "images_per_s": n / wall, "roi_px": size}


def _markdown(res: dict[str, Any]) -> str:
    lines = [
        "# GPU throughput: forward-only vs export_batch",
        "",
        f"Device: {res['device']}; torch {res['torch']}; batch {res['batch']}; "
        f"{res['n']} ROIs per export; synthetic provider, no latency; random weights.",
        "",
        "| model | input | autocast | compile | forward-only img/s | export img/s | export / forward |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name, r in res["models"].items():
        f, e = r["forward_only"], r["export"]
        lines.append(
            f"| {name} | {'x'.join(map(str, f['input']))} | {f['autocast']} | {f['compile']} | "
            f"{f['images_per_s']:.1f} | {e['images_per_s']:.1f} | {r['ratio']:.2f} |"
        )
    lines += ["", "Command: `python benchmarks/bench_gpu.py " + " ".join(res["argv"]) + "`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(WRITERS))
    ap.add_argument("--n", type=int, default=2048, help="ROIs per timed export and images per forward run")
    ap.add_argument("--batch", type=int, default=64, help="forward batch = infer_batch_size = chunk_size")
    ap.add_argument(
        "--compile", action="store_true", help="model_config compile=True (torch.compile, inductor)"
    )
    ap.add_argument("--io-workers", type=int, default=4)
    ap.add_argument("--io-threads", type=int, default=8)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny architectures, CPU allowed, no results written"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.batch = min(args.n, 16), min(args.batch, 8)

    try:
        import torch
    except ImportError:
        print("bench_gpu: torch is not installed; nothing to measure.")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        print(
            "bench_gpu: no CUDA device is available on this machine; the GPU benchmark needs one. Nothing was run."
        )
        return 0

    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke run)",
        "torch": torch.__version__,
        "batch": args.batch,
        "n": args.n,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "models": {},
    }
    tmp = tempfile.mkdtemp(prefix="rsembed-gpubench-")
    try:
        configs: dict[str, dict[str, Any]] = {}
        for name in args.models:
            wdir = os.path.join(tmp, f"weights-{name}")
            os.makedirs(wdir)
            base: dict[str, Any] = {"compile": True} if args.compile else {}
            configs[name] = {**base, **WRITERS[name](wdir, TINY[name] if args.smoke else {})}
            fwd = bench_forward(name, configs[name], args.n, args.batch, device)
            if device == "cuda":
                torch.cuda.empty_cache()  # leave the GPU to the inference worker
            res["models"][name] = {"forward_only": fwd}
            print(f"{name}: forward-only {fwd['images_per_s']:.1f} img/s", flush=True)
        cluster = local_cluster(io_workers=args.io_workers, io_threads=args.io_threads, inference_workers=1)
        try:
            with Client(cluster) as client:
                res["dashboard"] = client.dashboard_link
                for name in args.models:
                    exp = bench_export(client, name, configs[name], args.n, args.batch, tmp)
                    entry = res["models"][name]
                    entry["export"] = exp
                    entry["ratio"] = exp["images_per_s"] / entry["forward_only"]["images_per_s"]
                    print(
                        f"{name}: export {exp['images_per_s']:.1f} img/s (ratio {entry['ratio']:.2f})",
                        flush=True,
                    )
        finally:
            cluster.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if args.smoke:
        print(_markdown(res))
        print("bench_gpu: smoke run finished; no results written.")
        return 0
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gpu_bench.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(RESULTS, "gpu_bench.md"), "w", encoding="utf-8") as f:
        f.write(_markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
