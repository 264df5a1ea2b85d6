"""``BatchExporter``: rs-embed's low-level exporter class, run by the Dask engine.

rs-embed's :func:`export_batch` resolves the request and hands it to
``BatchExporter(...).run()``.  Here the class is a thin front of the same
path :func:`rs_embed_dask.export_batch` takes: :meth:`BatchExporter.run`
validates the request into an export plan
(:func:`rs_embed_dask.export.plan.build_plan`) and runs it on a Dask cluster
(:func:`rs_embed_dask.export.engine.run_export`).  Results, files and
manifests are those of :func:`rs_embed_dask.export_batch`.

rs-embed's in-process hooks (``provider_factory``, ``fetch_fn``,
``inspect_fn``, ``progress_factory``) are accepted for signature
compatibility, but the Dask engine cannot honour them: providers are built on
the workers from their registered name and plain options, fetches and input
checks run there, and progress comes from finished tasks.  Passing any of
them (not ``None``) raises :class:`~rs_embed_dask.ModelError` naming the
replacement: :func:`~rs_embed_dask.register_provider` with
``provider_options=``, or ``config.show_progress``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.core.types import ExportConfig, ExportModelRequest, ExportTarget, ModelConfig
from rs_embed_dask.export.engine import run_export
from rs_embed_dask.export.plan import build_plan

__all__ = ["BatchExporter"]

_HOOK_ADVICE = {
    "provider_factory": "providers are built on the workers: register one with "
    "rs_embed_dask.register_provider(name, cls) and pass backend=name (and provider_options=...)",
    "fetch_fn": "fetches run on the workers through the provider: register a provider instead "
    "(rs_embed_dask.register_provider)",
    "inspect_fn": "input checks run on the workers (rs_embed_dask.inspection); "
    "use config=ExportConfig(fail_on_bad_input=...)",
    "progress_factory": "progress comes from finished Dask tasks; use config=ExportConfig(show_progress=...)",
}


def _as_request(m: Any) -> ExportModelRequest:
    if isinstance(m, ModelConfig):
        return ExportModelRequest(name=m.name, sensor=m.sensor, model_config=m.model_config)
    if isinstance(m, ExportModelRequest):
        return m
    if isinstance(m, str):
        return ExportModelRequest(name=m)
    raise ModelError("models entries must be ModelConfig, ExportModelRequest or str instances.")


def _model_backend(m: Any, resolved: Mapping[str, str]) -> str | None:
    name = getattr(m, "name", m)
    b = resolved.get(name)
    if b is None and isinstance(m, ModelConfig):
        b = m.backend
    return str(b).strip().lower() if b else None


class BatchExporter:
    """Export inputs and embeddings of many ROIs for several models (rs-embed's ``BatchExporter``).

    Parameters
    ----------
    spatials : list of BBox or PointBuffer
        The ROIs.
    temporal : TemporalSpec or None
        Time window shared by every model.
    models : list of ModelConfig
        Resolved per-model configurations (rs-embed's form); an
        :class:`ExportModelRequest` or a model name is accepted too.
    target : ExportTarget
        ``ExportTarget.combined(file)`` or ``ExportTarget.per_item(dir)``.
    output : OutputSpec
        Pooled or grid embeddings.
    config : ExportConfig
        Run options (format, chunking, retries, resume, ...).
    backend : str
        The request's provider name (``"auto"`` resolves per model).
    resolved_backend : dict of str to str
        Provider of each model, by name; a model missing here uses its
        ``ModelConfig.backend``, else ``backend``.  One export reads through
        one provider: different provider names raise :class:`ModelError`.
    device : str
        Inference device of the workers.
    provider_factory, fetch_fn, inspect_fn, progress_factory : None
        rs-embed's in-process hooks; accepted as ``None`` only (see the module
        notes), any other value raises :class:`ModelError`.
    client : distributed.Client, optional
        Cluster to run on; default the active client, else an embedded local
        cluster (an addition to rs-embed's signature).
    provider_options : mapping, optional
        Options of the provider (an addition to rs-embed's signature).

    Raises
    ------
    ModelError
        A hook other than ``None`` was given.

    Examples
    --------
    >>> from rs_embed_dask import BatchExporter, ExportConfig, ExportTarget, ModelConfig, OutputSpec
    >>> exp = BatchExporter(spatials=rois, temporal=t, models=[ModelConfig("rcf", "synthetic")],
    ...                     target=ExportTarget.combined("out.npz"), output=OutputSpec.pooled(),
    ...                     config=ExportConfig(), backend="synthetic",
    ...                     resolved_backend={"rcf": "synthetic"}, device="cpu")  # doctest: +SKIP
    >>> manifest = exp.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        spatials: list[SpatialSpec],
        temporal: TemporalSpec | None,
        models: list[ModelConfig],
        target: ExportTarget,
        output: OutputSpec,
        config: ExportConfig,
        backend: str,
        resolved_backend: dict[str, str],
        device: str,
        provider_factory: Callable[[], Any] | None = None,
        fetch_fn: Callable[..., np.ndarray] | None = None,
        inspect_fn: Callable[..., dict[str, Any]] | None = None,
        progress_factory: Callable[..., Any] | None = None,
        client: Any = None,
        provider_options: Mapping[str, Any] | None = None,
    ) -> None:
        hooks = {
            "provider_factory": provider_factory,
            "fetch_fn": fetch_fn,
            "inspect_fn": inspect_fn,
            "progress_factory": progress_factory,
        }
        given = [k for k, v in hooks.items() if v is not None]
        if given:
            advice = "; ".join(f"{k}: {_HOOK_ADVICE[k]}" for k in given)
            raise ModelError(
                f"BatchExporter({', '.join(f'{k}=...' for k in given)}) is not supported by the Dask engine: {advice}."
            )
        self.spatials = spatials
        self.temporal = temporal
        self.models = models
        self.target = target
        self.output = output
        self.config = config
        self.backend = str(backend or "auto").strip().lower()
        self.resolved_backend = dict(resolved_backend or {})
        self.device = str(device or "auto").strip().lower() or "auto"
        self.provider_factory = provider_factory
        self.fetch_fn = fetch_fn
        self.inspect_fn = inspect_fn
        self.progress_factory = progress_factory
        self.client = client
        self.provider_options = dict(provider_options) if provider_options else None
        self.model_names = [getattr(m, "name", m) for m in models] if isinstance(models, Sequence) else []

    def _request_backend(self) -> str:
        """The one provider of this export (``"auto"``: per model, from its sensor)."""
        named = {b for m in self.models if (b := _model_backend(m, self.resolved_backend)) and b != "auto"}
        if len(named) > 1:
            raise ModelError(
                f"BatchExporter on the Dask engine reads every model through one provider; "
                f"got {sorted(named)}. Run one export per provider."
            )
        return named.pop() if named else self.backend

    def run(self) -> list[dict[str, Any]] | dict[str, Any]:
        """Run the export on Dask, dispatching by the target's layout.

        Returns
        -------
        list of dict or dict
            Per-item: one manifest per ROI, in ROI order.  Combined: the
            combined manifest (as :func:`rs_embed_dask.export_batch`).

        Raises
        ------
        ModelError, SpecError, ProviderError
            An invalid request, before any task is submitted.
        """
        if not isinstance(self.models, list) or not self.models:
            raise ModelError("models must be a non-empty list[str] or list[ExportModelRequest].")
        backend = self._request_backend()
        plan = build_plan(
            spatials=self.spatials,
            temporal=self.temporal,
            models=[_as_request(m) for m in self.models],
            target=self.target,
            config=self.config,
            backend=backend,
            device=self.device,
            output=self.output,
            sensor=None,
            fetch=None,
            modality=None,
            input_prep=None,
            provider_options=self.provider_options,
        )
        wanted = {getattr(m, "name", m): _model_backend(m, self.resolved_backend) for m in self.models}
        for m in plan.models:
            want = wanted.get(m.name)
            if want and want != "auto" and m.backend not in (want, "auto"):
                raise ModelError(f"Model {m.name!r} resolves to backend {m.backend!r}, not {want!r}.")
        from rs_embed_dask.validation.preflight import preflight_export

        preflight_export(plan, self.client)
        return run_export(plan, client=self.client)
