"""The ``rs-embed-dask`` command line, in process (no cluster is started here)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rs_embed_dask import __version__
from rs_embed_dask import cluster as clusters
from rs_embed_dask.cli import build_parser, main
from rs_embed_dask.cli.rs_embed_compat import (
    parse_bands,
    parse_models,
    parse_provider_option,
    parse_value_range,
)

REPO = Path(__file__).resolve().parents[1]
#: rs-embed 0.3.1's files, copied into the repository (a missing file fails, never skips)
FIXTURES = Path(__file__).resolve().parent / "data" / "upstream_exports"
COMMANDS = ("export", "models", "describe", "inspect", "ls", "demo", "cluster", "export-npz", "inspect-gee")


#: rs-embed 0.3.1's flags of its two commands (plus ours: --provider-option, --scheduler, --backend)
EXPORT_NPZ_FLAGS = (
    "--models", "--out", "--bbox", "--pointbuffer", "--year", "--range", "--backend", "--device", "--output",
    "--pooling", "--collection", "--bands", "--scale-m", "--cloudy-pct", "--fill-value", "--composite",
    "--value-range", "--no-inputs", "--no-embeddings", "--no-json", "--fail-on-bad-input",
    "--continue-on-error", "--max-retries", "--retry-backoff-s", "--provider-option", "--scheduler",
)  # fmt: skip
INSPECT_GEE_FLAGS = (
    "--collection", "--bands", "--scale-m", "--cloudy-pct", "--fill-value", "--composite", "--bbox",
    "--pointbuffer", "--year", "--range", "--value-range", "--save-dir", "--backend", "--provider-option",
)  # fmt: skip


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rs-embed-dask")
    if command in (None, "inspect"):
        assert "exit codes:" in out
        assert "2  bad input" in out
    if command is None:
        assert all(c in out for c in COMMANDS)
    elif command == "export":
        assert all(flag in out for flag in ("--scheduler", "--scheduler-file", "--jobqueue", "--resume"))
    elif command == "export-npz":
        assert all(flag in out for flag in EXPORT_NPZ_FLAGS)
    elif command == "inspect-gee":
        assert all(flag in out for flag in INSPECT_GEE_FLAGS)


def test_every_subcommand_has_help_text() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[arg-type]
    assert all(h.help for h in sub._choices_actions)  # type: ignore[attr-defined]


def test_models_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert "rcf" in names
    assert "mosaiks" not in names
    assert main(["models", "--names", "--aliases"]) == 0
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
    assert "toy_flaky (1 item: 1): ModelError('toy_flaky: simulated failure on this spatial')" in out
    assert main(["inspect", str(tmp_path / "e.nc"), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    flaky = next(m for m in summary["models"] if m["name"] == "toy_flaky")
    assert flaky["errors"] == [
        {"message": "ModelError('toy_flaky: simulated failure on this spatial')", "n_items": 1, "items": [1]}
    ]
    assert summary["n_items"] == 3
    assert [m["n_failed"] for m in summary["models"]] == [0, 1]
    assert main(["inspect", str(tmp_path / "nope.zarr")]) == 2


def test_inspect_ok_export_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = FIXTURES / "combined_npz_grid.npz"
    for suffix in (".npz", ".json"):
        shutil.copy(src.with_suffix(suffix), tmp_path / f"g{suffix}")
    assert main(["inspect", str(tmp_path / "g.npz")]) == 0
    assert "status ok" in capsys.readouterr().out


def test_inspect_prints_whole_error_messages() -> None:
    from rs_embed_dask.inspect_export import format_summary

    long = "ModelError('" + "x" * 300 + "')"
    row = {"status": "failed", "n_ok": 0, "n_failed": 1, "embeddings": "-", "inputs": "-"}
    summary = {
        "path": "p.npz", "layout": "combined", "format": "npz", "n_items": 1, "status": "failed",
        "models": [
            {**row, "name": "a", "error": long},
            {**row, "name": "b", "error": "Traceback (most recent call last):\n  File 'f.py'\nValueError: boom"},
            {**row, "name": "c", "error": None, "status": "ok"},
        ],
    }  # fmt: skip
    lines = format_summary(summary).splitlines()
    start = lines.index("failures (every distinct message per model, whole):")
    assert lines[start + 1] == f"  a: {long}"
    assert lines[start + 2 :] == ["  b: Traceback (most recent call last):", "      File 'f.py'", "    ValueError: boom"]
    assert "failures" not in format_summary({**summary, "models": [summary["models"][2]]})


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"rs-embed-dask {__version__}"


def test_python_dash_m_and_console_script_agree() -> None:
    """``python -m rs_embed_dask --version`` and the console script (one subprocess each)."""
    proc = subprocess.run(
        [sys.executable, "-m", "rs_embed_dask", "--version"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"rs-embed-dask {__version__}"
    script = Path(sys.executable).with_name("rs-embed-dask")
    if not script.exists():
        pytest.skip("console script not installed")
    proc = subprocess.run([str(script), "models"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rcf" in proc.stdout.split()


# -- rs-embed's export-npz and inspect-gee ------------------------------------------------------

ROI = ["--pointbuffer", "121.5", "31.2", "320"]


@pytest.fixture
def fake_export(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replaces ``export_batch`` with a recorder returning a small manifest (no export, no cluster)."""
    import rs_embed_dask

    calls: list[dict[str, Any]] = []

    def fake(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"status": "ok", "n_items": 1, "npz_path": kwargs["target"].out_file}

    monkeypatch.setattr(rs_embed_dask, "export_batch", fake)
    return calls


