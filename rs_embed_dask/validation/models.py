"""Checks across the resolved models of a request: bands, providers, duplicates.

Run on the client after :func:`rs_embed_dask.resolve.resolve_model`, before
anything is submitted:

- the sensor's bands are as many as the model reads (a model configured for
  4 bands cannot take a 5-band sensor) and exist in the provider's
  catalogue (``Provider.check_sensor``);
- ``provider_options`` fit every provider the request reads through
  (:func:`rs_embed_dask.validation.options.check_provider_options`);
- one model is not requested twice under two names (``"rcf"`` and
  ``"RCF"``, or an alias such as ``"mosaiks"``) with the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rs_embed_dask.core.errors import ModelError, SpecError

__all__ = ["check_bands", "check_distinct_models", "check_request_models", "request_backends"]


def request_backends(models: Sequence[Any]) -> list[str]:
    """Providers the request's on-the-fly models read through, in first-use order."""
    out: list[str] = []
    for m in models:
        if m.is_precomputed or m.sensor is None or m.backend == "auto":
            continue
        if m.backend not in out:
            out.append(m.backend)
    return out


def check_bands(models: Sequence[Any], provider_options: Mapping[str, Any] | None = None) -> None:
    """Refuse a sensor whose bands the model or its provider cannot use.

    Raises
    ------
    ModelError
        The model reads a fixed set of bands and the sensor has another count.
    SpecError
        The provider's catalogue lacks a band (the message lists its bands).
    """
    from rs_embed_dask.core.registry import get_model_class, get_provider_class

    for m in models:
        if m.sensor is None or m.is_precomputed:
            continue
        embedder = get_model_class(m.canonical)(m.config_dict)
        wanted = getattr(embedder, "bands", None)
        got = tuple(m.sensor.bands)
        if isinstance(wanted, tuple) and wanted and len(wanted) != len(got):
            raise ModelError(
                f"Model {m.name!r} expects {len(wanted)} bands {list(wanted)}; the sensor gives "
                f"{len(got)}: {list(got)}. Give a sensor with {len(wanted)} bands, or set the model's "
                "bands (model_config={'bands': [...]}) where the model allows it."
            )
        if m.backend == "auto":
            continue
        try:
            get_provider_class(m.backend).check_sensor(m.sensor, provider_options)
        except SpecError as exc:
            raise SpecError(f"Model {m.name!r}: {exc}") from None


def check_distinct_models(models: Sequence[Any]) -> None:
    """Refuse the same model (canonical name, configuration, sensor) requested under two names."""
    seen: dict[tuple[Any, ...], str] = {}
    for m in models:
        key = (m.canonical, m.model_config, m.sensor, m.backend)
        if key in seen:
            raise ModelError(
                f"Duplicate model in export request: {seen[key]!r} and {m.name!r} are the same model "
                f"({m.canonical!r}) with the same configuration; each model may appear once."
            )
        seen[key] = m.name


def check_request_models(models: Sequence[Any], provider_options: Mapping[str, Any] | None) -> None:
    """All model-level checks of a request: provider options, bands, duplicates."""
    from rs_embed_dask.core.registry import get_provider_class
    from rs_embed_dask.validation.options import check_provider_options

    for backend in request_backends(models):
        check_provider_options(get_provider_class(backend), provider_options)
    check_bands(models, provider_options)
    check_distinct_models(models)
