"""Finishing a combined NPZ with failed items costs about what a complete one does (O(chunks)).

    .venv/bin/python benchmarks/bench_finish.py [--items 2000] [--failures 2] [--rounds 3] [--quick]

A working store of ``--items`` ROIs (``rcf``-sized pooled embeddings of 512
float32 and 4 x 16 x 16 inputs, chunks of 16, ``save_inputs=True``) is written
by the write task itself (:func:`rs_embed_dask.export.tasks.write_chunk_combined`
with its NPZ parts, as on an IO worker; not timed), once with every item ok
and once with ``--failures`` failed items.  Then the client's finish
(:func:`rs_embed_dask.export.materialize.finalize_combined`: manifest,
``<out>.npz`` in rs-embed's layout, here per-item members for every ok
item of the partial export) is timed.  Both cases run interleaved, round
after round, in one process, so a loaded machine slows both alike; the
ratio of the medians is the figure, and the partial time is extrapolated
linearly to 100,000 items.  The archives are checked against the store.

``--quick``: 400 items, 1 round.

Writes benchmarks/results/finish_bench[_quick].json and .md.
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks._common import write_results  # noqa: E402
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec  # noqa: E402
from rs_embed_dask.core.specs import OutputSpec  # noqa: E402
from rs_embed_dask.export import tasks  # noqa: E402
from rs_embed_dask.export.identity import resume_identity  # noqa: E402
from rs_embed_dask.export.materialize import finalize_combined  # noqa: E402
from rs_embed_dask.export.plan import build_plan  # noqa: E402
from rs_embed_dask.serialization import sanitize_key  # noqa: E402

CHUNK, DIM, INPUT = 16, 512, (4, 16, 16)
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")


def _plan(out: str, n: int) -> Any:
    rois = [PointBuffer(10.0 + 0.001 * i, 45.0, 320) for i in range(n)]
    plan = build_plan(
        spatials=rois, temporal=TEMPORAL, models=["rcf"], target=ExportTarget.combined(out),
        config=ExportConfig(chunk_size=CHUNK, save_inputs=True, show_progress=False, continue_on_error=True),
        backend="synthetic", device="cpu", output=OutputSpec.pooled(), sensor=None, fetch=None, modality=None,
        input_prep=None,
    )  # fmt: skip
    from rs_embed_dask.export.engine import _static_models, _store_attrs

    plan.identity = resume_identity(plan, _static_models(plan))
    return plan, _store_attrs


def _build_store(plan: Any, store_attrs: Any, failed: set[int], seed: int) -> str:
    """The working store (and NPZ parts) the write tasks leave behind, written chunk by chunk here."""
    import zarr

    store = plan.out_file + ".work.zarr"
    zarr.open_group(store, mode="w").attrs["rs_embed_dask"] = store_attrs(plan, complete=False, n_items=plan.n_items, manifest={})
    rng = np.random.default_rng(seed)
    (key,) = plan.inputs
    n = plan.n_items
    for s0 in range(0, n, CHUNK):
        idx = range(s0, min(n, s0 + CHUNK))
        block = plan.spatials[s0 : s0 + len(idx)]
        data = [None if i in failed else rng.normal(size=INPUT).astype(np.float32) for i in idx]
        errs = ["ProviderError('simulated')" if i in failed else None for i in idx]
        meta = [None if i in failed else {"i": i} for i in idx]
        emb = [None if i in failed else rng.normal(size=DIM).astype(np.float32) for i in idx]
        tasks.write_chunk_combined(
            store, s0, block,
            {key: tasks.ChunkInputs(key=key, data=data, meta=meta, errors=errs)},
            {"rcf": tasks.ChunkEmbeddings(model="rcf", data=emb, meta=list(meta), errors=list(errs))},
            model_keys={"rcf": sanitize_key("rcf")}, capacity=n, chunk_size=CHUNK, save_inputs=True, npz_parts=True,
        )  # fmt: skip
    return store


def _check(out: str, store_copy: str, failed: set[int], n: int) -> None:
    import zarr

    emb = np.asarray(zarr.open_array(os.path.join(store_copy, "models", "rcf", "embeddings"), mode="r")[:])
    with np.load(out, allow_pickle=False) as z:
        if failed:
            for i in (0, n // 2, n - 1):
                if i not in failed:
                    np.testing.assert_array_equal(z[f"embedding__rcf__{i:05d}"], emb[i])
            assert sum(k.startswith("embedding__rcf__") for k in z.files) == n - len(failed)
        else:
            np.testing.assert_array_equal(z["embeddings__rcf"], emb)


def _one(workdir: str, n: int, failed: set[int], seed: int) -> float:
    out = os.path.join(workdir, f"run_{len(failed)}_{seed}.npz")
    plan, attrs = _plan(out, n)
    store = _build_store(plan, attrs, failed, seed)
    keep = store + ".copy"
    shutil.copytree(store, keep)
    t0 = time.perf_counter()
    man = finalize_combined(plan, store, n)
    dt = time.perf_counter() - t0
    assert man["models"][0]["status"] == ("partial" if failed else "ok"), man["models"][0]["status"]
    _check(out, keep, failed, n)
    for p in (store, keep, store + ".npz-parts", out):
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--failures", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, rounds = (400, 1) if args.quick else (args.items, args.rounds)
    failed = {int(i) for i in np.linspace(n // 3, n - 2, args.failures).astype(int)} if args.failures else set()
    complete: list[float] = []
    partial: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rsed-finish-") as wd:
        _one(wd, min(n, 64), set(), 99)  # imports and caches warm, not counted
        for r in range(rounds):  # interleaved: a loaded machine slows both cases alike
            complete.append(_one(wd, n, set(), r))
            partial.append(_one(wd, n, failed, r))
            print(f"round {r + 1}: complete {complete[-1]:.3f} s, {len(failed)} failed {partial[-1]:.3f} s", flush=True)
    c, p = statistics.median(complete), statistics.median(partial)
    # the least-disturbed round of each case: on a loaded machine the minima are the steadier figure
    cmin, pmin = min(complete), min(partial)
    res = {
        "items": n, "failures": len(failed), "rounds": rounds, "chunk_size": CHUNK, "dim": DIM, "input": list(INPUT),
        "complete_s": complete, "partial_s": partial, "complete_median_s": c, "partial_median_s": p,
        "ratio": p / c, "ratio_of_minima": pmin / cmin, "ratio_per_round": [b / a for a, b in zip(complete, partial, strict=True)],
        "partial_100k_s_extrapolated": p * 100_000 / n,
        "command": "python benchmarks/bench_finish.py"
        + (" --quick" if args.quick else f" --items {n} --failures {args.failures} --rounds {rounds}"),
    }  # fmt: skip
    md = (
        f"# Finishing a combined NPZ: {n} items, complete vs {len(failed)} failed\n\n"
        f"| case | median finish (s) | rounds |\n|---|---|---|\n"
        f"| complete | {c:.3f} | {', '.join(f'{x:.3f}' for x in complete)} |\n"
        f"| {len(failed)} failed (per-item members) | {p:.3f} | {', '.join(f'{x:.3f}' for x in partial)} |\n\n"
        f"Ratio partial / complete: **{p / c:.2f}x** of the medians, {pmin / cmin:.2f}x of the minima "
        f"(per round: {', '.join(f'{b / a:.2f}' for a, b in zip(complete, partial, strict=True))}); partial extrapolated "
        f"to 100,000 items: {p * 100_000 / n:.0f} s (median), {pmin * 100_000 / n:.0f} s (minimum).\n"
    )
    write_results("finish_bench", args.quick, res, md)
    print(md)


if __name__ == "__main__":
    main()
