"""``thor``: THOR v1 (FM4CS), a resolution-flexible ViT over Sentinel-2 or Sentinel-1 bands.

The model of rs-embed 0.3.1's ``onthefly_thor`` (alias ``thor_1_0_base``):
the published encoders ``FM4CS/THOR-1.0-{tiny,small,base,large}`` (files
``thor_v1_vit_<variant>.pt``, keys ``encoder.*``; ``model_config``
``variant``, default ``"base"``) on rs-embed's inputs:

* ``modality="s2"`` (default): Sentinel-2 L2A ``B2, B3, B4, B5, B6, B7, B8,
  B8A, B11, B12`` at 10 m, THOR channels Blue, Green, Red, RE1, RE2, RE3,
  NIR, RE4 (B8A), SWIR1, SWIR2; ``clip(DN, 0, 10000) / 10000`` then THOR's
  per-band z-score.  The 10 m bands form one channel group, the six 20 m
  bands another (each band is resampled to its own GSD inside the model).
* ``modality="s1"``: Sentinel-1 GRD ``VV, VH`` in linear units
  (``COPERNICUS/S1_GRD_FLOAT``), one 10 m group; rs-embed's shared S1
  normalisation ``clip(log1p(max(x, 0)) / p99, 0, 1)`` (the 99th percentile
  of the input's two bands).

Input size (rs-embed's rule): a call that is one tile of ``input_prep``
(``None``/``"tile"``, the default) resizes the input bilinearly to
``image_size`` (288) pixels, a ground cover of ``scale_m * 288`` metres.
Otherwise (``input_prep="resize"``, or ``"auto"`` without tiling) the input
runs at its native resolution (``native_snap``): centre-cropped to a square,
then cropped or padded (``fill_value``) to the nearest side that is a whole
number of 8-pixel patches in every group; it falls back to the 288 resize
when the input is not square within 8 pixels, the side exceeds 384 pixels or
the tokens exceed 3000.

Outputs: the tokens after the last block (before the final LayerNorm), 8 x 8
pixel patches per group.  Grid: each group's tokens as a map, coarser groups
upsampled bilinearly to the finest, merged by their mean (``(D, 36, 36)`` at
288 pixels).  Pooled: the mean (or max) of all tokens, so a 10 m token
weighs as much as a 20 m one (not the grid mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SensorSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.vit import HubCheckpoint, check_choice, check_int

__all__ = [
    "S1_BANDS",
    "S2_BANDS",
    "S2_MEAN",
    "S2_STD",
    "VARIANTS",
    "ThorArch",
    "ThorEmbedder",
    "ThorPrep",
    "checkpoint_for",
    "plan_prep",
]

S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S1_BANDS = ("VV", "VH")
S1_COLLECTION = "COPERNICUS/S1_GRD_FLOAT"
#: THOR channel of each input band, per modality.
MODALITY_CHANNELS: dict[str, tuple[str, ...]] = {
    "s2": ("S2:Blue", "S2:Green", "S2:Red", "S2:RE1", "S2:RE2", "S2:RE3", "S2:NIR", "S2:RE4", "S2:SWIR1",
           "S2:SWIR2"),
    "s1": ("S1:IW-VV", "S1:IW-VH"),
}  # fmt: skip
#: GSDs (metres) of each modality's channel groups: the native side must be whole patches in each.
MODALITY_GSDS: dict[str, tuple[int, ...]] = {"s2": (10, 20), "s1": (10,)}
#: THOR's statistics of Sentinel-2 reflectance (DN / 10000), in S2_BANDS order.
S2_MEAN = (0.176620, 0.195923, 0.213948, 0.263378, 0.300818, 0.313144, 0.308133, 0.320993, 0.221550, 0.175772)
S2_STD = (0.264520, 0.252949, 0.259180, 0.272771, 0.248175, 0.235432, 0.226434, 0.223274, 0.171606, 0.156223)

IMAGE_SIZE = 288
PATCH = 8
SHAPE_TOL_PX = 8
MAX_NATIVE_SIDE = 384
MAX_NATIVE_TOKENS = 3000
GROUP_MERGES = ("mean", "sum", "concat")
RESIZE_MODES = ("native_snap", "fixed")
ENV_VAR = "RS_EMBED_THOR_WEIGHTS"
# keys of the pretraining model that the encoder does not have (rs-embed's ``ckpt_ignore`` and the MAE heads)
DROP_PREFIXES = (
    "decoder_", "decode_", "ref_pos_embed", "pos_embed", "mask_token", "flexivit_decode_pred.",
    "land_cover_decoders.", "era5_land_head.", "month_head.", "location_head.", "orbit_direction_head.",
    "incidence_angle_head.", "contrast_loss.",
)  # fmt: skip


@dataclass(frozen=True)
class ThorArch:
    """Widths of one THOR v1 encoder.

    Attributes
    ----------
    embed_dim, depth, num_heads : int
        Transformer width, blocks and heads.
    band_embed_dim : int
        Width of the group embedding; the remaining ``embed_dim - band_embed_dim``
        channels carry the patch-footprint code.
    """

    embed_dim: int
    depth: int
    num_heads: int
    band_embed_dim: int


#: The four published encoders (``thor_vit_<variant>_encoder_alibi_patch_size_embed_v1``).
VARIANTS: dict[str, ThorArch] = {
    "tiny": ThorArch(192, 12, 3, 32),
    "small": ThorArch(384, 12, 6, 64),
    "base": ThorArch(768, 12, 12, 128),
    "large": ThorArch(1024, 24, 16, 256),
}


def checkpoint_for(variant: str) -> HubCheckpoint:
    """Where the checkpoint of ``variant`` is published (``FM4CS/THOR-1.0-<variant>``)."""
    return HubCheckpoint(
        repo=f"FM4CS/THOR-1.0-{variant}",
        filename=f"thor_v1_vit_{variant}.pt",
        revision=None,
        env_var=ENV_VAR,
        fmt="THOR training checkpoint ({'state_dict': {'encoder.<key>': ...}}, torch.load weights_only=True); "
        "the encoder's keys load with strict=True once decoder / pretraining-head keys are dropped",
    )


# -- input size -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThorPrep:
    """How one raw input becomes the model input.

    Attributes
    ----------
    strategy : {"native_snap", "fixed_resize"}
        Native resolution on a snapped square, or a resize to ``image_size``.
    reason : str
        rs-embed's ``preprocess_reason``.
    square : int or None
        Side of the centre crop to a square (native only).
    side : int
        Side of the model input in pixels.
    ground_cover_m : int
        ``scale_m * side``.
    """

    strategy: str
    reason: str
    square: int | None
    side: int
    ground_cover_m: int

    def meta(self) -> dict[str, Any]:
        """The keys recorded in each embedding's meta."""
        return {
            "preprocess_strategy": self.strategy,
            "preprocess_reason": self.reason,
            "effective_image_size": self.side,
            "ground_cover_m": self.ground_cover_m,
        }


