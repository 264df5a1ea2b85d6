"""Shared fixtures of the test suite.

Provider contract hook
----------------------
``tests/test_providers_contract.py`` runs one contract over every provider
named in :data:`PROVIDER_CONTRACT_CASES`.  To put a provider under it, write a
fixture returning a factory ``make(spatials) -> (provider_options, sensor)``:
given the list of ROIs the contract will fetch, it returns the keyword options
to build the provider with (``Provider(**provider_options)``) and a
:class:`~rs_embed_dask.specs.SensorSpec` with at least two bands that provider
can deliver for those ROIs offline (for ``local``: write a raster covering them
under ``tmp_path`` and point the options at it).  Then add
``"<provider name>": "<fixture name>"`` to the dict.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rs_embed_dask.specs import SensorSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

#: provider name -> name of a fixture giving ``make(spatials) -> (provider_options, sensor)``
PROVIDER_CONTRACT_CASES: dict[str, str] = {
    "synthetic": "synthetic_provider_case",
    "local": "local_provider_case",
}

ProviderCase = Callable[[Sequence[Any]], tuple[dict[str, Any], SensorSpec]]


@pytest.fixture
def synthetic_provider_case() -> ProviderCase:
    """The synthetic world covers the globe: default options, four S2 bands."""

    def make(spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
        return {}, SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B2", "B3", "B4", "B8"))

    return make


@pytest.fixture
def local_provider_case(tmp_path: Path) -> ProviderCase:
    """One EPSG:3857 GeoTIFF tile per ROI (its grid window plus 8 pixels) of the synthetic world."""

    def make(spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
        import rasterio

        from rs_embed_dask.geometry import GridWindow, grid_window
        from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider

        bands = ("B2", "B3", "B4", "B8")
        folder = tmp_path / "local_contract_tiles"
        folder.mkdir(exist_ok=True)
        for i, sp in enumerate(spatials):
            w = grid_window(sp, 10)
            w = GridWindow(w.col_off - 8, w.row_off - 8, w.width + 16, w.height + 16, w.scale_m)
            data = SyntheticProvider().render(w, None, [S2_BANDS.index(b) for b in bands])
            with rasterio.open(
                folder / f"tile_{i:04d}.tif", "w", driver="GTiff", width=w.width, height=w.height,
                count=len(bands), dtype="float32", crs="EPSG:3857", transform=w.transform,
            ) as dst:  # fmt: skip
                dst.write(data)
                dst.descriptions = bands
        return {"path": str(folder)}, SensorSpec(collection="local", bands=bands)

    return make


@pytest.fixture
def run_python() -> Callable[[str], str]:
    """Run Python code in a fresh interpreter (same venv, repo root as cwd); return stdout."""

    def run(code: str, timeout: float = 120.0) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"subprocess failed:\n{proc.stderr}"
        return proc.stdout.strip()

    return run
