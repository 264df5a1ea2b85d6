"""``galileo``: Galileo (NASA Harvest), a multimodal ViT, on Sentinel-2 time series with month indices.

The model of rs-embed 0.3.1's ``onthefly_galileo``: the published encoders
``nasaharvest/galileo`` ``models/<size>/`` (``config.json`` + ``encoder.pt``;
sizes ``nano`` (default, 128-d), ``tiny`` (192-d), ``base`` (768-d)), built
from ``config.json``'s ``model.encoder`` entry and loaded with
``strict=True`` after the ``.backbone`` infix some checkpoints carry is
removed from the keys (rs-embed's loader does the same, and drops nothing
else).  The architecture is :mod:`rs_embed_dask.models.galileo_encoder` (no
package on the index publishes Galileo).

Inputs, as rs-embed reads them:

* Sentinel-2 L2A ``B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12`` at 10 m, as
  a ``(T, 10, H, W)`` series of equal time bins or one ``(10, H, W)``
  composite (:mod:`rs_embed_dask.models.galileo_frames`); a composite is
  repeated to the window's frame count, as rs-embed repeats a CHW input;
* no data -> 0, ``clip(DN, 0, 10000)``; a rectangle is centre-padded to a
  square (reflect, else edge) and every frame resized bilinearly to
  ``image_size`` (64); then ``normalization``: ``none`` (rs-embed's default:
  the clipped DN as they are), ``unit_scale`` (``/ 10000``),
  ``per_tile_minmax`` (``/ 10000`` then min-max per frame and band) or
  ``official_stats`` (Galileo's pretraining mean and std);
* the bands go to Galileo's space-time channels (S1 and NDVI left zero),
  the five Sentinel-2 band groups visible and every other modality masked
  (S1, NDVI, SRTM, Dynamic World, WorldCereal, ERA5, TerraClimate, VIIRS,
  LandScan, location), so only Sentinel-2 tokens enter the transformer;
* ``months`` (side input): the month (0-11) of each frame's bin midpoint.

Outputs: tokens ``(h, w, T, 5, D)`` of ``patch_size`` (8) pixel patches
after the final LayerNorm (``add_layernorm``); grid ``(D, h, w)`` = the mean
of each patch's visible tokens over frames and band groups (Galileo's
``apply_mask_and_average_tokens_per_patch``, 8 x 8 at the defaults); pooled
= the mean of every visible token (``average_tokens``), or for
``pooling="max"`` the maximum of the grid cells, as rs-embed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models import galileo_frames as gframes
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.series import series_batch
from rs_embed_dask.models.vit import check_choice, check_int

__all__ = ["NORMALIZATIONS", "PRETRAIN_MEAN", "PRETRAIN_STD", "S2_BANDS", "VARIANTS", "GalileoEmbedder"]

S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
HF_REPO = "nasaharvest/galileo"
#: rs-embed's variables (``onthefly_galileo``), read when ``model_config`` does not say.
ENV = {
    "variant": "RS_EMBED_GALILEO_MODEL_SIZE",
    "weights": "RS_EMBED_GALILEO_MODEL_PATH",
    "hf_repo": "RS_EMBED_GALILEO_HF_REPO",
    "cache_dir": "RS_EMBED_GALILEO_CACHE_DIR",
    "auto_download": "RS_EMBED_GALILEO_AUTO_DOWNLOAD",
    "image_size": "RS_EMBED_GALILEO_IMG",
    "patch_size": "RS_EMBED_GALILEO_PATCH",
    "normalization": "RS_EMBED_GALILEO_NORM",
    "add_layernorm": "RS_EMBED_GALILEO_ADD_LN",
    "month": "RS_EMBED_GALILEO_MONTH",
    "temporal_mode": "RS_EMBED_GALILEO_TEMPORAL_MODE",
    "n_frames": "RS_EMBED_GALILEO_FRAMES",
}
#: rs-embed's cache of the hub snapshot (a Hugging Face cache folder) unless ``$RS_EMBED_GALILEO_CACHE_DIR``.
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "rs_embed", "galileo")
#: size -> (embedding size, depth, heads) of the published encoders (their config.json is what is built).
VARIANTS: dict[str, tuple[int, int, int]] = {"nano": (128, 4, 8), "tiny": (192, 12, 3), "base": (768, 12, 12)}
#: canonical name -> the spellings rs-embed accepts.
NORMALIZATIONS: dict[str, tuple[str, ...]] = {
    "none": ("none", "raw"),
    "unit_scale": ("unit_scale", "unit", "reflectance"),
    "per_tile_minmax": ("per_tile_minmax", "minmax", "tile_minmax"),
    "official_stats": ("official_stats", "pretrain_stats", "pretraining_stats", "galileo_stats"),
}
#: Galileo's pretraining statistics of the Sentinel-2 space-time channels (S2_BANDS order).
PRETRAIN_MEAN = (1395.3408730676722, 1338.4026921784578, 1343.09883810357, 1543.8607982512297,
                 2186.2022069512263, 2525.0932853316694, 2410.3377187373408, 2750.2854646886753,
                 2234.911100061487, 1474.5311266077113)  # fmt: skip
PRETRAIN_STD = (917.7041440370853, 913.2988423581528, 1092.678723527555, 1047.2206083460424,
                1048.0101611156767, 1143.6903026819996, 1098.979177731649, 1204.472755085893,
                1145.9774063078878, 980.2429840007796)  # fmt: skip
_FALSE = ("0", "false", "False")


def _setting(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg[key]``, else rs-embed's environment variable for it (a string), else ``None``."""
    if cfg.get(key) is not None:
        return cfg[key]
    value = os.environ.get(ENV[key], "").strip()
    return value or None


