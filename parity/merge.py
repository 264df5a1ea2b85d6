r"""Merge the outputs of several harness runs into one report.

The full matrix of every model takes hours on a small CPU machine; runs made
per family (``python -m parity.run --models ... --workdir build/parity-x``)
share the seed and the plan's rules, so their rows can be put side by side::

    python -m parity.merge --from build/parity-rect build/parity-products ... \\
        --workdir build/parity-all --report docs/parity.md

Each model's rows come from the first run (in ``--from`` order) that has them.
The merged ``plan.json``, ``rsembed*`` / ``ours`` outputs and timings are
written to ``--workdir``, where ``python -m parity.run --compare-only`` works
as on any run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["merge"]

_SIDES = ("rsembed", "ours", "rsembed_control")


def _case_model(key: str) -> str:
    return key.split("/", 1)[0]


def merge(sources: list[Path], workdir: Path) -> dict[str, Path]:
    """Write the merged run of ``sources`` into ``workdir``; return ``{model: source}``."""
    owner: dict[str, Path] = {}
    plan: dict[str, Any] | None = None
    rois: dict[str, Any] = {}
    cases: list[dict[str, Any]] = []
    for src in sources:
        doc = json.loads((src / "plan.json").read_text())
        if plan is None:
            plan = {k: doc[k] for k in ("seed", "start", "end")}
        elif doc["seed"] != plan["seed"]:
            raise ValueError(f"{src}: seed {doc['seed']} differs from {plan['seed']} of {sources[0]}")
        mine = {c["model"] for c in doc["cases"]} - set(owner)
        owner.update({m: src for m in mine})
        # a ROI's place depends on the plan's composition (quick or full): a name taken by
        # another run's different ROI is renamed in this run's cases
        renamed: dict[str, str] = {}
        for c in doc["cases"]:
            if owner[c["model"]] != src:
                continue
            for name in c["rois"]:
                roi = next(r for r in doc["rois"] if r["name"] == name)
                new = name
                while rois.setdefault(new, {**roi, "name": new}) != {**roi, "name": new}:
                    new = f"{name}~{src.name}" if new == name else new + "'"
                renamed[name] = new
            cases.append({**c, "rois": [renamed[n] for n in c["rois"]]})
    if plan is None:
        raise ValueError("no runs to merge")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plan.json").write_text(json.dumps({**plan, "rois": list(rois.values()), "cases": cases}, indent=1))
    for side in _SIDES:
        log: dict[str, Any] = {"cases": {}}
        arrays: dict[str, np.ndarray] = {}
        for src in sources:
            if (src / f"{side}.json").exists():
                doc = json.loads((src / f"{side}.json").read_text())
                log.update({k: v for k, v in doc.items() if k != "cases"})
                log["cases"].update({k: v for k, v in doc["cases"].items() if owner.get(_case_model(k)) == src})
            if (src / f"{side}.npz").exists():
                with np.load(src / f"{side}.npz") as npz:
                    arrays.update({k: npz[k] for k in npz.files if owner.get(_case_model(k)) == src})
        if log["cases"] or arrays:
            (workdir / f"{side}.json").write_text(json.dumps(log))
            np.savez_compressed(workdir / f"{side}.npz", **arrays)
    timings: dict[str, float] = {}
    for src in dict.fromkeys(owner.values()):
        models = ", ".join(sorted(m for m, s in owner.items() if s == src))
        if (src / "timings.json").exists():
            for k, v in json.loads((src / "timings.json").read_text()).items():
                timings[f"{k} ({models})"] = v
    (workdir / "timings.json").write_text(json.dumps(timings))
    return owner


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m parity.merge")
    ap.add_argument("--from", dest="sources", nargs="+", required=True, help="workdirs of earlier runs")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--report", required=True)
    args = ap.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    owner = merge([Path(s).resolve() for s in args.sources], workdir)
    for model, src in sorted(owner.items()):
        print(f"{model}: {src}")
    from parity.run import main as run_main

    return run_main(["--compare-only", "--workdir", str(workdir), "--report", args.report])


if __name__ == "__main__":
    raise SystemExit(main())
