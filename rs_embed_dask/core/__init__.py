"""Specs, types, errors and registries, at rs-embed's ``rs_embed.core`` import paths.

The core of the package: specs (:mod:`.specs`), export types and the
embedding result (:mod:`.types`, :mod:`.embedding`), exceptions
(:mod:`.errors`) and the model and provider registries (:mod:`.registry`).
``from rs_embed.core.embedding import Embedding`` becomes
``from rs_embed_dask.core.embedding import Embedding`` and gives the same
object as ``from rs_embed_dask import Embedding``.  rs-embed's internal
``Status``, ``TaskResult``, ``EmbedderCapabilities``, ``InferenceStrategy``
and ``ModelInputSpec`` have no counterpart here.
"""

from __future__ import annotations

__all__: list[str] = []
