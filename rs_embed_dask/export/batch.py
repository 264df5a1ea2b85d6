"""``export_batch`` and ``export_npz`` with rs-embed's signatures, run on Dask."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import FetchSpec, InputPrepSpec, OutputSpec, SensorSpec
from rs_embed_dask.core.types import ExportConfig, ExportTarget
from rs_embed_dask.export.engine import run_export
from rs_embed_dask.export.plan import _LEGACY_CONFIG_KEYS, build_plan

__all__ = ["export_batch", "export_npz"]


def export_batch(
    *,
    spatials: Any,
    temporal: Any,
    models: list[Any],
    target: ExportTarget | None = None,
    config: ExportConfig | None = ExportConfig(),  # noqa: B008 - frozen, rs-embed's default
    backend: str = "auto",
    device: str = "auto",
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008 - frozen
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    input_prep: InputPrepSpec | str | None = None,
    out: str | None = None,
    layout: str | None = None,
    out_dir: str | None = None,
    out_path: str | None = None,
    names: list[str] | None = None,
    per_model_sensors: Mapping[str, SensorSpec] | None = None,
    client: Any = None,
    provider_options: Mapping[str, Any] | None = None,
    **config_kwargs: Any,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Export embeddings (and inputs) of many ROIs for one or more models.

    Parameters
    ----------
    spatials : list of BBox/PointBuffer, iterable, or GeoDataFrame
        The ROIs.  A list is validated up front; any other iterable (a
        generator of millions of tiles) is consumed chunk by chunk.
    temporal : TemporalSpec or None
        Time window shared by every model.
    models : list of str or ExportModelRequest
        Models, with optional per-model sensor/fetch/modality/config overrides.
    target : ExportTarget, optional
        ``ExportTarget.combined(file)`` or ``ExportTarget.per_item(dir)``; the legacy
        ``out``+``layout``, ``out_dir`` and ``out_path`` forms are accepted too.
    config : ExportConfig, optional
        Run options (format, chunking, retries, resume, ...).  The legacy flat
        keywords (``format=``, ``chunk_size=``, ``resume=``, ...) build one.
    backend, device, output, sensor, fetch, modality, input_prep
        As in :func:`rs_embed_dask.get_embedding`, shared by every model.
    client : distributed.Client, optional
        Cluster to run on; default the active client, else an embedded local
        cluster started and closed for this call.
    provider_options : dict, optional
        Options for the provider (e.g. ``{"latency_s": 0.2}`` for ``synthetic``).

    Returns
    -------
    list of dict or dict
        Per-item: one manifest per ROI, sorted by ``point_index``.
        Combined: the combined manifest.

    Raises
    ------
    ModelError, SpecError
        Invalid request, before any task is submitted.

    Notes
    -----
    ``format="zarr"`` (keyword or ``ExportConfig``) keeps the working zarr
    store as the export itself: ``target=ExportTarget.combined("out.zarr")``.
    """
    unknown = sorted(set(config_kwargs) - _LEGACY_CONFIG_KEYS)
    if unknown:
        raise ModelError(
            f"export_batch() got unexpected keyword argument(s) {unknown}; "
            f"config keywords are {sorted(_LEGACY_CONFIG_KEYS)}."
        )
    fmt_override = None
    config = ExportConfig() if config is None else config
    if config_kwargs:
        if set(config_kwargs) == {"format"}:
            fmt_override = config_kwargs["format"]
        elif config == ExportConfig():
            config = ExportConfig(**config_kwargs)
        else:
            raise ModelError(
                "Pass run options either as config=ExportConfig(...) or as keywords, not both; "
                f"got config and {sorted(config_kwargs)}."
            )
    plan = build_plan(
        spatials=spatials,
        temporal=temporal,
        models=models,
        target=target,
        config=config,
        backend=backend,
        device=device,
        output=output,
        sensor=sensor,
        fetch=fetch,
        modality=modality,
        input_prep=input_prep,
        out=out,
        layout=layout,
        out_dir=out_dir,
        out_path=out_path,
        names=names,
        per_model_sensors=per_model_sensors,
        fmt_override=fmt_override,
        provider_options=provider_options,
    )
    from rs_embed_dask.validation.preflight import preflight_export

    preflight_export(plan, client)  # target, device, weights, credentials: before a cluster starts
    return run_export(plan, client=client)


def export_npz(
    *,
    spatial: Any,
    temporal: Any,
    models: list[Any],
    out_path: str,
    backend: str = "auto",
    device: str = "auto",
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008
    sensor: SensorSpec | None = None,
    per_model_sensors: Mapping[str, SensorSpec] | None = None,
    save_inputs: bool = True,
    save_embeddings: bool = True,
    save_manifest: bool = True,
    fail_on_bad_input: bool = False,
    continue_on_error: bool = False,
    max_retries: int = 0,
    retry_backoff_s: float = 0.0,
    input_prep: InputPrepSpec | str | None = "resize",
    client: Any = None,
    provider_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export one ROI to a single ``.npz`` (+ ``.json``); a wrapper of :func:`export_batch`."""
    out = str(out_path)
    if not out.endswith(".npz"):
        out += ".npz"
    from rs_embed_dask.validation.preflight import check_target_writable

    check_target_writable(out, kind="file")  # before the folder is made
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = export_batch(
        spatials=[spatial],
        temporal=temporal,
        models=models,
        target=ExportTarget.combined(out),
        config=ExportConfig(
            format="npz",
            save_inputs=save_inputs,
            save_embeddings=save_embeddings,
            save_manifest=save_manifest,
            fail_on_bad_input=fail_on_bad_input,
            continue_on_error=continue_on_error,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            show_progress=False,
        ),
        backend=backend,
        device=device,
        output=output,
        sensor=sensor,
        per_model_sensors=per_model_sensors,
        input_prep=input_prep,
        client=client,
        provider_options=provider_options,
    )
    assert isinstance(result, dict)
    return result
