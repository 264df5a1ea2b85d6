"""gee: the fake Earth Engine boundary (``tests/fake_ee.py``) serving the synthetic world."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from rs_embed_dask.core.specs import SensorSpec

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(request: Any, spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)
    from fake_ee import FakeEarthEngine

    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    FakeEarthEngine().install(monkeypatch)
    options = {"project": "contract-project", "retry_backoff_s": 0.0}
    return options, SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B2", "B3", "B4", "B8"))


CASES = {"gee": make}
