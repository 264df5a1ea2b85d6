"""``anysat``: AnySat (Astruc et al., CVPR 2025) on Sentinel-2 L2A time series.

The model of rs-embed 0.3.1's ``onthefly_anysat``: the released AnySat
``base`` (``g-astruc/AnySat``, ``models/AnySat.pth``, keys of the release's
``AnyModule`` loaded unchanged with ``strict=True``) run on its Sentinel-2
path (:mod:`rs_embed_dask.models.anysat_encoder`), with rs-embed's inputs:

* ``COPERNICUS/S2_SR_HARMONIZED`` bands ``B2, B3, B4, B5, B6, B7, B8, B8A,
  B11, B12`` at 10 m, as ``n_frames`` (8) composites of equal sub-windows of
  the request's time window; an empty sub-window is filled by the provider
  with the composite of the whole window (nothing is dropped: AnySat reads
  every frame with its own date).  A single ``(C, H, W)`` composite is
  repeated ``n_frames`` times.
* day of year (0 = 1 January) of each sub-window's midpoint, a side input
  (:func:`rs_embed_dask.models.anysat_config.doy0_sequence`).
* no data -> 0, DN clipped to ``[0, 10000]``; a non-square input is
  centre-padded to a square (reflect, else edge) and resized bilinearly to
  ``image_size`` (24); then per input and band a z-score over frames and
  pixels (``per_tile_zscore``; ``unit_scale``: DN / 10000; ``none``).
* AnySat's patch size is the fetch scale (``patch_size`` = ``scale_m``
  metres, one 10 m pixel by default).

Outputs: ``grid`` is AnySat's ``output="dense"`` (default: every pixel's patch
token and sub-patch token concatenated, ``(2 x 768, 24, 24)``) or
``"patch"`` (``(768, 24, 24)`` at 10 m); ``pooled`` is the mean (or max) of
the patch tokens (``pooled_source="patch"``, default) or AnySat's tile token
(``"tile"``).  A rectangle is fetched as a square and cut back to the ROI.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models import anysat_config as conf
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.vit import check_int

__all__ = ["S2_BANDS", "AnySatEmbedder"]

S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: variant -> (embed_dim, depth, num_heads) of the release's ``get_default_config``
VARIANTS = {"base": (768, 6, 12)}
_DOY = "doy0_values"


@dataclass(frozen=True)
class _Route:
    """What the inputs of one forward batch share: AnySat's patch scale and whether the ROI is pooled here."""

    scale: int
    roi_pool: bool


def _frame_stats(x: np.ndarray) -> dict[str, int]:
    """rs-embed's ``frame_diversity_meta`` of a raw series (frames compared after no data -> 0 and the clip)."""
    if x.ndim != 4:
        return {}
    arr = np.clip(
        np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 10000.0
    )
    seen: list[np.ndarray] = []
    for frame in arr:
        if not any(np.array_equal(frame, s) for s in seen):
            seen.append(frame)
    n = int(arr.shape[0])
    return {"n_frames_requested": n, "n_distinct_frames": len(seen), "n_backfilled_frames": n - len(seen)}


