"""Input inspection without a model run: rs-embed's ``inspect_*`` functions.

:func:`inspect_provider_patch` (alias :func:`inspect_gee_patch`) fetches one
patch of a sensor from any registered provider and reports its values;
:func:`inspect_model_input` fetches exactly what a model would receive (its
sensor, bands and time bins) without loading weights.  Both run in the
calling process, through the same provider path as
:func:`~rs_embed_dask.get_embedding`, and write a quick-look PNG (three
bands, 2–98 % stretch; matplotlib) when ``sensor.check_save_dir`` or
``$RS_EMBED_CHECK_SAVE_DIR`` is set.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError
from rs_embed_dask.core.registry import (
    canonical_model_name,
    get_model_class,
    get_provider_class,
    list_providers,
)
from rs_embed_dask.core.specs import FetchSpec, SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.inspection import checks_save_dir, inspect_chw, rgb_band_indices, save_quicklook_rgb
from rs_embed_dask.pipeline import fetch_input
from rs_embed_dask.resolve import (
    ResolvedModel,
    default_temporal,
    get_provider,
    normalize_spatial,
    normalize_temporal,
    resolve_model,
    with_frames,
)

__all__ = ["inspect_gee_patch", "inspect_model_input", "inspect_provider_patch"]


def _provider_name(backend: Any) -> str:
    """A registered provider name (``"auto"`` is refused: a patch needs a named provider)."""
    name = str(backend).strip().lower()
    if not name:
        raise ProviderError("backend must be a non-empty provider name.")
    if name == "auto":
        raise ProviderError(
            f"Unsupported provider backend={backend!r}: name a provider, one of {list_providers()}."
        )
    try:
        get_provider_class(name)
    except ProviderError as exc:
        raise ProviderError(f"Unsupported provider backend={backend!r}. {exc}") from exc
    return name


def _stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _quicklook(x_chw: np.ndarray, save_dir: str, stem: str, bands: tuple[int, int, int]) -> tuple[str, str]:
    """``(key suffix, value)`` of an artifact entry: the PNG path, or the error that prevented it."""
    path = os.path.join(save_dir, f"{stem}_{_stamp()}.png")
    try:
        return "", save_quicklook_rgb(x_chw, path=path, bands=bands)
    except Exception as exc:
        return "_error", repr(exc)


def _fetch(provider: Any, spatial: SpatialSpec, temporal: TemporalSpec | None, sensor: SensorSpec) -> Any:
    try:
        return provider.fetch(spatial, temporal, sensor)
    except ProviderError as exc:  # rs-embed re-raises fetch failures as ModelError
        raise ModelError(str(exc)) from exc


def inspect_provider_patch(
    *,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None = None,
    sensor: SensorSpec,
    backend: str = "gee",
    name: str = "gee_patch",
    value_range: tuple[float, float] | None = None,
    return_array: bool = False,
    provider_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fetch one patch of ``sensor`` from a provider and report its values (no model).

    Parameters
    ----------
    spatial : BBox or PointBuffer
        The region to fetch.
    temporal : TemporalSpec, optional
        Time window (``None``: the provider's default).
    sensor : SensorSpec
        Collection, bands, scale, compositing; ``check_save_dir`` asks for a quick-look.
    backend : str, default "gee"
        A registered provider name (``"synthetic"``, ``"local"``, ``"stac"``,
        ...); ``"auto"`` is not accepted.
    name : str, default "gee_patch"
        Label of the report and stem of the quick-look file name.
    value_range : (float, float), optional
        Values outside it (more than 0.1 %) are reported as an issue.
    return_array : bool, default False
        Add the fetched ``(C, H, W)`` array as ``"array_chw"`` (not JSON-serialisable).
    provider_options : mapping, optional
        Options of the provider (an addition to rs-embed's signature).

    Returns
    -------
    dict
        ``ok``, ``report`` (see :func:`rs_embed_dask.inspection.inspect_chw`),
        ``sensor``, ``temporal``, ``backend`` and ``artifacts`` (``None``, or
        ``{"quicklook_rgb": path}`` / ``{"quicklook_rgb_error": repr}``), plus
        ``array_chw`` when asked.

    Raises
    ------
    ProviderError
        Empty, ``"auto"`` or unknown backend, or a provider that cannot be initialised.
    ModelError
        The fetch failed, or ``spatial`` is not a spatial spec.
    SpecError
        Invalid spatial, temporal or sensor spec.
    """
    backend_name = _provider_name(backend)
    if not isinstance(sensor, SensorSpec):
        raise SpecError(f"sensor must be a SensorSpec; got {type(sensor).__name__}")
    sensor.validate()
    roi = normalize_spatial(spatial)
    temporal_n = normalize_temporal(temporal)
    provider = get_provider(backend_name, provider_options)
    x_chw = np.asarray(_fetch(provider, roi, temporal_n, sensor).data)
    report = inspect_chw(
        x_chw,
        name=name,
        expected_channels=len(sensor.bands),
        value_range=value_range,
        fill_value=sensor.fill_value,
    )
    artifacts: dict[str, Any] = {}
    save_dir = checks_save_dir(sensor)
    if save_dir and x_chw.ndim == 3 and x_chw.shape[0] >= 3:
        suffix, value = _quicklook(x_chw, save_dir, name, (0, 1, 2))
        artifacts[f"quicklook_rgb{suffix}"] = value
    out: dict[str, Any] = {
        "ok": bool(report.get("ok", False)),
        "report": report,
        "sensor": asdict(sensor),
        "temporal": asdict(temporal_n) if temporal_n is not None else None,
        "backend": backend_name,
        "artifacts": artifacts or None,
    }
    if return_array:
        out["array_chw"] = x_chw
    return out


