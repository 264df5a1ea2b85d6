"""``export_batch`` end to end on a local cluster with each offline provider.

One small cluster (one IO worker, one inference worker, separate processes)
exports four 32 x 32 ROIs with ``rcf`` (16 features) from ``synthetic``, from
``local`` GeoTIFFs and from a static STAC catalogue of COGs, and each export
is read back with ``load_export``.  The ``local`` and ``stac`` data are the
same synthetic-world pixels, so their inputs and embeddings must agree
exactly; ``backend="auto"`` picks ``local`` and ``stac`` from the sensors'
collection prefixes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch, load_export
from rs_embed_dask.core.specs import SensorSpec
from rs_embed_dask.core.types import ExportModelRequest
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BANDS = ("B2", "B3", "B4", "B8")
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(8.40 + 0.01 * i, 47.30 + 0.005 * (i % 2), 160) for i in range(4)]
FEATURES = 16


def _cover() -> GridWindow:
    wins = [grid_window(r, 10) for r in ROIS]
    c0, r0 = min(w.col_off for w in wins) - 4, min(w.row_off for w in wins) - 4
    c1 = max(w.col_off + w.width for w in wins) + 4
    r1 = max(w.row_off + w.height for w in wins) + 4
    return GridWindow(c0, r0, c1 - c0, r1 - r0, 10.0)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from _clusters import local_client

    with local_client(io_threads=2, inference_workers=1) as c:
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """One GeoTIFF and one static STAC catalogue holding the same synthetic-world pixels."""
    import rasterio
    from stac_catalog import Scene, build_catalog

    root = tmp_path_factory.mktemp("provider_exports")
    cover = _cover()
    world = np.round(SyntheticProvider().render(cover, None, [S2_BANDS.index(b) for b in BANDS]))
    tif = root / "mosaic_20220701.tif"
    with rasterio.open(
        tif, "w", driver="GTiff", width=cover.width, height=cover.height, count=len(BANDS),
        dtype="uint16", crs="EPSG:3857", transform=cover.transform, nodata=0,
    ) as dst:  # fmt: skip
        dst.write(world.astype(np.uint16))
        dst.descriptions = BANDS
    catalog = build_catalog(root / "stac", [Scene("only", "2022-07-01", cover)], bands=BANDS)
    return {"tif": str(tif), "catalog": catalog}


def _export(client: Any, out: Path, sensor: SensorSpec, backend: str, options: dict[str, Any] | None) -> Any:
    model = ExportModelRequest("rcf", sensor=sensor, model_config={"features": FEATURES})
    return export_batch(
        spatials=ROIS,
        temporal=TEMPORAL,
        models=[model],
        target=ExportTarget.combined(str(out)),
        backend=backend,
        config=ExportConfig(chunk_size=2, show_progress=False),
        client=client,
        provider_options=options,
    )


@pytest.fixture(scope="module")
def exports(client, data, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("exports")
    runs = {
        "synthetic": (SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS), "synthetic", None),
        "local": (SensorSpec(f"local:{data['tif']}", BANDS), "auto", None),
        "stac": (SensorSpec("stac:sentinel-2-l2a", BANDS), "auto", {"catalog_url": data["catalog"]}),
    }
    out = {}
    for name, (sensor, backend, options) in runs.items():
        path = root / f"{name}.npz"
        manifest = _export(client, path, sensor, backend, options)
        out[name] = (manifest, load_export(str(path)))
    return out


@pytest.mark.parametrize("name", ["synthetic", "local", "stac"])
def test_export_on_each_provider_loads_back(exports, name):
    manifest, res = exports[name]
    assert manifest["status"] == "ok"
    assert res.n_items == len(ROIS)
    assert res.status == "ok"
    emb = np.asarray(res.embedding("rcf"))
    assert emb.shape == (len(ROIS), FEATURES)
    assert np.isfinite(emb).all()
    assert len({row.tobytes() for row in emb}) == len(ROIS)
    inputs = np.asarray(res.models["rcf"].inputs)
    assert inputs.shape == (len(ROIS), len(BANDS), 32, 32)
    (entry,) = manifest["models"]
    assert entry["model"] == "rcf"


def test_auto_backend_and_identical_pixels_give_identical_embeddings(exports):
    local, stac, synth = exports["local"][1], exports["stac"][1], exports["synthetic"][1]
    # rounded file pixels, not the synthetic world's float (seasonal) ones: auto picked the files
    assert not np.array_equal(np.asarray(local.models["rcf"].inputs), np.asarray(synth.models["rcf"].inputs))
    np.testing.assert_array_equal(
        np.asarray(local.models["rcf"].inputs), np.asarray(stac.models["rcf"].inputs)
    )
    np.testing.assert_array_equal(np.asarray(local.embedding("rcf")), np.asarray(stac.embedding("rcf")))
    for i, roi in enumerate(ROIS):
        w = grid_window(roi, 10)
        want = np.round(SyntheticProvider().render(w, None, [S2_BANDS.index(b) for b in BANDS]))
        np.testing.assert_array_equal(np.asarray(stac.models["rcf"].inputs)[i], want)
