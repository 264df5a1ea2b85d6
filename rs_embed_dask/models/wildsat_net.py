"""WildSAT's network: a torchvision backbone (classifier included) and the image head from the decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rs_embed_dask.core.errors import ModelError

__all__ = ["NUM_CLASSES", "PATCH", "VIT_DIM", "WildSATNet", "build_backbone"]

NUM_CLASSES = 1000
PATCH = 16
VIT_DIM = 768


def build_backbone(arch: str, image_size: int, *, depth: int | None = None, embed_dim: int | None = None,
                   num_heads: int | None = None, num_classes: int | None = None) -> nn.Module:  # fmt: skip
    """The torchvision backbone of ``arch`` with default init (its classifier included).

    Without overrides these are torchvision's ``vit_b_16`` (at
    ``image_size``), ``resnet50`` and ``swin_t`` exactly; ``depth``,
    ``embed_dim``, ``num_heads`` and ``num_classes`` give smaller models of
    the same layout (tests).
    """
    from torchvision.models import resnet, swin_transformer, vision_transformer  # type: ignore[import-untyped]

    classes = num_classes or NUM_CLASSES
    if arch == "vitb16":
        dim = embed_dim or VIT_DIM
        return vision_transformer.VisionTransformer(
            image_size=image_size, patch_size=PATCH, num_layers=depth or 12, num_heads=num_heads or 12,
            hidden_dim=dim, mlp_dim=4 * dim, num_classes=classes,
        )  # fmt: skip
    if arch == "resnet50":
        layers = [depth] * 4 if depth else [3, 4, 6, 3]
        return resnet.ResNet(resnet.Bottleneck, layers, num_classes=classes)
    if arch == "swint":
        return swin_transformer.SwinTransformer(
            patch_size=[4, 4], embed_dim=embed_dim or 96, depths=[depth] * 4 if depth else [2, 2, 6, 2],
            num_heads=[num_heads] * 4 if num_heads else [3, 6, 12, 24], window_size=[7, 7],
            stochastic_depth_prob=0.2, num_classes=classes,
        )  # fmt: skip
    raise ModelError(f"wildsat: unknown backbone {arch!r}; expected one of ['resnet50', 'swint', 'vitb16']")


class WildSATNet(nn.Module):
    """A torchvision backbone and the optional image head.

    Parameters
    ----------
    arch : str
        ``"vitb16"``, ``"resnet50"`` or ``"swint"``.
    backbone : torch.nn.Module
        The torchvision model, classifier included.
    head : torch.nn.Module or None
        The image head (linear layers), ``None`` when the checkpoint has none.
    """

    def __init__(self, arch: str, backbone: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = head

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ViT tokens after the encoder (class token first, final LayerNorm applied): ``(B, 1 + N, D)``.

        The steps of torchvision's ``VisionTransformer.forward`` before it
        keeps the class token.
        """
        bb: Any = self.backbone
        t = bb._process_input(x)
        cls = bb.class_token.expand(t.shape[0], -1, -1)
        return bb.encoder(torch.cat([cls, t], dim=1))

    def backbone_vector(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output, its classifier included: ``(B, num_classes)``."""
        if self.arch == "vitb16":
            bb: Any = self.backbone
            return bb.heads(self.tokens(x)[:, 0])
        out = self.backbone(x)
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out

    def vector(self, x: torch.Tensor, feature: str = "image_head") -> torch.Tensor:
        """The pooled vector: the image head on the backbone's output (unless ``feature="backbone"`` or no head)."""
        v = self.backbone_vector(x)
        if feature != "backbone" and self.head is not None:
            return self.head(v)
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vector(x)
