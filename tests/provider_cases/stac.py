"""stac: a static catalogue of COGs (``tests/stac_catalog.py``) covering the ROIs, one clear scene a month."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from rs_embed_dask.core.specs import SensorSpec

SCENE_DATES = ("2022-06-12", "2022-07-14", "2022-08-16")


def make(request: Any, spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
    pytest.importorskip("pystac_client")
    pytest.importorskip("odc.stac")
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from stac_catalog import Scene, build_catalog

    from rs_embed_dask.geometry import GridWindow, grid_window

    bands = ("B2", "B3", "B4", "B8")
    wins = [grid_window(sp, 10) for sp in spatials]
    c0 = min(w.col_off for w in wins) - 8
    r0 = min(w.row_off for w in wins) - 8
    c1 = max(w.col_off + w.width for w in wins) + 8
    r1 = max(w.row_off + w.height for w in wins) + 8
    cover = GridWindow(c0, r0, c1 - c0, r1 - r0, 10.0)
    scenes = [Scene(f"s{i}", d, cover, cloud_cover=5.0, offset=50.0 * i) for i, d in enumerate(SCENE_DATES)]
    root = request.getfixturevalue("tmp_path") / "stac_contract_catalog"
    catalog = build_catalog(root, scenes, bands=bands)
    return {"catalog_url": catalog}, SensorSpec(collection="stac:sentinel-2-l2a", bands=bands)


CASES = {"stac": make}
