"""Earth Engine sessions: credentials, project, per-process initialisation, errors.

Every process that talks to Earth Engine (the client for
:func:`rs_embed_dask.get_embedding`, each Dask worker for an export) must call
``ee.Initialize`` once.  :func:`initialize` does it idempotently from plain
values only (a project id and the *path* of a service-account key file), so
nothing secret ever enters the task graph, a manifest, a repr or a log line:
the key is read by the Google auth library inside the worker process, from
storage the workers share.

Credentials, in order:

1. ``credentials_file`` (provider option) or ``$GOOGLE_APPLICATION_CREDENTIALS``
   when it names a *service-account* JSON key (``"type": "service_account"``);
2. otherwise the user's stored credentials (``earthengine authenticate``, or
   application-default credentials), as ``ee.Initialize()`` finds them.

The project comes from the ``project`` option, ``$EE_PROJECT``,
``$GOOGLE_CLOUD_PROJECT``, and otherwise from the credentials themselves.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

from rs_embed_dask.core.errors import ProviderError, TransientProviderError
from rs_embed_dask.validation.secrets import looks_like_secret

__all__ = [
    "EarthEngineInitPlugin",
    "as_provider_error",
    "initialize",
    "reset_session",
    "resolve_credentials_file",
    "resolve_project",
    "verify",
]

_PROJECT_ENV = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
_KEY_ENV = "GOOGLE_APPLICATION_CREDENTIALS"

AUTH_FIX = (
    "Run `earthengine authenticate` once on this machine (laptop, notebook), or point the "
    "provider option credentials_file=... / $GOOGLE_APPLICATION_CREDENTIALS at the path of a "
    "service-account JSON key on storage every worker can read (cluster)."
)
PROJECT_FIX = (
    "Earth Engine needs a Google Cloud project registered for Earth Engine: set "
    "EE_PROJECT=<project-id> (or GOOGLE_CLOUD_PROJECT, or the provider option project=...) "
    "in the environment of the client and of every worker."
)

_lock = threading.Lock()
_session: dict[str, Any] = {}


def resolve_project(project: str | None = None) -> str | None:
    """The Earth Engine project: ``project``, ``$EE_PROJECT``, ``$GOOGLE_CLOUD_PROJECT`` or ``None``."""
    if project:
        return str(project)
    for var in _PROJECT_ENV:
        val = os.environ.get(var, "").strip()
        if val:
            return val
    return None


def _key_type(path: str) -> str | None:
    """The ``type`` field of a JSON key file (nothing else is kept), ``None`` if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            kind = json.load(f).get("type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(kind) if kind is not None else None


def resolve_credentials_file(credentials_file: str | None = None) -> str | None:
    """Path of the service-account key to use, or ``None`` for stored user credentials.

    An explicit ``credentials_file`` must exist.  ``$GOOGLE_APPLICATION_CREDENTIALS``
    is used only when it names a service-account key; an ``authorized_user``
    file there is left to ``ee.Initialize()``'s own lookup.

    Raises
    ------
    ProviderError
        When ``credentials_file`` is given but cannot be read.
    """
    if credentials_file:
        if looks_like_secret(credentials_file):
            # never echoed: this is the key itself, pasted where its path belongs
            raise ProviderError(
                "Earth Engine credentials_file looks like the contents of a key (withheld here): pass the "
                "path of the service-account JSON key on storage every worker can read, never its contents."
            )
        path = os.path.expanduser(str(credentials_file))
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ProviderError(
                f"Earth Engine credentials_file={path!r} does not exist or is not readable in this "
                f"process (pid {os.getpid()}). Put the service-account key on storage every worker "
                "can read and pass its path (never its contents). " + AUTH_FIX
            )
        return path
    env = os.environ.get(_KEY_ENV, "").strip()
    if env and os.path.isfile(env) and _key_type(env) == "service_account":
        return env
    return None


def _message(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def initialize(
    *, project: str | None = None, credentials_file: str | None = None, url: str | None = None
) -> str | None:
    """Initialise Earth Engine in this process once; return the project used.

    Parameters
    ----------
    project : str, optional
        Cloud project id (default from the environment, see the module docstring).
    credentials_file : str, optional
        Path of a service-account JSON key (default ``$GOOGLE_APPLICATION_CREDENTIALS``
        when it is one, else the stored user credentials).
    url : str, optional
        API endpoint, e.g. ``"https://earthengine-highvolume.googleapis.com"``.

    Raises
    ------
    ProviderError
        With the command that fixes it (``earthengine authenticate``, setting
        ``EE_PROJECT``, ...) when initialisation fails.
    """
    proj = resolve_project(project)
    key_path = resolve_credentials_file(credentials_file)
    ident = (proj, key_path, url)
    with _lock:
        if _session.get("ident") == ident:
            return proj
        import ee

        try:
            if key_path is not None:
                credentials: Any = ee.ServiceAccountCredentials(None, key_file=key_path)
            else:
                credentials = "persistent"
        except Exception as exc:
            # ``from None``: a parser's traceback must not carry key material into a log
            raise ProviderError(
                f"Could not load the service-account key {key_path!r}: {type(exc).__name__}. "
                "Download a fresh JSON key for the service account. " + AUTH_FIX
            ) from None
        kwargs: dict[str, Any] = {"credentials": credentials, "project": proj}
        if url:
            kwargs["url"] = url
        try:
            ee.Initialize(**kwargs)
        except Exception as exc:
            raise _init_error(exc, proj, key_path) from None
        _session["ident"] = ident
        return proj


def verify(
    *, project: str | None = None, credentials_file: str | None = None, url: str | None = None
) -> str | None:
    """Initialise Earth Engine and make one cheap authenticated call (once per process and identity).

    ``ee.Initialize`` may succeed with credentials the service later refuses
    (a revoked key, a project without Earth Engine); evaluating a constant
    on the server proves them.  Run on the client before a cluster starts.
    A transient failure (HTTP 429/5xx) is not held against the credentials.

    Raises
    ------
    ProviderError
        With the fix (``earthengine authenticate``, ``EE_PROJECT``, the
        service account's role), naming the key *path* only.
    """
    proj = initialize(project=project, credentials_file=credentials_file, url=url)
    ident = _session.get("ident")
    if ident is not None and _session.get("verified") == ident:
        return proj
    import ee

    try:
        ee.Number(1).getInfo()
    except Exception as exc:
        err = as_provider_error(exc, "authentication check")
        if isinstance(err, TransientProviderError):
            return proj
        key_path = ident[1] if ident else None
        raise _init_error(exc, proj, key_path) from None
    with _lock:
        _session["verified"] = ident
    return proj


def _init_error(exc: BaseException, project: str | None, key_path: str | None) -> ProviderError:
    msg = _message(exc)
    low = msg.lower()
    where = f"(project={project!r}, credentials={'service-account key ' + repr(key_path) if key_path else 'stored user credentials'})"
    if "no project found" in low or ("project" in low and ("not registered" in low or "has not been used" in low)):
        return ProviderError(f"Earth Engine initialisation failed {where}: {msg} {PROJECT_FIX}")
    if "authenticate" in low or "authoriz" in low or "credential" in low or "refresh" in low:
        return ProviderError(f"Earth Engine authentication is required {where}: {msg} {AUTH_FIX}")
    if "permission" in low or "403" in low:
        return ProviderError(
            f"Earth Engine refused the credentials {where}: {msg} Register the project for Earth "
            "Engine and give the account the 'Earth Engine Resource Viewer' role. " + PROJECT_FIX
        )
    return ProviderError(f"Failed to initialize Earth Engine {where}: {msg} {AUTH_FIX} {PROJECT_FIX}")


def reset_session() -> None:
    """Forget this process's initialisation (the next :func:`initialize` runs ``ee.Initialize`` again)."""
    with _lock:
        _session.clear()


# -- errors of requests ----------------------------------------------------------------------------
_TRANSIENT_TEXT = (
    "too many requests",
    "quota exceeded",
    "rate limit",
    "resource_exhausted",
    "resource exhausted",
    "internal error",
    "service unavailable",
    "backend error",
    "bad gateway",
    "gateway timeout",
    "deadline exceeded",
    "timed out",
    "timeout",
    "try again",
    "connection reset",
    "connection aborted",
)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a googleapiclient ``HttpError`` in the exception's chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        resp = getattr(cur, "resp", None)
        status = getattr(resp, "status", None) if resp is not None else getattr(cur, "status_code", None)
        if status is not None:
            try:
                return int(status)
            except (TypeError, ValueError):
                pass
        cur = cur.__cause__ or cur.__context__
    return None


def as_provider_error(exc: BaseException, what: str) -> ProviderError:
    """Translate an exception of an ``ee`` call into a (transient) :class:`ProviderError`.

    ``ee.data`` turns a failed HTTP call into ``ee.EEException(reason)`` raised
    while handling the ``googleapiclient.errors.HttpError``, so the status code
    is found on the exception's context; HTTP 429 and 5xx, socket time-outs
    and the server's quota / time-out messages are transient.
    """
    if isinstance(exc, ProviderError):
        return exc
    msg = _message(exc)
    status = _http_status(exc)
    if status == 429 or (status is not None and status >= 500):
        return TransientProviderError(f"Earth Engine {what}: HTTP {status}: {msg}", status=status)
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError)):
        return TransientProviderError(f"Earth Engine {what}: {type(exc).__name__}: {msg}")
    low = msg.lower()
    if status is None and any(t in low for t in _TRANSIENT_TEXT):
        guess = 429 if ("many requests" in low or "quota" in low or "rate" in low) else None
        return TransientProviderError(f"Earth Engine {what}: {msg}", status=guess)
    suffix = f" (HTTP {status})" if status is not None else ""
    return ProviderError(f"Earth Engine {what}{suffix}: {msg}")


