"""Modalities: which sensor a model reads for ``modality="s1"``, ``"sar"``, ...

A model declares its modalities in ``describe()["modalities"]`` as rs-embed
does: a mapping from a modality name to ``{"collection", "bands"}`` with
optional per-modality ``"defaults"`` over the model's fetch defaults.
``modality=`` (argument, ``ExportModelRequest`` field or
``SensorSpec.modality``) then selects that sensor.  A model whose weights
differ per modality names the ``model_config`` key that picks them
(``Embedder.modality_config_key``), so the worker builds the right encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import SensorSpec

__all__ = ["modality_profiles", "normalize_modality", "resolve_modality"]

_ALIASES = {
    "sentinel1": "s1",
    "sentinel_1": "s1",
    "sentinel2": "s2",
    "sentinel_2": "s2",
    "s2l1c": "s2_l1c",
    "s2l2a": "s2_l2a",
}


def normalize_modality(modality: str | None) -> str | None:
    """rs-embed's spelling of a modality: lower case, ``-`` -> ``_``, ``sentinel1`` -> ``s1``, ..."""
    if modality is None:
        return None
    key = str(modality).strip().lower().replace("-", "_")
    return _ALIASES.get(key, key) or None


def modality_profiles(describe: Mapping[str, Any]) -> dict[str, SensorSpec]:
    """The sensor of each modality a model declares, keyed by normalised name.

    Parameters
    ----------
    describe : mapping
        The model's ``describe()``.  Entries of ``"modalities"`` without a
        ``collection`` and ``bands`` are ignored, as in rs-embed.

    Returns
    -------
    dict of str to SensorSpec
        Each sensor carries its modality name in ``SensorSpec.modality``.
    """
    declared = describe.get("modalities")
    if "precomputed" in str(describe.get("type", "")).lower() or not isinstance(declared, Mapping):
        return {}
    defaults = dict(describe.get("defaults") or {})
    out: dict[str, SensorSpec] = {}
    for raw, entry in declared.items():
        name = normalize_modality(str(raw))
        if not name or not isinstance(entry, Mapping) or "collection" not in entry or "bands" not in entry:
            continue
        d = {**defaults, **dict(entry.get("defaults") or {})}
        out[name] = SensorSpec(
            collection=str(entry["collection"]),
            bands=tuple(str(b) for b in entry["bands"]),
            scale_m=int(d.get("scale_m", 10)),
            cloudy_pct=int(d.get("cloudy_pct", 30)),
            fill_value=float(d.get("fill_value", 0.0)),
            composite="mosaic" if str(d.get("composite", "median")) == "mosaic" else "median",
            modality=name,
            orbit=d.get("orbit"),
            use_float_linear=bool(d.get("use_float_linear", True)),
            s1_require_iw=bool(d.get("s1_require_iw", True)),
            s1_relax_iw_on_empty=bool(d.get("s1_relax_iw_on_empty", True)),
        )
    return out


def resolve_modality(
    model_id: str,
    describe: Mapping[str, Any],
    *,
    modality: str | None,
    sensor: SensorSpec | None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[str | None, SensorSpec | None]:
    """Check a requested modality and return it with the sensor it selects.

    Parameters
    ----------
    model_id : str
        Canonical model id, for messages.
    describe : mapping
        The model's ``describe()``.
    modality : str or None
        ``modality=`` as the user gave it.
    sensor : SensorSpec or None
        ``sensor=`` as the user gave it (its ``modality`` counts as a request).
    aliases : mapping, optional
        Extra names the model accepts for its modalities (croma: ``s1`` ->
        ``sar``).

    Returns
    -------
    (str or None, SensorSpec or None)
        The modality (a key of :func:`modality_profiles`, or the model's
        default modality), or ``None`` when none was asked for; and that
        modality's declared sensor, or ``None`` when the model declares no
        profile for it (its default sensor then applies).

    Raises
    ------
    ModelError
        ``modality`` and ``sensor.modality`` disagree, or the model does not
        expose the modality (rs-embed's messages).
    """
    requested = normalize_modality(modality)
    from_sensor = normalize_modality(sensor.modality) if sensor is not None else None
    if requested is not None and from_sensor is not None and requested != from_sensor:
        raise ModelError(
            f"Conflicting modality values: sensor.modality={from_sensor!r}, modality={requested!r}."
        )
    requested = requested or from_sensor
    if requested is None:
        return None, None
    profiles = modality_profiles(describe)
    target = normalize_modality((aliases or {}).get(requested, requested)) or requested
    if target in profiles:
        return target, profiles[target]
    default = normalize_modality((describe.get("defaults") or {}).get("modality"))
    if default is not None and target == default:
        return target, None
    raise ModelError(f"Model {model_id!r} does not expose modality={requested!r}.")


def stamp(sensor: SensorSpec, modality: str | None) -> SensorSpec:
    """``sensor`` with ``modality`` set (unchanged when ``modality`` is ``None``)."""
    if modality is None or sensor.modality == modality:
        return sensor
    return replace(sensor, modality=modality)
