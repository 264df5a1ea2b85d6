"""Where FoMo-Net's checkpoint comes from: a local file, rs-embed's cache, or its download URL.

FoMo-Net_1 is not on the Hugging Face hub: FoMo-Bench's README links one file,
``fomo_single_embedding_layer_weights.pt``, on Dropbox.  It is looked for with
rs-embed 0.3.1's variables, first match wins:

1. ``model_config["weights"]``: the file, or a folder holding it;
2. ``$RS_EMBED_FOMO_CKPT``: the same;
3. rs-embed's cache, ``$RS_EMBED_FOMO_CACHE_DIR/$RS_EMBED_FOMO_CKPT_FILE``
   (default ``~/.cache/rs_embed/fomo/fomo_single_embedding_layer_weights.pt``),
   when it holds at least ``$RS_EMBED_FOMO_CKPT_MIN_BYTES`` bytes (50 MiB);
4. a download of ``$RS_EMBED_FOMO_CKPT_URL`` (default the Dropbox link) into
   that cache, unless ``$RS_EMBED_FOMO_AUTO_DOWNLOAD`` is ``0``/``false``/
   ``no``/``off``.  Offline (``$HF_HUB_OFFLINE`` set, or the URL's host, or
   its proxy, does not accept a connection within the hub probe's timeout,
   :mod:`rs_embed_dask.models.hub_reach`) the lookup fails at once instead of
   waiting for the download to time out.

A checkpoint that rs-embed already downloaded is therefore found without any
setting.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "AUTO_DOWNLOAD_ENV",
    "CACHE_DIR_ENV",
    "CKPT_ENV",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_FILENAME",
    "DEFAULT_MIN_BYTES",
    "DEFAULT_URL",
    "FILE_ENV",
    "MIN_BYTES_ENV",
    "URL_ENV",
    "UrlCheckpoint",
]

CKPT_ENV = "RS_EMBED_FOMO_CKPT"
AUTO_DOWNLOAD_ENV = "RS_EMBED_FOMO_AUTO_DOWNLOAD"
CACHE_DIR_ENV = "RS_EMBED_FOMO_CACHE_DIR"
FILE_ENV = "RS_EMBED_FOMO_CKPT_FILE"
URL_ENV = "RS_EMBED_FOMO_CKPT_URL"
MIN_BYTES_ENV = "RS_EMBED_FOMO_CKPT_MIN_BYTES"
DEFAULT_FILENAME = "fomo_single_embedding_layer_weights.pt"
#: The FoMo-Net_1 link of FoMo-Bench's README (rs-embed 0.3.1's default).
DEFAULT_URL = (
    "https://www.dropbox.com/scl/fi/4ckmxlcbc0tcod8hknp7c/"
    "fomo_single_embedding_layer_weights.pt?rlkey=26tlf3yaz93vvcosr0qrvklub&dl=1"
)
DEFAULT_CACHE_DIR = "~/.cache/rs_embed/fomo"
DEFAULT_MIN_BYTES = 50 * 1024 * 1024
_FALSE = ("", "0", "false", "no", "off")
_DOWNLOAD_TIMEOUT_S = 180
_download_lock = threading.Lock()


def _env_str(name: str, default: str) -> str:
    return (os.environ.get(name) or "").strip() or default


@dataclass(frozen=True)
class UrlCheckpoint:
    """A checkpoint published at a URL and cached locally, with rs-embed's variables.

    Attributes
    ----------
    url : str
        Where it is downloaded from.
    filename : str
        Its file name (in a ``weights`` folder and in the cache).
    cache_dir : str
        rs-embed's cache folder (``~`` expanded when used).
    min_bytes : int
        A cached or downloaded file smaller than this is not the checkpoint.
    auto_download : bool
        Whether a missing file may be downloaded.
    env_var : str
        The variable naming a local file (or a folder holding ``filename``).
    """

    url: str = DEFAULT_URL
    filename: str = DEFAULT_FILENAME
    cache_dir: str = DEFAULT_CACHE_DIR
    min_bytes: int = DEFAULT_MIN_BYTES
    auto_download: bool = True
    env_var: str = CKPT_ENV

    @classmethod
    def from_env(cls) -> UrlCheckpoint:
        """The checkpoint as rs-embed's ``RS_EMBED_FOMO_*`` variables describe it now.

        Raises
        ------
        ModelError
            When ``$RS_EMBED_FOMO_CKPT_MIN_BYTES`` is not a whole number.
        """
        raw_min = _env_str(MIN_BYTES_ENV, str(DEFAULT_MIN_BYTES))
        try:
            min_bytes = int(raw_min)
        except ValueError:
            raise ModelError(f"${MIN_BYTES_ENV} must be a whole number of bytes; got {raw_min!r}") from None
        return cls(
            url=_env_str(URL_ENV, DEFAULT_URL),
            filename=_env_str(FILE_ENV, DEFAULT_FILENAME),
            cache_dir=_env_str(CACHE_DIR_ENV, DEFAULT_CACHE_DIR),
            min_bytes=min_bytes,
            auto_download=(os.environ.get(AUTO_DOWNLOAD_ENV) or "1").strip().lower() not in _FALSE,
        )

    @property
    def cached_path(self) -> Path:
        """Where the cache holds (or a download puts) the file."""
        return Path(self.cache_dir).expanduser() / self.filename

    def describe(self) -> dict[str, Any]:
        """The ``weights`` entry of ``describe()``."""
        return {
            "source": f"url: {self.url}",
            "file": self.filename,
            "env_var": self.env_var,
            "cache": str(self.cached_path),
            "overrides": [CKPT_ENV, CACHE_DIR_ENV, FILE_ENV, URL_ENV, MIN_BYTES_ENV, AUTO_DOWNLOAD_ENV],
            "format": "FoMo-Net MultiSpectralViT state dict (torch.load weights_only=True); 'module.' and "
            "'model.' prefixes stripped, keys the encoder does not have dropped (as rs-embed's non-strict "
            "load), then every encoder key loaded with strict=True",
        }

    def _cached(self) -> Path | None:
        p = self.cached_path
        return p if p.is_file() and p.stat().st_size >= self.min_bytes else None

    def find(self, model: str, config: Mapping[str, Any]) -> Path:
        """The local checkpoint (see the module docstring for the order); downloads it when allowed.

        Under :func:`rs_embed_dask.models.weights.offline_probe` (the client's
        pre-flight) nothing is downloaded: a file that the worker would
        download is reported as ``DOWNLOAD_PENDING``.

        Raises
        ------
        ModelError
            When no source gives the file; the message lists where it looked
            and how to provide it.
        """
        from rs_embed_dask.models import weights as w

        if config.get("weights") or os.environ.get(self.env_var):
            return w.find_weights(model, config=config, env_var=self.env_var, filenames=[self.filename])
        cached = self._cached()
        if cached is not None:
            return cached
        looked = [
            "model_config['weights'] (unset)",
            f"${self.env_var} (unset)",
            f"the cache {str(self.cached_path)!r} (missing or under {self.min_bytes} bytes)",
        ]
        why = self._why_no_download()
        if why is None and w._PROBE.get():  # the client's presence check: the worker downloads it
            return w.DOWNLOAD_PENDING
        if why is None:
            try:
                return self.download()
            except ModelError as exc:
                why = str(exc)
        looked.append(f"the download of {self.url} ({why})")
        raise ModelError(
            f"No weights found for model {model!r}. Looked at: " + "; ".join(looked) + ". "
            f"Provide them with weights='/path/to/{self.filename}' (model_config={{'weights': ...}} in "
            f"ExportModelRequest and job files) or {self.env_var}=/path/to/{self.filename}, or download "
            f"{self.url} once with network access to {str(self.cached_path)!r}."
        )

    def _why_no_download(self) -> str | None:
        """Why the file cannot be downloaded now (``None``: it can)."""
        from rs_embed_dask.models import hub_reach

        if not self.auto_download:
            return f"${AUTO_DOWNLOAD_ENV} turns downloads off"
        if hub_reach.hub_offline_env():
            return "$HF_HUB_OFFLINE asks for offline mode"
        from rs_embed_dask.models import weights as w

        if w._PROBE.get():
            return None  # the pre-flight does not touch the network
        # one quick connect to the URL's host (or its proxy), as the hub probe does
        host, port = hub_reach._target(self.url)
        if not host or not hub_reach._connects(host, port, hub_reach._probe_timeout()):
            return f"{host or self.url} cannot be reached"
        return None

    def download(self) -> Path:
        """Download :attr:`url` into the cache (a temporary file renamed when complete); return its path.

        Raises
        ------
        ModelError
            When the download fails or gives fewer than :attr:`min_bytes` bytes.
        """
        dst = self.cached_path
        with _download_lock:
            if self._cached() is not None:
                return dst
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f"{dst.name}.part-{os.getpid()}")
            try:
                with urllib.request.urlopen(self.url, timeout=_DOWNLOAD_TIMEOUT_S) as r, tmp.open("wb") as f:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                size = tmp.stat().st_size
                if size < self.min_bytes:
                    raise ModelError(
                        f"the download of {self.url} gave {size} bytes, fewer than the checkpoint's "
                        f"{self.min_bytes} (${MIN_BYTES_ENV}); is the link still valid?"
                    )
                os.replace(tmp, dst)
            except OSError as exc:
                raise ModelError(f"downloading {self.url} failed: {exc!r}") from exc
            finally:
                tmp.unlink(missing_ok=True)
        return dst
