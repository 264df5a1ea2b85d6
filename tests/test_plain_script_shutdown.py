"""A plain script's export ends quietly: its embedded cluster shuts down without tracebacks or kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rs_embed_dask.cluster.nanny import WORKER_CLOSE_TIMEOUT_S, PatientNanny

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

#: a top-level script, as rs-embed's examples are (no main guard)
SCRIPT = """
import sys
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch

manifest = export_batch(
    spatials=[PointBuffer(121.5 + 0.01 * i, 31.2, 320) for i in range(6)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["rcf"],
    target=ExportTarget.combined(sys.argv[1]),
    config=ExportConfig(chunk_size=2, show_progress=False),
    backend="synthetic",
)
print("status", manifest["status"])
"""

#: a worker preload that makes the worker process slow to exit, as a worker that loaded torch and a
#: model is on a busy machine (the interpreter's teardown after the worker has closed)
SLOW_EXIT = """
import atexit
import time


def dask_setup(worker):
    atexit.register(time.sleep, 6.0)
"""

#: what a disorderly shutdown prints: tracebacks, closed comms, killed workers, Dask's log lines
NOISE = ("Traceback", "CommClosedError", "StreamClosedError", "still alive", " - ERROR - ", " - WARNING - ")


@pytest.mark.parametrize(("run", "slow_exit"), [(1, False), (2, False), (3, True)], ids=["run1", "run2", "slow-exit"])
def test_plain_script_export_shuts_down_quietly(run: int, slow_exit: bool, tmp_path: Path) -> None:
    script = tmp_path / "export_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "RS_EMBED_DASK_IN_PROCESS_CHUNKS": "0"}  # always the embedded cluster
    if slow_exit:
        preload = tmp_path / "slow_exit.py"
        preload.write_text(SLOW_EXIT)
        env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = json.dumps([str(preload)])
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines().count("status ok") == 1
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], done.stderr
    assert (tmp_path / "out.npz").is_file()


def test_patient_nanny_waits_longer_than_dask() -> None:
    import inspect

    from distributed.nanny import Nanny

    default = inspect.signature(PatientNanny.close).parameters["timeout"].default
    assert default == WORKER_CLOSE_TIMEOUT_S
    assert default > inspect.signature(Nanny.close).parameters["timeout"].default
