"""The ``rs-embed-dask`` command line, in process (no cluster is started here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rs_embed_dask import cluster as clusters
from rs_embed_dask.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get("RS_EMBED_DASK_FIXTURES") or REPO / ".." / "shared" / "fixtures" / "upstream_exports"
)
COMMANDS = ("export", "models", "describe", "inspect", "demo", "cluster")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rs-embed-dask")
    if command is None:
        assert all(c in out for c in COMMANDS)
    elif command == "export":
        assert all(flag in out for flag in ("--scheduler", "--scheduler-file", "--jobqueue", "--resume"))


def test_every_subcommand_has_help_text() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[arg-type]
    assert all(h.help for h in sub._choices_actions)  # type: ignore[attr-defined]


def test_models_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert "rcf" in names
    assert "mosaiks" not in names
    assert main(["models", "--aliases"]) == 0
    assert "mosaiks" in capsys.readouterr().out.split()
    assert main(["describe", "rcf"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["embedding_dim"] == 512
    assert desc["inputs"]["bands"] == ["B2", "B3", "B4", "B8"]


def test_describe_unknown_model_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "nope"]) == 2
    assert "Unknown model 'nope'" in capsys.readouterr().err


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any attempt to start or reach a cluster (none is expected)."""
    calls: list[str] = []

    def spy(name: str) -> Any:
        def f(*a: Any, **k: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} must not be called for a bad job")

        return f

    for name in ("local_cluster", "connect", "slurm_cluster", "pbs_cluster", "export_client"):
        monkeypatch.setattr(clusters, name, spy(name))
    return calls


BAD_JOB = {
    "spatials": {"points": [[121.5, 31.2]], "buffer_m": 320},
    "models": ["rcf", {"name": "rcf", "model_config": {"variant": "x"}}],
    "backend": "synthetic",
    "target": {"combined": "out.zarr"},
    "config": {"format": "zarr"},
}


def test_bad_job_file_one_clear_message_exit_2_no_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_cluster: list[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(BAD_JOB))
    for extra in ([], ["--scheduler", "tcp://127.0.0.1:1"], ["--jobqueue", "slurm", "--scale", "gpu=1"]):
        assert main(["export", str(path), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("rs-embed-dask: error: ")
        assert "models[1].model_config.variant: unknown key; allowed keys: ['bands', 'bias', 'features'" in err[0]
    assert no_cluster == []
    assert not (tmp_path / "out.zarr").exists()


def test_bad_cluster_flags_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_cluster: list[str]) -> None:
    good = dict(BAD_JOB, models=["rcf"])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(good))
    assert main(["export", str(path), "--jobqueue", "slurm", "--scale", "cpu=1"]) == 2
    assert "--scale: cpu: unknown key; allowed keys: ['gpu', 'io']" in capsys.readouterr().err
    assert main(["export", str(path), "--jobqueue", "slurm", "--scale", "gpu"]) == 2
    assert "POOL=VALUE" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: mutually exclusive cluster flags
        main(["export", str(path), "--local", "--scheduler", "tcp://x:1"])
    assert exc.value.code == 2
    assert no_cluster == []


@pytest.mark.skipif(not (FIXTURES / "combined_netcdf_partial.nc").exists(), reason="shared fixtures missing")
def test_inspect_table_of_a_partial_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = FIXTURES / "combined_netcdf_partial.nc"
    for suffix in (".nc", ".json"):
        shutil.copy(src.with_suffix(suffix), tmp_path / f"e{suffix}")
    assert main(["inspect", str(tmp_path / "e.nc")]) == 1  # partial -> 1
    out = capsys.readouterr().out
    assert "layout  combined   format netcdf   items 3   status partial" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("toy_")}
    assert rows["toy_stats"][1:] == ["ok", "3", "0", "3x8", "3x4x16x16"]
    assert rows["toy_flaky"][1:] == ["partial", "2", "1", "3x16", "3x4x16x16"]
    assert "toy_flaky: ModelError('toy_flaky: simulated failure on this spatial')" in out
    assert main(["inspect", str(tmp_path / "e.nc"), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_items"] == 3
    assert [m["n_failed"] for m in summary["models"]] == [0, 1]
    assert main(["inspect", str(tmp_path / "nope.zarr")]) == 2


@pytest.mark.skipif(not (FIXTURES / "combined_npz_grid.npz").exists(), reason="shared fixtures missing")
def test_inspect_ok_export_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = FIXTURES / "combined_npz_grid.npz"
    for suffix in (".npz", ".json"):
        shutil.copy(src.with_suffix(suffix), tmp_path / f"g{suffix}")
    assert main(["inspect", str(tmp_path / "g.npz")]) == 0
    assert "status ok" in capsys.readouterr().out


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).with_name("rs-embed-dask")
    for cmd in ([sys.executable, "-m", "rs_embed_dask", "models"], [str(script), "models"]):
        if not Path(cmd[0]).exists():
            pytest.skip("console script not installed")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "rcf" in proc.stdout.split()
