"""The notebooks in ``notebooks/`` run top to bottom and write their plots as PNG files.

The figures they write are copied to ``docs/images/`` under the same names, where the
README shows them: running these tests refreshes the images.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
#: where the figures are kept for the README
IMAGES = REPO_ROOT / "docs" / "images"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KERNEL_NAME = "rs-embed-dask-test"

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

#: notebooks that run an export with its progress bar on
WIDGET_PROGRESS = {"cluster"}

EXPECTED = {
    "quickstart": ["quickstart_input_and_grid.png", "quickstart_map_pca.png", "quickstart_map_kmeans.png"],
    "cluster": ["cluster_region_kmeans.png"],
    "analysis": ["analysis_kmeans_map.png", "analysis_pca_map.png", "analysis_class_spectra.png"],
}


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> Path:
    """A kernelspec that runs this interpreter (this venv), found first on JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rs-embed-dask tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    out = tmp_path / "out"
    monkeypatch.setenv("RS_EMBED_NOTEBOOK_OUT", str(out))
    monkeypatch.delenv("RS_EMBED_ANALYSIS_EXPORT", raising=False)
    return out


def run_notebook(name: str, cwd: Path) -> object:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=300,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    nbformat.write(nb, cwd.parent / f"{name}.executed.ipynb")  # kept in tmp_path for debugging
    return nb


@pytest.mark.parametrize("name", list(EXPECTED))
def test_notebook_runs_and_writes_pngs(name: str, kernel_env: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    nb = run_notebook(name, cwd)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # the kernel wrote where it was told, not into its working directory
    assert not list(cwd.iterdir())
    IMAGES.mkdir(parents=True, exist_ok=True)
    for png in EXPECTED[name]:
        data = (kernel_env / png).read_bytes()
        assert data[:8] == PNG_MAGIC, png
        assert len(data) > 5000, png
        shutil.copyfile(kernel_env / png, IMAGES / png)
    # figures are displayed inline too
    assert any("image/png" in o.get("data", {}) for o in outputs)
    # progress bars are widgets (ipywidgets installed), never tqdm's plain-text fallback
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "TqdmWarning" not in streams
    assert "IProgress not found" not in streams
    if name in WIDGET_PROGRESS:
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_jupyterlab_and_the_dask_extension_are_installed() -> None:
    """The `notebooks` extra brings JupyterLab and dask-labextension (the dashboard inside JupyterLab)."""
    import subprocess

    jupyter = Path(sys.executable).with_name("jupyter")
    out = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().split(".")[0].isdigit()
    assert int(out.stdout.split(".")[0]) >= 4
    ext = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    assert "dask-labextension" in ext.stdout + ext.stderr
