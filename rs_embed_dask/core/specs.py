"""``rs_embed.core.specs``: the spec dataclasses and ``SpatialSpec``.

rs-embed's internal ``ModelInputSpec`` has no counterpart: models declare
their input through :meth:`rs_embed_dask.models.base.Embedder.describe`.
"""

from __future__ import annotations

from rs_embed_dask.specs import (
    BBox,
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)

__all__ = [
    "BBox",
    "FetchSpec",
    "InputPrepSpec",
    "OutputSpec",
    "PointBuffer",
    "SensorSpec",
    "SpatialSpec",
    "TemporalSpec",
]
