"""Property: every input is refused on the client or processed without error (issue 16).

Hypothesis draws ROIs, temporals, sensors (bands, scale), ``rcf``
configurations, provider options, devices, outputs and targets, and calls a
public entry point (:func:`get_embedding`, :func:`get_embeddings_batch` or
:func:`export_batch` on an in-process cluster) with the ``synthetic``
provider.  Each call must either

- raise :class:`SpecError`, :class:`ModelError` or :class:`TypeError` (or,
  for an unknown ``backend`` name, rs-embed's :class:`ProviderError`) before
  any fetch or task (observed by recording, not replacing, the first fetch
  of the single-ROI path and the engine's entry of the export path) and
  without creating the target, or
- return a result: embeddings of the right count, an export whose items are
  all ``ok``.

The window limit is lowered to 64 x 64 pixels so that oversized ROIs are
drawn without ever rendering a large one.  Failure injection
(``failure_rate`` > 0) is drawn only out of range: a valid rate makes
fetches fail on purpose.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rs_embed_dask.api as api_mod
import rs_embed_dask.export.batch as batch_mod
from rs_embed_dask import (
    BBox,
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    export_batch,
    get_embedding,
    get_embeddings_batch,
)
from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError

S2 = "COPERNICUS/S2_SR_HARMONIZED"
# the functions observed: the first fetch of the single-ROI path, the entry of the export engine
FETCH_INPUT = api_mod.fetch_input
RUN_EXPORT = batch_mod.run_export
REFUSALS = (SpecError, ModelError, TypeError)

def mostly(valid: list[Any], invalid: list[Any], p_valid: int = 92) -> st.SearchStrategy[Any]:
    """``valid`` values ``p_valid`` % of the time, else ``invalid`` ones (so that both kinds are common)."""
    return st.integers(0, 99).flatmap(lambda r: st.sampled_from(valid if r < p_valid else invalid))


lon = mostly([-120.5, 0.0, 10.0, 121.5], [-200.0, -179.999, 179.999, 180.0])
lat = mostly([-60.0, 0.0, 31.2, 45.0, 85.0], [-95.0, -86.0, 86.0])
buffer_m = mostly([40.0, 160.0, 320.0], [-1.0, 0.0, 5.0, 2e6, math.nan])
points = st.builds(PointBuffer, lon, lat, buffer_m)
boxes = st.builds(
    lambda x0, y0, dx, dy: BBox(x0, y0, x0 + dx, y0 + dy),
    lon, lat, mostly([0.002, 0.005], [-0.01, 0.0, 5.0]), mostly([0.002, 0.004], [-0.01, 3.0]),
)  # fmt: skip
rois = st.integers(0, 99).flatmap(lambda r: points if r < 60 else boxes if r < 95 else st.just("not a roi"))
temporals = mostly(
    [None, TemporalSpec.year(2022), TemporalSpec.year(2022.0), TemporalSpec.range("2022-06-01", "2022-07-01")],
    [TemporalSpec.year(2022.7), TemporalSpec.year(math.inf), TemporalSpec.year(True), TemporalSpec.year(0),
     TemporalSpec.range("2022-07-01", "2022-06-01"), TemporalSpec.range("2022-13-01", "2022-14-01"), "2022"],
)  # fmt: skip
bands = st.one_of(
    st.sampled_from([("B2", "B3", "B4", "B8"), ("B4", "nir", "B11", "B2"), ("VV", "VH"), ("B2", "B3")]),
    st.lists(st.sampled_from(["B2", "B8", "B99", "VV", ""]), min_size=0, max_size=4).map(tuple),
)
sensors = st.one_of(
    st.none(),
    st.none(),
    st.builds(
        SensorSpec, st.just(S2), bands,
        scale_m=mostly([10, 20], [0, -5, 1000]), cloudy_pct=mostly([30], [150]),
    ),
)  # fmt: skip
model_configs = st.fixed_dictionaries(
    {},
    optional={
        "features": mostly([2, 8], [3, 0]),
        "kernel_size": mostly([1, 3], [5, 0]),
        "grid_stride": mostly([1, 4], [0]),
        "bands": bands,
    },
)
provider_options = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "seed": mostly([0, 7, -1], ["seven", 1.5]),
            "latency_s": mostly([0.0], [-1.0]),
            "cloud_fraction": mostly([0.0, 0.5], [2.0, math.nan]),
            "failure_rate": mostly([0.0], [2.0, -0.5]),
        },
    ),
    st.sampled_from(["abc", {"bogus": 1}, {"token": "-----BEGIN PRIVATE KEY-----"}]),
)
devices = mostly(["cpu", "auto"], ["tpu", "cuda", 123])
backends = mostly(["synthetic"], [123, "nope"], p_valid=90)
outputs = mostly([OutputSpec.pooled(), OutputSpec.pooled("max"), OutputSpec.grid()], ["pooled"])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None, set_as_default=False) as c:
        yield c


@pytest.fixture(autouse=True)
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_MAX_WINDOW_PIXELS", str(64 * 64))


class Recorder:
    """Wraps a function to record that it was entered; it still runs."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.entered = 0

    def __call__(self, *a: Any, **k: Any) -> Any:
        self.entered += 1
        return self.fn(*a, **k)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entry=st.sampled_from(["get_embedding", "get_embeddings_batch", "export_combined", "export_per_item"]),
    spatials=st.lists(rois, min_size=1, max_size=3),
    temporal=temporals,
    sensor=sensors,
    model_config=model_configs,
    options=provider_options,
    device=devices,
    backend=backends,
    output=outputs,
    names=mostly([None], ["abc", ["a", "b", "c"]]),
)
def test_every_input_is_refused_on_the_client_or_processed(
    client: Any, monkeypatch: pytest.MonkeyPatch, entry: str, spatials: list[Any], temporal: Any, sensor: Any,
    model_config: dict[str, Any], options: Any, device: Any, backend: Any, output: Any, names: Any,
) -> None:  # fmt: skip
    fetches = Recorder(FETCH_INPUT)
    engine = Recorder(RUN_EXPORT)
    monkeypatch.setattr(api_mod, "fetch_input", fetches)
    monkeypatch.setattr(batch_mod, "run_export", engine)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = os.path.join(tmp, "out", "e.npz" if entry == "export_combined" else "items")
        refusal: Exception | None = None
        try:
            if entry == "get_embedding":
                out: Any = get_embedding(
                    "rcf", spatial=spatials[0], temporal=temporal, sensor=sensor, output=output,
                    backend=backend, device=device, provider_options=options, **model_config,
                )  # fmt: skip
            elif entry == "get_embeddings_batch":
                out = get_embeddings_batch(
                    "rcf", spatials=spatials, temporal=temporal, sensor=sensor, output=output,
                    backend=backend, device=device, provider_options=options, **model_config,
                )  # fmt: skip
            else:
                tgt = (
                    ExportTarget.combined(target) if entry == "export_combined"
                    else ExportTarget.per_item(target, names=names)
                )  # fmt: skip
                out = export_batch(
                    spatials=spatials, temporal=temporal, sensor=sensor, output=output,
                    models=[ExportModelRequest("rcf", model_config=model_config or None)],
                    target=tgt, backend=backend, device=device, provider_options=options, client=client,
                    config=ExportConfig(chunk_size=2, show_progress=False),
                )  # fmt: skip
        except REFUSALS as exc:
            refusal = exc
        except ProviderError as exc:  # rs-embed's type for an unknown backend name, kept for parity
            if "Unknown provider backend=" not in str(exc):
                raise
            refusal = exc
        if refusal is not None:
            event(f"refused: {type(refusal).__name__}")
            assert fetches.entered == 0, f"refused after a fetch started: {refusal!r}"
            assert engine.entered == 0, f"refused after the export engine started: {refusal!r}"
            assert not os.path.exists(os.path.join(tmp, "out")), f"refused but wrote the target: {refusal!r}"
            return
        # accepted: processed without error
        event(f"accepted: {entry}")
        if entry == "get_embedding":
            assert out.data.shape[0] > 0
        elif entry == "get_embeddings_batch":
            assert len(out) == len(spatials)
        elif entry == "export_combined":
            assert out["status"] == "ok", out
        else:
            assert len(out) == len(spatials)
            assert all(m["status"] == "ok" for m in out), out
