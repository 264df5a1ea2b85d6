"""Plain scripts (no ``if __name__ == "__main__":``) work as in rs-embed.

rs-embed's documentation examples (``tests/data/doc_examples/``: the import
changed to ``rs_embed_dask``, ``backend="synthetic"`` for Earth Engine and
``rcf`` for models whose weights need a download; each file lists its
changes) run as top-level scripts in a fresh interpreter: an export starts
the embedded local cluster, whose worker processes must not re-run the
script (:func:`rs_embed_dask.cluster.worker_setup.spawn_without_main`).

The ``spawn_without_main`` cases run in this process and start nothing; the
script cases are ``slow`` (each export starts a cluster: seconds).
"""

from __future__ import annotations

import json
import multiprocessing.spawn
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask.cluster.worker_setup import spawn_without_main

EXAMPLES = Path(__file__).resolve().parent / "data" / "doc_examples"
#: manifest fields that differ between two identical runs: times (``created_at``, ``completed_at``)
VOLATILE_SUFFIXES = ("_at",)


# --- spawn_without_main, in this process -------------------------------------------------------


def _rerun_keys() -> set[str]:
    """What a spawned child would be told to re-run as its main module."""
    data = multiprocessing.spawn.get_preparation_data("probe")
    return {k for k in ("init_main_from_path", "init_main_from_name") if k in data}


