"""``agrifm``: AgriFM (HKU), a Video Swin Transformer over Sentinel-2 time series for crop mapping.

The model of rs-embed 0.3.1's ``onthefly_agrifm`` (checkpoint ``AgriFM.pth``
from the authors' server, see :mod:`rs_embed_dask.models.agrifm_weights`),
with our own encoder (:mod:`rs_embed_dask.models.agrifm_encoder`, no
mmengine / mmseg) loading the checkpoint's Sentinel-2 encoder keys with
``strict=True``:

* input: Sentinel-2 L2A (``COPERNICUS/S2_SR_HARMONIZED``) digital numbers of
  ``B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12`` at 10 m, as a ``(T, 10, H,
  W)`` series of ``T = 8`` equal time bins of the request window, one
  composite each (rs-embed's ``temporal_mode="multi"``, ``multi:8``).  An
  empty bin holds what the provider fills it with (rs-embed's rule: the
  whole-window composite); every frame is kept, and the meta counts the
  distinct ones.  A single ``(10, H, W)`` composite is repeated to ``T``
  frames, with a warning, as rs-embed does.
* preprocessing: no data -> 0, ``clip(DN, 0, 10000)``, then AgriFM's
  per-band z-score (``normalization="agrifm_stats"``; ``"unit_scale"``:
  ``DN / 10000``; ``"none"``), then each frame centre-padded to a square
  (reflect, else edge) and resized bilinearly to ``image_size`` (224).
* output: the last stage's normed feature map with its time steps stacked
  into channels, ``(1024 * T', 14, 14)`` at 224 px (``T' = 1`` for up to 32
  frames); pooled = the grid's mean (or max).  A rectangular BBox is fetched
  as a square and the grid cut back to the ROI.

rs-embed's environment variables ``RS_EMBED_AGRIFM_FRAMES``,
``RS_EMBED_AGRIFM_IMG`` and ``RS_EMBED_AGRIFM_NORM`` give the defaults of
``n_frames``, ``image_size`` and ``normalization``; ``model_config`` wins.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import S2_SR, TorchEmbedder
from rs_embed_dask.models.series import series_batch
from rs_embed_dask.models.vit import check_int

__all__ = [
    "S2_BANDS",
    "S2_MEAN",
    "S2_STD",
    "AgriFMArch",
    "AgriFMEmbedder",
    "encoder_state",
    "normalization_of",
]

S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: AgriFM's Sentinel-2 statistics (DN), from its official configuration.
S2_MEAN = (4179.192015478227, 4065.9106675194444, 3957.274910960156, 5207.452475253116, 4327.12234687,
           4873.16102239, 5049.1637925, 5111.07806856, 3056.86349163, 2490.9675032)  # fmt: skip
S2_STD = (4041.5212325268735, 3691.003119315892, 3629.331318356375, 2973.5178530908756, 3569.73343885,
          3085.9151435, 2937.56005119, 2806.04462314, 1808.30013156, 1694.20220774)  # fmt: skip
IMAGE_SIZE = 224
N_FRAMES = 8
FRAMES_ENV = "RS_EMBED_AGRIFM_FRAMES"
IMG_ENV = "RS_EMBED_AGRIFM_IMG"
NORM_ENV = "RS_EMBED_AGRIFM_NORM"
#: accepted names (rs-embed's) -> canonical normalisation
_NORMS = {
    "agrifm_stats": "agrifm_stats", "zscore": "agrifm_stats", "stats": "agrifm_stats",
    "unit_scale": "unit_scale", "unit": "unit_scale", "reflectance": "unit_scale",
    "none": "none", "raw": "none", "off": "none",
}  # fmt: skip


@dataclass(frozen=True)
class AgriFMArch:
    """Architecture of the encoder (the defaults are the published model's).

    Attributes
    ----------
    embed_dim : int
        Width of the first stage (doubled by every merge: 128 -> 1024).
    depths, num_heads : tuple of int
        Blocks and attention heads per stage.
    window_size : (int, int, int)
        Attention window in (time, rows, columns) tokens.
    patch_size : (int, int, int)
        Patch of the embedding convolution in (frames, pixels, pixels).
    in_chans : int
        Input bands.
    mlp_ratio : float
        MLP width over the block width.
    mean_frame_down : bool
        Merges average pairs of time steps (AgriFM) instead of keeping every second.
    downsample_steps : tuple of (int, int, int)
        (time, rows, columns) strides of each stage's merge.
    """

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: tuple[int, int, int] = (8, 7, 7)
    patch_size: tuple[int, int, int] = (4, 2, 2)
    in_chans: int = 10
    mlp_ratio: float = 4.0
    mean_frame_down: bool = True
    downsample_steps: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))

    @property
    def out_dim(self) -> int:
        """Channels of the last stage."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def stride(self) -> int:
        """Input pixels per output cell (16 px: 2 from the patch, 2 per merge)."""
        s = self.patch_size[1]
        for _, sh, _ in self.downsample_steps[: len(self.depths) - 1]:
            s *= sh
        return s


def normalization_of(value: Any) -> str:
    """rs-embed's normalisation name (or alias) -> ``agrifm_stats``, ``unit_scale`` or ``none``."""
    key = str(value).strip().lower()
    if key not in _NORMS:
        raise ModelError(
            f"agrifm model_config 'normalization' must be one of ['agrifm_stats', 'unit_scale', 'none'] "
            f"(or rs-embed's aliases {sorted(set(_NORMS) - {'agrifm_stats', 'unit_scale', 'none'})}); got {value!r}"
        )
    return _NORMS[key]


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = str(os.environ.get(name, "") or "").strip()
    if not raw:
        return default
    try:
        return max(minimum, int(raw))
    except ValueError as exc:
        raise ModelError(f"${name} must be an integer; got {raw!r}") from exc


def _int_tuple(cfg: Mapping[str, Any], key: str, n: int | None, default: tuple[int, ...]) -> tuple[int, ...]:
    value = cfg.get(key)
    if value is None:
        return default
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                  for v in value)  # fmt: skip
    if not ok or (n is not None and len(value) != n) or not value:
        size = f"{n} " if n is not None else ""
        raise ModelError(
            f"agrifm model_config {key!r} must be a list of {size}positive integers; got {value!r}"
        )
    return tuple(int(v) for v in value)


