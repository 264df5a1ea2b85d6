"""The provider and toy models that wrote ``tests/data/upstream_exports``, rebuilt from its README.

rs-embed 0.3.1 wrote those files with a provider returning
``1000 + 500*c + 10*y + x + offset`` at the fixture's own shapes, and with
four tiny numpy models.  Rebuilt here on our plugin contract, they let
``tests/test_fixture_parity.py`` run the same requests through our engine and
compare the files key by key and value by value.  The module is importable
by worker processes (``tests/`` is on their ``sys.path``), like
``_engine_plugins``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rs_embed_dask.core.errors import ModelError, ProviderError
from rs_embed_dask.core.specs import BBox, OutputSpec, SensorSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.base import Embedder
from rs_embed_dask.providers.base import FetchResult, Provider

PROVIDER = "fixture_synth"
SENSOR = SensorSpec(collection="SYNTH/TOY_S2", bands=("B2", "B3", "B4", "B8"), scale_m=10)
#: the centre of the fixtures' spatial 1, whose fetch fails when ``fail_spatial_1`` is set
SPATIAL_1_CENTRE = (-104.99906, 40.00072)


def _centre(spatial: Any) -> tuple[float, float]:
    if isinstance(spatial, BBox):
        return (spatial.minlon + spatial.maxlon) / 2.0, (spatial.minlat + spatial.maxlat) / 2.0
    return float(spatial.lon), float(spatial.lat)


def _is_spatial_1(spatial: Any) -> bool:
    lon, lat = _centre(spatial)
    return abs(lon - SPATIAL_1_CENTRE[0]) < 1e-6 and abs(lat - SPATIAL_1_CENTRE[1]) < 1e-6


class FixtureProvider(Provider):
    """The fixtures' provider: exact integer ramps at the fixtures' shapes (not on our grid)."""

    name = PROVIDER

    def __init__(self, *, fail_spatial_1: bool = False, **options: Any) -> None:
        super().__init__(fail_spatial_1=fail_spatial_1, **options)
        self.fail_spatial_1 = bool(fail_spatial_1)

    def fetch(self, spatial: Any, temporal: Any, sensor: SensorSpec, *, n_frames: int | None = None) -> Any:
        if self.fail_spatial_1 and _is_spatial_1(spatial):
            raise ProviderError("synthetic provider: simulated fetch failure")
        lon, lat = _centre(spatial)
        if isinstance(spatial, BBox):
            h = round((spatial.maxlat - spatial.minlat) * 111320 / sensor.scale_m)
            w = round((spatial.maxlon - spatial.minlon) * 111320 * math.cos(math.radians(lat)) / sensor.scale_m)
        else:
            h = w = round(2 * spatial.buffer_m / sensor.scale_m)
        offset = (round(lon * 1e4) + round(lat * 1e4)) % 1000
        c = np.arange(len(sensor.bands), dtype=np.float32)[:, None, None]
        y = np.arange(h, dtype=np.float32)[None, :, None]
        x = np.arange(w, dtype=np.float32)[None, None, :]
        data = (1000 + 500 * c + 10 * y + x + offset).astype(np.float32)
        return FetchResult(data=data, meta={})  # upstream's toy provider reported no fetch metadata


def _blocks(a: np.ndarray, k: int = 4) -> np.ndarray:
    d, h, w = a.shape
    return a.reshape(d, h // k, k, w // k, k).mean(axis=(2, 4))


def _proj_weights() -> np.ndarray:
    d = np.arange(16, dtype=np.float64)[:, None]
    c = np.arange(4, dtype=np.float64)[None, :]
    return np.sin(d + 1) * np.cos(0.5 * c + 0.25 * d)


class _Toy(Embedder):
    dim = 0

    def describe(self) -> dict[str, Any]:
        return {
            "type": "onthefly",
            "backend": ["provider"],
            "output": ["pooled", "grid"],
            "inputs": {"collection": SENSOR.collection, "bands": list(SENSOR.bands)},
            "defaults": {"scale_m": 10},
            "embedding_dim": self.dim,
        }

    def compute(self, x: np.ndarray, output: OutputSpec) -> np.ndarray:
        raise NotImplementedError

    def check(self, ctx: Mapping[str, Any]) -> None:
        """Raise the model's injected failure for this input, if any."""

    def embed_inputs(
        self, inputs: Sequence[np.ndarray], *, output: OutputSpec, contexts: Sequence[Mapping[str, Any]] | None = None
    ) -> list[Embedding]:
        out = []
        for i, x in enumerate(inputs):
            self.check((contexts or [{}] * len(inputs))[i])
            meta: dict[str, Any] = {"model": self.name, "input_hw": [int(x.shape[-2]), int(x.shape[-1])]}
            if output.mode == "pooled":
                meta["pooling"] = output.pooling
            else:
                meta.update(y_axis_direction="north_to_south", grid_block_px=4)
            out.append(Embedding(data=self.compute(np.asarray(x, np.float64), output).astype(np.float32), meta=meta))
        return out


class ToyStats(_Toy):
    """``concat(mean, std)`` per band (pooled); 4 x 4 block means of the input (grid)."""

    name = "toy_stats"
    dim = 8

    def compute(self, x: np.ndarray, output: OutputSpec) -> np.ndarray:
        if output.mode == "grid":
            return _blocks(x)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))])


class ToyProj(_Toy):
    """``tanh(W z)`` per pixel, mean-pooled or in 4 x 4 block means."""

    name = "toy_proj"
    dim = 16

    def compute(self, x: np.ndarray, output: OutputSpec) -> np.ndarray:
        f = np.tanh(np.einsum("dc,chw->dhw", _proj_weights(), (x - 1000.0) / 1000.0))
        return _blocks(f) if output.mode == "grid" else f.mean(axis=(1, 2))


class ToyFlaky(ToyProj):
    """``toy_proj`` failing on spatial 1."""

    name = "toy_flaky"

    def check(self, ctx: Mapping[str, Any]) -> None:
        if ctx.get("spatial") is not None and _is_spatial_1(ctx["spatial"]):
            raise ModelError("toy_flaky: simulated failure on this spatial")


class ToyBroken(ToyProj):
    """Always fails."""

    name = "toy_broken"

    def check(self, ctx: Mapping[str, Any]) -> None:
        raise RuntimeError("toy_broken: simulated model failure")


MODELS = (ToyStats, ToyProj, ToyFlaky, ToyBroken)


def register() -> None:
    """Register the provider and the four models in this process."""
    from rs_embed_dask.core.registry import register_model, register_provider

    register_provider(PROVIDER, FixtureProvider, overwrite=True)
    for cls in MODELS:
        register_model(cls.name, cls, overwrite=True)


def unregister() -> None:
    """Undo :func:`register`."""
    from rs_embed_dask.core.registry import unregister_model, unregister_provider

    unregister_provider(PROVIDER)
    for cls in MODELS:
        unregister_model(cls.name)
