"""Request resolution shared by the single-ROI API and the export engine.

Everything here runs on the client, before any task is submitted, and turns
user input into validated, picklable values (or raises the rs-embed
exception naming the field and the allowed values).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class, get_provider_class
from rs_embed_dask.core.specs import BBox, FetchSpec, PointBuffer, SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.modality import resolve_modality, stamp

__all__ = [
    "ResolvedModel",
    "default_temporal",
    "embedder_cache_key",
    "flatten_model_config",
    "get_embedder",
    "get_provider",
    "keep_resident",
    "normalize_spatial",
    "normalize_temporal",
    "provider_for_collection",
    "resolve_backend",
    "resolve_model",
    "sensor_cache_key",
    "with_frames",
]

DEFAULT_RANGE = ("2022-06-01", "2022-09-01")


def normalize_spatial(spatial: Any) -> SpatialSpec:
    """Validate a ROI and return it in EPSG:4326.

    Raises
    ------
    ModelError
        When ``spatial`` is not a BBox or PointBuffer (rs-embed's type).
    SpecError
        When its values are invalid, including a PointBuffer centre outside
        [-180, 180] x [-90, 90] (``PointBuffer.validate`` lets it pass, as
        rs-embed's does, but no grid window exists for it).
    """
    if not isinstance(spatial, (BBox, PointBuffer)):
        raise ModelError(f"Invalid spatial spec type: {type(spatial)}")
    spatial.validate()
    out = spatial.to_wgs84()
    if isinstance(out, PointBuffer) and not (-180.0 <= out.lon <= 180.0 and -90.0 <= out.lat <= 90.0):
        raise SpecError(
            f"PointBuffer centre out of range: lon must be in [-180, 180] and lat in [-90, 90]; "
            f"got lon={out.lon}, lat={out.lat}."
        )
    return out


def normalize_temporal(temporal: Any) -> TemporalSpec | None:
    """Validate a temporal spec (``None`` passes through)."""
    if temporal is None:
        return None
    if not isinstance(temporal, TemporalSpec):
        raise SpecError(
            f"temporal must be a TemporalSpec (TemporalSpec.year(...) or TemporalSpec.range(...)); "
            f"got {type(temporal).__name__}"
        )
    temporal.validate()
    return temporal


def default_temporal(model: str) -> TemporalSpec:
    """rs-embed's default window for on-the-fly models, with its warning."""
    warnings.warn(
        f"temporal=None for model {model!r}: using the default window "
        f"{DEFAULT_RANGE[0]}..{DEFAULT_RANGE[1]}.",
        UserWarning,
        stacklevel=4,
    )
    return TemporalSpec.range(*DEFAULT_RANGE)


#: ``SensorSpec.collection`` prefixes that name their provider (``backend="auto"``).
_COLLECTION_PREFIXES = {"local:": "local", "file:": "local", "stac:": "stac", "synthetic:": "synthetic"}
_PATH_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc", ".nc4", ".zarr")


def _looks_like_path(collection: str) -> bool:
    """``True`` for file paths and globs (not Earth Engine ids such as ``COPERNICUS/S2``)."""
    c = collection.strip()
    if c.startswith(("/", "~", "./", "../", ".\\", "..\\")) or any(ch in c for ch in "*?["):
        return True
    if len(c) > 2 and c[1] == ":" and c[2] in "/\\":  # a Windows drive
        return True
    return c.lower().rstrip("/\\").endswith(_PATH_SUFFIXES)


def provider_for_collection(collection: str | None) -> str:
    """The provider ``backend="auto"`` picks for a sensor collection.

    ``local:<path>`` or a path -> ``"local"``; ``stac:<collection>`` ->
    ``"stac"``; ``synthetic`` -> ``"synthetic"``; anything else (an Earth
    Engine collection id) -> ``$RS_EMBED_DEFAULT_PROVIDER``, else ``"gee"``.
    """
    c = str(collection or "").strip()
    low = c.lower()
    for prefix, name in _COLLECTION_PREFIXES.items():
        if low.startswith(prefix):
            return name
    if low == "synthetic":
        return "synthetic"
    if low == "local" or (c and _looks_like_path(c)):
        return "local"
    return os.environ.get("RS_EMBED_DEFAULT_PROVIDER", "").strip().lower() or "gee"


def resolve_backend(
    backend: str | None, describe: Mapping[str, Any], sensor: SensorSpec | None = None
) -> str:
    """Normalise ``backend`` and check the model supports it.

    Parameters
    ----------
    backend : str or None
        ``"auto"`` (or ``None``) or a registered provider name.
    describe : dict
        The model's ``describe()``; its ``backend`` list says whether it reads
        from a provider (``"provider"``) or is its own source (``"auto"``).
    sensor : SensorSpec, optional
        The resolved sensor; with ``"auto"`` its collection picks the provider
        (:func:`provider_for_collection`).  Without it ``"auto"`` means
        ``$RS_EMBED_DEFAULT_PROVIDER``, else ``"gee"``.

    Returns
    -------
    str
        A registered provider name, or ``"auto"`` for precomputed products,
        which never touch a provider.

    Raises
    ------
    ProviderError
        When the named (or auto-selected) provider is not registered; the
        message lists the registered ones.
    ModelError
        When the model does not support the backend.
    """
    b = str(backend or "auto").strip().lower()
    kinds = [str(k).lower() for k in describe.get("backend", ["provider"])]
    model_id = describe.get("model", "?")
    if b == "auto":
        if "provider" not in kinds:
            return "auto"
        if sensor is None:  # checked once the sensor is known (resolve_model calls again)
            return os.environ.get("RS_EMBED_DEFAULT_PROVIDER", "").strip().lower() or "gee"
        picked = provider_for_collection(sensor.collection)
        get_provider_class(picked)  # ProviderError listing the registered providers
        return picked
    if b in kinds:
        return b
    if b == "gee" and kinds == ["auto"]:
        return "auto"  # rs-embed: products that are their own source resolve "gee" to "auto"
    if "provider" in kinds:
        get_provider_class(b)  # ProviderError listing the known providers
        return b
    raise ModelError(f"Model {model_id!r} does not support backend={backend!r}. Supported: {kinds}")


def flatten_model_config(model_config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Model options with a ``model_config={...}`` keyword merged in.

    ``get_embedding(..., weights=PATH)`` (rs-embed's ``**model_kwargs``) and
    ``get_embedding(..., model_config={"weights": PATH})`` (the form of
    ``ExportModelRequest`` and job files) mean the same.

    Raises
    ------
    ModelError
        ``model_config`` is not a mapping, or names a key also given directly.
    """
    if not model_config or "model_config" not in model_config:
        return dict(model_config) if model_config else None
    rest = dict(model_config)
    nested = rest.pop("model_config")
    if nested is None:
        return rest or None
    if not isinstance(nested, Mapping):
        raise ModelError(f"model_config must be a dict of model options; got {type(nested).__name__}.")
    both = sorted(set(rest) & set(nested))
    if both:
        raise ModelError(f"Model option(s) {both} given both as keywords and in model_config; pass each once.")
    return {**rest, **dict(nested)} or None


@dataclass(frozen=True)
class ResolvedModel:
    """One model of a request after validation (picklable, hashable)."""

    name: str
    canonical: str
    model_config: tuple[tuple[str, Any], ...]
    backend: str
    sensor: SensorSpec | None
    model_type: str
    temporal_semantics: str
    n_frames: int | None

    @property
    def config_dict(self) -> dict[str, Any]:
        """``model_config`` as a dict."""
        return dict(self.model_config)

    @property
    def is_precomputed(self) -> bool:
        """``True`` for products that are their own source."""
        return "precomputed" in self.model_type

    @property
    def input_key(self) -> str | None:
        """Input-sharing key: rs-embed's ``sensor_cache_key`` (same key, same fetch).

        Models of one export reading the same sensor through different
        providers get distinct keys from the export plan.
        """
        if self.sensor is None or self.is_precomputed:
            return None
        return sensor_cache_key(self.sensor, self.temporal_semantics)


def sensor_cache_key(sensor: SensorSpec, semantics: str = "single", backend: str = "") -> str:
    """First 12 hex digits of the SHA-1 of the sensor's fetch identity (+ semantics)."""
    ident = dict(sensor.identity())
    ident["bands"] = list(ident["bands"])
    if backend:
        ident["backend"] = backend
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    if semantics != "single":
        safe = "".join(c if c.isalnum() else "_" for c in semantics)
        digest = f"{digest}--{safe}"
    return digest


def resolve_model(
    name: str,
    *,
    backend: str | None = "auto",
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    model_config: Mapping[str, Any] | None = None,
    output_mode: str = "pooled",
) -> ResolvedModel:
    """Validate one model request (rs-embed's check order) and resolve its sensor."""
    if sensor is not None and fetch is not None:
        raise ModelError("Use either sensor=... or fetch=..., not both.")
    if sensor is not None and not isinstance(sensor, SensorSpec):
        raise SpecError(f"sensor must be a SensorSpec; got {type(sensor).__name__}")
    if fetch is not None and not isinstance(fetch, FetchSpec):
        raise SpecError(f"fetch must be a FetchSpec; got {type(fetch).__name__}")
    canonical = canonical_model_name(name)
    cls = get_model_class(name)
    model_config = flatten_model_config(model_config)
    embedder = cls(model_config)  # unknown model_config keys -> ModelError
    cls.check_available()  # missing optional dependency -> ModelError with the pip command
    desc = dict(embedder.describe())
    desc.setdefault("model", canonical)
    resolved_backend = resolve_backend(backend, desc)
    if output_mode not in desc.get("output", ["pooled", "grid"]):
        raise ModelError(
            f"Model {canonical!r} does not support output mode {output_mode!r}. "
            f"Supported: {desc.get('output')}"
        )
    mod, profile = resolve_modality(
        canonical, desc, modality=modality, sensor=sensor, aliases=cls.modality_aliases
    )
    key = cls.modality_config_key
    if mod is not None and key and profile is not None and embedder.model_config.get(key) != mod:
        given = (model_config or {}).get(key)
        if given is not None:
            raise ModelError(
                f"Conflicting modality values: model_config[{key!r}]={given!r}, modality={mod!r}."
            )
        # the weights differ per modality: the worker must build this modality's encoder
        model_config = {**dict(model_config or {}), key: mod}
        embedder = cls(model_config)
        desc = {"model": canonical, **dict(embedder.describe())}
    base = profile if profile is not None else embedder.default_sensor()
    if sensor is not None:
        sensor = stamp(sensor, mod)
        sensor.validate()
        resolved_sensor: SensorSpec | None = sensor
    elif fetch is not None:
        if base is None:
            raise ModelError(f"Model {canonical!r} does not support fetch=... overrides.")
        resolved_sensor = stamp(fetch.apply(base), mod)
        resolved_sensor.validate()
    else:
        resolved_sensor = stamp(base, mod) if base is not None else None
    if resolved_sensor is None and not embedder.is_precomputed:
        raise ModelError(f"Model {canonical!r} has no default sensor; pass sensor=SensorSpec(...).")
    if resolved_backend != "auto" and str(backend or "auto").strip().lower() == "auto":
        resolved_backend = resolve_backend(backend, desc, resolved_sensor)
    return ResolvedModel(
        name=str(name),
        canonical=canonical,
        model_config=tuple(sorted((model_config or {}).items())),
        backend=resolved_backend,
        sensor=resolved_sensor,
        model_type=cls.model_type,
        temporal_semantics=embedder.temporal_semantics(),
        n_frames=embedder.frame_count(),
    )


def with_frames(rm: ResolvedModel, temporal: TemporalSpec | None) -> ResolvedModel:
    """``rm`` with the frame count its model fetches for ``temporal`` (prithvi derives it from the window).

    ``temporal=None`` stands for rs-embed's default window.  Products and
    single-composite models come back unchanged.
    """
    if rm.is_precomputed:
        return rm
    embedder = get_model_class(rm.canonical)(rm.config_dict)
    n = embedder.frame_count(temporal)
    if n == rm.n_frames:
        return rm
    return replace(rm, n_frames=n, temporal_semantics=embedder.temporal_semantics(temporal))


# -- per-process caches: a model is built once per (model, config, device) ----------
_EMBEDDERS: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_PROVIDERS: dict[tuple[str, str], Any] = {}
_cache_lock = threading.RLock()
_MAX_EMBEDDERS = 8
#: Number of times each (model, config, device) was loaded in this process.
LOAD_COUNTS: dict[tuple[str, str, str], int] = {}


def _config_token(cfg: Mapping[str, Any] | tuple[tuple[str, Any], ...] | None) -> str:
    return json.dumps(dict(cfg or {}), sort_keys=True, default=repr)


def configure_cpu_threads() -> int | None:
    """Apply ``$RS_EMBED_TORCH_THREADS`` to torch's intra-op pool (CPU inference).

    Dask starts worker processes with ``OMP_NUM_THREADS=1``, right for many
    single-threaded tasks but not for the one inference task of a CPU
    stand-in worker, which should use the cores it was given;
    :func:`rs_embed_dask.cluster.local_cluster` sets the variable for those
    workers.  Returns the thread count applied, or ``None``.
    """
    value = os.environ.get("RS_EMBED_TORCH_THREADS", "").strip()
    if not value:
        return None
    try:
        n = max(1, int(value))
    except ValueError:
        warnings.warn(f"RS_EMBED_TORCH_THREADS={value!r} is not an integer; ignored.", UserWarning, stacklevel=2)
        return None
    try:
        import torch
    except ImportError:
        return None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def get_embedder(name: str, model_config: Any = None, device: str = "auto") -> Any:
    """The process-wide, loaded embedder for ``(name, model_config, device)``."""
    key = embedder_cache_key(name, model_config, device)
    dev = key[2]
    with _cache_lock:
        cls = get_model_class(name)
        emb = _EMBEDDERS.get(key)
        # a registration replaced with overwrite=True must not keep serving the old class
        if emb is not None and type(emb) is cls:
            _EMBEDDERS.move_to_end(key)
            return emb
        emb = cls(dict(model_config or {}))
        cls.check_available()
        if dev == "cpu":
            configure_cpu_threads()
        if not emb.is_precomputed:
            from rs_embed_dask.cluster.worker_setup import tune_malloc_for_inference

            tune_malloc_for_inference()
        emb.load(dev)
        LOAD_COUNTS[key] = LOAD_COUNTS.get(key, 0) + 1
        _EMBEDDERS[key] = emb
        while len(_EMBEDDERS) > _MAX_EMBEDDERS:
            _EMBEDDERS.popitem(last=False)
        return emb


def embedder_cache_key(name: str, model_config: Any = None, device: str = "auto") -> tuple[str, str, str]:
    """The key of ``(name, model_config, device)`` in this process's embedder cache."""
    from rs_embed_dask.models.base import resolve_device

    return canonical_model_name(name), _config_token(model_config), resolve_device(device)


def keep_resident(key: tuple[str, str, str], embedder: Any) -> None:
    """Put a loaded embedder back in the cache under ``key`` if it was evicted or reset.

    A :class:`~rs_embed_dask.Model` keeps its model for its whole life, as
    rs-embed's does, also across :func:`reset_runtime`.
    """
    with _cache_lock:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = embedder


def get_provider(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The process-wide, ready provider for ``(name, options)``."""
    key = (str(name).strip().lower(), _config_token(options))
    with _cache_lock:
        cls = get_provider_class(name)
        prov = _PROVIDERS.get(key)
        if prov is None or type(prov) is not cls:
            cls.check_available()
            prov = cls(**dict(options or {}))
            try:
                prov.ensure_ready()
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(f"Failed to initialize provider {name!r}: {exc!r}") from exc
            _PROVIDERS[key] = prov
        return prov


def reset_runtime() -> dict[str, int]:
    """Drop cached embedders and providers of this process."""
    with _cache_lock:
        n = len(_EMBEDDERS) + len(_PROVIDERS)
        _EMBEDDERS.clear()
        _PROVIDERS.clear()
        LOAD_COUNTS.clear()
    return {"runtime_caches_cleared": n}
