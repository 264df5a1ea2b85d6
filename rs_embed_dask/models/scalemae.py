"""``scalemae``: the Scale-MAE ViT-L/16 encoder (fMoW RGB) with ground-sample-distance conditioning.

Scale-MAE replaces the learned positional table by a 2-D sine-cosine
embedding whose patch coordinates are multiplied by the input's ground sample
distance, so the model knows how many metres a patch covers.  That distance is
a model input here: ``input_res_m = scale_m * min(H, W) / image_size`` where
``scale_m`` is the fetch scale of each input (its sensor's ``scale_m``, from
the embedding context) and ``H, W`` the fetched size, as rs-embed computes it.

The encoder is a timm ``VisionTransformer`` without a positional table; its
keys (``cls_token``, ``patch_embed.proj``, ``blocks.*``, ``norm``) are the
Scale-MAE encoder's, so ``scalemae-vitlarge-800.pth`` (official release) or
the Hugging Face ``MVRL/scalemae-vitlarge-800`` weights load with
``strict=True`` once decoder keys and the (resolution-free) ``pos_embed``
buffer are dropped.

Preprocessing (rs-embed's ``onthefly_scalemae.py``): ``uint8(clip(DN / 10000,
0, 1) * 255)``, square pad (non-square inputs only), Pillow bicubic resize of
the 8-bit image to ``image_size``, ``/ 255``, ImageNet mean/std.

Grid = the last block's patch tokens, pooled = their mean (or max).  As in
rs-embed, the encoder's final LayerNorm ``norm`` is *not* applied: rs-embed
runs rshf's Scale-MAE ``VisionTransformer`` built with ``global_pool=False``,
whose ``forward_features`` ends with ``fc_norm``, an identity in that
configuration.  ``model_config={"final_norm": True}`` applies ``norm`` (what
the Scale-MAE paper's encoder outputs).  LayerNorms use ``eps=1e-6`` (rshf's
``vit_large_patch16``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models.base import pool_grid
from rs_embed_dask.models.satmae import SatMAEEmbedder
from rs_embed_dask.models.vit import HubCheckpoint

__all__ = ["ScaleMAEEmbedder"]

HF_REPO = "MVRL/scalemae-vitlarge-800"
HF_FILENAME = "model.safetensors"
HF_REVISION: str | None = None  # rs-embed 0.3.1 pins none
ENV_VAR = "RS_EMBED_SCALEMAE_WEIGHTS"
FILENAMES = ("model.safetensors", "pytorch_model.bin", "scalemae-vitlarge-800.pth")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DROP_PREFIXES = ("decoder", "mask_token", "fpn", "fcn_", "head.", "fc_norm.", "pos_embed")
CHECKPOINT = HubCheckpoint(
    repo=HF_REPO,
    filename=HF_FILENAME,
    revision=HF_REVISION,
    env_var=ENV_VAR,
    fmt="Scale-MAE encoder state dict (safetensors or torch.load weights_only=True); "
    "decoder keys and pos_embed are dropped",
    filenames=FILENAMES,
)


class ScaleMAEEmbedder(SatMAEEmbedder):
    """Scale-MAE (ViT-L/16) patch-token embeddings of Sentinel-2 RGB, conditioned on the fetch scale.

    ``model_config`` keys are those of ``satmae`` (``weights``, ``image_size``,
    ``norm_eps`` (default ``1e-6`` here) and the test-only ``depth``,
    ``embed_dim``, ``num_heads``) and ``final_norm`` (bool, default ``False``:
    rs-embed's tokens without the encoder's final LayerNorm; ``True`` applies
    it); the weights variable is ``$RS_EMBED_SCALEMAE_WEIGHTS``.  The ground sample distance
    ``input_res_m`` is a side input (:meth:`side_inputs`), so inputs fetched
    at different scales share a batch.
    """

    name = "scalemae"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    hub = CHECKPOINT
    drop_prefixes = DROP_PREFIXES
    vit_pos_embed = "none"
    default_norm_eps = 1e-6
    config_keys = SatMAEEmbedder.config_keys | {"final_norm"}

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        final = self.model_config.get("final_norm", False)
        if not isinstance(final, bool):
            raise ModelError(f"scalemae model_config 'final_norm' must be true or false; got {final!r}")
        self.final_norm = final

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model_config"]["final_norm"] = self.final_norm
        d["grid"] += ", " + ("after" if self.final_norm else "without") + " the encoder's final LayerNorm"
        d["side_inputs"] = {
            "input_res_m": "scale_m * min(H, W) / image_size: the ground sample distance of the resized "
            "input, from each input's fetch scale (sensor.scale_m)"
        }
        return d

    # -- GSD conditioning ------------------------------------------------------------
    def _default_scale_m(self) -> float:
        return float(self.describe()["defaults"]["scale_m"])

    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``input_res_m``: the input's fetch scale (default 10 m) times ``min(H, W) / image_size``."""
        from rs_embed_dask.models.vit import scale_m_of

        scale = scale_m_of(context, self._default_scale_m())
        return {"input_res_m": np.asarray(scale * min(np.shape(x)[-2:]) / self.image_size)}

    def forward_tokens(self, x: Any, input_res_m: Any) -> Any:
        """Patch tokens ``(B, N, D)`` of a model-ready batch with per-sample ground sample distances ``(B,)``."""
        import torch

        from rs_embed_dask.models.vit import sincos_pos_embed_2d

        m = self.module
        t = m.patch_embed(x)
        g = self.grid_side
        pos = sincos_pos_embed_2d(t.shape[-1], g, g, input_res_m.to(t.device)).to(t.dtype)
        cls = m.cls_token.expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t + pos], dim=1)  # the cls position is zero
        t = m.blocks(m.pos_drop(t))
        return (m.norm(t) if self.final_norm else t)[:, 1:]

    def _grid(self, x: Any, input_res_m: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        g = self.grid_side
        return tokens_to_grid(self.forward_tokens(x, input_res_m), g, g)

    def forward_grid(self, x: Any) -> Any:
        """Grid of a model-ready batch taken as an ``image_size`` input fetched at the default scale.

        :meth:`embed_inputs` passes each input's own ground sample distance
        instead (:meth:`forward_with_sides`).
        """
        import torch

        return self._grid(x, torch.full((x.shape[0],), self._default_scale_m(), device=x.device))

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        grid = self._grid(x, sides["input_res_m"])
        return grid if output.mode == "grid" else pool_grid(grid, output.pooling)
