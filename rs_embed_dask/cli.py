"""The ``rs-embed-dask`` command line (also ``python -m rs_embed_dask``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from rs_embed_dask import list_models

    for name in list_models(include_aliases=args.aliases):
        print(name)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
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


def _cmd_demo(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rs-embed-dask``."""
    p = argparse.ArgumentParser(prog="rs-embed-dask", description="Remote-sensing embeddings on Dask.")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list registered models")
    m.add_argument("--aliases", action="store_true", help="include aliases")
    m.set_defaults(func=_cmd_models)
    d = sub.add_parser("describe", help="describe one model (bands, scale, dims, outputs)")
    d.add_argument("model")
    d.set_defaults(func=_cmd_describe)
    demo = sub.add_parser("demo", help="run the demo export (local cluster, synthetic provider, rcf)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--side", type=int, default=8, help="ROIs per side of the demo grid (default 8)")
    demo.add_argument("--buffer-m", type=float, default=320.0, help="ROI half side in metres")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from rs_embed_dask.errors import RSEmbedError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RSEmbedError as exc:
        print(f"rs-embed-dask: error: {exc}", file=sys.stderr)
        return 2
