"""satmaepp: both SatMAE++ checkpoints, written as published; both modalities compared.

* ``rgb`` (default): rshf's ``SatMAEPP`` (``MaskedAutoencoderViT``, default
  ``SatMAEPPConfig``: ViT-L/16 at 224) written as
  ``MVRL/satmaepp_ViT-L_pretrain_fmow_rgb`` ``model.safetensors`` +
  ``config.json``.  With transformers 5 rshf's ``from_pretrained`` fails on
  that config (``'PreTrainedConfig' object has no attribute 'in_chans'``);
  rs-embed catches exactly that and builds the model from the snapshot's
  ``config.json`` itself (``_load_satmaepp_from_snapshot``), so no
  workaround is needed.
* ``s2_10b``: rs-embed's vendored ``models_mae_group_channels.
  mae_vit_large_patch16`` (96 px, patch 8, 10 bands in 3 groups) written as
  ``mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel``
  ``checkpoint_ViT-L_pretrain_fmow_sentinel.pth``, a training checkpoint
  ``{"model": ..., "args": Namespace, "epoch": ...}``.

Both packages read the same two files.  :func:`control` replaces the MAE
``random_masking`` of both rs-embed classes by the identity (rs-embed's
``forward_encoder(x, mask_ratio=0)`` still shuffles the tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODELS = {"satmaepp": 10}
#: model -> {modality: native input size (px)}: extra cases with ``modality=``
MODALITIES = {"satmaepp": {"s2_10b": 96}}
RGB_REPO = "MVRL/satmaepp_ViT-L_pretrain_fmow_rgb"
S2_REPO = "mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel"
S2_FILE = "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
HUB_FILES = {"satmaepp": {"rs_embed": (RGB_REPO, "config.json", "model.safetensors")}}
#: the published repository's config.json (rshf SatMAEPPConfig fields, ViT-L/16)
RGB_CONFIG = {
    "in_chans": 3, "proj_ratio": 4, "img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24,
    "num_heads": 16, "mlp_ratio": 4.0, "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16,
    "norm_pix_loss": False,
}  # fmt: skip
KNOWN = {
    ("satmaepp", "grid"): (
        "rs-embed bug, as for satmae: both SatMAE++ encoders run `forward_encoder(x, mask_ratio=0.0)`, whose MAE "
        "`random_masking` reorders the tokens by `argsort(torch.rand(...))` and never restores the order, so "
        "rs-embed's grid is a fresh random permutation of the patch tokens on every call (rgb), or, for "
        "`modality='s2_10b'`, each cell averages three random tokens of the 3 x 144 group tokens instead of the "
        "three group tokens of that cell. Pooled outputs do not depend on the order. We keep the row-major, "
        "group-major order. The control run (both classes' `random_masking` replaced by the identity in the "
        "rs-embed process, nothing else changed) matches ours."
    ),
    ("satmaepp", "pooled"): (
        "rectangular ROI only: rs-embed pools the ROI's cells of its cut-back grid, which is the randomly "
        "permuted grid described under `satmaepp grid`, so its vector is the mean of random tokens. The control "
        "run (`random_masking` replaced by the identity) matches ours; square ROIs pass."
    ),
}


def build(model: str) -> tuple[Any, dict[str, Any]]:
    """The SatMAE++ of rshf (default ViT-L config, default init) and the repository's ``config.json``."""
    from rshf.satmaepp import SatMAEPP, SatMAEPPConfig

    return SatMAEPP(SatMAEPPConfig()), dict(RGB_CONFIG)


def _s2_module() -> Any:
    from rs_embed.embedders._vendor.satmaepp_s2 import models_mae_group_channels as mgc

    return mgc.mae_vit_large_patch16(
        img_size=96, patch_size=8, in_chans=10, channel_groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)),
        spatial_mask=False, norm_pix_loss=False,
    )  # fmt: skip


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """Write the rgb ``model.safetensors``, then build, randomise and write the s2_10b training checkpoint.

    The s2_10b snapshot reuses the rgb snapshot's (fake) revision and a seed
    derived from it, so a rerun writes the same file.
    """
    import argparse

    import torch

    from parity.weights import randomize_module, save_safetensors

    snap = Path(snapshot)
    save_safetensors(state, snap / "model.safetensors")
    rev = snap.name
    s2_snap = snap.parent.parent.parent / f"models--{S2_REPO.replace('/', '--')}" / "snapshots" / rev
    s2_snap.mkdir(parents=True, exist_ok=True)
    (s2_snap.parent.parent / "refs").mkdir(exist_ok=True)
    (s2_snap.parent.parent / "refs" / "main").write_text(rev)
    seed = int.from_bytes(hashlib.sha256(rev.encode()).digest()[:4], "little")
    torch.manual_seed(seed)
    module = _s2_module()
    randomize_module(module, seed, prefix="satmaepp_s2/")
    args = argparse.Namespace(model="mae_vit_large_patch16", input_size=96, patch_size=8, epochs=50)
    sd = {k: v.contiguous() for k, v in module.state_dict().items()}
    torch.save({"model": sd, "args": args, "epoch": 49}, s2_snap / S2_FILE)


@contextmanager
def control(model: str) -> Iterator[None]:
    """Both rs-embed SatMAE++ classes with ``random_masking`` replaced by the identity (tokens in order)."""
    import torch
    from rs_embed.embedders._vendor.satmaepp_s2 import models_mae_group_channels as mgc
    from rshf.satmaepp import SatMAEPP

    def identity(self: Any, x: Any, mask_ratio: float) -> Any:
        n, length, _ = x.shape
        ids = torch.arange(length, device=x.device).expand(n, length)
        return x, torch.zeros(n, length, device=x.device), ids

    classes = (SatMAEPP, mgc.MaskedAutoencoderGroupChannelViT)
    originals = [c.random_masking for c in classes]
    for c in classes:
        c.random_masking = identity  # type: ignore[method-assign]
    try:
        yield
    finally:
        for c, f in zip(classes, originals, strict=True):
            c.random_masking = f  # type: ignore[method-assign]
