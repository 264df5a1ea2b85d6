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

Preprocessing: 8-bit levels of ``clip(DN / 10000, 0, 1)``, square pad, bicubic
resize to ``image_size``, ``/ 255``, ImageNet mean/std.  Grid = patch tokens
after the final LayerNorm, pooled = their mean (or max).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.models.satmae import PATCH, SatMAEEmbedder
from rs_embed_dask.specs import OutputSpec
from rs_embed_dask.types import Embedding

__all__ = ["ScaleMAEEmbedder"]

HF_REPO = "MVRL/scalemae-vitlarge-800"
HF_FILENAME = "model.safetensors"
HF_REVISION: str | None = None  # the reference pins none
ENV_VAR = "RS_EMBED_SCALEMAE_WEIGHTS"
FILENAMES = ("model.safetensors", "pytorch_model.bin", "scalemae-vitlarge-800.pth")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DROP_PREFIXES = ("decoder", "mask_token", "fpn", "fcn_", "head.", "fc_norm.", "pos_embed")


class ScaleMAEEmbedder(SatMAEEmbedder):
    """Scale-MAE (ViT-L/16) patch-token embeddings of Sentinel-2 RGB, conditioned on the fetch scale.

    ``model_config`` keys are those of ``satmae`` (``weights``, ``image_size``
    and the test-only ``depth``, ``embed_dim``, ``num_heads``); the weights
    variable is ``$RS_EMBED_SCALEMAE_WEIGHTS``.
    """

    name = "scalemae"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self._input_res_m: Any = None
        self._scale_m: float | None = None

    def _weights_info(self) -> dict[str, Any]:
        return {
            "source": f"huggingface: {HF_REPO}/{HF_FILENAME}",
            "revision": HF_REVISION or "main (the reference pins none)",
            "env_var": ENV_VAR,
            "format": "Scale-MAE encoder state dict (safetensors or torch.load weights_only=True); "
            "decoder keys and pos_embed are dropped",
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["side_inputs"] = {
            "input_res_m": "scale_m * min(H, W) / image_size: the ground sample distance of the resized "
            "input, from each input's fetch scale (sensor.scale_m)"
        }
        return d

    def _checkpoint(self) -> tuple[dict[str, Any], Any]:
        from rs_embed_dask.models.vit import drop_keys
        from rs_embed_dask.models.weights import find_weights, load_state_dict, strip_prefix

        path = find_weights(
            self.name,
            config=self.model_config,
            env_var=ENV_VAR,
            filenames=FILENAMES,
            hf_repo=HF_REPO,
            hf_filename=HF_FILENAME,
            revision=HF_REVISION,
        )
        state = strip_prefix(load_state_dict(path), "module.", "model.", "encoder.")
        return drop_keys(state, DROP_PREFIXES), path

    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import load_strict, timm_vit

        state, path = self._checkpoint()
        module = timm_vit(
            image_size=self.image_size,
            patch_size=PATCH,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            pos_embed="none",
        )
        load_strict(module, state, model=self.name, path=path)
        return module

    # -- GSD conditioning ------------------------------------------------------------
    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed raw inputs; inputs are grouped by fetch scale, which conditions the positional embedding."""
        from rs_embed_dask.models.vit import scale_m_of

        default = float(self.describe()["defaults"]["scale_m"])
        scales = [scale_m_of(contexts[i] if contexts else None, default) for i in range(len(inputs))]
        results: list[Embedding | None] = [None] * len(inputs)
        by_scale: dict[float, list[int]] = {}
        for i, s in enumerate(scales):
            by_scale.setdefault(s, []).append(i)
        with self._lock:  # the scale is read by forward_grid of the same call
            for s, idx in by_scale.items():
                self._scale_m = s
                try:
                    out = super().embed_inputs([inputs[i] for i in idx], output=output)
                finally:
                    self._scale_m = None
                for i, emb in zip(idx, out, strict=True):
                    emb.meta["input_res_m"] = s * min(np.shape(inputs[i])[-2:]) / self.image_size
                    results[i] = emb
        return [r for r in results if r is not None]

    def preprocess(self, x: Any) -> Any:
        import torch

        scale = self._scale_m if self._scale_m is not None else float(self.describe()["defaults"]["scale_m"])
        res = scale * min(int(x.shape[-2]), int(x.shape[-1])) / self.image_size
        self._input_res_m = torch.full((x.shape[0],), res, dtype=torch.float32, device=x.device)
        return super().preprocess(x)

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
        return m.norm(t)[:, 1:]

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        res = self._input_res_m
        if res is None or res.shape[0] != x.shape[0]:
            raise RuntimeError(
                "scalemae: preprocess must run before forward_grid (it sets the input resolution)"
            )
        g = self.grid_side
        return tokens_to_grid(self.forward_tokens(x, res), g, g)
