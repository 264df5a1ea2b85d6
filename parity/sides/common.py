"""What both side processes do the same way: run the plan's cases and save outputs and logs.

Imported in both environments; needs numpy and torch (for the capture hook),
not either package.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.capture import capture_model_inputs
from parity.inputs import Case, Plan, sha256_f32

__all__ = ["FetchLog", "call_case", "run_cases"]


class FetchLog:
    """What the fake provider served: one entry per request, in call order."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, roi: str, bands: Sequence[str], start: str, end: str, arr: np.ndarray) -> None:
        """Record a request and the sha256 of the array returned."""
        self.entries.append(
            {"roi": roi, "bands": list(bands), "start": start, "end": end,
             "shape": list(arr.shape), "sha256": sha256_f32(arr)}
        )  # fmt: skip

    def drain(self) -> list[dict[str, Any]]:
        """The entries since the last call."""
        out, self.entries = self.entries, []
        return out


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return repr(value)[:200]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:80]}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in list(value)[:64]]
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)[:200]


_META_KEYS = ("input_prep", "grid_hw", "grid_shape", "stitched_grid_shape", "pooling", "tokens_kind",
              "merged_output", "preprocess", "shape_prep", "n_frames", "frame_dates", "model_policy",
              "input_res_m", "num_frames", "temporal_mode", "tile_count")  # fmt: skip


def call_case(pkg: Any, plan: Plan, case: Case, provider: str) -> list[Any]:
    """Run ``case`` through a package's public API (``pkg`` is ``rs_embed`` or ``rs_embed_dask``).

    Both packages have the same names and signatures, so one call serves both
    sides: ``get_embedding`` (or ``get_embeddings_batch``) on the case's ROIs
    from the fake provider ``provider``; products read their own data.
    """
    spatials = [pkg.BBox(*r.bbox) if r.bbox else pkg.PointBuffer(r.lon, r.lat, r.buffer_m)
                for r in (plan.rois[n] for n in case.rois)]  # fmt: skip
    start, end = case.window or (plan.start, plan.end)
    temporal = pkg.TemporalSpec.year(case.year) if case.year else pkg.TemporalSpec.range(start, end)
    output = pkg.OutputSpec.grid() if case.output == "grid" else pkg.OutputSpec.pooled()
    backend = "auto" if case.year else provider
    kw = {"temporal": temporal, "output": output, "backend": backend, "device": "cpu", "input_prep": case.input_prep}
    if getattr(case, "modality", None):
        kw["modality"] = case.modality
    if case.call == "batch":
        return list(pkg.get_embeddings_batch(case.model, spatials=spatials, **kw))
    return [pkg.get_embedding(case.model, spatial=spatials[0], **kw)]


def run_cases(
    plan: Plan,
    cases: Sequence[Case],
    call: Callable[[Case], list[Any]],
    fetch_log: FetchLog,
    out_npz: str | Path,
    out_json: str | Path,
    *,
    side: str,
    repeat: Callable[[Case], bool] = lambda c: False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Run ``cases`` with ``call`` (one Embedding per ROI of the case) and save everything.

    Outputs go to ``out_npz`` as ``"<case id>|<roi index>"`` (and
    ``"<case id>|<roi index>|repeat"`` for cases run twice), model inputs as
    ``"<case id>|input|<k>"``; the JSON log holds per case the fetch log,
    the captured model-input hashes, shapes, selected metadata, timings and
    errors.
    """
    arrays: dict[str, np.ndarray] = {}
    log: dict[str, Any] = {"side": side, "cases": {}, **(extra or {})}
    for n, case in enumerate(cases):
        entry: dict[str, Any] = {"model": case.model, "rois": list(case.rois)}
        t0 = time.perf_counter()
        try:
            with capture_model_inputs(keep=8) as captured:
                embs = call(case)
            entry["fetches"] = fetch_log.drain()
            entry["model_inputs"] = [{k: v for k, v in r.items() if k != "array"} for r in captured]
            for k, r in enumerate(captured):
                if r["array"] is not None:
                    arrays[f"{case.id}|input|{k}"] = r["array"]
            entry["outputs"] = []
            for i, e in enumerate(embs):
                data = np.asarray(getattr(e.data, "values", e.data), dtype=np.float32)
                arrays[f"{case.id}|{i}"] = data
                meta = e.meta if isinstance(e.meta, dict) else {}
                entry["outputs"].append(
                    {"shape": list(data.shape), "sha256": sha256_f32(data),
                     "meta": {k: _jsonable(meta[k]) for k in _META_KEYS if k in meta}}
                )  # fmt: skip
            if repeat(case):
                again = call(case)
                fetch_log.drain()
                for i, e in enumerate(again):
                    arrays[f"{case.id}|{i}|repeat"] = np.asarray(getattr(e.data, "values", e.data), dtype=np.float32)
        except Exception as exc:  # a failing case is a result, not a crash
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            fetch_log.drain()
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        log["cases"][case.id] = entry
        status = entry.get("error", "ok")
        print(f"[{side}] {case.id}: {status} ({entry['seconds']} s)", flush=True)
        Path(out_json).write_text(json.dumps(log, indent=1))
        if n + 1 == len(cases) or cases[n + 1].model != case.model:  # a crash keeps finished models
            np.savez(out_npz, **arrays)
