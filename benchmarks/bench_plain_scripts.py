"""What a missing main guard costs: the same export from a plain and a guarded script.

    .venv/bin/python benchmarks/bench_plain_scripts.py [--quick] [--rounds 3] [--rois 128]

Two scripts that differ only in ``if __name__ == "__main__":`` export the
same ROIs (ViT-S/16 with random weights, ``benchmarks/_vits.py``; synthetic
provider with 0.2 s per fetch; per-item NPZ; no client, so each starts the
embedded local cluster of worker processes).  They run in interleaved
rounds as subprocesses from a temporary folder; the figure is the ratio of
the median ``export_batch`` call times (plain / guarded), and of the whole
script's wall time.  Before the fix a plain script did not finish at all
(``RuntimeError: Nanny failed to start.``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks._common import write_results  # noqa: E402

_BODY = """
import os, sys, time
T0 = time.perf_counter()
from benchmarks import _vits
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch

_vits.register()


def run():
    sps = [PointBuffer(10.0 + 0.02 * (i % 200), 45.0 + 0.02 * (i // 200), 640) for i in range({n})]
    t = time.perf_counter()
    export_batch(
        spatials=sps, temporal=TemporalSpec.range("2022-06-01", "2022-09-01"), models=[_vits.NAME],
        target=ExportTarget.per_item("out-" + str(os.getpid())),
        config=ExportConfig(show_progress=False, num_workers=32),
        backend="synthetic", device="cpu", provider_options={{"latency_s": 0.2}},
    )
    print(f"RESULT {{time.perf_counter() - t:.3f}} {{time.perf_counter() - T0:.3f}}", flush=True)
"""


def _script(n: int, guarded: bool) -> str:
    call = 'if __name__ == "__main__":\n    run()\n' if guarded else "run()\n"
    return textwrap.dedent(_BODY.format(n=n)) + "\n" + call


def _run(path: str, cwd: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, path], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"{os.path.basename(path)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    call_s, script_s = (float(v) for v in lines[0].split()[1:])
    return call_s, script_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 ROIs, one round (smoke run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rois", type=int, default=128)
    args = ap.parse_args()
    n, rounds = (16, 1) if args.quick else (args.rois, args.rounds)
    times: dict[str, list[tuple[float, float]]] = {"guarded": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="rs-embed-plain-") as tmp:
        for kind in times:
            with open(os.path.join(tmp, f"{kind}.py"), "w") as f:
                f.write(_script(n, guarded=kind == "guarded"))
        for r in range(rounds):
            for kind in times:
                times[kind].append(_run(os.path.join(tmp, f"{kind}.py"), tmp))
                print(f"round {r + 1} {kind}: export call {times[kind][-1][0]:.1f} s, script {times[kind][-1][1]:.1f} s", flush=True)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(s for _, s in v)) for k, v in times.items()}
    res = {
        "command": "benchmarks/bench_plain_scripts.py" + (" --quick" if args.quick else f" --rounds {rounds} --rois {n}"),
        "rois": n,
        "rounds": rounds,
        "runs_s": {k: [list(t) for t in v] for k, v in times.items()},
        "median_export_call_s": {k: m[0] for k, m in med.items()},
        "median_script_s": {k: m[1] for k, m in med.items()},
        "ratio_export_call_plain_over_guarded": med["plain"][0] / med["guarded"][0],
        "ratio_script_plain_over_guarded": med["plain"][1] / med["guarded"][1],
    }
    md = (
        f"# Plain vs guarded script ({n} ROIs, {rounds} interleaved round(s))\n\n"
        "| script | export_batch call (median, s) | whole script (median, s) |\n|---|---:|---:|\n"
        + "".join(f"| {k} | {m[0]:.1f} | {m[1]:.1f} |\n" for k, m in med.items())
        + f"\nRatio plain / guarded: export call **{res['ratio_export_call_plain_over_guarded']:.2f}**, "
        f"whole script **{res['ratio_script_plain_over_guarded']:.2f}**.\n"
    )
    write_results("plain_scripts_bench", args.quick, res, md)
    print(md)


if __name__ == "__main__":
    main()