# -- the worker plugin -----------------------------------------------------------------------------
def _worker_plugin_base() -> type:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # pragma: no cover - distributed is a core dependency
        return object
    return WorkerPlugin


class EarthEngineInitPlugin(_worker_plugin_base()):  # type: ignore[misc]
    """A ``distributed`` worker plugin that initialises Earth Engine on every worker.

    It holds plain values only (project id, key *path*, endpoint), so it can
    be shipped to the workers without revealing a secret; a worker that
    cannot initialise makes :meth:`distributed.Client.register_plugin` raise
    the :class:`ProviderError` with the fix on the client, before any task runs.

    Parameters
    ----------
    project, credentials_file, url
        As :func:`initialize`.
    """

    name = "rs-embed-dask-earth-engine-init"
    idempotent = False

    def __init__(
        self, *, project: str | None = None, credentials_file: str | None = None, url: str | None = None
    ) -> None:
        self.project = project
        self.credentials_file = credentials_file
        self.url = url

    def setup(self, worker: Any = None) -> None:
        initialize(project=self.project, credentials_file=self.credentials_file, url=self.url)

    def __repr__(self) -> str:
        return (
            f"EarthEngineInitPlugin(project={self.project!r}, "
            f"credentials_file={self.credentials_file!r}, url={self.url!r})"
        )