def test_export_npz_defaults_are_rs_embeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_export: list[dict[str, Any]]
) -> None:
    from rs_embed_dask import BBox, ExportConfig, ExportTarget, OutputSpec

    out = str(tmp_path / "x.npz")
    assert main(["export-npz", "--models", "rcf, remoteclip", "--out", out, "--bbox", "1", "2", "1.01", "2.01"]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "ok", "n_items": 1, "npz_path": out}
    (kw,) = fake_export
    assert kw["spatials"] == [BBox(1.0, 2.0, 1.01, 2.01)]
    assert kw["temporal"] is None
    assert kw["models"] == ["rcf", "remoteclip"]
    assert kw["target"] == ExportTarget.combined(out)
    assert kw["config"] == ExportConfig()
    assert kw["output"] == OutputSpec.pooled("mean")
    assert (kw["sensor"], kw["backend"], kw["device"]) == (None, "gee", "auto")
    assert (kw["client"], kw["provider_options"]) == (None, None)


def test_export_npz_every_flag_reaches_export_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_export: list[dict[str, Any]]
) -> None:
    from rs_embed_dask import ExportConfig, OutputSpec, PointBuffer, SensorSpec, TemporalSpec

    closed: list[bool] = []

    class FakeClient:
        def close(self) -> None:
            closed.append(True)

    connected: list[tuple[Any, ...]] = []
    monkeypatch.setattr(clusters, "connect", lambda *a, **k: connected.append(a) or FakeClient())
    argv = ["export-npz", "--models", "rcf", "--out", str(tmp_path / "y"), *ROI, "--range", "2022-06-01",
            "2022-09-01", "--backend", "synthetic", "--device", "cpu", "--output", "grid", "--collection",
            "COPERNICUS/S2_SR_HARMONIZED", "--bands", "B2,B3 ,B4", "--scale-m", "20", "--cloudy-pct", "10",
            "--fill-value", "-1", "--composite", "mosaic", "--no-inputs", "--no-embeddings", "--no-json",
            "--fail-on-bad-input", "--continue-on-error", "--max-retries", "2", "--retry-backoff-s", "0.5",
            "--provider-option", "seed=3", "--provider-option", "latency_s=0.25", "--provider-option", "tag=a=b",
            "--scheduler", "tcp://10.0.0.5:8786"]  # fmt: skip
    assert main(argv) == 0
    (kw,) = fake_export
    assert kw["spatials"] == [PointBuffer(121.5, 31.2, 320.0)]
    assert kw["temporal"] == TemporalSpec.range("2022-06-01", "2022-09-01")
    assert kw["output"] == OutputSpec.grid()
    assert kw["sensor"] == SensorSpec(
        "COPERNICUS/S2_SR_HARMONIZED", ("B2", "B3", "B4"), scale_m=20, cloudy_pct=10, fill_value=-1.0,
        composite="mosaic", check_input=True, check_raise=False,
    )  # fmt: skip
    assert kw["config"] == ExportConfig(
        save_inputs=False, save_embeddings=False, save_manifest=False, fail_on_bad_input=True,
        continue_on_error=True, max_retries=2, retry_backoff_s=0.5,
    )  # fmt: skip
    assert (kw["backend"], kw["device"]) == ("synthetic", "cpu")
    assert kw["provider_options"] == {"seed": 3, "latency_s": 0.25, "tag": "a=b"}
    assert isinstance(kw["client"], FakeClient)
    assert connected == [("tcp://10.0.0.5:8786",)]
    assert closed == [True]
    fake_export.clear()
    assert main(["export-npz", "--models", "rcf", "--out", "z.npz", *ROI, "--year", "2021", "--pooling", "max"]) == 0
    assert fake_export[0]["temporal"] == TemporalSpec.year(2021)
    assert fake_export[0]["output"] == OutputSpec.pooled("max")


