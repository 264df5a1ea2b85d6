"""One progress bar per export: items done and failed, rate, ETA, and the dashboard link."""

from __future__ import annotations

import sys
from typing import Any

from rs_embed_dask.cluster.client import dashboard_once

__all__ = ["Progress"]


class Progress:
    """A tqdm bar (``tqdm.auto``: terminal or notebook widget) fed by finished chunks.

    Parameters
    ----------
    total : int or None
        Number of ROIs, when known.
    enabled : bool
        ``False`` makes every method a no-op.
    client : distributed.Client, optional
        Its dashboard link is printed, unless this process showed it already.
    desc : str
        Bar label.
    """

    def __init__(self, total: int | None, *, enabled: bool, client: Any = None, desc: str = "export_batch") -> None:
        self.enabled = enabled
        self.failed = 0
        self.done = 0
        self.bar: Any = None
        if not enabled:
            return
        link = getattr(client, "dashboard_link", None)
        if dashboard_once(link):  # not again when local_cluster() or connect() showed it
            print(f"rs-embed-dask: dashboard {link}", file=sys.stderr, flush=True)
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, leave=True)
        except ImportError:  # pragma: no cover - tqdm is a core dependency
            self.bar = None

    def skip(self, n: int) -> None:
        """Count ``n`` items finished by an earlier run."""
        self._advance(n)

    def update_from(self, result: Any, n: int) -> None:
        """Count a finished chunk (a write task's summary or a list of manifests)."""
        if isinstance(result, dict):
            self.failed += max(result.get("failed", {}).values(), default=0)
        elif isinstance(result, list):
            self.failed += sum(1 for m in result if m.get("status") == "failed")
        self._advance(n)

    def _advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
