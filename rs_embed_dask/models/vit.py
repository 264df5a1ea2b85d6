"""Helpers shared by the ViT families (remoteclip, satmae, scalemae, dofa).

:class:`ViTEmbedder` is the base of the square-input ViTs (``image_size``,
patch grid, test-only architecture overrides) and :class:`HubCheckpoint`
says where a family's published checkpoint is found.  The tensor helpers
work on ``torch`` tensors in ``(B, C, H, W)`` layout and import torch
lazily, so listing and describing models never imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import TorchEmbedder

__all__ = [
    "S2_RGB",
    "HubCheckpoint",
    "ViTArch",
    "ViTEmbedder",
    "check_int",
    "drop_keys",
    "load_strict",
    "pad_to_square",
    "resize_square",
    "scale_m_of",
    "sincos_pos_embed_2d",
    "tokens_to_grid",
]

#: Sentinel-2 L2A bands read by the RGB models, in R, G, B order.
S2_RGB = ("B4", "B3", "B2")


def check_int(model: str, cfg: Mapping[str, Any], key: str, minimum: int = 1) -> int | None:
    """``cfg[key]`` as an int ``>= minimum`` (``None`` when absent), else a :class:`ModelError`."""
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"{model} model_config {key!r} must be an integer >= {minimum}; got {value!r}")
    return value


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint published on the Hugging Face hub, looked for locally first.

    Attributes
    ----------
    repo, filename : str
        The hub repository and the checkpoint file in it.
    revision : str or None
        The pinned revision; ``None`` follows ``main`` (as rs-embed 0.3.1, which pins none).
    env_var : str
        The family's environment variable (a file, or a folder holding one of
        ``filenames``).
    fmt : str
        What the file holds and what is dropped from it (``describe()``'s
        ``weights["format"]``).
    filenames : tuple of str
        File names looked for in a folder; empty: ``(filename,)``.
    """

    repo: str
    filename: str
    revision: str | None
    env_var: str
    fmt: str
    filenames: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The ``weights`` entry of ``describe()``: source, revision, variable and format."""
        return {
            "source": f"huggingface: {self.repo}/{self.filename}",
            "revision": self.revision or "main (not pinned, as in rs-embed 0.3.1)",
            "env_var": self.env_var,
            "format": self.fmt,
        }

    def find(self, model: str, config: Mapping[str, Any]) -> Path:
        """The local checkpoint: ``config["weights"]``, ``$env_var``, else the hub (see ``find_weights``)."""
        from rs_embed_dask.models.weights import find_weights

        return find_weights(
            model,
            config=config,
            env_var=self.env_var,
            filenames=self.filenames or (self.filename,),
            hf_repo=self.repo,
            hf_filename=self.filename,
            revision=self.revision,
        )

    def load(
        self, model: str, config: Mapping[str, Any], *, strip: Sequence[str] = (), drop: Iterable[str] = ()
    ) -> tuple[dict[str, Any], Path]:
        """The checkpoint's state dict and its path (see :meth:`find`).

        Key prefixes ``strip`` (wrappers such as ``"module."``) are removed
        first, then the keys starting with any of ``drop`` (decoders, heads)
        are left out.
        """
        from rs_embed_dask.models.weights import load_state_dict, strip_prefix

        path = self.find(model, config)
        return drop_keys(strip_prefix(load_state_dict(path), *strip), drop), path


class ViTArch(TypedDict):
    """The architecture keywords of a ViT constructor (timm's, torchgeo's)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int


