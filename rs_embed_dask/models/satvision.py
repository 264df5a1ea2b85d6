"""``satvision``: SatVision-TOA, a SwinV2 giant over 14 MODIS top-of-atmosphere channels.

The model of rs-embed 0.3.1's ``onthefly_satvision_toa`` (alias
``satvision_toa``): the checkpoint ``mp_rank_00_model_states.pt`` of
``nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128``
(a DeepSpeed file ``{"module": {"encoder.<key>": ..., "decoder.<key>": ...}}``
of the SimMIM pretraining; the ``decoder.*`` keys are dropped, the encoder
loads strictly into :class:`~rs_embed_dask.models.satvision_encoder.SatVisionSwinV2`).

Input: the sensor ``MODIS/061/MOD021KM`` with bands ``1, 2, 3, 26, 6, 20, 7,
27, 28, 29, 31, 32, 33, 34`` at 1000 m (``cloudy_pct=100``, ``mosaic``),
which every provider serves as rs-embed's proxy
(:mod:`rs_embed_dask.providers.composed`): ``MOD09GA`` surface reflectance
for the six reflective bands and ``MOD21A1D`` ``LST_1KM`` for the eight
emissive ones.  Right after the fetch (:meth:`SatVisionEmbedder.fetch_postprocess`)
the proxy is scaled as rs-embed scales it: reflectance ``DN / 10000``, LST
to kelvin (``x 0.02`` when its largest magnitude exceeds 1000), then per
emissive band ``(K - min) / (max - min)``, everything clipped to [0, 1].

The model then normalises each input (``norm`` ``"auto"``: an input within
[-0.1, 1.5] is only clipped to [0, 1], a fetched input always is; otherwise
reflective channels ``/ 100`` and emissive ones min-max scaled) and resizes
it bilinearly to 128 x 128.

Outputs: pooled is the model's own ``forward_features`` (final LayerNorm,
mean over the last stage's tokens; 4096-d), whatever the pooling asked; the
grid is the last stage's token map before the final norm, ``(4096, 4, 4)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SensorSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import TorchEmbedder
from rs_embed_dask.models.vit import HubCheckpoint

__all__ = [
    "BANDS",
    "COLLECTION",
    "EMISSIVE_MAXS",
    "EMISSIVE_MINS",
    "SatVisionEmbedder",
    "normalize_toa",
    "scale_proxy",
]

COLLECTION = "MODIS/061/MOD021KM"
BANDS = ("1", "2", "3", "26", "6", "20", "7", "27", "28", "29", "31", "32", "33", "34")
REFLECTANCE_IDX = (0, 1, 2, 3, 4, 6)
EMISSIVE_IDX = (5, 7, 8, 9, 10, 11, 12, 13)
EMISSIVE_MINS = (223.1222, 178.9174, 204.3739, 204.7677, 194.8686, 202.1759, 201.3823, 203.3537)
EMISSIVE_MAXS = (352.7182, 261.2920, 282.5529, 319.0373, 295.0209, 324.0677, 321.5254, 285.9848)
REFLECTANCE_DIVISOR = 100.0
IMAGE_SIZE = 128
NORM_MODES = ("auto", "raw", "unit")
HF_REPO = "nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128"
HF_FILE = "mp_rank_00_model_states.pt"
ENV_VAR = "RS_EMBED_SATVISION_TOA_CKPT"
# the names rs-embed looks for in a checkpoint folder, then the published file
FOLDER_FILES = (
    "model_best.pth",
    "pytorch_model.bin",
    "model.pth",
    "checkpoint.pth",
    "checkpoint.ckpt",
    HF_FILE,
)
ENV_PREFIX = "RS_EMBED_SATVISION_TOA_"


def _env_floats(name: str, default: Sequence[float]) -> tuple[float, ...]:
    raw = os.environ.get(ENV_PREFIX + name)
    if raw is None:
        return tuple(float(v) for v in default)
    try:
        vals = tuple(float(t) for t in raw.split(",") if t.strip())
    except ValueError:
        raise ModelError(f"${ENV_PREFIX}{name} must be comma-separated numbers; got {raw!r}") from None
    if not vals:
        raise ModelError(f"${ENV_PREFIX}{name} must hold at least one number.")
    return vals


def _indices(idx: Sequence[float], n: int) -> tuple[int, ...]:
    out: list[int] = []
    for i in idx:
        k = int(i) + n if int(i) < 0 else int(i)
        if 0 <= k < n and k not in out:
            out.append(k)
    return tuple(out)


def scale_proxy(data: np.ndarray) -> np.ndarray:
    """rs-embed's scaling of the fetched MODIS proxy ``(14, H, W)`` (raw DN) to [0, 1].

    Reflective channels (MOD09GA ``sur_refl``): ``clip(DN / 10000, 0, 1)``.
    Emissive channels (MOD21A1D ``LST_1KM``): kelvin (``x 0.02`` when the
    largest finite magnitude exceeds 1000), then ``clip((K - min) / (max - min), 0, 1)``
    with each band's calibration range.
    """
    x = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    out = np.empty_like(x)
    for i in REFLECTANCE_IDX:
        out[i] = np.clip(x[i] / 10000.0, 0.0, 1.0)
    lst = x[EMISSIVE_IDX[0]]
    if lst.size and float(np.max(np.abs(lst))) > 1000.0:
        lst = lst * np.float32(0.02)
    for i, lo, hi in zip(EMISSIVE_IDX, EMISSIVE_MINS, EMISSIVE_MAXS, strict=True):
        out[i] = np.clip((lst - float(lo)) / (float(hi) - float(lo)), 0.0, 1.0)
    return out.astype(np.float32, copy=False)


def normalize_toa(
    x: Any,
    *,
    mode: str,
    reflectance_idx: Sequence[int] = REFLECTANCE_IDX,
    emissive_idx: Sequence[int] = EMISSIVE_IDX,
    divisor: float = REFLECTANCE_DIVISOR,
    mins: Sequence[float] = EMISSIVE_MINS,
    maxs: Sequence[float] = EMISSIVE_MAXS,
) -> Any:
    """rs-embed's SatVision normalisation of a ``(B, C, H, W)`` tensor to [0, 1], per input.

    ``unit``: clip.  ``raw``: reflective (and unlisted) channels ``/ divisor``,
    emissive ``(K - min) / (max - min)``, then clip.  ``auto``: ``unit`` for an
    input whose values lie in [-0.1, 1.5], else ``raw``.
    """
    import torch

    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "unit":
        return x.clamp(0.0, 1.0)
    c = int(x.shape[1])
    emis = _indices(emissive_idx, c)
    if len(emis) != len(mins) or len(emis) != len(maxs):
        raise ModelError(
            f"satvision emissive calibration: {len(emis)} emissive channels but {len(mins)} minimums "
            f"and {len(maxs)} maximums"
        )
    denom = torch.full((c,), float(divisor), dtype=x.dtype, device=x.device)
    shift = torch.zeros(c, dtype=x.dtype, device=x.device)
    for k, lo, hi in zip(emis, mins, maxs, strict=True):
        if hi <= lo:
            raise ModelError(f"satvision emissive calibration of channel {k}: max {hi} <= min {lo}")
        denom[k], shift[k] = float(hi) - float(lo), lo
    raw = ((x - shift.view(1, -1, 1, 1)) / denom.view(1, -1, 1, 1)).clamp(0.0, 1.0)
    if mode == "raw":
        return raw
    flat = x.reshape(x.shape[0], -1)
    unit = ((flat.amin(dim=1) >= -0.1) & (flat.amax(dim=1) <= 1.5)).view(-1, 1, 1, 1)
    return torch.where(unit, x.clamp(0.0, 1.0), raw)


class SatVisionEmbedder(TorchEmbedder):
    """SatVision-TOA embeddings of MODIS top-of-atmosphere inputs (14 channels, 1 km).

    ``model_config`` keys
    ---------------------
    weights : str
        Checkpoint file, or a folder holding one of rs-embed's names
        (``model_best.pth``, ``pytorch_model.bin``, ``model.pth``,
        ``checkpoint.pth``, ``checkpoint.ckpt``) or ``mp_rank_00_model_states.pt``
        (else ``$RS_EMBED_SATVISION_TOA_CKPT``, else the Hugging Face hub).
    norm : {"auto", "raw", "unit"}
        How user-given inputs are scaled (``$RS_EMBED_SATVISION_TOA_NORM``, default ``"auto"``);
        fetched inputs are always unit-scaled already, as in rs-embed.
    embed_dim : int; depths, num_heads : sequence of int
        For tests and smoke runs only: the smaller encoder the checkpoint holds
        (``describe()`` then states its dims; the load checks the checkpoint agrees).

    The architecture is read from the checkpoint's keys and shapes (the
    published one is the giant: embed 512, depths 2/2/42/2, heads
    16/32/64/128, window 8, patch 4, an extra norm every 6th block).
    """

    name = "satvision"
    requires = ("torch",)
    extra = "models"
    config_keys = frozenset({"weights", "norm", "embed_dim", "depths", "num_heads"})
    # float32 on every device, as rs-embed runs it: the cosine attention's logits reach x100 (logit_scale),
    # where bf16 rounding moves the softmax visibly; the giant is weight-bound, activations are small
    supports_autocast = False
    square_fetch = True
    # rs-embed's pooled vector is the model's own (forward_features), not a pooling of the grid
    roi_pooling = "model"
    bands: ClassVar[tuple[str, ...]] = BANDS

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        norm = self.model_config.get("norm", os.environ.get(ENV_PREFIX + "NORM", "auto"))
        norm = str(norm).strip().lower()
        if norm not in NORM_MODES:
            raise ModelError(
                f"satvision model_config['norm'] must be one of {list(NORM_MODES)}; got {norm!r}"
            )
        self.norm = norm
        self.divisor = _env_floats("REF_DIV", (REFLECTANCE_DIVISOR,))[0]
        if self.divisor <= 0:
            raise ModelError(f"${ENV_PREFIX}REF_DIV must be > 0; got {self.divisor}")
        self.reflectance_idx = tuple(int(v) for v in _env_floats("REFLECTANCE_IDXS", REFLECTANCE_IDX))
        self.emissive_idx = tuple(int(v) for v in _env_floats("EMISSIVE_IDXS", EMISSIVE_IDX))
        self.mins = _env_floats("EMISSIVE_MINS", EMISSIVE_MINS)
        self.maxs = _env_floats("EMISSIVE_MAXS", EMISSIVE_MAXS)
        repo = os.environ.get(ENV_PREFIX + "ID", HF_REPO).strip() or HF_REPO
        self.hub = HubCheckpoint(
            repo=repo,
            filename=HF_FILE,
            revision=None,
            env_var=ENV_VAR,
            fmt="DeepSpeed checkpoint {'module': {'encoder.<key>': ..., 'decoder.<key>': ...}} (SimMIM); "
            "the decoder keys are dropped, the encoder loads with strict=True",
            filenames=FOLDER_FILES,
        )
        self.arch = self._configured_arch()
        self._unit_input = False

    def _configured_arch(self) -> Any:
        """The giant, or the test-only smaller encoder of ``model_config``."""
        from dataclasses import replace

        from rs_embed_dask.models.satvision_arch import GIANT
        from rs_embed_dask.models.vit import check_int

        cfg = self.model_config
        changes: dict[str, Any] = {}
        dim = check_int(self.name, cfg, "embed_dim", 1)
        if dim:
            changes["embed_dim"] = dim
        for key in ("depths", "num_heads"):
            if key in cfg:
                val = cfg[key]
                ok = (
                    isinstance(val, (list, tuple))
                    and val
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in val)
                )
                if not ok:
                    raise ModelError(
                        f"satvision model_config[{key!r}] must be a list of non-negative integers; got {val!r}"
                    )
                changes[key] = tuple(int(v) for v in val)
        arch = replace(GIANT, **changes)
        if len(arch.depths) != len(arch.num_heads):
            raise ModelError(
                f"satvision model_config: depths {list(arch.depths)} and num_heads {list(arch.num_heads)} "
                "need one entry per stage"
            )
        n = len(arch.depths)
        return replace(arch, pretrained_window_sizes=(arch.pretrained_window_sizes + (0,) * n)[:n])

    # -- fetch ------------------------------------------------------------------------------
    @classmethod
    def fetch_postprocess(cls, data: np.ndarray, sensor: SensorSpec | None) -> np.ndarray:
        """The fetched MODIS proxy scaled to [0, 1] (:func:`scale_proxy`), as rs-embed's fetch returns it.

        Raises
        ------
        ModelError
            For any sensor but the default MODIS one (rs-embed fetches only that; give other
            inputs as arrays with ``get_embedding_from_data``).
        """
        if sensor is None or sensor.collection.strip().upper() != COLLECTION or tuple(sensor.bands) != BANDS:
            raise ModelError(
                "satvision fetches only its default MODIS sensor "
                f"({COLLECTION}, bands {list(BANDS)}; served from MOD09GA + MOD21A1D); for other "
                "collections or calibrated TOA arrays, pass the array with get_embedding_from_data."
            )
        return scale_proxy(data)

    def temporal_semantics(self, temporal: Any = None) -> str:
        """``"custom:satvision"``: rs-embed's satvision fetches its own input, shared with no other model."""
        return f"custom:{self.name}"

    # -- description --------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Inputs, proxy, normalisation, dims, outputs and weights, as rs-embed's ``describe()`` and more."""
        return {
            **self.describe_head(
                {"collection": COLLECTION, "bands": list(BANDS)},
                scale_m=1000,
                cloudy_pct=100,
                composite="mosaic",
                fill_value=0.0,
                model_id=self.hub.repo,
                in_chans=len(BANDS),
                image_size=IMAGE_SIZE,
                norm=self.norm,
                reflectance_indices=list(self.reflectance_idx),
                emissive_indices=list(self.emissive_idx),
                reflectance_divisor=self.divisor,
                emissive_mins=list(self.mins),
                emissive_maxs=list(self.maxs),
            ),
            "embedding_dim": self.arch.num_features,
            "grid_dim": self.arch.num_features,
            "grid": f"({self.arch.num_features}, {self.arch.grid_side}, {self.arch.grid_side}) at 128 px: the last "
            "SwinV2 stage (patch 4, three 2x merges), before the final norm; north up",
            "pooled": "the model's forward_features: final LayerNorm, mean over the last stage's tokens "
            "(mean or max pooling alike); a rectangular ROI keeps its fetched square's vector",
            "temporal": "single composite (mosaic, latest scene on top)",
            "input_size": IMAGE_SIZE,
            "proxy": {
                "reflective": "MODIS/061/MOD09GA sur_refl_b01, b02, b03, b04, b06, b07 -> bands 1, 2, 3, 26, 6, 7",
                "emissive": "MODIS/061/MOD21A1D LST_1KM -> bands 20, 27, 28, 29, 31, 32, 33, 34",
            },
            "normalization": (
                "fetched: reflectance DN/10000, LST x0.02 K (when > 1000) then (K - min) / (max - min) per emissive "
                "band, clipped to [0, 1]; user arrays per norm ('auto': clip when within [-0.1, 1.5], else "
                "reflectance / 100 and emissive min-max); then bilinear resize to 128"
            ),
            "side_inputs": {},
            "model_config": {"norm": self.norm},
            "variants": ["giant"],
            "weights": self.hub.describe(),
            "extra": self.extra,
        }

    def resolve_input_size(self) -> int | None:
        """128: inputs are resized (or tiled by ``input_prep``) to the model's fixed side."""
        return IMAGE_SIZE

    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        """Peak forward bytes of one input: its copies at native and model size, and the widest stage.

        A stage holds its tokens about nine times over (residual, norm, q/k/v,
        attention output, the 4x MLP hidden layer) plus the attention matrices
        of its windows; the giant's stage 0 (1024 tokens x 512) dominates.
        Weights are not counted (they are per worker, not per input).
        """
        from rs_embed_dask.models.satvision_arch import GIANT

        arch = self.arch or GIANT
        c, h, w = (int(s) for s in tuple(input_shape)[-3:])
        peak = 0
        for i, depth in enumerate(arch.depths):
            if not depth:
                continue
            side = arch.img_size // arch.patch_size // 2**i
            n, d = side * side, arch.embed_dim * 2**i
            ws = min(side, arch.window_size)
            peak = max(peak, n * d * (5 + int(arch.mlp_ratio)) + arch.num_heads[i] * n * ws * ws)
        return 4 * (2 * c * h * w + 2 * c * arch.img_size**2 + 2 * peak)

    # -- model ----------------------------------------------------------------------------------
    def build_module(self) -> Any:
        from rs_embed_dask.models.satvision_encoder import (
            SatVisionSwinV2,
            arch_from_state,
            buffers_of,
            split_keys,
        )
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import strip_prefix

        path = self.hub.find(self.name, self.model_config)
        state = _read_checkpoint(path)
        state = strip_prefix(state, "module.", "model.")
        if any(k.startswith("encoder.") for k in state):
            # the SimMIM wrapper: encoder.* is the backbone, decoder.* the pixel head (dropped)
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        keys, _decoder = split_keys(list(state))
        state = {k: state[k] for k in keys}
        try:
            found = arch_from_state(state)
        except ValueError as exc:
            raise ModelError(
                f"The checkpoint {str(path)!r} is not a SatVision SwinV2 encoder: {exc}"
            ) from None
        if any(k in self.model_config for k in ("embed_dim", "depths", "num_heads")) and (
            (found.embed_dim, found.depths, found.num_heads)
            != (self.arch.embed_dim, self.arch.depths, self.arch.num_heads)
        ):
            raise ModelError(
                f"The checkpoint {str(path)!r} holds a SatVision encoder of embed_dim {found.embed_dim}, depths "
                f"{list(found.depths)}, num_heads {list(found.num_heads)}; model_config asks for "
                f"{self.arch.embed_dim}, {list(self.arch.depths)}, {list(self.arch.num_heads)}."
            )
        self.arch = found
        module = SatVisionSwinV2(self.arch)
        # position tables and shift masks are derived from the architecture; a file saved without them gets ours
        for k, v in buffers_of(module).items():
            state.setdefault(k, v)
        load_strict(module, state, model=self.name, path=path)
        return module

    def preprocess(self, x: Any) -> Any:
        """Raw ``(B, 14, H, W)`` -> normalised [0, 1] and resized bilinearly to 128 x 128."""
        import torch.nn.functional as F

        if x.ndim != 4 or int(x.shape[1]) != len(BANDS):
            raise ModelError(
                f"satvision expects (B, {len(BANDS)}, H, W) inputs (MODIS bands {list(BANDS)}); got {tuple(x.shape)}"
            )
        x = normalize_toa(
            x, mode="unit" if self._unit_input else self.norm, reflectance_idx=self.reflectance_idx,
            emissive_idx=self.emissive_idx, divisor=self.divisor, mins=self.mins, maxs=self.maxs,
        )  # fmt: skip
        if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        return x

    def forward_grid(self, x: Any) -> Any:
        return self.module.stage_maps(x)

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        return self.module.pooled(x)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        return {
            "hf_id": self.hub.repo,
            "in_chans": len(BANDS),
            "image_size": IMAGE_SIZE,
            "norm_mode": self.norm,
            "norm_mode_effective": "unit" if self._unit_input else self.norm,
            "pooled_source": "model_pooled",
            "arch": {"embed_dim": self.arch.embed_dim, "depths": list(self.arch.depths),
                     "num_heads": list(self.arch.num_heads), "window_size": self.arch.window_size,
                     "patch_size": self.arch.patch_size, "norm_period": self.arch.norm_period},
        }  # fmt: skip

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed inputs, fetched ones (already unit-scaled) apart from user arrays (scaled per ``norm``)."""

        def fetched(x: np.ndarray, c: Mapping[str, Any] | None) -> bool:
            meta = (c or {}).get("fetch_meta") or {}
            return isinstance(meta, Mapping) and bool(meta.get("composed_from"))

        return self.embed_in_groups(
            inputs, output=output, contexts=contexts, key_of=fetched, state="_unit_input", idle=False
        )


def _read_checkpoint(path: Any) -> dict[str, Any]:
    """The checkpoint's tensors: safely (``weights_only``) when possible, else as rs-embed reads it.

    DeepSpeed files can pickle training objects besides the tensors; rs-embed
    loads them with ``weights_only=False``.  This does the same, with a
    warning, only when the safe load fails.
    """
    from rs_embed_dask.models.weights import load_state_dict

    try:
        return load_state_dict(path)
    except ModelError as exc:
        import pickle

        if not isinstance(exc.__cause__, pickle.UnpicklingError):
            raise
    import torch

    warnings.warn(
        f"satvision: {str(path)!r} holds pickled objects besides tensors; loading it with "
        "torch.load(weights_only=False), as rs-embed does. Only load checkpoints you trust.",
        RuntimeWarning,
        stacklevel=3,
    )
    obj = torch.load(str(path), map_location="cpu", weights_only=False)
    for k in ("module", "state_dict", "model_state_dict", "model", "net", "weights"):
        if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping):
            obj = obj[k]
            break
    if not isinstance(obj, Mapping):
        raise ModelError(f"The checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)
