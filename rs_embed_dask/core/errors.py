"""``rs_embed.core.errors``: the exception classes (and this package's warning and transient error)."""

from __future__ import annotations

from rs_embed_dask.errors import (
    ModelError,
    ProviderError,
    RSEmbedError,
    RSEmbedWarning,
    SpecError,
    TransientProviderError,
)

__all__ = [
    "ModelError",
    "ProviderError",
    "RSEmbedError",
    "RSEmbedWarning",
    "SpecError",
    "TransientProviderError",
]
