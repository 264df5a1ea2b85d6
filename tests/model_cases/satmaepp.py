"""satmaepp: tiny SatMAE++ encoders with random weights in the published formats.

``rgb`` (the contract's default): rshf ``SatMAEPP`` ``model.safetensors`` +
``config.json`` (encoder, MAE decoder and the multi-scale up-sampling branch).
``s2_10b``: the SatMAE++ training checkpoint ``{"model": ..., "args":
Namespace, "epoch": ...}`` of the grouped-channel MAE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_cases import ModelCase
from model_cases._vit_common import raw_tile, rgb_golden, vit_case
from model_cases.satmae import TINY, mae_state

RGB_MEAN = (0.4182007312774658, 0.4214799106121063, 0.3991275727748871)
RGB_STD = (0.28774282336235046, 0.27541765570640564, 0.2764017581939697)
#: a tiny s2_10b encoder: 16 px inputs, patch 8 (2 x 2 tokens per group), 8-channel group embedding
S2_TINY: dict[str, Any] = {
    "modality": "s2_10b",
    "image_size": 16,
    "depth": 1,
    "embed_dim": 32,
    "num_heads": 2,
}
S2_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))


def _r(g: Any, *shape: int) -> Any:
    import torch

    return torch.randn(*shape, generator=g) * 0.05


def upsampling_keys(in_c: int, seed: int, *, blocks: tuple[str, ...] = ("up_block",)) -> dict[str, Any]:
    """Random tensors under SatMAE++'s multi-scale up-sampling keys (dropped by the encoder)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ms = 4 * in_c
    out = {"proj_up_conv.weight": _r(g, ms, in_c, 1, 1), "proj_up_conv.bias": _r(g, ms),
           "proj_up_norm.weight": 1 + _r(g, ms), "proj_up_norm.bias": _r(g, ms)}  # fmt: skip
    for b in blocks:
        out.update(
            {f"{b}.up_conv.weight": _r(g, ms, ms, 4, 4), f"{b}.proj_out.weight": _r(g, in_c, ms, 3, 3)}
        )
    return out


def rgb_state(seed: int = 2) -> dict[str, Any]:
    """rshf SatMAEPP keys: the MAE encoder/decoder of ``mae_state`` plus the up-sampling branch."""
    return {**mae_state(seed=seed), **upsampling_keys(3, seed)}


def s2_state(
    embed_dim: int = 32, depth: int = 1, side: int = 2, chan: int = 8, seed: int = 3
) -> dict[str, Any]:
    """The grouped-channel MAE's ``model`` state: encoder, decoder and up-sampling keys."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, n = embed_dim, side * side
    state: dict[str, Any] = {
        "cls_token": _r(g, 1, 1, d),
        "pos_embed": _r(g, 1, n + 1, d - chan),
        "channel_embed": _r(g, 1, len(S2_GROUPS), chan),
        "norm.weight": 1 + _r(g, d),
        "norm.bias": _r(g, d),
        "mask_token": _r(g, 1, 1, 16),
        "decoder_pos_embed": _r(g, 1, n + 1, 12),
        "decoder_channel_embed": _r(g, 1, len(S2_GROUPS) + 1, 4),
        "decoder_embed.weight": _r(g, 16, d),
        "decoder_pred.0.weight": _r(g, 4 * 64, 16),
    }
    for i, grp in enumerate(S2_GROUPS):
        state[f"patch_embed.{i}.proj.weight"] = _r(g, d, len(grp), 8, 8)
        state[f"patch_embed.{i}.proj.bias"] = _r(g, d)
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + _r(g, d), b + "norm1.bias": _r(g, d),
                b + "attn.qkv.weight": _r(g, 3 * d, d), b + "attn.qkv.bias": _r(g, 3 * d),
                b + "attn.proj.weight": _r(g, d, d), b + "attn.proj.bias": _r(g, d),
                b + "norm2.weight": 1 + _r(g, d), b + "norm2.bias": _r(g, d),
                b + "mlp.fc1.weight": _r(g, 4 * d, d), b + "mlp.fc1.bias": _r(g, 4 * d),
                b + "mlp.fc2.weight": _r(g, d, 4 * d), b + "mlp.fc2.bias": _r(g, d),
            }
        )  # fmt: skip
    state.update(upsampling_keys(10, seed, blocks=("up_block1", "up_block2")))
    return state


def write_s2_checkpoint(directory: Path, state: dict[str, Any] | None = None) -> Path:
    """The training checkpoint as SatMAE++'s ``misc.save_model`` writes it (``args`` is a Namespace)."""
    import argparse

    import torch

    path = directory / "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
    args = argparse.Namespace(model="mae_vit_large_patch16", input_size=96, patch_size=8, grouped_bands=[])
    torch.save({"model": state or s2_state(), "args": args, "epoch": 49, "scaler": {"scale": 65536.0}}, path)
    return path


def _setup(directory: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    save_file(rgb_state(), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"in_chans": 3, "img_size": 224, "patch_size": 16}))
    return {"weights": str(directory), **TINY}


def _case() -> ModelCase:
    raw = raw_tile(3, 32)
    exact = [({}, (32, 32)), ({}, (45, 50)), ({"image_size": 64}, (64, 64))]
    return vit_case(raw, rgb_golden(raw, RGB_MEAN, RGB_STD), _setup, exact_pooling=exact)


CASES = {"satmaepp": _case()}
