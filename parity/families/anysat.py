"""anysat: rs-embed's vendored AnySat ``base`` (release mode), written as the published ``models/AnySat.pth``.

The published ``g-astruc/AnySat/models/AnySat.pth`` holds ``{"state_dict": {<AnyModule key>: tensor}}``
(what the release's ``hubconf.AnySat.from_pretrained`` reads); rs-embed loads it into the
vendored ``hubconf.AnySat(model_size="base").model`` with ``strict=True``, and so do we, into
our own encoder.  The full ``base`` (126 M parameters, ~500 MB) runs on both sides.

rs-embed downloads the file with ``cache_dir=~/.cache/rs_embed/anysat`` unless
``RS_EMBED_ANYSAT_CACHE_DIR`` names another cache: :func:`side_env` points that variable at the
harness's hub cache for both sides (ours reads the same cache through ``HF_HUB_CACHE`` too).

AnySat's native input is 24 x 24 pixels (``image_size``), so the default ``input_prep="tile"``
cuts a 300-pixel ROI into 13 x 13 = 169 tiles of 8 frames each (rs-embed runs them one by one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS = {"anysat": 10}
NATIVE = {"anysat": 24}
HUB_FILES = {"anysat": {"rs_embed": ("g-astruc/AnySat", "models/AnySat.pth")}}


def build(model: str) -> tuple[Any, None]:
    """The release's ``AnyModule`` built by rs-embed's vendored ``hubconf.AnySat("base")`` (default init)."""
    from rs_embed.embedders._vendor.anysat.hubconf import AnySat

    return AnySat(model_size="base", flash_attn=False).model, None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """``torch.save({"state_dict": state}, <snapshot>/models/AnySat.pth)``, as the published file."""
    import torch

    out = Path(snapshot) / files[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().contiguous().clone() for k, v in state.items()}}, out)


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """rs-embed's AnySat download cache -> the harness's hub cache (both sides)."""
    return {"RS_EMBED_ANYSAT_CACHE_DIR": str(Path(workdir) / "hf" / "hub")}
