"""``gse``: Google Satellite Embedding (AlphaEarth Foundations), annual, from Earth Engine.

The product ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` holds one 64-band image
(``A00`` .. ``A63``, dequantised unit-length vectors in [-1, 1], 10 m pixels in
the UTM zone of each ~164 km tile) per tile and year.  It is read through the
``gee`` provider's ``computePixels`` path on the common EPSG:3857 grid: the
year's tiles are mosaicked (latest on top, as rs-embed), all 64 bands are
requested in one binary payload, windows over Earth Engine's request limit are
split on lattice lines and reassembled exactly, and masked pixels (outside the
product or masked in it) become NaN, which the NaN-aware pooling ignores.

Earth Engine is initialised from the environment (``EE_PROJECT`` /
``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_APPLICATION_CREDENTIALS`` or the stored
``earthengine authenticate`` credentials), see :mod:`rs_embed_dask.providers.ee_session`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, ProviderError, TransientProviderError
from rs_embed_dask.core.specs import SensorSpec, SpatialSpec, TemporalSpec
from rs_embed_dask.geometry import GridWindow
from rs_embed_dask.models.precomputed import PrecomputedEmbedder
from rs_embed_dask.providers.gee_images import GSE_ANNUAL

__all__ = ["GSE_BANDS", "GSEAnnualEmbedder"]

#: The product's 64 embedding bands, in order.
GSE_BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(64))


class GSEAnnualEmbedder(PrecomputedEmbedder):
    """Annual Google Satellite Embedding on the common grid, through Earth Engine.

    ``TemporalSpec.year`` is required (a range uses its start year, with a
    warning); the grid scale is ``SensorSpec.scale_m`` / ``fetch.scale_m``
    (default 10 m, the product's resolution).
    """

    name = "gse"
    requires = ("ee",)
    extra = "gee"
    embedding_dim = 64
    product = "Google Satellite Embedding V1 annual (AlphaEarth Foundations)"
    source = GSE_ANNUAL
    native_crs = "UTM zone of each ~163.84 km tile (EPSG:326xx / 327xx)"
    native_resolution = "10 m"
    default_scale_m = 10.0
    sensor_sets_scale = True
    default_year = None
    resampling = "Earth Engine default (nearest) reprojection to the request grid"
    backends = ("auto", "gee")
    provider = "gee"  # exports hold the gee provider's cluster-wide cap around each read

    def describe_extra(self) -> dict[str, Any]:
        """Access, bands and the temporal rule."""
        return {
            "inputs": {"collection": GSE_ANNUAL, "bands": list(GSE_BANDS), "product": self.product},
            "access": "Earth Engine (computePixels, NUMPY_NDARRAY) via the gee provider",
            "temporal": {"mode": "year", "required": True, "range": "start year, with a warning"},
            "values": "dequantised unit-length vectors in [-1, 1]; masked pixels -> NaN",
            "composite": "mosaic (latest tile on top)",
        }

    def product_sensor(self, scale_m: float) -> SensorSpec:
        """The request the provider serves: all 64 bands, mosaic, NaN fill."""
        return SensorSpec(
            collection=GSE_ANNUAL,
            bands=GSE_BANDS,
            scale_m=scale_m,  # type: ignore[arg-type]
            cloudy_pct=100,
            fill_value=float("nan"),
            composite="mosaic",
        )

    def read_window(
        self, window: GridWindow, spatial: SpatialSpec, temporal: TemporalSpec | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The year's 64 bands on ``window`` (NaN where masked), via ``ee.data.computePixels``."""
        from rs_embed_dask.resolve import get_provider

        if temporal is None or temporal.year is None:  # the base resolves the year first
            raise ModelError("gse requires TemporalSpec.year(year=...).")
        year = int(temporal.year)
        provider = get_provider("gee", {})
        dates = (date(year, 1, 1), date(year + 1, 1, 1))
        try:
            data, meta = provider.fetch_window(window, dates, self.product_sensor(window.scale_m))
        except TransientProviderError:
            raise
        except ProviderError as exc:
            raise ModelError(f"gse: {exc}") from exc
        meta = {k: meta[k] for k in ("collection_used", "composite", "date_window", "n_requests") if k in meta}
        return np.asarray(data, dtype=np.float32), meta
