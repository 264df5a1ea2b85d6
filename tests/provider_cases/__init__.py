"""Per-provider cases of the provider contract (``tests/test_providers_contract.py``).

Each module of this package holds ``CASES: dict[str, Callable]``: provider
name -> ``make(request, spatials) -> (provider_options, sensor)``.  Given the
pytest ``request`` (for ``tmp_path``, ``monkeypatch``, ...) and the ROIs the
contract will fetch, ``make`` returns the keyword options to build the
provider with (``Provider(**provider_options)``) and a
:class:`~rs_embed_dask.core.specs.SensorSpec` with at least two bands the provider
can deliver for those ROIs offline (``local``: writes a raster covering them
under ``tmp_path``; ``gee``: installs the fake Earth Engine boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from _cases import collect_cases

from rs_embed_dask.core.specs import SensorSpec

__all__ = ["ProviderCase", "collect"]

ProviderCase = Callable[[Any, Sequence[Any]], tuple[dict[str, Any], SensorSpec]]


def collect() -> dict[str, ProviderCase]:
    """Every ``CASES`` dict of this package's modules, merged (duplicates are an error)."""
    return collect_cases(__name__, __path__, "provider")
