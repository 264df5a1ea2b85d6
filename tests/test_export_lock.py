"""One writer per target: the lock beside it, stale locks, and leftovers of killed writers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import ExportLockedError, ExportTarget, load_export
from rs_embed_dask.export.lock import TargetLock, lock_path_for

distributed = pytest.importorskip("distributed")

sys.path.insert(0, os.path.dirname(__file__))
from _exports import rois, small_export  # noqa: E402

ROIS = rois(8)
REPO = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def plant_lock(target: Path, **holder: Any) -> Path:
    path = Path(lock_path_for(target))
    path.write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_at": "x", **holder})
    )
    return path


# -- the lock itself ------------------------------------------------------------------------------
def test_second_holder_is_refused_naming_the_lock_and_its_holder(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    with TargetLock(target) as first:
        assert os.path.exists(first.path)
        assert json.loads(Path(first.path).read_text())["pid"] == os.getpid()
        with pytest.raises(ExportLockedError) as info:
            TargetLock(target).acquire()
        msg = str(info.value)
        assert first.path in msg
        assert f"pid {os.getpid()}" in msg
        assert socket.gethostname() in msg
        assert info.value.lock_path == first.path
    assert not os.path.exists(first.path)  # released
    with TargetLock(target):  # and free again
        pass


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    plant_lock(target, pid=dead_pid(), token="old")
    with TargetLock(target) as lock:
        assert lock.owned()


def test_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    path = plant_lock(target, host="other-node-17", pid=1, token="old")
    with pytest.raises(ExportLockedError, match="other-node-17"):
        TargetLock(target, stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))  # no heartbeat for two minutes
    with TargetLock(target, stale_after_s=60) as lock:
        assert lock.owned()


def test_heartbeat_keeps_the_lock_fresh(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    with TargetLock(target, stale_after_s=0.6, heartbeat_s=0.1) as lock:
        old = time.time() - 100
        os.utime(lock.path, (old, old))
        time.sleep(0.4)
        assert time.time() - os.stat(lock.path).st_mtime < 1
        # another host would not take it over
        with pytest.raises(ExportLockedError):
            TargetLock(target, stale_after_s=0.6).acquire()


# -- exports (on conftest's in-process ``client``) ----------------------------------------------------
def run(client: Any, target: ExportTarget, **config: Any) -> Any:
    return small_export(client, target, list(ROIS), **config)


def test_export_refuses_a_target_locked_by_a_live_writer(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "busy.npz"
    with TargetLock(out):
        with pytest.raises(ExportLockedError, match=r"busy\.npz\.lock"):
            run(client, ExportTarget.combined(str(out)))
        assert not out.exists()
        assert not os.path.exists(str(out) + ".work.zarr")  # refused before anything was written


def test_export_takes_over_the_lock_of_a_killed_client(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "items"
    plant_lock(out, pid=dead_pid(), token="killed")
    mans = run(client, ExportTarget.per_item(str(out)))
    assert all(m["status"] == "ok" for m in mans)
    assert not os.path.exists(lock_path_for(out))


def test_temporary_files_of_killed_writers_are_removed_at_the_next_run(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "items"
    run(client, ExportTarget.per_item(str(out)))
    stale = [out / "p00003.npz.tmp-4242-1a2b3c4d", out / "p00005.json.tmp-77-deadbeef"]
    for p in stale:
        p.write_bytes(b"half")
    keep = out / "notes.txt"
    keep.write_text("mine")
    run(client, ExportTarget.per_item(str(out)), resume=True)
    assert not any(p.exists() for p in stale)
    assert keep.exists()

    comb = tmp_path / "comb.npz"
    leftovers = [tmp_path / "comb.npz.tmp-4242-00ff00ff", tmp_path / "comb.json.tmp-1-abcdef12"]
    parts = tmp_path / "comb.npz.work.zarr.npz-parts" / "models__rcf__embeddings"
    parts.mkdir(parents=True)
    leftovers.append(parts / "000000000000.part.tmp-4242-123456789")
    for p in leftovers:
        p.write_bytes(b"half")
    other = tmp_path / "other.npz.tmp-4242-00ff00ff"  # another target's: not ours to remove
    other.write_bytes(b"x")
    run(client, ExportTarget.combined(str(comb)))
    assert not any(p.exists() for p in leftovers)
    assert other.exists()


_WRITER = r"""
import json, os, sys, time
from distributed import Client, LocalCluster
from rs_embed_dask import ExportLockedError, ExportTarget
from _exports import rois, small_export

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl, Client(cl) as c:
        # a barrier: both processes call export_batch at the same moment, their clusters up
        open(os.path.join(args["barrier"], str(os.getpid())), "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(args["barrier"])) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            man = small_export(c, ExportTarget.combined(args["out"]), rois(args["n"]),
                               provider_options={"latency_s": args["latency"]}, chunk_size=2, num_workers=1)
            print("RESULT", json.dumps({"ok": man["status"], "n": man["n_items"]}), flush=True)
        except ExportLockedError as exc:
            print("RESULT", json.dumps({"locked": str(exc)}), flush=True)
"""


def test_two_processes_exporting_one_target_one_refuses_the_other_completes(tmp_path: Path) -> None:
    out = tmp_path / "shared.npz"
    n = 8
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    args = json.dumps({"out": str(out), "n": n, "latency": 0.6, "barrier": str(barrier)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp_path),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240)[0].decode() for p in procs]
    results = []
    for text in outs:
        lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        assert lines, text
        results.append(json.loads(lines[-1][7:]))
    done = [r for r in results if "ok" in r]
    locked = [r for r in results if "locked" in r]
    assert len(done) == 1, results
    assert len(locked) == 1, results
    assert done[0] == {"ok": "ok", "n": n}
    assert "shared.npz.lock" in locked[0]["locked"]
    assert "pid" in locked[0]["locked"]
    r = load_export(out)
    assert r.status == "ok"
    assert r.n_items == n
    emb = r.models["rcf"].embeddings
    assert emb is not None
    assert emb.shape[0] == n
    assert np.isfinite(emb).all()
    assert not os.path.exists(lock_path_for(out))
    assert not os.path.exists(str(out) + ".work.zarr")
