"""``wildsat``: WildSAT (Daroya et al.), torchvision backbones trained with wildlife observations.

The model of rs-embed 0.3.1's ``onthefly_wildsat``: one of three torchvision
backbones (``model_config`` ``variant``: ``vitb16`` (default) ``vit_b_16``,
``resnet50``, ``swint`` ``swin_t``), its ImageNet classifier included, loaded
from the WildSAT authors' checkpoint (:mod:`rs_embed_dask.models.wildsat_weights`),
followed by the image head rebuilt from the checkpoint's decoder (branch 3 of
``threelinearnobias``: a linear map of the 1000 classifier outputs to the
256-d common embedding).

Input: Sentinel-2 L2A ``B4, B3, B2`` at 10 m.  Preprocessing, per input:
``clip(DN, 0, 10000) / 10000``, then (``normalization="minmax"``, the
default) a min-max stretch over the whole input (all three bands; a flat
input becomes zeros), ``* 255`` truncated to 8-bit levels, a Pillow bicubic
resize to ``image_size`` (224), ``/ 255``.  No ImageNet normalisation (as
rs-embed).  ``normalization="unit_scale"`` skips the stretch.

Outputs:

* pooled: the image head's vector (256-d); ``feature="backbone"`` (or a
  checkpoint without decoder) gives the backbone's 1000 classifier outputs;
  ``pooled_from_tokens=True`` (ViT only) the mean / max of the patch tokens;
* grid: for ``vitb16`` the patch tokens after the encoder's final
  LayerNorm, ``(768, 14, 14)`` at 224 px; for ``resnet50`` and ``swint``
  (or ``grid_from_tokens=False``) the pooled vector as a ``(D, 1, 1)`` grid.

Every option also reads rs-embed's environment variable when the
``model_config`` key is absent (``RS_EMBED_WILDSAT_IMG``, ``_NORM``,
``_FEATURE``, ``_IMAGE_BRANCH``, ``_POOLED_FROM_TOKENS``,
``_GRID_FROM_TOKENS``; ``RS_EMBED_WILDSAT_ARCH`` for the variant).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.vit import check_choice, check_int
from rs_embed_dask.models.wildsat_weights import VARIANTS, WildSATSource, resolve_variant

__all__ = ["BANDS", "FEATURES", "NORMALIZATIONS", "WildSATEmbedder"]

BANDS = ("B4", "B3", "B2")
IMAGE_SIZE = 224
PATCH = 16
COMMON_EMBED_DIM = 256
NUM_CLASSES = 1000
VIT_DIM = 768
#: rs-embed's spellings of each normalisation and feature source -> ours
NORMALIZATIONS = {
    "minmax": "minmax", "per_tile_minmax": "minmax", "tile_minmax": "minmax",
    "unit": "unit_scale", "unit_scale": "unit_scale", "reflectance": "unit_scale", "none": "unit_scale",
    "raw": "unit_scale",
}  # fmt: skip
FEATURES = {
    "image_head": "image_head", "img_head": "image_head", "image": "image_head",
    "backbone": "backbone", "encoder": "backbone", "auto": "auto", "default": "auto",
}  # fmt: skip
_TRUE = ("1", "true", "True")
_FALSE = ("0", "false", "False")
#: float32 activations alive at once per input pixel of the model input (estimates, see memory_per_item)
_ACT_FLOATS_PER_PIXEL = {"vitb16": 40, "resnet50": 64, "swint": 64}


def _env_or(cfg: Mapping[str, Any], key: str, env: str) -> Any:
    value = cfg.get(key)
    return os.environ.get(env) if value is None else value


def _int_option(cfg: Mapping[str, Any], key: str, env: str, minimum: int) -> int | None:
    """``cfg[key]``, else ``$env`` (a string of digits), as an int ``>= minimum``; ``None`` when neither is set."""
    value = _env_or(cfg, key, env)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise ModelError(
                f"wildsat {key} (${env}) must be an integer >= {minimum}; got {value!r}"
            ) from exc
    return check_int("wildsat", {key: value}, key, minimum)


def _flag(value: Any, default: bool, *, off_words: bool) -> bool:
    """A boolean option; strings follow rs-embed's rules (off only for 0/false/False, or on only for 1/true/True)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    s = str(value).strip()
    return s not in _FALSE if off_words else s in _TRUE


