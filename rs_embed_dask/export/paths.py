"""Paths that mean the same on every worker.

Workers do not share the client's working folder: a ``dask worker`` started
elsewhere, a jobqueue job or ``rs-embed-dask cluster local`` run from another
folder resolve ``"out/run.npz"`` against their own.  So every path of a
request (the target, local provider files, weights and data folders in
``model_config``) is made absolute here, in the client, before any task is
built; and :func:`check_workers_see` asks the workers of a cluster that is not
the embedded one whether they see the target's folder at all.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from rs_embed_dask.core.errors import SpecError

__all__ = [
    "MODEL_PATH_KEYS",
    "absolute",
    "absolute_model_config",
    "absolute_provider_options",
    "check_workers_see",
]

#: ``model_config`` keys whose values are files or folders (weights, product folders, caches).
MODEL_PATH_KEYS = frozenset({"weights", "path", "data_dir", "registry_dir", "cache_dir"})


def _is_url(value: str) -> bool:
    return "://" in value or value.startswith(("gs:", "s3:", "http:", "https:"))


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, made absolute against this process's folder (URLs unchanged)."""
    p = os.fspath(path)
    if _is_url(p):
        return p
    return os.path.abspath(os.path.expanduser(p))


def _absolute_value(value: Any) -> Any:
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        return absolute(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_absolute_value(v) for v in value)
    return value


def absolute_model_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``config`` with the path keys (:data:`MODEL_PATH_KEYS`) absolute."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        return config  # refused later with the field named
    return {k: (_absolute_value(v) if k in MODEL_PATH_KEYS and v is not None else v) for k, v in config.items()}


def absolute_provider_options(backends: Iterable[str], options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``options`` with every option the providers declare a path (``ProviderOption.path``) absolute."""
    if options is None or not isinstance(options, Mapping):
        return options
    from rs_embed_dask.core.registry import get_provider_class

    path_keys: set[str] = set()
    for b in set(backends):
        if b == "auto":
            continue
        try:
            specs = get_provider_class(b).option_specs or ()
        except Exception:  # an unknown provider is refused by the validation that follows
            continue
        path_keys.update(s.name for s in specs if getattr(s, "path", False))
    return {k: (_absolute_value(v) if k in path_keys and v is not None else v) for k, v in options.items()}


def _probe_exists(path: str) -> bool:
    return os.path.exists(path)


def check_workers_see(client: Any, folder: str, *, what: str) -> None:
    """Refuse a target folder the workers of ``client`` cannot see (a client-local folder, remote workers).

    A probe file is written in ``folder`` here and every worker is asked, in
    one ``client.run`` round trip, whether it exists there.  Run only for
    clusters other than the embedded local one.

    Raises
    ------
    SpecError
        Naming the folder and the workers that do not see it.
    """
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".rs-embed-dask-probe-{uuid.uuid4().hex[:12]}")
    with open(probe, "wb"):
        pass
    try:
        seen = client.run(_probe_exists, probe)
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
    blind = sorted(w for w, ok in (seen or {}).items() if not ok)
    if blind:
        raise SpecError(
            f"{what} {folder!r} is not visible to the workers {blind[:3]}"
            f"{' and others' if len(blind) > 3 else ''}: they run on other machines or in other "
            "containers. Write to storage every worker mounts at the same path (a shared file system), "
            "or run the workers where this folder is."
        )
