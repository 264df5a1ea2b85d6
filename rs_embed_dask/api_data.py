"""Embeddings of user-provided imagery: rs-embed's bring-your-own-data API.

:func:`get_embedding_from_data` and :func:`get_embeddings_batch_from_data`
embed :class:`~rs_embed_dask.user_data.UserData` arrays with no provider
fetch; :func:`list_models_for_data` reports which models a declaration can
serve.  A declaration is matched against the model's input sensor (the one
:func:`rs_embed_dask.resolve.resolve_model` resolves): the collection must be
the model's, the model's bands must all be declared (extra bands are dropped
and the rest reordered to the model's order), and a georeferenced array is
resampled onto the common EPSG:3857 grid at the model's ``scale_m``.  The
forward pass is :func:`rs_embed_dask.pipeline.embed_batch`, as for provider
inputs.

Where the batch form runs
-------------------------
:func:`get_embedding_from_data` always runs in this process (the model cached
here), as :func:`get_embedding` does.  :func:`get_embeddings_batch_from_data`
runs here too (as :func:`get_embeddings_batch`), unless

* a ``distributed`` client is active (``distributed.get_client()`` finds one)
  and this call is not itself running inside a Dask task, or
* the list holds at least :data:`CLUSTER_MIN_ITEMS` (1024) items, in which
  case the active client is used or, without one, an embedded local cluster
  (:func:`rs_embed_dask.cluster.export_client`) is started for the call.

On a cluster the prepared arrays are scattered and embedded in tasks of at
most :data:`CLUSTER_CHUNK_SIZE` items on the workers' resident models (on the
``gpu`` workers when the cluster advertises that resource), the same
machinery as the export's inference tasks.  Validation and matching always
run here first, so every error of rs-embed is raised before any task.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError
from rs_embed_dask.core.registry import canonical_model_name, get_model_class, list_models
from rs_embed_dask.core.specs import InputPrepSpec, OutputSpec, SensorSpec, SpatialSpec, resolve_input_prep
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.pipeline import embed_batch
from rs_embed_dask.resolve import ResolvedModel, normalize_spatial, normalize_temporal, resolve_model
from rs_embed_dask.user_data import (
    UserData,
    align_to_common_grid,
    match_bands,
    normalize_collection_id,
    raster_footprint,
    resolve_declared_bands,
    warn_if_normalized,
)

__all__ = [
    "CLUSTER_CHUNK_SIZE",
    "CLUSTER_MIN_ITEMS",
    "get_embedding_from_data",
    "get_embeddings_batch_from_data",
    "list_models_for_data",
]

#: Lists at least this long run on a Dask cluster even without an active client.
CLUSTER_MIN_ITEMS = 1024
#: Items per task on the cluster path.
CLUSTER_CHUNK_SIZE = 32


# -- model side ----------------------------------------------------------------------
def _precomputed_refusal(name: str) -> ModelError:
    return ModelError(
        f"Model '{name}' serves precomputed embeddings; it does not "
        "embed user-provided imagery. Use an on-the-fly model instead."
    )


def _no_sensor_refusal(name: str, modality: str | None) -> ModelError:
    return ModelError(
        f"Model '{name}' declares no input sensor"
        + (f" for modality='{modality}'" if modality else "")
        + "; there is nothing to match user-provided data against."
    )


def _requires_georef(name: str) -> bool:
    return bool(get_model_class(name).requires_georef)


def _user_data_model(
    model: str, *, modality: str | None, model_config: Mapping[str, Any] | None, output_mode: str
) -> ResolvedModel:
    """The validated model of a user-data request, or rs-embed's refusal."""
    canonical = canonical_model_name(model)
    cls = get_model_class(model)  # unknown name -> ModelError listing the models
    if "precomputed" in str(cls.model_type):
        raise _precomputed_refusal(canonical)
    try:
        rm = resolve_model(
            model, backend="auto", modality=modality, model_config=model_config, output_mode=output_mode
        )
    except ModelError as exc:
        if "has no default sensor" in str(exc):
            raise _no_sensor_refusal(canonical, modality) from exc
        raise
    if rm.sensor is None:
        raise _no_sensor_refusal(canonical, modality)
    # no provider is involved: the embeddings record backend "auto", as rs-embed's do
    return replace(rm, backend="auto")


