"""Where WildSAT checkpoints come from and what is read out of them.

rs-embed 0.3.1 (``onthefly_wildsat``) takes one checkpoint per variant: the
WildSAT authors' training file (``vitb16-imagenet-bnfc.pth``,
``resnet50-imagenet-bnfc.pth``, ``swint-imagenet-bnfc.pth``) published on
Google Drive.  The checkpoint is looked for, first match wins, in

1. ``model_config["weights"]`` (a file, or a folder holding the variant's file);
2. ``$RS_EMBED_WILDSAT_CKPT`` (rs-embed's variable: a file, or such a folder);
3. the Hugging Face hub when ``$RS_EMBED_WILDSAT_HF_REPO`` and
   ``$RS_EMBED_WILDSAT_HF_FILE`` are both set (rs-embed's override): the cache
   rs-embed downloads into (``$RS_EMBED_WILDSAT_CACHE_DIR``), then the usual
   Hugging Face cache and hub (offline: the caches only, at once);
4. ``$RS_EMBED_WILDSAT_CACHE_DIR/<file>`` (default ``~/.cache/rs_embed/wildsat``,
   where rs-embed's own download lands), when at least
   ``$RS_EMBED_WILDSAT_CKPT_MIN_BYTES`` (50 MiB) long;
5. a download from Google Drive into that folder (file id
   ``$RS_EMBED_WILDSAT_GDRIVE_ID``, name ``$RS_EMBED_WILDSAT_CKPT_FILE``),
   unless ``$RS_EMBED_WILDSAT_AUTO_DOWNLOAD`` is off; when Google Drive cannot
   be reached (a one-second connect probe) the lookup fails at once.

The file is the training checkpoint ``{"satellite_state_dict": {...},
"opt": argparse.Namespace, ...}`` (or ``{"state_dict": ...}``, or a bare
state dict).  Wrapper prefixes ``module.``, ``satellite_model.`` and
``model.`` are stripped; the ``backbone.*`` tensors are the torchvision
backbone (classifier included) and load with ``strict=True``; the linear
layers of one branch of the decoder (``decoder.backbone<N>.<i>``, or
``decoder.backbone.<i>``) form the image head; every other entry (the
species and text encoders, the optimiser) is dropped, as rs-embed does.
The file is read with ``torch.load(weights_only=True)``, ``argparse.Namespace``
allowed: no other pickled object is executed.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "CKPT_ENV",
    "VARIANTS",
    "HeadSpec",
    "WildSATSource",
    "backbone_state",
    "head_spec",
    "normalize_variant",
    "read_checkpoint",
    "resolve_variant",
]

CKPT_ENV = "RS_EMBED_WILDSAT_CKPT"
ARCH_ENV = "RS_EMBED_WILDSAT_ARCH"
DEFAULT_CACHE_DIR = "~/.cache/rs_embed/wildsat"
DEFAULT_MIN_BYTES = 50 * 1024 * 1024
GDRIVE_HOST = "drive.google.com"


@dataclass(frozen=True)
class VariantSpec:
    """One published WildSAT checkpoint: its torchvision backbone, Google Drive file id and file name."""

    arch: str
    gdrive_id: str
    filename: str


#: rs-embed's variants (``_WILDSAT_VARIANT_SPECS``); the default is ``vitb16``.
VARIANTS: dict[str, VariantSpec] = {
    "vitb16": VariantSpec("vitb16", "1IxBpf3nbEMzny4YJWS6stMBxel6gMiYE", "vitb16-imagenet-bnfc.pth"),
    "resnet50": VariantSpec("resnet50", "1LwCjzT1p0yFOtv1m0YD-rl7tP0eYXTb2", "resnet50-imagenet-bnfc.pth"),
    "swint": VariantSpec("swint", "12rfb3ES9-RuIAk_RjzYrMQJG_5J1Iq5H", "swint-imagenet-bnfc.pth"),
}
DEFAULT_VARIANT = "vitb16"
# names accepted for model_config["variant"] (after lower-casing and removing '-' and '_')
_VARIANT_ALIASES = {
    "vitb16": "vitb16", "vitbase16": "vitb16", "vit": "vitb16",
    "resnet50": "resnet50", "resnet": "resnet50",
    "swint": "swint", "swintiny": "swint", "swin": "swint",
}  # fmt: skip
# names accepted in $RS_EMBED_WILDSAT_ARCH (rs-embed's shorter list)
_ARCH_ALIASES = {
    "vitb16": "vitb16", "vitbase16": "vitb16", "vitbasepatch16": "vitb16",
    "resnet50": "resnet50", "swint": "swint", "swintiny": "swint",
}  # fmt: skip
_PREFIXES = ("module.", "satellite_model.", "model.")
_BRANCHED = re.compile(r"^decoder\.backbone(\d+)\.(\d+)\.(weight|bias)$")
_SINGLE = re.compile(r"^decoder\.backbone\.(\d+)\.(weight|bias)$")


def _squash(value: Any) -> str:
    return str(value).strip().lower().replace("-", "").replace("_", "")


def normalize_variant(value: Any) -> str:
    """A ``model_config["variant"]`` value as one of :data:`VARIANTS`, else a :class:`ModelError`."""
    resolved = _VARIANT_ALIASES.get(_squash(value))
    if resolved is None:
        raise ModelError(
            f"wildsat model_config 'variant' must be one of {sorted(VARIANTS)} "
            f"(or vit, resnet, swin, swin_tiny, vit_base16); got {value!r}"
        )
    return resolved


def resolve_variant(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """``config["variant"]``, else a known ``$RS_EMBED_WILDSAT_ARCH``, else ``"vitb16"`` (rs-embed's order)."""
    if config.get("variant") is not None:
        return normalize_variant(config["variant"])
    env = (os.environ if environ is None else environ).get(ARCH_ENV, "").strip()
    if env and env.lower() != "auto":
        arch = _ARCH_ALIASES.get(_squash(env))
        if arch is not None:
            return arch
    return DEFAULT_VARIANT


# -- where the file is ---------------------------------------------------------------------------
_probe_lock = threading.Lock()
_probe_cache: dict[str, bool] = {}


def drive_reachable() -> bool:
    """Whether a TCP connection to Google Drive opens (decided once per process)."""
    from rs_embed_dask.models.hub_reach import PROBE_TIMEOUT_ENV, _connects

    with _probe_lock:
        if GDRIVE_HOST in _probe_cache:
            return _probe_cache[GDRIVE_HOST]
    try:
        timeout = float(os.environ.get(PROBE_TIMEOUT_ENV, "1.5"))
    except ValueError:
        timeout = 1.5
    ok = _connects(GDRIVE_HOST, 443, timeout)
    with _probe_lock:
        _probe_cache[GDRIVE_HOST] = ok
    return ok


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    return str(raw).strip().lower() not in {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class WildSATSource:
    """Where one variant's checkpoint is looked for (see the module docstring).

    Attributes
    ----------
    variant : str
        One of :data:`VARIANTS`.
    filename : str
        The file name (``$RS_EMBED_WILDSAT_CKPT_FILE`` or the variant's).
    gdrive_id : str
        The Google Drive file id (``$RS_EMBED_WILDSAT_GDRIVE_ID`` or the variant's).
    cache_dir : str
        The download folder (``$RS_EMBED_WILDSAT_CACHE_DIR``).
    min_bytes : int
        Smallest plausible checkpoint size (``$RS_EMBED_WILDSAT_CKPT_MIN_BYTES``).
    auto_download : bool
        ``$RS_EMBED_WILDSAT_AUTO_DOWNLOAD`` (default on).
    hf_repo, hf_file : str
        rs-embed's Hugging Face override (both or neither).
    """

    variant: str
    filename: str
    gdrive_id: str
    cache_dir: str
    min_bytes: int
    auto_download: bool
    hf_repo: str = ""
    hf_file: str = ""

    @classmethod
    def for_variant(cls, variant: str, environ: Mapping[str, str] | None = None) -> WildSATSource:
        """The source of ``variant`` with rs-embed's ``RS_EMBED_WILDSAT_*`` overrides applied."""
        env = os.environ if environ is None else environ
        spec = VARIANTS[variant]
        raw_min = env.get("RS_EMBED_WILDSAT_CKPT_MIN_BYTES", str(DEFAULT_MIN_BYTES))
        try:
            min_bytes = int(raw_min)
        except ValueError as exc:
            raise ModelError(f"RS_EMBED_WILDSAT_CKPT_MIN_BYTES must be an integer; got {raw_min!r}") from exc
        hf_repo = str(env.get("RS_EMBED_WILDSAT_HF_REPO") or "").strip()
        hf_file = str(env.get("RS_EMBED_WILDSAT_HF_FILE") or "").strip()
        return cls(
            variant=variant,
            filename=str(env.get("RS_EMBED_WILDSAT_CKPT_FILE") or "").strip() or spec.filename,
            gdrive_id=str(env.get("RS_EMBED_WILDSAT_GDRIVE_ID") or "").strip() or spec.gdrive_id,
            cache_dir=env.get("RS_EMBED_WILDSAT_CACHE_DIR") or DEFAULT_CACHE_DIR,
            min_bytes=min_bytes,
            auto_download=_flag(env, "RS_EMBED_WILDSAT_AUTO_DOWNLOAD", True),
            hf_repo=hf_repo,
            hf_file=hf_file,
        )

    def describe(self) -> dict[str, Any]:
        """The ``weights`` entry of ``describe()``."""
        return {
            "source": f"google drive: id {self.gdrive_id} ({self.filename})",
            "env_var": CKPT_ENV,
            "cache": str(Path(self.cache_dir).expanduser() / self.filename),
            "huggingface_override": "RS_EMBED_WILDSAT_HF_REPO + RS_EMBED_WILDSAT_HF_FILE",
            "auto_download": self.auto_download,
            "format": "WildSAT training checkpoint {'satellite_state_dict': {'backbone.<torchvision key>', "
            "'decoder.backbone<N>.<i>.weight', ...}, 'opt': Namespace, ...} (torch.load weights_only=True); "
            "the backbone loads with strict=True, the decoder branch's linear layers form the image head, "
            "the rest is dropped",
        }

    def _cached(self) -> Path | None:
        p = Path(self.cache_dir).expanduser() / self.filename
        return p if p.is_file() and p.stat().st_size >= self.min_bytes else None

    def find(self, model: str, config: Mapping[str, Any]) -> Path:
        """The local checkpoint file (downloading it from Google Drive when allowed and reachable)."""
        from rs_embed_dask.models.weights import _PROBE, DOWNLOAD_PENDING, find_weights

        if bool(self.hf_repo) != bool(self.hf_file):
            raise ModelError(
                "Set both RS_EMBED_WILDSAT_HF_REPO and RS_EMBED_WILDSAT_HF_FILE to read the WildSAT checkpoint "
                "from the Hugging Face hub (only one of them is set)."
            )
        if config.get("weights") or os.environ.get(CKPT_ENV):
            return find_weights(model, config=config, env_var=CKPT_ENV, filenames=[self.filename])
        if self.hf_repo:
            hit = self._hf_rs_embed_cache()
            if hit is not None:
                return hit
            path = find_weights(
                model, config=config, env_var=CKPT_ENV, filenames=[self.hf_file],
                hf_repo=self.hf_repo, hf_filename=self.hf_file,
            )  # fmt: skip
            if path != DOWNLOAD_PENDING and path.stat().st_size < self.min_bytes:
                raise ModelError(
                    f"The WildSAT checkpoint {str(path)!r} is only {path.stat().st_size} bytes (an incomplete "
                    f"download or a pointer file?); expected at least {self.min_bytes}."
                )
            return path
        cached = self._cached()
        if cached is not None:
            return cached
        where = str(Path(self.cache_dir).expanduser() / self.filename)
        how = (
            f"Provide it with weights='/path/to/{self.filename}' (or a folder holding it) or "
            f"{CKPT_ENV}=/path/to/{self.filename}, or download it once from "
            f"https://drive.google.com/uc?id={self.gdrive_id} into {where}."
        )
        if not self.auto_download:
            raise ModelError(
                f"No WildSAT checkpoint for variant {self.variant!r}: model_config['weights'] and ${CKPT_ENV} "
                f"are unset, {where} is absent and RS_EMBED_WILDSAT_AUTO_DOWNLOAD is off. {how}"
            )
        if not drive_reachable():
            raise ModelError(
                f"No WildSAT checkpoint for variant {self.variant!r}: model_config['weights'] and ${CKPT_ENV} "
                f"are unset, {where} is absent and {GDRIVE_HOST} cannot be reached to download it. {how}"
            )
        if _PROBE.get():
            return DOWNLOAD_PENDING
        return download_gdrive(self.gdrive_id, Path(where), min_bytes=self.min_bytes)

    def _hf_rs_embed_cache(self) -> Path | None:
        """The file in the Hugging Face cache rs-embed downloads into (``cache_dir``), if there."""
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        hit = try_to_load_from_cache(
            self.hf_repo, self.hf_file, cache_dir=str(Path(self.cache_dir).expanduser())
        )
        return Path(hit) if isinstance(hit, str) else None


def _confirm_url(file_id: str, timeout: float) -> str:
    """The direct download address of a Drive file (past the large-file warning page)."""
    first = f"https://{GDRIVE_HOST}/uc?export=download&id={urllib.parse.quote(file_id)}"
    with urllib.request.urlopen(first, timeout=timeout) as r:
        if "text/html" not in str(r.headers.get("content-type") or "").lower():
            return str(r.geturl())
        page = r.read().decode("utf-8", "ignore")
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"', page) or re.search(
        r'<form[^>]*action="([^"]+)"', page
    )
    if form is None:
        raise ModelError(
            f"Google Drive answered file {file_id} with a page that has no download form; "
            f"download the WildSAT checkpoint by hand and set {CKPT_ENV}."
        )
    params = {
        k: html.unescape(v) for k, v in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page)
    }
    params.setdefault("id", file_id)
    params.setdefault("export", "download")
    return html.unescape(form.group(1)) + "?" + urllib.parse.urlencode(params)


