"""fomo: the checkpoint (strict keys, rs-embed's variables, cache and URL download) and fomo in the engine.

The download is faked at the network boundary (``urllib.request.urlopen`` and the
connect probe); nothing here reaches the network.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_cases.fomo import FILENAME, TINY, fomo_state, write_checkpoint

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.models import fomo, hub_reach
from rs_embed_dask.models import fomo_weights as fw

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

_ENV = [v for v in dir(fw) if v.endswith("_ENV")]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _ENV:
        monkeypatch.delenv(getattr(fw, name), raising=False)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(fw.CACHE_DIR_ENV, str(tmp_path / "cache"))  # never the user's ~/.cache


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("fomo_w"))


class _FakeNet:
    """``urlopen`` and the connect probe of :mod:`hub_reach`, counting calls."""

    def __init__(self, payload: bytes, reachable: bool = True) -> None:
        self.payload, self.reachable, self.opened, self.probed = payload, reachable, [], []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> _FakeNet:
        monkeypatch.setattr(fw.urllib.request, "urlopen", self.urlopen)
        monkeypatch.setattr(hub_reach, "_connects", self.connects)
        return self

    def urlopen(self, url: str, timeout: float = 0) -> io.BytesIO:
        self.opened.append(url)
        return io.BytesIO(self.payload)

    def connects(self, host: str, port: int, timeout: float) -> bool:
        self.probed.append((host, port))
        return self.reachable


# -- strict keys ---------------------------------------------------------------------------------
def _embed(cfg: dict[str, Any], x: np.ndarray) -> np.ndarray:
    e = fomo.FomoEmbedder(cfg)
    e.load("cpu")
    return np.asarray(e.embed_inputs([x], output=OutputSpec.grid())[0].data)


def test_extra_pretraining_keys_and_wrapper_prefixes_are_dropped(weights: Path, tmp_path: Path) -> None:
    state = fomo_state()
    wrapped = {f"module.{k}": v for k, v in state.items()}
    # keys of the MAE pretraining model that rs-embed's non-strict load ignores
    wrapped["module.decoder.layers.0.0.to_qkv.weight"] = torch.zeros(8, 8)
    wrapped["module.mask_token"] = torch.zeros(8)
    wrapped["module.enc_to_dec.weight"] = torch.zeros(8, 8)
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / FILENAME)
    x = np.random.default_rng(0).uniform(0, 5000, (12, 64, 64)).astype(np.float32)
    a = _embed({**TINY, "weights": str(weights)}, x)
    b = _embed({**TINY, "weights": str(tmp_path)}, x)
    np.testing.assert_array_equal(a, b)


def test_a_missing_encoder_key_or_another_shape_is_an_error(weights: Path, tmp_path: Path) -> None:
    state = fomo_state()
    del state["transformer.layers.0.1.net.4.bias"]
    torch.save(state, tmp_path / FILENAME)
    with pytest.raises(ModelError, match=r"missing keys \['transformer\.layers\.0\.1\.net\.4\.bias'\]"):
        fomo.FomoEmbedder({**TINY, "weights": str(tmp_path)}).load("cpu")
    with pytest.raises(ModelError, match="shape mismatches"):  # the file's head has 10 classes
        fomo.FomoEmbedder({**TINY, "num_classes": 1000, "weights": str(weights)}).load("cpu")
    with pytest.raises(ModelError, match="pos_embedding"):  # 8 x 8 patches need a longer position table
        fomo.FomoEmbedder({**TINY, "patch_size": 8, "weights": str(weights)}).load("cpu")


def test_pickled_objects_are_not_executed(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="Could not read the checkpoint"):
        fomo.FomoEmbedder({**TINY, "weights": str(tmp_path)}).load("cpu")


# -- where the file comes from -------------------------------------------------------------------------
def test_lookup_order_config_then_variable_then_cache(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = fw.UrlCheckpoint.from_env()
    assert hub.cached_path == tmp_path / "cache" / FILENAME
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    monkeypatch.setenv(fw.CKPT_ENV, str(other))
    assert hub.find("fomo", {"weights": str(weights)}) == weights
    assert hub.find("fomo", {}) == other
    monkeypatch.setenv(fw.CKPT_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(ModelError, match=r"\$RS_EMBED_FOMO_CKPT for model 'fomo' is .*does not exist"):
        hub.find("fomo", {})
    monkeypatch.delenv(fw.CKPT_ENV)
    cached = tmp_path / "cache" / FILENAME
    cached.parent.mkdir()
    cached.write_bytes(b"0" * 100)
    net = _FakeNet(b"").install(monkeypatch)
    monkeypatch.setenv(fw.AUTO_DOWNLOAD_ENV, "off")
    with pytest.raises(
        ModelError, match=r"under 52428800 bytes.*RS_EMBED_FOMO_AUTO_DOWNLOAD turns downloads off"
    ):
        fw.UrlCheckpoint.from_env().find("fomo", {})  # rs-embed's 50 MiB floor: 100 bytes is no checkpoint
    monkeypatch.setenv(fw.MIN_BYTES_ENV, "100")
    assert fw.UrlCheckpoint.from_env().find("fomo", {}) == cached
    monkeypatch.setenv(fw.FILE_ENV, "renamed.pt")
    with pytest.raises(ModelError, match=r"renamed\.pt"):
        fw.UrlCheckpoint.from_env().find("fomo", {})
    assert net.opened == []
    assert net.probed == []


def test_download_into_rs_embeds_cache_once(
    weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    payload = weights.read_bytes()
    net = _FakeNet(payload).install(monkeypatch)
    monkeypatch.setenv(fw.URL_ENV, "https://example.org/fomo.pt?dl=1")
    monkeypatch.setenv(fw.MIN_BYTES_ENV, "1000")
    e = fomo.FomoEmbedder(TINY)
    e.load("cpu")
    assert net.opened == ["https://example.org/fomo.pt?dl=1"]
    assert net.probed == [("example.org", 443)]
    cached = tmp_path / "cache" / FILENAME
    assert cached.read_bytes() == payload
    assert not list(cached.parent.glob("*.part-*"))
    fomo.FomoEmbedder(TINY).load("cpu")  # found in the cache: no second download
    assert len(net.opened) == 1


def test_a_short_download_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    net = _FakeNet(b"<html>link expired</html>").install(monkeypatch)
    with pytest.raises(ModelError, match=r"gave 25 bytes, fewer than the checkpoint's 52428800"):
        fomo.FomoEmbedder(TINY).load("cpu")
    assert len(net.opened) == 1
    assert not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("offline", ["hf_offline", "unreachable"])
def test_offline_lookups_fail_at_once(offline: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net = _FakeNet(b"", reachable=offline != "unreachable").install(monkeypatch)
    if offline == "hf_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(
        ModelError, match=r"No weights found for model 'fomo'.*RS_EMBED_FOMO_CKPT=/path/to/fomo_"
    ):
        fomo.FomoEmbedder(TINY).load("cpu")
    assert time.perf_counter() - t0 < 1.0
    assert net.opened == []
    assert net.probed == ([] if offline == "hf_offline" else [("www.dropbox.com", 443)])


def test_preflight_checks_presence_without_network(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rs_embed_dask.models.weights import DOWNLOAD_PENDING, locate_weights, offline_probe
    from rs_embed_dask.resolve import resolve_model
    from rs_embed_dask.validation.preflight import check_weights

    net = _FakeNet(b"").install(monkeypatch)
    with offline_probe():
        assert locate_weights(fomo.FomoEmbedder(), "fomo", {}) == DOWNLOAD_PENDING  # the worker downloads it
    check_weights(resolve_model("fomo", backend="synthetic", model_config={"weights": str(weights)}))
    monkeypatch.setenv(fw.AUTO_DOWNLOAD_ENV, "0")
    with pytest.raises(ModelError, match="No weights found for model 'fomo'"):
        check_weights(resolve_model("fomo", backend="synthetic"))
    assert net.opened == []
    assert net.probed == []


# -- in the engine -------------------------------------------------------------------------------------
def test_shares_the_twelve_band_fetch_with_terramind(weights: Path) -> None:
    from rs_embed_dask.resolve import resolve_model

    a = resolve_model("fomo", backend="synthetic", model_config={**TINY, "weights": str(weights)})
    b = resolve_model("terramind", backend="synthetic", model_config={"implementation": "native"})
    assert a.temporal_semantics == "single"
    assert a.input_key is not None
    assert a.input_key == b.input_key


@pytest.mark.cluster
@pytest.mark.slow
def test_export_with_terramind_fetches_once_and_matches_get_embedding(weights: Path, tmp_path: Path) -> None:
    import _sensor_log_plugins as slog
    from _exports import threaded_export
    from model_cases.terramind import write_checkpoint as terramind_checkpoint

    from rs_embed_dask import BBox, PointBuffer, TemporalSpec, get_embedding, load_export

    when = TemporalSpec.range("2022-06-01", "2022-09-01")
    rois = [PointBuffer(8.40 + 0.01 * i, 47.30, 320) for i in range(2)] + [BBox(8.45, 47.30, 8.456, 47.303)]
    cfgs = {
        "fomo": {**TINY, "weights": str(weights)},
        "terramind": {"model_key": "terramind_v1_tiny", "implementation": "native",
                      "weights": str(terramind_checkpoint(tmp_path))},
    }  # fmt: skip
    log, out = str(tmp_path / "fetches.log"), tmp_path / "mixed.npz"
    slog.register()
    try:
        man = threaded_export(out, cfgs, rois, when, backend=slog.PROVIDER_NAME, provider_options={"log": log},
                              device="cpu", config={"chunk_size": 2})  # fmt: skip
    finally:
        slog.unregister()
    assert man["status"] == "ok"
    per_roi = Counter(f["roi"] for f in slog.fetches(log))
    assert len(per_roi) == len(rois)
    assert set(per_roi.values()) == {1}  # one 12-band fetch per ROI, shared by both models
    with pytest.warns(Warning, match="different shapes per item"):  # the rectangle's square is 67 px
        res = load_export(out)
    emb = np.asarray(res.embedding("fomo"))
    assert emb.shape == (3, TINY["dim"])
    for i in (1, 2):  # a PointBuffer and a rectangle (fetched as a square, pooled over its cells)
        ref = get_embedding(
            "fomo", spatial=rois[i], temporal=when, backend="synthetic", device="cpu", **cfgs["fomo"]
        )
        np.testing.assert_allclose(emb[i], np.asarray(ref.data), rtol=1e-4, atol=1e-5)