def _listing_sensor(name: str) -> SensorSpec | None:
    """A model's default sensor without loading weights (nor requiring its dependencies)."""
    try:
        return resolve_model(name, backend="auto").sensor
    except (ModelError, ProviderError):
        return get_model_class(name)().default_sensor()


# -- data side -----------------------------------------------------------------------
def _declared_spatial(data: UserData) -> SpatialSpec | None:
    """``spatial`` when given, else the footprint of a georeferenced array, else ``None``."""
    if data.spatial is not None or data.crs is None:
        return data.spatial
    return raster_footprint(data.crs, data.transform, tuple(np.shape(data.data))[-2:])


def _require_georef(name: str, spatial: SpatialSpec | None) -> None:
    if spatial is None and _requires_georef(name):
        raise ModelError(
            f"Model '{name}' conditions on request geometry (lat/lon or "
            "GSD encodings); it cannot embed data without UserData.spatial, "
            "and coordinates are never fabricated. Provide spatial (or crs + "
            "transform) or choose a model without this requirement (see "
            "list_models_for_data)."
        )


@dataclass
class _Item:
    """One declaration, ready for the model."""

    array: np.ndarray
    context: dict[str, Any]
    meta: dict[str, Any]


def _select_channels(pixels: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(pixels, dtype=np.float32)
    if idx == tuple(range(x.shape[-3])):
        return x
    return np.ascontiguousarray(np.take(x, list(idx), axis=-3))


def _prepare(rm: ResolvedModel, datas: list[Any], *, stacklevel: int) -> list[_Item]:
    """Validate, match, slice and align every declaration (rs-embed's per-item order)."""
    sensor = rm.sensor
    assert sensor is not None
    items: list[_Item] = []
    for i, data in enumerate(datas):
        if not isinstance(data, UserData):
            raise ModelError(f"datas[{i}] must be a UserData; got {type(data).__name__}.")
        data.validate()
        spatial = _declared_spatial(data)
        _require_georef(rm.canonical, spatial)
        if spatial is not None:
            spatial = normalize_spatial(spatial)
        temporal = normalize_temporal(data.temporal)
        idx = match_bands(data, sensor, model_name=rm.canonical)
        shape = tuple(np.shape(data.data))
        if len(shape) == 4 and rm.n_frames is None:
            raise ModelError(
                f"Model '{rm.canonical}' embeds single images [C,H,W]; UserData.data has "
                f"shape {shape} ([T,C,H,W]). Pass one frame, or use a time-series model."
            )
        pixels = data.pixels()
        warn_if_normalized(data, pixels, stacklevel=stacklevel + 1)
        array, projection, window = align_to_common_grid(
            _select_channels(pixels, idx), data, scale_m=sensor.scale_m, fill_value=sensor.fill_value
        )
        fetch_meta = {"grid": window.to_dict(), "source": "user_data"} if window is not None else None
        items.append(
            _Item(
                array=array,
                context={
                    "spatial": spatial,
                    "temporal": temporal,
                    "sensor": sensor,
                    "fetch_meta": fetch_meta,
                },
                meta={
                    "source": "user_data",
                    "collection": normalize_collection_id(data.collection),
                    "declared_bands": list(resolve_declared_bands(data)),
                    "bands_used": list(sensor.bands),
                    "channel_indices": list(idx),
                    "declared_scale_m": data.scale_m,
                    "projection": projection,
                },
            )
        )
    return items


# -- dispatch ------------------------------------------------------------------------
def _active_client() -> Any:
    """The active ``distributed`` client, ``None`` without one or inside a Dask task."""
    try:
        from distributed import get_client, get_worker
    except ImportError:  # pragma: no cover - core dependency
        return None
    try:
        get_worker()
        return None  # already on a worker: embed here rather than submit from a task
    except ValueError:
        pass
    try:
        return get_client()
    except ValueError:
        return None


def _embed_chunk(
    model: ResolvedModel,
    arrays: list[np.ndarray],
    contexts: list[dict[str, Any]],
    *,
    output: OutputSpec,
    device: str,
    input_prep: InputPrepSpec,
    batch_size: int | None,
    plugins: dict[str, Any],
) -> list[Embedding]:
    """Task body on a worker: embed one chunk with the worker-resident model."""
    from rs_embed_dask.export.tasks import ensure_plugins

    ensure_plugins(plugins)
    return embed_batch(
        model,
        arrays,
        output=output,
        contexts=contexts,
        device=device,
        input_prep=input_prep,
        batch_size=batch_size,
    )


def _plugins(rm: ResolvedModel) -> dict[str, Any]:
    """The model class when it was registered at run time (workers import built-ins by path)."""
    from rs_embed_dask.core import registry

    ref = registry._models.get(rm.canonical)
    return (
        {}
        if ref is None or isinstance(ref, str)
        else {f"model:{rm.canonical}": get_model_class(rm.canonical)}
    )


def _run_on_cluster(
    client: Any,
    rm: ResolvedModel,
    items: list[_Item],
    groups: dict[Any, list[int]],
    *,
    output: OutputSpec,
    device: str,
    prep: InputPrepSpec,
    batch_size: int | None,
) -> list[Embedding]:
    from rs_embed_dask.cluster import cluster_resources

    resources = {"gpu": 1} if cluster_resources(client).get("gpu") else None
    plugins = _plugins(rm)
    run_id = uuid.uuid4().hex[:8]
    parts: list[tuple[list[int], Any]] = []
    # the scattered arrays must stay referenced here until the results are gathered: a
    # future whose last client reference goes away is released, and a task still
    # waiting for it is cancelled ("lost dependencies"); hash=False so that two calls on
    # the same arrays never share (and release) each other's keys
    scattered: list[Any] = []
    for indices in groups.values():
        for s in range(0, len(indices), CLUSTER_CHUNK_SIZE):
            part = indices[s : s + CLUSTER_CHUNK_SIZE]
            arrays = client.scatter([items[i].array for i in part], hash=False)
            scattered.extend(arrays)
            fut = client.submit(
                _embed_chunk,
                rm,
                arrays,
                [items[i].context for i in part],
                output=output,
                device=device,
                input_prep=prep,
                batch_size=batch_size,
                plugins=plugins,
                resources=resources,
                key=f"rsembed-fromdata-{rm.canonical}-{part[0]}-{run_id}",
                pure=False,
            )
            parts.append((part, fut))
    try:
        chunks = client.gather([f for _, f in parts])
    except BaseException:
        client.cancel([f for _, f in parts] + scattered)
        raise
    finally:
        del scattered
    out: list[Embedding | None] = [None] * len(items)
    for (part, _), embs in zip(parts, chunks, strict=True):
        for i, emb in zip(part, embs, strict=True):
            out[i] = emb
    return [e for e in out if e is not None]


def _run_here(
    rm: ResolvedModel,
    items: list[_Item],
    groups: dict[Any, list[int]],
    *,
    output: OutputSpec,
    device: str,
    prep: InputPrepSpec,
    batch_size: int | None,
) -> list[Embedding]:
    out: list[Embedding | None] = [None] * len(items)
    for indices in groups.values():
        embs = embed_batch(
            rm,
            [items[i].array for i in indices],
            output=output,
            contexts=[items[i].context for i in indices],
            device=device,
            input_prep=prep,
            batch_size=batch_size,
        )
        for i, emb in zip(indices, embs, strict=True):
            out[i] = emb
    return [e for e in out if e is not None]


# -- public --------------------------------------------------------------------------
def get_embedding_from_data(
    model: str,
    data: UserData,
    *,
    modality: str | None = None,
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008 - frozen, shared safely
    device: str = "auto",
    input_prep: InputPrepSpec | str | None = None,
    **model_kwargs: Any,
) -> Embedding:
    """Compute the embedding of user-provided imagery, in this process (no provider fetch).

    Parameters
    ----------
    model : str
        Model id or alias.  Precomputed products are refused.
    data : UserData
        The imagery and its declaration (collection, bands, raw units).
    modality : str, optional
        Modality of a multi-modality model; ``data`` is matched against
        that modality's sensor.
    output : OutputSpec, default OutputSpec.pooled()
        Pooled ``(D,)`` or grid ``(D, H, W)``.
    device : str, default "auto"
        Inference device.
    input_prep : InputPrepSpec or {"auto", "resize", "tile"}, optional
        How arrays larger than the model's input are handled (default ``"tile"``).
    **model_kwargs
        Model-specific options (``model_config``).

    Returns
    -------
    Embedding
        With ``meta["user_input"]``: ``source``, ``collection``,
        ``declared_bands``, ``bands_used``, ``channel_indices``,
        ``declared_scale_m`` and ``projection``.

    Raises
    ------
    ModelError
        The model takes no user data (precomputed, no input sensor), needs a
        location the declaration lacks, or the declaration does not satisfy
        its sensor (collection, missing or duplicate band).
    SpecError
        The declaration is invalid (:meth:`UserData.validate`).

    Examples
    --------
    >>> import numpy as np
    >>> from rs_embed_dask import UserData, get_embedding_from_data
    >>> d = UserData(np.full((4, 32, 32), 1500.0, "float32"), "s2", bands=("B2", "B3", "B4", "B8"))
    >>> get_embedding_from_data("rcf", d).data.shape  # doctest: +SKIP
    (512,)
    """
    return _batch(
        model,
        [data],
        modality=modality,
        output=output,
        device=device,
        batch_size=None,
        input_prep=input_prep,
        model_kwargs=model_kwargs,
        stacklevel=4,
        allow_cluster=False,
    )[0]


def get_embeddings_batch_from_data(
    model: str,
    datas: list[UserData],
    *,
    modality: str | None = None,
    output: OutputSpec = OutputSpec.pooled(),  # noqa: B008
    device: str = "auto",
    batch_size: int | None = None,
    input_prep: InputPrepSpec | str | None = None,
    **model_kwargs: Any,
) -> list[Embedding]:
    """Compute the embeddings of several user-provided arrays, in input order.

    Each item is matched on its own (items may declare different band
    orders and carry their own ``spatial``/``temporal``); items sharing a
    ``temporal`` go through the model together.  The list runs on a Dask
    cluster when a client is active or it holds at least
    :data:`CLUSTER_MIN_ITEMS` items (see the module documentation), else in
    this process.

    Parameters
    ----------
    model : str
        Model id or alias.
    datas : list of UserData
        Non-empty list of declarations.
    modality : str, optional
        Modality of a multi-modality model.
    output : OutputSpec, default OutputSpec.pooled()
        Pooled or grid output.
    device : str, default "auto"
        Inference device.
    batch_size : int, optional
        At most this many arrays (or tiles) per forward call.
    input_prep : InputPrepSpec or {"auto", "resize", "tile"}, optional
        As in :func:`get_embedding_from_data`.
    **model_kwargs
        Model-specific options.

    Returns
    -------
    list of Embedding

    Raises
    ------
    ModelError
        ``datas`` empty or not a list, ``batch_size < 1``, or any reason of
        :func:`get_embedding_from_data`.
    SpecError
        An invalid declaration.
    """
    return _batch(
        model,
        datas,
        modality=modality,
        output=output,
        device=device,
        batch_size=batch_size,
        input_prep=input_prep,
        model_kwargs=model_kwargs,
        stacklevel=4,
        allow_cluster=True,
    )


def _batch(
    model: str,
    datas: Any,
    *,
    modality: str | None,
    output: OutputSpec,
    device: str,
    batch_size: int | None,
    input_prep: InputPrepSpec | str | None,
    model_kwargs: dict[str, Any],
    stacklevel: int,
    allow_cluster: bool,
) -> list[Embedding]:
    if not isinstance(datas, list) or len(datas) == 0:
        raise ModelError("datas must be a non-empty list[UserData].")
    if not isinstance(output, OutputSpec):
        raise SpecError(
            f"output must be an OutputSpec (OutputSpec.pooled() or OutputSpec.grid()); "
            f"got {type(output).__name__}"
        )
    rm = _user_data_model(
        model, modality=modality, model_config=model_kwargs or None, output_mode=output.mode
    )
    prep = resolve_input_prep(input_prep)
    if getattr(get_model_class(rm.canonical), "manages_own_input_prep", False) and input_prep not in (
        None,
        "resize",
    ):
        warnings.warn(
            f"Model {model!r} manages its own input preparation; input_prep is ignored.",
            UserWarning,
            stacklevel=stacklevel - 1,
        )
    items = _prepare(rm, datas, stacklevel=stacklevel)
    if batch_size is not None and int(batch_size) < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}.")
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.context["temporal"], []).append(i)
    kw: dict[str, Any] = {"output": output, "device": device, "prep": prep, "batch_size": batch_size}
    client = _active_client() if allow_cluster else None
    if not allow_cluster or (client is None and len(items) < CLUSTER_MIN_ITEMS):
        embs = _run_here(rm, items, groups, **kw)
    else:
        from rs_embed_dask.cluster import export_client

        with export_client(client) as cl:
            embs = _run_on_cluster(cl, rm, items, groups, **kw)
    if len(embs) != len(items):
        raise ModelError("Internal error: temporal-grouped dispatch lost items.")
    for emb, item in zip(embs, items, strict=True):
        emb.meta.setdefault("user_input", item.meta)
    return embs