class ViTEmbedder(TorchEmbedder):
    """A ViT on square ``image_size`` inputs cut into ``patch_size`` patches.

    :meth:`configure_vit` reads ``image_size`` and the test-only architecture
    overrides from ``model_config``; ``input_prep`` tiles to ``image_size``.
    """

    patch_size: ClassVar[int] = 16
    image_size: int
    embed_dim: int
    depth: int
    num_heads: int

    def configure_vit(self, embed_dim: int, depth: int, num_heads: int) -> None:
        """Set ``image_size`` (a multiple of ``patch_size``, default 224) and the architecture.

        ``model_config`` keys ``depth``, ``embed_dim`` and ``num_heads``
        override the given defaults (tests and smoke runs only).
        """
        cfg, p = self.model_config, self.patch_size
        self.image_size = check_int(self.name, cfg, "image_size", p) or 224
        if self.image_size % p:
            raise ModelError(
                f"{self.name} model_config 'image_size' must be a multiple of {p}; got {self.image_size}"
            )
        self.depth = check_int(self.name, cfg, "depth", 1) or depth
        self.embed_dim = check_int(self.name, cfg, "embed_dim", 4) or embed_dim
        self.num_heads = check_int(self.name, cfg, "num_heads", 1) or num_heads

    @property
    def grid_side(self) -> int:
        """Patch tokens per side."""
        return self.image_size // self.patch_size

    def vit_arch(self) -> ViTArch:
        """``patch_size``, ``embed_dim``, ``depth`` and ``num_heads``, as keyword arguments of a ViT constructor."""
        return ViTArch(
            patch_size=self.patch_size, embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads
        )

    def resolve_input_size(self) -> int | None:
        """The configured backbone input (``image_size``), which ``input_prep`` tiles to."""
        return self.image_size