class AnySatEmbedder(TorchEmbedder):
    """AnySat embeddings of Sentinel-2 time series.

    ``model_config`` keys (each falls back to rs-embed's environment variable,
    see :mod:`rs_embed_dask.models.anysat_config`)
    -----------------------------------------------------------------------------
    variant : {"base"}
        The released checkpoint (rs-embed exposes ``base`` only).
    weights : str
        ``AnySat.pth``, or a folder holding it.
    image_size : int, default 24
        Side the (squared) input is resized to; ``input_prep`` tiles to it.
    n_frames : int, default 8
        Equal sub-windows of the time window (one composite each).
    normalization : {"per_tile_zscore", "unit_scale", "none"}
        Per-input band z-score (default), DN / 10000, or raw DN.
    grid_feature_mode : {"dense", "patch"}
        The grid: patch and sub-patch tokens per pixel (``2 D`` channels), or patch tokens.
    pooled_source : {"patch", "tile"}
        The pooled vector: mean/max of the patch tokens, or AnySat's tile token.
    embed_dim, depth, num_heads : int
        Test-only architecture overrides (tiny random models).
    """

    name = "anysat"
    extra = "models"
    requires = ("torch",)
    n_frames = 8
    supports_autocast = True
    square_fetch = True  # rs-embed's _requires_square_input: rectangles fetched as squares, cut back
    config_keys = frozenset(
        {"variant", "weights", "image_size", "n_frames", "normalization", "grid_feature_mode", "pooled_source",
         "embed_dim", "depth", "num_heads"}
    )  # fmt: skip
    roi_pooling: ClassVar[str] = "model"

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.settings = conf.resolve_settings(cfg)
        dim, depth, heads = VARIANTS[self.settings.variant]
        self.arch = conf.AnySatArch(
            embed_dim=check_int(self.name, cfg, "embed_dim", 32) or dim,
            depth=check_int(self.name, cfg, "depth", 1) or depth,
            num_heads=check_int(self.name, cfg, "num_heads", 1) or heads,
        )
        if self.arch.embed_dim % 32 or self.arch.embed_dim % self.arch.num_heads:
            raise ModelError(
                f"anysat model_config 'embed_dim' must be a multiple of 32 and of 'num_heads'; got "
                f"embed_dim={self.arch.embed_dim}, num_heads={self.arch.num_heads}"
            )
        self.hf_repo, self.hf_file = conf.hub_file()
        s = self.settings
        # per configuration (a class variable elsewhere): the engine pools the ROI's cells only of a patch grid
        vars(self)["roi_pooling"] = (
            "grid" if (s.grid_feature_mode, s.pooled_source) == ("patch", "patch") else "model"
        )
        self._route: _Route | None = None

    # -- time and size -------------------------------------------------------------------------
    def frame_count(self, temporal: Any = None) -> int | None:
        """``n_frames`` equal sub-windows of any window (rs-embed fetches them even for short windows)."""
        return self.settings.n_frames

    def resolve_input_size(self) -> int | None:
        """``image_size``: ``input_prep`` tiles larger inputs to it, as rs-embed's tiler does."""
        return self.settings.image_size

    # -- description ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands, frames, day-of-year side input, normalisation, dims, outputs and weights of this configuration."""
        s, d = self.settings, self.arch.embed_dim
        grid_dim = 2 * d if s.grid_feature_mode == "dense" else d
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(S2_BANDS), "shape": f"(T={s.n_frames}, C=10, H, W)"},
                image_size=s.image_size,
                n_frames=s.n_frames,
                patch_size_m=10,
                variant=s.variant,
                normalization=s.normalization,
                grid_feature_mode=s.grid_feature_mode,
                pooled_source=s.pooled_source,
            ),
            "embedding_dim": d,
            "grid_dim": grid_dim,
            "grid": (
                f"({grid_dim}, {s.image_size}, {s.image_size}) at 10 m: AnySat output='dense', each pixel's patch "
                "token then its sub-patch token"
                if s.grid_feature_mode == "dense"
                else f"({d}, {s.image_size}, {s.image_size}) at 10 m: AnySat output='patch', one token per patch"
            ),
            "pooled": (
                "mean (or max) of the patch tokens (AnySat output='patch'); a ROI cut back from a fetched square "
                "pools its own patches"
                if s.pooled_source == "patch"
                else "AnySat's tile token (output='tile') of the whole input; the pooling is not used"
            ),
            "temporal": (
                f"{s.n_frames} equal sub-windows of the time window, one composite each (multi:{s.n_frames}); "
                "an empty sub-window holds the whole-window composite (the provider's back-fill), nothing is "
                f"dropped; a (C, H, W) composite is repeated {s.n_frames} times"
            ),
            "side_inputs": {_DOY: "day of year (0 = 1 January, at most 364) of each sub-window's midpoint"},
            "normalization": {
                "per_tile_zscore": "per input and band: (x - mean) / max(std, 1e-6) over frames and pixels",
                "unit_scale": "clip(DN / 10000, 0, 1)",
                "none": "raw DN",
            }[s.normalization]
            + " (after no data -> 0 and clip(DN, 0, 10000))",
            "preprocessing": f"centre pad to a square (reflect, else edge), bilinear resize to {s.image_size}; "
            "AnySat patch size = the fetch scale (scale_m metres, a multiple of 10)",
            "model_config": {
                "variant": s.variant,
                "image_size": s.image_size,
                "n_frames": s.n_frames,
                "normalization": s.normalization,
                "grid_feature_mode": s.grid_feature_mode,
                "pooled_source": s.pooled_source,
            },
            "variants": sorted(VARIANTS),
            "weights": {
                "source": f"huggingface: {self.hf_repo}/{self.hf_file}",
                "revision": "main (the reference pins none)",
                "env_var": conf.ENV_VAR,
                "rs_embed_env": {
                    k: conf.ENV[k] for k in ("ckpt", "hf_repo", "hf_file", "cache_dir", "min_bytes")
                },
                "format": "{'state_dict': {<AnyModule key>: tensor}} (torch.load weights_only=True), every key "
                "loaded with strict=True, none dropped",
            },
            "env_vars": {
                k: conf.ENV[k]
                for k in (
                    "variant",
                    "image_size",
                    "n_frames",
                    "normalization",
                    "grid_feature_mode",
                    "pooled_source",
                )
            },
            "license": "AnySat code and weights: MIT (g-astruc/AnySat)",
            "extra": self.extra,
        }

    # -- model -----------------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """The local checkpoint (see :func:`rs_embed_dask.models.anysat_config.find_checkpoint`)."""
        return conf.find_checkpoint(self.name, self.model_config)

    def build_module(self) -> Any:
        import os

        from rs_embed_dask.models.anysat_encoder import AnySatEncoder
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict

        if os.environ.get(conf.ENV["pretrained"], "1").strip() in ("0", "false", "False"):
            warnings.warn(
                f"anysat: ${conf.ENV['pretrained']}=0 (rs-embed's random initialisation) is not supported; "
                "the checkpoint is loaded.",
                UserWarning,
                stacklevel=3,
            )
        path = self.checkpoint()
        state = load_state_dict(path, key="state_dict")
        module = AnySatEncoder(self.arch)
        load_strict(module, state, model=f"{self.name}/{self.settings.variant}", path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        """Raw ``(B, T, 10, H, W)`` (or ``(B, 10, H, W)``) DN -> normalised ``(B, T, 10, S, S)``."""
        import torch

        from rs_embed_dask.models.vit import pad_to_square, resize_square

        s = self.settings
        if x.ndim == 4:
            x = x.unsqueeze(1).expand(-1, s.n_frames, -1, -1, -1)
        if x.ndim != 5 or x.shape[2] != len(S2_BANDS):
            raise ModelError(
                f"anysat expects (T, 10, H, W) series (or (10, H, W) composites) of bands {list(S2_BANDS)}; "
                f"got shape {tuple(x.shape[1:])}"
            )
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0)
        b, t, c, h, w = x.shape
        if (h, w) != (s.image_size, s.image_size):
            sq = pad_to_square(x)
            flat = sq.reshape(b * t, c, *sq.shape[-2:])
            x = resize_square(flat, s.image_size, mode="bilinear", antialias=False)
            x = x.reshape(b, t, c, s.image_size, s.image_size)
        if s.normalization == "unit_scale":
            return (x / 10000.0).clamp(0.0, 1.0)
        if s.normalization == "none":
            return x
        xd = x.double()
        mu = xd.mean(dim=(1, 3, 4), keepdim=True)
        sigma = xd.var(dim=(1, 3, 4), unbiased=False, keepdim=True).sqrt().clamp(min=1e-6)
        return torch.nan_to_num(((xd - mu) / sigma).float(), nan=0.0, posinf=0.0, neginf=0.0)

    def _scale(self) -> int:
        return self._route.scale if self._route is not None else 1

    def _outputs(self, x: Any, doy: Any, output: OutputSpec) -> Any:
        """Tile token, dense grid, patch grid or pooled patch tokens, as ``output`` and the settings ask."""
        s = self.settings
        scale = self._scale()
        if output.mode == "pooled" and s.pooled_source == "tile":
            return self.module(x, doy, scale)[:, 0]
        if output.mode == "grid" and s.grid_feature_mode == "dense" and not self._roi_pool():
            tokens, subs = self.module(x, doy, scale, dense=True)
            return self.module.dense_grid(tokens, subs)
        tokens = self.module(x, doy, scale)[:, 1:]
        b, p, d = tokens.shape
        n = math.isqrt(p)
        grid = tokens.transpose(1, 2).reshape(b, d, n, n)
        if output.mode == "grid":
            return grid
        return grid.amax(dim=(2, 3)) if output.pooling == "max" else grid.mean(dim=(2, 3))

    def _roi_pool(self) -> bool:
        return self._route is not None and self._route.roi_pool

    def _default_doy(self, x: Any) -> Any:
        import torch

        t = int(x.shape[1])
        days = conf.doy0_sequence(*_window(None), t)
        return torch.tensor([days] * int(x.shape[0]), dtype=torch.float32, device=x.device)

    def forward_grid(self, x: Any) -> Any:
        return self._outputs(x, self._default_doy(x), OutputSpec.grid())

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self._outputs(
            x, self._default_doy(x), OutputSpec.pooled("max" if pooling == "max" else "mean")
        )

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        doy = sides.get(_DOY)
        return self._outputs(x, self._default_doy(x) if doy is None else doy, output)

    # -- side inputs and routing -------------------------------------------------------------------
    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``doy0_values`` ``(T,)``: the day of year of each frame's sub-window midpoint (rs-embed's rule)."""
        t = int(x.shape[0]) if x.ndim == 4 else self.settings.n_frames
        days = conf.doy0_sequence(*_window((context or {}).get("temporal")), t)
        return {_DOY: np.asarray(days, dtype=np.float32)}

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """Settings, patch size, the frames encoded and rs-embed's frame-diversity counts."""
        s = self.settings
        return {
            "variant": s.variant, "normalization": s.normalization, "grid_feature_mode": s.grid_feature_mode,
            "pooled_source": s.pooled_source, "image_size": s.image_size, "patch_size_m": 10 * self._scale(),
            "n_frames": int(x.shape[0]) if x.ndim == 4 else s.n_frames, "hf_repo": self.hf_repo,
            "hf_filename": self.hf_file, **_frame_stats(x),
        }  # fmt: skip

    def _route_of(self, ctx: Mapping[str, Any] | None, output: OutputSpec) -> _Route:
        from rs_embed_dask.fetch_square import roi_window

        c = ctx or {}
        scale_m = getattr(c.get("sensor"), "scale_m", None) or 10
        if float(scale_m) != int(scale_m) or int(scale_m) <= 0 or int(scale_m) % 10:
            raise ModelError(
                f"anysat uses the fetch scale as its patch size, which must be a positive multiple of 10 m; "
                f"got scale_m={scale_m!r}"
            )
        windowed = "tile" not in c and roi_window(c.get("fetch_meta")) is not None
        roi_pool = (
            output.mode == "pooled" and windowed and self.settings.pooled_source == "patch"
            and self.roi_pooling == "model"
        )  # fmt: skip
        return _Route(int(scale_m) // 10, roi_pool)

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed inputs grouped by patch scale; a pooled ROI cut back from a square pools its own patches.

        rs-embed pools a rectangle's patch grid cropped to the ROI (outward
        rounding) when ``pooled_source="patch"``; the tile token
        (``"tile"``) is the whole square's.  ``doy0_values`` is recorded as
        integers.
        """
        from rs_embed_dask.fetch_square import crop_grid, roi_window

        ctxs: list[Mapping[str, Any] | None] = [None] * len(inputs) if contexts is None else list(contexts)
        if len(ctxs) != len(inputs):
            raise ModelError(f"{self.name}: got {len(inputs)} inputs but {len(ctxs)} contexts")
        routes: dict[_Route, list[int]] = {}
        for i, c in enumerate(ctxs):
            routes.setdefault(self._route_of(c, output), []).append(i)
        results: list[Embedding | None] = [None] * len(inputs)
        with self._lock:
            for route, idx in routes.items():
                self._route = route
                inner = OutputSpec.grid() if route.roi_pool else output
                part: list[Embedding] = []
                step = self._memory_step([tuple(np.shape(inputs[i])) for i in idx], inner)
                try:
                    for k in range(0, len(idx), step):
                        sub = idx[k : k + step]
                        part += super().embed_inputs(
                            [inputs[i] for i in sub],
                            output=inner,
                            contexts=None if contexts is None else [ctxs[i] or {} for i in sub],
                        )
                finally:
                    self._route = None
                for i, emb in zip(idx, part, strict=True):
                    if route.roi_pool:
                        window = roi_window((ctxs[i] or {}).get("fetch_meta"))
                        g = crop_grid(np.asarray(emb.data), window or (0.0, 1.0, 0.0, 1.0))
                        vec = g.max(axis=(1, 2)) if output.pooling == "max" else g.mean(axis=(1, 2))
                        meta = {k: v for k, v in emb.meta.items() if k not in ("grid_hw", "y_axis_direction")}
                        meta.update(output="pooled", pooling=output.pooling, roi_grid_shape=list(g.shape[1:]))
                        emb = Embedding(data=np.asarray(vec, dtype=np.float32), meta=meta)
                    if emb.meta.get(_DOY) is not None:
                        emb.meta[_DOY] = [int(v) for v in emb.meta[_DOY]]
                    results[i] = emb
        return [r for r in results if r is not None]

    # -- memory ----------------------------------------------------------------------------------
    def _memory_step(self, shapes: Sequence[tuple[int, ...]], output: OutputSpec) -> int:
        """Inputs per model call so that one call fits the memory budget (many 24-pixel tiles per ROI)."""
        from rs_embed_dask.models.memory import memory_batch_size

        return memory_batch_size(
            self, shapes, requested=max(1, len(shapes)), device=self.device, output=output
        )

    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        """Peak forward bytes of one input: the per-pixel temporal encoder dominates (``S^2 T`` rows of ``6 D``).

        Counted in float32 at ``image_size`` ``S``: the raw and normalised
        series, the temporal encoder's widest activations (``S^2 T x 2D``
        three times), the spatial encoder over ``S^2`` sub-patch sequences
        and the ViT over ``1 + S^2`` tokens (MLP ``4D``, attention
        ``heads x (1 + S^2)^2``), and a dense grid.
        """
        shape = tuple(int(v) for v in input_shape)
        t = shape[0] if len(shape) == 4 else self.settings.n_frames
        c = shape[-3] if len(shape) >= 3 else len(S2_BANDS)
        h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, 1)
        s = self.settings.image_size
        d, heads = self.arch.embed_dim, self.arch.num_heads
        pix, tokens = s * s, 1 + s * s
        floats = (
            t * c * (h * w + 2 * pix)
            + 3 * pix * t * 2 * d
            + pix * 2 * 6 * d
            + tokens * 8 * d
            + heads * tokens * tokens * 2
            + pix * 2 * d
        )
        return 4 * int(floats)


def _window(temporal: Any) -> tuple[Any, Any]:
    """``(start, end)`` of a ``TemporalSpec``; rs-embed's default window (2022-06-01 .. 2022-09-01) for ``None``."""
    from rs_embed_dask.models.olmoearth_frames import window_of

    return window_of(temporal)
