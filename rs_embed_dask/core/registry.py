"""Registries of models and providers.

Two tiers, as xarray's backends: built-ins known by import path (imported on
first use, so listing and describing never imports torch or Earth Engine),
and third-party plugins discovered once from the entry-point groups
``rs_embed_dask.models`` and ``rs_embed_dask.providers``.  A plugin that
fails to load gives a warning, never an import crash.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from rs_embed_dask.core.errors import ModelError, ProviderError, RSEmbedWarning

if TYPE_CHECKING:  # the base modules import numpy; the registry stays import-light
    from rs_embed_dask.models.base import Embedder
    from rs_embed_dask.providers.base import Provider

__all__ = [
    "canonical_model_name",
    "describe_model",
    "get_embedder_cls",
    "get_model_class",
    "get_provider_class",
    "list_models",
    "list_providers",
    "register",
    "register_model",
    "register_provider",
]

MODEL_GROUP = "rs_embed_dask.models"
PROVIDER_GROUP = "rs_embed_dask.providers"

# name -> "module:Class" (built-ins) or the class itself (registered at run time)
_BUILTIN_MODELS: dict[str, str] = {
    "rcf": "rs_embed_dask.models.rcf:RCFEmbedder",
    "ssl4eo_s2_resnet": "rs_embed_dask.models.torchgeo_models:SSL4EOResNetEmbedder",
    "ssl4eo_s2_vit": "rs_embed_dask.models.torchgeo_models:SSL4EOViTEmbedder",
    "panopticon": "rs_embed_dask.models.torchgeo_models:PanopticonEmbedder",
    "copernicusfm": "rs_embed_dask.models.torchgeo_models:CopernicusFMEmbedder",
    "croma": "rs_embed_dask.models.torchgeo_models:CROMAEmbedder",
    "prithvi": "rs_embed_dask.models.prithvi:PrithviEmbedder",
    "gse": "rs_embed_dask.models.gse:GSEAnnualEmbedder",
    "remoteclip": "rs_embed_dask.models.remoteclip:RemoteCLIPEmbedder",
    "satmae": "rs_embed_dask.models.satmae:SatMAEEmbedder",
    "scalemae": "rs_embed_dask.models.scalemae:ScaleMAEEmbedder",
    "satmaepp": "rs_embed_dask.models.satmaepp:SatMAEPPEmbedder",
    "clay": "rs_embed_dask.models.clay:ClayEmbedder",
    "dofa": "rs_embed_dask.models.dofa:DOFAEmbedder",
    "terrafm": "rs_embed_dask.models.terrafm:TerraFMEmbedder",
    "thor": "rs_embed_dask.models.thor:ThorEmbedder",
    "tessera": "rs_embed_dask.models.tessera:TesseraEmbedder",
    "copernicus": "rs_embed_dask.models.copernicus:CopernicusEmbedder",
    "terramind": "rs_embed_dask.models.terramind:TerraMindEmbedder",
    "olmoearth": "rs_embed_dask.models.olmoearth:OlmoEarthEmbedder",
    "anysat": "rs_embed_dask.models.anysat:AnySatEmbedder",
    "galileo": "rs_embed_dask.models.galileo:GalileoEmbedder",
    "agrifm": "rs_embed_dask.models.agrifm:AgriFMEmbedder",
    "fomo": "rs_embed_dask.models.fomo:FomoEmbedder",
    "satvision": "rs_embed_dask.models.satvision:SatVisionEmbedder",
    "wildsat": "rs_embed_dask.models.wildsat:WildSATEmbedder",
}
_BUILTIN_PROVIDERS: dict[str, str] = {
    "synthetic": "rs_embed_dask.providers.synthetic:SyntheticProvider",
    "local": "rs_embed_dask.providers.local:LocalProvider",
    "stac": "rs_embed_dask.providers.stac:StacProvider",
    "gee": "rs_embed_dask.providers.gee:GEEProvider",
}
# rs-embed's aliases of the models we have (reference 1.4), plus our own
_MODEL_ALIASES: dict[str, str] = {
    "mosaiks": "rcf",
    "copernicus_embed": "copernicus",
    "gse_annual": "gse",
    "prithvi_eo_v2_s2_6b": "prithvi",
    "remoteclip_s2rgb": "remoteclip",
    "satmae_rgb": "satmae",
    "scalemae_rgb": "scalemae",
    "thor_1_0_base": "thor",
    "satmae++": "satmaepp",
    "satmaepp_rgb": "satmaepp",
    "terrafm_b": "terrafm",
    "satvision_toa": "satvision",
}

_models: dict[str, Any] = {}
_providers: dict[str, Any] = {}
_entry_points_loaded = False
_lock = threading.RLock()


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for group, target, builtins in (
            (MODEL_GROUP, _models, _BUILTIN_MODELS),
            (PROVIDER_GROUP, _providers, _BUILTIN_PROVIDERS),
        ):
            for ep in entry_points(group=group):
                name = ep.name.strip().lower()
                if name in builtins or name in target:
                    if ep.value.replace(" ", "") != builtins.get(name, "").replace(" ", ""):
                        warnings.warn(
                            f"{group} entry point {ep.name!r} ({ep.value}) duplicates a "
                            "registered name and is ignored.",
                            RSEmbedWarning,
                            stacklevel=3,
                        )
                    continue
                target[name] = ep.value


def _resolve(ref: Any, kind: str, name: str) -> Any:
    if not isinstance(ref, str):
        return ref
    err = ModelError if kind == "model" else ProviderError
    module, _, attr = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as exc:
        raise err(f"The {kind} {name!r} could not be imported from {ref}: {exc!r}") from exc
    # entry points are not checked at registration time: check the class here
    if kind == "model":
        from rs_embed_dask.models.base import Embedder as base
    else:
        from rs_embed_dask.providers.base import Provider as base  # type: ignore[assignment]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise err(f"The {kind} {name!r} ({ref}) is not a subclass of {base.__module__}.{base.__name__}.")
    return obj


def _all_models() -> dict[str, Any]:
    _load_entry_points()
    return {**_BUILTIN_MODELS, **_models}


def _all_providers() -> dict[str, Any]:
    _load_entry_points()
    return {**_BUILTIN_PROVIDERS, **_providers}


def canonical_model_name(name: str) -> str:
    """``str(name).strip().lower()`` then the alias map."""
    key = str(name).strip().lower()
    return _MODEL_ALIASES.get(key, key)


def list_models(*, include_aliases: bool = False) -> list[str]:
    """Sorted names of every registered model.

    Models whose optional dependency is missing are listed too; using them
    raises :class:`ModelError` with the ``pip install`` to run.
    """
    names = set(_all_models())
    if include_aliases:
        names |= {a for a, target in _MODEL_ALIASES.items() if target in names}
    return sorted(names)


def get_model_class(name: str) -> type[Embedder]:
    """The embedder class registered as ``name`` (aliases allowed)."""
    key = canonical_model_name(name)
    models = _all_models()
    if key not in models:
        raise ModelError(
            f"Unknown model {name!r}. Available: {sorted(models)}. Register your own with "
            "rs_embed_dask.register_model(name, cls) or the 'rs_embed_dask.models' entry point."
        )
    cls = _resolve(models[key], "model", key)
    with _lock:
        if key in _models:
            _models[key] = cls
    return cls


def describe_model(model: str) -> dict[str, Any]:
    """The model's ``describe()`` dict (bands, scale, dims, outputs, ...).

    Raises
    ------
    ModelError
        For an unknown name, listing the available ones.
    """
    cls = get_model_class(model)
    return dict(cls().describe())


def register_model(name: str, cls: Any, *, aliases: tuple[str, ...] = (), overwrite: bool = False) -> None:
    """Register an embedder class under ``name``.

    Parameters
    ----------
    name : str
        Model id (case-insensitive).
    cls : type
        A subclass of :class:`rs_embed_dask.models.base.Embedder`.
    aliases : tuple of str
        Other names for it.
    overwrite : bool
        Replace an existing registration.
    """
    from rs_embed_dask.models.base import Embedder

    if not (isinstance(cls, type) and issubclass(cls, Embedder)):
        raise TypeError(f"register_model expects an Embedder subclass, got {cls!r}")
    key = canonical_model_name(name)
    with _lock:
        if not overwrite and key in _all_models():
            raise ModelError(f"Model {key!r} is already registered; pass overwrite=True to replace it.")
        _models[key] = cls
        for a in aliases:
            _MODEL_ALIASES[str(a).strip().lower()] = key


def unregister_model(name: str) -> None:
    """Remove a model registered at run time (built-ins stay)."""
    with _lock:
        _models.pop(canonical_model_name(name), None)


def list_providers() -> list[str]:
    """Sorted names of every registered provider."""
    return sorted(_all_providers())


def get_provider_class(name: str) -> type[Provider]:
    """The provider class registered as ``name``."""
    key = str(name).strip().lower()
    providers = _all_providers()
    if key not in providers:
        raise ProviderError(
            f"Unknown provider backend={name!r}. Available: {sorted(providers)} (or 'auto')."
        )
    cls = _resolve(providers[key], "provider", key)
    with _lock:
        if key in _providers:
            _providers[key] = cls
    return cls


def register_provider(name: str, cls: Any, *, overwrite: bool = False) -> None:
    """Register a provider class under ``name`` (a subclass of ``Provider``)."""
    from rs_embed_dask.providers.base import Provider

    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"register_provider expects a Provider subclass, got {cls!r}")
    key = str(name).strip().lower()
    with _lock:
        if not overwrite and key in _all_providers():
            raise ProviderError(f"Provider {key!r} is already registered; pass overwrite=True.")
        _providers[key] = cls


def unregister_provider(name: str) -> None:
    """Remove a provider registered at run time (built-ins stay)."""
    with _lock:
        _providers.pop(str(name).strip().lower(), None)


# -- rs-embed's names (``rs_embed.core.registry``) ---------------------------------------------
T = TypeVar("T", bound=type)

#: rs-embed's name for :func:`get_model_class`.
get_embedder_cls = get_model_class


def register(name: str) -> Callable[[T], T]:
    """Class decorator registering an embedder under ``name`` (replacing an earlier one).

    Parameters
    ----------
    name : str
        Model id or alias (case-insensitive).

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Examples
    --------
    >>> from rs_embed_dask.core.registry import register
    >>> from rs_embed_dask.models.base import Embedder
    >>> @register("my_model")  # doctest: +SKIP
    ... class MyModel(Embedder): ...
    """

    def deco(cls: T) -> T:
        register_model(name, cls, overwrite=True)
        return cls

    return deco
