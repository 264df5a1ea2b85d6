"""AnySat's settings, frame dates and checkpoint lookup, as rs-embed 0.3.1 resolves them (``onthefly_anysat``).

Settings come from ``model_config`` first, then rs-embed's environment
variables, then rs-embed's defaults:

==========================  ==================================  ======================
``model_config`` key        environment variable                default
==========================  ==================================  ======================
``variant``                 ``RS_EMBED_ANYSAT_MODEL_SIZE``      ``"base"``
``image_size``              ``RS_EMBED_ANYSAT_IMG``             24
``n_frames``                ``RS_EMBED_ANYSAT_FRAMES``          8
``normalization``           ``RS_EMBED_ANYSAT_NORM``            ``"per_tile_zscore"``
``grid_feature_mode``       ``RS_EMBED_ANYSAT_GRID_MODE``       ``"dense"``
``pooled_source``           ``RS_EMBED_ANYSAT_POOLED_SOURCE``   ``"patch"``
``weights``                 ``RS_EMBED_ANYSAT_WEIGHTS``,        the Hugging Face hub
                            ``RS_EMBED_ANYSAT_CKPT``
==========================  ==================================  ======================

The checkpoint is ``models/AnySat.pth`` of ``g-astruc/AnySat``
(``RS_EMBED_ANYSAT_HF_REPO`` / ``RS_EMBED_ANYSAT_HF_FILE``); a copy that
rs-embed downloaded into its own cache (``RS_EMBED_ANYSAT_CACHE_DIR``, default
``~/.cache/rs_embed/anysat``) is used as it is.  Files from the hub or
``RS_EMBED_ANYSAT_CKPT`` smaller than ``RS_EMBED_ANYSAT_CKPT_MIN_BYTES``
(50 MiB) are refused, as rs-embed refuses them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.models.olmoearth_frames import equal_bins as split_window

__all__ = [
    "ENV",
    "ENV_VAR",
    "HF_FILE",
    "HF_REPO",
    "AnySatArch",
    "AnySatSettings",
    "doy0_sequence",
    "equal_bins",
    "find_checkpoint",
    "resolve_settings",
]

HF_REPO = "g-astruc/AnySat"
HF_FILE = "models/AnySat.pth"
#: This package's weights variable (a file, or a folder holding ``AnySat.pth``).
ENV_VAR = "RS_EMBED_ANYSAT_WEIGHTS"
#: rs-embed's environment variables, by setting.
ENV = {
    "variant": "RS_EMBED_ANYSAT_MODEL_SIZE",
    "image_size": "RS_EMBED_ANYSAT_IMG",
    "n_frames": "RS_EMBED_ANYSAT_FRAMES",
    "normalization": "RS_EMBED_ANYSAT_NORM",
    "grid_feature_mode": "RS_EMBED_ANYSAT_GRID_MODE",
    "pooled_source": "RS_EMBED_ANYSAT_POOLED_SOURCE",
    "ckpt": "RS_EMBED_ANYSAT_CKPT",
    "hf_repo": "RS_EMBED_ANYSAT_HF_REPO",
    "hf_file": "RS_EMBED_ANYSAT_HF_FILE",
    "cache_dir": "RS_EMBED_ANYSAT_CACHE_DIR",
    "min_bytes": "RS_EMBED_ANYSAT_CKPT_MIN_BYTES",
    "pretrained": "RS_EMBED_ANYSAT_PRETRAINED",
    "flash_attn": "RS_EMBED_ANYSAT_FLASH_ATTN",
}
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "rs_embed", "anysat")
DEFAULT_MIN_BYTES = 50 * 1024 * 1024

_VARIANTS = {"b": "base", "base": "base"}
_NORMS = {
    "none": "none", "off": "none", "raw": "none",
    "unit": "unit_scale", "unit_scale": "unit_scale", "reflectance": "unit_scale",
    "per_tile_zscore": "per_tile_zscore", "zscore": "per_tile_zscore", "tile_zscore": "per_tile_zscore",
}  # fmt: skip
_GRID_MODES = {
    "dense": "dense",
    "subpatch": "dense",
    "subpatches": "dense",
    "patch": "patch",
    "patches": "patch",
}
_POOLED_SOURCES = {"patch": "patch", "grid": "patch", "tile": "tile", "native": "tile", "model": "tile"}


@dataclass(frozen=True)
class AnySatSettings:
    """The resolved settings of one AnySat configuration (see the module docstring)."""

    variant: str
    image_size: int
    n_frames: int
    normalization: str
    grid_feature_mode: str
    pooled_source: str


def _setting(cfg: Mapping[str, Any], key: str, default: Any, env: Mapping[str, str]) -> tuple[Any, str]:
    """``(value, where it came from)``: ``model_config``, then rs-embed's variable, then the default."""
    if cfg.get(key) is not None:
        return cfg[key], f"model_config {key!r}"
    raw = env.get(ENV[key], "").strip()
    if raw:
        return raw, f"${ENV[key]}"
    return default, f"model_config {key!r}"


def _choice(
    cfg: Mapping[str, Any], key: str, table: Mapping[str, str], default: str, env: Mapping[str, str]
) -> str:
    value, where = _setting(cfg, key, default, env)
    resolved = table.get(str(value).strip().lower())
    if resolved is None:
        raise ModelError(f"anysat {where} must be one of {sorted(table)}; got {value!r}")
    return resolved


def _positive_int(cfg: Mapping[str, Any], key: str, default: int, env: Mapping[str, str]) -> int:
    value, where = _setting(cfg, key, default, env)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, (bool, float)) or number < 1:
        raise ModelError(f"anysat {where} must be a positive integer; got {value!r}")
    return number


