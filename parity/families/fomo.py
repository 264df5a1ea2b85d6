"""fomo: rs-embed's vendored FoMo ``MultiSpectralViT`` (FoMo-Net_1 shape), written as the published file.

The published ``fomo_single_embedding_layer_weights.pt`` is not on the Hugging Face hub
but behind a Dropbox link; both packages read a local file named by rs-embed's
``RS_EMBED_FOMO_CKPT``.  The harness writes the random checkpoint (a flat
``MultiSpectralViT`` state dict, ``torch.save``, as the published file) into its hub
cache folder like the others and points ``RS_EMBED_FOMO_CKPT`` of both side processes at
it (:func:`side_env`); downloads are turned off (``RS_EMBED_FOMO_AUTO_DOWNLOAD=0``).
rs-embed loads it with ``strict=False`` after stripping ``module.``/``model.``, ours
with ``strict=True``: the same tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FILENAME = "fomo_single_embedding_layer_weights.pt"
#: a made-up repository id: only the folder layout of the harness's cache is used
REPO = "parity-local/fomo-net-1"

MODELS = {"fomo": 10}
NATIVE = {"fomo": 64}
HUB_FILES = {"fomo": {"rs_embed": (REPO, FILENAME)}}


def build(model: str) -> tuple[Any, None]:
    """rs-embed's vendored ``MultiSpectralViT`` built with rs-embed's defaults and modality table (no weights)."""
    from rs_embed.embedders import onthefly_fomo as f

    e = f.FoMoEmbedder
    cfg = f._build_fomo_model_config(
        image_size=e.DEFAULT_IMAGE_SIZE, patch_size=e.DEFAULT_PATCH, dim=e.DEFAULT_DIM, depth=e.DEFAULT_DEPTH,
        heads=e.DEFAULT_HEADS, mlp_dim=e.DEFAULT_MLP_DIM, num_classes=e.DEFAULT_NUM_CLASSES,
    )  # fmt: skip
    mod = f._load_fomo_module()
    module = mod.MultiSpectralViT(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], channels=1, num_classes=cfg["num_classes"],
        dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"], mlp_dim=cfg["mlp_dim"], configs=cfg,
    )  # fmt: skip
    return module, None


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """``RS_EMBED_FOMO_CKPT`` -> the random checkpoint in the harness's cache; no download."""
    from parity.weights import snapshot_dir

    path = snapshot_dir(Path(workdir) / "hf" / "hub", REPO, seed) / FILENAME
    return {"RS_EMBED_FOMO_CKPT": str(path), "RS_EMBED_FOMO_AUTO_DOWNLOAD": "0"}
