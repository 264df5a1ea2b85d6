"""A ViT-S/16-sized torch model with random weights, registered as ``bench_vits``.

Importable by the worker processes (``benchmarks`` on their path) so the
Embedder subclass unpickles there.
"""

from __future__ import annotations

from typing import Any

from rs_embed_dask.models.base import S2_SR, TorchEmbedder

NAME = "bench_vits"
BANDS = ("B2", "B3", "B4", "B8")
IMG = 128


class ViTSEmbedder(TorchEmbedder):
    """timm ``vit_small_patch16_224`` (random weights), img_size=128, 4 channels; pooled = pre-logits."""

    name = NAME
    requires = ("torch", "timm")
    output_modes = ("pooled",)

    def describe(self) -> dict[str, Any]:
        return {
            "model": NAME,
            "type": "onthefly",
            "backend": ["provider"],
            "output": ["pooled"],
            "inputs": {"collection": S2_SR, "bands": list(BANDS)},
            "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median", "image_size": IMG},
            "embedding_dim": 384,
            "weights": "random (benchmark)",
        }

    def build_module(self) -> Any:
        import timm
        import torch

        torch.manual_seed(0)
        return timm.create_model(
            "vit_small_patch16_224", pretrained=False, img_size=IMG, in_chans=len(BANDS), num_classes=0
        )

    def preprocess(self, x: Any) -> Any:
        return (x / 10000.0).clamp_(0.0, 1.0)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self.module(x)  # num_classes=0: the pooled (cls-token) features

    def forward_grid(self, x: Any) -> Any:  # pragma: no cover - pooled only
        raise NotImplementedError


def register() -> None:
    from rs_embed_dask.core.registry import register_model

    register_model(NAME, ViTSEmbedder, overwrite=True)
