"""terramind: terratorch's TerraMind v1 small, written as the published ``TerraMind_v1_small.pt``.

The published file holds the whole any-to-any model; the random one holds the raw-input
encoder of every raw modality (``S2L2A``, ``S2L1C``, ``S1GRD``, ``S1RTC``, ``RGB``, ``DEM``)
built by terratorch's registry (``terramind_v1_small``, default init, parameters replaced
by seeded values).  rs-embed loads it through ``BACKBONE_REGISTRY.build(...,
pretrained=True)`` (terratorch's ``checkpoint_filter_fn``), ours keeps the S2L2A encoder's
keys and loads them with ``strict=True``: both read the very same file.
"""

from __future__ import annotations

from typing import Any

MODELS = {"terramind": 10}
NATIVE = {"terramind": 224}
HUB_FILES = {"terramind": {"rs_embed": ("ibm-esa-geospatial/TerraMind-1.0-small", "TerraMind_v1_small.pt")}}
_MODALITIES = ["S2L2A", "S2L1C", "S1GRD", "S1RTC", "RGB", "DEM"]


def build(model: str) -> tuple[Any, None]:
    """Terratorch's ``terramind_v1_small`` encoder of the raw modalities (default init)."""
    import importlib

    importlib.import_module("terratorch.models.backbones.terramind.model.terramind_register")
    from terratorch.registry import BACKBONE_REGISTRY

    return BACKBONE_REGISTRY.build("terramind_v1_small", pretrained=False, modalities=list(_MODALITIES)), None
