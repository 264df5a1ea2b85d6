"""The Dask export engine, the zarr working store, writers and the loader."""