def _int_setting(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int = 1) -> int | None:
    value = _setting(cfg, key)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ModelError(f"${ENV[key]} must be an integer; got {value!r}") from None
    return check_int("galileo", {key: value}, key, minimum) if value is not None else default


def _normalization(value: Any) -> str:
    key = str(value or "none").strip().lower()
    for name, spellings in NORMALIZATIONS.items():
        if key in spellings:
            return name
    raise ModelError(
        f"galileo model_config 'normalization' must be one of {list(NORMALIZATIONS)} "
        f"(or {sorted(s for v in NORMALIZATIONS.values() for s in v[1:])}); got {value!r}"
    )


class GalileoEmbedder(TorchEmbedder):
    """Galileo embeddings of Sentinel-2 series (10 bands, month indices), other modalities masked.

    ``model_config`` keys (each defaults to rs-embed's ``RS_EMBED_GALILEO_*`` variable, then to rs-embed's default)
    ---------------------------------------------------------------------------------------------------------------
    variant : {"nano", "tiny", "base"}, default ``"nano"``
        The published size (``RS_EMBED_GALILEO_MODEL_SIZE``).
    weights : str
        A folder holding ``config.json`` and ``encoder.pt`` (or that
        ``encoder.pt``) (``RS_EMBED_GALILEO_MODEL_PATH``); else the hub.
    temporal_mode : {"auto", "single", "multi"}, default ``"auto"``
        One composite, a series, or a series when the window spans two
        30-day frames or more.
    n_frames : int
        Pins the frame count of a series (``RS_EMBED_GALILEO_FRAMES``).
    image_size : int, default 64
        Side every frame is resized to (``RS_EMBED_GALILEO_IMG``).
    patch_size : int, default 8
        Patch side in pixels (FlexiViT; ``RS_EMBED_GALILEO_PATCH``).
    normalization : {"none", "unit_scale", "per_tile_minmax", "official_stats"}, default ``"none"``
        (``RS_EMBED_GALILEO_NORM``).
    add_layernorm : bool, default True
        The final LayerNorm on the tokens (``RS_EMBED_GALILEO_ADD_LN``).
    month : int
        1-12: one month for every frame (``RS_EMBED_GALILEO_MONTH``).
    """

    name = "galileo"
    extra = "models"
    requires = ("torch",)
    config_keys = frozenset(
        {"variant", "weights", "temporal_mode", "n_frames", "image_size", "patch_size", "normalization",
         "add_layernorm", "month"}
    )  # fmt: skip
    square_fetch = True  # rs-embed's ``_requires_square_input``: rectangles fetched as squares, grid cut back
    supports_autocast = True

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        variant = str(_setting(cfg, "variant") or "nano").strip().lower()
        self.variant = check_choice(self.name, {"variant": variant}, "variant", tuple(VARIANTS), "nano")
        self.image_size = _int_setting(cfg, "image_size", 64) or 64
        self.patch_size = _int_setting(cfg, "patch_size", 8) or 8
        if self.image_size % self.patch_size:
            raise ModelError(
                f"galileo model_config 'image_size' ({self.image_size}) must be a multiple of 'patch_size' "
                f"({self.patch_size})"
            )
        self.normalization = _normalization(_setting(cfg, "normalization"))
        ln = _setting(cfg, "add_layernorm")
        self.add_layernorm = (ln not in _FALSE) if isinstance(ln, str) else bool(True if ln is None else ln)
        self.month = _int_setting(cfg, "month", None)
        if self.month is not None and not 1 <= self.month <= 12:
            raise ModelError(f"galileo model_config 'month' must be 1 to 12; got {self.month}")
        mode = _setting(cfg, "temporal_mode") or "auto"
        self.temporal_mode = check_choice(self.name, {"temporal_mode": mode}, "temporal_mode",
                                          ("auto", "single", "multi"), "auto")  # fmt: skip
        self.pinned_frames = _int_setting(cfg, "n_frames", None)
        self.hf_repo = str(os.environ.get(ENV["hf_repo"], "").strip() or HF_REPO)
        self.embed_dim = VARIANTS[self.variant][0]
        self.num_heads = VARIANTS[self.variant][2]

    # -- time -------------------------------------------------------------------------
    def frame_plan(self, temporal: Any = None) -> gframes.FramePlan:
        """The frames of a window (``None``: rs-embed's default window); see :mod:`.galileo_frames`."""
        return gframes.plan_frames(temporal, self.temporal_mode, self.pinned_frames)

    def frame_count(self, temporal: Any = None) -> int | None:
        """Equal time bins fetched for the window, ``None`` for one composite (a one-frame series is one)."""
        n = self.frame_plan(temporal).n_frames
        return None if n == 1 else n

    # -- description ----------------------------------------------------------------------
    def resolve_input_size(self) -> int | None:
        """``image_size``: larger inputs are tiled to it."""
        return self.image_size

    def describe(self) -> dict[str, Any]:
        """Bands, frames, side inputs, dims, outputs, normalisation and weights of this configuration."""
        g = self.image_size // self.patch_size
        d = self.width()
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(S2_BANDS)},
                image_size=self.image_size,
                patch_size=self.patch_size,
                variant=self.variant,
                temporal_mode=self.temporal_mode,
                normalization=self.normalization,
            ),
            "embedding_dim": d,
            "grid": f"({d}, {g}, {g}): per patch, the mean of its visible tokens over frames and the five "
            "Sentinel-2 band groups; a square-fetched rectangle's grid is cut back to the ROI",
            "pooled": "mean of every visible token (average_tokens); pooling='max': maximum of the grid cells",
            "temporal": (
                f"temporal_mode={self.temporal_mode!r}: T = the window's {gframes.FRAME_STRIDE_DAYS}-day frames "
                f"(at most {gframes.MAX_FRAMES}; longer windows: {gframes.MAX_FRAMES}, with a warning) or "
                "n_frames; auto: a series from two frames on, else one composite. Fetched as T equal bins; "
                "empty bins keep the provider's whole-window composite (counted in n_distinct_frames)"
            ),
            "side_inputs": "months: month (0-11) of each equal bin's midpoint, or month - 1 for every frame",
            "modalities": {
                "visible": ["S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR"],
                "masked": [
                    "S1",
                    "NDVI",
                    "SRTM",
                    "DW",
                    "WC",
                    "ERA5",
                    "TC",
                    "VIIRS",
                    "LS",
                    "location",
                    "DW_static",
                    "WC_static",
                ],
            },
            "preprocessing": f"no data -> 0, clip(DN, 0, 10000), centre pad to a square (reflect, else edge), "
            f"bilinear resize to {self.image_size}; patch size {self.patch_size} (FlexiViT)",
            "normalization": {
                "selected": self.normalization,
                "none": "clipped DN as they are (rs-embed's default)",
                "unit_scale": "DN / 10000",
                "per_tile_minmax": "DN / 10000, then (x - min) / max(max - min, 1e-6) per frame and band",
                "official_stats": f"(DN - mean) / std, Galileo's pretraining mean {list(PRETRAIN_MEAN)} "
                f"std {list(PRETRAIN_STD)}",
            },
            "model_config": {
                "variant": self.variant,
                "temporal_mode": self.temporal_mode,
                "n_frames": self.pinned_frames,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "normalization": self.normalization,
                "add_layernorm": self.add_layernorm,
                "month": self.month,
            },
            "variants": {k: v[0] for k, v in VARIANTS.items()},
            "weights": {
                "source": f"huggingface: {self.hf_repo} models/{self.variant}/config.json + encoder.pt",
                "env_var": ENV["weights"],
                "cache_dir": f"${ENV['cache_dir']} or {DEFAULT_CACHE_DIR} (rs-embed's), then the Hugging Face cache",
                "format": "config.json (model.encoder: the architecture) and encoder.pt (the encoder's state "
                "dict, torch.load weights_only=True; '.backbone' removed from keys, strict=True)",
            },
            "license": "MIT (Galileo code and weights, NASA Harvest)",
            "extra": self.extra,
        }

    def width(self) -> int:
        """The embedding width: the loaded encoder's, else the variant's."""
        return int(self.module.embedding_size) if self.module is not None else self.embed_dim

    # -- weights ------------------------------------------------------------------------
    def checkpoint(self) -> tuple[Path, Path]:
        """``(config.json, encoder.pt)``: ``weights``, ``$RS_EMBED_GALILEO_MODEL_PATH``, rs-embed's cache, the hub.

        Raises
        ------
        ModelError
            When no source has the files, or ``$RS_EMBED_GALILEO_AUTO_DOWNLOAD=0``
            and no folder is given (rs-embed's rule).
        """
        from rs_embed_dask.models.weights import find_weights

        cfg = self.model_config
        folder = cfg.get("weights") or os.environ.get(ENV["weights"], "").strip()
        sub = f"models/{self.variant}"
        if not folder:
            if os.environ.get(ENV["auto_download"], "1").strip() in _FALSE:
                raise ModelError(
                    f"galileo needs its model folder (config.json and encoder.pt): set model_config['weights'] "
                    f"or ${ENV['weights']}, or unset ${ENV['auto_download']} to use the Hugging Face hub"
                )
            cached = self._rs_embed_cache(sub)
            if cached is not None:
                return cached
        weights = find_weights(
            self.name, config=cfg, env_var=ENV["weights"], filenames=["encoder.pt"],
            hf_repo=self.hf_repo, hf_filename=f"{sub}/encoder.pt",
        )  # fmt: skip
        if folder:
            config = weights.parent / "config.json"
            if not config.is_file():
                raise ModelError(
                    f"galileo model folder {str(weights.parent)!r} holds no config.json next to encoder.pt"
                )
        else:  # the hub's file of the same snapshot
            config = find_weights(
                self.name, config={}, env_var=ENV["weights"], filenames=["config.json"],
                hf_repo=self.hf_repo, hf_filename=f"{sub}/config.json",
            )  # fmt: skip
        return config, weights

    def _rs_embed_cache(self, sub: str) -> tuple[Path, Path] | None:
        """Both files from rs-embed's snapshot cache (a Hugging Face cache folder), offline; ``None`` if absent."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        cache = os.path.expanduser(os.environ.get(ENV["cache_dir"], "").strip() or DEFAULT_CACHE_DIR)
        if not os.path.isdir(cache):
            return None
        found = [
            try_to_load_from_cache(self.hf_repo, f"{sub}/{f}", cache_dir=cache)
            for f in ("config.json", "encoder.pt")
        ]
        if all(isinstance(p, str) for p in found):
            return Path(str(found[0])), Path(str(found[1]))
        return None

    def build_module(self) -> Any:
        from rs_embed_dask.models.galileo_encoder import GalileoEncoder
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict

        config_path, weights_path = self.checkpoint()
        try:
            enc_cfg = json.loads(config_path.read_text())["model"]["encoder"]
            module = GalileoEncoder(**enc_cfg)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"Could not build Galileo from {str(config_path)!r}: {exc!r}") from exc
        # rs-embed's loader: some checkpoints name keys with a ``.backbone`` infix; it is removed, nothing dropped
        state = {k.replace(".backbone", ""): v for k, v in load_state_dict(weights_path).items()}
        load_strict(module, state, model=f"{self.name}/{self.variant}", path=weights_path)
        return module

    # -- preprocessing and forward -----------------------------------------------------------
    def preprocess(self, x: Any) -> Any:
        """``(B, [T,] 10, H, W)`` raw DN -> ``(B, T, 10, S, S)``: clipped, squared, resized, normalised."""
        import torch

        from rs_embed_dask.models.vit import pad_to_square, resize_square

        x = series_batch(
            x, len(S2_BANDS), f"galileo expects (T, 10, H, W) or (10, H, W) inputs of bands {list(S2_BANDS)}"
        )
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0)
        b, t, c, h, w = x.shape
        s = self.image_size
        if (h, w) != (s, s):  # rs-embed's prepare_square: pad a rectangle, then bilinear resize
            sq = pad_to_square(x)
            x = resize_square(sq.reshape(b * t, c, *sq.shape[-2:]), s, mode="bilinear", antialias=False)
            x = x.reshape(b, t, c, s, s)
        x = torch.nan_to_num(x.clamp(0.0, 10000.0), nan=0.0)
        if self.normalization == "unit_scale":
            x = x / 10000.0
        elif self.normalization == "per_tile_minmax":
            x = x / 10000.0
            lo = x.amin(dim=(-2, -1), keepdim=True)
            hi = x.amax(dim=(-2, -1), keepdim=True)
            x = (x - lo) / (hi - lo).clamp(min=1e-6)
        elif self.normalization == "official_stats":
            mean = torch.tensor(PRETRAIN_MEAN, dtype=x.dtype, device=x.device).view(1, 1, -1, 1, 1)
            std = torch.tensor(PRETRAIN_STD, dtype=x.dtype, device=x.device).view(1, 1, -1, 1, 1)
            x = (x - mean) / std.clamp(min=torch.finfo(x.dtype).eps)
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def _tokens(self, x: Any, months: Any) -> Any:
        """Normalised ``(B, T, 10, S, S)`` and months ``(B, T)`` -> visible tokens ``(B, h, w, T, 5, D)``."""
        import torch

        from rs_embed_dask.models.galileo_encoder import S2_GROUPS, SPACE_TIME_BANDS

        b, t, c, s, _ = x.shape
        st = torch.zeros(b, t, len(SPACE_TIME_BANDS), s, s, dtype=x.dtype, device=x.device)
        first = SPACE_TIME_BANDS.index(S2_BANDS[0])
        st[:, :, first : first + c] = x
        return self.module(
            st,
            months,
            patch_size=self.patch_size,
            visible=S2_GROUPS,
            add_layernorm_on_exit=self.add_layernorm,
        )

    def _outputs(self, x: Any, months: Any, output: OutputSpec) -> Any:
        tok = self._tokens(x, months)
        grid = tok.mean(dim=(3, 4))  # B, h, w, D: each patch's visible tokens
        if output.mode == "grid":
            return grid.permute(0, 3, 1, 2)
        if output.pooling == "max":
            return grid.amax(dim=(1, 2))
        return tok.flatten(1, 4).mean(dim=1)

    def _default_months(self, x: Any) -> Any:
        import torch

        t = int(x.shape[1])
        m = gframes.frame_months(None, t, month=self.month)
        return torch.as_tensor(m, device=x.device).expand(int(x.shape[0]), t)

    def forward_grid(self, x: Any) -> Any:
        return self._outputs(x, self._default_months(x), OutputSpec.grid())

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self._outputs(
            x, self._default_months(x), OutputSpec.pooled("max" if pooling == "max" else "mean")
        )

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        months = sides.get("months")
        return self._outputs(x, self._default_months(x) if months is None else months, output)

    # -- side inputs, frames and meta ------------------------------------------------------------
    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``months`` ``(T,)``: of each frame's bin midpoint (the context's window, else rs-embed's default)."""
        ctx = context or {}
        t = int(x.shape[0]) if x.ndim == 4 else 1
        recorded = (ctx.get("fetch_meta") or {}).get("frames")
        months = gframes.frame_months(ctx.get("temporal"), t, recorded=recorded, month=self.month)
        return {"months": months.astype(np.float32)}

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed series (and composites, repeated to the window's frame count, as rs-embed does).

        Every frame is kept, back-filled empty bins included (rs-embed's rule
        for Galileo); the meta records the frame plan, the months and how
        many frames are distinct.
        """
        if contexts is not None and len(contexts) != len(inputs):
            return super().embed_inputs(inputs, output=output, contexts=contexts)  # its error
        series: list[np.ndarray] = []
        extra: list[dict[str, Any]] = []
        stretched = False
        for i, x in enumerate(inputs):
            arr = np.asarray(x, dtype=np.float32)
            ctx = {} if contexts is None else contexts[i]
            plan = self.frame_plan(ctx.get("temporal"))
            if arr.ndim == 3:
                arr = np.repeat(arr[None], plan.n_frames, axis=0)
            if arr.ndim != 4 or arr.shape[1] != len(S2_BANDS):
                raise ModelError(
                    f"galileo expects (T, 10, H, W) or (10, H, W) inputs of bands {list(S2_BANDS)}; "
                    f"got shape {tuple(np.shape(x))}"
                )
            stretched = stretched or plan.stretched
            distinct = gframes.distinct_frame_count(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 10000.0))
            extra.append({
                **plan.meta(),
                "n_frames_requested": int(arr.shape[0]),
                "n_distinct_frames": distinct,
                "n_backfilled_frames": int(arr.shape[0]) - distinct,
            })  # fmt: skip
            series.append(arr)
        if stretched:
            warnings.warn(
                f"galileo: the window exceeds {gframes.MAX_FRAMES} x {gframes.FRAME_STRIDE_DAYS}-day frames; it "
                f"was divided into {gframes.MAX_FRAMES} equal frames, wider than Galileo's monthly cadence",
                UserWarning,
                stacklevel=2,
            )
        out = super().embed_inputs(series, output=output, contexts=contexts)
        for emb, info in zip(out, extra, strict=True):
            emb.meta.update(info)
            idx = [int(v) for v in emb.meta.pop("months")]
            emb.meta.update(month_indices=idx, months=[v + 1 for v in idx], month=idx[len(idx) // 2] + 1)
        return out

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """Variant, sizes, normalisation and the number of frames encoded."""
        return {
            "variant": self.variant, "image_size": self.image_size, "patch_size": self.patch_size,
            "normalization": self.normalization, "add_layernorm": self.add_layernorm, "n_frames": int(x.shape[0]),
            "grid_kind": "patch_tokens", "hf_repo": self.hf_repo,
        }  # fmt: skip

    # -- memory ----------------------------------------------------------------------------
    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        """Peak forward bytes of one input: its copies and about 24 float32 ``(N, D)`` token tensors.

        ``N = (S / p)^2 * T * 5`` tokens of width ``D``: the residual stream,
        q/k/v, the MLP's hidden layer (4 D) and their temporaries.  Attention
        runs fused (``scaled_dot_product_attention``), so no ``N x N`` scores
        are held.  Measured on a CPU with the nano shape: 49-52 MiB per input
        of 12 frames at 64 px (estimate 56 MiB), 16 MiB at 4 frames (19 MiB).
        """
        shape = tuple(int(s) for s in input_shape)
        t = shape[0] if len(shape) == 4 else self.frame_plan(None).n_frames
        c, h, w = shape[-3:]
        s = self.image_size
        n = (s // self.patch_size) ** 2 * t * 5
        pixels = 4 * t * (c * h * w * 2 + 13 * s * s * 2)
        return int(pixels + 4 * n * self.width() * 24)
