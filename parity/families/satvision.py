"""satvision: rs-embed's vendored SatVision SwinV2 on a smaller config, written as the published DeepSpeed file.

The published ``nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128/
mp_rank_00_model_states.pt`` is the SimMIM pretraining model saved by DeepSpeed:
``{"module": {"encoder.<key>": ..., "decoder.<key>": ...}, <training bookkeeping>}``.
rs-embed picks ``module``, strips ``encoder.`` and loads the keys into its vendored
``SwinTransformerV2ForSimMIM`` (``strict=False``; the decoder keys are dropped); ours loads
the same file, decoder dropped, with ``strict=True``.

The giant (3 B parameters, ~12 GB of float32) does not fit this machine, and rs-embed
hard-codes its dimensions (``_build_satvision_official_compatible_model``; its
``RS_EMBED_SATVISION_TOA_*`` variables set only channels, drop path, windows and the extra
norms).  Both sides therefore run :data:`SMALL`: the giant's layout (4 stages, patch 4,
window 8, an extra norm every 6th block, 128 px input, 14 channels) with embed 32, depths
2/2/6/2 and heads 2/4/8/16.  On the rs-embed side :func:`rsembed_setup` replaces the
giant builder by rs-embed's own vendored class with these dimensions (the loader, the
preprocessing, the forward paths and the output handling are rs-embed's, unchanged); ours
reads the architecture from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = {"satvision": 1000}
NATIVE = {"satvision": 128}
HUB_FILES = {
    "satvision": {
        "rs_embed": (
            "nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128",
            "mp_rank_00_model_states.pt",
        )
    }
}
WINDOW = {"satvision": ("2022-06-01", "2022-07-01")}

#: the giant's layout at a size this machine runs in seconds (4096-d giant -> 256-d)
SMALL: dict[str, Any] = {"embed_dim": 32, "depths": (2, 2, 6, 2), "num_heads": (2, 4, 8, 16)}


def _vendored(model: str) -> Any:
    from rs_embed.embedders._vendor.satvision_caney import SwinTransformerV2ForSimMIM

    return SwinTransformerV2ForSimMIM(
        img_size=128, patch_size=4, in_chans=14, num_classes=0, window_size=8, mlp_ratio=4.0, qkv_bias=True,
        drop_rate=0.0, drop_path_rate=0.1, ape=False, patch_norm=True, pretrained_window_sizes=(0, 0, 0, 0),
        extra_norm_period=6, extra_norm_stage=False, **SMALL,
    )  # fmt: skip


def build(model: str) -> tuple[Any, None]:
    """rs-embed's vendored ``SwinTransformerV2ForSimMIM`` of :data:`SMALL` (default init)."""
    return _vendored(model), None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """Write the DeepSpeed layout: ``module`` holds ``encoder.*`` and the SimMIM decoder (1x1 conv)."""
    import torch

    module = {f"encoder.{k}": v.detach().contiguous().clone() for k, v in state.items()}
    dim = int(state["norm.weight"].shape[0])
    gen = torch.Generator().manual_seed(7)
    module["decoder.0.weight"] = torch.randn(32 * 32 * 14, dim, 1, 1, generator=gen)
    module["decoder.0.bias"] = torch.randn(32 * 32 * 14, generator=gen)
    torch.save({"module": module, "global_steps": 1, "ds_version": "0.14.0", "buffer_names": []},
               Path(snapshot) / files[0])  # fmt: skip


def rsembed_setup(model: str) -> str:
    """rs-embed side: build :data:`SMALL` where rs-embed builds the giant; returns the note for the report."""
    import rs_embed.embedders.onthefly_satvision_toa as sv

    def small(**_: Any) -> Any:
        return _vendored(model)

    sv._build_satvision_official_compatible_model = small
    return (
        "rs-embed's SatVision builder (_build_satvision_official_compatible_model, hard-coded giant) replaced by its "
        f"vendored SwinTransformerV2ForSimMIM with embed_dim={SMALL['embed_dim']}, depths={list(SMALL['depths'])}, "
        f"num_heads={list(SMALL['num_heads'])} (the giant does not fit this machine); loader, preprocessing and "
        "outputs unchanged"
    )
