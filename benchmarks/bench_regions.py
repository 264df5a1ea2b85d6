"""Continental tiling benchmark: 150,000+ tiles streamed through ``export_batch``, flat memory.

    .venv/bin/python benchmarks/bench_regions.py [--quick]

A 1,000 km x 1,000 km box (EPSG:3857 metres; about 9-18 E, 41-48 N: Italy,
the Alps and the Adriatic) is cut by ``tile_region`` into 2,560 m tiles: 153,272 ROIs.  They
stream, never listed, through one combined zarr export (synthetic provider at
``scale_m=320`` so each tile is 8 x 8 px, ``rcf`` with 16 features, pooled,
``save_inputs=False``, chunks of 1,000 ROIs) on a local cluster (one IO
worker, one inference worker).  A psutil thread samples, every 0.25 s, the RSS
of the client process (which also hosts the scheduler) and of the worker
processes (nannies and workers), and the peaks of a small run (the first
15,000 tiles) and of the whole box are compared.  The loaded export is then
checked: one item per tile, the tile centres as ``lon``/``lat`` of
``to_xarray()``, every status ok.

``--quick``: the first 1,500 vs the first 15,000 tiles.

Writes benchmarks/results/regions_bench[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._common import PeakRSS, write_results  # noqa: E402
from rs_embed_dask import (  # noqa: E402
    BBox,
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    FetchSpec,
    TemporalSpec,
    export_batch,
    load_export,
)
from rs_embed_dask.cluster import local_cluster  # noqa: E402
from rs_embed_dask.geometry import mercator_to_lonlat  # noqa: E402
from rs_embed_dask.regions import RegionTiles, tile_region  # noqa: E402

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
SCALE_M, TILE_M, FEATURES, CHUNK = 320, 2560, 16, 1000
# lower-left corner of the box in EPSG:3857 metres (about 9.0 E, 40.9 N)
X0, Y0, SIDE_M = 1_000_000.0, 5_000_000.0, 1_000_000.0


def continental_tiles() -> RegionTiles:
    lon0, lat0 = mercator_to_lonlat(X0, Y0)
    lon1, lat1 = mercator_to_lonlat(X0 + SIDE_M, Y0 + SIDE_M)
    return tile_region(BBox(lon0, lat0, lon1, lat1), TILE_M, scale_m=SCALE_M)


class Head:
    """The first ``n`` tiles of a ``RegionTiles``: sized and streamed like it."""

    def __init__(self, tiles: RegionTiles, n: int) -> None:
        self.tiles, self.n = tiles, min(n, len(tiles))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[BBox]:
        return itertools.islice(iter(self.tiles), self.n)


def _last_chunk_written(path: str, n: int) -> Any:
    """A probe of the store (layout in ``rs_embed_dask.export.store``): is item ``n - 1`` written?"""

    def done() -> bool:
        import zarr

        return bool(zarr.open_array(os.path.join(path, "models", "rcf", "status"), mode="r")[n - 1] != 0)

    return done


def one_run(client: Any, spatials: Any, path: str) -> dict[str, Any]:
    shutil.rmtree(path, ignore_errors=True)
    n = len(spatials)
    with PeakRSS(done=_last_chunk_written(path, n)) as mon:
        t0 = time.perf_counter()
        manifest = export_batch(
            spatials=spatials,
            temporal=TEMPORAL,
            models=[ExportModelRequest("rcf", model_config={"features": FEATURES})],
            target=ExportTarget.combined(path),
            config=ExportConfig(format="zarr", chunk_size=CHUNK, save_inputs=False, show_progress=False),
            backend="synthetic",
            fetch=FetchSpec(scale_m=SCALE_M),
            client=client,
        )
        wall = time.perf_counter() - t0
    assert isinstance(manifest, dict)
    stream_end = next((t for t, _, _, streamed in mon.timeline if streamed), float("nan"))
    return {
        "n": n,
        "status": manifest["status"],
        "wall_s": wall,
        "rois_per_s": n / wall,
        "stream_s": stream_end,
        "start_client_mb": mon.start[0] / 2**20,
        "start_workers_mb": mon.start[1] / 2**20,
        "peak": mon.peaks("all"),
        "peak_stream": mon.peaks("stream"),
        "peak_final": mon.peaks("final"),
        "samples": len(mon.timeline),
    }


def check_loaded(path: str, tiles: Any) -> dict[str, Any]:
    """The export loads with one item per tile and the tile centres as coordinates."""
    n = len(tiles)
    res = load_export(path)
    ds = res.to_xarray()
    picks = [0, n // 2, n - 1]
    wanted = {i: None for i in picks}
    for i, tile in enumerate(tiles):
        if i in wanted:
            wanted[i] = tile.center
    lon = ds["lon"].values
    lat = ds["lat"].values
    status = ds["status__rcf"].values
    err = max(max(abs(lon[i] - c[0]), abs(lat[i] - c[1])) for i, c in wanted.items())  # type: ignore[index]
    out = {
        "n_items": int(ds.sizes["item"]),
        "all_ok": bool((status == 1).all()),
        "embedding_shape": list(ds["rcf"].shape),
        "centre_max_abs_err_deg": float(err),
        "lon_range": [float(np.nanmin(lon)), float(np.nanmax(lon))],
        "lat_range": [float(np.nanmin(lat)), float(np.nanmax(lat))],
        "first_spatial": res.spatials[0],
    }
    out["ok"] = bool(out["n_items"] == n and out["all_ok"] and err < 1e-9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,500 vs 15,000 tiles (smoke run)")
    args = ap.parse_args()
    tiles = continental_tiles()
    n_small, n_big = (1_500, 15_000) if args.quick else (15_000, len(tiles))
    print(f"{tiles}: {len(tiles)} tiles; runs of {n_small} and {n_big}", flush=True)
    res: dict[str, Any] = {
        "quick": args.quick,
        "command": "benchmarks/bench_regions.py" + (" --quick" if args.quick else ""),
        "workload": {
            "region": "EPSG:3857 box of 1,000 km x 1,000 km (lower-left 1,000,000 / 5,000,000 m)",
            "tiles_in_region": len(tiles), "tile_m": TILE_M, "scale_m": SCALE_M, "tile_px": tiles.tile_px,
            "provider": "synthetic (no latency)", "model": f"rcf features={FEATURES}, pooled",
            "format": "zarr (combined)", "chunk_size": CHUNK, "save_inputs": False,
            "cluster": "local_cluster(io_threads=4): 1 IO worker + 1 inference worker",
            "cpu_count": os.cpu_count(),
        },
    }  # fmt: skip
    from distributed import Client

    tmp = tempfile.mkdtemp(prefix="rsembed-regions-")
    cluster = local_cluster(io_threads=4, dashboard_address=None)
    try:
        with Client(cluster) as client:
            one_run(client, Head(tiles, 256), os.path.join(tmp, "warm.zarr"))  # model load, imports
            res["small"] = one_run(client, Head(tiles, n_small), os.path.join(tmp, "small.zarr"))
            print(f"  small {n_small}: {res['small']}", flush=True)
            big_tiles: Any = tiles if n_big == len(tiles) else Head(tiles, n_big)
            big_path = os.path.join(tmp, "big.zarr")
            res["big"] = one_run(client, big_tiles, big_path)
            print(f"  big {n_big}: {res['big']}", flush=True)
        res["loaded"] = check_loaded(big_path, big_tiles)
        print(f"  loaded: {res['loaded']}", flush=True)
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    s, b = res["small"], res["big"]
    res["ratios"] = {"rois_big/small": b["n"] / s["n"]}
    for phase in ("peak", "peak_stream"):
        for part in ("client", "workers", "total"):
            res["ratios"][f"{phase}_{part}_big/small"] = b[phase][f"{part}_mb"] / s[phase][f"{part}_mb"]
    res["targets"] = {"peak_*_big/small": "<= 1.2 (flat memory)"}
    r = res["ratios"]

    def row(label: str, v: dict[str, Any], phase: str) -> str:
        p = v[phase]
        return (
            f"| {label} | {v['n']} | {v['wall_s']:.0f} | {v['rois_per_s']:.0f} | {p['client_mb']:.0f} | "
            f"{p['workers_mb']:.0f} | {p['total_mb']:.0f} |"
        )

    def ratio_row(phase: str) -> str:
        return (
            f"| **ratio big/small** | {r['rois_big/small']:.1f}x | | | **{r[phase + '_client_big/small']:.3f}** | "
            f"**{r[phase + '_workers_big/small']:.3f}** | **{r[phase + '_total_big/small']:.3f}** |"
        )

    head = [
        "| run | ROIs | wall s | ROIs/s | client+scheduler peak MB | workers peak MB | total peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def table(title: str, phase: str) -> list[str]:
        return [title, "", *head, row("small", s, phase), row("big", b, phase), ratio_row(phase), ""]

    md = [
        *table("Whole call (streaming and the final manifest):", "peak"),
        *table("Streaming phase only (until the last chunk of the store is written):", "peak_stream"),
        f"Loaded export: {res['loaded']['n_items']} items, all ok: {res['loaded']['all_ok']}, tile centres as "
        f"lon/lat (max error {res['loaded']['centre_max_abs_err_deg']:.1e} deg), embeddings "
        f"{tuple(res['loaded']['embedding_shape'])}; check {'passed' if res['loaded']['ok'] else 'FAILED'}.",
    ]
    text = "\n".join(md)
    print()
    print(text)
    w = res["workload"]
    write_results(
        "regions_bench",
        args.quick,
        res,
        f"# region tiling benchmark\n\n`.venv/bin/python {res['command']}`\n\n"
        f"{w['tiles_in_region']} tiles of {TILE_M} m ({w['tile_px']} x {w['tile_px']} px at {SCALE_M} m) "
        f"from `tile_region` over a {w['region']}, streamed through `export_batch` ({w['model']}, "
        f"{w['format']}, chunks of {CHUNK}, {w['provider']}) on {w['cluster']}. Peak RSS sampled every "
        f"0.25 s with psutil.\n\n{text}\n",
    )
    if not res["loaded"]["ok"]:
        raise SystemExit("the loaded export does not match the tiles")


if __name__ == "__main__":
    main()
