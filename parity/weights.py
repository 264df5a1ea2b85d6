"""Seeded random weights, the Hugging Face hub cache layout, and checkpoint-format conversions.

Both packages load their *default* checkpoint from the hub cache
(``HF_HUB_OFFLINE=1``), so the harness writes a cache that looks like the
one a download leaves: ``models--<org>--<name>/refs/main`` holding a commit
hash and ``models--<org>--<name>/snapshots/<hash>/<files>``.

The random checkpoints are built with rs-embed's own model classes (in the
rs-embed environment, :mod:`parity.sides.rsembed_side`) in the format of the
published files; where our loader reads a different file of the same
checkpoint, a conversion here derives it:

=============  ======================================================  ==========================================
model          rs-embed reads                                          we read
=============  ======================================================  ==========================================
remoteclip     ``MVRL/remote-clip-vit-base-patch32/model.safetensors``  ``chendelong/RemoteCLIP/RemoteCLIP-ViT-B-32.pt``
               (rshf wrapper: open_clip keys under ``model.``)         (open_clip state dict): :func:`rshf_remoteclip_to_open_clip`
satmae         ``MVRL/satmae-vitlarge-fmow-pretrain-800``              the same ``model.safetensors``
scalemae       ``MVRL/scalemae-vitlarge-800``                          the same ``model.safetensors``
dofa           ``earthflow/DOFA/DOFA_ViT_base_e100.pth``               the same file
prithvi        ``ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL``          the same ``Prithvi_EO_V2_100M_TL.pt``
=============  ======================================================  ==========================================
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "HUB_FILES",
    "fake_revision",
    "open_clip_to_rshf_remoteclip",
    "random_tensor",
    "randomize_module",
    "rshf_remoteclip_to_open_clip",
    "save_safetensors",
    "snapshot_dir",
    "write_snapshot",
]

#: (hub repository, files) of each model's default checkpoint, rs-embed's side first.
HUB_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "remoteclip": {
        "rs_embed": ("MVRL/remote-clip-vit-base-patch32", "config.json", "model.safetensors"),
        "ours": ("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt"),
    },
    "satmae": {"rs_embed": ("MVRL/satmae-vitlarge-fmow-pretrain-800", "config.json", "model.safetensors")},
    "scalemae": {"rs_embed": ("MVRL/scalemae-vitlarge-800", "config.json", "model.safetensors")},
    "dofa": {"rs_embed": ("earthflow/DOFA", "DOFA_ViT_base_e100.pth")},
    "prithvi": {
        "rs_embed": ("ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL", "config.json", "Prithvi_EO_V2_100M_TL.pt")
    },
}


def _add_families() -> None:
    from parity.families import hub_files

    HUB_FILES.update(hub_files())


_add_families()


def fake_revision(repo_id: str, seed: int) -> str:
    """A 40-hex-digit commit hash for ``repo_id`` (deterministic, never a real one)."""
    return hashlib.sha1(f"parity|{repo_id}|{seed}".encode()).hexdigest()


def snapshot_dir(hub_cache: str | os.PathLike[str], repo_id: str, seed: int) -> Path:
    """``<hub_cache>/models--<org>--<name>/snapshots/<revision>``."""
    return Path(hub_cache) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / fake_revision(repo_id, seed)


def write_snapshot(hub_cache: str | os.PathLike[str], repo_id: str, seed: int) -> Path:
    """Create the snapshot folder of ``repo_id`` and point ``refs/main`` at it; return the folder."""
    snap = snapshot_dir(hub_cache, repo_id, seed)
    snap.mkdir(parents=True, exist_ok=True)
    refs = snap.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(fake_revision(repo_id, seed))
    return snap


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "little") & (2**63 - 1)


def random_tensor(like: Any, key: str, seed: int) -> Any:
    """A seeded random replacement of the floating tensor ``like`` (same shape and dtype).

    Scales keep activations in range through deep stacks, and are not the
    default initialisation (norm weights are not all ones, biases not zero),
    so that a missing or extra normalisation or bias shows in the outputs:

    * 0-d: unchanged (e.g. CLIP's ``logit_scale``);
    * 1-d tensors that are all ones (norm weights, learnt scales): ``1 + 0.1 N``;
    * other 1-d tensors (biases, class embeddings): ``0.02 N``;
    * tensors whose first dimension is 1 (tokens, positional tables): ``0.02 N``;
    * other tensors (weights): ``N / sqrt(fan_in)``.
    """
    import torch

    g = torch.Generator().manual_seed(_seed(seed, key))
    t = like.detach()
    if t.ndim == 0:
        return t.clone()
    z = torch.randn(tuple(t.shape), generator=g, dtype=torch.float32)
    if t.ndim == 1:
        out = 1.0 + 0.1 * z if bool(torch.all(t == 1)) else 0.02 * z
    elif t.shape[0] == 1:
        out = 0.02 * z
    else:
        out = z / math.sqrt(max(1, math.prod(t.shape[1:])))
    return out.to(t.dtype)


def randomize_module(module: Any, seed: int, *, prefix: str = "") -> None:
    """Replace ``module``'s parameters in place by :func:`random_tensor` values.

    Trainable parameters are replaced; frozen parameters and buffers (fixed
    sine-cosine tables, as the published checkpoints hold them) are kept,
    except frozen tables left all zeros by a class that expects them from
    the checkpoint (DOFA's ``pos_embed``), which become random too.
    """
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.is_floating_point():
                continue
            if p.requires_grad or bool(torch.all(p == 0)):
                p.copy_(random_tensor(p, prefix + name, seed))


def save_safetensors(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` as safetensors (contiguous CPU copies; shared storage is fine)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(path))


def rshf_remoteclip_to_open_clip(state: Mapping[str, Any]) -> dict[str, Any]:
    """The open_clip state dict of rshf's RemoteCLIP state dict (keys ``model.<open_clip key>``).

    rshf wraps open_clip's ``CLIP`` as the attribute ``model`` of a hub
    mixin, so every key carries the prefix ``model.``; the RemoteCLIP ``.pt``
    files our loader reads are the bare open_clip ``CLIP`` state dict.  The
    tensors are unchanged.

    Raises
    ------
    ValueError
        When a key lacks the prefix (not an rshf RemoteCLIP state dict).
    """
    bad = [k for k in state if not k.startswith("model.")]
    if bad:
        raise ValueError(f"not an rshf RemoteCLIP state dict: keys without 'model.': {bad[:5]}")
    return {k[len("model.") :]: v for k, v in state.items()}


def open_clip_to_rshf_remoteclip(state: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`rshf_remoteclip_to_open_clip`."""
    return {f"model.{k}": v for k, v in state.items()}


def convert_remoteclip(rshf_file: str | os.PathLike[str], out_file: str | os.PathLike[str]) -> Path:
    """Write our RemoteCLIP ``.pt`` (open_clip state dict, ``torch.save``) from rshf's ``model.safetensors``."""
    import torch
    from safetensors.torch import load_file

    state = rshf_remoteclip_to_open_clip(load_file(str(rshf_file), device="cpu"))
    out = Path(out_file)
    tmp = out.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    return out


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` to ``dst`` (copy across file systems); replaces ``dst``."""
    d = Path(dst)
    if d.exists() or d.is_symlink():
        d.unlink()
    try:
        os.link(src, d)
    except OSError:
        shutil.copyfile(src, d)


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as indented JSON."""
    Path(path).write_text(json.dumps(doc, indent=2))