def download_gdrive(file_id: str, dest: Path, *, min_bytes: int, timeout: float = 120.0) -> Path:
    """Download a Google Drive file to ``dest`` (through ``dest.part``, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        url = _confirm_url(file_id, timeout)
        with urllib.request.urlopen(url, timeout=timeout) as r, part.open("wb") as fh:
            while chunk := r.read(1 << 20):
                fh.write(chunk)
        size = part.stat().st_size
        if size < min_bytes:
            raise ModelError(
                f"The WildSAT checkpoint downloaded from Google Drive (id {file_id}) is only {size} bytes; "
                f"expected at least {min_bytes}. Download it by hand and set {CKPT_ENV}."
            )
        part.replace(dest)
    except OSError as exc:
        raise ModelError(
            f"Could not download the WildSAT checkpoint (Google Drive id {file_id}): {exc!r}"
        ) from exc
    finally:
        part.unlink(missing_ok=True)
    return dest


# -- what is in the file -------------------------------------------------------------------------
def _clean_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The satellite model's state dict (wrapper prefixes stripped) and the training options of a checkpoint.

    Raises
    ------
    ModelError
        When the file cannot be read without executing pickles other than
        ``argparse.Namespace``, holds no satellite state dict, or no
        ``backbone.*`` key.
    """
    import torch

    p = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"Could not read the WildSAT checkpoint {str(p)!r} with torch.load(weights_only=True) "
            f"(argparse.Namespace allowed): {exc!r}. If the file holds other Python objects, load it once "
            f"yourself and save {{'satellite_state_dict': ckpt['satellite_state_dict']}}."
        ) from exc
    if not isinstance(obj, Mapping):
        raise ModelError(f"The WildSAT checkpoint {str(p)!r} holds a {type(obj).__name__}, not a dict.")
    opt = obj.get("opt")
    opt_meta = (
        dict(vars(opt))
        if isinstance(opt, argparse.Namespace)
        else dict(opt)
        if isinstance(opt, Mapping)
        else {}
    )
    if isinstance(obj.get("satellite_state_dict"), Mapping):
        state = obj["satellite_state_dict"]
    elif isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    elif obj and all(hasattr(v, "shape") for v in obj.values()):
        state = obj
    else:
        raise ModelError(
            f"The WildSAT checkpoint {str(p)!r} has no 'satellite_state_dict' (nor 'state_dict', nor is it a "
            f"plain state dict); its keys: {sorted(map(str, obj))[:10]}."
        )
    cleaned = {_clean_key(str(k)): v for k, v in state.items()}
    if not any(k.startswith("backbone.") for k in cleaned):
        raise ModelError(
            f"The WildSAT checkpoint {str(p)!r} has no 'backbone.*' keys (after removing the prefixes "
            f"{list(_PREFIXES)}); is it a WildSAT satellite model?"
        )
    return cleaned, opt_meta