@pytest.fixture
def script_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A ``__main__`` module that is a script file, as under ``python script.py``."""
    import types

    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "script.py")
    main.__spec__ = None
    main.answer = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def test_spawned_children_do_not_rerun_the_script(script_main: Any) -> None:
    assert _rerun_keys() == {"init_main_from_path"}
    with spawn_without_main() as hidden:
        assert hidden
        assert _rerun_keys() == set()
        view = sys.modules["__main__"]
        assert view.answer == 42  # the script's globals read through
        view.written = "x"  # and writes land in the script's module
        assert script_main.written == "x"
        assert not hasattr(view, "__file__")
        assert view.__spec__ is None
    assert sys.modules["__main__"] is script_main
    assert script_main.__file__.endswith("script.py")  # the module itself is never changed
    assert _rerun_keys() == {"init_main_from_path"}


def test_nested_and_concurrent_uses_restore_on_the_last_exit(script_main: Any) -> None:
    with spawn_without_main():
        with spawn_without_main() as inner:
            assert inner
        assert _rerun_keys() == set()  # the outer cluster still runs
    assert sys.modules["__main__"] is script_main


def test_python_m_module_is_hidden_too(script_main: Any) -> None:
    import importlib.machinery

    script_main.__spec__ = importlib.machinery.ModuleSpec("mypkg.run_export", None)
    assert _rerun_keys() == {"init_main_from_name"}
    with spawn_without_main() as hidden:
        assert hidden
        assert _rerun_keys() == set()
    assert sys.modules["__main__"] is script_main


def test_nothing_to_hide_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    main = types.ModuleType("__main__")  # python -c, an interactive session, a notebook kernel
    monkeypatch.setitem(sys.modules, "__main__", main)
    with spawn_without_main() as hidden:
        assert not hidden
        assert sys.modules["__main__"] is main


# --- the documentation examples as plain scripts ---------------------------------------------


def _run(
    script: Path, cwd: Path, source: str | None = None, timeout: float = 420.0
) -> subprocess.CompletedProcess:
    """Write ``source`` (default: the example's own text) to ``cwd`` and run it there."""
    cwd.mkdir(parents=True, exist_ok=True)
    path = cwd / script.name
    path.write_text(script.read_text() if source is None else source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["RS_EMBED_DASK_IN_PROCESS_CHUNKS"] = "0"  # these scripts test the cluster path, even for a few ROIs
    return subprocess.run(
        [sys.executable, path.name],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _guarded(script: Path) -> str:
    """The same example under ``if __name__ == "__main__":``."""
    return 'if __name__ == "__main__":\n' + textwrap.indent(script.read_text(), "    ")


def _ok(proc: subprocess.CompletedProcess) -> list[str]:
    """The script's own output lines, once it has exited cleanly."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    first = proc.stderr.find("Traceback")
    assert first < 0, proc.stderr[max(0, first - 1000) : first + 6000]
    return [ln for ln in proc.stdout.splitlines() if not ln.startswith("rs-embed-dask:")]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".py"}


def _stable(manifest: Any) -> Any:
    if isinstance(manifest, dict):
        return {k: _stable(v) for k, v in manifest.items() if not k.endswith(VOLATILE_SUFFIXES)}
    if isinstance(manifest, list):
        return [_stable(v) for v in manifest]
    return manifest


@pytest.mark.slow
def test_embedding_examples_run_as_a_plain_script(tmp_path: Path) -> None:
    lines = _ok(_run(EXAMPLES / "embedding.py", tmp_path))
    assert lines == ["get_embedding (512,)", "get_embeddings_batch 2 (512,)"]


@pytest.mark.slow
@pytest.mark.cluster
def test_combined_export_and_load_examples_plain_equals_guarded(tmp_path: Path) -> None:
    script = EXAMPLES / "export_combined.py"
    plain, guarded = tmp_path / "plain", tmp_path / "guarded"
    lines = _ok(_run(script, plain))
    # every print once: the export and the loads ran once, in this process only
    assert lines == [
        "1",
        "['rcf']",
        "{'mode': 'range', 'year': None, 'start': '2022-06-01', 'end': '2022-09-01'}",
        "(1, 4, 410, 410)",
        "rcf: (1, 512)",
    ]
    assert _files(plain) == {"exports/combined_run.npz", "exports/combined_run.json"}

    assert _ok(_run(script, guarded, source=_guarded(script))) == lines
    assert _files(guarded) == _files(plain)
    with np.load(plain / "exports/combined_run.npz") as a, np.load(guarded / "exports/combined_run.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    manifests = [json.loads((d / "exports/combined_run.json").read_text()) for d in (plain, guarded)]
    assert _stable(manifests[0]) == _stable(manifests[1])


@pytest.mark.slow
@pytest.mark.cluster
def test_per_item_export_load_and_export_npz_examples_run_as_a_plain_script(tmp_path: Path) -> None:
    lines = _ok(_run(EXAMPLES / "export_per_item.py", tmp_path))
    assert lines == ["per_item", "2", "(2, 512)", "(1, 512)"]
    assert _files(tmp_path) == {
        "exports/p1.npz", "exports/p1.json", "exports/p2.npz", "exports/p2.json",
        "exports/_rs_embed_dask_export.json",  # our folder manifest; rs-embed pairs only <base>.npz with <base>.json
        "single/one_roi.npz", "single/one_roi.json",
    }  # fmt: skip


# a plain script with its own model class: the workers are processes of their own, get the class
# from the export (pickled by value: it lives in __main__), and never run the script's top level
CUSTOM_MODEL = """
import os
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch, load_export
from rs_embed_dask.models.rcf import RCFEmbedder
from rs_embed_dask.core.registry import register_model

with open("top_level_runs.txt", "a") as f:
    f.write(f"{os.getpid()}\\n")


class MarkedRCF(RCFEmbedder):
    def build_module(self):
        with open("model_pids.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")
        return super().build_module()


register_model("marked_rcf", MarkedRCF)
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 640), PointBuffer(120.5, 30.2, 640)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["marked_rcf"],
    target=ExportTarget.combined("out/run"),
    config=ExportConfig(show_progress=False),
    backend="synthetic",
)
print("exported", load_export("out/run.npz").embedding("marked_rcf").shape)
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_plain_script_exports_on_process_workers_that_never_rerun_it(tmp_path: Path) -> None:
    script = tmp_path / "custom_model.py"
    script.write_text(CUSTOM_MODEL)
    lines = _ok(_run(script, tmp_path))
    assert lines == ["exported (2, 512)"]
    top_level = (tmp_path / "top_level_runs.txt").read_text().split()
    model_pids = set((tmp_path / "model_pids.txt").read_text().split())
    assert len(top_level) == 1  # the script's top level ran once, in the script's process
    assert model_pids
    assert top_level[0] not in model_pids  # the model ran in a worker process
