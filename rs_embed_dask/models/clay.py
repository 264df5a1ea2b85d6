"""``clay``: Clay v1.5 (made-with-clay), a ViT conditioned on wavelengths, ground sample distance, time and place.

The architecture is ``terratorch``'s copy of Clay's encoder
(``terratorch.models.backbones.clay_v15.model.Encoder``, the original
``claymodel`` code): a DOFA-style dynamic patch embedding whose convolution
weights are generated from the band wavelengths, a 2-D sine-cosine position
encoding scaled by the ground sample distance (``dim - 8`` channels)
concatenated with the time and location encodings (8 channels), a class
token and a pre-norm transformer.  The published Lightning checkpoint
``made-with-clay/Clay`` ``v1.5/clay-v1.5.ckpt`` holds the whole ClayMAE
(``state_dict`` with ``model.encoder.*``, ``model.decoder.*``,
``model.teacher.*``); the ``model.encoder.*`` tensors load into the encoder
with ``strict=True``.  terratorch's module sets
``torch.set_float32_matmul_precision("medium")`` when imported; the previous
precision is restored right after the import.

Inputs and preprocessing (rs-embed's ``onthefly_clay.py``): Sentinel-2 L2A
``B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12`` at 10 m, raw digital numbers
normalised per band with Clay's ``metadata.yaml`` statistics ``(DN - mean) /
std`` (no clipping), an input whose values all lie in ``[0, 2]`` is refused
as already normalised; non-square inputs are centre-padded to a square
(reflect, else edge), then resized bilinearly to 256 (patch 8: 32 x 32
tokens).  Side inputs, per input, from its embedding context:

* ``time``: ``[sin w, cos w, sin h, cos h]`` with ``w = iso_week * 2 pi / 52``
  of the midpoint of the time window (a year: 1 July) and ``h = 0``;
* ``latlon``: ``[sin lat, cos lat, sin lon, cos lon]`` of the ROI centre;
* ``gsd``: the fetch scale in metres (``sensor.scale_m``).

Without a context (arrays embedded directly), time and location are zeros
(Clay's convention for unknown metadata) and the meta records ``None``.
Grid = the patch tokens ``(D, 32, 32)`` after the final LayerNorm; pooled =
the class token (Clay's embedding), for ``"mean"`` and ``"max"`` alike, as
in rs-embed.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, cast

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.torch_globals import kept_torch_globals
from rs_embed_dask.models.vit import HubCheckpoint, check_choice, check_int

__all__ = ["BANDS", "MODEL_SIZES", "ClayEmbedder", "latlon_encoding", "time_encoding"]

#: Clay's Sentinel-2 L2A bands (blue .. swir22) as Earth Engine names
BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
# Clay v1.5 metadata.yaml, sentinel-2-l2a: mean, std (DN) and central wavelength (um) per band
_STATS: dict[str, tuple[float, float, float]] = {
    "B2": (1105.0, 1809.0, 0.493), "B3": (1355.0, 1757.0, 0.56), "B4": (1552.0, 1888.0, 0.665),
    "B5": (1887.0, 1870.0, 0.704), "B6": (2422.0, 1732.0, 0.74), "B7": (2630.0, 1697.0, 0.783),
    "B8": (2743.0, 1742.0, 0.842), "B8A": (2785.0, 1648.0, 0.865), "B11": (2388.0, 1470.0, 1.61),
    "B12": (1835.0, 1379.0, 2.19),
}  # fmt: skip
#: encoder hyper-parameters per ``model_size`` (Clay's ``clay_mae_*`` factories)
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 192, "depth": 6, "heads": 4, "dim_head": 48, "mlp_ratio": 2},
    "small": {"dim": 384, "depth": 6, "heads": 6, "dim_head": 64, "mlp_ratio": 2},
    "base": {"dim": 768, "depth": 12, "heads": 12, "dim_head": 64, "mlp_ratio": 4},
    "large": {"dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "mlp_ratio": 4},
}
PATCH = 8
IMAGE_SIZE = 256
CHECKPOINT = HubCheckpoint(
    repo="made-with-clay/Clay",
    filename="v1.5/clay-v1.5.ckpt",
    revision=None,  # rs-embed follows main
    env_var="RS_EMBED_CLAY_WEIGHTS",
    fmt="Clay Lightning checkpoint (torch.load weights_only=True): the 'model.encoder.*' tensors of "
    "'state_dict'; decoder and teacher keys are left out",
    filenames=("clay-v1.5.ckpt",),
)


def time_encoding(day: date) -> np.ndarray:
    """``[sin w, cos w, sin h, cos h]``: ISO week ``w`` of ``day`` as ``week * 2 pi / 52``, hour 0."""
    week = day.isocalendar()[1] * 2 * math.pi / 52
    return np.array([math.sin(week), math.cos(week), 0.0, 1.0], dtype=np.float32)


def latlon_encoding(lat: float, lon: float) -> np.ndarray:
    """``[sin lat, cos lat, sin lon, cos lon]`` (radians)."""
    la, lo = math.radians(float(lat)), math.radians(float(lon))
    return np.array([math.sin(la), math.cos(la), math.sin(lo), math.cos(lo)], dtype=np.float32)


def window_midpoint(temporal: Any) -> date | None:
    """The day rs-embed encodes: the midpoint of a range (its date), 1 July of a year; ``None`` without one."""
    if temporal is None:
        return None
    if getattr(temporal, "mode", None) == "year":
        return date(int(temporal.year), 7, 1)
    start, end = temporal.date_range()
    return start + timedelta(seconds=(end - start).total_seconds() / 2)


def _import_encoder() -> Any:
    """The Clay v1.5 ``Encoder`` of terratorch, undoing the global settings its module changes on import."""
    try:
        with kept_torch_globals():
            encoder = importlib.import_module("terratorch.models.backbones.clay_v15.model").Encoder
    except ImportError as exc:
        raise ModelError(
            f"Model 'clay' needs terratorch's Clay v1.5 encoder ({exc!r}). "
            "Install it with: pip install 'rs-embed-dask[clay]'"
        ) from exc
    return encoder


class ClayEmbedder(TorchEmbedder):
    """Clay v1.5 embeddings of Sentinel-2 L2A, conditioned on wavelengths, GSD, time and location.

    ``model_config`` keys
    ---------------------
    model_size : {"tiny", "small", "base", "large"}
        Encoder size (default ``"large"``, the published v1.5 checkpoint; the
        others need a checkpoint of that size).
    weights : str
        Checkpoint file, or a folder holding ``clay-v1.5.ckpt`` (else
        ``$RS_EMBED_CLAY_WEIGHTS``, else the Hugging Face hub).
    bands : list of str
        A subset of Clay's ten Sentinel-2 bands (default all ten, in order).
    image_size : int
        Backbone input, a multiple of 8 (default 256).
    depth : int
        For tests and smoke runs only: fewer transformer layers.
    """

    name = "clay"
    hub = CHECKPOINT  # where the weights lookups (preflight, `rs-embed-dask models`) find the file
    requires = ("torch", "einops", "terratorch")
    extra = "clay"
    requires_georef = True
    square_fetch = True  # rs-embed fetches rectangles as squares and crops the grid back
    supports_autocast = True
    input_size = IMAGE_SIZE
    config_keys = frozenset({"model_size", "weights", "bands", "image_size", "depth"})

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.model_size = check_choice(self.name, cfg, "model_size", tuple(MODEL_SIZES), "large")
        self.arch = dict(MODEL_SIZES[self.model_size])
        self.arch["depth"] = check_int(self.name, cfg, "depth", 1) or self.arch["depth"]
        self.image_size = check_int(self.name, cfg, "image_size", PATCH) or IMAGE_SIZE
        if self.image_size % PATCH:
            raise ModelError(
                f"clay model_config 'image_size' must be a multiple of {PATCH}; got {self.image_size}"
            )
        bands = cfg.get("bands", BANDS)
        if isinstance(bands, str):
            bands = [b.strip() for b in bands.split(",") if b.strip()]
        unknown = [b for b in bands if b not in _STATS]
        if unknown or not bands or len(set(bands)) != len(bands):
            raise ModelError(
                f"clay model_config 'bands' must be distinct bands among {list(BANDS)} (Clay's statistics "
                f"and wavelengths are defined for these only); got {bands!r}"
            )
        self.bands = tuple(str(b) for b in bands)
        self.mean = [_STATS[b][0] for b in self.bands]
        self.std = [max(_STATS[b][1], 1e-6) for b in self.bands]
        self.wavelengths = [_STATS[b][2] for b in self.bands]

    @classmethod
    def check_available(cls) -> None:
        """The base check, with torch's float32 matmul precision kept: importing terratorch changes it."""
        with kept_torch_globals():
            super().check_available()

    @property
    def embed_dim(self) -> int:
        """Width of the tokens and of the class token."""
        return int(self.arch["dim"])

    def resolve_input_size(self) -> int | None:
        """The configured backbone input, which ``input_prep`` tiles to."""
        return self.image_size

    def describe(self) -> dict[str, Any]:
        """Bands, wavelengths, scale, dims, side inputs, outputs and weights of this configuration."""
        g = self.image_size // PATCH
        inputs = {"collection": S2_SR, "bands": list(self.bands), "wavelengths_um": list(self.wavelengths)}
        return {
            **self.describe_head(
                inputs, image_size=self.image_size, model_size=self.model_size, patch_size=PATCH
            ),
            "embedding_dim": self.embed_dim,
            "grid": f"({self.embed_dim}, {g}, {g}) patch tokens (patch {PATCH}) after the final LayerNorm, north up",
            "grid_semantics": "vit_patch_tokens",
            "pooled": "the class token (Clay's embedding), whatever the pooling",
            "temporal": "single composite",
            "input_size": self.image_size,
            "normalization": f"(DN - mean) / std per band, mean {self.mean} std {self.std}; centre pad to a "
            f"square (reflect, else edge); bilinear resize to {self.image_size}",
            "side_inputs": {
                "time": "[sin, cos] of ISO week * 2 pi / 52 of the window midpoint, [sin, cos] of hour 0",
                "latlon": "[sin lat, cos lat, sin lon, cos lon] of the ROI centre",
                "gsd": "the fetch scale in metres (sensor.scale_m)",
                "waves": "the bands' central wavelengths (um), from Clay's metadata",
            },
            "model_config": {
                "model_size": self.model_size,
                "bands": list(self.bands),
                "image_size": self.image_size,
            },
            "variants": sorted(MODEL_SIZES),
            "weights": CHECKPOINT.describe(),
            "extra": self.extra,
        }

    # -- model ---------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict

        encoder_cls = _import_encoder()
        path = CHECKPOINT.find(self.name, self.model_config)
        state = load_state_dict(path)
        enc = {}
        for prefix in ("model.encoder.", "encoder."):
            enc = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if enc:
                break
        if not enc:
            raise ModelError(
                f"The checkpoint {str(path)!r} holds no Clay encoder weights (keys 'model.encoder.*')."
            )
        module = encoder_cls(mask_ratio=0.0, patch_size=PATCH, shuffle=False, **self.arch)
        load_strict(module, enc, model=f"{self.name}/{self.model_size}", path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        import torch

        from rs_embed_dask.models.vit import check_channels, pad_to_square, resize_square

        check_channels(self.name, x, self.bands)
        x = x.to(torch.float32)
        finite = torch.isfinite(x).flatten(1)
        lo = torch.where(finite, x.flatten(1), torch.inf).amin(dim=1)
        hi = torch.where(finite, x.flatten(1), -torch.inf).amax(dim=1)
        looks_unit = finite.any(dim=1) & (lo >= 0) & (hi <= 2)
        if bool(looks_unit.any()):
            i = int(torch.nonzero(looks_unit)[0])
            raise ModelError(
                f"clay input {i} appears already normalized (min={float(lo[i]):.4f}, max={float(hi[i]):.4f}); "
                "Clay expects raw Sentinel-2 L2A digital numbers (about 0..10000)."
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        return resize_square(pad_to_square(x), self.image_size, mode="bilinear", antialias=False)

    # -- side inputs and forward ------------------------------------------------------
    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """``time`` (4,), ``latlon`` (4,) and ``gsd`` () of one input (see the module docstring)."""
        from rs_embed_dask.models.vit import scale_m_of

        ctx = context or {}
        day = window_midpoint(ctx.get("temporal"))
        spatial = ctx.get("spatial")
        latlon = None
        if spatial is not None:
            lon, lat = spatial.to_wgs84().center
            latlon = latlon_encoding(lat, lon)
        return {
            "time": None if day is None else time_encoding(day),
            "latlon": latlon,
            "gsd": np.asarray(scale_m_of(context, 10.0), dtype=np.float32),
        }

    def _encode(self, x: Any, sides: Mapping[str, Any]) -> Any:
        """Encoder output ``(B, 1 + N, D)`` (class token first) for a model-ready batch."""
        import torch

        b, dev = x.shape[0], x.device
        time = sides.get("time")
        latlon = sides.get("latlon")
        gsd = sides.get("gsd")
        time = torch.zeros(b, 4, device=dev) if time is None else time.to(dev, torch.float32)
        latlon = torch.zeros(b, 4, device=dev) if latlon is None else latlon.to(dev, torch.float32)
        gsd = torch.full((b,), 10.0) if gsd is None else gsd.detach().to("cpu", torch.float32).reshape(b)
        waves = torch.tensor(self.wavelengths, dtype=torch.float32)
        out = torch.empty(0)
        for value in torch.unique(gsd):  # the encoder takes one GSD per call
            idx = torch.nonzero(gsd == value).flatten().to(dev)
            cube = {"pixels": x[idx], "time": time[idx], "latlon": latlon[idx], "gsd": value, "waves": waves}
            enc = self.module(cube)[0]
            if out.numel() == 0:
                out = enc.new_empty((b, *enc.shape[1:]))
            out[idx] = enc
        return out

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        from rs_embed_dask.models.vit import tokens_to_grid

        enc = self._encode(x, sides)
        if output.mode == "pooled":
            return enc[:, 0]
        g = self.image_size // PATCH
        return tokens_to_grid(enc[:, 1:], g, g)

    def forward_grid(self, x: Any) -> Any:
        return self.forward_with_sides(x, {}, OutputSpec.grid())

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self.forward_with_sides(x, {}, OutputSpec.pooled(cast(Any, pooling)))

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """The model size and the wavelengths the patch embedding was generated from."""
        return {"model_size": self.model_size, "wavelengths_um": list(self.wavelengths)}
