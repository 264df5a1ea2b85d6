"""wildsat: a tiny torchvision ViT-B/16 layout with random weights in the WildSAT training-checkpoint format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from model_cases._vit_common import raw_tile, vit_case

#: a small backbone of the default variant's layout at 32 px (2 x 2 patches of 16 px; tests only)
TINY: dict[str, Any] = {"variant": "vitb16", "image_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2,
                        "num_classes": 16}  # fmt: skip
HEAD_DIM = 256


def wildsat_checkpoint(
    path: Path,
    *,
    arch: str = "vitb16",
    seed: int = 0,
    image_size: int = 32,
    depth: int = 1,
    embed_dim: int = 32,
    num_heads: int = 2,
    num_classes: int = 16,
    head: str = "threelinearnobias",
    prefix: str = "",
    extra_backbone: dict[str, Any] | None = None,
) -> Path:
    """Write a WildSAT training checkpoint with random weights, as the authors' ``train.py`` saves it.

    ``{"epoch", "satellite_state_dict": {"backbone.<torchvision key>", "decoder.<head keys>"},
    "sinr_state_dict", "text_emb_model", "optimizer", "opt": argparse.Namespace, "loss", "scheduler"}``;
    ``head`` is ``"threelinearnobias"`` (three bias-free branches ``decoder.backbone{1,2,3}.0``),
    ``"mlp"`` (``decoder.backbone.{0,3,6,9}`` linear layers with batch norms between) or ``"none"``.
    ``prefix`` is put before every satellite key (``"module."`` for a DDP-trained file).
    """
    import torch

    from rs_embed_dask.models.wildsat_net import build_backbone

    torch.manual_seed(seed)
    bb = build_backbone(arch, image_size, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                        num_classes=num_classes)  # fmt: skip
    sd: dict[str, Any] = {}
    with torch.no_grad():
        for k, v in bb.state_dict().items():
            if not v.is_floating_point():
                sd[f"backbone.{k}"] = v.clone()
            elif k.endswith("running_var"):
                sd[f"backbone.{k}"] = 1.0 + 0.1 * torch.rand_like(v)
            elif v.ndim == 1 and k.endswith("weight"):
                sd[f"backbone.{k}"] = 1.0 + 0.1 * torch.randn_like(v)
            else:
                fan = max(1, int(np.prod(v.shape[1:]))) if v.ndim > 1 else 50
                sd[f"backbone.{k}"] = torch.randn_like(v) / fan**0.5
        sd.update({f"backbone.{k}": v for k, v in (extra_backbone or {}).items()})
        if head == "threelinearnobias":
            for b in (1, 2, 3):
                sd[f"decoder.backbone{b}.0.weight"] = torch.randn(HEAD_DIM, num_classes) / num_classes**0.5
        elif head == "mlp":
            dims = [num_classes, 24, 20, 12, HEAD_DIM]
            for i, li in enumerate((0, 3, 6, 9)):
                sd[f"decoder.backbone.{li}.weight"] = torch.randn(dims[i + 1], dims[i]) / dims[i] ** 0.5
                sd[f"decoder.backbone.{li}.bias"] = 0.1 * torch.randn(dims[i + 1])
                if li < 9:  # the BatchNorm1d after each ReLU (1-d tensors: not linear layers)
                    sd[f"decoder.backbone.{li + 2}.weight"] = 1.0 + 0.1 * torch.randn(dims[i + 1])
                    sd[f"decoder.backbone.{li + 2}.bias"] = 0.1 * torch.randn(dims[i + 1])
    opt = argparse.Namespace(satellite_encoder=arch, satellite_head=head, common_embed_dim=HEAD_DIM, lr=1e-4)
    torch.save(
        {
            "epoch": 1,
            "satellite_state_dict": {f"{prefix}{k}": v for k, v in sd.items()},
            "sinr_state_dict": {"head.weight": torch.zeros(HEAD_DIM, 256)},
            "text_emb_model": {"head.weight": torch.zeros(HEAD_DIM, 4096)},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "opt": opt,
            "loss": 0.5,
            "scheduler": None,
        },
        path,
    )
    return path


def _setup(directory: Path) -> dict[str, Any]:
    wildsat_checkpoint(directory / "vitb16-imagenet-bnfc.pth")
    return {"weights": str(directory), **TINY}


def wildsat_golden(raw: np.ndarray) -> np.ndarray:
    """rs-embed's steps in numpy: ``clip / 10000``, min-max over the input, ``* 255`` to uint8, ``/ 255``."""
    out = []
    for img in raw:
        x = np.clip(np.nan_to_num(img.astype(np.float32)), 0.0, 10000.0) / 10000.0
        lo, hi = float(np.min(x)), float(np.max(x))
        x = (x - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(x)
        levels = np.clip(x * 255.0, 0.0, 255.0).astype(np.uint8)
        out.append(levels.astype(np.float32) / 255.0)
    return np.stack(out).astype(np.float32)


_RAW = raw_tile(3, 32)

CASES = {
    # pooled_from_tokens: the pooled vector is the mean of the patch tokens, i.e. of the grid
    "wildsat": vit_case(
        _RAW, wildsat_golden(_RAW), _setup, exact_pooling=[({"pooled_from_tokens": True}, (32, 32))]
    ),
}