def resolve_settings(cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> AnySatSettings:
    """The settings of ``model_config`` ``cfg`` over rs-embed's environment variables and defaults.

    Raises
    ------
    ModelError
        For a value outside the allowed ones (the message names the key or
        variable and lists them).
    """
    environ = os.environ if env is None else env
    return AnySatSettings(
        variant=_choice(cfg, "variant", _VARIANTS, "base", environ),
        image_size=_positive_int(cfg, "image_size", 24, environ),
        n_frames=_positive_int(cfg, "n_frames", 8, environ),
        normalization=_choice(cfg, "normalization", _NORMS, "per_tile_zscore", environ),
        grid_feature_mode=_choice(cfg, "grid_feature_mode", _GRID_MODES, "dense", environ),
        pooled_source=_choice(cfg, "pooled_source", _POOLED_SOURCES, "patch", environ),
    )


@dataclass(frozen=True)
class AnySatArch:
    """Widths of an AnySat encoder.

    Attributes
    ----------
    embed_dim : int
        Token width (768 for the released ``base``); a multiple of 32.
    depth : int
        Blocks of the spatial encoder and of the main ViT (6 for ``base``).
    num_heads : int
        Attention heads of both transformers (12 for ``base``).
    """

    embed_dim: int = 768
    depth: int = 6
    num_heads: int = 12


# -- frames ----------------------------------------------------------------------------------------
def equal_bins(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """rs-embed's ``split_date_range`` (:func:`~rs_embed_dask.models.olmoearth_frames.equal_bins`), for a window with ``start < end``."""
    if end <= start:
        raise ModelError(f"anysat needs a time window with start < end; got {start} .. {end}")
    return split_window(start, end, n)


def doy0_sequence(start: date, end: date, n_frames: int) -> list[int]:
    """Day of year (0 = 1 January, at most 364) of the midpoint of each of ``n_frames`` equal bins.

    The midpoint is ``a + (b - a) / 2`` (a half day rounds down), rs-embed's
    ``temporal_frame_midpoints``; a list shorter than ``n_frames`` repeats its
    last day, as rs-embed pads it.
    """
    days = []
    for a, b in equal_bins(start, end, max(1, n_frames)):
        t0 = datetime(a.year, a.month, a.day)
        mid = (t0 + (datetime(b.year, b.month, b.day) - t0) / 2).date()
        days.append(max(0, min(364, mid.timetuple().tm_yday - 1)))
    return (days + [days[-1]] * n_frames)[:n_frames]


# -- checkpoint ------------------------------------------------------------------------------------
def _min_bytes(env: Mapping[str, str]) -> int:
    raw = env.get(ENV["min_bytes"], "").strip()
    try:
        return int(raw) if raw else DEFAULT_MIN_BYTES
    except ValueError as exc:
        raise ModelError(f"${ENV['min_bytes']} must be a number of bytes; got {raw!r}") from exc


def _check_size(path: Path, source: str, env: Mapping[str, str]) -> Path:
    size, least = path.stat().st_size, _min_bytes(env)
    if size < least:
        raise ModelError(
            f"The AnySat checkpoint {str(path)!r} ({source}) holds {size} bytes, fewer than {least} "
            f"(${ENV['min_bytes']}): an incomplete download? The published file is about 500 MB."
        )
    return path


def hub_file(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(repository, file)`` of the checkpoint on the Hugging Face hub (rs-embed's variables, else the defaults)."""
    environ = os.environ if env is None else env
    repo = environ.get(ENV["hf_repo"], "").strip() or HF_REPO
    return repo, environ.get(ENV["hf_file"], "").strip() or HF_FILE


def find_checkpoint(model: str, cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Path:
    """The local ``AnySat.pth`` of ``model_config`` ``cfg``.

    Looked for in ``weights``, ``$RS_EMBED_ANYSAT_WEIGHTS``, ``$RS_EMBED_ANYSAT_CKPT``,
    rs-embed's download cache, then the Hugging Face cache or hub (offline lookups fail at once).

    Raises
    ------
    ModelError
        When no source has the file, or a hub / ``RS_EMBED_ANYSAT_CKPT`` file is too small.
    """
    from rs_embed_dask.models.weights import DOWNLOAD_PENDING, find_weights

    environ = os.environ if env is None else env
    repo, filename = hub_file(environ)
    names = [Path(filename).name, "AnySat.pth"]
    if not cfg.get("weights") and not environ.get(ENV_VAR):
        ckpt = environ.get(ENV["ckpt"], "").strip()
        if ckpt:
            path = Path(ckpt).expanduser()
            if path.is_dir():
                path = next((path / n for n in names if (path / n).is_file()), path / names[0])
            if not path.is_file():
                raise ModelError(
                    f"${ENV['ckpt']} for model {model!r} is {str(path)!r}, which does not exist."
                )
            return _check_size(path, f"${ENV['ckpt']}", environ)
        cache_dir = os.path.expanduser(environ.get(ENV["cache_dir"], "").strip() or DEFAULT_CACHE_DIR)
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        except ImportError:
            hit = None
        if isinstance(hit, str):
            return _check_size(Path(hit), f"rs-embed's cache {cache_dir}", environ)
    path = find_weights(
        model, config=cfg, env_var=ENV_VAR, filenames=names, hf_repo=repo, hf_filename=filename
    )
    if path != DOWNLOAD_PENDING and not cfg.get("weights") and not environ.get(ENV_VAR):
        _check_size(path, f"huggingface: {repo}/{filename}", environ)
    return path
