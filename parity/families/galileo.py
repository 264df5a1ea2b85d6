"""galileo: rs-embed's vendored Galileo ``Encoder`` (default size ``nano``), written as the published model folder.

The published ``nasaharvest/galileo`` repository holds ``models/<size>/config.json``
(``model.encoder``: the architecture) and ``models/<size>/encoder.pt`` (the encoder's
flat state dict).  The nano encoder is built with rs-embed's vendored
``_vendor/galileo_single_file.Encoder`` from the published nano configuration
(default init; trainable parameters replaced by seeded values, the fixed position and
month tables kept) and saved in that layout.  rs-embed downloads the folder with
``snapshot_download(..., cache_dir=$RS_EMBED_GALILEO_CACHE_DIR)`` (default
``~/.cache/rs_embed/galileo``, a Hugging Face cache folder): :func:`side_env` points
that variable at the harness's hub cache for both sides, so both read the same two
files (ours through the same variable, rs-embed's documented override).

Windows: the plan's one-year window gives 12 frames (3,840 tokens per 64 px input);
galileo's cases run on rs-embed's default three-month window (4 frames), plus a
19-day window (one composite), the one-year window (12 monthly frames) and a two-year
window (12 equal frames, the stretched rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELS = {"galileo": 10}
NATIVE = {"galileo": 64}
HUB_FILES = {
    "galileo": {"rs_embed": ("nasaharvest/galileo", "models/nano/encoder.pt", "models/nano/config.json")}
}
WINDOW = {"galileo": ("2022-06-01", "2022-09-01")}
WINDOWS = {
    "galileo": (
        (("2022-06-01", "2022-06-20"), 19),
        (("2022-01-01", "2023-01-01"), 365),
        (("2021-01-01", "2023-01-01"), 730),
    )
}

#: ``models/nano/config.json`` of the published repository (its ``model`` entry; training keys left out)
NANO_CONFIG: dict[str, Any] = {
    "model": {
        "encoder": {
            "embedding_size": 128, "depth": 4, "num_heads": 8, "mlp_ratio": 4, "max_sequence_length": 24,
            "freeze_projections": False, "drop_path": 0.1, "max_patch_size": 8,
        },
        "decoder": {
            "depth": 2, "num_heads": 8, "mlp_ratio": 4, "max_sequence_length": 24,
            "learnable_channel_embeddings": True, "max_patch_size": 8, "encoder_embedding_size": 128,
            "decoder_embedding_size": 128,
        },
    }
}  # fmt: skip


def build(model: str) -> tuple[Any, None]:
    """rs-embed's vendored Galileo ``Encoder`` with the nano configuration (default init, no weights)."""
    from rs_embed.embedders._vendor.galileo_single_file import Encoder

    return Encoder(**NANO_CONFIG["model"]["encoder"]), None


def save(model: str, state: dict[str, Any], snapshot: Path, files: list[str]) -> None:
    """Write ``models/nano/encoder.pt`` (``torch.save`` of the flat state dict) and ``models/nano/config.json``."""
    import torch

    folder = Path(snapshot) / "models" / "nano"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().contiguous().clone() for k, v in state.items()}, folder / "encoder.pt")
    (folder / "config.json").write_text(json.dumps(NANO_CONFIG))


def side_env(workdir: Path, seed: int) -> dict[str, str]:
    """rs-embed's Galileo cache folder (``RS_EMBED_GALILEO_CACHE_DIR``) -> the harness's hub cache."""
    return {"RS_EMBED_GALILEO_CACHE_DIR": str(Path(workdir).resolve() / "hf" / "hub")}
