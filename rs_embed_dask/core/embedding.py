"""``rs_embed.core.embedding``: :class:`Embedding`."""

from __future__ import annotations

from rs_embed_dask.core.types import Embedding

__all__ = ["Embedding"]
