"""The case type of precomputed products (``tests/test_models_contract.py::TestPrecomputedContract``).

A precomputed product has no preprocessing and no forward pass: its case
writes a small copy of the product in the product's own format (``setup``)
and names ROIs inside it, one partly outside its coverage and one wholly
outside.  Products served by a network service give ``patch``, which
installs fakes of that service's network boundary only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PrecomputedCase"]


@dataclass(frozen=True)
class PrecomputedCase:
    """What the precomputed contract needs to know about one product.

    Attributes
    ----------
    setup : callable
        ``setup(directory) -> dict``: writes the product fixture under
        ``directory`` once per session; returns the ``model_config`` reading it.
    spatials : tuple of BBox or PointBuffer
        At least two different ROIs fully covered by the fixture; the first
        spans at least two grid rows at the product's default scale.
    temporal : TemporalSpec or None
        The request's time.
    partial : BBox or PointBuffer
        A ROI partly covered (some NaN grid pixels, some valid).
    outside : BBox or PointBuffer
        A ROI with no valid pixel (a ``ModelError``).
    pooled_from_grid : bool
        Whether the pooled mean is the NaN-aware mean of the grid output
        (``False`` for products that pool their own native pixels).
    patch : callable, optional
        ``patch(monkeypatch)`` installing fakes of a network service.
    """

    setup: Callable[[Path], dict[str, Any]]
    spatials: tuple[Any, ...]
    temporal: Any
    partial: Any
    outside: Any
    pooled_from_grid: bool = True
    patch: Callable[[Any], None] | None = None
