"""The weights lookup with the Hugging Face hub unreachable: a clear ModelError within seconds.

Each lookup runs in a fresh interpreter, so that ``huggingface_hub`` reads the
environment given here and the once-per-process probe starts unknown.  Only
the network is arranged (a closed local port, an unroutable address, a
listening socket); our code runs unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rs_embed_dask.models import hub_reach

REPO = Path(__file__).resolve().parents[1]

LOOKUP = """
import json, time
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.satmae import CHECKPOINT
t0 = time.perf_counter()
try:
    path = CHECKPOINT.find("satmae", {})
    out = {"path": str(path)}
except ModelError as exc:
    out = {"error": str(exc)}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "RS_EMBED_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["HF_HUB_CACHE"] = str(tmp_path / "hf-cache")
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env.update(extra)
    return env


def _lookup(env: dict[str, str]) -> tuple[dict[str, object], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LOOKUP], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def _assert_clear_error(out: dict[str, object], tmp_path: Path, why: str) -> None:
    msg = str(out.get("error"))
    assert "No weights found for model 'satmae'" in msg, msg
    assert str(tmp_path / "hf-cache") in msg  # where it looked
    assert "$RS_EMBED_SATMAE_WEIGHTS (unset)" in msg, msg
    assert "weights='/path/to/checkpoint'" in msg  # how to provide them
    assert "model_config" in msg
    assert why in msg, msg


def test_closed_local_port_gives_the_model_error_in_under_5_s(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    out, wall = _lookup(_env(tmp_path, HF_ENDPOINT=endpoint))
    _assert_clear_error(out, tmp_path, f"{endpoint} cannot be reached")
    assert float(out["seconds"]) < 5.0, out  # type: ignore[arg-type]
    print(f"closed port: lookup {out['seconds']:.2f} s, interpreter {wall:.2f} s")


def test_unresolvable_endpoint_gives_the_model_error_in_under_5_s(tmp_path: Path) -> None:
    # no name server answers for it: the usual state of a compute node without network
    endpoint = "https://hub.rs-embed-dask.invalid"
    out, _ = _lookup(_env(tmp_path, HF_ENDPOINT=endpoint, RS_EMBED_HUB_PROBE_TIMEOUT="0.5"))
    _assert_clear_error(out, tmp_path, f"{endpoint} cannot be reached")
    assert float(out["seconds"]) < 5.0, out  # type: ignore[arg-type]


def test_hf_hub_offline_is_respected_without_any_connection(tmp_path: Path) -> None:
    # the endpoint would accept a connection, but HF_HUB_OFFLINE means the hub is not asked
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.settimeout(0.0)
        endpoint = f"http://127.0.0.1:{srv.getsockname()[1]}"
        out, _ = _lookup(_env(tmp_path, HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1"))
        with pytest.raises(BlockingIOError):
            srv.accept()  # nobody connected
    _assert_clear_error(out, tmp_path, "$HF_HUB_OFFLINE is set")
    assert float(out["seconds"]) < 5.0, out  # type: ignore[arg-type]


def test_a_cached_file_is_used_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    from rs_embed_dask.models.satmae import CHECKPOINT

    rev = CHECKPOINT.revision or "main"
    folder = tmp_path / "hf-cache" / f"models--{CHECKPOINT.repo.replace('/', '--')}"
    commit = rev if len(rev) == 40 else "0" * 40
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / CHECKPOINT.filename).write_bytes(b"not read here")
    if len(rev) != 40:
        (folder / "refs").mkdir()
        (folder / "refs" / rev).write_text(commit)
    out, _ = _lookup(_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))
    assert out.get("path") == str(snap / CHECKPOINT.filename), out


def test_probe_is_decided_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        hub_reach.reset_hub_probe()
        try:
            assert hub_reach.hub_reachable() is True
            srv.close()  # the network "goes away": the remembered answer stays until reset
            assert hub_reach.hub_reachable() is True
            hub_reach.reset_hub_probe()
            assert hub_reach.hub_reachable() is False
        finally:
            hub_reach.reset_hub_probe()


def test_probe_goes_through_the_proxy_that_would_carry_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert hub_reach._target(hub_reach.hub_endpoint()) == ("proxy.example.org", 3128)
    monkeypatch.setenv("NO_PROXY", ".example.org")
    assert hub_reach._target(hub_reach.hub_endpoint()) == ("hub.example.org", 443)