def list_models_for_data(data: UserData) -> list[dict[str, Any]]:
    """Which registered models a declaration can serve (no weights are loaded).

    Parameters
    ----------
    data : UserData
        The declaration; ``data.data`` may be a small dummy array of the
        right channel count (only its shape is used).

    Returns
    -------
    list of dict
        One per registered model, sorted by name: ``model`` (str),
        ``compatible`` (bool), ``bands_used`` (the model's band order, or
        ``None``) and ``reason`` (why not, or ``None``).

    Raises
    ------
    SpecError
        The declaration is invalid, or omits ``bands`` where no canonical
        order applies.

    Examples
    --------
    >>> import numpy as np
    >>> d = UserData(np.zeros((3, 8, 8)), "s2", bands=("B4", "B3", "B2"))
    >>> [r["model"] for r in list_models_for_data(d) if r["compatible"]]  # doctest: +SKIP
    ['remoteclip', 'satmae', 'scalemae']
    """
    if not isinstance(data, UserData):
        raise ModelError(f"data must be a UserData; got {type(data).__name__}.")
    data.validate()
    report: list[dict[str, Any]] = []
    for name in list_models():
        entry: dict[str, Any] = {"model": name, "compatible": False, "bands_used": None, "reason": None}
        try:
            if "precomputed" in str(get_model_class(name).model_type):
                raise _precomputed_refusal(name)
            sensor = _listing_sensor(name)
            if sensor is None:
                raise _no_sensor_refusal(name, None)
            _require_georef(name, _declared_spatial(data))
            match_bands(data, sensor, model_name=name)
        except ModelError as exc:
            entry["reason"] = str(exc)
        else:
            entry["compatible"] = True
            entry["bands_used"] = list(sensor.bands)
        report.append(entry)
    return report
