"""The environment of a request, checked once on the client before a cluster starts.

- the target: its folder can be created and written (not read-only, not
  under a file), and an existing target is of the right kind;
- the device: a GPU asked for exists when the work runs on this machine;
- the providers: credentials authenticate (``Provider.preflight``, e.g. one
  cheap Earth Engine call);
- the weights: every model that needs a checkpoint finds one, offline and
  without reading it (:func:`rs_embed_dask.models.weights.offline_probe`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError, SpecError

__all__ = [
    "check_device_available",
    "check_target_writable",
    "check_weights",
    "preflight_export",
    "preflight_providers",
]


def _writable_dir(path: Path) -> bool:
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    try:
        return not (os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:  # pragma: no cover - statvfs unsupported
        return True


def check_target_writable(target: str | os.PathLike[str], *, kind: str) -> None:
    """Refuse a target that cannot be written, before any byte is.

    Parameters
    ----------
    target : path
        The combined file (or zarr store) or the per-item folder.
    kind : {"file", "store", "folder"}
        What the target is: a file, a zarr store (a folder) or a per-item folder.

    Raises
    ------
    SpecError
        Naming the target and the folder that is read-only, or the file it is under.
    """
    p = Path(os.path.abspath(os.fspath(target)))
    if p.exists():
        is_dir = p.is_dir()
        if kind == "file" and is_dir:
            raise SpecError(f"target {str(p)!r} is a folder; the export writes a file there.")
        if kind in ("folder", "store") and not is_dir:
            raise SpecError(f"target {str(p)!r} is a file; the export writes a folder there.")
        if is_dir and not _writable_dir(p):
            raise SpecError(f"target folder {str(p)!r} is not writable (read-only or no permission).")
        if not is_dir and not os.access(p, os.W_OK):
            raise SpecError(f"target file {str(p)!r} is not writable (read-only or no permission).")
    anc = p.parent if (kind != "folder" or p.exists()) else p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise SpecError(
            f"target {str(p)!r} is under {str(anc)!r}, which is a file, not a folder; choose another target."
        )
    if not _writable_dir(anc):
        raise SpecError(
            f"target {str(p)!r} cannot be written: the folder {str(anc)!r} is read-only or not writable "
            "by this user; choose a writable folder."
        )


def _local_work(client: Any) -> bool:
    """Whether the workers run on this machine.

    True for a client of a ``LocalCluster``, and with no client given and
    none active (the export then starts an embedded local cluster).
    """
    try:
        from distributed import LocalCluster, default_client
    except ImportError:  # pragma: no cover - distributed is a core dependency
        return client is None
    if client is None:
        try:
            client = default_client()
        except ValueError:
            return True
    return isinstance(getattr(client, "cluster", None), LocalCluster)


def check_device_available(device: str) -> None:
    """Refuse a ``cuda``/``mps`` device this machine does not have (for work run here)."""
    dev = (device or "auto").strip().lower()
    if dev in ("auto", "cpu"):
        return
    try:
        import torch
    except ImportError:
        return
    if dev.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(dev.split(":", 1)[1]) if ":" in dev else 0
        if idx >= n:
            have = f"{n} CUDA device(s)" if n else "no CUDA device"
            raise ModelError(f"device={device!r}: this machine has {have}; use device='auto' or 'cpu'.")
    elif dev == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(f"device={device!r}: MPS is not available here; use device='auto' or 'cpu'.")


def preflight_providers(backends: Iterable[str], options: Any) -> None:
    """``Provider.preflight`` of each named provider (credentials, endpoints).

    A provider whose packages this process lacks (they may be installed on
    the workers only) is left to the workers.
    """
    from rs_embed_dask.core.errors import ProviderError
    from rs_embed_dask.core.registry import get_provider_class

    for b in dict.fromkeys(backends):
        if b == "auto":
            continue
        cls = get_provider_class(b)
        try:
            cls.check_available()
        except ProviderError:
            continue
        cls.preflight(options)


def check_weights(model: Any) -> None:
    """Refuse a model whose checkpoint is not present (offline, nothing read or downloaded).

    ``model`` is a :class:`~rs_embed_dask.resolve.ResolvedModel`; the family's
    lookup is :func:`rs_embed_dask.models.weights.locate_weights`.  Models
    without weights pass.
    """
    from rs_embed_dask.core.registry import get_model_class
    from rs_embed_dask.models.weights import locate_weights, offline_probe

    emb: Any = get_model_class(model.canonical)(model.config_dict)
    cfg = dict(getattr(emb, "model_config", None) or model.config_dict)
    with offline_probe():
        if locate_weights(emb, model.canonical, cfg) is not None:
            return
    w = cfg.get("weights")
    if isinstance(w, (str, os.PathLike)) and not Path(w).expanduser().exists():
        raise ModelError(f"model_config['weights'] for model {model.canonical!r} is {str(w)!r}, which does not exist.")


def preflight_export(plan: Any, client: Any = None, *, local: bool | None = None) -> None:
    """Every environment check of an export plan, before a cluster starts.

    Parameters
    ----------
    plan : ExportPlan
        The validated plan (:func:`rs_embed_dask.export.plan.build_plan`).
    client : distributed.Client, optional
        The client the export will run on.
    local : bool, optional
        Whether the workers run on this machine (default: no client given and
        none active); the device is then checked here.

    Raises
    ------
    TypeError
        ``client`` is not a ``distributed.Client``.
    SpecError
        The target cannot be written.
    ModelError
        The device is missing here, or a model's weights are not present.
    ProviderError
        A provider's credentials do not authenticate.
    """
    from rs_embed_dask.validation.args import check_client
    from rs_embed_dask.validation.models import request_backends

    check_client(client)
    if plan.out_file is not None:
        check_target_writable(plan.out_file, kind="store" if plan.fmt == "zarr" else "file")
    elif plan.out_dir is not None:
        check_target_writable(plan.out_dir, kind="folder")
    if local if local is not None else _local_work(client):
        check_device_available(plan.device)
    from rs_embed_dask.core.registry import get_model_class

    for m in plan.models:
        check_weights(m)
    # precomputed products that read through a provider (gse: Earth Engine) need its credentials too
    products = [getattr(get_model_class(m.canonical), "provider", None) for m in plan.models if m.is_precomputed]
    backends = [*request_backends(plan.models), *(p for p in products if isinstance(p, str))]
    preflight_providers(backends, plan.provider_options)