def side_unit(scale_m: int, patch: int, gsds: Sequence[int]) -> int:
    """The smallest input side (pixels) that is a whole number of ``patch``-pixel patches at every GSD."""
    units = []
    for gsd in sorted(set(gsds)):
        ground = patch * gsd
        units.append(ground // np.gcd(scale_m, ground))
    return int(np.lcm.reduce(units))


def patch_tokens(side: int, scale_m: int, patch: int, gsds: Sequence[int]) -> int | None:
    """Tokens of a ``side``-pixel input, or ``None`` when some group's patches do not tile it."""
    cover = side * scale_m
    total = 0
    for gsd in sorted(set(gsds)):
        if cover % (patch * gsd):
            return None
        total += (cover // (patch * gsd)) ** 2
    return total


def plan_prep(
    hw: tuple[int, int],
    *,
    scale_m: int,
    modality: str,
    tiled: bool,
    image_size: int = IMAGE_SIZE,
    resize_mode: str = "native_snap",
    patch: int = PATCH,
) -> ThorPrep:
    """rs-embed's choice between a native pass and a resize to ``image_size`` for an ``(H, W)`` input."""
    h, w = int(hw[0]), int(hw[1])
    gsds = MODALITY_GSDS[modality]

    def fixed(reason: str) -> ThorPrep:
        return ThorPrep("fixed_resize", reason, None, image_size, scale_m * image_size)

    if tiled:
        return fixed("tile_preserve_stitch_geometry")
    if resize_mode != "native_snap":
        return fixed("fixed_mode")
    if abs(h - w) > SHAPE_TOL_PX:
        return fixed("rectangular_above_tolerance")
    square = min(h, w)
    unit = side_unit(scale_m, patch, gsds)
    lower = max(unit, (square // unit) * unit)
    upper = max(unit, -(-square // unit) * unit)
    side = lower if abs(square - lower) <= abs(upper - square) else upper
    if side > MAX_NATIVE_SIDE:
        return fixed("native_side_limit")
    tokens = patch_tokens(side, scale_m, patch, gsds)
    if tokens is None or tokens > MAX_NATIVE_TOKENS:
        return fixed("native_token_limit")
    return ThorPrep("native_snap", "native_snap_applied", square, side, scale_m * side)


@dataclass(frozen=True)
class _Route:
    """What the inputs of one forward batch share: modality, fetch scale, tiling and fill value."""

    modality: str
    scale_m: int
    tiled: bool
    fill_value: float


def _crop_or_pad(x: Any, side: int, fill: float) -> Any:
    """Centre-crop or centre-pad (with ``fill``) a square ``(B, C, S, S)`` tensor to ``side``."""
    import torch.nn.functional as F

    cur = int(x.shape[-1])
    if side <= cur:
        off = (cur - side) // 2
        return x[..., off : off + side, off : off + side]
    lo = (side - cur) // 2
    return F.pad(x, (lo, side - cur - lo, lo, side - cur - lo), value=fill)


def _normalize_s1(x: Any) -> Any:
    """rs-embed's S1 normalisation per input: ``clip(log1p(max(x, 0)) / p99, 0, 1)``."""
    import torch

    flat = x.reshape(x.shape[0], -1)
    nonzero = flat != 0
    neg = ((flat < 0) & nonzero).sum(dim=1).float() / nonzero.sum(dim=1).clamp(min=1).float()
    if bool((neg > 0.5).any()):
        raise ModelError(
            "thor modality 's1' expects linear-scale Sentinel-1 backscatter, but the input looks dB-scaled "
            "(mostly negative values); fetch with use_float_linear=True (COPERNICUS/S1_GRD_FLOAT)."
        )
    y = torch.log1p(x.clamp(min=0.0))
    denom = torch.quantile(y.reshape(y.shape[0], -1).float(), 0.99, dim=1).to(y.dtype)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (y / denom.reshape(-1, 1, 1, 1)).clamp(0.0, 1.0)


class ThorEmbedder(TorchEmbedder):
    """THOR v1 embeddings of Sentinel-2 (10 bands) or Sentinel-1 (VV, VH) inputs.

    ``model_config`` keys
    ---------------------
    variant : {"tiny", "small", "base", "large"}
        Encoder (192-, 384-, 768-, 1024-d); default ``"base"``.
    weights : str
        Checkpoint file, or a folder holding ``thor_v1_vit_<variant>.pt``
        (else ``$RS_EMBED_THOR_WEIGHTS``, else the Hugging Face hub).
    image_size : int
        Side of the fixed resize (rs-embed's ``RS_EMBED_THOR_IMG``, default 288).
    resize_mode : {"native_snap", "fixed"}
        Untiled calls at native resolution (default) or always resized.
    group_merge : {"mean", "sum", "concat"}
        How the group maps merge into the grid (``concat``: ``D x groups`` channels).
    depth, embed_dim, num_heads, band_embed_dim : int
        For tests and smoke runs only: a smaller encoder than the variant's.
    """

    name = "thor"
    requires = ("torch",)
    extra = "models"
    config_keys = frozenset(
        {"variant", "weights", "image_size", "resize_mode", "group_merge", "depth", "embed_dim", "num_heads",
         "band_embed_dim"}
    )  # fmt: skip
    supports_autocast = True
    # rs-embed's ``_requires_square_input``: a rectangular BBox is fetched as a square, the grid cut back
    square_fetch = True
    patch_size: ClassVar[int] = PATCH

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        aliases = {"t": "tiny", "s": "small", "b": "base", "l": "large"}
        raw = cfg.get("variant", "base")
        cfg_v = {"variant": aliases.get(str(raw).strip().lower(), raw)}
        self.variant = check_choice(self.name, cfg_v, "variant", tuple(VARIANTS), "base")
        self.image_size = check_int(self.name, cfg, "image_size", 1) or IMAGE_SIZE
        self.resize_mode = check_choice(self.name, cfg, "resize_mode", RESIZE_MODES, "native_snap")
        self.group_merge = check_choice(self.name, cfg, "group_merge", GROUP_MERGES, "mean")
        base = VARIANTS[self.variant]
        self.arch = ThorArch(
            embed_dim=check_int(self.name, cfg, "embed_dim", 4) or base.embed_dim,
            depth=check_int(self.name, cfg, "depth", 1) or base.depth,
            num_heads=check_int(self.name, cfg, "num_heads", 1) or base.num_heads,
            band_embed_dim=check_int(self.name, cfg, "band_embed_dim", 2) or base.band_embed_dim,
        )
        self.hub = checkpoint_for(self.variant)
        self._route: _Route | None = None

    # -- fetch ------------------------------------------------------------------------------
    @classmethod
    def fetch_postprocess(cls, data: np.ndarray, sensor: SensorSpec | None) -> np.ndarray:
        """The fetched array as rs-embed's thor fetch leaves it: non-finite values 0, S2 DN in [0, 10000].

        rs-embed clips at fetch time, before ``input_prep`` snaps the input
        to whole tiles, so the clip must come first here too.
        """
        from rs_embed_dask.modality import normalize_modality

        x = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if normalize_modality(getattr(sensor, "modality", None)) != "s1" and x.shape[-3] == len(S2_BANDS):
            x = np.clip(x, 0.0, 10000.0)
        return x

    def temporal_semantics(self, temporal: Any = None) -> str:
        """``"custom:thor"``: rs-embed's thor fetches its own input, shared with no other model."""
        return f"custom:{self.name}"

    # -- description -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands per modality, input-size rule, dims, outputs, normalisation and weights."""
        d = self.arch.embed_dim
        side = self.image_size // PATCH
        grid_dim = d * 2 if self.group_merge == "concat" else d  # S2: two groups
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(S2_BANDS)},
                modality="s2",
                image_size=self.image_size,
                patch_size=PATCH,
                resize_mode=self.resize_mode,
                shape_tol_px=SHAPE_TOL_PX,
                max_native_side=MAX_NATIVE_SIDE,
                max_native_tokens=MAX_NATIVE_TOKENS,
                group_merge=self.group_merge,
                variant=self.variant,
            ),
            "modalities": {
                "s2": {"collection": S2_SR, "bands": list(S2_BANDS)},
                "s1": {
                    "collection": S1_COLLECTION,
                    "bands": list(S1_BANDS),
                    "defaults": {
                        "use_float_linear": True,
                        "s1_require_iw": True,
                        "s1_relax_iw_on_empty": True,
                    },
                },
            },
            "embedding_dim": d,
            "grid_dim": grid_dim,
            "grid": f"({grid_dim}, {side}, {side}) at {self.image_size} px (S2): the 10 m and 20 m group token maps "
            f"(patch {PATCH}), the 20 m one upsampled bilinearly, merged by {self.group_merge}; north up",
            "grid_semantics": "thor_group_grid",
            "pooled": "mean (or max) of all tokens of every group",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": {
                "s2": f"clip(DN, 0, 10000) / 10000 then (x - mean) / std, mean {list(S2_MEAN)} std {list(S2_STD)}",
                "s1": "clip(log1p(max(x, 0)) / p99(input), 0, 1) on linear backscatter",
            },
            "input_size_rule": (
                f"one tile of input_prep: bilinear resize to {self.image_size}; otherwise native_snap "
                f"(square within {SHAPE_TOL_PX} px, snapped to whole {PATCH}-px patches per group, at most "
                f"{MAX_NATIVE_SIDE} px and {MAX_NATIVE_TOKENS} tokens, else the resize)"
            ),
            "side_inputs": {"ground_cover_m": "scale_m x input side (from the sensor's fetch scale)"},
            "model_config": {
                "variant": self.variant,
                "image_size": self.image_size,
                "resize_mode": self.resize_mode,
                "group_merge": self.group_merge,
            },
            "variants": ["tiny", "small", "base", "large"],
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    def resolve_input_size(self) -> int | None:
        """The fixed-resize side (``image_size``), which ``input_prep`` tiles to."""
        return self.image_size

    # -- model ------------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.thor_encoder import ThorEncoder
        from rs_embed_dask.models.vit import drop_keys, load_strict
        from rs_embed_dask.models.weights import load_state_dict

        path = self.hub.find(self.name, self.model_config)
        state = load_state_dict(path)
        if any(k.startswith("encoder.") for k in state):
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        state = drop_keys(state, DROP_PREFIXES)
        module = ThorEncoder(self.arch)
        load_strict(module, state, model=f"{self.name}/{self.variant}", path=path)
        return module

    def _active_route(self, x: Any) -> _Route:
        if self._route is not None:
            return self._route
        return _Route(self._modality_of(int(x.shape[1])), 10, False, 0.0)

    def _modality_of(self, channels: int) -> str:
        for mod, names in MODALITY_CHANNELS.items():
            if channels == len(names):
                return mod
        raise ModelError(
            f"thor expects 10 Sentinel-2 bands {list(S2_BANDS)} or 2 Sentinel-1 bands {list(S1_BANDS)}; "
            f"got {channels} channels"
        )

    def _prep_for(self, hw: tuple[int, int], route: _Route) -> ThorPrep:
        return plan_prep(
            hw, scale_m=route.scale_m, modality=route.modality, tiled=route.tiled,
            image_size=self.image_size, resize_mode=self.resize_mode,
        )  # fmt: skip

    def preprocess(self, x: Any) -> Any:
        """Raw ``(B, C, H, W)`` -> the normalised square model input (size per :func:`plan_prep`)."""
        import torch
        import torch.nn.functional as F

        route = self._active_route(x)
        if x.ndim != 4 or x.shape[1] != len(MODALITY_CHANNELS[route.modality]):
            raise ModelError(
                f"thor modality {route.modality!r} expects (B, {len(MODALITY_CHANNELS[route.modality])}, H, W) "
                f"inputs; got shape {tuple(x.shape)}"
            )
        prep = self._prep_for((int(x.shape[-2]), int(x.shape[-1])), route)
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
        if route.modality == "s2":
            x = x.clamp(0.0, 10000.0)
        if prep.strategy == "native_snap":
            h, w = int(x.shape[-2]), int(x.shape[-1])
            s = min(h, w)
            y0, x0 = (h - s) // 2, (w - s) // 2
            x = _crop_or_pad(x[..., y0 : y0 + s, x0 : x0 + s], prep.side, route.fill_value)
        if route.modality == "s2":
            mean = torch.tensor(S2_MEAN, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(S2_STD, dtype=x.dtype, device=x.device).clamp(min=1e-6).view(1, -1, 1, 1)
            x = torch.nan_to_num((x / 10000.0 - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)
        else:
            x = _normalize_s1(x)
        if prep.strategy == "fixed_resize" and tuple(x.shape[-2:]) != (prep.side, prep.side):
            x = F.interpolate(x, size=(prep.side, prep.side), mode="bilinear", align_corners=False)
        return x

    def forward_tokens(self, x: Any) -> tuple[Any, Any]:
        """Model-ready batch -> tokens ``(B, N, D)`` of the last block and their :class:`GroupLayout`."""
        route = self._active_route(x)
        cover = route.scale_m * int(x.shape[-1])
        return self.module(x, MODALITY_CHANNELS[route.modality], cover, PATCH)

    def forward_grid(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        tokens, layout = self.forward_tokens(x)
        b, _, d = tokens.shape
        side = max(layout.num_patch)
        maps, start = [], 0
        for n in layout.num_patch:
            m = tokens[:, start : start + n * n].reshape(b, n, n, d).permute(0, 3, 1, 2)
            start += n * n
            if n != side:
                m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False)
            maps.append(m)
        if self.group_merge == "concat":
            return torch.cat(maps, dim=1)
        stacked = torch.stack(maps, dim=0)
        return stacked.sum(dim=0) if self.group_merge == "sum" else stacked.mean(dim=0)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        tokens, _ = self.forward_tokens(x)
        return tokens.amax(dim=1) if pooling == "max" else tokens.mean(dim=1)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        route = self._route or _Route(self._modality_of(int(x.shape[-3])), 10, False, 0.0)
        prep = self._prep_for((int(x.shape[-2]), int(x.shape[-1])), route)
        gsds = MODALITY_GSDS[route.modality]
        return {
            "variant": self.variant,
            "modality": route.modality,
            "hf_id": self.hub.repo,
            "patch_size": PATCH,
            "group_merge": self.group_merge,
            "group_patch_sizes": [prep.ground_cover_m // (PATCH * g) for g in gsds],
            **prep.meta(),
        }

    # -- routing ------------------------------------------------------------------------
    def _route_of(self, x: np.ndarray, ctx: Mapping[str, Any] | None) -> _Route:
        from rs_embed_dask.modality import normalize_modality

        modality = self._modality_of(int(np.shape(x)[-3]))
        sensor = (ctx or {}).get("sensor")
        declared = normalize_modality(getattr(sensor, "modality", None))
        if declared is not None and declared != modality:
            raise ModelError(
                f"thor got {np.shape(x)[-3]} bands ({modality}) for a sensor of modality {declared!r}"
            )
        scale = getattr(sensor, "scale_m", None)
        if scale is None:
            meta = (ctx or {}).get("fetch_meta") or {}
            scale = meta.get("scale_m", 10) if isinstance(meta, Mapping) else 10
        if float(scale) != int(scale) or int(scale) <= 0:
            raise ModelError(f"thor needs a whole positive fetch scale in metres; got scale_m={scale!r}")
        c = ctx or {}
        tiled = "tile" in c or c.get("input_prep_mode") == "tile"
        fill = float(getattr(sensor, "fill_value", 0.0) or 0.0)
        return _Route(modality, int(scale), tiled, fill)

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed inputs grouped by route (modality, fetch scale, tiling, fill), each group batched.

        The ground cover, hence the token layout, depends on the fetch scale
        and on whether the input is a tile; inputs that share these run
        through :meth:`TorchEmbedder.embed_inputs` together.
        """
        return self.embed_in_groups(
            inputs,
            output=output,
            contexts=contexts,
            key_of=lambda x, c: self._route_of(np.asarray(x), c),
            state="_route",
            idle=None,
        )
