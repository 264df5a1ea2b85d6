"""Single-ROI API: :func:`get_embedding` and :func:`get_embeddings_batch`.

Both run in the calling process (no cluster), with the model cached per
process, and share the fetch and embed steps with the Dask export engine.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rs_embed_dask.core.errors import ModelError, SpecError
from rs_embed_dask.core.registry import get_model_class
from rs_embed_dask.core.specs import (
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    TemporalSpec,
    resolve_input_prep,
)
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.pipeline import embed_batch, fetch_input
from rs_embed_dask.resolve import (
    ResolvedModel,
    default_temporal,
    get_embedder,
    get_provider,
    normalize_spatial,
    normalize_temporal,
    resolve_model,
    with_frames,
)
from rs_embed_dask.validation.args import check_common, check_device
from rs_embed_dask.validation.models import check_request_models
from rs_embed_dask.validation.preflight import check_device_available, preflight_providers
from rs_embed_dask.validation.rois import check_rois, window_rules

__all__ = ["EmbedRequest", "get_embedding", "get_embeddings_batch", "prepare_request", "run_request"]


def _check_output(output: Any) -> OutputSpec:
    if not isinstance(output, OutputSpec):
        raise SpecError(
            f"output must be an OutputSpec (OutputSpec.pooled() or OutputSpec.grid()); "
            f"got {type(output).__name__}"
        )
    return output


def get_embedding(
    model: str,
    *,
    spatial: Any,
    temporal: Any = None,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008 - frozen, shared safely
    backend: str = "auto",
    device: str = "auto",
    input_prep: InputPrepSpec | str | None = None,
    provider_options: Mapping[str, Any] | None = None,
    **model_kwargs: Any,
) -> Embedding:
    """Compute the embedding of one ROI.

    Parameters
    ----------
    model : str
        Registered model id (see :func:`list_models`).
    spatial : BBox or PointBuffer
        The region of interest.
    temporal : TemporalSpec, optional
        Time window; on-the-fly models default to 2022-06-01..2022-09-01 with a warning.
    sensor : SensorSpec, optional
        Replaces the model's default sensor.
    fetch : FetchSpec, optional
        Partial override of the default sensor (not together with ``sensor``).
    modality : str, optional
        A modality the model exposes (e.g. ``"s1"``).
    output : OutputSpec, default OutputSpec.pooled()
        Pooled ``(D,)`` or grid ``(D, H, W)``.
    backend : str, default "auto"
        Provider name (``"synthetic"``, ``"local"``, ``"gee"``, ...).
    device : str, default "auto"
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    input_prep : InputPrepSpec or {"auto", "resize", "tile"}, optional
        How inputs larger than the model's image size are handled.
    provider_options : mapping, optional
        Options of the provider (e.g. ``{"catalog_url": ...}`` for ``stac``,
        ``{"path": ...}`` for ``local``), as in :func:`export_batch`.
    **model_kwargs
        Model-specific options (``model_config``).

    Returns
    -------
    Embedding

    Raises
    ------
    TypeError
        ``backend``, ``device``, ``modality`` or ``provider_options`` of the wrong type (named).
    SpecError
        Invalid spatial, temporal or output spec; a ROI without a usable grid
        window (antimeridian, beyond ±85.05°, over ``$RS_EMBED_MAX_WINDOW_PIXELS``);
        a band the provider lacks; a provider option it does not declare.
    ModelError
        Unknown model, unsupported option or device, or a failed fetch or forward pass.
    ProviderError
        The provider could not be initialised (e.g. credentials that do not authenticate).

    Examples
    --------
    >>> from rs_embed_dask import PointBuffer, TemporalSpec, get_embedding
    >>> emb = get_embedding("rcf", spatial=PointBuffer(121.5, 31.2, 1280),
    ...                     temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    ...                     backend="synthetic")  # doctest: +SKIP
    """
    req, rois, temporal_n = _prepare_call(
        model,
        [spatial],
        temporal=temporal,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        output=output,
        backend=backend,
        device=device,
        input_prep=input_prep,
        provider_options=provider_options,
        model_kwargs=model_kwargs,
    )
    return run_request(req, rois, temporal_n)[0]


def get_embeddings_batch(
    model: str,
    *,
    spatials: list[Any],
    temporal: Any = None,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008
    backend: str = "auto",
    device: str = "auto",
    input_prep: InputPrepSpec | str | None = None,
    provider_options: Mapping[str, Any] | None = None,
    **model_kwargs: Any,
) -> list[Embedding]:
    """Compute embeddings of several ROIs in this process, fetching in parallel.

    Parameters are those of :func:`get_embedding`, with ``spatials`` a
    non-empty list of ROIs.  Results are in input order.
    """
    if not isinstance(spatials, list) or not spatials:
        raise ModelError("spatials must be a non-empty list[SpatialSpec].")
    req, rois, temporal_n = _prepare_call(
        model,
        spatials,
        temporal=temporal,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        output=output,
        backend=backend,
        device=device,
        input_prep=input_prep,
        provider_options=provider_options,
        model_kwargs=model_kwargs,
    )
    return run_request(req, rois, temporal_n)


@dataclass(frozen=True)
class EmbedRequest:
    """A validated request, ready to embed ROIs in this process.

    Built once by :func:`prepare_request` (what :class:`rs_embed_dask.Model`
    holds) and run any number of times by :func:`run_request`.

    Attributes
    ----------
    model : str
        The model name as given.
    resolved : ResolvedModel
        Canonical name, model config, backend and sensor.
    output : OutputSpec
        Pooled or grid output.
    device : str
        Device of the process-resident model.
    input_prep : InputPrepSpec
        The resolved input preparation.
    provider_options : dict or None
        Options of the provider.
    """

    model: str
    resolved: ResolvedModel
    output: OutputSpec
    device: str
    input_prep: InputPrepSpec
    provider_options: Mapping[str, Any] | None = None


def warn_managed_input_prep(model: str, input_prep: Any, *, stacklevel: int) -> None:
    """rs-embed's warning when ``input_prep`` is given to a model that tiles on its own (gse).

    ``stacklevel`` is the one the caller would pass to :func:`warnings.warn`.
    """
    try:
        cls: Any = get_model_class(model)
    except ModelError:  # reported after spec validation, in rs-embed's check order
        return
    if getattr(cls, "manages_own_input_prep", False) and input_prep not in (None, "resize"):
        warnings.warn(
            f"Model {model!r} manages its own input preparation; input_prep is ignored.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def prepare_request(
    model: str,
    *,
    sensor: SensorSpec | None,
    fetch: FetchSpec | None,
    modality: str | None,
    output: OutputSpec,
    backend: str,
    device: str,
    input_prep: InputPrepSpec | str | None,
    provider_options: Mapping[str, Any] | None,
    model_kwargs: Mapping[str, Any] | None,
) -> EmbedRequest:
    """Validate the output spec and resolve the model, its sensor and backend (no I/O, no weights).

    Raises
    ------
    SpecError
        ``output`` is not an :class:`OutputSpec`.
    ModelError
        Unknown model, unsupported option, modality, backend or output mode.
    ProviderError
        The named provider is not registered.
    """
    check_common(backend=backend, device=device, modality=modality, provider_options=provider_options)
    from rs_embed_dask.export.paths import absolute_model_config, absolute_provider_options

    device = check_device(device)
    output = _check_output(output)
    rm = resolve_model(
        model,
        backend=backend,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        model_config=absolute_model_config(dict(model_kwargs)) if model_kwargs else None,
        output_mode=output.mode,
    )
    check_request_models((rm,), provider_options)  # provider options, bands
    provider_options = absolute_provider_options([rm.backend], provider_options)  # workers have other folders
    return EmbedRequest(
        model=str(model),
        resolved=rm,
        output=output,
        device=device,
        input_prep=resolve_input_prep(input_prep),
        provider_options=provider_options,
    )


def run_request(req: EmbedRequest, rois: Sequence[Any], temporal: TemporalSpec | None) -> list[Embedding]:
    """Embed validated ROIs (:func:`normalize_spatial`) with a prepared request, in input order.

    ``temporal=None`` takes rs-embed's default window, with its warning, for
    on-the-fly models; the caller of this function is the frame the warning
    points one level above.

    Raises
    ------
    ProviderError
        The provider could not be initialised.
    ModelError
        A fetch or the forward pass failed.
    """
    rm = req.resolved
    check_rois(rois, window_rules([rm]))  # every grid window exists and fits, before any fetch
    check_device_available(req.device)  # the model runs in this process
    if rm.is_precomputed:
        embedder = get_embedder(rm.canonical, rm.config_dict, req.device)
        return list(embedder.embed_spatials(rois, temporal=temporal, output=req.output, sensor=rm.sensor))
    if temporal is None:
        temporal = default_temporal(req.model)
    rm = with_frames(rm, temporal)
    # initialise the provider here so that set-up failures surface as ProviderError
    # (per-ROI fetch failures below become ModelError, as in rs-embed)
    preflight_providers([rm.backend], req.provider_options)  # e.g. one authenticated Earth Engine call
    get_provider(rm.backend, req.provider_options)

    def _fetch(sp: Any) -> Any:
        try:
            return fetch_input(rm, sp, temporal, provider_options=req.provider_options)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"Failed to fetch input for spatial {sp}: {exc!r}") from exc

    if len(rois) == 1:
        fetched = [_fetch(rois[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(rois))) as pool:
            fetched = list(pool.map(_fetch, rois))
    contexts = [
        {"spatial": sp, "temporal": temporal, "sensor": rm.sensor, "fetch_meta": fr.meta}
        for sp, fr in zip(rois, fetched, strict=True)
    ]
    return embed_batch(
        rm,
        [fr.data for fr in fetched],
        output=req.output,
        contexts=contexts,
        device=req.device,
        input_prep=req.input_prep,
    )


def _prepare_call(
    model: str,
    spatials: Sequence[Any],
    *,
    temporal: Any,
    sensor: SensorSpec | None,
    fetch: FetchSpec | None,
    modality: str | None,
    output: OutputSpec,
    backend: str,
    device: str,
    input_prep: InputPrepSpec | str | None,
    provider_options: Mapping[str, Any] | None,
    model_kwargs: dict[str, Any],
) -> tuple[EmbedRequest, list[Any], TemporalSpec | None]:
    """rs-embed's check order: input_prep warning, ROIs, temporal, output, model (argument types first)."""
    check_common(backend=backend, device=device, modality=modality, provider_options=provider_options)
    warn_managed_input_prep(model, input_prep, stacklevel=3)
    rois = [normalize_spatial(s) for s in spatials]
    temporal_n = normalize_temporal(temporal)
    req = prepare_request(
        model,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        output=output,
        backend=backend,
        device=device,
        input_prep=input_prep,
        provider_options=provider_options,
        model_kwargs=model_kwargs,
    )
    return req, rois, temporal_n
