"""``fomo``: FoMo-Net_1 (FoMo-Bench, RolnickLab), a multi-sensor MAE encoder fed Sentinel-2 bands one by one.

The model of rs-embed 0.3.1's ``onthefly_fomo``: FoMo's ``MultiSpectralViT``
(:mod:`rs_embed_dask.models.fomo_encoder`, our own module with the official
keys) loading ``fomo_single_embedding_layer_weights.pt``
(:mod:`rs_embed_dask.models.fomo_weights`: ``weights``,
``$RS_EMBED_FOMO_CKPT``, rs-embed's cache, else the Dropbox URL).

Inputs: the twelve Sentinel-2 L2A bands ``B1, B2, B3, B4, B5, B6, B7, B8,
B8A, B9, B11, B12`` of ``COPERNICUS/S2_SR_HARMONIZED`` at 10 m (the fetch
rs-embed shares with TerraMind), one composite.  Each band is one FoMo
modality, with the keys of FoMo's pretraining table ``sentinel-2-b1`` ..
``sentinel-2-b12`` (B10 skipped): ``(6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17,
18)``.

Preprocessing, in rs-embed's order: no data (non-finite) -> 0, clip to
``[0, 10000]``, then the normalisation (``unit_scale``: DN / 10000, default;
``per_tile_minmax``: DN / 10000 rescaled to ``[0, 1]`` per band over the
input; ``none``: DN), then, when the input is not ``image_size`` (64) square,
a centre pad to a square (reflect, else edge) and a bilinear resize (no
antialias) to 64 x 64.

Outputs: the final-LayerNorm tokens of the 12 bands, 4 x 4 patches of 16 px
each (192 tokens).  Grid ``(768, 4, 4)``: per patch, the mean of its 12 band
tokens, north up.  Pooled: the mean (or max) over all 192 tokens, so the
pooled mean is the grid mean while the pooled max is not the grid's max.

Every setting also reads rs-embed's variable when the ``model_config`` key is
absent: ``image_size`` (``RS_EMBED_FOMO_IMG``), ``patch_size`` (``_PATCH``),
``dim``, ``depth``, ``heads``, ``mlp_dim``, ``num_classes`` (``_DIM``,
``_DEPTH``, ``_HEADS``, ``_MLP_DIM``, ``_NUM_CLASSES``), ``normalization``
(``_NORM``) and ``s2_keys`` (``_S2_KEYS``, comma-separated).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.fomo_encoder import DIM_HEAD, MODALITY_CHANNELS, FomoArch
from rs_embed_dask.models.fomo_weights import UrlCheckpoint

__all__ = ["BANDS", "DEFAULT_S2_KEYS", "NORMALIZATIONS", "FomoEmbedder"]

#: Sentinel-2 L2A bands fetched (rs-embed's ``_S2_SR_12_BANDS``).
BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
#: FoMo modality key of each band of :data:`BANDS` (``sentinel-2-b1`` .. ``sentinel-2-b12``, no B10).
DEFAULT_S2_KEYS = (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18)
#: rs-embed's normalisation names (and the spellings it accepts for them).
NORMALIZATIONS: dict[str, str] = {
    "unit_scale": "unit_scale", "unit": "unit_scale", "reflectance": "unit_scale",
    "per_tile_minmax": "per_tile_minmax", "minmax": "per_tile_minmax", "tile_minmax": "per_tile_minmax",
    "none": "none", "raw": "none",
}  # fmt: skip
#: ``model_config`` key -> (rs-embed's variable, default, minimum) of the integer settings.
_INT_SETTINGS: dict[str, tuple[str, int, int]] = {
    "image_size": ("RS_EMBED_FOMO_IMG", 64, 1),
    "patch_size": ("RS_EMBED_FOMO_PATCH", 16, 1),
    "dim": ("RS_EMBED_FOMO_DIM", 768, 1),
    "depth": ("RS_EMBED_FOMO_DEPTH", 12, 1),
    "heads": ("RS_EMBED_FOMO_HEADS", 12, 1),
    "mlp_dim": ("RS_EMBED_FOMO_MLP_DIM", 2048, 1),
    "num_classes": ("RS_EMBED_FOMO_NUM_CLASSES", 1000, 1),
}
NORM_ENV = "RS_EMBED_FOMO_NORM"
KEYS_ENV = "RS_EMBED_FOMO_S2_KEYS"
_FLOAT = 4


def _int_setting(cfg: Mapping[str, Any], key: str) -> int:
    env, default, minimum = _INT_SETTINGS[key]
    if key in cfg and cfg[key] is not None:
        value, source = cfg[key], f"model_config {key!r}"
    elif (os.environ.get(env) or "").strip():
        raw = os.environ[env].strip()
        try:
            value = int(raw)
        except ValueError:
            raise ModelError(f"fomo ${env} must be an integer >= {minimum}; got {raw!r}") from None
        source = f"${env}"
    else:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"fomo {source} must be an integer >= {minimum}; got {value!r}")
    return value


def _normalization(cfg: Mapping[str, Any]) -> str:
    value = cfg.get("normalization")
    source = "model_config 'normalization'"
    if value is None:
        value, source = (os.environ.get(NORM_ENV) or "").strip() or "unit_scale", f"${NORM_ENV}"
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in NORMALIZATIONS:
        raise ModelError(
            f"fomo {source} must be one of ['unit_scale', 'per_tile_minmax', 'none']; got {value!r}"
        )
    return NORMALIZATIONS[key]


def _s2_keys(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    value: Any = cfg.get("s2_keys")
    source = "model_config 's2_keys'"
    if value is None:
        raw = (os.environ.get(KEYS_ENV) or "").strip()
        if not raw:
            return DEFAULT_S2_KEYS
        value, source = [p.strip() for p in raw.split(",") if p.strip()], f"${KEYS_ENV}"
    if isinstance(value, str):  # "6,7,..." as in the variable
        value = [p.strip() for p in value.split(",") if p.strip()]
    hi = len(MODALITY_CHANNELS)  # the spectral table has one row more than the modalities
    try:
        keys = tuple(int(k) for k in value)
        ok = all(not isinstance(k, bool) and 0 <= int(k) <= hi and float(k) == int(k) for k in value)
    except (TypeError, ValueError):
        ok, keys = False, ()
    if not ok or len(keys) != len(BANDS):
        raise ModelError(
            f"fomo {source} must be {len(BANDS)} integers in [0, {hi}], one FoMo modality key per band of "
            f"{list(BANDS)} (default {list(DEFAULT_S2_KEYS)}); got {value!r}"
        )
    return keys


class FomoEmbedder(TorchEmbedder):
    """FoMo-Net_1 embeddings of 12-band Sentinel-2 L2A composites.

    ``model_config`` keys (each falls back on rs-embed's ``RS_EMBED_FOMO_*`` variable)
    ---------------------------------------------------------------------------------
    weights : str
        The checkpoint file, or a folder holding
        ``fomo_single_embedding_layer_weights.pt`` (else ``$RS_EMBED_FOMO_CKPT``,
        rs-embed's cache, the URL).
    normalization : {"unit_scale", "per_tile_minmax", "none"}
        Default ``"unit_scale"`` (DN / 10000).
    s2_keys : sequence of 12 int
        FoMo modality key of each band (default ``(6, ..., 15, 17, 18)``).
    image_size, patch_size : int
        Model input side (64) and patch side (16); the checkpoint's positional
        table fixes ``(image_size / patch_size) ** 2``.
    dim, depth, heads, mlp_dim, num_classes : int
        The encoder's shape (768, 12, 12, 2048, 1000): for smaller test or
        smoke-run checkpoints only.
    """

    name = "fomo"
    requires = ("torch",)
    extra = None
    config_keys = frozenset({"weights", "normalization", "s2_keys", *_INT_SETTINGS})
    supports_autocast = True
    # rs-embed's ``_requires_square_input``: a rectangle is fetched as a square and the grid cut back
    square_fetch = True

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.arch = FomoArch(**{k: _int_setting(cfg, k) for k in _INT_SETTINGS})
        if self.arch.image_size % self.arch.patch_size:
            raise ModelError(
                f"fomo image_size {self.arch.image_size} must be a multiple of patch_size {self.arch.patch_size}"
            )
        self.normalization = _normalization(cfg)
        self.s2_keys = _s2_keys(cfg)
        self.image_size = self.arch.image_size
        self.hub = UrlCheckpoint.from_env()

    # -- description -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands, modality keys, preprocessing, dims, outputs and weights of this configuration."""
        a = self.arch
        g = a.grid_side
        k = len(BANDS)
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(BANDS)},
                image_size=a.image_size,
                patch_size=a.patch_size,
                dim=a.dim,
                depth=a.depth,
                heads=a.heads,
                mlp_dim=a.mlp_dim,
                num_classes=a.num_classes,
                normalization=self.normalization,
                auto_download_ckpt=self.hub.auto_download,
            ),
            "embedding_dim": a.dim,
            "modality_keys": {
                b: {"key": key, "channel": MODALITY_CHANNELS.get(key, "(spare row)")}
                for b, key in zip(BANDS, self.s2_keys, strict=True)
            },
            "grid": f"({a.dim}, {g}, {g}): per {a.patch_size}-px patch, the mean of its {k} band tokens "
            "(final LayerNorm), north up",
            "grid_semantics": "spectral_mean_patch_tokens",
            "pooled": f"mean (or max) over all {k * g * g} tokens ({k} bands x {g * g} patches)",
            "temporal": "single composite",
            "input_size": a.image_size,
            "preprocessing": "no data -> 0, clip to [0, 10000], normalisation, then (input not "
            f"{a.image_size} px square) centre pad to a square (reflect, else edge) and bilinear resize "
            f"to {a.image_size} x {a.image_size} (no antialias)",
            "normalization": {
                "unit_scale": "DN / 10000",
                "per_tile_minmax": "DN / 10000, then (x - min) / max(max - min, 1e-6) per band over the input",
                "none": "DN (clipped)",
            }[self.normalization],
            "side_inputs": "none (the band -> modality keys are fixed per configuration)",
            "model_config": {
                "normalization": self.normalization,
                "s2_keys": list(self.s2_keys),
                **{key: getattr(a, key) for key in _INT_SETTINGS},
            },
            "architecture": f"FoMo MultiSpectralViT (rs_embed_dask.models.fomo_encoder): shared single-band "
            f"patch embedding, spectral + positional embeddings, {a.depth} pre-norm layers, {a.heads} heads "
            f"of {DIM_HEAD}, no CLS token in the forward pass",
            "parameters": a.parameter_count(),
            "weights": self.hub.describe(),
            "license": "FoMo-Bench code and weights: MIT (RolnickLab)",
            "extra": self.extra,
        }

    def resolve_input_size(self) -> int | None:
        """The model input side (``image_size``), which ``input_prep`` tiles to."""
        return self.arch.image_size

    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        """Peak forward bytes of one ``(12, H, W)`` input (a conservative estimate).

        The stacked raw input, a working copy and the padded square, the
        resized model input, and the widest moment of a layer: the residual
        stream, its normalised copy, query/key/value, the two MLP activations
        and one attention matrix per head.  Measured on the CPU (peak resident
        growth per item, batches of 64 and 32, FoMo-Net_1's shape): 4.9 MiB at
        64 px and 12.6 MiB at 300 px, against 8.4 and 20.2 MiB estimated here.
        """
        shape = tuple(int(s) for s in input_shape)
        c = shape[-3] if len(shape) >= 3 else len(BANDS)
        h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, 1)
        a = self.arch
        side = max(h, w)
        n = c * a.grid_side**2
        inner = DIM_HEAD * a.heads
        raw = c * (2 * h * w + side * side)
        model_in = 2 * c * a.image_size**2
        layer = n * (2 * a.dim + 3 * inner + 2 * a.mlp_dim) + a.heads * n * n
        return _FLOAT * (raw + model_in + layer)

    # -- model -------------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.fomo_encoder import build_fomo_encoder
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict, strip_prefix

        path = self.hub.find(self.name, self.model_config)
        state = strip_prefix(strip_prefix(load_state_dict(path), "module."), "model.")
        module = build_fomo_encoder(self.arch)
        own = module.state_dict()
        # rs-embed loads non-strictly: keys the encoder does not have are dropped; every encoder key must be there
        load_strict(module, {k: v for k, v in state.items() if k in own}, model=self.name, path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        """``(B, 12, H, W)`` DN -> no data 0, clipped, normalised, padded square, resized to ``image_size``."""
        import torch

        from rs_embed_dask.models.vit import check_channels, pad_to_square, resize_square

        check_channels(self.name, x, BANDS)
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0)
        if self.normalization != "none":
            x = x / 10000.0
        if self.normalization == "per_tile_minmax":
            lo = x.amin(dim=(-2, -1), keepdim=True)
            hi = x.amax(dim=(-2, -1), keepdim=True)
            x = (x - lo) / (hi - lo).clamp(min=1e-6)
        s = self.arch.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = resize_square(pad_to_square(x), s, mode="bilinear", antialias=False)
        return x

    def forward_tokens(self, x: Any) -> Any:
        """Final-LayerNorm tokens ``(B, 12 * g * g, D)``, band-major."""
        import torch

        keys = torch.tensor(self.s2_keys, dtype=torch.long, device=x.device)
        return self.module(x, keys)

    def forward_grid(self, x: Any) -> Any:
        tokens = self.forward_tokens(x)
        b, _, d = tokens.shape
        g = self.arch.grid_side
        return tokens.reshape(b, len(BANDS), g, g, d).mean(dim=1).permute(0, 3, 1, 2)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        tokens = self.forward_tokens(x)
        return tokens.amax(dim=1) if pooling == "max" else tokens.mean(dim=1)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """The modality keys, normalisation and token layout of the forward pass."""
        g = self.arch.grid_side
        return {
            "spectral_keys": list(self.s2_keys),
            "normalization": self.normalization,
            "image_size": self.arch.image_size,
            "patch_size": self.arch.patch_size,
            "token_count": len(BANDS) * g * g,
            "grid_kind": "spectral_mean_patch_tokens",
        }
