"""``rs-embed-dask models`` (the table) and ``rs-embed-dask ls DIR`` (the exports in a folder)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch
from rs_embed_dask.cli import main
from rs_embed_dask.core.errors import SpecError
from rs_embed_dask.export.lock import TargetLock
from rs_embed_dask.models.satmae import CHECKPOINT as SATMAE

FIXTURES = Path(__file__).resolve().parent / "data" / "upstream_exports"
T = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(121.5 + 0.01 * i, 31.2, 320) for i in range(3)]


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, no weights variables, and a hub endpoint nothing listens on."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("RS_EMBED_SATMAE_WEIGHTS", "RS_EMBED_REMOTECLIP_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    return cache


def _rows(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict[str, Any]]:
    assert main(["models", "--json", *args]) == 0
    return {r["name"]: r for r in json.loads(capsys.readouterr().out)}


def test_models_table_has_the_columns_and_known_rows(hub_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    assert main(["models"]) == 0
    elapsed = time.perf_counter() - t0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("  ")[0] == "model"
    for col in ("type", "dims", "sensor / bands", "extra", "weights here"):
        assert col in lines[0]
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(("extra:", "weights here:"))}
    assert "on the fly" in rows["rcf"]
    assert "512" in rows["rcf"]
    assert "B2,B3,B4,B8" in rows["rcf"]
    assert "512 (grid 768)" in rows["remoteclip"]
    assert "precomputed" in rows["gse"]
    assert "gee (" in rows["gse"]
    assert rows["satmae"].rstrip().endswith("no")  # empty cache, nothing downloaded
    assert not any(hub_env.iterdir())
    assert elapsed < 60  # offline: no hub retries (torchgeo's import dominates)


def test_models_json_weights_found_from_env_and_from_the_hub_cache(
    hub_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(capsys)
    assert rows["satmae"]["weights"] == "no"
    assert rows["satmae"]["type"] == "on the fly"
    assert rows["satmae"]["pooled_dim"] == 1024
    assert rows["satmae"]["grid_dim"] is None
    assert rows["satmae"]["extra"] == "models"
    assert rows["rcf"]["weights"] == "-"
    assert rows["tessera"]["weights"] == "-"
    # a checkpoint given by the family's variable
    ckpt = tmp_path / "satmae.safetensors"
    ckpt.write_bytes(b"not read by the listing")
    monkeypatch.setenv("RS_EMBED_SATMAE_WEIGHTS", str(ckpt))
    assert _rows(capsys)["satmae"]["weights_files"] == [str(ckpt)]
    monkeypatch.delenv("RS_EMBED_SATMAE_WEIGHTS")
    # the same file in the Hugging Face cache (the layout huggingface_hub writes), offline
    folder = hub_env / f"models--{SATMAE.repo.replace('/', '--')}"
    commit = "a" * 40
    (folder / "snapshots" / commit).mkdir(parents=True)
    cached = folder / "snapshots" / commit / SATMAE.filename
    cached.write_bytes(b"x")
    (folder / "refs").mkdir()
    (folder / "refs" / (SATMAE.revision or "main")).write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row = _rows(capsys)["satmae"]
    assert row["weights"] == "yes"
    assert row["weights_files"] == [str(cached)]
    assert _rows(capsys, "--no-weights")["satmae"]["weights"] is None


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """A folder of finished exports of every layout (small: in-process runs), and rs-embed's partial ones."""
    out = tmp_path / "exports"
    out.mkdir()
    kw: dict[str, Any] = {"spatials": ROIS, "temporal": T, "models": ["rcf"], "backend": "synthetic"}
    export_batch(**kw, target=ExportTarget.combined(str(out / "a.npz")), config=ExportConfig(show_progress=False))
    export_batch(**kw, target=ExportTarget.combined(str(out / "b.zarr")), config=ExportConfig(format="zarr", show_progress=False))
    export_batch(**kw, target=ExportTarget.per_item(str(out / "items")), config=ExportConfig(show_progress=False))
    for suffix in (".npz", ".json"):
        shutil.copy(FIXTURES / f"combined_npz_partial{suffix}", out / f"partial{suffix}")
    shutil.copytree(FIXTURES / "per_item_npz_partial", out / "upstream_items")
    shutil.copytree(FIXTURES / "per_item_npz_all_failed", out / "upstream_failed")
    (out / "notes.txt").write_text("not an export")
    return out


def test_ls_lists_every_layout_with_status_and_size(exports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(exports), "--json"]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"a.npz", "b.zarr", "items", "partial.npz", "upstream_items", "upstream_failed"}
    assert (rows["a.npz"]["layout"], rows["a.npz"]["format"], rows["a.npz"]["n_items"]) == ("combined", "npz", 3)
    assert (rows["b.zarr"]["layout"], rows["b.zarr"]["format"]) == ("combined", "zarr")
    assert (rows["items"]["layout"], rows["items"]["n_items"]) == ("per_item", 3)
    for name in ("a.npz", "b.zarr", "items"):
        assert rows[name]["models"] == ["rcf"]
        assert rows[name]["status"] == "finished"
        assert rows[name]["size_bytes"] > 1000
    assert rows["partial.npz"]["status"] == "partial: toy_flaky 2 of 3 ok"
    assert rows["partial.npz"]["models"] == ["toy_stats", "toy_flaky"]
    assert rows["upstream_items"]["status"] == "partial: toy_flaky 2 of 3 ok"
    assert rows["upstream_failed"]["status"] == "failed: toy_broken 0 of 3 ok"
    assert main(["ls", str(exports)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["export", "layout", "format", "items", "models", "size", "status"]
    assert any(line.startswith("partial.npz") and line.endswith("partial: toy_flaky 2 of 3 ok") for line in table)


def test_ls_reads_manifests_only(exports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the arrays are destroyed: the listing, which never opens them, is unchanged
    (exports / "a.npz").write_bytes(b"garbage")
    for chunk in (exports / "b.zarr" / "models" / "rcf" / "embeddings").rglob("c/*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    assert main(["ls", str(exports), "--json"]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a.npz"]["status"] == "finished"
    assert rows["b.zarr"]["status"] == "finished"


def test_ls_of_a_missing_folder_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["ls", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no exports in {tmp_path}"


def _stream(rois: list[Any]) -> Iterator[Any]:
    yield from rois


@pytest.mark.cluster
def test_ls_shows_a_stopped_working_store_and_a_running_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [PointBuffer(10.0 + 0.01 * i, 45.0, 160) for i in range(6)]
    bad = PointBuffer(179.999, 10.0, 5000)
    out = tmp_path / "s.npz"
    with pytest.raises(SpecError, match=r"spatials\[3\]"):
        export_batch(spatials=_stream([*good[:3], bad, *good[4:]]), temporal=T, models=["rcf"], backend="synthetic",
                     target=ExportTarget.combined(str(out)), config=ExportConfig(chunk_size=2, show_progress=False, resume=True))  # fmt: skip
    assert (tmp_path / "s.npz.work.zarr").is_dir()
    assert main(["ls", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kind"] == "working store"
    assert row["state"] == "stopped"
    assert row["format"] == "npz"
    assert row["models"] == ["rcf"]
    assert "stopped (resume with resume=True or --resume)" in row["status"]
    with TargetLock(str(out)):  # a live writer of the target
        assert main(["ls", str(tmp_path), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "running"
    assert row["status"].endswith("; running")
