"""``remoteclip``: RemoteCLIP (CLIP fine-tuned on remote-sensing captions) on Sentinel-2 RGB.

The architecture is open_clip's CLIP (``ViT-B-32`` by default, also
``ViT-L-14`` and ``RN50``), the weights are the RemoteCLIP checkpoints of the
Hugging Face repository ``chendelong/RemoteCLIP``, read with
``weights_only=True`` and loaded with ``strict=True`` into the whole CLIP
model; only the image tower is kept.

Preprocessing follows rs-embed (``onthefly_remoteclip.py``): Sentinel-2 L2A
DN ``B4, B3, B2`` -> ``uint8(clip(DN / 10000, 0, 1) * 255)`` -> CLIP's image
transform on that 8-bit image: Pillow bicubic resize of the short side to
``image_size`` (``uint8`` in, ``uint8`` out; a no-op at ``image_size``),
centre crop, ``/ 255``, CLIP mean/std (:mod:`rs_embed_dask.models.rgb8`).

Outputs: pooled = ``encode_image`` (the CLIP image projection, 512-d for
ViT-B/32) for either pooling, as rs-embed; grid = the last transformer
block's patch tokens, before ``ln_post``, at the transformer width
(``grid_tokens="width"``, default: 768 for ViT-B/32; rs-embed's grid, open_clip
``forward_intermediates``), or those tokens after ``ln_post`` projected
through the image projection, so the grid has the pooled width
(``grid_tokens="projected"``).  For ``RN50`` the grid is the last ResNet
stage (``width``) or that stage passed through the attention pool's value and
output projections (``projected``).  The pooled vector is not the mean of the
grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.vit import (
    S2_RGB,
    HubCheckpoint,
    check_channels,
    check_choice,
    check_int,
    load_strict,
)

__all__ = ["RemoteCLIPEmbedder"]

HF_REPO = "chendelong/RemoteCLIP"
# rs-embed 0.3.1 gives no revision for this repository: downloads follow ``main``.
HF_REVISION: str | None = None
ENV_VAR = "RS_EMBED_REMOTECLIP_WEIGHTS"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# variant -> (open_clip architecture, checkpoint file name)
VARIANTS: dict[str, tuple[str, str]] = {
    "vit-b-32": ("ViT-B-32", "RemoteCLIP-ViT-B-32.pt"),
    "vit-l-14": ("ViT-L-14", "RemoteCLIP-ViT-L-14.pt"),
    "rn50": ("RN50", "RemoteCLIP-RN50.pt"),
}
_WIDTHS = {"vit-b-32": 768, "vit-l-14": 1024, "rn50": 2048}


class RemoteCLIPEmbedder(TorchEmbedder):
    """RemoteCLIP image embeddings of Sentinel-2 RGB composites.

    ``model_config`` keys
    ---------------------
    variant : {"vit-b-32", "vit-l-14", "rn50"}
        The CLIP architecture (default ``"vit-b-32"``).
    weights : str
        Checkpoint file, or a folder holding ``RemoteCLIP-<arch>.pt``
        (else ``$RS_EMBED_REMOTECLIP_WEIGHTS``, else the Hugging Face hub).
    grid_tokens : {"projected", "width"}
        Channels of the grid output (see the module docstring).
    image_size, width, layers, embed_dim : int
        For tests and smoke runs only: override the architecture's input size,
        tower width, depth and joint embedding width (no released checkpoint
        has such shapes).
    """

    name = "remoteclip"
    requires = ("torch", "open_clip", "PIL")
    extra = "models"
    config_keys = frozenset(
        {"variant", "weights", "grid_tokens", "image_size", "width", "layers", "embed_dim"}
    )
    supports_autocast = True
    input_size = 224
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    # the pooled CLIP projection has another width than the tokens: a rectangle keeps the square's vector
    roi_pooling = "model"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.variant = check_choice(self.name, cfg, "variant", tuple(VARIANTS), "vit-b-32")
        self.grid_tokens = check_choice(self.name, cfg, "grid_tokens", ("projected", "width"), "width")
        self.arch, self.filename = VARIANTS[self.variant]
        self.image_size = check_int(self.name, cfg, "image_size", 8) or 224
        self.width = check_int(self.name, cfg, "width", 8)
        self.layers = check_int(self.name, cfg, "layers", 1)
        self.embed_dim_override = check_int(self.name, cfg, "embed_dim", 8)
        self.hub = HubCheckpoint(
            repo=HF_REPO,
            filename=self.filename,
            revision=HF_REVISION,
            env_var=ENV_VAR,
            fmt="open_clip CLIP state dict (torch.load weights_only=True)",
        )

    def resolve_input_size(self) -> int | None:
        """The configured backbone input (``image_size``), which ``input_prep`` tiles to."""
        return self.image_size

    # -- description ---------------------------------------------------------------
    def _clip_config(self) -> dict[str, Any]:
        """open_clip's model config of the variant with the test overrides applied."""
        import copy

        import open_clip

        cfg = copy.deepcopy(open_clip.get_model_config(self.arch))
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        vision["image_size"] = self.image_size
        if self.width is not None:
            vision["width"] = self.width
            text["width"] = self.width
            text["heads"] = max(1, self.width // 64)
        if self.layers is not None:
            vision["layers"] = [self.layers] * 4 if self.variant == "rn50" else self.layers
            text["layers"] = self.layers
        if self.embed_dim_override is not None:
            cfg["embed_dim"] = self.embed_dim_override
        return dict(cfg)

    def _dims(self) -> tuple[int, int, int]:
        """(pooled width, tower width, grid side) without importing open_clip."""
        pooled = self.embed_dim_override or {"vit-b-32": 512, "vit-l-14": 768, "rn50": 1024}[self.variant]
        if self.variant == "rn50":
            width = (self.width or 64) * 32
            side = self.image_size // 32
        else:
            width = self.width or _WIDTHS[self.variant]
            side = self.image_size // (32 if self.variant == "vit-b-32" else 14)
        return pooled, width, side

    def describe(self) -> dict[str, Any]:
        """Bands, scale, dims, outputs, preprocessing and weights of this configuration."""
        pooled, width, side = self._dims()
        grid_dim = pooled if self.grid_tokens == "projected" else width
        return {
            **self.describe_head({"collection": S2_SR, "bands": list(S2_RGB)}, image_size=self.image_size),
            "embedding_dim": pooled,
            "grid_dim": grid_dim,
            "grid": f"({grid_dim}, {side}, {side}) "
            + ("feature map of the last ResNet stage" if self.variant == "rn50" else "ViT patch tokens")
            + (" projected to the pooled width" if self.grid_tokens == "projected" else "")
            + (
                " of the last block, before ln_post"
                if self.variant != "rn50" and self.grid_tokens == "width"
                else ""
            ),
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": (
                "uint8(clip(DN / 10000, 0, 1) * 255) -> Pillow bicubic resize of the short side to "
                f"{self.image_size} + centre crop -> / 255 -> CLIP mean {list(CLIP_MEAN)} std {list(CLIP_STD)}"
            ),
            "pooled": "CLIP image projection (encode_image) for mean and max; not the mean of the grid",
            "model_config": {
                "variant": self.variant,
                "grid_tokens": self.grid_tokens,
                "image_size": self.image_size,
            },
            "variants": sorted(VARIANTS),
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def build_module(self) -> Any:
        import open_clip

        state, path = self.hub.load(self.name, self.model_config, strip=("module.",))
        clip = open_clip.CLIP(**self._clip_config())
        load_strict(clip, state, model=f"{self.name}/{self.variant}", path=path)
        return clip.visual

    def preprocess(self, x: Any) -> Any:
        from rs_embed_dask.models.rgb8 import normalize_levels, resize_short_side_center_crop, to_levels_u8

        check_channels(self.name, x, S2_RGB)
        levels = resize_short_side_center_crop(to_levels_u8(x), self.image_size)
        return normalize_levels(levels, CLIP_MEAN, CLIP_STD)

    def _intermediates(self, x: Any) -> tuple[Any, Any]:
        """(pooled ``encode_image`` ``(B, E)``, last block's output) from open_clip's ``forward_intermediates``.

        The last block's output is the patch tokens ``(B, N, width)`` before
        ``ln_post`` for a ViT, the ``layer4`` map ``(B, C, h, w)`` for RN50.
        """
        if self.variant == "rn50":
            out = self.module.forward_intermediates(x, indices=1)
        else:
            out = self.module.forward_intermediates(x, indices=1, output_fmt="NLC")
        return out["image_features"], out["image_intermediates"][-1]

    def forward_grid(self, x: Any) -> Any:
        return self._grid(self._intermediates(x)[1], projected=self.grid_tokens == "projected")

    def _grid(self, last: Any, *, projected: bool) -> Any:
        """The grid of the last block's output: as it is, or projected to the pooled width."""
        from rs_embed_dask.models.vit import tokens_to_grid

        m = self.module
        if self.variant == "rn50":
            if not projected:
                return last
            pool = m.attnpool
            t = pool.c_proj(pool.v_proj(last.flatten(2).transpose(1, 2)))  # (B, hw, E)
            return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], last.shape[-2], last.shape[-1])
        tokens = m.ln_post(last) @ m.proj if projected else last
        side = round(tokens.shape[1] ** 0.5)
        return tokens_to_grid(tokens, side, side)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        # rs-embed returns encode_image for either pooling (the pooling only applies to ROI-cropped grids)
        return self.module(x)
