"""Checks of plain mappings read from a file (YAML job files), with messages that name the field.

Every helper raises through an :class:`Err`, which prefixes the message with
the file and the field path (``models[1].model_config.variant``), so an error
in a job file says where it is and what is allowed there.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import RSEmbedError, SpecError

__all__ = ["Err", "keys", "non_empty_list", "number", "path_field", "spec_from", "validated"]


class Err:
    """Builds exceptions whose message starts with ``FILE: field.path:``.

    Parameters
    ----------
    source : str
        The file (or a label such as ``<job>``) the fields come from.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, path: str, msg: str, cls: type[Exception] = SpecError) -> Exception:
        where = f"{self.source}: {path}" if path else self.source
        return cls(f"{where}: {msg}")


def keys(err: Err, d: Any, path: str, allowed: Iterable[str], *, required: Iterable[str] = ()) -> dict[str, Any]:
    """``d`` as a dict, after checking it is a mapping with only ``allowed`` keys and every ``required`` one."""
    allowed = list(allowed)
    if not isinstance(d, Mapping):
        raise err(path, f"expected a mapping with keys {allowed}; got {type(d).__name__} {d!r}.")
    for k in d:
        if k not in allowed:
            raise err(f"{path}.{k}" if path else str(k), f"unknown key; allowed keys: {allowed}.")
    for k in required:
        if k not in d:
            raise err(path, f"missing required key {k!r}; keys: {allowed}.")
    return dict(d)


def number(err: Err, v: Any, path: str, *, positive: bool = False, minimum: float | None = None) -> float:
    """``v`` as a float (booleans refused), optionally ``> 0`` or ``>= minimum``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise err(path, f"expected a number; got {v!r}.")
    if positive and not v > 0:
        raise err(path, f"must be > 0; got {v!r}.")
    if minimum is not None and v < minimum:
        raise err(path, f"must be >= {minimum}; got {v!r}.")
    return float(v)


def spec_from(err: Err, cls: type, d: Any, path: str) -> Any:
    """A frozen spec dataclass ``cls`` built from a mapping of its fields, and validated."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kw = keys(err, d, path, names)
    try:
        obj = cls(**kw)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except TypeError as exc:
        raise err(path, f"{exc}; fields: {names}.") from exc
    except RSEmbedError as exc:
        raise err(path, str(exc), type(exc)) from exc
    return obj


def non_empty_list(err: Err, v: Any, path: str) -> list[Any]:
    """``v``, which must be a non-empty list."""
    if not isinstance(v, list) or not v:
        raise err(path, f"expected a non-empty list; got {v!r}.")
    return v


def validated(err: Err, spec: Any, path: str) -> Any:
    """``spec`` after its ``validate()``, its error re-raised under the field path."""
    try:
        spec.validate()
    except RSEmbedError as exc:
        raise err(path, str(exc), type(exc)) from exc
    return spec


def path_field(err: Err, v: Any, path: str, base: Path, *, must_exist: bool = False) -> str:
    """``v`` as an absolute path (``~`` and ``$VARS`` expanded, relative to ``base``)."""
    if not isinstance(v, str) or not v.strip():
        raise err(path, f"expected a path; got {v!r}.")
    p = Path(os.path.expandvars(v)).expanduser()
    p = p if p.is_absolute() else base / p
    if must_exist and not p.exists():
        raise err(path, f"{str(p)!r} does not exist.")
    return str(p)
