"""terrafm: rs-embed's vendored TerraFM-B (``_vendor/terrafm.terrafm_base``), written as ``TerraFM-B.pth``.

The published ``MBZUAI/TerraFM/TerraFM-B.pth`` is the flat state dict of
``terrafm_base()`` (rs-embed loads it with ``strict=False``); ours loads the
same file with ``strict=True``.  The cases run twice: Sentinel-2 (the
default, 12 bands) and ``modality="s1"`` (``VV, VH`` linear backscatter,
which rs-embed fetches through the provider's ``fetch_s1_vvvh_raw_chw_with_meta``).
"""

from __future__ import annotations

from typing import Any

MODELS = {"terrafm": 10}
HUB_FILES = {"terrafm": {"rs_embed": ("MBZUAI/TerraFM", "TerraFM-B.pth")}}
MODALITIES = {"terrafm": {"s1": 224}}


def build(model: str) -> tuple[Any, None]:
    """rs-embed's ``terrafm_base()`` with default init (``torch.save`` of its state dict is the published format)."""
    from rs_embed.embedders._vendor.terrafm import terrafm_base

    return terrafm_base(), None
