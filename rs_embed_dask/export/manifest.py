"""rs-embed's manifest structures (per-item and combined), key for key.

Field order follows the files rs-embed 0.3.1 writes (see
``tests/data/upstream_exports``).  Two deliberate differences: range
temporal specs serialise ``"year": null`` (rs-embed writes a function repr),
and timestamps are plain ISO 8601 ``...Z``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rs_embed_dask.serialization import jsonable, request_fingerprint, sanitize_key, utc_timestamp

__all__ = [
    "combined_manifest",
    "fingerprint_payload",
    "per_item_manifest",
    "point_failure_manifest",
    "summarize_status",
]


@functools.cache
def package_version() -> str | None:
    """Version of this package (rs-embed records its own here); read once per process."""
    try:
        return version("rs-embed-dask")
    except PackageNotFoundError:  # pragma: no cover
        return None


def summarize_status(statuses: Sequence[str]) -> str:
    """rs-embed's rule: none failed/partial -> ok; all failed -> failed; else partial."""
    if not statuses or all(s == "ok" for s in statuses):
        return "ok"
    n_failed = sum(1 for s in statuses if s == "failed")
    return "failed" if n_failed == len(statuses) else "partial"


def spatial_dict(spatial: Any) -> dict[str, Any]:
    """A spec's fields with no type tag (rs-embed's serialisation)."""
    return jsonable(spatial)


def fingerprint_payload(
    *,
    models: Sequence[Any],
    temporal: Any,
    output: Any,
    fmt: str,
    save_inputs: bool,
    save_embeddings: bool,
    input_prep: Any,
) -> dict[str, Any]:
    """The request fields rs-embed hashes (spatials are added by the layout)."""
    return {
        "models": [
            {
                "name": m.name,
                "backend": m.backend,
                "sensor": jsonable(m.sensor),
                "model_config": jsonable(m.config_dict or None),
            }
            for m in models
        ],
        "temporal": jsonable(temporal),
        "output": jsonable(output),
        "format": fmt,
        "save_inputs": bool(save_inputs),
        "save_embeddings": bool(save_embeddings),
        "input_prep": jsonable(input_prep),
    }


def item_fingerprint(base: Mapping[str, Any], spatial: Any) -> str:
    """Per-item request fingerprint (``base`` plus the item's spatial)."""
    return request_fingerprint({**base, "spatial": spatial_dict(spatial)})


def array_ref(key: str, arr: Any, *, sha1: str | None = None, **extra: Any) -> dict[str, Any]:
    """``{"npz_key", "dtype", "shape"[, "sha1"]}`` for one stored array."""
    ref: dict[str, Any] = {"npz_key": key, "dtype": str(arr.dtype), "shape": list(arr.shape)}
    if sha1 is not None:
        ref["sha1"] = sha1
    ref.update(extra)
    return ref


def per_item_manifest(
    *,
    point_index: int,
    backend: str,
    device: str,
    model_entries: list[dict[str, Any]],
    spatial: Any,
    temporal: Any,
    output: Any,
    fingerprint: str,
    array_path: str,
    array_keys: Sequence[str],
    fmt: str,
    manifest_path: str | None,
) -> dict[str, Any]:
    """One ROI's manifest, rs-embed section 2.3."""
    statuses = [e["status"] for e in model_entries]
    n_failed = sum(1 for s in statuses if s == "failed")
    man: dict[str, Any] = {
        "created_at": utc_timestamp(),
        "point_index": int(point_index),
        "status": summarize_status(statuses),
        "backend": backend,
        "device": device,
        "models": model_entries,
        "spatial": spatial_dict(spatial),
        "temporal": jsonable(temporal),
        "output": jsonable(output),
        "package_version": package_version(),
        "summary": {
            "total_models": len(model_entries),
            "failed_models": n_failed,
            "ok_models": len(model_entries) - n_failed,
        },
        "request_fingerprint": fingerprint,
    }
    if fmt == "netcdf":
        man["nc_path"] = array_path
        man["nc_variables"] = sorted(array_keys)
    else:
        man["npz_path"] = array_path
        man["npz_keys"] = sorted(array_keys)
    if manifest_path is not None:
        man["manifest_path"] = manifest_path
    return man


def point_failure_manifest(
    *, point_index: int, stage: str, error: str, backend: str, device: str, spatial: Any, temporal: Any, output: Any
) -> dict[str, Any]:
    """A ROI whose failure happened outside the per-model steps (no file written)."""
    return {
        "created_at": utc_timestamp(),
        "point_index": int(point_index),
        "status": "failed",
        "stage": stage,
        "error": error,
        "backend": backend,
        "device": device,
        "models": [],
        "spatial": spatial_dict(spatial),
        "temporal": jsonable(temporal),
        "output": jsonable(output),
    }


def combined_manifest(
    *,
    created_at: str,
    backend: str,
    device: str,
    model_entries: list[dict[str, Any]],
    n_items: int,
    temporal: Any,
    output: Any,
    spatials: list[dict[str, Any]] | dict[str, Any],
    fingerprint: str,
    prefetch: dict[str, Any],
    manifest_path: str | None,
    array_path: str,
    array_keys: Sequence[str],
    fmt: str,
) -> dict[str, Any]:
    """The combined manifest, rs-embed section 2.4, in the fixture files' key order."""
    statuses = [e["status"] for e in model_entries]
    n_failed = sum(1 for s in statuses if s == "failed")
    n_partial = sum(1 for s in statuses if s == "partial")
    man: dict[str, Any] = {
        "created_at": created_at,
        "status": summarize_status(statuses),
        "stage": "done",
        "resume_incomplete": False,
        "backend": backend,
        "device": device,
        "models": model_entries,
        "n_items": int(n_items),
        "temporal": jsonable(temporal),
        "output": jsonable(output),
        "spatials": spatials,
        "request_fingerprint": fingerprint,
        "prefetch": prefetch,
    }
    if manifest_path is not None:
        man["manifest_path"] = manifest_path
    if fmt == "netcdf":
        man["nc_path"] = array_path
        man["nc_variables"] = list(array_keys)
    else:
        man[f"{fmt}_path" if fmt == "zarr" else "npz_path"] = array_path
        man["zarr_arrays" if fmt == "zarr" else "npz_keys"] = list(array_keys)
    man["summary"] = {
        "total_models": len(model_entries),
        "failed_models": n_failed,
        "partial_models": n_partial,
        "ok_models": len(model_entries) - n_failed - n_partial,
    }
    man["completed_at"] = utc_timestamp()
    return man


def model_key(name: str) -> str:
    """Array-key form of a model name."""
    return sanitize_key(name)
