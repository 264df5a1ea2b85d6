"""Whether the Hugging Face hub can be reached, decided quickly and once per process.

Offline, ``huggingface_hub`` retries a download for tens of seconds before it
gives up.  :func:`hub_reachable` opens one TCP connection to the hub's
endpoint (``$HF_ENDPOINT``, or the proxy that would carry the request) with a
short timeout, in a background thread so that a slow name lookup cannot hold
the caller either, and remembers the answer for the rest of the process.
:func:`hub_offline` adds ``$HF_HUB_OFFLINE``: when it says offline, the weights
lookup reads the local cache only and fails at once.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

__all__ = [
    "PROBE_TIMEOUT_ENV",
    "hub_cache_dir",
    "hub_endpoint",
    "hub_offline",
    "hub_offline_env",
    "hub_reachable",
    "reset_hub_probe",
]

#: Seconds the connect probe waits (default 1.5).
PROBE_TIMEOUT_ENV = "RS_EMBED_HUB_PROBE_TIMEOUT"
_DEFAULT_TIMEOUT_S = 1.5
_FALSE = ("", "0", "false", "no", "off")

_lock = threading.Lock()
_cache: dict[tuple[str, int], bool] = {}


def hub_endpoint() -> str:
    """The hub's base URL: ``$HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_cache_dir() -> str:
    """The folder the hub's files are cached in (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, or ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(os.environ["HUGGINGFACE_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline_env() -> bool:
    """Whether ``$HF_HUB_OFFLINE`` (or ``$TRANSFORMERS_OFFLINE``) asks for offline mode."""
    return any(os.environ.get(k, "").strip().lower() not in _FALSE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _target(endpoint: str) -> tuple[str, int]:
    """The host and port a request to ``endpoint`` connects to first (its proxy when one is set)."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme or "https"
    host = parts.hostname or ""
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    bypass = any(
        e.strip() == "*" or (e.strip() and host.endswith(e.strip().lstrip("."))) for e in no_proxy.split(",")
    )
    proxy = None if bypass else (os.environ.get(f"{scheme.upper()}_PROXY") or os.environ.get(f"{scheme}_proxy"))
    if proxy:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
    return host, parts.port or (443 if scheme == "https" else 80)


def _probe_timeout() -> float:
    try:
        return max(0.05, float(os.environ.get(PROBE_TIMEOUT_ENV, _DEFAULT_TIMEOUT_S)))
    except ValueError:
        return _DEFAULT_TIMEOUT_S


def _connects(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # the name lookup inside create_connection ignores the timeout: bound the whole attempt
    t = threading.Thread(target=attempt, name="rs-embed-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.25)
    return bool(result and result[0])


def hub_reachable(*, timeout: float | None = None) -> bool:
    """Whether a TCP connection to the hub's endpoint opens (decided once per process and endpoint).

    Parameters
    ----------
    timeout : float, optional
        Seconds to wait (default ``$RS_EMBED_HUB_PROBE_TIMEOUT`` or 1.5).

    Returns
    -------
    bool
        ``False`` when the endpoint (or its proxy) refuses, times out or
        cannot be resolved.
    """
    key = _target(hub_endpoint())
    with _lock:
        if key in _cache:
            return _cache[key]
    ok = bool(key[0]) and _connects(key[0], key[1], _probe_timeout() if timeout is None else timeout)
    with _lock:
        _cache[key] = ok
    return ok


def hub_offline() -> bool:
    """Whether the hub must not be contacted: ``$HF_HUB_OFFLINE`` is set or the hub cannot be reached."""
    return hub_offline_env() or not hub_reachable()


def reset_hub_probe() -> None:
    """Forget the remembered answers of :func:`hub_reachable` (e.g. after the network came back)."""
    with _lock:
        _cache.clear()
