"""Helpers shared by the ViT families (remoteclip, satmae, scalemae, dofa).

Everything here works on ``torch`` tensors in ``(B, C, H, W)`` layout and is
imported lazily by the model modules, so listing and describing models never
imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rs_embed_dask.errors import ModelError

__all__ = [
    "S2_RGB",
    "check_int",
    "drop_keys",
    "load_strict",
    "pad_to_square",
    "resize_square",
    "rgb_levels",
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


def rgb_levels(x: Any) -> Any:
    """Sentinel-2 DN -> the 8-bit levels of an RGB image, as float (``floor(clip(DN/10000, 0, 1) * 255)``).

    This is the ``uint8`` conversion rs-embed applies before the image
    transforms; ``astype(uint8)`` truncates, hence the floor.
    """
    import torch

    return torch.floor((x / 10000.0).clamp(0.0, 1.0) * 255.0)


def resize_square(x: Any, size: int, *, mode: str = "bicubic", antialias: bool = True) -> Any:
    """Resize ``(B, C, H, W)`` to ``(B, C, size, size)``; a no-op when it already has that size."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=(size, size), mode=mode)


def requantize(levels: Any) -> Any:
    """Round resampled 8-bit levels back to integers in ``[0, 255]`` (what a PIL ``uint8`` resize returns)."""
    return levels.round().clamp(0.0, 255.0)


def pad_to_square(x: Any) -> Any:
    """Centre-pad ``(B, C, H, W)`` to a square: reflect where the pad fits, edge otherwise."""
    import torch.nn.functional as F

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h == w:
        return x
    d = abs(h - w)
    lo, hi = d // 2, d - d // 2
    pad = (lo, hi, 0, 0) if h > w else (0, 0, lo, hi)
    short = min(h, w)
    mode = "reflect" if hi < short else "replicate"
    return F.pad(x, pad, mode=mode)


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
) -> Any:
    """An MAE-style timm ViT encoder (keys ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.*``, ``norm``).

    The state-dict keys are those of the official MAE / SatMAE / Scale-MAE
    encoders, so their checkpoints load unchanged once decoder keys are dropped.
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
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
