"""The embedded local clusters the export tests start (see :func:`rs_embed_dask.cluster.local_cluster`)."""

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


@contextlib.contextmanager
def threaded_client(threads: int = 4) -> Iterator[Any]:
    """A client of an in-process cluster (one worker, ``threads`` threads), not made the default; both closed on exit.

    Enough for exports of the built-in models and providers, and of classes
    defined in any module this process imported (nothing is pickled to
    another process).
    """
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as c,
    ):
        yield c


@contextlib.contextmanager
def plugin_client(plugins: Any, *, io_threads: int = 4) -> Iterator[Any]:
    """The active client of :func:`~rs_embed_dask.cluster.local_cluster` (worker processes), with test plugins.

    ``plugins`` is a test-plugin module (``_engine_plugins``,
    ``_sensor_log_plugins``): its ``register()`` runs before the cluster
    starts and its ``unregister()`` after it is closed.  The client is the
    default one while open, so code that takes the active client (rs-embed's
    examples, without ``client=``) uses it.  Worker processes are spawned:
    environment variables and the working folder they need must be set first.
    """
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    plugins.register()
    try:
        cluster = local_cluster(io_threads=io_threads, dashboard_address=None, verbose=False)
        try:
            with Client(cluster) as c:
                yield c
        finally:
            cluster.close()
    finally:
        plugins.unregister()
