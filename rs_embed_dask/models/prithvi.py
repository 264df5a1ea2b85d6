"""``prithvi``: Prithvi-EO-2.0 (NASA/IBM), a multi-temporal ViT on six HLS bands.

The encoder is written here (``terratorch`` is not a dependency) with the
module names of the official ``PrithviMAE`` checkpoint, so its encoder keys
load unchanged with ``strict=True`` once the decoder keys are dropped:

* ``patch_embed.proj``: a 3-D convolution with a ``(1, p, p)`` kernel, one
  token per frame and patch;
* ``pos_embed``: fixed 3-D sin-cos embedding (width, height and time use
  6/16, 6/16 and 4/16 of the channels), always recomputed for the input's
  frames and size (rs-embed replaces the stored table too);
* ``temporal_embed_enc`` / ``location_embed_enc`` (TL variants): sin-cos
  embeddings of (year, day of year) per frame and of (lat, lon) of the ROI,
  scaled by a learnt scalar;
* timm ``Block`` transformer layers and a final ``LayerNorm`` (``eps=1e-5``).

Inputs are ``(T, C, H, W)`` Sentinel-2 L2A digital numbers of the bands
mapped to HLS (BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2 -> B2, B3, B4,
B8A, B11, B12, rs-embed's aliases) at 30 m, one frame per equal time bin of
the request, or one ``(C, H, W)`` composite (one frame).  Preprocessing
follows rs-embed's ``onthefly_prithvi.py``: ``DN / 10000`` clipped to
``[0, 1]`` with no data as 0; frames equal to an earlier frame (a provider's
fill of an empty bin) are dropped with their bins (``_drop_duplicate_frames``);
each frame is centre-padded to a square (reflect, else edge) and resized
bilinearly to ``image_size`` (``prepare_square``).  Temporal coordinates are
the (year, day of year) of each bin's midpoint (``start + (end - start) // 2``),
location coordinates the (lat, lon) of the ROI centre; both come from the
embedding context.  The grid is the patch tokens reduced over time with the
output's pooling (mean by default), ``(D, h, w)``; the pooled vector is the
mean (or max) over every patch token of every frame (the CLS token is
dropped), as rs-embed pools ViT tokens.

rs-embed picks the number of frames from the window
(:func:`rs_embed_frame_count`: one composite below 56 days, up to four bins
from 112 days); this model reads what it is given, and the pipeline fetches
:attr:`PrithviEmbedder.n_frames` (four) bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any, cast

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.series import series_batch
from rs_embed_dask.models.weights import find_weights, load_state_dict, strip_prefix

__all__ = [
    "PrithviEmbedder",
    "build_prithvi_encoder",
    "distinct_frames",
    "frame_bins",
    "frame_coords",
    "rs_embed_frame_count",
]

ENV_VAR = "RS_EMBED_PRITHVI_WEIGHTS"
HLS_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
S2_BANDS = ("B2", "B3", "B4", "B8A", "B11", "B12")
# mean / std of the HLS training data (reflectance x 10000), from the checkpoints' config.json
HLS_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
HLS_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)

# variant -> (embed_dim, depth, num_heads, patch_size, coords encoding, HF repo, file)
VARIANTS: dict[str, tuple[int, int, int, int, bool, str, str]] = {
    "prithvi_eo_v2_100_tl": (768, 12, 12, 16, True, "Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "prithvi_eo_v2_300": (1024, 24, 16, 16, False, "Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi_eo_v2_300_tl": (1024, 24, 16, 16, True, "Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi_eo_v2_600": (1280, 32, 16, 14, False, "Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi_eo_v2_600_tl": (1280, 32, 16, 14, True, "Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}
_ALIASES = {k.removeprefix("prithvi_eo_v2_"): k for k in VARIANTS}
DEFAULT_VARIANT = "prithvi_eo_v2_100_tl"
CHECKPOINT_FRAMES = 4  # the published checkpoints were pretrained on 4 frames
HF_ORG = "ibm-nasa-geospatial"


# -- sin-cos embeddings -------------------------------------------------------------
def _sincos_1d(dim: int, pos: Any) -> Any:
    """``(M, dim)`` sin-cos embedding of positions ``pos`` (float tensor), frequencies 1/10000**(2i/dim)."""
    import torch

    omega = torch.arange(dim // 2, dtype=pos.dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.outer(pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_3d(dim: int, t: int, h: int, w: int) -> Any:
    """``(1, 1 + t*h*w, dim)`` fixed position embedding, CLS row zero (token order t, h, w)."""
    import torch

    if dim % 16:
        raise ModelError(f"prithvi embed_dim must be a multiple of 16; got {dim}")
    dw, dt = dim // 16 * 6, dim // 16 * 4
    f64 = torch.float64
    ew = _sincos_1d(dw, torch.arange(w, dtype=f64))
    eh = _sincos_1d(dw, torch.arange(h, dtype=f64))
    et = _sincos_1d(dt, torch.arange(t, dtype=f64))
    grid = torch.cat(
        [
            ew[None, None, :, :].expand(t, h, w, dw),
            eh[None, :, None, :].expand(t, h, w, dw),
            et[:, None, None, :].expand(t, h, w, dt),
        ],
        dim=-1,
    ).reshape(t * h * w, dim)
    return torch.cat([torch.zeros(1, dim, dtype=f64), grid]).float().unsqueeze(0)


def build_prithvi_encoder(
    *, embed_dim: int, depth: int, num_heads: int, patch_size: int, in_chans: int = 6,
    num_frames: int = CHECKPOINT_FRAMES, img_size: int = 224, coords: bool = True,
) -> Any:  # fmt: skip
    """The Prithvi-EO-2.0 encoder as a ``torch.nn.Module`` (random weights).

    Parameters
    ----------
    embed_dim, depth, num_heads, patch_size : int
        Architecture of the variant.
    in_chans : int, default 6
        Input bands.
    num_frames : int, default 4
        Frames of the checkpoint's fixed position embedding.
    img_size : int, default 224
        Input side in pixels.
    coords : bool, default True
        Build the temporal and location encoders (TL variants).
    """
    import torch
    from timm.models.vision_transformer import Block
    from torch import nn

    class _PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            k = (1, patch_size, patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).flatten(2).transpose(1, 2)  # B, T*h*w, D

    class _CoordEncoder(nn.Module):
        """sin-cos of two coordinates, half the channels each, times a learnt scale."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            da = embed_dim // 2
            ea = _sincos_1d(da, a.float()).reshape(*a.shape, da)
            eb = _sincos_1d(embed_dim - da, b.float()).reshape(*b.shape, embed_dim - da)
            return self.scale * torch.cat([ea, eb], dim=-1)

    class PrithviEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_size = patch_size
            self.coords = coords
            self.patch_embed = _PatchEmbed()
            if coords:
                self.temporal_embed_enc = _CoordEncoder()
                self.location_embed_enc = _CoordEncoder()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            g = img_size // patch_size
            self.register_buffer("pos_embed", sincos_3d(embed_dim, num_frames, g, g))
            self.blocks = nn.ModuleList(
                [
                    Block(embed_dim, num_heads, 4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
                    for _ in range(depth)
                ]
            )
            self.norm = nn.LayerNorm(embed_dim)

        def forward(
            self,
            x: torch.Tensor,
            temporal_coords: torch.Tensor | None = None,
            location_coords: torch.Tensor | None = None,
        ) -> torch.Tensor:
            """``(B, C, T, H, W)`` -> patch tokens ``(B, T, h, w, D)`` (CLS dropped)."""
            b, _, t, hh, ww = x.shape
            h, w = hh // self.patch_size, ww // self.patch_size
            tokens = self.patch_embed(x)
            pos = cast(torch.Tensor, self.pos_embed)
            if pos.shape[1] != 1 + t * h * w:
                pos = sincos_3d(tokens.shape[-1], t, h, w).to(tokens)
            tokens = tokens + pos[:, 1:]
            if self.coords and temporal_coords is not None:
                enc = self.temporal_embed_enc(temporal_coords[..., 0], temporal_coords[..., 1])  # B, T, D
                tokens = tokens + enc.repeat_interleave(h * w, dim=1)
            if self.coords and location_coords is not None:
                tokens = tokens + self.location_embed_enc(location_coords[:, :1], location_coords[:, 1:])
            cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
            z = torch.cat([cls, tokens], dim=1)
            for blk in self.blocks:
                z = blk(z)
            z = self.norm(z)
            return z[:, 1:].reshape(b, t, h, w, -1)

    return PrithviEncoder()


# -- context -> coordinates -----------------------------------------------------------
def frame_bins(ctx: Mapping[str, Any] | None, n_frames: int) -> list[tuple[date, date]]:
    """The ``[start, end)`` time bin of each of ``n_frames`` frames, ``[]`` when the context does not say.

    Bins come from ``fetch_meta["frames"]`` when the provider recorded
    ``n_frames`` of them, else from ``n_frames`` equal bins of the context's
    temporal spec (rs-embed's ``split_date_range``).
    """
    if not ctx:
        return []
    frames = (ctx.get("fetch_meta") or {}).get("frames")
    if frames and len(frames) == n_frames:
        return [(date.fromisoformat(f["start"]), date.fromisoformat(f["end"])) for f in frames]
    if ctx.get("temporal") is not None:
        from rs_embed_dask.providers.base import split_date_range

        start, end = ctx["temporal"].date_range()
        return split_date_range(start, end, n_frames)
    return []


def frame_coords(ctx: Mapping[str, Any] | None, n_frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(T, 2)`` (year, day of year) of each frame's bin centre and ``(2,)`` (lat, lon) of the ROI.

    A bin ``[start, end)``'s centre is ``start + (end - start) // 2`` days
    (rs-embed's ``midpoint_date``); bins are those of :func:`frame_bins`.
    Either array is ``None`` when the context does not say.
    """
    if not ctx:
        return None, None
    bins = frame_bins(ctx, n_frames)
    temporal = None
    if bins:
        mids = [a + timedelta(days=(b - a).days // 2) for a, b in bins]
        temporal = np.array([[d.year, d.timetuple().tm_yday] for d in mids], dtype=np.float32)
    location = None
    spatial = ctx.get("spatial")
    if spatial is not None:
        lon, lat = spatial.to_wgs84().center
        location = np.array([lat, lon], dtype=np.float32)
    return temporal, location


def distinct_frames(x: np.ndarray) -> list[int]:
    """Indices of the frames of a raw ``(T, C, H, W)`` series that repeat no earlier frame.

    Frames are compared after rs-embed's unit scaling (``DN / 10000`` clipped to
    ``[0, 1]``, NaN as 0), as its ``_drop_duplicate_frames``: providers fill an
    empty time bin with the whole-window composite, and such copies are dropped.
    """
    unit = np.nan_to_num(np.clip(np.asarray(x, dtype=np.float32) / np.float32(10000.0), 0.0, 1.0), nan=0.0)
    keep: list[int] = []
    for i in range(unit.shape[0]):
        if not any(np.array_equal(unit[i], unit[k]) for k in keep):
            keep.append(i)
    return keep


def rs_embed_frame_count(temporal: Any, *, max_frames: int = CHECKPOINT_FRAMES, stride_days: int = 28) -> int:
    """The number of frames rs-embed's ``temporal_mode="auto"`` fetches for a time window.

    ``clamp(window_days // stride_days, 1, max_frames)`` (``_auto_num_frames``
    in rs-embed's ``onthefly_prithvi.py``): one composite of the whole window
    below 56 days, up to four equal bins from 112 days.  ``temporal`` is a
    :class:`~rs_embed_dask.core.specs.TemporalSpec`, or ``None`` for rs-embed's
    default window (2022-06-01 to 2022-09-01).
    """
    if temporal is None:
        days = (date(2022, 9, 1) - date(2022, 6, 1)).days
    else:
        start, end = temporal.date_range()
        days = max(1, (end - start).days)
    return max(1, min(int(max_frames), days // max(1, int(stride_days))))


def _pos_int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelError(f"prithvi model_config {key!r} must be a positive integer; got {v!r}")
    return v


class PrithviEmbedder(TorchEmbedder):
    """Prithvi-EO-2.0 on ``(T, 6, H, W)`` HLS-like Sentinel-2 inputs.

    ``model_config`` keys
    ---------------------
    variant : str, default ``"prithvi_eo_v2_100_tl"``
        One of ``prithvi_eo_v2_{100_tl,300,300_tl,600,600_tl}`` (or the
        short forms ``100_tl``, ``300``, ...).
    weights : str
        Checkpoint file (or folder holding the variant's file name).
    image_size : int, default 224
        Side the frames are resized to (a multiple of the patch size).
    normalization : {"unit", "hls_stats"}, default ``"unit"``
        ``"unit"``: DN / 10000 clipped to [0, 1] (rs-embed's choice);
        ``"hls_stats"``: (DN - mean) / std with the checkpoints' HLS statistics.
    use_coords : bool, default True
        Feed temporal and location coordinates to TL variants.
    temporal_mode : {"auto", "single", "multi"}, default ``"auto"``
        rs-embed's frame packaging: ``"auto"`` and ``"multi"`` fetch
        ``clamp(window_days // 28, 1, max_frames)`` equal time bins (one
        whole-window composite when that is 1), ``"single"`` one composite.
    max_frames : int, default 4
        Cap on the frames of ``"auto"`` / ``"multi"`` (Prithvi-EO-2.0 was
        pretrained on 4).
    embed_dim, depth, num_heads : int
        Test-only architecture overrides (tiny random models); the published
        weights need the variant's values.
    """

    name = "prithvi"
    extra = "models"
    requires = ("torch", "timm")
    n_frames = CHECKPOINT_FRAMES
    input_size = 224
    requires_georef = True  # location coordinates of the TL variants
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    supports_autocast = True
    config_keys = frozenset(
        {
            "variant", "weights", "image_size", "normalization", "use_coords", "temporal_mode", "max_frames",
            "embed_dim", "depth", "num_heads",
        }
    )  # fmt: skip

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        variant = str(cfg.get("variant", DEFAULT_VARIANT)).strip().lower()
        variant = _ALIASES.get(variant, variant)
        if variant not in VARIANTS:
            raise ModelError(
                f"prithvi model_config 'variant' must be one of {sorted(VARIANTS)} "
                f"(or {sorted(_ALIASES)}); got {cfg.get('variant')!r}"
            )
        dim, depth, heads, patch, coords, repo, fname = VARIANTS[variant]
        self.variant = variant
        self.embed_dim = _pos_int(cfg, "embed_dim", dim)
        self.depth = _pos_int(cfg, "depth", depth)
        self.num_heads = _pos_int(cfg, "num_heads", heads)
        self.patch_size = patch
        self.coords = coords
        self.hf_repo = f"{HF_ORG}/{repo}"
        self.filename = fname
        self.image_size = _pos_int(cfg, "image_size", 224)
        if self.image_size % patch:
            raise ModelError(
                f"prithvi model_config 'image_size' must be a multiple of the patch size {patch}; "
                f"got {self.image_size}"
            )
        self.normalization = str(cfg.get("normalization", "unit"))
        if self.normalization not in ("unit", "hls_stats"):
            raise ModelError(
                f"prithvi model_config 'normalization' must be 'unit' or 'hls_stats'; got {self.normalization!r}"
            )
        self.use_coords = bool(cfg.get("use_coords", True))
        self.temporal_mode = str(cfg.get("temporal_mode", "auto")).strip().lower()
        if self.temporal_mode not in ("auto", "single", "multi"):
            raise ModelError(
                f"prithvi model_config 'temporal_mode' must be 'auto', 'single' or 'multi'; got {cfg.get('temporal_mode')!r}"
            )
        self.max_frames = _pos_int(cfg, "max_frames", CHECKPOINT_FRAMES)

    def frame_count(self, temporal: Any = None) -> int | None:
        """rs-embed's frame count for the window: ``clamp(days // 28, 1, max_frames)``, ``None`` for one composite."""
        if self.temporal_mode == "single":
            return None
        n = rs_embed_frame_count(temporal, max_frames=self.max_frames)
        return None if n == 1 else n

    def describe(self) -> dict[str, Any]:
        """Bands, scale, frames, dims and weights of this configuration."""
        g = self.image_size // self.patch_size
        inputs = {
            "collection": S2_SR,
            "bands": list(S2_BANDS),
            "hls_bands": list(HLS_BANDS),
            "shape": f"(T, C=6, H, W), T <= {self.max_frames}",
        }
        return {
            **self.describe_head(inputs, scale_m=30, image_size=self.image_size, variant=self.variant),
            "embedding_dim": self.embed_dim,
            "input_size": self.image_size,
            "patch_size": self.patch_size,
            "grid": f"({self.embed_dim}, {g}, {g}): patch tokens reduced over the frames with the output's "
            "pooling (mean by default)",
            "pooled": "mean (or max) of every patch token of every frame, CLS dropped",
            "temporal": (
                f"temporal_mode={self.temporal_mode!r}: T = clamp(window_days // 28, 1, {self.max_frames}) "
                "equal bins of the request window, one composite each (T = 1: one (C, H, W) composite); "
                "frames repeating an earlier one are dropped"
            ),
            "side_inputs": (
                "temporal_coords (year, day of year of each bin centre) and location_coords "
                "(lat, lon of the ROI centre)"
                if self.coords
                else "none"
            ),
            "preprocessing": "centre pad to a square (reflect, else edge), bilinear resize to "
            f"{self.image_size}",
            "normalization": (
                "DN / 10000 clipped to [0, 1], no data as 0"
                if self.normalization == "unit"
                else f"(DN - mean) / std, mean={list(HLS_MEAN)}, std={list(HLS_STD)}"
            ),
            "model_config": {"variant": self.variant, "image_size": self.image_size},
            "variants": sorted(VARIANTS),
            "weights": f"Hugging Face {self.hf_repo}/{self.filename}",
            "weights_env": ENV_VAR,
            "extra": self.extra,
        }

    def build_module(self) -> Any:
        import torch

        # built without initialising (every tensor comes from the checkpoint, strict=True)
        with torch.device("meta"):
            module = build_prithvi_encoder(
                embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                patch_size=self.patch_size, img_size=self.image_size, coords=self.coords,
            )  # fmt: skip
        module = module.to_empty(device="cpu")
        path = find_weights(
            self.name, config=self.model_config, env_var=ENV_VAR, filenames=[self.filename],
            hf_repo=self.hf_repo, hf_filename=self.filename,
        )  # fmt: skip
        state = load_state_dict(path)
        enc = {k: v for k, v in state.items() if not k.startswith("decoder.") and k != "mask_token"}
        enc = strip_prefix(enc, "encoder.")
        g = self.image_size // self.patch_size
        if "pos_embed" in enc:
            # fixed, so always recomputed (as rs-embed replaces the stored table): any image size fits
            enc["pos_embed"] = sincos_3d(self.embed_dim, CHECKPOINT_FRAMES, g, g)
        try:
            module.load_state_dict(enc, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"The checkpoint {str(path)!r} does not fit prithvi {self.variant!r}: {exc}"
            ) from exc
        return module

    def preprocess(self, x: Any) -> Any:
        """``(B, T, 6, H, W)`` (or ``(B, 6, H, W)``) DN -> normalised ``(B, T, 6, H, W)``."""
        import torch

        x = series_batch(x, len(S2_BANDS), f"prithvi expects (T, 6, H, W) inputs of bands {list(S2_BANDS)}")
        if self.normalization == "unit":  # rs-embed: NaN (no data) becomes 0
            return torch.nan_to_num((x / 10000.0).clamp(0.0, 1.0), nan=0.0)
        mean = torch.tensor(HLS_MEAN, dtype=x.dtype, device=x.device).view(1, 1, -1, 1, 1)
        std = torch.tensor(HLS_STD, dtype=x.dtype, device=x.device).view(1, 1, -1, 1, 1)
        return (x - mean) / std

    def _tokens(self, x: Any, temporal: Any = None, location: Any = None) -> Any:
        from rs_embed_dask.models.vit import pad_to_square, resize_square

        b, t, c, h, w = x.shape
        s = self.image_size
        if (h, w) != (s, s):  # rs-embed's prepare_square: pad to a square, then bilinear resize
            sq = pad_to_square(x)
            x = resize_square(sq.reshape(b * t, c, *sq.shape[-2:]), s, mode="bilinear", antialias=False)
            x = x.reshape(b, t, c, s, s)
        if not (self.coords and self.use_coords):
            temporal = location = None
        return self.module(x.permute(0, 2, 1, 3, 4), temporal, location)  # B, T, h, w, D

    @staticmethod
    def _reduce(tok: Any, mode: str, pooling: str) -> Any:
        """Tokens ``(B, T, h, w, D)`` -> grid ``(B, D, h, w)`` or pooled ``(B, D)``.

        The grid reduces the frames with ``pooling`` (mean or max), as rs-embed's
        ``tokens_to_grid_dhw_tchw``; the pooled vector reduces every patch token
        of every frame.
        """
        if mode == "grid":
            g = tok.amax(dim=1) if pooling == "max" else tok.mean(dim=1)
            return g.permute(0, 3, 1, 2)
        flat = tok.flatten(1, 3)
        return flat.amax(dim=1) if pooling == "max" else flat.mean(dim=1)

    def forward_grid(self, x: Any) -> Any:
        return self._reduce(self._tokens(x), "grid", "mean")

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self._reduce(self._tokens(x), "pooled", pooling)

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed ``(T, 6, H, W)`` series (or ``(6, H, W)`` composites) without their repeated frames.

        A frame equal to an earlier one (:func:`distinct_frames`) is dropped
        with its time bin before the forward pass, as rs-embed does, so the
        model sees ``T' <= T`` frames and the meta's ``n_frames`` says ``T'``.
        """
        if contexts is not None and len(contexts) != len(inputs):
            return super().embed_inputs(inputs, output=output, contexts=contexts)  # its error
        kept_inputs: list[np.ndarray] = []
        kept_ctxs: list[Mapping[str, Any]] = []
        for i, x in enumerate(inputs):
            arr = np.asarray(x)
            ctx: Mapping[str, Any] = {} if contexts is None else contexts[i]
            keep = distinct_frames(arr) if arr.ndim == 4 else []
            if arr.ndim == 4 and len(keep) < arr.shape[0]:
                bins = frame_bins(ctx, arr.shape[0])
                if bins:
                    frames = [{"start": bins[k][0].isoformat(), "end": bins[k][1].isoformat()} for k in keep]
                    ctx = {**ctx, "fetch_meta": {**(ctx.get("fetch_meta") or {}), "frames": frames}}
                arr = arr[keep]
            kept_inputs.append(arr)
            kept_ctxs.append(ctx)
        return super().embed_inputs(
            kept_inputs, output=output, contexts=None if contexts is None else kept_ctxs
        )

    # -- side inputs: temporal and location coordinates -----------------------------------
    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``temporal_coords`` ``(T, 2)`` and ``location_coords`` ``(2,)``: see :func:`frame_coords`."""
        temporal, location = frame_coords(context, x.shape[0] if x.ndim == 4 else 1)
        return {"temporal_coords": temporal, "location_coords": location}

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        tok = self._tokens(x, sides.get("temporal_coords"), sides.get("location_coords"))
        return self._reduce(tok, output.mode, output.pooling)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """The variant and the input's number of frames."""
        return {"variant": self.variant, "n_frames": int(x.shape[0]) if x.ndim == 4 else 1}
