"""agrifm: rs-embed's vendored AgriFM encoder (``PretrainingSwinTransformer3DEncoder``), written as ``AgriFM.pth``.

AgriFM's checkpoint is not on the Hugging Face hub: rs-embed downloads it from
a URL, or reads the file named by ``RS_EMBED_AGRIFM_CKPT``.  The harness writes
the random checkpoint into a hub-cache-shaped folder like the others (a fake
repository ``glass-hku/AgriFM``) and passes that file to *both* sides through
rs-embed's variable (:func:`side_env`, with the download switched off), so both
load the same file: rs-embed through its vendored module and mmengine-free
loader (``revise_keys``: ``S2_patch_emd`` -> ``patch_emd``, ``strict=False``),
ours with ``strict=True``.

The file is ``{"state_dict": {"S2_patch_emd.*", "backbone.*"}}``: the encoder
built as rs-embed builds it (``SwinPatchEmbed3D`` 10 bands, embed 128, depths
2/2/18/2, window 8x7x7, ``mean_frame_down``), 87.6 M parameters (350 MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = {"agrifm": 10}
NATIVE = {"agrifm": 224}
_REPO = "glass-hku/AgriFM"
_FILE = "AgriFM.pth"
HUB_FILES = {"agrifm": {"rs_embed": (_REPO, _FILE)}}


def build(model: str) -> tuple[Any, None]:
    """rs-embed's AgriFM encoder with default init, configured as ``_load_agrifm_cached`` configures it (no weights)."""
    from rs_embed.embedders.onthefly_agrifm import _import_agrifm_swin

    mod = _import_agrifm_swin()
    patch_cfg = {"type": "SwinPatchEmbed3D", "patch_size": (4, 2, 2), "in_chans": 10, "embed_dim": 128}
    backbone_cfg = {
        "type": "SwinTransformer3D", "pretrained": None, "pretrained2d": False, "patch_size": (4, 2, 2),
        "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": (8, 7, 7),
        "out_indices": (0, 1, 2, 3), "mlp_ratio": 4.0, "qkv_bias": True, "qk_scale": None, "drop_rate": 0.0,
        "attn_drop_rate": 0.0, "drop_path_rate": 0.2, "patch_norm": False, "frozen_stages": -1,
        "use_checkpoint": False, "downsample_steps": ((2, 2, 2),) * 4, "feature_fusion": "cat",
        "mean_frame_down": True,
    }  # fmt: skip
    return mod.PretrainingSwinTransformer3DEncoder(
        patch_emd_cfg=patch_cfg, backbone_cfg=backbone_cfg, init_cfg=None
    ), None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """Write ``{"state_dict": ...}`` with the Sentinel-2 patch embedding named ``S2_patch_emd``, as the pretraining model."""
    import torch

    out = {k.replace("patch_emd.", "S2_patch_emd.", 1) if k.startswith("patch_emd.") else k: v.detach().contiguous().clone()
           for k, v in state.items()}  # fmt: skip
    torch.save({"state_dict": out}, Path(snapshot) / files[0])


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """The variables both sides run with: rs-embed's ``RS_EMBED_AGRIFM_CKPT`` naming the harness's file."""
    from parity.weights import snapshot_dir

    return {
        "RS_EMBED_AGRIFM_CKPT": str(snapshot_dir(Path(workdir) / "hf" / "hub", _REPO, seed) / _FILE),
        "RS_EMBED_AGRIFM_AUTO_DOWNLOAD": "0",
    }