def check_choice(model: str, cfg: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    """``cfg[key]`` (lower-cased) when it is one of ``choices``, else a :class:`ModelError`."""
    value = cfg.get(key, default)
    key_l = str(value).strip().lower() if isinstance(value, str) else value
    if key_l not in choices:
        raise ModelError(f"{model} model_config {key!r} must be one of {list(choices)}; got {value!r}")
    return str(key_l)


def check_channels(model: str, x: Any, bands: Sequence[str]) -> None:
    """Raise a :class:`ModelError` unless ``x`` is ``(B, len(bands), H, W)``."""
    if x.ndim != 4 or x.shape[1] != len(bands):
        raise ModelError(
            f"{model} expects (B, {len(bands)}, H, W) inputs with bands {list(bands)}; got shape {tuple(x.shape)}"
        )


def resize_square(x: Any, size: int, *, mode: str = "bicubic", antialias: bool = True) -> Any:
    """Resize ``(B, C, H, W)`` to ``(B, C, size, size)``; a no-op when it already has that size."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=(size, size), mode=mode)


def pad_to_square(x: Any) -> Any:
    """Centre-pad ``(..., H, W)`` to a square: reflect when the pad is shorter than the short side, else edge.

    rs-embed's ``center_pad_to_square`` rule (``tools/shape.py``): the extra
    ``d = |H - W|`` rows or columns go ``d // 2`` before and the rest after,
    mirrored unless ``d >= min(H, W)``, where the edge is repeated instead.
    """
    import torch.nn.functional as F

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h == w:
        return x
    d = abs(h - w)
    lo, hi = d // 2, d - d // 2
    pad = (lo, hi, 0, 0) if h > w else (0, 0, lo, hi)
    mode = "reflect" if d < min(h, w) else "replicate"
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    if not flat.is_floating_point():  # F.pad's reflect/replicate need a float tensor
        return F.pad(flat.float(), pad, mode=mode).to(x.dtype).reshape(*lead, max(h, w), max(h, w))
    return F.pad(flat, pad, mode=mode).reshape(*lead, max(h, w), max(h, w))


def tokens_to_grid(tokens: Any, gh: int, gw: int) -> Any:
    """Row-major patch tokens ``(B, gh * gw, D)`` -> ``(B, D, gh, gw)`` (row 0 is the top, north)."""
    b, n, d = tokens.shape
    if n != gh * gw:
        raise ModelError(f"expected {gh}x{gw}={gh * gw} patch tokens, got {n}")
    return tokens.transpose(1, 2).reshape(b, d, gh, gw)


def sincos_pos_embed_2d(dim: int, gh: int, gw: int, res: Any) -> Any:
    """2-D sine-cosine positional embedding with the patch coordinates scaled by ``res``.

    Parameters
    ----------
    dim : int
        Embedding width (divisible by 4).
    gh, gw : int
        Token grid.
    res : torch.Tensor
        ``(B,)`` scale factors (Scale-MAE's ground sample distance); ``1`` gives
        the plain MAE embedding.

    Returns
    -------
    torch.Tensor
        ``(B, gh * gw, dim)``: the first half encodes the column, the second the
        row, each as ``[sin, cos]`` of ``pos / 10000 ** (2 i / (dim / 2))``.
    """
    import torch

    if dim % 4:
        raise ModelError(f"the sin-cos positional embedding needs a width divisible by 4; got {dim}")
    dt = torch.float32
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=dt, device=res.device),
        torch.arange(gw, dtype=dt, device=res.device),
        indexing="ij",
    )
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=dt, device=res.device) / quarter)
    r = res.to(dt).reshape(-1, 1, 1)

    def _enc(pos: Any) -> Any:  # (gh, gw) -> (B, gh * gw, dim / 2)
        out = (r * pos.reshape(1, -1, 1)) * omega.reshape(1, 1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)

    return torch.cat([_enc(cols), _enc(rows)], dim=-1)


def drop_keys(state: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    """``state`` without the keys starting with any of ``prefixes`` (decoders, heads)."""
    pre = tuple(prefixes)
    return {k: v for k, v in state.items() if not k.startswith(pre)}


def load_strict(module: Any, state: Mapping[str, Any], *, model: str, path: Any) -> None:
    """``module.load_state_dict(state, strict=True)`` with a :class:`ModelError` that lists the differences."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))
    )
    if missing or unexpected or mismatched:
        raise ModelError(
            f"The checkpoint {str(path)!r} does not match model {model!r}: "
            f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, "
            f"shape mismatches {mismatched[:8]}. Is it the checkpoint of this variant?"
        )
    module.load_state_dict(dict(state), strict=True)


def interpolate_pos_embed(pos: Any, gh: int, gw: int, prefix: int = 1) -> Any:
    """Bicubic resize of a square ``(1, prefix + n * n, D)`` positional table to ``gh x gw`` patches."""
    import torch
    import torch.nn.functional as F

    n = pos.shape[1] - prefix
    side = round(n**0.5)
    if side * side != n:
        raise ModelError(f"cannot resize a positional embedding of {n} patch positions (not a square)")
    if (side, side) == (gh, gw):
        return pos
    head, grid = pos[:, :prefix], pos[:, prefix:]
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(pos.dtype)
    return torch.cat([head, grid], dim=1)


def scale_m_of(context: Mapping[str, Any] | None, default: float) -> float:
    """The fetch scale (metres per pixel) of one input: its sensor's, its fetch meta's, or ``default``."""
    if context:
        sensor = context.get("sensor")
        value = getattr(sensor, "scale_m", None)
        if value is None:
            meta = context.get("fetch_meta") or {}
            value = meta.get("scale_m") if isinstance(meta, Mapping) else None
        if value is not None:
            return float(value)
    return float(default)


def timm_vit(
    *,
    image_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    in_chans: int = 3,
    pos_embed: str = "learn",
    norm_eps: float = 1e-6,
) -> Any:
    """An MAE-style timm ViT encoder (keys ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.*``, ``norm``).

    The state-dict keys are those of the official MAE / SatMAE / Scale-MAE
    encoders, so their checkpoints load unchanged once decoder keys are dropped.
    ``norm_eps`` is the epsilon of every LayerNorm (blocks and final norm).
    """
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    if embed_dim % num_heads:
        raise ModelError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
    return VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=0,
        global_pool="",
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        class_token=True,
        pos_embed=pos_embed,
        norm_layer=partial(nn.LayerNorm, eps=norm_eps),
    )
