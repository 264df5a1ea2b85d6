"""What ``load_export`` checks before it trusts an export (internal).

A manifest is validated (types, and sizes against what the files hold, before
anything of that size is allocated); the members, chunks and per-item files
it promises must exist with ``n_items`` rows; statuses must agree with the
arrays.  Each problem is an :class:`~rs_embed_dask.core.errors.ExportIntegrityError`
naming the file and what is wrong.  The loaders call :meth:`Damage.report`
for each: with ``strict=True`` it raises at once; with ``strict=False`` it
warns and the loader marks the items concerned failed (their error text
starts with ``"damaged export: "``) and carries on with what is intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from rs_embed_dask.core.errors import ExportIntegrityError
from rs_embed_dask.export.load_io import warn_load

__all__ = [
    "READ_ERRORS",
    "Damage",
    "check_combined_manifest",
    "check_item_manifest",
    "check_n_items",
    "load_manifest_json",
    "reading",
    "zarr_chunk_indices",
]

#: Exceptions that mean "this file's bytes are damaged" when decoding an export file.
READ_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    KeyError,
    ValueError,
    RuntimeError,  # zstd / blosc decompression errors of numcodecs
    TypeError,
)
_STATUSES = ("ok", "partial", "failed")
#: Error-text prefix of items marked failed because the export is damaged (strict=False).
DAMAGED = "damaged export: "


class Damage:
    """Collects integrity problems: raise (strict) or warn and carry on."""

    def __init__(self, strict: bool) -> None:
        self.strict = bool(strict)
        self.problems: list[ExportIntegrityError] = []

    def report(self, path: str, problem: str) -> str:
        """Raise (strict) or warn; return the error text for the items concerned."""
        err = ExportIntegrityError(path, problem)
        if self.strict:
            raise err
        self.problems.append(err)
        warn_load(f"damaged export, loaded without it (strict=False): {err}")
        return DAMAGED + str(err)


@contextlib.contextmanager
def reading(path: str, what: str) -> Iterator[None]:
    """Turn a decoding error while reading ``what`` of ``path`` into an :class:`ExportIntegrityError`."""
    try:
        yield
    except ExportIntegrityError:
        raise
    except FileNotFoundError as exc:
        raise ExportIntegrityError(path, f"{what}: the file is missing ({exc})") from exc
    except READ_ERRORS as exc:
        raise ExportIntegrityError(
            path, f"{what} cannot be read, the file is truncated or damaged: {exc!r}"
        ) from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(i) for i in v)


def check_n_items(value: Any, path: str, *, at_most: int, why: str) -> int:
    """``n_items`` as an int in ``[0, at_most]`` (the bound comes from what the files hold)."""
    if not _is_int(value) or value < 0:
        raise ExportIntegrityError(
            path, f"manifest field 'n_items' must be an integer >= 0; got {value!r} ({type(value).__name__})"
        )
    if value > at_most:
        raise ExportIntegrityError(path, f"manifest field 'n_items' is {value}, but {why} ({at_most})")
    return int(value)


def _check_ref(ref: Any, path: str, where: str) -> None:
    if ref is None:
        return
    if not isinstance(ref, dict):
        raise ExportIntegrityError(path, f"{where} must be an object or null; got {type(ref).__name__}")
    if "npz_key" in ref and not isinstance(ref["npz_key"], str):
        raise ExportIntegrityError(path, f"{where}.npz_key must be a string; got {ref['npz_key']!r}")
    keys = ref.get("npz_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ExportIntegrityError(path, f"{where}.npz_keys must be a list of strings")
    if ref.get("indices") is not None and not _int_list(ref["indices"]):
        raise ExportIntegrityError(path, f"{where}.indices must be a list of integers")
    if ref.get("shape") is not None and not _int_list(ref["shape"]):
        raise ExportIntegrityError(path, f"{where}.shape must be a list of integers")


def check_combined_manifest(man: Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    """Validate the types of a combined manifest; return its model entries."""
    models = man.get("models", [])
    if not isinstance(models, list):
        raise ExportIntegrityError(
            path, f"manifest field 'models' must be a list of model entries; got {type(models).__name__}"
        )
    sp = man.get("spatials")
    if sp is not None and not isinstance(sp, (list, dict)):
        raise ExportIntegrityError(path, f"manifest field 'spatials' must be a list; got {type(sp).__name__}")
    for j, e in enumerate(models):
        where = f"models[{j}]"
        if not isinstance(e, dict) or not isinstance(e.get("model"), str) or not e["model"]:
            raise ExportIntegrityError(path, f"{where} must be an object with a non-empty 'model' name")
        st = e.get("status", "failed")
        if st not in _STATUSES:
            raise ExportIntegrityError(path, f"{where}.status must be one of {list(_STATUSES)}; got {st!r}")
        if e.get("failed_indices") is not None and not _int_list(e["failed_indices"]):
            raise ExportIntegrityError(path, f"{where}.failed_indices must be a list of integers")
        if e.get("errors_by_index") is not None and not isinstance(e["errors_by_index"], dict):
            raise ExportIntegrityError(path, f"{where}.errors_by_index must be an object")
        if st == "ok" and e.get("failed_indices"):
            raise ExportIntegrityError(
                path, f"{where} has status 'ok' but lists failed_indices {e['failed_indices'][:10]}"
            )
        metas = e.get("metas")
        if metas is not None and not isinstance(metas, (list, dict)):
            raise ExportIntegrityError(path, f"{where}.metas must be a list")
        for k in ("embeddings", "inputs"):
            _check_ref(e.get(k), path, f"{where}.{k}")
    return models


def check_item_manifest(man: Mapping[str, Any], path: str) -> None:
    """Validate the types of one per-item manifest."""
    models = man.get("models", [])
    if not isinstance(models, list):
        raise ExportIntegrityError(
            path, f"manifest field 'models' must be a list of model entries; got {type(models).__name__}"
        )
    for j, e in enumerate(models):
        if not isinstance(e, dict) or not isinstance(e.get("model"), str):
            raise ExportIntegrityError(path, f"models[{j}] must be an object with a 'model' name")
        if e.get("status", "failed") not in _STATUSES:
            raise ExportIntegrityError(path, f"models[{j}].status must be one of {list(_STATUSES)}")
        for k in ("embedding", "input"):
            ref = e.get(k)
            if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("npz_key", ""), str)):
                raise ExportIntegrityError(
                    path, f"models[{j}].{k} must be an object with a string 'npz_key' or null"
                )
    keys = man.get("npz_keys", man.get("nc_variables"))
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ExportIntegrityError(path, "manifest field 'npz_keys' must be a list of strings")


def zarr_chunk_indices(array_dir: str) -> set[int] | None:
    """Indices along axis 0 of the chunks present on disk, or ``None`` when the layout is not known."""
    try:
        with open(os.path.join(array_dir, "zarr.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    enc = meta.get("chunk_key_encoding") or {}
    sep = (enc.get("configuration") or {}).get("separator", "/")
    codecs = [c.get("name") for c in meta.get("codecs") or [] if isinstance(c, dict)]
    if enc.get("name") != "default" or sep != "/" or "sharding_indexed" in codecs:
        return None
    cdir = os.path.join(array_dir, "c")
    if not os.path.isdir(cdir):
        return set()
    return {int(name) for name in os.listdir(cdir) if name.isdigit()}


def load_manifest_json(json_path: str) -> dict[str, Any]:
    """A manifest file as a dict (:class:`ExportIntegrityError` when unreadable or not an object)."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportIntegrityError(json_path, f"Failed to load manifest {json_path!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportIntegrityError(json_path, f"Manifest {json_path!r} is not a JSON object.")
    return data
