"""thor: rs-embed's vendored THOR v1 encoder (default variant ``base``), written as the published checkpoint.

The published ``FM4CS/THOR-1.0-base/thor_v1_vit_base.pt`` is a training
checkpoint ``{"state_dict": {"encoder.<key>": tensor}}``: rs-embed's loader
(``_vendor/thor_vit.load_thor_model`` -> ``ModelRegistry.build``) takes the
``encoder.`` keys, drops ``decoder_*``/``pos_embed*`` and loads the rest into
``ThorViTEncoder``; ours loads the same file with ``strict=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = {"thor": 10}
# the same calls with modality="s1" (VV/VH linear backscatter, rs-embed's S1 branch)
MODALITIES = {"thor": {"s1": 224}}
HUB_FILES = {"thor": {"rs_embed": ("FM4CS/THOR-1.0-base", "thor_v1_vit_base.pt")}}

# rs-embed's model bands for Sentinel-2 (``onthefly_thor._THOR_MODEL_BANDS``)
_S2_MODEL_BANDS = ["BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3", "NIR_BROAD", "NIR_NARROW",
                   "SWIR_1", "SWIR_2"]  # fmt: skip


def build(model: str) -> tuple[Any, None]:
    """rs-embed's ``ThorViTEncoder`` (base) with default init, built as rs-embed builds it (no weights)."""
    from rs_embed.embedders._vendor.thor_vit import load_thor_model

    wrapper = load_thor_model(
        model_name="thor_v1_base",
        model_bands=list(_S2_MODEL_BANDS),
        out_indices=[-1],
        return_channel_params=True,
        pretrained=False,
        input_params={"ground_covers": [2880], "flexivit_patch_size_seqs": [8]},
    )
    return wrapper.model, None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """Write ``{"state_dict": {"encoder.<key>": ...}}`` with ``torch.save``, as the published file."""
    import torch

    out = {f"encoder.{k}": v.detach().contiguous().clone() for k, v in state.items()}
    torch.save({"state_dict": out}, Path(snapshot) / files[0])
