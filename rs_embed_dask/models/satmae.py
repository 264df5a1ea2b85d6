"""``satmae``: the SatMAE ViT-L/16 encoder pre-trained on fMoW RGB, on Sentinel-2 RGB.

The encoder is a timm ``VisionTransformer`` whose state-dict keys are those of
the MAE / SatMAE encoder (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.*``, ``norm``): the checkpoint of the Hugging Face repository
``MVRL/satmae-vitlarge-fmow-pretrain-800`` (or the official ``fmow_pretrain.pth``)
loads with ``strict=True`` once its decoder keys are dropped.

Preprocessing follows rs-embed (``onthefly_satmae.py``): Sentinel-2 L2A DN
``B4, B3, B2`` -> ``uint8(clip(DN / 10000, 0, 1) * 255)`` -> (a non-square
input only: centre-padded to a square) -> Pillow bicubic resize of the 8-bit
image to ``image_size`` (no crop) -> ``/ 255`` -> fMoW RGB mean/std.

Every LayerNorm has ``eps=1e-5``: rs-embed runs the rshf SatMAE wrapper, whose
``norm_layer`` is ``nn.LayerNorm`` with its default epsilon (the SatMAE
code's model factories use ``1e-6``; ``model_config`` ``norm_eps`` selects it).  The
encoder runs without masking; the grid is the ``(1024, 14, 14)`` patch tokens
after the final LayerNorm, in row-major order (row 0 north), and the pooled
vector their mean (or max).  rs-embed's own grid is a random permutation of
those tokens (its ``forward_encoder(mask_ratio=0)`` shuffles them and the
restore indices are dropped); the pooled mean is the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR
from rs_embed_dask.models.vit import S2_RGB, HubCheckpoint, ViTEmbedder, check_channels

__all__ = ["SatMAEEmbedder", "rgb_u8_square_preprocess"]

HF_REPO = "MVRL/satmae-vitlarge-fmow-pretrain-800"
HF_FILENAME = "model.safetensors"
# rs-embed 0.3.1 gives no revision for this repository: downloads follow ``main``.
HF_REVISION: str | None = None
ENV_VAR = "RS_EMBED_SATMAE_WEIGHTS"
FILENAMES = ("model.safetensors", "pytorch_model.bin", "fmow_pretrain.pth", "satmae.pth")
FMOW_MEAN = (0.4182007, 0.4214799, 0.3991276)
FMOW_STD = (0.2877428, 0.2754177, 0.2764018)
PATCH = 16
# keys of the MAE decoder and of wrappers that the encoder does not have
DECODER_PREFIXES = ("decoder_", "mask_token", "head.", "fc_norm.")
CHECKPOINT = HubCheckpoint(
    repo=HF_REPO,
    filename=HF_FILENAME,
    revision=HF_REVISION,
    env_var=ENV_VAR,
    fmt="MAE/SatMAE encoder state dict (safetensors or torch.load weights_only=True); decoder keys are dropped",
    filenames=FILENAMES,
)


def rgb_u8_square_preprocess(x: Any, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """DN -> 8-bit levels -> square pad -> Pillow bicubic resize to ``size`` -> ``/ 255`` -> ``(x - mean) / std``.

    rs-embed's ``resize_rgb_u8`` and transform (``onthefly_satmae.py``,
    ``onthefly_scalemae.py``): the ``uint8`` image is resized by Pillow
    (``Image.BICUBIC``, ``uint8`` out) unless it already has ``size`` pixels a
    side.  Only a non-square input is padded (rs-embed fetches squares).
    """
    from rs_embed_dask.models.rgb8 import normalize_levels, pil_resize, to_levels_u8
    from rs_embed_dask.models.vit import pad_to_square

    return normalize_levels(pil_resize(pad_to_square(to_levels_u8(x)), size), mean, std)


class SatMAEEmbedder(ViTEmbedder):
    """SatMAE (fMoW RGB, ViT-L/16) patch-token embeddings of Sentinel-2 RGB composites.

    ``model_config`` keys
    ---------------------
    weights : str
        Checkpoint file, or a folder holding one of ``model.safetensors``,
        ``pytorch_model.bin``, ``fmow_pretrain.pth`` (else
        ``$RS_EMBED_SATMAE_WEIGHTS``, else the Hugging Face hub).
    image_size : int
        Backbone input (multiple of 16, default 224); the checkpoint's
        positional table is resized bicubically when it differs.
    norm_eps : float
        Epsilon of the encoder's LayerNorms (default ``1e-5``, rs-embed's).
    depth, embed_dim, num_heads : int
        For tests and smoke runs only: a smaller encoder than ViT-L (24, 1024, 16).

    Subclasses of the same encoder (``scalemae``) set :attr:`hub` (where the
    checkpoint is), :attr:`drop_prefixes` (checkpoint keys the encoder does
    not have), :attr:`vit_pos_embed` (timm's ``pos_embed``: ``"learn"`` or
    ``"none"``) and :attr:`default_norm_eps`.
    """

    name = "satmae"
    requires = ("torch", "timm", "PIL")
    extra = "models"
    config_keys = frozenset({"weights", "image_size", "norm_eps", "depth", "embed_dim", "num_heads"})
    supports_autocast = True
    input_size = 224
    image_level_vit_patch_grid = True
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    patch_size = PATCH
    mean: tuple[float, ...] = FMOW_MEAN
    std: tuple[float, ...] = FMOW_STD
    hub: ClassVar[HubCheckpoint] = CHECKPOINT
    drop_prefixes: ClassVar[tuple[str, ...]] = DECODER_PREFIXES
    vit_pos_embed: ClassVar[str] = "learn"
    default_norm_eps: ClassVar[float] = 1e-5

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self.configure_vit(embed_dim=1024, depth=24, num_heads=16)
        eps = self.model_config.get("norm_eps", self.default_norm_eps)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ModelError(f"{self.name} model_config 'norm_eps' must be a number in (0, 1); got {eps!r}")
        self.norm_eps = float(eps)

    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims, outputs, preprocessing and weights of this configuration."""
        g = self.grid_side
        return {
            **self.describe_head({"collection": S2_SR, "bands": list(S2_RGB)}, image_size=self.image_size),
            "embedding_dim": self.embed_dim,
            "grid": f"({self.embed_dim}, {g}, {g}) ViT patch tokens (patch {PATCH}), north up",
            "grid_semantics": "vit_patch_tokens",
            "pooled": "mean (or max) of the patch tokens",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": (
                "uint8(clip(DN / 10000, 0, 1) * 255) -> square pad (non-square only) -> Pillow bicubic resize to "
                f"{self.image_size} -> / 255 -> mean {list(self.mean)} std {list(self.std)}"
            ),
            "layer_norm_eps": self.norm_eps,
            "model_config": {"image_size": self.image_size, "norm_eps": self.norm_eps},
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import interpolate_pos_embed, load_strict, timm_vit

        strip = ("module.", "model.", "encoder.")
        state, path = self.hub.load(self.name, self.model_config, strip=strip, drop=self.drop_prefixes)
        module = timm_vit(
            image_size=self.image_size,
            **self.vit_arch(),
            pos_embed=self.vit_pos_embed,
            norm_eps=self.norm_eps,
        )
        if "pos_embed" in state:  # dropped where the encoder has no table (scalemae)
            state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], self.grid_side, self.grid_side)
        load_strict(module, state, model=self.name, path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        check_channels(self.name, x, S2_RGB)
        return rgb_u8_square_preprocess(x, self.image_size, self.mean, self.std)

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        tokens = self.module.forward_features(x)[:, self.module.num_prefix_tokens :]
        return tokens_to_grid(tokens, self.grid_side, self.grid_side)
