"""rs-embed's ``rs_embed.core`` import paths, for code written against them.

``from rs_embed.core.embedding import Embedding`` becomes
``from rs_embed_dask.core.embedding import Embedding``: each submodule
re-exports the objects of :mod:`rs_embed_dask` (the same objects, not
copies), so ``isinstance`` checks and ``except`` clauses work with either
path.  Only names this package implements are provided; rs-embed's internal
``Status``, ``TaskResult``, ``EmbedderCapabilities``, ``InferenceStrategy``
and ``ModelInputSpec`` have no counterpart here.
"""

from __future__ import annotations

__all__: list[str] = []
