"""Where the AgriFM checkpoint comes from: a local file, rs-embed's download cache, or its URL.

AgriFM's weights are not on the Hugging Face hub; rs-embed 0.3.1 downloads
``AgriFM.pth`` from the authors' server and caches it.  The lookup here
follows the same variables, first match wins:

1. ``model_config["weights"]``: the file, or a folder holding it;
2. ``$RS_EMBED_AGRIFM_CKPT``: the file (or a folder holding it);
3. the download cache ``$RS_EMBED_AGRIFM_CACHE_DIR/$RS_EMBED_AGRIFM_CKPT_FILE``
   (default ``~/.cache/rs_embed/agrifm/AgriFM.pth``, the folder rs-embed
   fills, so a file it downloaded is reused) when it holds at least
   ``$RS_EMBED_AGRIFM_CKPT_MIN_BYTES`` (100 MiB);
4. a download from ``$RS_EMBED_AGRIFM_CKPT_URL`` into that cache, unless
   ``$RS_EMBED_AGRIFM_AUTO_DOWNLOAD`` is false.

Offline the lookup fails at once instead of waiting on a timeout: when
``$HF_HUB_OFFLINE`` is set (this package's offline switch) or the server
does not accept a TCP connection within the hub probe's timeout
(:mod:`rs_embed_dask.models.hub_reach`).
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = [
    "AUTO_DOWNLOAD_ENV",
    "CACHE_DIR_ENV",
    "CKPT_ENV",
    "DEFAULT_URL",
    "cache_path",
    "checkpoint_sources",
    "download",
    "find_checkpoint",
]

CKPT_ENV = "RS_EMBED_AGRIFM_CKPT"
AUTO_DOWNLOAD_ENV = "RS_EMBED_AGRIFM_AUTO_DOWNLOAD"
CACHE_DIR_ENV = "RS_EMBED_AGRIFM_CACHE_DIR"
FILE_ENV = "RS_EMBED_AGRIFM_CKPT_FILE"
URL_ENV = "RS_EMBED_AGRIFM_CKPT_URL"
MIN_BYTES_ENV = "RS_EMBED_AGRIFM_CKPT_MIN_BYTES"
DEFAULT_URL = "https://glass.hku.hk/casual/AgriFM/AgriFM.pth"
DEFAULT_FILE = "AgriFM.pth"
DEFAULT_CACHE_DIR = "~/.cache/rs_embed/agrifm"
DEFAULT_MIN_BYTES = 100 * 1024 * 1024
_FALSE = ("0", "false", "no", "off", "")


def _env(name: str, default: str) -> str:
    value = str(os.environ.get(name, "") or "").strip()
    return value or default


def _auto_download() -> bool:
    raw = os.environ.get(AUTO_DOWNLOAD_ENV)
    return True if raw is None else raw.strip().lower() not in _FALSE


def _min_bytes() -> int:
    raw = _env(MIN_BYTES_ENV, str(DEFAULT_MIN_BYTES))
    try:
        return int(raw)
    except ValueError as exc:
        raise ModelError(f"${MIN_BYTES_ENV} must be a whole number of bytes; got {raw!r}") from exc


def cache_path() -> Path:
    """``$RS_EMBED_AGRIFM_CACHE_DIR / $RS_EMBED_AGRIFM_CKPT_FILE`` (rs-embed's download target)."""
    return Path(_env(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)).expanduser() / _env(FILE_ENV, DEFAULT_FILE)


def checkpoint_sources() -> dict[str, Any]:
    """The lookup's settings as they stand (``describe()["weights"]``)."""
    return {
        "file": _env(FILE_ENV, DEFAULT_FILE),
        "url": _env(URL_ENV, DEFAULT_URL),
        "env": CKPT_ENV,
        "cache": str(cache_path()),
        "auto_download": _auto_download(),
        "overrides": [CKPT_ENV, AUTO_DOWNLOAD_ENV, CACHE_DIR_ENV, FILE_ENV, URL_ENV, MIN_BYTES_ENV],
    }


def _cached(min_bytes: int) -> Path | None:
    p = cache_path()
    return p if p.is_file() and p.stat().st_size >= min_bytes else None


def _offline_reason(url: str) -> str | None:
    """Why ``url`` cannot be downloaded now (``None``: try it)."""
    from rs_embed_dask.models import hub_reach

    if not _auto_download():
        return f"${AUTO_DOWNLOAD_ENV} is off"
    if hub_reach.hub_offline_env():
        return "$HF_HUB_OFFLINE is set"
    host, port = hub_reach._target(url)
    if not host or not hub_reach._connects(host, port, hub_reach._probe_timeout()):
        return f"{host or url!r} cannot be reached"
    return None


def download(url: str, dst: Path, *, min_bytes: int, timeout_s: float = 120.0) -> Path:
    """Stream ``url`` to ``dst`` (through a temporary file, so a partial download is never used)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.{threading.get_ident()}.part")  # one per downloader
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r, tmp.open("wb") as fh:
            while chunk := r.read(1 << 20):
                fh.write(chunk)
        size = tmp.stat().st_size
        if size < min_bytes:
            raise ModelError(
                f"The AgriFM checkpoint downloaded from {url} is too small ({size} bytes < {min_bytes}); "
                f"set ${CKPT_ENV} to a local AgriFM.pth."
            )
        os.replace(tmp, dst)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"Could not download the AgriFM checkpoint from {url} ({type(exc).__name__}: {exc}); "
            f"set ${CKPT_ENV} to a local AgriFM.pth."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def find_checkpoint(model: str, config: Mapping[str, Any]) -> Path:
    """The local path of AgriFM's checkpoint, downloading it when allowed (see the module docstring).

    Under :func:`rs_embed_dask.models.weights.offline_probe` nothing is
    downloaded: a file still to be downloaded is
    :data:`~rs_embed_dask.models.weights.DOWNLOAD_PENDING`.

    Raises
    ------
    ModelError
        When no source gives the file; the message says where it looked and
        how to provide it.
    """
    from rs_embed_dask.models import weights

    filenames = [_env(FILE_ENV, DEFAULT_FILE), DEFAULT_FILE]
    if config.get("weights") or os.environ.get(CKPT_ENV):
        return weights.find_weights(model, config=config, env_var=CKPT_ENV, filenames=filenames)
    min_bytes = _min_bytes()
    hit = _cached(min_bytes)
    if hit is not None:
        return hit
    url = _env(URL_ENV, DEFAULT_URL)
    why = _offline_reason(url)
    if why is None:
        if weights._PROBE.get():
            return weights.DOWNLOAD_PENDING
        return download(url, cache_path(), min_bytes=min_bytes)
    raise ModelError(
        f"No weights found for model {model!r}. Looked at: model_config['weights'] (unset); ${CKPT_ENV} (unset); "
        f"the download cache {str(cache_path())!r} (no file of at least {min_bytes} bytes); the URL {url} "
        f"(not downloaded: {why}). Provide them with weights='/path/to/AgriFM.pth' (model_config={{'weights': "
        f"...}} in ExportModelRequest and job files) or {CKPT_ENV}=/path/to/AgriFM.pth, or put the file in the "
        f"cache (e.g. with network access: curl -L -o {str(cache_path())!r} {url})."
    )
