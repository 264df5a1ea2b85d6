"""Types and values of the public arguments shared by every entry point.

Each check raises :class:`TypeError` (wrong type) or the rs-embed exception
(wrong value) with a message naming the argument and what is allowed, so
``backend=123`` or ``client="x"`` fail at the call instead of as an
``AttributeError`` deep inside the engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.validation.options import check_option_mapping
from rs_embed_dask.validation.secrets import shown

__all__ = [
    "DEVICES",
    "check_client",
    "check_common",
    "check_device",
    "check_model_requests",
    "check_names",
    "check_optional_str",
]

#: Values ``device=`` accepts (``cuda:<index>`` too).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_optional_str(field: str, value: Any, what: str) -> None:
    """:class:`TypeError` unless ``value`` is ``None`` or a ``str``."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} must be {what} (a str); got {type(value).__name__} {shown(value)}.")


def check_device(device: Any) -> str:
    """The normalised ``device`` (``None`` is ``"auto"``).

    Raises
    ------
    TypeError
        Not a string.
    ModelError
        Not one of ``auto``, ``cpu``, ``cuda``, ``cuda:<index>``, ``mps``.
    """
    check_optional_str("device", device, "a device name")
    dev = (device or "auto").strip().lower() or "auto"
    if not _DEVICE_RE.match(dev):
        raise ModelError(f"device must be one of {list(DEVICES)} or 'cuda:<index>'; got {device!r}.")
    return dev


def check_client(client: Any) -> None:
    """:class:`TypeError` unless ``client`` is ``None`` or a ``distributed.Client``."""
    if client is None:
        return
    from distributed import Client

    if not isinstance(client, Client):
        hint = " (wrap a cluster as distributed.Client(cluster))" if hasattr(client, "scheduler_address") else ""
        raise TypeError(f"client must be a distributed.Client or None; got {type(client).__name__}{hint}.")


def check_names(names: Any, field: str = "names") -> None:
    """:class:`TypeError` unless ``names`` is ``None`` or a list/tuple of str (a str is not a list of names)."""
    if names is None:
        return
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(
            f"{field} must be a list of file names, one per ROI; got {type(names).__name__} {shown(names)}."
        )
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"{field} entries must be str; got {type(bad[0]).__name__} {shown(bad[0])}.")


def check_common(
    *,
    backend: Any,
    device: Any,
    modality: Any = None,
    provider_options: Any = None,
    per_model_sensors: Any = None,
) -> None:
    """Types of the arguments every entry point shares (values are checked where they are resolved)."""
    check_optional_str("backend", backend, "a provider name such as 'auto' or 'synthetic'")
    check_device(device)
    check_optional_str("modality", modality, "a modality name such as 's2'")
    check_option_mapping(provider_options)
    if per_model_sensors is not None and not isinstance(per_model_sensors, Mapping):
        raise TypeError(
            f"per_model_sensors must be a dict of model name to SensorSpec; got {type(per_model_sensors).__name__}."
        )


def check_model_requests(requests: Sequence[Any]) -> None:
    """Types of each :class:`~rs_embed_dask.ExportModelRequest`'s fields."""
    for i, r in enumerate(requests):
        if not isinstance(r.name, str) or not r.name.strip():
            raise TypeError(f"models[{i}].name must be a model name (str); got {type(r.name).__name__} {shown(r.name)}.")
        if r.model_config is not None and not isinstance(r.model_config, Mapping):
            raise TypeError(
                f"models[{i}].model_config must be a dict of model options; got {type(r.model_config).__name__}."
            )
        check_optional_str(f"models[{i}].modality", r.modality, "a modality name")
