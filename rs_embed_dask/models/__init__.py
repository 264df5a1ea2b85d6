"""Model families: one module each, behind :class:`rs_embed_dask.models.base.Embedder`."""
