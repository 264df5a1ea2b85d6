"""The embedded local cluster the export tests start (see :func:`rs_embed_dask.cluster.local_cluster`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def local_client(*, io_threads: int, inference_workers: int) -> Iterator[Any]:
    """A client of a local cluster with separate IO and inference workers, once all are up; both closed on exit."""
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    cluster = local_cluster(
        io_threads=io_threads, inference_workers=inference_workers, dashboard_address=None
    )
    c = Client(cluster, set_as_default=False)
    try:
        c.wait_for_workers(len(cluster.workers), timeout=120)
        yield c
    finally:
        c.close()
        cluster.close()
