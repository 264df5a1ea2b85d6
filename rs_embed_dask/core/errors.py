"""Exception and warning hierarchy.

Every exception raised on purpose by :mod:`rs_embed_dask` derives from
:class:`RSEmbedError` *and* from the closest built-in exception, so code that
catches ``ValueError`` (as code written for rs-embed often does) keeps working
next to code that catches the specific class.
"""

from __future__ import annotations

__all__ = [
    "ExportIntegrityError",
    "ExportLockedError",
    "ModelError",
    "ProviderError",
    "RSEmbedError",
    "RSEmbedWarning",
    "SpecError",
    "TransientProviderError",
]


class RSEmbedError(Exception):
    """Base class of every error raised by rs_embed_dask."""


class SpecError(RSEmbedError, ValueError):
    """A spatial, temporal, sensor or output specification is invalid."""


class ModelError(RSEmbedError, ValueError):
    """A model name, model option or model request is invalid or failed."""


class ProviderError(RSEmbedError, RuntimeError):
    """A data provider could not deliver the requested pixels."""


class ExportIntegrityError(RSEmbedError, ValueError):
    """An export on disk is damaged or inconsistent with its manifest.

    Raised by :func:`~rs_embed_dask.load_export` (``strict=True``): a member,
    chunk or per-item file the manifest promises is missing, has the wrong
    number of rows or cannot be decoded, or the manifest itself is malformed.

    Parameters
    ----------
    path : str
        The file or folder that is damaged.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # keep the two fields across pickling
        return (type(self), (self.path, self.problem))


class ExportLockedError(RSEmbedError, RuntimeError):
    """Another live writer holds the lock of an export target.

    Parameters
    ----------
    message : str
        Human-readable description naming the lock file and its holder.
    lock_path : str, optional
        The lock file.
    holder : dict, optional
        What the lock file says about its holder (host, pid, start time).
    """

    def __init__(self, message: str, *, lock_path: str = "", holder: dict | None = None) -> None:
        super().__init__(message)
        self.lock_path = lock_path
        self.holder = dict(holder or {})


class TransientProviderError(ProviderError):
    """A provider failure worth retrying (HTTP 429/5xx, time-outs).

    Parameters
    ----------
    message : str
        Human-readable description.
    status : int, optional
        HTTP status code when the failure came from an HTTP response.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keep ``status`` across pickling (worker -> client)
        return (_rebuild_transient, (str(self), self.status))


def _rebuild_transient(message: str, status: int | None) -> TransientProviderError:
    return TransientProviderError(message, status=status)


class RSEmbedWarning(UserWarning):
    """Base class of warnings emitted by rs_embed_dask."""
