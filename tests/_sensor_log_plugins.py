"""A provider that logs which sensor each fetch asked for (``backend="sensor_log"``).

It lives in an importable module (not a test file) because exports ship
runtime-registered classes to worker processes by reference: every worker
must be able to ``import _sensor_log_plugins`` (``tests/`` is on ``sys.path``
when the cluster starts; spawned workers copy it).

Each call of :meth:`SensorLogProvider.fetch` appends one line to the file
given as ``provider_options={"log": path}``::

    <pid> \\t <collection> \\t <bands, comma-separated> \\t <modality> \\t <use_float_linear> \\t <lon>,<lat>
"""

from __future__ import annotations

import os
from typing import Any

from _engine_plugins import append_line, read_lines, roi_id

from rs_embed_dask.providers.synthetic import SyntheticProvider

try:  # the option declarations of providers (newer checkouts validate provider_options)
    from rs_embed_dask.validation.options import ProviderOption
except ImportError:  # pragma: no cover
    ProviderOption = None  # type: ignore[assignment,misc]

__all__ = ["PROVIDER_NAME", "SensorLogProvider", "fetches", "register", "unregister"]

PROVIDER_NAME = "sensor_log"


class SensorLogProvider(SyntheticProvider):
    """The synthetic world, logging the sensor of every fetch call to ``log``."""

    name = PROVIDER_NAME
    option_specs = (
        *getattr(SyntheticProvider, "option_specs", ()),
        *(
            (ProviderOption("log", (str,), path=True, doc="file the fetches are logged to"),)
            if ProviderOption
            else ()
        ),
    )

    def __init__(self, *, log: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.log = log
        self.options["log"] = log

    def fetch(self, spatial: Any, temporal: Any, sensor: Any, *, n_frames: int | None = None) -> Any:
        if self.log:
            append_line(
                self.log,
                "\t".join([str(os.getpid()), sensor.collection, ",".join(sensor.bands), str(sensor.modality),
                           str(bool(sensor.use_float_linear)), roi_id(spatial)]),
            )  # fmt: skip
        return super().fetch(spatial, temporal, sensor, n_frames=n_frames)


def fetches(path: str) -> list[dict[str, str]]:
    """The logged fetches, one dict per call (``pid``, ``collection``, ``bands``, ``modality``, ``linear``, ``roi``)."""
    keys = ("pid", "collection", "bands", "modality", "linear", "roi")
    return [dict(zip(keys, ln.split("\t"), strict=True)) for ln in read_lines(path)]


def register() -> None:
    """Register the provider in this process (exports ship it to the workers)."""
    from rs_embed_dask.core.registry import register_provider

    register_provider(PROVIDER_NAME, SensorLogProvider, overwrite=True)


def unregister() -> None:
    """Remove the provider registered by :func:`register`."""
    from rs_embed_dask.core.registry import unregister_provider

    unregister_provider(PROVIDER_NAME)
