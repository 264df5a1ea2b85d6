"""Credentials travel as paths or names, never as their contents.

A service-account key pasted where a path belongs (``credentials_file=``)
would otherwise be pickled into the task graph, shipped to every worker and
echoed by error messages and logs.  :func:`looks_like_secret` recognises key
material without keeping it; :func:`shown` is what messages may print of a
value.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SECRET_OPTION_NAMES", "looks_like_secret", "shown"]

#: Option names that can only carry a secret's contents; refused for every provider.
SECRET_OPTION_NAMES: frozenset[str] = frozenset(
    {
        "credentials", "key_data", "private_key", "token", "access_token", "refresh_token",
        "password", "secret", "client_secret", "api_key",
    }
)  # fmt: skip

# quoted JSON field names: a path such as ``keys/client_secret.json`` is not a secret
_MARKERS = ("-----begin", '"private_key"', '"client_secret"', '"refresh_token"', '"type"')
#: Longer than any path a file system accepts (PATH_MAX).
_MAX_PATH_CHARS = 4096


def looks_like_secret(value: Any) -> bool:
    """Whether ``value`` looks like key material rather than a path or a name.

    True for PEM blocks, JSON objects (a pasted key file), text with line
    breaks or with the fields of a Google key, and strings longer than any
    path.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8", "replace")
        except Exception:  # pragma: no cover - decode with "replace" does not raise
            return True
    if not isinstance(value, str):
        return False
    text = value.strip()
    if len(text) > _MAX_PATH_CHARS or "\n" in text or "\r" in text:
        return True
    if text.startswith("{") or text.startswith("["):
        return True
    low = text.lower()
    return any(m in low for m in _MARKERS)


def shown(value: Any) -> str:
    """``repr(value)`` for messages, with key material replaced by a placeholder."""
    if looks_like_secret(value):
        return f"<{len(value)} characters withheld>"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
