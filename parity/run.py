"""``make parity``: run both sides on the same weights and pixels and write ``docs/parity.md``.

Steps (each side in its own process and environment, see :mod:`parity.sides`):

1. the plan (:func:`parity.inputs.build_plan`): ROIs at the models' native
   size and at sizes that need resizing or tiling, cases (model x output x
   ROI size x input_prep x single/batch call);
2. rs-embed side ``weights``: seeded random default checkpoints written into
   a temporary Hugging Face hub cache (kept under ``--workdir`` and reused);
3. our side ``weights``: the files our loaders read that differ (converted);
4. both sides ``embed``, offline (``HF_HUB_OFFLINE=1``), on the CPU;
5. :mod:`parity.compare`: the table, the diagnosis and ``docs/parity.md``.

Usage::

    make parity                                     # everything
    make parity PARITY_ARGS="--models dofa --quick"
    .venv/bin/python -m parity.run --parity-python .venv-parity/bin/python --compare-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from parity import families
from parity.inputs import build_plan

REPO = Path(__file__).resolve().parent.parent
#: on-the-fly models both packages offer -> default fetch scale (m)
MODELS = {"remoteclip": 10, "satmae": 10, "scalemae": 10, "dofa": 10, "prithvi": 30, **families.models()}
#: precomputed products compared with local stand-ins -> the year they cover
PRODUCTS = {"copernicus": 2021, "gse": 2022, "tessera": 2021}
SEED = 20260512


def side_env(workdir: Path, threads: int | None) -> dict[str, str]:
    """The environment of both side processes: offline hub cache under ``workdir``, no user overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RS_EMBED_", "HF_", "HUGGINGFACE_"))}
    hf = workdir / "hf"
    env.update(
        HF_HOME=str(hf),
        HF_HUB_CACHE=str(hf / "hub"),
        HUGGINGFACE_HUB_CACHE=str(hf / "hub"),
        HF_HUB_OFFLINE="1",
        RS_EMBED_COP_DIR=str(workdir / "copernicus"),
        RS_EMBED_TESSERA_CACHE=str(workdir / "tessera"),
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        RS_EMBED_PLAIN_WARNINGS="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONWARNINGS="ignore",
    )
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if line.startswith("["):
                print("  " + line.rstrip(), flush=True)
        rc = proc.wait()
    if rc:
        raise SystemExit(f"command failed ({rc}); see {log}: {' '.join(cmd)}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Command line of the harness (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m parity.run")
    ap.add_argument("--parity-python", default=str(REPO / ".venv-parity" / "bin" / "python"),
                    help="the Python of the rs-embed environment")  # fmt: skip
    ap.add_argument("--models", nargs="+", default=[*MODELS, *PRODUCTS], choices=[*MODELS, *PRODUCTS])
    ap.add_argument("--workdir", default=str(REPO / "build" / "parity"))
    ap.add_argument("--report", default=str(REPO / "docs" / "parity.md"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--quick", action="store_true", help="native and largest size only, single calls")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of each side")
    ap.add_argument("--compare-only", action="store_true", help="re-compare the last outputs")
    ap.add_argument("--sides", nargs="+", default=["rs-embed", "ours"], choices=["rs-embed", "ours"])
    ap.add_argument("--strict", action="store_true", help="exit 1 when a row fails (not for justified exceptions)")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path, log = workdir / "plan.json", workdir / "run.log"
    hub = workdir / "hf" / "hub"
    env = side_env(workdir, args.threads)
    env.update(families.side_env(workdir, args.seed))  # e.g. a URL checkpoint passed by its env var
    timings: dict[str, float] = {}
    if not args.compare_only:
        plan = build_plan(
            args.seed, {m: MODELS[m] for m in args.models if m in MODELS}, quick=args.quick,
            products={m: PRODUCTS[m] for m in args.models if m in PRODUCTS},
        )  # fmt: skip
        plan.to_json(plan_path)
        if "copernicus" in args.models:
            from parity.products import write_copernicus

            t0 = time.perf_counter()
            prod_rois = {n for c in plan.cases if c.model == "copernicus" for n in c.rois}
            write_copernicus(workdir / "copernicus", args.seed, [plan.rois[n] for n in sorted(prod_rois)])
            timings["copernicus GeoTIFF"] = time.perf_counter() - t0
        if "tessera" in args.models:
            from parity.products_tessera import write_tessera

            t0 = time.perf_counter()
            write_tessera(workdir / "tessera", args.seed)
            timings["tessera tiles"] = time.perf_counter() - t0
        common = ["--plan", str(plan_path), "--hub", str(hub), "--models", *args.models]
        timings["weights (rs-embed format)"] = _run(
            [args.parity_python, "-m", "parity.sides.rsembed_side", "weights", *common], env, log
        )
        timings["weights (our format)"] = _run([sys.executable, "-m", "parity.sides.ours_side", "weights", *common], env, log)
        if "rs-embed" in args.sides:
            timings["rs-embed side"] = _run(
                [args.parity_python, "-m", "parity.sides.rsembed_side", "embed", *common, "--out", str(workdir / "rsembed")],
                env, log,
            )  # fmt: skip
        if "ours" in args.sides:
            timings["our side"] = _run(
                [sys.executable, "-m", "parity.sides.ours_side", "embed", *common, "--out", str(workdir / "ours")], env, log
            )
    timings_file = workdir / "timings.json"
    if timings:
        timings_file.write_text(json.dumps(timings))
    elif timings_file.exists():  # --compare-only: the timings of the run that made the outputs
        timings = json.loads(timings_file.read_text())
    from parity.compare import compare, write_report

    rows = compare(workdir)
    write_report(rows, workdir, Path(args.report), timings=timings)
    failed = [r for r in rows if r["verdict"] not in ("pass", "exception")]
    print(f"{len(rows)} rows, {len(failed)} not passing; report: {args.report}")
    for r in failed:
        print(f"  {r['verdict']}: {r['case']} ({r['roi']})")
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    raise SystemExit(main())