def encoder_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The Sentinel-2 encoder's keys of an AgriFM checkpoint, renamed as the official loader renames them.

    ``module.`` is stripped and ``S2_patch_emd`` becomes ``patch_emd`` (the
    loader's ``revise_keys`` for 10-band inputs); only ``patch_emd.*`` and
    ``backbone.*`` are kept: the patch embeddings of the other sources
    (``HLSL30_patch_emd``, ``Modis_patch_emd``) and any neck or head are
    dropped, as rs-embed's non-strict load ignores them.
    """
    out: dict[str, Any] = {}
    for k, v in state.items():
        key = k[len("module.") :] if k.startswith("module.") else k
        key = key.replace("S2_patch_emd", "patch_emd")
        if key.startswith(("patch_emd.", "backbone.")):
            out[key] = v
    return out


class AgriFMEmbedder(TorchEmbedder):
    """AgriFM embeddings of Sentinel-2 time series ``(T, 10, H, W)``.

    ``model_config`` keys
    ---------------------
    weights : str
        ``AgriFM.pth``, or a folder holding it (else ``$RS_EMBED_AGRIFM_CKPT``,
        the download cache, the URL: :mod:`rs_embed_dask.models.agrifm_weights`).
    n_frames : int
        Time bins fetched (default 8, ``$RS_EMBED_AGRIFM_FRAMES``).
    image_size : int
        Side the frames are resized to (default 224, ``$RS_EMBED_AGRIFM_IMG``, at least 16).
    normalization : {"agrifm_stats", "unit_scale", "none"}
        Default ``"agrifm_stats"`` (``$RS_EMBED_AGRIFM_NORM``).
    embed_dim, depths, num_heads, window_size : int or list of int
        For tests only: a smaller encoder than the published one.
    """

    name = "agrifm"
    extra = None  # the encoder is written here: torch (a base dependency) is all it needs
    requires = ("torch",)
    n_frames: ClassVar[int | None] = N_FRAMES
    supports_autocast = True
    # rs-embed's ``_requires_square_input``: a rectangular BBox is fetched as a square, the grid cut back
    square_fetch = True
    config_keys = frozenset(
        {
            "weights",
            "n_frames",
            "image_size",
            "normalization",
            "embed_dim",
            "depths",
            "num_heads",
            "window_size",
        }
    )

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        cfg = self.model_config
        self.frames = check_int(self.name, cfg, "n_frames", 1) or _env_int(FRAMES_ENV, N_FRAMES, 1)
        size = check_int(self.name, cfg, "image_size", 16) or _env_int(IMG_ENV, IMAGE_SIZE, 16)
        self.image_size = int(size)
        norm = cfg.get("normalization")
        self.normalization = normalization_of(
            norm if norm is not None else os.environ.get(NORM_ENV) or "agrifm_stats"
        )
        base = AgriFMArch()
        depths = _int_tuple(cfg, "depths", 4, base.depths)
        self.arch = AgriFMArch(
            embed_dim=check_int(self.name, cfg, "embed_dim", 1) or base.embed_dim,
            depths=depths,
            num_heads=_int_tuple(cfg, "num_heads", 4, base.num_heads),
            window_size=_int_tuple(cfg, "window_size", 3, base.window_size),  # type: ignore[arg-type]
        )

    # -- time --------------------------------------------------------------------------
    def frame_count(self, temporal: Any = None) -> int | None:
        """``n_frames`` equal bins of every window (rs-embed's fixed ``T``)."""
        return self.frames

    def resolve_input_size(self) -> int | None:
        """The resize side (``image_size``), which ``input_prep`` tiles to."""
        return self.image_size

    # -- description ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Bands, frames, normalisation, dims, outputs and weights of this configuration."""
        from rs_embed_dask.models.agrifm_weights import checkpoint_sources

        dim = self.arch.out_dim * self._time_steps_plain()
        side = -(-self.image_size // self.arch.stride)
        norms = {
            "agrifm_stats": f"(clip(DN, 0, 10000) - mean) / std per band, mean {list(S2_MEAN)}, std {list(S2_STD)}",
            "unit_scale": "clip(DN, 0, 10000) / 10000",
            "none": "clip(DN, 0, 10000)",
        }
        return {
            **self.describe_head(
                {"collection": S2_SR, "bands": list(S2_BANDS), "shape": f"[T={self.frames}, 10, H, W]"},
                image_size=self.image_size,
                n_frames=self.frames,
                norm_mode=self.normalization,
                auto_download_ckpt=checkpoint_sources()["auto_download"],
                default_ckpt_url=checkpoint_sources()["url"],
            ),
            "embedding_dim": dim,
            "grid": f"({dim}, {side}, {side}) at {self.image_size} px: the last Swin stage's normed map, its time "
            f"steps stacked per channel ({self.arch.out_dim} x T'={self._time_steps_plain()}); one cell per "
            f"{self.arch.stride} px",
            "pooled": "mean (or max) of the grid cells",
            "temporal": (
                f"multi:{self.frames}: {self.frames} equal time bins of the request window, one composite each; "
                "an empty bin keeps the provider's fill (the whole-window composite) and every frame is kept "
                "(meta: n_distinct_frames, n_backfilled_frames); a single (10, H, W) composite is repeated to "
                f"{self.frames} frames with a warning"
            ),
            "side_inputs": "none",
            "input_size": self.image_size,
            "preprocessing": f"no data -> 0, then the normalisation, then each frame centre-padded to a square "
            f"(reflect, else edge) and resized bilinearly to {self.image_size}",
            "normalization": norms[self.normalization],
            "model_config": {
                "n_frames": self.frames,
                "image_size": self.image_size,
                "normalization": self.normalization,
            },
            "architecture": {
                "patch_size": list(self.arch.patch_size),
                "embed_dim": self.arch.embed_dim,
                "depths": list(self.arch.depths),
                "num_heads": list(self.arch.num_heads),
                "window_size": list(self.arch.window_size),
                "mean_frame_down": self.arch.mean_frame_down,
            },
            "weights": {
                **checkpoint_sources(),
                "format": "torch checkpoint ({'state_dict': ...} or flat; 'module.' stripped, 'S2_patch_emd' -> "
                "'patch_emd'); the 'patch_emd.*' and 'backbone.*' keys load with strict=True, other sources' patch "
                "embeddings and heads are dropped",
            },
            "weights_env": "RS_EMBED_AGRIFM_CKPT",
            "extra": self.extra,
        }

    def _time_steps_plain(self) -> int:
        """``T'``, the output's time steps (1 up to 32 frames); the arithmetic of ``agrifm_encoder.output_frames``, without torch."""
        d = -(-self.frames // self.arch.patch_size[0])
        for step, _, _ in self.arch.downsample_steps[: len(self.arch.depths) - 1]:
            d = -(-d // max(1, step))
        return d

    # -- weights and module ------------------------------------------------------------
    def checkpoint(self) -> Path:
        """The checkpoint file (:func:`rs_embed_dask.models.agrifm_weights.find_checkpoint`)."""
        from rs_embed_dask.models.agrifm_weights import find_checkpoint

        return find_checkpoint(self.name, self.model_config)

    def build_module(self) -> Any:
        from rs_embed_dask.models.agrifm_encoder import AgriFMEncoder
        from rs_embed_dask.models.vit import load_strict
        from rs_embed_dask.models.weights import load_state_dict

        path = self.checkpoint()
        state = encoder_state(load_state_dict(path))
        if not any(k.startswith("patch_emd.") for k in state):
            raise ModelError(
                f"The checkpoint {str(path)!r} holds no Sentinel-2 patch embedding ('S2_patch_emd.*' or "
                "'patch_emd.*'); is it AgriFM.pth?"
            )
        module = AgriFMEncoder(self.arch)
        own = module.state_dict()
        for k, v in own.items():  # fixed index tables: rebuilt when a checkpoint leaves them out
            if k.endswith("relative_position_index") and k not in state:
                state[k] = v
        load_strict(module, state, model=self.name, path=path)
        return module

    # -- forward -----------------------------------------------------------------------
    def preprocess(self, x: Any) -> Any:
        """Raw ``(B, T, 10, H, W)`` DN (or ``(B, 10, H, W)``, repeated to ``n_frames``) -> normalised frames."""
        import torch

        expects = (
            f"agrifm expects (T, 10, H, W) inputs (or one (10, H, W) composite) of bands {list(S2_BANDS)}"
        )
        x = series_batch(x, len(S2_BANDS), expects, repeat=self.frames)
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 10000.0)
        if self.normalization == "unit_scale":
            return (x / 10000.0).clamp(0.0, 1.0)
        if self.normalization == "none":
            return x
        mean = torch.tensor(S2_MEAN, dtype=torch.float32, device=x.device).view(1, 1, -1, 1, 1)
        std = torch.tensor(S2_STD, dtype=torch.float32, device=x.device).clamp(min=1e-6).view(1, 1, -1, 1, 1)
        return torch.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)

    def forward_grid(self, x: Any) -> Any:
        from rs_embed_dask.models.vit import pad_to_square, resize_square

        b, t, c, h, w = x.shape
        s = self.image_size
        if (h, w) != (s, s):  # rs-embed's prepare_square: pad to a square, then a bilinear resize
            sq = pad_to_square(x)
            x = resize_square(sq.reshape(b * t, c, *sq.shape[-2:]), s, mode="bilinear", antialias=False)
            x = x.reshape(b, t, c, s, s)
        return self.module(x)

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed ``(T, 10, H, W)`` series; a ``(10, H, W)`` composite is repeated to ``n_frames`` with a warning."""
        if any(np.ndim(x) == 3 for x in inputs):
            warnings.warn(
                f"agrifm got a single (10, H, W) composite and repeats it to T={self.frames} frames; this changes "
                "the temporal semantics (fetch a time series for real frames).",
                UserWarning,
                stacklevel=2,
            )
        return super().embed_inputs(inputs, output=output, contexts=contexts)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """Frames fed to the encoder and how many of them are distinct (back-filled bins repeat a frame)."""
        arr = np.asarray(x)
        if arr.ndim == 3:
            n, distinct, mode = self.frames, 1, "chw_repeated_to_t"
        else:
            clean = np.clip(np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0),
                            0.0, 10000.0)  # fmt: skip
            kept: list[np.ndarray] = []
            for f in clean:
                if not any(np.array_equal(f, k) for k in kept):
                    kept.append(f)
            n, distinct, mode = int(arr.shape[0]), len(kept), "tchw"
        return {
            "n_frames": n,
            "n_frames_requested": n,
            "n_distinct_frames": distinct,
            "n_backfilled_frames": max(0, n - distinct),
            "input_mode": mode,
            "norm_mode": self.normalization,
            "image_size": self.image_size,
            "bands": list(S2_BANDS),
        }

    def memory_per_item(self, input_shape: Sequence[int], output: Any = None) -> int:
        """Peak forward bytes of one input: the frames at ``image_size`` and the first stage's activations.

        The first stage dominates: ``ceil(T / 4) * (S / 2)**2`` tokens of
        ``embed_dim`` channels, each block holding the residual stream, its
        normed and padded copies, ``qkv``, the attention output and the 4x
        wide MLP with the allocator's slack (16 widths) plus the window
        attention matrices (``heads * N`` per token, ``N`` tokens per window).
        For 8 frames at 224 px: 350 MB estimated; a CPU forward pass of the
        published architecture raised the process's resident memory by 360 MB.
        """
        shape = tuple(int(s) for s in input_shape)
        t = shape[0] if len(shape) == 4 else self.frames
        c, h, w = shape[-3], shape[-2], shape[-1]
        s = self.image_size
        a = self.arch
        tokens = -(-t // a.patch_size[0]) * (-(-s // a.patch_size[1])) * (-(-s // a.patch_size[2]))
        window = min(a.window_size[0], -(-t // a.patch_size[0])) * a.window_size[1] * a.window_size[2]
        per_token = 16 * a.embed_dim + 2 * a.num_heads[0] * window
        raw = t * c * h * w
        frames = 3 * t * c * s * s  # normalised, padded and resized copies
        return 4 * (raw + frames + tokens * per_token)