class WildSATEmbedder(TorchEmbedder):
    """WildSAT embeddings of Sentinel-2 RGB inputs.

    ``model_config`` keys
    ---------------------
    variant : {"vitb16", "resnet50", "swint"}
        The backbone (aliases ``vit``, ``resnet``, ``swin``, ``swin_tiny``);
        default ``$RS_EMBED_WILDSAT_ARCH`` or ``"vitb16"``.
    weights : str
        Checkpoint file, or a folder holding the variant's file (else
        ``$RS_EMBED_WILDSAT_CKPT``, rs-embed's cache, Google Drive).
    image_size : int
        Model input side (default 224; the ViT's positional table is for 224).
    normalization : {"minmax", "unit_scale"}
        Per-input min-max stretch (default) or ``DN / 10000`` only.
    feature : {"image_head", "backbone", "auto"}
        The pooled vector: the image head (default; the backbone when the
        checkpoint has no head), or the backbone's classifier outputs.
    image_branch : int
        The decoder branch of the image head (default 3).
    pooled_from_tokens : bool
        ViT: pool the patch tokens instead (default off).
    grid_from_tokens : bool
        ViT: the grid is the patch tokens (default on), else the vector as 1 x 1.
    depth, embed_dim, num_heads, num_classes : int
        For tests and smoke runs only: a smaller backbone than the variant's.
    """

    name = "wildsat"
    requires = ("torch", "torchvision", "PIL")
    extra = "models"
    config_keys = frozenset(
        {"variant", "weights", "image_size", "normalization", "feature", "image_branch", "pooled_from_tokens",
         "grid_from_tokens", "depth", "embed_dim", "num_heads", "num_classes"}
    )  # fmt: skip
    supports_autocast = True
    # rs-embed's ``_requires_square_input``: a rectangular BBox is fetched as a square, the output cut back
    square_fetch = True
    patch_size: ClassVar[int] = PATCH

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.variant = resolve_variant(cfg)
        self.arch = VARIANTS[self.variant].arch
        self.image_size = _int_option(cfg, "image_size", "RS_EMBED_WILDSAT_IMG", 1) or IMAGE_SIZE
        norm = str(_env_or(cfg, "normalization", "RS_EMBED_WILDSAT_NORM") or "minmax").strip().lower()
        self.normalization = NORMALIZATIONS[check_choice(self.name, {"normalization": norm}, "normalization",
                                                         tuple(NORMALIZATIONS), "minmax")]  # fmt: skip
        feat = str(_env_or(cfg, "feature", "RS_EMBED_WILDSAT_FEATURE") or "image_head").strip().lower()
        self.feature = FEATURES[
            check_choice(self.name, {"feature": feat}, "feature", tuple(FEATURES), "image_head")
        ]
        branch = _int_option(cfg, "image_branch", "RS_EMBED_WILDSAT_IMAGE_BRANCH", 0)
        self.image_branch: int = 3 if branch is None else branch
        self.pooled_from_tokens = _flag(
            _env_or(cfg, "pooled_from_tokens", "RS_EMBED_WILDSAT_POOLED_FROM_TOKENS"), False, off_words=False
        )
        self.grid_from_tokens = _flag(
            _env_or(cfg, "grid_from_tokens", "RS_EMBED_WILDSAT_GRID_FROM_TOKENS"), True, off_words=True
        )
        self.overrides = {
            k: check_int(self.name, cfg, k, 1) for k in ("depth", "embed_dim", "num_heads", "num_classes")
        }
        self.hub = WildSATSource.for_variant(self.variant)
        self.head_meta: dict[str, Any] = {"image_head_available": None}
        self.ckpt_meta: dict[str, Any] = {}

    # -- dims --------------------------------------------------------------------------------
    @property
    def _tokens_used(self) -> bool:
        return self.arch == "vitb16" and self.grid_from_tokens

    def _token_dim(self) -> int:
        return int(self.overrides.get("embed_dim") or VIT_DIM)

    def _vector_dim(self) -> int:
        """The head's output (256 until the checkpoint says otherwise), or the classifier's outputs."""
        classes = int(self.overrides.get("num_classes") or NUM_CLASSES)
        if self.feature == "backbone" or self.head_meta.get("image_head_available") is False:
            return classes
        return int(self.head_meta.get("image_head_out_dim") or COMMON_EMBED_DIM)

    def _pooled_dim(self) -> int:
        return self._token_dim() if (self.pooled_from_tokens and self._tokens_used) else self._vector_dim()

    def _grid_dim(self) -> int:
        return self._token_dim() if self._tokens_used else self._pooled_dim()

    def feature_source(self) -> str:
        """rs-embed's ``feature_source`` meta: ``image_head``, ``backbone`` or ``backbone_fallback``."""
        if self.feature == "backbone":
            return "backbone"
        if self.head_meta.get("image_head_available") is False:
            return "backbone_fallback" if self.feature == "image_head" else "backbone"
        return "image_head"

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands, preprocessing, dims, outputs and weights of the configured variant."""
        side = self.image_size // PATCH
        grid = (
            f"({self._grid_dim()}, {side}, {side}) at {self.image_size} px: ViT-B/16 patch tokens after the final "
            "LayerNorm, class token removed; north up"
            if self._tokens_used
            else f"({self._grid_dim()}, 1, 1): the pooled vector as a 1 x 1 grid (no token grid for {self.arch})"
        )
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(BANDS)},
                image_size=self.image_size,
                normalization=self.normalization,
                feature=self.feature,
                variant=self.variant,
                image_branch=self.image_branch,
            ),
            "embedding_dim": self._pooled_dim(),
            "grid_dim": self._grid_dim(),
            "grid": grid,
            "grid_semantics": "vit_patch_tokens" if self._tokens_used else "vector_as_1x1",
            "pooled": {
                "image_head": "the image head (decoder branch, linear layers) on the backbone's classifier outputs; "
                "the backbone's outputs when the checkpoint has no head",
                "backbone": "the backbone's classifier outputs",
                "auto": "the image head when the checkpoint has one, else the backbone's classifier outputs",
            }[self.feature]
            if not (self.pooled_from_tokens and self._tokens_used)
            else "mean (or max) of the ViT patch tokens",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": (
                "clip(DN, 0, 10000) / 10000, "
                + (
                    "min-max stretch over the whole input (flat input -> 0), "
                    if self.normalization == "minmax"
                    else ""
                )
                + f"x 255 truncated to uint8, Pillow bicubic resize to {self.image_size}, / 255 (no ImageNet mean/std)"
            ),
            "model_config": {
                "variant": self.variant,
                "image_size": self.image_size,
                "normalization": self.normalization,
                "feature": self.feature,
                "image_branch": self.image_branch,
                "pooled_from_tokens": self.pooled_from_tokens,
                "grid_from_tokens": self.grid_from_tokens,
            },
            "variants": {
                v: {
                    "backbone": {
                        "vitb16": "torchvision vit_b_16",
                        "resnet50": "torchvision resnet50",
                        "swint": "torchvision swin_t",
                    }[v],
                    "file": s.filename,
                }
                for v, s in VARIANTS.items()
            },
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    def resolve_input_size(self) -> int | None:
        """The model input side (``image_size``), which ``input_prep`` tiles to."""
        return self.image_size

    def memory_per_item(self, input_shape: Any, output: Any = None) -> int:
        """Peak forward bytes of one input: its float copies and 8-bit image, plus the backbone's activations.

        Activations are estimated per model-input pixel (ViT-B/16: tokens, a
        12-head attention matrix and the 3072-wide MLP of one block; ResNet-50
        and Swin-T: a few stage-1 feature maps at a quarter of the side) and
        doubled for the token grid of a grid output.
        """
        shape = tuple(int(s) for s in input_shape)
        c, h, w = (shape[-3], shape[-2], shape[-1]) if len(shape) >= 3 else (3, IMAGE_SIZE, IMAGE_SIZE)
        host = 4 * c * h * w * 4 + 2 * 3 * self.image_size**2
        acts = 4 * self.image_size**2 * _ACT_FLOATS_PER_PIXEL[self.arch]
        if getattr(output, "mode", "pooled") == "grid":
            acts *= 2
        return int(host + acts)

    # -- model -------------------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.wildsat_net import WildSATNet, build_backbone
        from rs_embed_dask.models.wildsat_weights import backbone_state, head_spec, read_checkpoint

        path = self.hub.find(self.name, self.model_config)
        state, opt = read_checkpoint(path)
        backbone = build_backbone(self.arch, self.image_size, **self.overrides)
        load_strict(backbone, backbone_state(state), model=f"{self.name}/{self.variant}", path=path)
        spec = head_spec(state, self.image_branch)
        self.head_meta = spec.meta() if spec is not None else {"image_head_available": False}
        self.ckpt_meta = {
            "ckpt_path": str(path),
            "opt_satellite_encoder": opt.get("satellite_encoder"),
            "opt_satellite_head": opt.get("satellite_head"),
            "opt_common_embed_dim": opt.get("common_embed_dim"),
        }
        return WildSATNet(self.arch, backbone, spec.build() if spec is not None else None)

    def preprocess(self, x: Any) -> Any:
        """Raw DN ``(B, 3, H, W)`` -> ``[0, 1]`` 8-bit levels at ``image_size`` (rs-embed's RGB path)."""
        import torch

        from rs_embed_dask.models.rgb8 import pil_resize

        if x.ndim != 4 or x.shape[1] != len(BANDS):
            raise ModelError(
                f"wildsat expects (B, 3, H, W) inputs with bands {list(BANDS)}; got shape {tuple(x.shape)}"
            )
        u = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0) / 10000.0
        if self.normalization == "minmax":
            lo = u.amin(dim=(1, 2, 3), keepdim=True)
            hi = u.amax(dim=(1, 2, 3), keepdim=True)
            span64 = hi.double() - lo.double()  # rs-embed compares and divides by a Python float
            ok = span64 > 1e-6
            span = torch.where(ok, span64, torch.ones_like(span64)).float()
            u = torch.where(ok, (u - lo) / span, torch.zeros_like(u))
        levels = (u * 255.0).clamp(0.0, 255.0).to(torch.uint8)
        return pil_resize(levels, self.image_size).float() / 255.0

    def _check_size(self, x: Any) -> None:
        if self.arch == "vitb16" and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ModelError(f"wildsat vitb16 needs {self.image_size} px inputs; got {tuple(x.shape[-2:])}")

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        self._check_size(x)
        if self.pooled_from_tokens and self._tokens_used:
            patch = self.module.tokens(x)[:, 1:]
            return patch.amax(dim=1) if pooling == "max" else patch.mean(dim=1)
        return self.module.vector(x, self.feature)

    def forward_grid(self, x: Any) -> Any:
        self._check_size(x)
        if self._tokens_used:
            patch = self.module.tokens(x)[:, 1:]
            b, n, d = patch.shape
            side = round(n**0.5)
            return patch.reshape(b, side, side, d).permute(0, 3, 1, 2)
        return self.module.vector(x, self.feature)[:, :, None, None]

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "arch": self.arch,
            "image_size": self.image_size,
            "normalization": self.normalization,
            "feature_source": self.feature_source(),
            "pooled_from_tokens": bool(self.pooled_from_tokens and self._tokens_used),
            "tokens_available": self._tokens_used,
            "grid_kind": "vit_patch_tokens" if self._tokens_used else "vector_as_1x1",
            **self.head_meta,
            **self.ckpt_meta,
        }
