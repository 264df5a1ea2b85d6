"""Our side (``rs_embed_dask``); runs in the project's ``.venv``.

Subcommands
-----------
``weights``
    Derive the checkpoint files our loaders read from the ones the rs-embed
    side wrote, where the two packages read different files of the same
    checkpoint (:data:`parity.weights.HUB_FILES`): today only RemoteCLIP
    (rshf ``model.safetensors`` -> open_clip ``RemoteCLIP-ViT-B-32.pt``).
``embed``
    Register a fake provider with ``rs_embed_dask.register_provider`` (a
    :class:`rs_embed_dask.providers.base.Provider` subclass serving the plan's
    pixels) and run the plan's cases through ``rs_embed_dask.get_embedding``
    / ``rs_embed_dask.get_embeddings_batch``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from parity.families import family_of
from parity.inputs import S1_LEVEL_DB, Case, Plan, canonical_band, s1_units, world_pixels
from parity.sides.common import FetchLog, call_case, run_cases
from parity.weights import HUB_FILES, convert_remoteclip, snapshot_dir, write_snapshot

PROVIDER = "parity_fake"

_PLAN: Plan | None = None
_LOG = FetchLog()


def write_weights(hub: Path, seed: int, models: list[str]) -> None:
    """Write our checkpoint files that differ from rs-embed's into the hub cache ``hub``."""
    for model in models:
        if "ours" not in HUB_FILES.get(model, {}):
            continue
        src_repo, *src_files = HUB_FILES[model]["rs_embed"]
        repo, filename = HUB_FILES[model]["ours"]
        src = snapshot_dir(hub, src_repo, seed) / next(f for f in src_files if f != "config.json")
        dst = write_snapshot(hub, repo, seed) / filename
        stamp = dst.with_name(dst.name + ".parity-from")
        if dst.exists() and stamp.exists() and stamp.read_text() == f"{src}|{src.stat().st_mtime_ns}":
            print(f"[ours weights] {model}: cached {dst}", flush=True)
            continue
        fam = family_of(model)
        if model == "remoteclip":
            convert_remoteclip(src, dst)
        elif fam is not None and hasattr(fam, "ours_weights"):
            fam.ours_weights(model, src, dst)
        else:  # pragma: no cover - a new entry of HUB_FILES needs its conversion here
            raise NotImplementedError(model)
        stamp.write_text(f"{src}|{src.stat().st_mtime_ns}")
        print(f"[ours weights] {model}: {src.name} -> {dst}", flush=True)


def make_provider_class() -> type:
    """The fake provider, a :class:`rs_embed_dask.providers.base.Provider` subclass."""
    from rs_embed_dask.providers.base import Provider

    class ParityProvider(Provider):
        """Serves :class:`parity.inputs.Plan` pixels for planned ROIs on their grid windows."""

        name = PROVIDER

        def fetch_window(self, window: Any, dates: Any, sensor: Any) -> tuple[np.ndarray, dict[str, Any]]:
            assert _PLAN is not None
            if dates is None:
                raise RuntimeError("the parity provider needs a temporal window")
            start, end = dates[0].isoformat(), dates[1].isoformat()
            win = (window.row_off, window.col_off, window.height, window.width)
            arr = world_pixels(_PLAN.seed, list(sensor.bands), start, end, *win, float(window.scale_m))
            if set(canonical_band(b) for b in sensor.bands) <= set(S1_LEVEL_DB):
                arr = s1_units(arr, bool(sensor.use_float_linear))
            lon0, lat0, lon1, lat1 = window.lonlat_bounds()
            try:
                tol = 2.0 * float(window.scale_m) / 111_000.0  # the lattice snap moves the centre < 1 px
                name = _PLAN.find_roi((lon0 + lon1) / 2, (lat0 + lat1) / 2, None, tol_deg=tol).name
            except LookupError:
                name = "?"
            _LOG.add(f"{name} r{win[0]} c{win[1]} {win[2]}x{win[3]}@{float(window.scale_m):g}m",
                     list(sensor.bands), start, end, arr)  # fmt: skip
            return arr, {}

    return ParityProvider


def _call(case: Case) -> list[Any]:
    import rs_embed_dask as rd

    assert _PLAN is not None
    return call_case(rd, _PLAN, case, PROVIDER)


def main(argv: list[str] | None = None) -> int:
    """Command line of our side (see the module docstring)."""
    global _PLAN
    ap = argparse.ArgumentParser(prog="python -m parity.sides.ours_side")
    ap.add_argument("command", choices=("weights", "embed"))
    ap.add_argument("--plan", required=True)
    ap.add_argument("--hub", required=True, help="Hugging Face hub cache folder")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--out", help="output prefix (embed)")
    args = ap.parse_args(argv)
    _PLAN = Plan.from_json(args.plan)
    if args.command == "weights":
        write_weights(Path(args.hub), _PLAN.seed, args.models)
        return 0

    import torch

    import rs_embed_dask as rd

    rd.register_provider(PROVIDER, make_provider_class(), overwrite=True)
    if "gse" in args.models:  # the shared fake Earth Engine (parity/products_gse.py)
        from parity.products_gse import install

        install(_PLAN.seed, log=lambda label, arr: _LOG.add(f"gse {label}", ["A00-A63"], "", "", arr))
    torch.manual_seed(0)
    cases = [c for c in _PLAN.cases if c.model in args.models]
    run_cases(
        _PLAN, cases, _call, _LOG, f"{args.out}.npz", f"{args.out}.json", side="ours",
        extra={"version": getattr(rd, "__version__", "?"), "torch": torch.__version__,
               "python": sys.version.split()[0], "threads": torch.get_num_threads()},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
