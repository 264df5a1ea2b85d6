"""What a resumed export must share with the run it continues.

rs-embed's request fingerprint covers the models, their sensors and configs,
the temporal window, the output, the format and the input preparation.  It
leaves out what else changes the pixels or the numbers: the provider's
options (the synthetic world's ``seed``, an Earth Engine cloud mask) and the
weights a model reads.  A run killed with ``seed=0`` and resumed with
``seed=7`` would give a file whose first rows come from one world and the
rest from another.  The *resume identity* is all of it, kept as named fields
so that a mismatch can say what differs (``provider_options.seed: 0 -> 7``).

Provider options that change neither pixels nor numbers are left out:
latency, failure injection, concurrency caps, retries, credentials, logging
(:data:`RUNTIME_OPTIONS`, plus a provider class's own ``runtime_options``).
So a run with ``transient_failure_rate=0.2`` can be resumed with a healthy
provider, and its failed items are then retried.  Secrets are credentials
too: an option that
:func:`~rs_embed_dask.validation.secrets.is_secret_option` recognises by its
name (``hf_token``) or value (key material) is left out, so it is never
written to a store's identity record or the request fingerprint, not even
as a digest (a short one would give a weak password away).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.serialization import jsonable
from rs_embed_dask.validation.secrets import is_secret_option

__all__ = [
    "RUNTIME_OPTIONS",
    "check_resume_identity",
    "fingerprint_extras",
    "identity_diff",
    "resume_identity",
]

#: Provider options that never change the pixels of a successful fetch.
RUNTIME_OPTIONS = frozenset(
    {
        "latency_s",
        "failure_rate",
        "transient_failure_rate",
        "max_concurrency",
        "max_retries",
        "retry_backoff_s",
        "timeout",
        "timeout_s",
        "credentials_file",
        "project",
        "url",
        "max_request_bytes",
        "log",
        "verbose",
    }
)


def _runtime_options(backends: Iterable[str]) -> frozenset[str]:
    from rs_embed_dask.core.registry import get_provider_class

    out = set(RUNTIME_OPTIONS)
    for b in backends:
        try:
            out |= set(getattr(get_provider_class(b), "runtime_options", ()) or ())
        except Exception:  # a product's own source ("auto"), or no provider class
            continue
    return frozenset(out)


def _digest(value: Any) -> str:
    text = json.dumps(jsonable(value), sort_keys=True, default=str)
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:16]


def _provider_options(options: Mapping[str, Any], backends: Iterable[str]) -> dict[str, Any]:
    skip = _runtime_options(backends)
    out: dict[str, Any] = {}
    for key in sorted(options):
        if key in skip or is_secret_option(key, options[key]):
            continue
        out[key] = jsonable(options[key])
    return out


def _file_identity(path: str) -> dict[str, Any] | None:
    """Size and a digest of the first and last MiB of a local weights file (cheap for any size)."""
    try:
        size = os.path.getsize(path)
        h = hashlib.sha1()
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    except OSError:
        return None
    return {"size": size, "sha1_head_tail": h.hexdigest()}


def _weights(model: Any, describe: Mapping[str, Any] | None) -> Any:
    """Where a model's weights come from (its ``describe()["weights"]``) and, for a local file, its content."""
    source = (describe or {}).get("weights") if isinstance(describe, Mapping) else None
    cfg_path = model.config_dict.get("weights")
    out: dict[str, Any] = {"source": jsonable(source)}
    if isinstance(cfg_path, (str, os.PathLike)) and os.path.isfile(cfg_path):
        out["file"] = _file_identity(os.fspath(cfg_path))
    env_var = source.get("env_var") if isinstance(source, Mapping) else None
    env_path = os.environ.get(env_var) if isinstance(env_var, str) else None
    if not cfg_path and env_path and os.path.isfile(env_path):  # weights named by the family's variable
        out["file"] = _file_identity(env_path)
    return out


def fingerprint_extras(models: Iterable[Any], provider_options: Mapping[str, Any]) -> dict[str, Any]:
    """What the request fingerprint adds to rs-embed's payload: pixel-changing provider options.

    Empty (so the fingerprint is rs-embed's) when there are none; local weights
    files are added by content.  A finished export is only returned as done
    (``resume=True``) when these match too.
    """
    models = list(models)
    out: dict[str, Any] = {}
    opts = _provider_options(provider_options, {m.backend for m in models})
    if opts:
        out["provider_options"] = opts
    files = {}
    for m in models:
        path = m.config_dict.get("weights")
        if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
            files[m.name] = _file_identity(os.fspath(path))
    if files:
        out["weights_files"] = files
    return out


def resume_identity(plan: Any, statics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fields of a request that a resume must match (JSON-ready).

    Parameters
    ----------
    plan : ExportPlan
        The validated request.
    statics : list of dict, optional
        ``{"name", "describe"}`` per model (the engine's static records),
        used for the weights' source.
    """
    desc = {s["name"]: s.get("describe") for s in statics or []}
    backends = {m.backend for m in plan.models}
    ident: dict[str, Any] = {
        "models": {
            m.name: {
                "backend": m.backend,
                "sensor": jsonable(m.sensor),
                "model_config": jsonable(m.config_dict or None),
                "weights": _weights(m, desc.get(m.name)),
            }
            for m in plan.models
        },
        "provider_options": _provider_options(plan.provider_options or {}, backends),
        "temporal": jsonable(plan.temporal),
        "output": jsonable(plan.output),
        "format": plan.fmt,
        "save_inputs": bool(plan.config.save_inputs),
        "save_embeddings": bool(plan.config.save_embeddings),
        "input_prep": jsonable(plan.input_prep),
    }
    if plan.layout.value == "combined" and plan.spatials_in_fingerprint:
        ident["spatials"] = f"{len(plan.spatials)} ROIs, " + _digest([jsonable(s) for s in plan.spatials])
    return ident


_ABSENT = object()


def _show(value: Any) -> str:
    text = "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _diff(a: Any, b: Any, prefix: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            _diff(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}.{key}" if prefix else str(key), out)
    elif a != b:
        out.append(f"{prefix}: {_show(a)} -> {_show(b)}")


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"<field>: <old> -> <new>"`` for every field that differs (dotted paths, sorted)."""
    out: list[str] = []
    _diff(jsonable(dict(old)), jsonable(dict(new)), "", out)
    return out


def check_resume_identity(
    stored: Any,
    current: Mapping[str, Any],
    *,
    where: str,
    stored_fingerprint: Any = None,
    fingerprint: str = "",
) -> None:
    """Raise :class:`SpecError` listing what differs between a stored and the current identity.

    ``stored`` may be ``None`` (written before identities were recorded): then
    the request fingerprints decide, and a mismatch is refused without details.
    """
    if isinstance(stored, Mapping):
        diffs = identity_diff(stored, current)
    elif stored_fingerprint is not None and stored_fingerprint != fingerprint:
        diffs = [f"request_fingerprint: {stored_fingerprint} -> {fingerprint} (no details recorded)"]
    else:
        diffs = []
    if diffs:
        shown = diffs[:20] + ([f"... and {len(diffs) - 20} more"] if len(diffs) > 20 else [])
        raise SpecError(
            f"resume=True, but {where} was written by a different export request; resuming would mix "
            "results of two requests. What differs (stored -> requested):\n  "
            + "\n  ".join(shown)
            + "\nRepeat the original request to resume it, or pass ExportConfig(resume=False) to discard "
            "what is there and start fresh."
        )
