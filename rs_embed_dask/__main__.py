"""``python -m rs_embed_dask`` runs the command line."""

from rs_embed_dask.cli import main

raise SystemExit(main())
