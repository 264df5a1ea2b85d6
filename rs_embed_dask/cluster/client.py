"""Clients of running clusters: connect, print the dashboard, read the pools' resources."""

from __future__ import annotations

import os
from typing import Any

from rs_embed_dask.core.errors import SpecError

__all__ = ["cluster_resources", "connect", "dashboard_once", "print_dashboard"]

_PRINTED_LINKS: set[str] = set()


def cluster_resources(client: Any) -> dict[str, float]:
    """Total of each resource advertised by the cluster's workers."""
    totals: dict[str, float] = {}
    for info in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        for k, v in (info.get("resources") or {}).items():
            totals[k] = totals.get(k, 0) + v
    return totals


def dashboard_once(link: str | None) -> bool:
    """Whether ``link`` is yet to be shown in this process (and record it as shown)."""
    if not link or link in _PRINTED_LINKS:
        return False
    _PRINTED_LINKS.add(link)
    return True


def print_dashboard(obj: Any, what: str = "cluster") -> None:
    """Print the scheduler address and dashboard link of a cluster or client (the link once per process)."""
    address = getattr(obj, "scheduler_address", None) or getattr(obj.scheduler, "address", "?")
    link = getattr(obj, "dashboard_link", None)
    print(f"rs-embed-dask: {what} scheduler at {address}", flush=True)
    if dashboard_once(link):
        print(f"rs-embed-dask: dashboard at {link}", flush=True)


def connect(
    address: str | None = None,
    *,
    scheduler_file: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    verbose: bool = True,
) -> Any:
    """A client of a scheduler that is already running.

    Parameters
    ----------
    address : str, optional
        Scheduler address, e.g. ``"tcp://10.0.0.5:8786"``.
    scheduler_file : path, optional
        The JSON file a scheduler started with ``dask scheduler --scheduler-file``
        writes; exactly one of ``address`` and ``scheduler_file`` is given.
    timeout : float, default 60
        Seconds to wait for the scheduler (the scheduler file may not exist yet
        when the scheduler is still starting).
    verbose : bool, default True
        Print the scheduler address and the dashboard link.

    Returns
    -------
    distributed.Client

    Raises
    ------
    SpecError
        Neither or both of ``address`` and ``scheduler_file`` given.
    """
    from distributed import Client

    if (address is None) == (scheduler_file is None):
        raise SpecError("connect() needs exactly one of address='tcp://HOST:PORT' or scheduler_file=PATH.")
    if scheduler_file is not None:
        client = Client(scheduler_file=os.fspath(scheduler_file), timeout=timeout)
    else:
        client = Client(address, timeout=timeout)
    if verbose:
        print_dashboard(client, "connected to")
    return client
