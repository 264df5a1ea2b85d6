"""Model and provider registries: listing, describing, registration, entry points."""

from __future__ import annotations

import warnings
from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import (
    ModelError,
    PointBuffer,
    ProviderError,
    TemporalSpec,
    describe_model,
    get_embedding,
    list_models,
    list_providers,
    register_model,
    register_provider,
)
from rs_embed_dask.core import registry as reg
from rs_embed_dask.core.errors import RSEmbedWarning
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import Embedder
from rs_embed_dask.models.rcf import RCFEmbedder
from rs_embed_dask.providers.synthetic import SyntheticProvider
from rs_embed_dask.resolve import get_embedder, get_provider, reset_runtime

ROI = PointBuffer(121.5, 31.2, 320)
T = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Run each test on copies of the registry state; nothing leaks to other tests."""
    monkeypatch.setattr(reg, "_models", dict(reg._models))
    monkeypatch.setattr(reg, "_providers", dict(reg._providers))
    monkeypatch.setattr(reg, "_MODEL_ALIASES", dict(reg._MODEL_ALIASES))
    monkeypatch.setattr(reg, "_entry_points_loaded", reg._entry_points_loaded)
    yield
    reset_runtime()  # drop cached instances of the test classes


class TinyEmbedder(Embedder):
    """A pooled-only toy: the per-band mean of the input."""

    name = "tiny"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "type": "onthefly",
            "backend": ["provider"],
            "output": ["pooled"],
            "inputs": {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": ["B4", "B8"]},
            "defaults": {"scale_m": 10},
            "embedding_dim": 2,
        }

    def embed_inputs(self, inputs, *, output, contexts=None):
        return [
            Embedding(np.asarray(x, np.float32).mean(axis=(-2, -1)), self.base_meta(output)) for x in inputs
        ]


class NeedyEmbedder(TinyEmbedder):
    """Needs a library that is not installed."""

    name = "needy"
    requires = ("definitely_not_installed_pkg",)
    extra = "models"


class EPEmbedder(TinyEmbedder):
    name = "ep_model"


class EPProvider(SyntheticProvider):
    name = "ep_provider"


class NeedyProvider(SyntheticProvider):
    name = "needy_provider"
    requires = ("definitely_not_installed_pkg",)
    extra = "stac"


class NotAModel:
    pass


# -- listing and describing -----------------------------------------------------------------
def test_list_models():
    names = list_models()
    assert isinstance(names, list)
    assert names == sorted(names)
    assert "rcf" in names
    assert "mosaiks" not in names
    assert "mosaiks" in list_models(include_aliases=True)


def test_list_providers():
    names = list_providers()
    assert names == sorted(names)
    assert {"synthetic", "local"} <= set(names)


def test_describe_model():
    d = describe_model("rcf")
    for key in ("type", "backend", "output", "inputs", "defaults", "embedding_dim"):
        assert key in d
    assert describe_model(" RCF ") == d  # canonicalised: strip + lower
    assert describe_model("mosaiks") == d  # alias
    d["embedding_dim"] = -1
    assert describe_model("rcf")["embedding_dim"] == 512  # a copy, not the cached dict


def test_unknown_names_list_what_exists():
    with pytest.raises(ModelError) as info:
        describe_model("nope")
    assert str(info.value).startswith("Unknown model 'nope'. Available: [")
    assert "'rcf'" in str(info.value)
    with pytest.raises(ProviderError) as pinfo:
        reg.get_provider_class("nope")
    assert "'synthetic'" in str(pinfo.value)
    assert "'local'" in str(pinfo.value)


# -- registration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", [NotAModel, NotAModel(), "rs_embed_dask.models.rcf:RCFEmbedder", SyntheticProvider]
)
def test_register_model_rejects_non_embedders(bad):
    with pytest.raises(TypeError, match="Embedder subclass"):
        register_model("bad", bad)


@pytest.mark.parametrize("bad", [NotAModel, RCFEmbedder, SyntheticProvider()])
def test_register_provider_rejects_non_providers(bad):
    with pytest.raises(TypeError, match="Provider subclass"):
        register_provider("bad", bad)


def test_register_model_and_use_it():
    register_model("Tiny", TinyEmbedder, aliases=("tiny_alias",))
    assert "tiny" in list_models()
    assert "tiny_alias" not in list_models()
    assert "tiny_alias" in list_models(include_aliases=True)
    assert reg.get_model_class("TINY_ALIAS") is TinyEmbedder
    assert describe_model("tiny_alias")["embedding_dim"] == 2
    emb = get_embedding("tiny", spatial=ROI, temporal=T, backend="synthetic")
    assert emb.data.shape == (2,)
    assert emb.meta["model"] == "tiny"


def test_duplicate_model_needs_overwrite():
    register_model("tiny", TinyEmbedder)
    with pytest.raises(ModelError, match="already registered"):
        register_model("tiny", EPEmbedder)
    with pytest.raises(ValueError, match="already registered"):  # ModelError is a ValueError
        register_model("rcf", TinyEmbedder)
    register_model("tiny", EPEmbedder, overwrite=True)
    assert reg.get_model_class("tiny") is EPEmbedder
    register_model("rcf", TinyEmbedder, overwrite=True)
    assert reg.get_model_class("rcf") is TinyEmbedder
    reg.unregister_model("rcf")
    assert reg.get_model_class("rcf") is RCFEmbedder  # the built-in again


def test_overwrite_replaces_cached_instances():
    register_model("tiny", TinyEmbedder)
    register_provider("ep_provider", SyntheticProvider)
    assert type(get_embedder("tiny", None, "cpu")) is TinyEmbedder
    assert type(get_provider("ep_provider")) is SyntheticProvider
    register_model("tiny", EPEmbedder, overwrite=True)
    register_provider("ep_provider", EPProvider, overwrite=True)
    assert type(get_embedder("tiny", None, "cpu")) is EPEmbedder
    assert type(get_provider("ep_provider")) is EPProvider


def test_register_provider_and_duplicates():
    register_provider("ep_provider", EPProvider)
    assert "ep_provider" in list_providers()
    assert reg.get_provider_class("EP_Provider") is EPProvider
    with pytest.raises(ProviderError, match="already registered"):
        register_provider("ep_provider", SyntheticProvider)
    with pytest.raises(ProviderError, match="already registered"):
        register_provider("synthetic", EPProvider)
    register_provider("synthetic", EPProvider, overwrite=True)
    assert reg.get_provider_class("synthetic") is EPProvider
    reg.unregister_provider("synthetic")
    assert reg.get_provider_class("synthetic") is SyntheticProvider


# -- entry points --------------------------------------------------------------------------------
def _fake_entry_points(monkeypatch, models=(), providers=()):
    groups = {
        reg.MODEL_GROUP: [EntryPoint(n, v, reg.MODEL_GROUP) for n, v in models],
        reg.PROVIDER_GROUP: [EntryPoint(n, v, reg.PROVIDER_GROUP) for n, v in providers],
    }
    calls = []

    def entry_points(*, group):
        calls.append(group)
        return groups.get(group, [])

    monkeypatch.setattr(reg, "entry_points", entry_points)
    monkeypatch.setattr(reg, "_entry_points_loaded", False)
    return calls


def test_entry_point_discovery(monkeypatch):
    calls = _fake_entry_points(
        monkeypatch,
        models=[("EP_Model", f"{__name__}:EPEmbedder")],
        providers=[("ep_provider", f"{__name__}:EPProvider")],
    )
    assert "ep_model" in list_models()
    assert "ep_provider" in list_providers()
    assert reg.get_model_class("ep_model") is EPEmbedder
    assert reg.get_provider_class("ep_provider") is EPProvider
    assert describe_model("ep_model")["embedding_dim"] == 2
    list_models()
    assert sorted(calls) == sorted([reg.MODEL_GROUP, reg.PROVIDER_GROUP])  # discovered once
    emb = get_embedding("ep_model", spatial=ROI, temporal=T, backend="ep_provider")
    ref = get_embedding("ep_model", spatial=ROI, temporal=T, backend="synthetic")
    np.testing.assert_array_equal(emb.data, ref.data)


def test_entry_point_duplicating_a_builtin_is_ignored_with_warning(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        models=[("rcf", f"{__name__}:EPEmbedder"), ("rcf", "rs_embed_dask.models.rcf:RCFEmbedder")],
    )
    with pytest.warns(RSEmbedWarning, match="duplicates a registered name"):
        names = list_models()
    assert names.count("rcf") == 1
    assert reg.get_model_class("rcf") is RCFEmbedder


def test_own_entry_point_is_silent(monkeypatch):
    # the package declares its built-ins as entry points too: no warning for those
    _fake_entry_points(monkeypatch, models=[("rcf", "rs_embed_dask.models.rcf:RCFEmbedder")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "rcf" in list_models()


def test_broken_entry_point_is_listed_but_fails_clearly(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        models=[("ghost", "no_such_module_xyz:Ghost"), ("notmodel", f"{__name__}:NotAModel")],
        providers=[("ghostp", "no_such_module_xyz:GhostProvider")],
    )
    assert {"ghost", "notmodel"} <= set(list_models())  # listing never imports
    with pytest.raises(ModelError, match="could not be imported from no_such_module_xyz:Ghost"):
        describe_model("ghost")
    with pytest.raises(ModelError, match=r"not a subclass of rs_embed_dask\.models\.base\.Embedder"):
        describe_model("notmodel")
    with pytest.raises(ProviderError, match="could not be imported"):
        reg.get_provider_class("ghostp")


# -- optional dependencies -------------------------------------------------------------------------
PIP_HINT = "pip install 'rs-embed-dask[models]'"


def test_model_with_missing_library_is_listed_and_described():
    register_model("needy", NeedyEmbedder)
    assert "needy" in list_models()
    assert describe_model("needy")["embedding_dim"] == 2


def test_model_with_missing_library_fails_on_use():
    register_model("needy", NeedyEmbedder)
    with pytest.raises(ModelError) as info:
        get_embedding("needy", spatial=ROI, temporal=T, backend="synthetic")
    msg = str(info.value)
    assert PIP_HINT in msg
    assert "definitely_not_installed_pkg" in msg
    with pytest.raises(ModelError, match=__import__("re").escape(PIP_HINT)):
        get_embedder("needy", None, "cpu")


def test_provider_with_missing_library_fails_on_use():
    register_provider("needy_provider", NeedyProvider)
    assert "needy_provider" in list_providers()
    with pytest.raises(ProviderError, match=__import__("re").escape("pip install 'rs-embed-dask[stac]'")):
        get_provider("needy_provider")
    with pytest.raises(ProviderError, match="definitely_not_installed_pkg"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="needy_provider")
