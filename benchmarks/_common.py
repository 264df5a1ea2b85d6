"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RESULTS", "PeakRSS", "write_results"]

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def write_results(name: str, quick: bool, res: dict[str, Any], markdown: str) -> None:
    """Write ``res`` to ``RESULTS/<name>[_quick].json`` and ``markdown`` to ``RESULTS/<name>[_quick].md``."""
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, name + ("_quick" if quick else ""))
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=2, default=str)
    with open(base + ".md", "w") as f:
        f.write(markdown)


class PeakRSS:
    """RSS of this process (client + scheduler) and, summed, of its child processes (workers).

    Samples every ``interval`` s in a thread while the ``with`` block runs,
    once more on exit.  When ``done`` is given, notes the first sample at
    which ``done()`` is true: the peaks before it are those of the streaming
    phase, the ones after it those of the final manifest.

    Attributes
    ----------
    start : tuple of int
        Client and workers RSS (bytes) on entry.
    timeline : list of tuple
        ``(seconds since entry, client bytes, workers bytes, done)`` per sample.
    """

    def __init__(self, interval: float = 0.25, done: Callable[[], Any] | None = None) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.done = done
        self.timeline: list[tuple[float, int, int, bool]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        client = self.proc.memory_info().rss
        workers = 0
        for p in self.proc.children(recursive=True):
            with contextlib.suppress(Exception):  # a process that just exited
                workers += p.memory_info().rss
        return client, workers

    def _update(self) -> None:
        c, w = self.sample()
        streamed = bool(self.timeline and self.timeline[-1][3])
        if not streamed and self.done is not None:
            with contextlib.suppress(Exception):  # e.g. the store does not exist yet
                streamed = bool(self.done())
        self.timeline.append((time.perf_counter() - self.t0, c, w, streamed))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._update()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.t0 = time.perf_counter()
        self.start = self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._update()

    def peaks(self, phase: str = "all") -> dict[str, float]:
        """Peak client, workers and total RSS in MB over ``phase`` ("all", "stream", "final")."""
        rows = [r for r in self.timeline if phase == "all" or r[3] == (phase == "final")]
        mb = 2**20
        if not rows:
            return {"client_mb": float("nan"), "workers_mb": float("nan"), "total_mb": float("nan")}
        return {
            "client_mb": max(r[1] for r in rows) / mb,
            "workers_mb": max(r[2] for r in rows) / mb,
            "total_mb": max(r[1] + r[2] for r in rows) / mb,
        }
