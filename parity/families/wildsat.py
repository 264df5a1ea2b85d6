"""wildsat: a torchvision backbone and WildSAT's three-branch decoder, written as the authors' training checkpoint.

rs-embed 0.3.1 downloads the checkpoint from Google Drive; both sides here
read the same local file the way rs-embed reads one, through
``RS_EMBED_WILDSAT_CKPT`` (:func:`side_env`).  The file is what WildSAT's
``train.py`` saves: ``{"satellite_state_dict": {"backbone.<torchvision key>",
"decoder.backbone{1,2,3}.0.weight"}, "opt": argparse.Namespace, "epoch", ...}``;
rs-embed loads ``backbone.*`` with ``strict=False`` and rebuilds the image
head from decoder branch 3, ours loads the backbone with ``strict=True``.

The variant is ``$PARITY_WILDSAT_VARIANT`` (default ``vitb16``; ``resnet50``,
``swint``): both sides get ``RS_EMBED_WILDSAT_ARCH`` set to it, and the
checkpoint is that variant's file.  Run one variant per ``--workdir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

VARIANT = os.environ.get("PARITY_WILDSAT_VARIANT", "vitb16").strip().lower()
_FILES = {"vitb16": "vitb16-imagenet-bnfc.pth", "resnet50": "resnet50-imagenet-bnfc.pth",
          "swint": "swint-imagenet-bnfc.pth"}  # fmt: skip
if VARIANT not in _FILES:
    raise ValueError(f"PARITY_WILDSAT_VARIANT must be one of {sorted(_FILES)}; got {VARIANT!r}")
#: a stand-in repository of the harness's cache (the published file is on Google Drive, not the hub)
REPO = "cvl-umass/wildsat"
MODELS = {"wildsat": 10}
HUB_FILES = {"wildsat": {"rs_embed": (REPO, _FILES[VARIANT])}}
COMMON_EMBED_DIM = 256


def build(model: str) -> tuple[Any, None]:
    """WildSAT's ``SingleTaskModel`` layout: rs-embed's torchvision backbone and a ``threelinearnobias`` decoder."""
    import torchvision  # type: ignore[import-untyped]
    from torch import nn

    backbone = {"vitb16": torchvision.models.vit_b_16, "resnet50": torchvision.models.resnet50,
                "swint": torchvision.models.swin_t}[VARIANT](weights=None)  # fmt: skip
    decoder = nn.Module()
    for b in (1, 2, 3):  # text, species (SINR) and image branches: Linear(1000, 256, bias=False)
        decoder.add_module(f"backbone{b}", nn.Sequential(nn.Linear(1000, COMMON_EMBED_DIM, bias=False)))
    model_ = nn.Module()
    model_.add_module("backbone", backbone)
    model_.add_module("decoder", decoder)
    return model_, None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """``torch.save`` of the training checkpoint (an ``argparse.Namespace`` under ``opt``, as ``train.py``)."""
    import argparse

    import torch

    opt = argparse.Namespace(satellite_encoder=VARIANT, satellite_head="threelinearnobias",
                             common_embed_dim=COMMON_EMBED_DIM, use_bnft=True, is_tunefc=True)  # fmt: skip
    sd = {k: v.detach().contiguous().clone() for k, v in state.items()}
    torch.save({"epoch": 1, "satellite_state_dict": sd, "opt": opt, "loss": 0.0, "scheduler": None},
               Path(snapshot) / files[0])  # fmt: skip


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """``RS_EMBED_WILDSAT_CKPT`` (the file in the harness's cache) and ``RS_EMBED_WILDSAT_ARCH`` for both sides."""
    from parity.weights import snapshot_dir

    path = snapshot_dir(Path(workdir) / "hf" / "hub", REPO, seed) / _FILES[VARIANT]
    return {"RS_EMBED_WILDSAT_CKPT": str(path), "RS_EMBED_WILDSAT_ARCH": VARIANT}
