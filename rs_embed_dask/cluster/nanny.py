"""Worker processes that close and exit on their own when a local cluster shuts down.

A ``distributed.Nanny`` asked to close stops its worker and kills the process
when it has not exited after 4 s.  A worker that has loaded torch and a
model needs longer than that on a busy machine: the worker itself closes in
milliseconds, then the interpreter's teardown of those libraries takes
seconds.  A successful export then ended with ``Worker process still alive
after 4.0 seconds, killing`` and a process killed mid-exit.
:class:`PatientNanny` waits up to :data:`WORKER_CLOSE_TIMEOUT_S` instead, so
every worker exits by itself and a run ends without a word on stderr.
"""

from __future__ import annotations

from typing import Literal

from distributed import Nanny

__all__ = ["WORKER_CLOSE_TIMEOUT_S", "PatientNanny"]

#: Seconds a worker process gets to close and exit before its nanny kills it (after 80 % of it).
WORKER_CLOSE_TIMEOUT_S = 60.0


class PatientNanny(Nanny):
    """A :class:`distributed.Nanny` whose ``close()`` gives its worker process time to exit.

    Use it as the worker class of a ``SpecCluster`` (``{"cls": PatientNanny,
    "options": {...}}``): ``SpecCluster.close()`` and ``scale(0)`` call
    ``close()`` without a timeout, which is then :data:`WORKER_CLOSE_TIMEOUT_S`
    rather than Dask's 5 s.
    """

    async def close(  # type: ignore[override]
        self, timeout: float = WORKER_CLOSE_TIMEOUT_S, reason: str = "nanny-close"
    ) -> Literal["OK"]:
        """Close the worker process (waiting up to ``timeout`` seconds for it to exit), then the nanny.

        Parameters
        ----------
        timeout : float, default 60
            Seconds the worker may take to close and exit; it is killed after 80 % of it.
        reason : str, default "nanny-close"
            Recorded in the worker's logs.

        Returns
        -------
        str
            ``"OK"``.
        """
        return await super().close(timeout=timeout, reason=reason)
