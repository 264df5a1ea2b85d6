"""Per-item layout: one ``<name>.npz|.nc`` + ``<name>.json`` pair per ROI, written on the workers.

Resume follows rs-embed's rule: a ROI is skipped when its array file exists
and its sidecar JSON carries the same request fingerprint (or, with
``save_manifest=False``, when the array file exists); a ROI whose sidecar
says it failed (``status`` not ``ok``) is retried.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.export.manifest import array_ref, item_fingerprint, per_item_manifest
from rs_embed_dask.export.tasks import ChunkEmbeddings, ChunkInputs
from rs_embed_dask.inspection import input_inspection
from rs_embed_dask.pipeline import run_with_retry
from rs_embed_dask.serialization import array_sha1, jsonable, sanitize_key

__all__ = ["item_done", "item_paths", "write_chunk_per_item"]

_EXT = {"npz": ".npz", "netcdf": ".nc"}


def item_paths(out_dir: str, name: str, fmt: str) -> tuple[str, str]:
    """``(array_path, json_path)`` of one ROI."""
    base = os.path.join(out_dir, name)
    return base + _EXT[fmt], base + ".json"


def item_done(out_dir: str, name: str, fmt: str, fingerprint: str, save_manifest: bool) -> dict[str, Any] | None:
    """The stored manifest of a finished ROI (``{}`` without manifests), else ``None``."""
    arr_path, json_path = item_paths(out_dir, name, fmt)
    if not os.path.exists(arr_path):
        return None
    if not save_manifest:
        return {}
    try:
        with open(json_path, encoding="utf-8") as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(man, dict) or man.get("request_fingerprint") != fingerprint:
        return None
    if man.get("status") != "ok":
        return None  # failed or partial: retried, as rs-embed reruns failed work
    return man


def write_chunk_per_item(
    out_dir: str,
    names: Sequence[str],
    indices: Sequence[int],
    spatials: Sequence[Any],
    inputs: Mapping[str, ChunkInputs],
    embeddings: Mapping[str, ChunkEmbeddings],
    *,
    models: Sequence[Mapping[str, Any]],
    fmt: str,
    save_inputs: bool,
    save_manifest: bool,
    backend: str,
    device: str,
    temporal: Any,
    output: Any,
    fingerprint_base: Mapping[str, Any],
    max_retries: int = 0,
    backoff_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Write the files of every ROI in a chunk and return their manifests.

    ``models`` holds one static record per model: ``name``, ``input_key``,
    ``sensor`` and ``describe`` (computed once on the client).
    """
    from rs_embed_dask.export.priority import run_as_io
    from rs_embed_dask.export.writers import write_json, write_netcdf, write_npz

    def write_all() -> list[dict[str, Any]]:
        os.makedirs(out_dir, exist_ok=True)
        out: list[dict[str, Any]] = []
        for j, (name, idx, sp) in enumerate(zip(names, indices, spatials, strict=True)):
            arrays: dict[str, np.ndarray] = {}
            entries: list[dict[str, Any]] = []
            written_inputs: dict[str, str] = {}
            for m in models:
                mkey = sanitize_key(m["name"])
                key = m["input_key"]
                ci = inputs.get(key) if key else None
                ce = embeddings.get(m["name"])
                entry: dict[str, Any] = {
                    "model": m["name"],
                    "status": "ok",
                    "sensor": m["sensor"],
                    "describe": m["describe"],
                }
                fetch_error = ci.errors[j] if ci is not None else None
                if fetch_error is not None or (ce is not None and ce.errors[j] is not None):
                    entry["status"] = "failed"
                if fetch_error is not None:
                    entry["error"] = ce.errors[j] if ce is not None and ce.errors[j] else fetch_error
                input_ref = None
                if ci is not None and ci.data[j] is not None and save_inputs:
                    x = np.asarray(ci.data[j], dtype=np.float32)
                    report = input_inspection(x, m["sensor"], name=f"{backend}_input_{key}")
                    if key in written_inputs:
                        k0 = written_inputs[key]
                        input_ref = array_ref(k0, x, sha1=array_sha1(x), inspection=report, dedup_reused=True)
                    else:
                        k0 = f"input_chw__{mkey}"
                        arrays[k0] = x
                        written_inputs[key] = k0
                        input_ref = array_ref(k0, x, sha1=array_sha1(x), inspection=report)
                entry["input"] = input_ref
                if ci is not None and ci.meta[j]:
                    entry["fetch_meta"] = ci.meta[j]
                if entry["status"] == "failed" and "error" not in entry and ce is not None:
                    entry["error"] = ce.errors[j]
                if ce is not None and ce.data[j] is not None:
                    e = np.asarray(ce.data[j], dtype=np.float32)
                    ekey = f"embedding__{mkey}"
                    arrays[ekey] = e
                    entry["embedding"] = array_ref(ekey, e, sha1=array_sha1(e))
                    entry["meta"] = ce.meta[j]
                else:
                    entry["embedding"] = None
                    entry["meta"] = None
                if "error" in entry:  # rs-embed's order: a failed fetch's error before input, a model's after
                    head: tuple[str, ...] = ("model", "status", "sensor", "describe")
                    head += ("error",) if fetch_error is not None else ("input", "error")
                    entry = {**{k: entry[k] for k in head}, **{k: v for k, v in entry.items() if k not in head}}
                entries.append(entry)
            arr_path, json_path = item_paths(out_dir, name, fmt)
            man = per_item_manifest(
                point_index=idx,
                backend=backend,
                device=device,
                model_entries=entries,
                spatial=sp,
                temporal=temporal,
                output=output,
                fingerprint=item_fingerprint(fingerprint_base, sp),
                array_path=arr_path,
                array_keys=list(arrays),
                fmt=fmt,
                manifest_path=json_path if save_manifest else None,
            )

            def write(
                arrays: dict[str, np.ndarray] = arrays,
                man: dict[str, Any] = man,
                arr_path: str = arr_path,
                json_path: str = json_path,
            ) -> None:
                if fmt == "netcdf":
                    write_netcdf(
                        arr_path,
                        arrays,
                        {"created_at": man["created_at"], "backend": backend, "device": device},
                    )
                else:
                    write_npz(arr_path, arrays)
                if save_manifest:
                    write_json(json_path, man)

            run_with_retry(write, retries=max_retries, backoff_s=backoff_s)
            out.append(jsonable(man))
        return out

    return run_as_io(write_all)
