"""gse: the fake Earth Engine boundary (``tests/fake_ee.py``) serving the annual embedding.

The fake's Satellite Embedding is a deterministic function of the synthetic
world in [-1, 1]; pixels whose centre lies east of 6.2 deg E are masked in the
product (outside its coverage), so ``partial`` straddles that meridian and
``outside`` lies beyond it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model_cases.precomputed import PrecomputedCase
from rs_embed_dask.core.specs import BBox, PointBuffer, TemporalSpec
from rs_embed_dask.geometry import lonlat_to_mercator

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE_X, _ = lonlat_to_mercator(6.2, 0.0)


def masked_east(window: Any) -> np.ndarray:
    """Pixels whose centre lies east of 6.2 deg E."""
    xs, _ = window.pixel_centers()
    return np.broadcast_to(xs[None, :] > EDGE_X, window.shape)


def _patch(monkeypatch: Any) -> None:
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)
    from fake_ee import FakeEarthEngine

    from rs_embed_dask.resolve import reset_runtime

    monkeypatch.setenv("EE_PROJECT", "contract-project")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    FakeEarthEngine(masked=masked_east).install(monkeypatch)
    reset_runtime()  # a gee provider cached by an earlier test must initialise against this fake


def _setup(directory: Path) -> dict[str, Any]:
    return {}


CASES = {
    "gse": PrecomputedCase(
        setup=_setup,
        spatials=(BBox(5.985, 45.02, 6.015, 45.03), PointBuffer(5.93, 45.07, 250.0), PointBuffer(6.04, 45.04, 120.0)),
        temporal=TemporalSpec.year(2023),
        partial=BBox(6.19, 45.04, 6.21, 45.05),
        outside=PointBuffer(6.5, 45.05, 300.0),
        patch=_patch,
    ),
}
