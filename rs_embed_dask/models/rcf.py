"""``rcf``: random convolutional features (MOSAIKS), the model that needs no download.

The features follow torchgeo's ``RCF`` in ``gaussian`` mode: ``features / 2``
filters of ``kernel_size`` drawn from a seeded standard normal, a constant
bias, and both ``relu(conv(x))`` and ``relu(-conv(x))`` maps.  The grid output
is that ``(features, H - k + 1, W - k + 1)`` map; the pooled output is its
spatial mean (or max), which is exactly torchgeo's pooled vector.
Inputs are Sentinel-2 L2A digital numbers scaled to reflectance
(``DN / 10000``, clipped to ``[0, 1]``).  The grid output averages the maps over
``grid_stride`` x ``grid_stride`` cells (default 8) to keep grids small; the
pooled vector is always the statistic of the full-resolution maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR, TorchEmbedder

__all__ = ["RCFEmbedder"]

_DEFAULTS: dict[str, Any] = {
    "bands": ("B2", "B3", "B4", "B8"),
    "features": 512,
    "kernel_size": 3,
    "seed": 0,
    "bias": 0.0,
    "grid_stride": 8,
}


class RCFEmbedder(TorchEmbedder):
    """MOSAIKS random convolutional features on any band set.

    ``model_config`` keys: ``bands`` (tuple of S2 band names), ``features``
    (even, the embedding width), ``kernel_size`` (>= 1), ``seed`` (int), ``bias`` (float) and
    ``grid_stride`` (>= 1, cell size of the grid output).
    """

    name = "rcf"
    config_keys = frozenset(_DEFAULTS)
    supports_autocast = False  # features are cheap; keep float32 exactness

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = {**_DEFAULTS, **self.model_config}
        bands = cfg["bands"]
        if isinstance(bands, str):
            bands = tuple(b.strip() for b in bands.split(",") if b.strip())
        if not bands or not all(isinstance(b, str) and b for b in bands):
            raise ModelError(f"rcf model_config 'bands' must be a non-empty list of band names; got {bands!r}")
        features = cfg["features"]
        if isinstance(features, bool) or not isinstance(features, int) or features < 2 or features % 2:
            raise ModelError(f"rcf model_config 'features' must be an even integer >= 2; got {features!r}")
        k = cfg["kernel_size"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ModelError(f"rcf model_config 'kernel_size' must be an integer >= 1; got {k!r}")
        self.bands = tuple(bands)
        self.features = features
        self.kernel_size = k
        self.seed = int(cfg["seed"])
        self.bias = float(cfg["bias"])
        gs = cfg["grid_stride"]
        if isinstance(gs, bool) or not isinstance(gs, int) or gs < 1:
            raise ModelError(f"rcf model_config 'grid_stride' must be an integer >= 1; got {gs!r}")
        self.grid_stride = gs

    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims and outputs of this configuration."""
        return {
            "model": self.name,
            "type": "onthefly",
            "backend": ["provider"],
            "output": ["pooled", "grid"],
            "inputs": {"collection": S2_SR, "bands": list(self.bands)},
            "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median", "image_size": None},
            "embedding_dim": self.features,
            "grid": (
                f"(features, ceil((H-{self.kernel_size - 1})/{self.grid_stride}), "
                f"ceil((W-{self.kernel_size - 1})/{self.grid_stride})): feature maps averaged over "
                f"{self.grid_stride}x{self.grid_stride} cells"
            ),
            "temporal": "single composite",
            "normalization": "DN / 10000 clipped to [0, 1]",
            "model_config": {
                "features": self.features,
                "kernel_size": self.kernel_size,
                "seed": self.seed,
                "bias": self.bias,
                "grid_stride": self.grid_stride,
                "bands": list(self.bands),
            },
            "weights": "none: filters drawn from a seeded N(0, 1) (MOSAIKS / torchgeo RCF gaussian)",
        }

    def build_module(self) -> Any:
        import torch
        from torch import nn

        gen = torch.Generator().manual_seed(self.seed)
        conv = nn.Conv2d(len(self.bands), self.features // 2, self.kernel_size, bias=True)
        with torch.no_grad():
            conv.weight.copy_(
                torch.randn(conv.weight.shape, generator=gen, dtype=torch.float32)
            )
            assert conv.bias is not None  # built with bias=True
            conv.bias.fill_(self.bias)
        return conv

    def preprocess(self, x: Any) -> Any:
        if x.shape[1] != len(self.bands):
            raise ModelError(f"rcf expects {len(self.bands)} bands {self.bands}, got {x.shape[1]} channels")
        if min(x.shape[-2:]) < self.kernel_size:
            raise ModelError(
                f"rcf needs inputs of at least {self.kernel_size}x{self.kernel_size} pixels; got {tuple(x.shape[-2:])}"
            )
        return (x / 10000.0).clamp_(0.0, 1.0)

    def feature_maps(self, x: Any) -> Any:
        """Full-resolution ``(B, features, H-k+1, W-k+1)`` maps."""
        import torch

        y = self.module(x)
        return torch.cat([torch.relu(y), torch.relu(-y)], dim=1)

    def forward_grid(self, x: Any) -> Any:
        import torch.nn.functional as F

        maps = self.feature_maps(x)
        if self.grid_stride == 1:
            return maps
        return F.avg_pool2d(maps, self.grid_stride, ceil_mode=True)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        maps = self.feature_maps(x)
        return maps.amax(dim=(-2, -1)) if pooling == "max" else maps.mean(dim=(-2, -1))
