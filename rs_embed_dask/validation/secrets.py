"""Credentials travel as paths or names, never as their contents.

A service-account key pasted where a path belongs (``credentials_file=``)
would otherwise be pickled into the task graph, shipped to every worker and
echoed by error messages and logs.  :func:`looks_like_secret` recognises key
material without keeping it; :func:`shown` is what messages may print of a
value.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SECRET_OPTION_NAMES", "is_secret_option", "looks_like_secret", "shown"]

#: Option names that can only carry a secret's contents; refused for every provider.
SECRET_OPTION_NAMES: frozenset[str] = frozenset(
    {
        "credential", "credentials", "key_data", "private_key", "token", "access_token", "refresh_token",
        "password", "secret", "client_secret", "api_key",
    }
)  # fmt: skip

#: Last words of an option name that point at a secret instead of holding it (``credentials_file``).
_REFERENCE_WORDS = frozenset({"file", "path", "dir", "env", "var"})

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


def is_secret_option(name: str, value: Any = None) -> bool:
    """Whether the option ``name=value`` carries a secret, to be kept out of records and messages.

    True when a run of the name's words (split at non-alphanumerics and
    camelCase) is one of :data:`SECRET_OPTION_NAMES` (``token``,
    ``hf_token``, ``gcpPrivateKey``), unless the last word says the option
    names where a secret is (``credentials_file``, ``token_path``); and when
    ``value``, or an item of a list or tuple ``value``, looks like key
    material (:func:`looks_like_secret`).  The names refused outright by
    provider validation and the gee provider are exactly
    :data:`SECRET_OPTION_NAMES`, so every option they refuse is secret here too.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", spaced) if w]
    if words and words[-1] not in _REFERENCE_WORDS:
        runs = ("_".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1))
        if any(r in SECRET_OPTION_NAMES for r in runs):
            return True
    items = value if isinstance(value, (list, tuple)) else [value]
    return any(looks_like_secret(v) for v in items)


def shown(value: Any) -> str:
    """``repr(value)`` for messages, with key material replaced by a placeholder."""
    if looks_like_secret(value):
        return f"<{len(value)} characters withheld>"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
