"""Validate an ``export_batch`` request into an :class:`ExportPlan` (client side).

The checks run in rs-embed's order, so the same bad request raises the same
exception with the same message, before any task is submitted.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rs_embed_dask.core.errors import ModelError, SpecError
from rs_embed_dask.core.registry import get_model_class, get_provider_class
from rs_embed_dask.core.specs import FetchSpec, InputPrepSpec, OutputSpec, SensorSpec, resolve_input_prep
from rs_embed_dask.core.types import ExportConfig, ExportLayout, ExportModelRequest, ExportTarget
from rs_embed_dask.export.manifest import fingerprint_payload
from rs_embed_dask.resolve import (
    ResolvedModel,
    normalize_spatial,
    normalize_temporal,
    resolve_model,
    with_frames,
)
from rs_embed_dask.serialization import jsonable, request_fingerprint, sanitize_key

__all__ = ["ExportPlan", "InputSpec", "build_plan", "fetch_packaging", "shared_inputs"]

_EXT = {"npz": ".npz", "netcdf": ".nc", "zarr": ".zarr"}
_LEGACY_CONFIG_KEYS = {f for f in ExportConfig.__dataclass_fields__ if f != "input_prep"}


@dataclass(frozen=True)
class InputSpec:
    """One distinct fetch (sensor + temporal packaging) shared by the models that use it.

    ``owner`` names the input in the export (the first model that reads it);
    ``model`` is the member whose fetch is run: a square-fetching one when any
    member squares (the others cut their ROI out of the square).
    ``packaging`` is :func:`fetch_packaging` of the members.
    """

    key: str
    owner: str
    model: ResolvedModel
    users: tuple[str, ...]
    packaging: str = ""


@dataclass
class ExportPlan:
    """Everything the engine needs, validated and picklable."""

    spatials: Any  # list (validated) or a lazy iterator of validated specs
    n_items: int | None
    temporal: Any
    models: tuple[ResolvedModel, ...]
    inputs: dict[str, InputSpec]
    output: OutputSpec
    config: ExportConfig
    fmt: str
    layout: ExportLayout
    out_file: str | None
    out_dir: str | None
    names: tuple[str, ...] | None
    backend: str
    device: str
    input_prep: InputPrepSpec
    provider_options: dict[str, Any] = field(default_factory=dict)
    fingerprint_base: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    plugins: dict[str, Any] = field(default_factory=dict)
    #: what a resume must match (set by the engine: :func:`rs_embed_dask.export.identity.resume_identity`)
    identity: dict[str, Any] = field(default_factory=dict)
    #: the combined target as the user spelled it (the manifest records it, as rs-embed does);
    #: ``out_file`` is the same file made absolute, which the workers use
    out_file_given: str | None = None
    #: ROIs per chunk (task and store chunk) set by the engine from the inputs' bytes and the
    #: workers' memory (:mod:`rs_embed_dask.export.sizing`); ``None``: ``config.chunk_size``
    chunk_items: int | None = None

    @property
    def items_per_chunk(self) -> int:
        """ROIs per chunk: :attr:`chunk_items` once sized, else ``config.chunk_size``."""
        return int(self.chunk_items) if self.chunk_items else self.config.effective_chunk_size

    @property
    def spatials_in_fingerprint(self) -> bool:
        """Whether the request fingerprint covers the ROIs (a list does; a stream, even a sized one, does not)."""
        return isinstance(self.spatials, list)

    def input_key_of(self, model_name: str) -> str | None:
        """The input key a model reads (``None`` for precomputed products)."""
        for spec in self.inputs.values():
            if model_name in spec.users:
                return spec.key
        return None


def _normalize_target(
    target: Any,
    fmt: str,
    *,
    out: str | None,
    layout: str | None,
    out_dir: str | None,
    out_path: str | None,
    names: list[str] | None,
) -> ExportTarget:
    legacy = [x is not None for x in (out_dir, out_path)]
    if target is None:
        if out is not None or layout is not None:
            if any(legacy):
                raise ModelError("Do not mix out+layout with out_dir/out_path; choose one target form.")
            if out is None or layout is None:
                raise ModelError("out and layout must be given together (layout='per_item' or 'combined').")
            lay = str(layout).strip().lower()
            if lay not in ("per_item", "combined"):
                raise ModelError(f"layout must be 'per_item' or 'combined'; got {layout!r}")
            target = (
                ExportTarget.per_item(out, names=names)
                if lay == "per_item"
                else ExportTarget.combined(out)
            )
        elif out_dir is not None and out_path is not None:
            raise ModelError("Pass either out_dir= (per-item files) or out_path= (one file), not both.")
        elif out_dir is not None:
            target = ExportTarget.per_item(out_dir, names=names)
        elif out_path is not None:
            target = ExportTarget.combined(out_path)
        else:
            raise ModelError(
                "export_batch needs a target: target=ExportTarget.combined(...)/per_item(...), "
                "out=...+layout=..., out_dir=... or out_path=..."
            )
    if not isinstance(target, ExportTarget):
        raise ModelError("target must be an ExportTarget instance.")
    if target.layout == ExportLayout.COMBINED:
        if not target.out_file:
            raise ModelError("ExportTarget.COMBINED requires out_file.")
        out_file = str(target.out_file)
        if not out_file.endswith(_EXT[fmt]):
            out_file += _EXT[fmt]
        return ExportTarget(layout=ExportLayout.COMBINED, out_file=out_file)
    if not target.out_dir:
        raise ModelError("ExportTarget.PER_ITEM requires out_dir.")
    if fmt == "zarr":
        raise ModelError(
            "format='zarr' writes one store for all ROIs: use ExportTarget.combined('out.zarr'); "
            "per-item layouts support format 'npz' or 'netcdf'."
        )
    return target


def _lazy_spatials(it: Iterator[Any]) -> Iterator[Any]:
    for i, sp in enumerate(it):
        try:
            yield normalize_spatial(sp)
        except (SpecError, ModelError) as exc:
            raise type(exc)(f"spatials[{i}]: {exc}") from exc


def _as_spatials(spatials: Any) -> tuple[Any, int | None]:
    """Return (validated list or lazy iterator, length if known)."""
    if hasattr(spatials, "geometry") and hasattr(spatials, "crs"):
        from rs_embed_dask.export.sources import spatials_from_geodataframe

        spatials = spatials_from_geodataframe(spatials)
    if isinstance(spatials, (list, tuple)):
        if isinstance(spatials, tuple) or not spatials:
            raise ModelError("spatials must be a non-empty list[SpatialSpec].")
        out = []
        for i, sp in enumerate(spatials):
            try:
                out.append(normalize_spatial(sp))
            except (SpecError, ModelError) as exc:
                raise type(exc)(f"spatials[{i}]: {exc}") from exc
        return out, len(out)
    if isinstance(spatials, (str, bytes, Mapping)) or not isinstance(spatials, Iterable):
        raise ModelError("spatials must be a non-empty list[SpatialSpec] or an iterable of them.")
    it = iter(spatials)
    first = next(it, None)
    if first is None:
        raise ModelError("spatials must be a non-empty list[SpatialSpec].")
    normalize_spatial(first)  # fail fast on the first item, before any work
    n = getattr(spatials, "__len__", None)
    return _lazy_spatials(itertools.chain([first], it)), (int(n()) if callable(n) else None)


def _plugins_for(models: tuple[ResolvedModel, ...], backends: set[str]) -> dict[str, Any]:
    """Runtime-registered classes the workers must know (built-ins are imported by path)."""
    from rs_embed_dask.core import registry

    plugins: dict[str, Any] = {}
    for m in models:
        if m.canonical in registry._models and not isinstance(registry._models[m.canonical], str):
            plugins[f"model:{m.canonical}"] = get_model_class(m.canonical)
    for b in backends:
        if b in registry._providers and not isinstance(registry._providers[b], str):
            plugins[f"provider:{b}"] = get_provider_class(b)
    return plugins


def _request_backend(cls: Any, backend: str) -> str:
    """The backend of one model: a request-wide provider applies to models that read providers.

    A precomputed product that is its own source (its ``backends`` list neither
    ``"provider"`` nor the named backend, e.g. tessera's ``("auto",)``) keeps
    ``"auto"``, so ``backend="synthetic"`` can mix it with on-the-fly models.
    """
    own = getattr(cls, "backends", None)
    if backend == "auto" or "precomputed" not in str(cls.model_type) or own is None:
        return backend
    return backend if ("provider" in own or backend in own) else "auto"


def fetch_packaging(model: ResolvedModel, temporal: Any) -> str:
    """What, beside the sensor, decides the pixels a model's fetch returns (a JSON text).

    The provider (``backend``), the frames (``temporal_semantics``, the frame
    count and, for a model with its own time bins such as olmoearth's 30-day
    bins, the bins of ``temporal``) and the model's own clean-up of the fetched
    array (``fetch_postprocess``, e.g. thor's).  Square fetching is left out:
    a model that does not square reads its ROI out of a squared fetch.
    """
    import json

    cls = get_model_class(model.canonical)
    bins = None
    if model.n_frames is not None:
        own_bins = getattr(cls(model.config_dict), "frame_bins", None)
        got = own_bins(temporal) if callable(own_bins) else None
        bins = [[str(a), str(b)] for a, b in got] if got else None
    post = getattr(cls, "fetch_postprocess", None)
    return json.dumps(
        {
            "backend": model.backend,
            "semantics": model.temporal_semantics,
            "frames": model.n_frames,
            "bins": bins,
            "postprocess": f"{post.__module__}.{post.__qualname__}" if post is not None else None,
        },
        sort_keys=True,
    )


def shared_inputs(models: tuple[ResolvedModel, ...], temporal: Any) -> dict[str, InputSpec]:
    """One :class:`InputSpec` per distinct (sensor, temporal packaging) input of ``models``.

    Models with the same sensor and the same :func:`fetch_packaging` share
    one fetch under rs-embed's key (``sensor_cache_key`` plus ``--<semantics>``
    for frames).  A model with the same key but another packaging gets its own
    fetch under the key suffixed ``--<backend>`` (another provider) or
    ``--<model>`` (other frames or clean-up), so no model reads pixels
    fetched for another's rules.
    """
    import hashlib

    from rs_embed_dask.fetch_square import squares_fetch

    inputs: dict[str, InputSpec] = {}
    for m in models:
        base = m.input_key
        if base is None:
            continue
        packaging = fetch_packaging(m, temporal)
        prev = inputs.get(base)
        key = base
        if prev is not None and prev.packaging != packaging:
            other = m.backend if prev.model.backend != m.backend else sanitize_key(m.canonical)
            key = f"{base}--{other}"
            taken = inputs.get(key)
            if taken is not None and taken.packaging != packaging:
                key = f"{base}--{hashlib.sha1(packaging.encode()).hexdigest()[:8]}"
        prev = inputs.get(key)
        if prev is None:
            inputs[key] = InputSpec(key=key, owner=m.name, model=m, users=(m.name,), packaging=packaging)
            continue
        fetcher = prev.model
        if not squares_fetch(get_model_class(fetcher.canonical)) and squares_fetch(get_model_class(m.canonical)):
            fetcher = m  # the square serves both: the other model cuts its ROI out of it
        inputs[key] = InputSpec(
            key=key, owner=prev.owner, model=fetcher, users=(*prev.users, m.name), packaging=packaging
        )
    return inputs


def build_plan(
    *,
    spatials: Any,
    temporal: Any,
    models: Any,
    target: Any,
    config: ExportConfig,
    backend: str,
    device: str,
    output: OutputSpec,
    sensor: SensorSpec | None,
    fetch: FetchSpec | None,
    modality: str | None,
    input_prep: Any,
    out: str | None = None,
    layout: str | None = None,
    out_dir: str | None = None,
    out_path: str | None = None,
    names: list[str] | None = None,
    per_model_sensors: Mapping[str, SensorSpec] | None = None,
    fmt_override: str | None = None,
    provider_options: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """Validate an export request; raise before anything is scheduled."""
    items, n_items = _as_spatials(spatials)
    if not isinstance(config, ExportConfig):
        raise ModelError(f"config must be an ExportConfig; got {type(config).__name__}")
    if input_prep is not None and config.input_prep is not None:
        raise ModelError(
            "input_prep was passed both as export_batch(input_prep=...) and as "
            "ExportConfig(input_prep=...); pass it once."
        )
    prep_value = input_prep if input_prep is not None else config.input_prep
    from rs_embed_dask.validation import args as _args

    _args.check_common(
        backend=backend, device=device, modality=modality,
        provider_options=provider_options, per_model_sensors=per_model_sensors,
    )  # fmt: skip
    _args.check_names(names)
    backend = (backend or "auto").strip().lower()
    device = _args.check_device(device)
    if fmt_override is not None:
        from dataclasses import replace

        config = replace(config, format=fmt_override)
    config.validate()
    fmt = config.normalized_format
    target = _normalize_target(
        target, fmt, out=out, layout=layout, out_dir=out_dir, out_path=out_path, names=names
    )
    if target.layout == ExportLayout.PER_ITEM and target.names is not None:
        if n_items is not None and len(target.names) != n_items:
            raise ModelError("target.names must have the same length as spatials.")
        if len(set(target.names)) != len(target.names):
            dup = sorted({n for n in target.names if target.names.count(n) > 1})
            raise ModelError(f"target.names must be unique; duplicated: {dup[:10]}")
        from rs_embed_dask.export.tidy import FOLDER_MANIFEST
        from rs_embed_dask.export.writers import check_item_name

        for nm in target.names:
            check_item_name(str(target.out_dir), nm)
            if f"{nm}.json" == FOLDER_MANIFEST:
                raise ModelError(f"Per-item name {nm!r} is reserved for the folder manifest; choose another name.")
    temporal = normalize_temporal(temporal)
    if not isinstance(output, OutputSpec):
        raise SpecError(f"output must be an OutputSpec; got {type(output).__name__}")
    if not isinstance(models, list) or not models:
        raise ModelError("models must be a non-empty list[str] or list[ExportModelRequest].")
    requests: list[ExportModelRequest] = []
    for m in models:
        if isinstance(m, str):
            requests.append(ExportModelRequest(name=m))
        elif isinstance(m, ExportModelRequest):
            requests.append(m)
        else:
            raise ModelError("models entries must be strings or ExportModelRequest instances.")
    _args.check_model_requests(requests)
    # every path absolute here, in the client: workers resolve relative ones against their own folder
    from dataclasses import replace as _replace

    from rs_embed_dask.export.paths import absolute, absolute_model_config, absolute_provider_options

    requests = [
        _replace(r, model_config=absolute_model_config(r.model_config)) if r.model_config else r for r in requests
    ]
    seen: dict[str, list[str]] = {}
    for r in requests:
        seen.setdefault(sanitize_key(r.name), []).append(r.name)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    if dups:
        desc = "; ".join(f"{k!r} <- {v}" for k, v in dups.items())
        raise ModelError(f"Duplicate model name(s) in export request: {desc}. Each model may appear once.")
    prep = resolve_input_prep(prep_value)
    resolved: list[ResolvedModel] = []
    for r in requests:
        cls = get_model_class(r.name)
        if getattr(cls, "manages_own_input_prep", False) and prep_value not in (None, "resize"):
            warnings.warn(f"Model {r.name!r} manages its own input preparation; input_prep is ignored.", UserWarning, stacklevel=3)
        r_sensor = r.sensor if r.sensor is not None else (per_model_sensors or {}).get(r.name)
        r_fetch = r.fetch
        if r_sensor is None and r_fetch is None:
            r_sensor, r_fetch = sensor, fetch
        resolved.append(
            resolve_model(
                r.name,
                backend=_request_backend(cls, backend),
                sensor=r_sensor,
                fetch=r_fetch,
                modality=r.modality if r.modality is not None else modality,
                model_config=r.model_config,
                output_mode=output.mode,
            )
        )
    models_t = tuple(resolved)
    provider_options = absolute_provider_options({m.backend for m in models_t} | {backend}, provider_options)
    if temporal is None and any(not m.is_precomputed for m in models_t):
        from rs_embed_dask.resolve import default_temporal

        temporal = default_temporal(models_t[0].name)
    models_t = tuple(with_frames(m, temporal) for m in models_t)
    # client-side checks of what workers would otherwise find: options, bands, duplicates, windows
    from rs_embed_dask.validation.models import check_request_models
    from rs_embed_dask.validation.rois import check_roi, check_rois, checked_stream, window_rules

    check_request_models(models_t, provider_options)
    rules = window_rules(models_t)
    if isinstance(items, list):
        check_rois(items, rules)
    else:  # the first ROI now, the others as the engine reads them
        first = next(items)
        check_roi(first, rules, 0)
        items = checked_stream(itertools.chain([first], items), rules)
    inputs = shared_inputs(models_t, temporal)
    base = fingerprint_payload(
        models=models_t,
        temporal=temporal,
        output=output,
        fmt=fmt,
        save_inputs=config.save_inputs,
        save_embeddings=config.save_embeddings,
        input_prep=prep,
    )
    # provider options that change the pixels (never runtime ones such as latency or failure
    # injection) join rs-embed's fingerprint, which leaves them out; absent when there are none
    from rs_embed_dask.export.identity import fingerprint_extras

    base.update(fingerprint_extras(models_t, provider_options or {}))
    if target.layout == ExportLayout.COMBINED:
        if isinstance(items, list):
            fp = request_fingerprint({**base, "spatials": [jsonable(s) for s in items]})
        else:
            fp = request_fingerprint({**base, "spatials": "streamed"})
    else:
        fp = request_fingerprint(base)
    backends = {m.backend for m in models_t}
    return ExportPlan(
        spatials=items,
        n_items=n_items,
        temporal=temporal,
        models=models_t,
        inputs=inputs,
        output=output,
        config=config,
        fmt=fmt,
        layout=target.layout,
        out_file=absolute(target.out_file) if target.out_file else None,
        out_file_given=str(target.out_file) if target.out_file else None,
        out_dir=absolute(target.out_dir) if target.out_dir else None,
        names=target.names,
        backend=backend,
        device=device,
        input_prep=prep,
        provider_options=dict(provider_options or {}),
        fingerprint_base=base,
        fingerprint=fp,
        plugins=_plugins_for(models_t, backends),
    )
