"""Data providers: one module each, behind :class:`rs_embed_dask.providers.base.Provider`."""