def backbone_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The ``backbone.*`` tensors without the prefix (the torchvision model's own keys)."""
    return {
        k[len("backbone.") :]: v
        for k, v in state.items()
        if k.startswith("backbone.") and hasattr(v, "shape")
    }


@dataclass(frozen=True)
class HeadSpec:
    """The image head rebuilt from the decoder: linear layers (ReLU between them) of one branch.

    Attributes
    ----------
    kind : {"branched", "single"}
        ``decoder.backbone<N>.*`` branches, or one ``decoder.backbone.*`` sequence.
    branch : int
        The branch used (``image_branch`` when present, else the highest).
    layers : tuple of (weight, bias or None)
        The linear layers in order (1-D parameters such as batch norms are left out, as rs-embed does).
    """

    kind: str
    branch: int
    layers: tuple[tuple[Any, Any], ...]

    @property
    def out_dim(self) -> int:
        """Output features of the last linear layer."""
        return int(self.layers[-1][0].shape[0])

    def meta(self) -> dict[str, Any]:
        """rs-embed's ``image_head_*`` meta keys."""
        return {
            "image_head_available": True,
            "image_head_kind": self.kind,
            "image_head_branch": self.branch,
            "image_head_linear_layers": len(self.layers),
            "image_head_out_dim": self.out_dim,
        }

    def build(self) -> Any:
        """``torch.nn.Sequential`` of the linear layers with ReLU between them (float32)."""
        import torch
        from torch import nn

        mods: list[Any] = []
        with torch.no_grad():
            for i, (w, b) in enumerate(self.layers):
                lin = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=b is not None)
                lin.weight.copy_(w.detach().float())
                if b is not None:
                    lin.bias.copy_(b.detach().float())
                mods.append(lin)
                if i < len(self.layers) - 1:
                    mods.append(nn.ReLU())
        return nn.Sequential(*mods)


def head_spec(state: Mapping[str, Any], prefer_branch: int = 3) -> HeadSpec | None:
    """The image head of a cleaned satellite state dict, ``None`` when it has no decoder linear layer."""
    branches: dict[int, dict[int, dict[str, Any]]] = {}
    for k, v in state.items():
        m = _BRANCHED.match(k)
        if m is not None:
            branches.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), {})[m.group(3)] = v
    kind = "branched"
    if not branches:
        single: dict[int, dict[str, Any]] = {}
        for k, v in state.items():
            m = _SINGLE.match(k)
            if m is not None:
                single.setdefault(int(m.group(1)), {})[m.group(2)] = v
        if not single:
            return None
        branches, kind = {1: single}, "single"
    branch = int(prefer_branch) if int(prefer_branch) in branches else max(branches)
    params = branches[branch]
    layers = tuple(
        (params[i]["weight"], params[i].get("bias"))
        for i in sorted(params)
        if getattr(params[i].get("weight"), "ndim", 0) == 2
    )
    return HeadSpec(kind, branch, layers) if layers else None