def test_export_npz_errors_are_rs_embeds(
    capsys: pytest.CaptureFixture[str], fake_export: list[dict[str, Any]], no_cluster: list[str]
) -> None:
    base = ["export-npz", "--models", "rcf", "--out", "x.npz", *ROI]
    with pytest.raises(SystemExit, match=r"^--value-range is currently supported only for inspect-gee\.$"):
        main([*base, "--value-range", "0,1"])
    with pytest.raises(SystemExit, match=r"^--bands is required when --collection is provided for export-npz$"):
        main([*base, "--collection", "COPERNICUS/S2_SR_HARMONIZED"])
    usage_errors = {  # argparse: exit 2, the message on stderr
        "--models must be a comma-separated list, e.g. 'remoteclip,prithvi'": ["--models", " , "],
        "--bands must be a comma-separated list, e.g. 'B4,B3,B2'": ["--bands", ","],
        "--value-range must be 'lo,hi' (floats)": ["--value-range", "1"],
        "--provider-option expects KEY=VALUE": ["--provider-option", "seed"],
        "not allowed with argument": ["--bbox", "1", "2", "3", "4"],
        "argument --output: invalid choice": ["--output", "patch"],
    }
    for message, extra in usage_errors.items():
        with pytest.raises(SystemExit) as exc:
            main([*base, *extra])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # the spatial group is required
        main(["export-npz", "--models", "rcf", "--out", "x.npz"])
    assert exc.value.code == 2
    assert "one of the arguments --bbox --pointbuffer is required" in capsys.readouterr().err
    assert fake_export == []
    assert no_cluster == []


def test_parse_helpers_raise_argument_type_error() -> None:
    for parse, bad in ((parse_models, " , "), (parse_bands, ""), (parse_value_range, "1,2,3"),
                       (parse_value_range, "a,b"), (parse_provider_option, "=1")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    assert parse_bands(" B4, B3,B2 ") == ("B4", "B3", "B2")
    assert parse_value_range("0, 3000") == (0.0, 3000.0)
    assert parse_value_range("") is None
    assert parse_provider_option("flag=true") == ("flag", True)


@pytest.mark.slow
@pytest.mark.cluster
def test_export_npz_on_synthetic_writes_files_and_prints_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One real export (embedded local cluster): stdout is the manifest alone, as rs-embed prints it."""
    from rs_embed_dask import load_export

    out = tmp_path / "sub" / "roi.npz"
    argv = ["export-npz", "--models", "rcf", "--out", str(out), *ROI, "--year", "2022", "--backend", "synthetic"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    manifest = json.loads(captured.out)  # nothing but the JSON on stdout
    assert manifest["status"] == "ok"
    assert manifest["backend"] == "synthetic"
    assert [m["model"] for m in manifest["models"]] == ["rcf"]
    assert manifest["npz_path"] == str(out)
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == manifest
    res = load_export(out)
    try:
        assert res.n_items == 1
        assert res.embedding("rcf").shape == (1, 512)
        assert res.models["rcf"].inputs_lazy.shape == (1, 4, 64, 64)
    finally:
        res.close()


def test_inspect_gee_on_synthetic_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["inspect-gee", "--backend", "synthetic", "--collection", "COPERNICUS/S2_SR_HARMONIZED", "--bands",
            "B4,B3,B2", *ROI, "--year", "2022", "--value-range", "0,10000", "--provider-option", "seed=1",
            "--save-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["ok"], bool)
    assert out["backend"] == "synthetic"
    assert out["report"]["shape"][0] == 3
    assert "issues" in out["report"]
    assert out["sensor"]["bands"] == ["B4", "B3", "B2"]
    assert (out["sensor"]["check_input"], out["sensor"]["check_raise"]) == (True, False)
    assert out["sensor"]["check_save_dir"] == str(tmp_path)
    assert out["temporal"]["year"] == 2022
    assert "array_chw" not in out
    png = Path(out["artifacts"]["quicklook_rgb"])  # first 3 bands, written to --save-dir
    assert png.parent == tmp_path
    assert png.read_bytes().startswith(b"\x89PNG")


def test_export_npz_bad_request_is_bad_input_before_any_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_cluster: list[str]
) -> None:
    argv = ["export-npz", "--models", "rcf,nope", "--out", str(tmp_path / "x.npz"), *ROI, "--backend", "synthetic"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("rs-embed-dask: error: Unknown model 'nope'")
    assert no_cluster == []
    assert list(tmp_path.iterdir()) == []
