"""Exception and warning hierarchy.

Every exception raised on purpose by :mod:`rs_embed_dask` derives from
:class:`RSEmbedError` *and* from the closest built-in exception, so code that
catches ``ValueError`` (as code written for rs-embed often does) keeps working
next to code that catches the specific class.
"""

from __future__ import annotations

__all__ = [
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
