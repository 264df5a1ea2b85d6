"""JSON conversion, array keys and hashes in rs-embed's exact conventions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["array_sha1", "jsonable", "request_fingerprint", "sanitize_key", "utc_timestamp"]

_KEY_RE = re.compile(r"[^0-9A-Za-z_]+")


def sanitize_key(s: str) -> str:
    """rs-embed's array-key rule: runs outside ``[0-9A-Za-z_]`` -> ``_``, collapse, strip."""
    out = _KEY_RE.sub("_", str(s))
    out = re.sub(r"_+", "_", out).strip("_")
    return out or "item"


def utc_timestamp() -> str:
    """UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (rs-embed writes ``+00:00Z``; we write valid ISO 8601)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def array_sha1(arr: np.ndarray) -> str:
    """SHA-1 over ``str(dtype)``, ``str(shape)`` and the first 2,000,000 bytes (rs-embed)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha1()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.reshape(-1).view(np.uint8)[:2_000_000].tobytes())
    return h.hexdigest()


def jsonable(obj: Any) -> Any:
    """Turn specs, numpy values and arrays into JSON-friendly values (rs-embed's rules)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return None
        return obj
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        finite = obj[np.isfinite(obj)] if obj.dtype.kind == "f" else obj
        return {
            "__ndarray__": True,
            "dtype": str(obj.dtype),
            "shape": list(obj.shape),
            "min": jsonable(finite.min()) if finite.size else None,
            "max": jsonable(finite.max()) if finite.size else None,
        }
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return jsonable(obj.to_dict())
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "dims") and hasattr(obj, "values"):  # xarray.DataArray
        return {"__xarray__": True, "dims": list(obj.dims), "shape": list(np.shape(obj.values))}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return repr(obj)


def request_fingerprint(payload: dict[str, Any]) -> str:
    """SHA-1 of the sorted JSON of a request payload (stable across processes)."""
    return hashlib.sha1(json.dumps(jsonable(payload), sort_keys=True).encode()).hexdigest()