def inspect_gee_patch(
    *,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None = None,
    sensor: SensorSpec,
    backend: str = "gee",
    name: str = "gee_patch",
    value_range: tuple[float, float] | None = None,
    return_array: bool = False,
    provider_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """rs-embed's older name of :func:`inspect_provider_patch` (same parameters and result)."""
    return inspect_provider_patch(
        spatial=spatial,
        temporal=temporal,
        sensor=sensor,
        backend=backend,
        name=name,
        value_range=value_range,
        return_array=return_array,
        provider_options=provider_options,
    )


def _fetch_model_input(
    rm: ResolvedModel, model: str, roi: SpatialSpec, temporal: TemporalSpec | None, options: Any
) -> tuple[Any, TemporalSpec]:
    """The model's fetch (its sensor and time bins); ``temporal=None`` takes the default window."""
    window = temporal if temporal is not None else default_temporal(model)
    get_provider(rm.backend, options)  # set-up failures stay ProviderError
    try:
        return fetch_input(rm, roi, window, provider_options=options), window
    except ProviderError as exc:
        raise ModelError(str(exc)) from exc


def inspect_model_input(
    model: str,
    *,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None = None,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    backend: str = "gee",
    value_range: tuple[float, float] | None = None,
    return_arrays: bool = False,
    provider_options: Mapping[str, Any] | None = None,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Fetch the input a model would receive and report it, frame by frame (no weights, no inference).

    The fetch is the one :func:`~rs_embed_dask.get_embedding` makes: the
    model's sensor (or ``sensor``/``fetch``/``modality``), its bands and, for
    multi-frame models, its time bins, empty bins included.

    Parameters
    ----------
    model : str
        Model id or alias.
    spatial : BBox or PointBuffer
        The region to fetch.
    temporal : TemporalSpec, optional
        Time window; ``None`` takes the default window of
        :func:`~rs_embed_dask.get_embedding`, with its warning.
    sensor : SensorSpec, optional
        Replaces the model's default sensor.
    fetch : FetchSpec, optional
        Partial override of the default sensor (not together with ``sensor``).
    modality : str, optional
        A modality the model exposes.
    backend : str, default "gee"
        A registered provider name; ``"auto"`` is not accepted.
    value_range : (float, float), optional
        Values outside it (more than 0.1 %) are reported as an issue.
    return_arrays : bool, default False
        Add each frame's ``(C, H, W)`` array as ``"array_chw"``.
    provider_options : mapping, optional
        Options of the provider (an addition to rs-embed's signature).
    **model_kwargs
        Model options, as in :func:`~rs_embed_dask.get_embedding`.

    Returns
    -------
    dict
        ``ok`` (a non-empty frame exists and every report is ok), ``model``,
        ``backend``, ``n_frames``, ``n_empty``, ``frames`` (``index``,
        ``start``, ``end``, ``empty``, ``report`` for non-empty frames,
        ``array_chw`` when asked), ``fetch_meta``, ``sensor``, ``temporal``
        (as given) and ``artifacts`` (``quicklook_rgb_t<i>`` paths, or ``None``).

    Raises
    ------
    ProviderError
        Empty, ``"auto"`` or unknown backend, or a provider that cannot be initialised.
    ModelError
        Unknown or precomputed model, no sensor, unsupported option or
        modality, or a failed fetch.
    SpecError
        Invalid spatial, temporal or sensor spec.
    """
    model_n = canonical_model_name(model)
    backend_name = _provider_name(backend)
    cls = get_model_class(model)
    if "precomputed" in str(cls.model_type):
        raise ModelError(
            f"Model '{model_n}' serves precomputed embeddings; it has no provider input to inspect. "
            "Use inspect_provider_patch for raw imagery checks."
        )
    roi = normalize_spatial(spatial)
    temporal_n = normalize_temporal(temporal)
    modes = tuple(getattr(cls, "output_modes", ("pooled",)) or ("pooled",))
    rm = resolve_model(
        model,
        backend=backend_name,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        model_config=model_kwargs or None,
        output_mode="pooled" if "pooled" in modes else modes[0],
    )
    rm = with_frames(rm, temporal_n)
    if rm.sensor is None:
        raise ModelError(f"Model '{model_n}' has no default sensor; pass sensor=... explicitly.")
    fr, window = _fetch_model_input(rm, model, roi, temporal_n, provider_options)
    x = np.asarray(fr.data)
    fetch_meta = dict(fr.meta or {})
    bins = fetch_meta.pop("frames", None)
    fetch_meta.pop("n_empty", None)
    if x.ndim == 4:
        frames = [x[i] for i in range(x.shape[0])]
        if not (isinstance(bins, list) and len(bins) == len(frames)):
            bins = [{} for _ in frames]
    elif x.ndim == 3:
        start, end = window.date_range()
        frames, bins = [x], [{"start": start.isoformat(), "end": end.isoformat()}]
    else:
        raise ModelError(
            f"Model '{model_n}' fetch returned ndim={x.ndim}; expected (C, H, W) or (T, C, H, W)."
        )
    save_dir = checks_save_dir(rm.sensor)
    rgb = rgb_band_indices(rm.sensor.bands, int(frames[0].shape[0]))
    entries: list[dict[str, Any]] = []
    artifacts: dict[str, Any] = {}
    for i, (frame, b) in enumerate(zip(frames, bins, strict=True)):
        empty = bool(b.get("empty", False)) or bool(np.isnan(frame).all())
        entry: dict[str, Any] = {"index": i, "start": b.get("start"), "end": b.get("end"), "empty": empty}
        if not empty:
            entry["report"] = inspect_chw(
                frame, name=f"{model_n}_input_t{i}", value_range=value_range, fill_value=rm.sensor.fill_value
            )
            if save_dir and frame.shape[0] >= 3:
                suffix, value = _quicklook(frame, save_dir, f"{model_n}_input_t{i}", rgb)
                artifacts[f"quicklook_rgb_t{i}{suffix}"] = value
        if return_arrays:
            entry["array_chw"] = frame
        entries.append(entry)
    n_empty = sum(1 for e in entries if e["empty"])
    ok = n_empty < len(entries) and all(e["report"]["ok"] for e in entries if not e["empty"])
    return {
        "ok": bool(ok),
        "model": model_n,
        "backend": backend_name,
        "n_frames": len(entries),
        "n_empty": n_empty,
        "frames": entries,
        "fetch_meta": fetch_meta or None,
        "sensor": asdict(rm.sensor),
        "temporal": asdict(temporal_n) if temporal_n is not None else None,
        "artifacts": artifacts or None,
    }
