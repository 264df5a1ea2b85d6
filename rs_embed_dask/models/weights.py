"""Where model weights come from, and how they are read.

Every family resolves its checkpoint the same way, first match wins:

1. ``model_config["weights"]``: a file, or a folder holding one of the
   family's file names;
2. the family's environment variable (e.g. ``RS_EMBED_REMOTECLIP_WEIGHTS``),
   with the same meaning;
3. the Hugging Face hub through ``huggingface_hub.hf_hub_download`` at a
   pinned revision: the local cache first, then a download unless
   ``HF_HUB_OFFLINE`` is set or the hub cannot be reached (a quick connect
   probe, once per process: :mod:`rs_embed_dask.models.hub_reach`), in which
   case the lookup fails at once instead of retrying.

When none gives a file the error says where it looked and how to provide the
weights.  Checkpoints are read with safetensors or ``torch.load(...,
weights_only=True)``: a pickle is never executed.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = ["find_weights", "load_state_dict", "locate_weights", "offline_probe", "strip_prefix"]

#: Set by :func:`offline_probe`: the hub is looked up in the local cache only.
_PROBE: contextvars.ContextVar[bool] = contextvars.ContextVar("rs_embed_weights_probe", default=False)
#: What :func:`find_weights` returns under :func:`offline_probe` for a file the worker will download.
DOWNLOAD_PENDING = Path("<downloaded on first use>")


@contextlib.contextmanager
def offline_probe() -> Iterator[None]:
    """Make :func:`find_weights` a cheap, offline presence check (the client's pre-flight).

    Inside the block the hub is consulted through its local cache only: a
    cached file is returned; a missing one raises the usual :class:`ModelError`
    when ``$HF_HUB_OFFLINE`` is set (nothing could fetch it) and otherwise
    returns :data:`DOWNLOAD_PENDING` (the worker downloads it).
    """
    token = _PROBE.set(True)
    try:
        yield
    finally:
        _PROBE.reset(token)


def _hub_cached(repo: str, filename: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    from rs_embed_dask.models.hub_reach import hub_cache_dir

    hit = try_to_load_from_cache(repo, filename, revision=revision, cache_dir=hub_cache_dir())
    return Path(hit) if isinstance(hit, str) else None

_CONTAINER_KEYS = ("state_dict", "model", "model_state", "teacher", "module")


def _in_folder(folder: Path, filenames: Sequence[str]) -> Path | None:
    for name in filenames:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _local(value: str | os.PathLike[str], filenames: Sequence[str], source: str, model: str) -> Path:
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = _in_folder(path, filenames)
        if found is not None:
            return found
        raise ModelError(
            f"{source} for model {model!r} is the folder {str(path)!r}, which holds none of "
            f"{list(filenames)}."
        )
    raise ModelError(f"{source} for model {model!r} is {str(path)!r}, which does not exist.")


def find_weights(
    model: str,
    *,
    config: Mapping[str, Any],
    env_var: str,
    filenames: Sequence[str],
    hf_repo: str | None = None,
    hf_filename: str | None = None,
    revision: str | None = None,
) -> Path:
    """The local path of ``model``'s checkpoint.

    Parameters
    ----------
    model : str
        Model id, for messages.
    config : mapping
        The model's ``model_config``; its ``"weights"`` entry wins.
    env_var : str
        The family's environment variable.
    filenames : sequence of str
        File names looked for inside a folder (the first found is used).
    hf_repo, hf_filename, revision : str, optional
        The Hugging Face hub file and its pinned revision (commit hash).

    Raises
    ------
    ModelError
        When no source gives a file; the message lists each place looked at
        and how to provide the weights.
    """
    if config.get("weights"):
        return _local(config["weights"], filenames, "model_config['weights']", model)
    if os.environ.get(env_var):
        return _local(os.environ[env_var], filenames, f"${env_var}", model)
    looked = ["model_config['weights'] (unset)", f"${env_var} (unset)"]
    if hf_repo and hf_filename:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            looked.append("the Hugging Face hub (huggingface_hub is not installed)")
        else:
            from rs_embed_dask.models.hub_reach import (
                hub_cache_dir,
                hub_endpoint,
                hub_offline_env,
                hub_reachable,
            )

            offline = hub_offline_env()
            if _PROBE.get():
                cached = _hub_cached(hf_repo, hf_filename, revision)
                if cached is not None:
                    return cached
                if not offline:
                    return DOWNLOAD_PENDING
            # offline or no network: the cache only, at once (a download would retry for ~25 s)
            why = "$HF_HUB_OFFLINE is set" if offline else (None if hub_reachable() else f"{hub_endpoint()} cannot be reached")
            if why is not None:
                cached = _hub_cached(hf_repo, hf_filename, revision)
                if cached is not None:
                    return cached
                looked.append(
                    f"the Hugging Face cache {hub_cache_dir()!r} for {hf_repo}/{hf_filename}@{revision or 'main'} "
                    f"(not there, or set $HF_HUB_CACHE / $HF_HOME to another cache; the hub was not asked: {why})"
                )
            else:
                try:
                    return Path(hf_hub_download(hf_repo, hf_filename, revision=revision))
                except Exception as exc:  # not cached, gated, unknown revision
                    looked.append(
                        f"the Hugging Face hub {hf_repo}/{hf_filename}@{revision or 'main'} "
                        f"({type(exc).__name__}: {exc})"
                    )
    raise ModelError(
        f"No weights found for model {model!r}. Looked at: " + "; ".join(looked) + ". "
        f"Provide them with weights='/path/to/checkpoint' (a keyword of get_embedding and Model; "
        f"model_config={{'weights': ...}} in ExportModelRequest and job files) or "
        f"{env_var}=/path/to/checkpoint (a file, or a folder holding one of {list(filenames)})"
        + (
            f", or download them once with network access: "
            f"huggingface-cli download {hf_repo} {hf_filename}"
            + (f" --revision {revision}" if revision else "")
            if hf_repo and hf_filename
            else ""
        )
        + "."
    )


def locate_weights(emb: Any, name: str, config: Mapping[str, Any]) -> Any:
    """The checkpoint file(s) of embedder ``emb`` as its family looks them up; ``None``: it names none.

    A family locates weights through a ``hub`` with ``find``, a
    ``checkpoint()`` method, or the ``hf_repo`` / ``filename`` attributes and
    ``describe()["weights_env"]``.  Under :func:`offline_probe` this is the
    client's cheap presence check (the export preflight, ``rs-embed-dask models``).
    """
    hub = getattr(emb, "hub", None)
    if hub is not None and callable(getattr(hub, "find", None)):
        return hub.find(name, config)
    if callable(getattr(emb, "checkpoint", None)):
        return emb.checkpoint()  # a path, or a tuple of them (olmoearth: config and weights)
    repo, filename = getattr(emb, "hf_repo", None), getattr(emb, "filename", None)
    try:
        env_var = (emb.describe() or {}).get("weights_env")
    except Exception:
        env_var = None
    if isinstance(repo, str) and isinstance(filename, str) and isinstance(env_var, str):
        return find_weights(
            name, config=config, env_var=env_var, filenames=[filename], hf_repo=repo, hf_filename=filename
        )
    return None


def load_state_dict(path: str | os.PathLike[str], *, key: str | None = None) -> dict[str, Any]:
    """Read a checkpoint's tensors without executing pickles.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location="cpu", weights_only=True)``.  A checkpoint that
    wraps its tensors (``{"state_dict": ...}``, ``{"model": ...}``, ...) is
    unwrapped, ``key`` first when given.
    """
    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            import torch

            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"Could not read the checkpoint {str(p)!r}: {exc!r}") from exc
    for k in ((key,) if key else ()) + _CONTAINER_KEYS:
        if isinstance(obj, Mapping) and k in obj and isinstance(obj[k], Mapping):
            obj = obj[k]
            break
    if not isinstance(obj, Mapping):
        raise ModelError(f"The checkpoint {str(p)!r} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def strip_prefix(state: Mapping[str, Any], *prefixes: str) -> dict[str, Any]:
    """``state`` with the first matching prefix removed from every key that has one."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre) :]
                break
        out[k] = v
    return out
