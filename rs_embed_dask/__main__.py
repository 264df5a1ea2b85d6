"""``python -m rs_embed_dask`` runs the command line (the ``rs-embed-dask`` console script)."""

from rs_embed_dask.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
