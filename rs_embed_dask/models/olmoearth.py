"""``olmoearth``: OlmoEarth v1 / v1.1 / v1.2 (Ai2), a FlexiViT over Sentinel-2 L2A or Sentinel-1 time series.

The architecture is ``olmoearth-pretrain-minimal``'s (Ai2's package that
publishes the models): the whole pretraining model is built from the
checkpoint's own ``config.json`` (``Config.from_dict(config["model"]).build()``),
its encoder restricted to the modalities it was trained on
(``ENCODER_INPUT_MODALITY_NAMES``), and ``weights.pth`` (read with
``weights_only=True``; the training-only ``supervision_head.`` /
``location_token_distillation_head.`` keys left out, as the package's own
loader does) loaded with ``strict=True``; only the encoder is kept.  The
files are those of ``allenai/OlmoEarth-v1{,_1,_2}-<Size>`` (default
``allenai/OlmoEarth-v1_2-Base``), or a local folder holding both.

Inputs and preprocessing follow rs-embed 0.3.1 (``onthefly_olmoearth.py``):

* ``s2`` (default): Sentinel-2 L2A digital numbers of ``B2, B3, B4, B8, B5,
  B6, B7, B8A, B11, B12, B1, B9`` (OlmoEarth's band order) at 10 m; ``s1``
  (``modality="s1"``): Sentinel-1 GRD ``VV, VH`` in dB
  (``COPERNICUS/S1_GRD``; a linear-power fetch, ``use_float_linear=True``, is
  converted by ``10 log10(max(x, 1e-10))``).
* no data -> 0, then per band ``(x - (mean - 2 std)) / (4 std)`` with
  OlmoEarth's computed statistics (not clipped), non-finite values -> 0 / 1;
* a rectangle is centre-padded to a square (reflect, else edge;
  ``shape_adjust="crop"`` centre-crops instead) and resized bilinearly to
  ``image_size`` (256); the encoder cuts it into ``patch_size`` (4) pixel
  patches (FlexiViT: any size 1..8).
* time (:mod:`rs_embed_dask.models.olmoearth_frames`): one composite, or 30-day
  bins of the window (``temporal_mode``), empty bins dropped; each frame's
  timestamp ``(day, month - 1, year)`` is a side input.

Outputs: the encoder's tokens ``(h, w, T, band sets, D)`` with every token
visible (``fast_pass=True``); grid ``(D, h, w)`` = their mean (max for
``pooling="max"``) over time and band sets, 64 x 64 at the defaults; pooled =
the package's ``pool_unmasked_tokens`` over every token.  For a padded
rectangle both are restricted to the ROI's tokens, as rs-embed does.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models import olmoearth_frames as frames
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.vit import check_choice, check_int

__all__ = ["S1_BANDS", "S2_BANDS", "VARIANTS", "OlmoEarthEmbedder", "roi_window"]

ENV_VAR = "RS_EMBED_OLMOEARTH_WEIGHTS"
S1_COLLECTION = "COPERNICUS/S1_GRD"
#: Sentinel-2 L2A bands in OlmoEarth's order (its ``B02 ... B09`` band order).
S2_BANDS = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12", "B1", "B9")
S1_BANDS = ("VV", "VH")
# band sets of the mask rs-embed builds (the v1.1+ encoders tokenise S2 as one group; the count is not read)
_BAND_SETS = {"s2": 3, "s1": 1}
_FIELD = {"s2": "sentinel2_l2a", "s1": "sentinel1"}

#: variant -> (model id, size, version, embedding width)
VARIANTS: dict[str, tuple[str, str, str, int]] = {
    "nano": ("OlmoEarth-v1-Nano", "nano", "v1", 128),
    "tiny": ("OlmoEarth-v1-Tiny", "tiny", "v1", 192),
    "base": ("OlmoEarth-v1-Base", "base", "v1", 768),
    "large": ("OlmoEarth-v1-Large", "large", "v1", 1024),
    "nano_v1_1": ("OlmoEarth-v1_1-Nano", "nano", "v1.1", 128),
    "tiny_v1_1": ("OlmoEarth-v1_1-Tiny", "tiny", "v1.1", 192),
    "base_v1_1": ("OlmoEarth-v1_1-Base", "base", "v1.1", 768),
    "nano_v1_2": ("OlmoEarth-v1_2-Nano", "nano", "v1.2", 128),
    "tiny_v1_2": ("OlmoEarth-v1_2-Tiny", "tiny", "v1.2", 192),
    "small_v1_2": ("OlmoEarth-v1_2-Small", "small", "v1.2", 384),
    "base_v1_2": ("OlmoEarth-v1_2-Base", "base", "v1.2", 768),
}
_ALIASES = {
    "nano_v1": "nano", "tiny_v1": "tiny", "base_v1": "base", "large_v1": "large",
    "nano_11": "nano_v1_1", "tiny_11": "tiny_v1_1", "base_11": "base_v1_1",
    "nano_12": "nano_v1_2", "tiny_12": "tiny_v1_2", "small_12": "small_v1_2", "base_12": "base_v1_2",
    "small": "small_v1_2",
}  # fmt: skip
DEFAULT_VARIANT = "base_v1_2"
# keys of training-only heads that the package's loader leaves out too
_TRAINING_ONLY = ("supervision_head.", "location_token_distillation_head.")


def _variant(cfg: Mapping[str, Any]) -> str:
    value = cfg.get("variant", DEFAULT_VARIANT)
    key = str(value).strip().lower().replace("-", "_").replace(".", "_")
    key = _ALIASES.get(key, key)
    if key not in VARIANTS:
        raise ModelError(
            f"olmoearth model_config 'variant' must be one of {sorted(VARIANTS)} (or {sorted(_ALIASES)}); "
            f"got {value!r}"
        )
    return key


def roi_window(h: int, w: int, shape_adjust: str) -> tuple[float, float, float, float]:
    """``(y0, y1, x0, x1)``: the input's window in its padded square, normalised (rs-embed's ``prepare_square``)."""
    if h == w or shape_adjust == "crop":
        return 0.0, 1.0, 0.0, 1.0
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return tuple(round(v, 6) for v in (top / s, (top + h) / s, left / s, (left + w) / s))  # type: ignore[return-value]


def _token_box(roi: tuple[float, float, float, float], gh: int, gw: int) -> tuple[int, int, int, int]:
    """Token rows and columns covering ``roi`` (outward rounding, at least one token; rs-embed's ``roi_token_box``)."""
    y0f, y1f, x0f, x1f = roi
    y0 = max(0, min(int(np.floor(y0f * gh)), gh - 1))
    y1 = max(y0 + 1, min(int(np.ceil(y1f * gh)), gh))
    x0 = max(0, min(int(np.floor(x0f * gw)), gw - 1))
    x1 = max(x0 + 1, min(int(np.ceil(x1f * gw)), gw))
    return y0, y1, x0, x1


class OlmoEarthEmbedder(TorchEmbedder):
    """OlmoEarth embeddings of Sentinel-2 L2A (or Sentinel-1) composites and 30-day series.

    ``model_config`` keys
    ---------------------
    variant : str, default ``"base_v1_2"``
        ``nano``, ``tiny``, ``base``, ``large`` (v1), ``{nano,tiny,base}_v1_1``,
        ``{nano,tiny,small,base}_v1_2`` (128 / 192 / 384 / 768 / 1024-d).
    weights : str
        A folder holding ``config.json`` and ``weights.pth`` (or the
        ``weights.pth`` file next to its ``config.json``); else
        ``$RS_EMBED_OLMOEARTH_WEIGHTS``, else the Hugging Face hub.
    modality : {"s2", "s1"}, default ``"s2"``
        Set by ``modality="s1"``.
    patch_size : int, default 4
        FlexiViT patch size, 1 to 8.
    image_size : int, default 256
        Side the (squared) input is resized to; a multiple of ``patch_size``.
    shape_adjust : {"pad", "crop"}, default ``"pad"``
        How a rectangle is made square.
    temporal_mode : {"auto", "single", "multi"}, default ``"auto"``
        ``auto``: a 30-day series when the window spans two bins or more,
        else one composite.
    """

    name = "olmoearth"
    extra = "olmoearth"
    requires = ("torch", "olmoearth_pretrain_minimal")
    config_keys = frozenset(
        {"variant", "weights", "modality", "patch_size", "image_size", "shape_adjust", "temporal_mode"}
    )
    modality_config_key = "modality"
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the output back
    modality_aliases: ClassVar[Mapping[str, str]] = {"s2_l2a": "s2", "sentinel2_l2a": "s2"}
    supports_autocast = True

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.variant = _variant(cfg)
        self.model_id, self.size, self.version, self.embed_dim = VARIANTS[self.variant]
        self.modality = check_choice(self.name, cfg, "modality", ("s2", "s1"), "s2")
        self.patch_size = check_int(self.name, cfg, "patch_size", 1) or 4
        if self.patch_size > 8:
            raise ModelError(f"olmoearth model_config 'patch_size' must be 1 to 8; got {self.patch_size}")
        self.image_size = check_int(self.name, cfg, "image_size", 1) or 256
        if self.image_size % self.patch_size:
            raise ModelError(
                f"olmoearth model_config 'image_size' ({self.image_size}) must be a multiple of "
                f"'patch_size' ({self.patch_size})"
            )
        self.shape_adjust = check_choice(self.name, cfg, "shape_adjust", ("pad", "crop"), "pad")
        self.temporal_mode = check_choice(
            self.name, cfg, "temporal_mode", ("auto", "single", "multi"), "auto"
        )
        self.bands = S2_BANDS if self.modality == "s2" else S1_BANDS
        self.hf_repo = f"allenai/{self.model_id}"
        self._norm: tuple[np.ndarray, np.ndarray] | None = None

    # -- time ------------------------------------------------------------------------
    def frame_bins(self, temporal: Any = None) -> list[tuple[Any, Any]] | None:
        """The 30-day bins fetched for a window (``None``: one composite); see :mod:`.olmoearth_frames`."""
        if self.temporal_mode == "single":
            return None
        bins, _ = frames.temporal_bins(*frames.window_of(temporal))
        if self.temporal_mode == "auto" and len(bins) < 2:
            return None
        return bins

    def frame_count(self, temporal: Any = None) -> int | None:
        """Frames fetched for the window: its 30-day bins (at most 12), ``None`` for one composite."""
        bins = self.frame_bins(temporal)
        return None if bins is None else len(bins)

    def temporal_semantics(self, temporal: Any = None) -> str:
        """``"single"`` or ``"bins30d:<T>"``: 30-day bins are not the equal bins of ``"multi:<T>"``."""
        n = self.frame_count(temporal)
        return "single" if n is None else f"bins30d:{n}"

    # -- description -------------------------------------------------------------------
    def resolve_input_size(self) -> int | None:
        """``image_size``: larger inputs are tiled to it."""
        return self.image_size

    def describe(self) -> dict[str, Any]:
        """Bands, modalities, scale, dims, temporal packaging, side inputs and weights of this configuration."""
        g = self.image_size // self.patch_size
        collection = S2_SR if self.modality == "s2" else S1_COLLECTION
        inputs = {"collection": collection, "bands": list(self.bands)}
        s1_defaults = {"use_float_linear": False, "s1_require_iw": True, "s1_relax_iw_on_empty": True}
        return {
            **self.describe_head(
                inputs,
                image_size=self.image_size,
                patch_size=self.patch_size,
                variant=self.variant,
                modality="s2",
                temporal_mode=self.temporal_mode,
            ),
            "modalities": {
                "s2": {"collection": S2_SR, "bands": list(S2_BANDS)},
                "s1": {"collection": S1_COLLECTION, "bands": list(S1_BANDS), "defaults": s1_defaults},
            },
            "embedding_dim": self.width(),
            "grid": f"({self.width()}, {g}, {g}): encoder tokens averaged (max for pooling='max') over time "
            "and band sets; a padded rectangle's grid is cropped to its tokens",
            "pooled": "pool_unmasked_tokens over every token (mean or max); a padded rectangle pools its "
            "own tokens",
            "temporal": (
                f"temporal_mode={self.temporal_mode!r}: one composite, or one per 30-day bin from the window's "
                f"start (at most {frames.MAX_FRAMES}; longer windows: {frames.MAX_FRAMES} equal bins, with a "
                "warning); bins without imagery are dropped"
            ),
            "side_inputs": "timestamps (day, month - 1, year) per frame: bin start (series), window midpoint "
            "(composite)",
            "normalization": "no data -> 0; (x - (mean - 2 std)) / (4 std) per band with OlmoEarth's computed "
            "statistics (olmoearth_pretrain_minimal Normalizer, std_multiplier=2, not clipped); S1 in dB",
            "preprocessing": f"centre {'pad (reflect, else edge)' if self.shape_adjust == 'pad' else 'crop'} to a "
            f"square, bilinear resize to {self.image_size}; patch size {self.patch_size} (FlexiViT)",
            "model_config": {
                "variant": self.variant,
                "modality": self.modality,
                "patch_size": self.patch_size,
                "image_size": self.image_size,
                "temporal_mode": self.temporal_mode,
            },
            "variants": {k: v[3] for k, v in VARIANTS.items()},
            "weights": {
                "source": f"huggingface: {self.hf_repo} (config.json, weights.pth)",
                "env_var": ENV_VAR,
            },
            "license": "OlmoEarth Artifact License (Ai2): weights; the code of olmoearth-pretrain-minimal is "
            "Apache-2.0",
            "extra": self.extra,
        }

    def width(self) -> int:
        """The embedding width: the loaded encoder's, else the variant's."""
        if self.module is not None:
            return int(self.module.embedding_size)
        return self.embed_dim

    # -- model ---------------------------------------------------------------------------
    def checkpoint(self) -> tuple[Path, Path]:
        """``(config.json, weights.pth)`` of this variant: ``weights``, ``$RS_EMBED_OLMOEARTH_WEIGHTS``, else the hub.

        Raises
        ------
        ModelError
            When no source has the files (the message says where it looked).
        """
        from rs_embed_dask.models.weights import find_weights

        weights = find_weights(
            self.name, config=self.model_config, env_var=ENV_VAR, filenames=["weights.pth"],
            hf_repo=self.hf_repo, hf_filename="weights.pth",
        )  # fmt: skip
        config = weights.parent / "config.json"
        if not config.is_file():
            config = find_weights(
                self.name, config={}, env_var=ENV_VAR + "_CONFIG", filenames=["config.json"],
                hf_repo=self.hf_repo, hf_filename="config.json",
            )  # fmt: skip
        return config, weights

    def build_module(self) -> Any:
        from olmoearth_pretrain_minimal import ModelID
        from olmoearth_pretrain_minimal.model_loader import ENCODER_INPUT_MODALITY_NAMES
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.config import Config

        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict

        config_path, weights_path = self.checkpoint()
        try:
            doc = json.loads(config_path.read_text())
            model = Config.from_dict(doc["model"]).build()
        except Exception as exc:
            raise ModelError(f"Could not build OlmoEarth from {str(config_path)!r}: {exc!r}") from exc
        model.encoder.restrict_input_modalities(ENCODER_INPUT_MODALITY_NAMES[ModelID(self.model_id)])
        state = {k: v for k, v in load_state_dict(weights_path).items() if not k.startswith(_TRAINING_ONLY)}
        load_strict(model, state, model=f"{self.name}/{self.variant}", path=weights_path)
        return model.encoder

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band ``(min, max)`` = mean -/+ 2 std of the package's computed statistics."""
        if self._norm is None:
            from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.normalize import load_computed_config
            from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

            spec = Modality.SENTINEL2_L2A if self.modality == "s2" else Modality.SENTINEL1
            stats = load_computed_config()[spec.name]
            mean = np.array([stats[b]["mean"] for b in spec.band_order], dtype=np.float64)
            std = np.array([stats[b]["std"] for b in spec.band_order], dtype=np.float64)
            self._norm = (mean - 2.0 * std, mean + 2.0 * std)
        return self._norm

    def preprocess(self, x: Any) -> Any:
        """``(B, [T,] C, H, W)`` raw values -> ``(B, T, C, H, W)`` normalised (no data as 0; not squared yet)."""
        import torch

        if x.ndim == 4:
            x = x.unsqueeze(1)
        if x.ndim != 5 or x.shape[2] != len(self.bands):
            raise ModelError(
                f"olmoearth ({self.modality}) expects (C, H, W) or (T, C, H, W) inputs of bands {list(self.bands)}; "
                f"got shape {tuple(x.shape[1:])}"
            )
        lo, hi = self._stats()
        lo_t = torch.tensor(lo, dtype=torch.float64, device=x.device).view(1, 1, -1, 1, 1)
        hi_t = torch.tensor(hi, dtype=torch.float64, device=x.device).view(1, 1, -1, 1, 1)
        # float64 arithmetic then float32, as numpy does with rs-embed's float64 statistics
        y = ((torch.nan_to_num(x.float(), nan=0.0).double() - lo_t) / (hi_t - lo_t)).float()
        return torch.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)

    def _square(self, x: Any) -> Any:
        """``(B, T, C, h, w)`` -> ``(B, T, C, s, s)``: pad (or crop) to a square, bilinear resize to ``image_size``."""
        import torch.nn.functional as F

        from rs_embed_dask.models.vit import pad_to_square

        b, t, c, h, w = x.shape
        if h != w:
            if self.shape_adjust == "crop":
                s = min(h, w)
                top, left = (h - s) // 2, (w - s) // 2
                x = x[..., top : top + s, left : left + s]
            else:
                x = pad_to_square(x)
        s = self.image_size
        if tuple(x.shape[-2:]) != (s, s):
            flat = x.reshape(b * t * c, 1, *x.shape[-2:])
            x = F.interpolate(flat, size=(s, s), mode="bilinear", align_corners=False).reshape(b, t, c, s, s)
        return x

    def _encode(self, x: Any, ts: Any) -> Any:
        """Normalised ``(B, T, C, h, w)`` and timestamps ``(B, T, 3)`` -> tokens ``(B, h', w', T, S, D)``."""
        import torch
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import MaskedOlmoEarthSample

        sq = self._square(x)
        b, t, _, s, _ = sq.shape
        data = sq.permute(0, 3, 4, 1, 2)  # B, H, W, T, C
        mask = torch.zeros(b, s, s, t, _BAND_SETS[self.modality], dtype=torch.float32, device=sq.device)
        field = _FIELD[self.modality]
        sample = MaskedOlmoEarthSample(timestamps=ts.long(), **{field: data, f"{field}_mask": mask})
        out = self.module(sample, fast_pass=True, patch_size=self.patch_size)["tokens_and_masks"]
        return out, getattr(out, field)

    def _outputs(self, x: Any, ts: Any, output: OutputSpec) -> Any:
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import PoolingType

        roi = roi_window(int(x.shape[-2]), int(x.shape[-1]), self.shape_adjust)
        tam, tok = self._encode(x, ts)
        full = roi == (0.0, 1.0, 0.0, 1.0)
        if output.mode == "pooled" and full:
            return tam.pool_unmasked_tokens(
                pooling_type=PoolingType.MAX if output.pooling == "max" else PoolingType.MEAN
            )
        # B, h', w', D: time and band sets reduced
        sp = tok.max(dim=4).values.max(dim=3).values if output.pooling == "max" else tok.mean(dim=[3, 4])
        y0, y1, x0, x1 = _token_box(roi, int(sp.shape[1]), int(sp.shape[2]))
        sp = sp[:, y0:y1, x0:x1, :]
        if output.mode == "grid":
            return sp.permute(0, 3, 1, 2)
        return sp.amax(dim=(1, 2)) if output.pooling == "max" else sp.mean(dim=(1, 2))

    def _default_ts(self, x: Any) -> Any:
        import torch

        t = int(x.shape[1]) if x.ndim == 5 else 1
        ts = frames.timestamp(frames.midpoint(*frames.DEFAULT_WINDOW))
        return torch.tensor([[ts] * t] * int(x.shape[0]), device=x.device)

    def forward_grid(self, x: Any) -> Any:
        return self._outputs(x, self._default_ts(x), OutputSpec.grid())

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self._outputs(x, self._default_ts(x), OutputSpec.pooled("max" if pooling == "max" else "mean"))

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        ts = sides.get("timestamps")
        return self._outputs(x, self._default_ts(x) if ts is None else ts, output)

    # -- side inputs and frames ------------------------------------------------------------
    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``timestamps`` ``(T, 3)``: each frame's bin start, or the window midpoint for one composite."""
        start, end = frames.window_of((context or {}).get("temporal"))
        if x.ndim == 3:
            return {"timestamps": np.array([frames.timestamp(frames.midpoint(start, end))], dtype=np.float32)}
        recorded = ((context or {}).get("fetch_meta") or {}).get("frames")
        if recorded and len(recorded) == x.shape[0]:
            from datetime import date

            starts = [date.fromisoformat(str(f["start"])) for f in recorded]
        else:
            bins, _ = frames.temporal_bins(start, end)
            if len(bins) != x.shape[0]:
                raise ModelError(
                    f"olmoearth: a series of {x.shape[0]} frames does not match the {len(bins)} 30-day bins of "
                    f"the window {start} .. {end}; frames must align with the binning"
                )
            starts = [a for a, _ in bins]
        return {"timestamps": np.array([frames.timestamp(d) for d in starts], dtype=np.float32)}

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed composites and 30-day series, dropping the series' empty bins first (rs-embed's rule).

        Sentinel-1 inputs fetched in linear power (``sensor.use_float_linear``)
        are converted to dB.  Each embedding's meta records ``n_frames``,
        ``n_bins``, ``dropped_bins`` and the timestamps.

        Raises
        ------
        ModelError
            When every frame of a series is empty.
        """
        if contexts is not None and len(contexts) != len(inputs):
            return super().embed_inputs(inputs, output=output, contexts=contexts)  # its error
        kept: list[np.ndarray] = []
        ctxs: list[Mapping[str, Any]] = []
        extra: list[dict[str, Any]] = []
        for i, x in enumerate(inputs):
            arr = np.asarray(x, dtype=np.float32)
            ctx: Mapping[str, Any] = {} if contexts is None else contexts[i]
            sensor = ctx.get("sensor")
            if self.modality == "s1" and bool(getattr(sensor, "use_float_linear", False)):
                arr = (10.0 * np.log10(np.clip(arr, 1e-10, None))).astype(np.float32)
            info: dict[str, Any] = {"temporal_mode": "single" if arr.ndim == 3 else "multi"}
            if arr.ndim == 4:
                arr, ctx, info = self._drop_empty(arr, ctx, info)
            kept.append(arr)
            ctxs.append(ctx)
            extra.append(info)
        out = super().embed_inputs(kept, output=output, contexts=None if contexts is None else ctxs)
        for emb, info in zip(out, extra, strict=True):
            emb.meta.update(info)
            if emb.meta.get("timestamps") is not None:  # (day, month - 1, year) as integers
                emb.meta["timestamps"] = [[int(v) for v in row] for row in emb.meta["timestamps"]]
        return out

    def _drop_empty(
        self, arr: np.ndarray, ctx: Mapping[str, Any], info: dict[str, Any]
    ) -> tuple[np.ndarray, Mapping[str, Any], dict[str, Any]]:
        fetch_meta = dict(ctx.get("fetch_meta") or {})
        recorded = fetch_meta.get("frames")
        start, end = frames.window_of(ctx.get("temporal"))
        bins, stretched = frames.temporal_bins(start, end)
        if not (recorded and len(recorded) == arr.shape[0]):
            if len(bins) != arr.shape[0]:
                raise ModelError(
                    f"olmoearth: a series of {arr.shape[0]} frames does not match the {len(bins)} 30-day bins "
                    f"of the window {start} .. {end}; frames must align with the binning"
                )
            recorded = [{"start": a.isoformat(), "end": b.isoformat()} for a, b in bins]
        keep = frames.kept_frames(arr, fetch_meta.get("frames"))
        dropped = [
            [str(recorded[i]["start"]), str(recorded[i]["end"])] for i in range(arr.shape[0]) if i not in keep
        ]
        if not keep:
            raise ModelError(
                "olmoearth: every frame of the multi-frame input is empty (no imagery in any 30-day bin)"
            )
        if stretched:
            warnings.warn(
                f"olmoearth: the window {start} .. {end} exceeds {frames.MAX_FRAMES} x {frames.FRAME_STRIDE_DAYS}-day "
                f"frames; it was divided into {frames.MAX_FRAMES} equal bins, wider than OlmoEarth's monthly cadence",
                UserWarning,
                stacklevel=4,
            )
        if dropped:
            warnings.warn(
                f"olmoearth dropped {len(dropped)} of {arr.shape[0]} temporal bin(s) without imagery: "
                + ", ".join(f"{a}->{b}" for a, b in dropped),
                UserWarning,
                stacklevel=4,
            )
        fetch_meta["frames"] = [dict(recorded[i]) for i in keep]
        info.update(n_bins=int(arr.shape[0]), temporal_spacing_stretched=bool(stretched))
        if dropped:
            info["dropped_bins"] = dropped
        return arr[keep], {**ctx, "fetch_meta": fetch_meta}, info

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """Variant, version, patch size, modality and the number of frames encoded."""
        return {
            "variant": self.variant, "model_version": self.version, "patch_size": self.patch_size,
            "modality": self.modality, "n_frames": int(x.shape[0]) if x.ndim == 4 else 1,
        }  # fmt: skip
