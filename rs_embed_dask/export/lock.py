"""One writer per export target: a lock file beside the target.

The lock is ``<target>.lock`` (``out.npz.lock``, ``out.zarr.lock``,
``per_item_dir.lock``), created with ``O_CREAT | O_EXCL``, which is atomic on
local disks and on the NFS v3+/Lustre/GPFS folders HPC sites share between
nodes.  It holds JSON naming its holder (host, pid, start time, target and a
random token).  While the export runs a daemon thread touches the file every
:data:`HEARTBEAT_S` seconds, so its modification time is the holder's last
sign of life.

A lock is *stale*, and is taken over, when its holder is a process of this
host that no longer exists, or when it has had no heartbeat for
:data:`STALE_AFTER_S` seconds (``RS_EMBED_DASK_LOCK_STALE_S`` overrides it):
a client killed on another node, or whose pid was reused.  Ages are measured
against the file server's clock (a probe file's modification time), so clock
skew between nodes does not make a live lock look stale.  Take-overs are
serialised by a second ``O_EXCL`` file (``<lock>.takeover``), so two clients
that find the same stale lock cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from rs_embed_dask.core.errors import ExportLockedError
from rs_embed_dask.serialization import utc_timestamp

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "TargetLock", "lock_path_for", "target_lock"]

#: Seconds between two heartbeats (touches of the lock file).
HEARTBEAT_S = 30.0
#: Seconds without heartbeat after which a lock held from another host is stale.
STALE_AFTER_S = 300.0
#: A take-over file older than this is left over by a killed client.
_TAKEOVER_STALE_S = 60.0


def lock_path_for(target: str | os.PathLike[str]) -> str:
    """The lock file of an export target (a file or a per-item folder)."""
    return os.path.abspath(os.fspath(target)).rstrip("/\\") + ".lock"


def _stale_after() -> float:
    raw = os.environ.get("RS_EMBED_DASK_LOCK_STALE_S")
    try:
        return float(raw) if raw else STALE_AFTER_S
    except ValueError:
        return STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def _read(path: str) -> tuple[dict[str, Any] | None, float | None]:
    """The lock's JSON (``None`` when empty or unreadable) and its mtime (``None`` when gone)."""
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None, mtime
    return (data if isinstance(data, dict) else None), mtime


def _server_now(folder: str) -> float:
    """The file server's current time: the mtime of a probe file created now."""
    probe = os.path.join(folder, f".rs-embed-dask-probe-{uuid.uuid4().hex}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        return os.stat(probe).st_mtime
    except OSError:
        return time.time()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown writer (the lock file is empty or unreadable)"
    return f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {holder.get('started_at')}"


class TargetLock:
    """The lock of one export target; use :func:`target_lock` or ``with TargetLock(...)``.

    Parameters
    ----------
    target : str or path-like
        The export target (combined file or per-item folder).
    stale_after_s : float, optional
        Heartbeat age after which a lock is stale (default
        :data:`STALE_AFTER_S`, or ``RS_EMBED_DASK_LOCK_STALE_S``).
    heartbeat_s : float, optional
        Seconds between heartbeats (default :data:`HEARTBEAT_S`, at most a
        third of ``stale_after_s``).
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        stale_after_s: float | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        self.target = os.fspath(target)
        self.path = lock_path_for(target)
        self.stale_after_s = float(stale_after_s if stale_after_s is not None else _stale_after())
        hb = HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s)
        self.heartbeat_s = max(0.05, min(hb, self.stale_after_s / 3))
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquire / release ----------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": utc_timestamp(),
            "target": os.path.abspath(self.target),
            "token": self.token,
        }

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._info(), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def stale_reason(self, holder: dict[str, Any] | None, mtime: float) -> str | None:
        """Why a lock held by ``holder`` (last heartbeat at ``mtime``) is stale, or ``None`` when it is live."""
        if holder and holder.get("host") == socket.gethostname():
            pid = holder.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                return f"its process {pid} on this host no longer exists"
        age = _server_now(os.path.dirname(self.path)) - mtime
        if age > self.stale_after_s:
            return f"it has had no heartbeat for {age:.0f} s (stale after {self.stale_after_s:.0f} s)"
        return None

    def _refuse(self, holder: dict[str, Any] | None, mtime: float) -> ExportLockedError:
        age = max(0.0, _server_now(os.path.dirname(self.path)) - mtime)
        return ExportLockedError(
            f"Export target {self.target!r} is being written by another export: the lock file "
            f"{self.path!r} is held by {_describe(holder)} (last heartbeat {age:.0f} s ago). "
            "Two writers would mix or delete each other's files, so this export is refused. Wait for "
            f"that export to finish, or write to another target. If it is no longer running, the lock "
            f"is taken over automatically once its process is gone (same host) or after "
            f"{self.stale_after_s:.0f} s without heartbeat (RS_EMBED_DASK_LOCK_STALE_S); you may also "
            "delete the lock file yourself.",
            lock_path=self.path,
            holder=holder,
        )

    @contextlib.contextmanager
    def _takeover_guard(self) -> Iterator[bool]:
        guard = self.path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if _server_now(os.path.dirname(guard)) - os.stat(guard).st_mtime > _TAKEOVER_STALE_S:
                    os.unlink(guard)  # left by a client killed during a take-over
            yield False
            return
        os.close(fd)
        try:
            yield True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(guard)

    def acquire(self) -> TargetLock:
        """Create the lock, taking over a stale one; raise :class:`ExportLockedError` when it is held."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(20):
            if self._create():
                self._start_heartbeat()
                return self
            holder, mtime = _read(self.path)
            if mtime is None:
                continue  # released meanwhile
            if self.stale_reason(holder, mtime) is None:
                raise self._refuse(holder, mtime)
            with self._takeover_guard() as ours:
                if not ours:
                    time.sleep(0.05)
                    continue
                # re-read under the guard: the stale lock may have been replaced by a live one
                holder2, mtime2 = _read(self.path)
                if mtime2 is not None:
                    if self.stale_reason(holder2, mtime2) is None:
                        raise self._refuse(holder2, mtime2)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                if self._create():
                    self._start_heartbeat()
                    return self
        holder, mtime = _read(self.path)
        raise self._refuse(holder, mtime or time.time())

    def owned(self) -> bool:
        """Whether the lock file on disk is still this one."""
        holder, _ = _read(self.path)
        return bool(holder) and holder.get("token") == self.token  # type: ignore[union-attr]

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    # -- heartbeat --------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="rs-embed-dask-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.owned():
                self.lost = True  # taken over (we were presumed dead): stop touching someone else's lock
                return
            with contextlib.suppress(OSError):
                os.utime(self.path, None)

    def __enter__(self) -> TargetLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def target_lock(target: str | os.PathLike[str], **kw: Any) -> Iterator[TargetLock]:
    """Hold the lock of ``target`` for the duration of the ``with`` block (see :class:`TargetLock`)."""
    lock = TargetLock(target, **kw)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
