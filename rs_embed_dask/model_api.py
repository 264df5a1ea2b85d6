"""The class-based API: :class:`Model`, a model resolved and loaded once.

``Model("rcf", backend="synthetic")`` does what every
:func:`~rs_embed_dask.get_embedding` call does before fetching (model,
options, sensor, backend and output checks) once, loads the model into this
process, and then embeds ROIs with :meth:`Model.get_embedding` and
:meth:`Model.get_embeddings_batch`, which take only what varies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rs_embed_dask.api import EmbedRequest, prepare_request, run_request, warn_managed_input_prep
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.registry import list_models as _list_models
from rs_embed_dask.core.specs import (
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.resolve import (
    embedder_cache_key,
    get_embedder,
    keep_resident,
    normalize_spatial,
    normalize_temporal,
)

__all__ = ["Model"]


class Model:
    """A ready-to-use embedding model (rs-embed's ``rs_embed.Model``).

    Resolution happens once, at construction, exactly as in
    :func:`~rs_embed_dask.get_embedding`: an unknown model, an unsupported
    model option, modality, backend or output mode raises here, not on the
    first call.  The model is then loaded into this process and stays
    resident for the life of the instance (also across
    :func:`~rs_embed_dask.reset_runtime`).

    Parameters
    ----------
    name : str
        Registered model id or alias (see :meth:`list_models`).
    backend : str, default "auto"
        Provider name (``"synthetic"``, ``"local"``, ``"gee"``, ...).
    device : str, default "auto"
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    sensor : SensorSpec, optional
        Replaces the model's default sensor.
    fetch : FetchSpec, optional
        Partial override of the default sensor (not together with ``sensor``).
    modality : str, optional
        A modality the model exposes (e.g. ``"s1"``).
    output : OutputSpec, default OutputSpec.pooled()
        Pooled ``(D,)`` or grid ``(D, H, W)`` embeddings.
    input_prep : InputPrepSpec or {"auto", "resize", "tile"}, optional
        How inputs larger than the model's image size are handled
        (``None``: ``"tile"``).
    provider_options : mapping, optional
        Options of the provider, as in :func:`~rs_embed_dask.get_embedding`
        (an addition to rs-embed's signature).
    **model_kwargs
        Model-specific options (e.g. ``variant="large"``); see
        :func:`~rs_embed_dask.describe_model`.

    Raises
    ------
    ModelError
        Unknown model, unsupported option, modality, backend or output mode,
        or a model that cannot be loaded.
    SpecError
        ``output`` is not an :class:`OutputSpec`, or an invalid ``sensor``.
    ProviderError
        The named provider is not registered.

    Examples
    --------
    >>> from rs_embed_dask import Model, PointBuffer, TemporalSpec
    >>> m = Model("rcf", backend="synthetic")  # doctest: +SKIP
    >>> emb = m.get_embedding(PointBuffer(121.5, 31.2, 1280),
    ...                       temporal=TemporalSpec.range("2022-06-01", "2022-09-01"))  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        *,
        backend: str = "auto",
        device: str = "auto",
        sensor: SensorSpec | None = None,
        fetch: FetchSpec | None = None,
        modality: str | None = None,
        output: OutputSpec = OutputSpec.pooled(),  # noqa: B008 - frozen, shared safely
        input_prep: InputPrepSpec | str | None = None,
        provider_options: Mapping[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> None:
        warn_managed_input_prep(name, input_prep, stacklevel=2)
        self._request: EmbedRequest = prepare_request(
            name,
            sensor=sensor,
            fetch=fetch,
            modality=modality,
            output=output,
            backend=backend,
            device=device,
            input_prep=input_prep,
            provider_options=dict(provider_options) if provider_options else None,
            model_kwargs=model_kwargs,
        )
        rm = self._request.resolved
        self._embedder = get_embedder(rm.canonical, rm.config_dict, device)
        self._cache_key = embedder_cache_key(rm.canonical, rm.config_dict, device)

    # -- what the instance was built with ----------------------------------------------
    @property
    def name(self) -> str:
        """The model name as given."""
        return self._request.model

    @property
    def backend(self) -> str:
        """The resolved provider name (``"auto"`` for products that are their own source)."""
        return self._request.resolved.backend

    @property
    def device(self) -> str:
        """The device the model was loaded on."""
        return self._cache_key[2]

    @property
    def sensor(self) -> SensorSpec | None:
        """The resolved sensor (``None`` for precomputed products)."""
        return self._request.resolved.sensor

    @property
    def output(self) -> OutputSpec:
        """The output spec of every call."""
        return self._request.output

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, backend={self.backend!r}, device={self.device!r}, output={self.output!r})"
        )

    def _keep_resident(self) -> None:
        """Put this instance's model back in the process cache if it was evicted or reset.

        The single-ROI path looks the model up in that cache; without this an
        eviction (more than a few models in use) or ``reset_runtime()`` would
        load it again.
        """
        keep_resident(self._cache_key, self._embedder)

    # -- embedding ---------------------------------------------------------------------
    def get_embedding(self, spatial: SpatialSpec, *, temporal: TemporalSpec | None = None) -> Embedding:
        """Embed one ROI.

        Parameters
        ----------
        spatial : BBox or PointBuffer
            The region of interest.
        temporal : TemporalSpec, optional
            Time window; on-the-fly models default to 2022-06-01..2022-09-01
            with a warning.

        Returns
        -------
        Embedding
            Shaped by this model's ``output`` spec.

        Raises
        ------
        SpecError
            Invalid spatial or temporal spec.
        ModelError
            Not a spatial spec, or a failed fetch or forward pass.
        ProviderError
            The provider could not be initialised.
        """
        rois = [normalize_spatial(spatial)]
        temporal_n = normalize_temporal(temporal)
        self._keep_resident()
        return run_request(self._request, rois, temporal_n)[0]

    def get_embeddings_batch(
        self, spatials: list[SpatialSpec], *, temporal: TemporalSpec | None = None
    ) -> list[Embedding]:
        """Embed several ROIs (fetched in parallel, embedded together), in input order.

        Parameters
        ----------
        spatials : list of BBox or PointBuffer
            A non-empty list of ROIs.
        temporal : TemporalSpec, optional
            Time window shared by every ROI.

        Returns
        -------
        list of Embedding

        Raises
        ------
        ModelError
            ``spatials`` is not a non-empty list, or a fetch or forward pass failed.
        SpecError
            Invalid spatial or temporal spec.
        """
        if not isinstance(spatials, list) or not spatials:
            raise ModelError("spatials must be a non-empty list[SpatialSpec].")
        rois = [normalize_spatial(s) for s in spatials]
        temporal_n = normalize_temporal(temporal)
        self._keep_resident()
        return run_request(self._request, rois, temporal_n)

    # -- description -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The model's capabilities (its ``describe()``), or ``{}`` when unavailable.

        Returns
        -------
        dict
        """
        try:
            desc = self._embedder.describe()
        except Exception:
            return {}
        return dict(desc) if isinstance(desc, Mapping) else {}

    @staticmethod
    def list_models(*, include_aliases: bool = False) -> list[str]:
        """Sorted names of the registered models (as :func:`rs_embed_dask.list_models`).

        Parameters
        ----------
        include_aliases : bool, default False
            Add the aliases to the canonical ids.

        Returns
        -------
        list of str
        """
        return _list_models(include_aliases=include_aliases)
