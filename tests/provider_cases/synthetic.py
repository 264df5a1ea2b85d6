"""synthetic: the world covers the globe; default options, four S2 bands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rs_embed_dask.core.specs import SensorSpec


def make(request: Any, spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
    return {}, SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B2", "B3", "B4", "B8"))


CASES = {"synthetic": make}
