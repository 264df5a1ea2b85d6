"""Rectangular BBoxes on square-input models: rs-embed's fetch-square and crop-back.

rs-embed 0.3.1 fetches a rectangular BBox for remoteclip, satmae, scalemae,
dofa and prithvi as the centred EPSG:3857 square around it, runs the model on
the square and cuts the token grid back to the ROI (pooled: the ROI's tokens
only; RemoteCLIP keeps the square's CLIP vector, see ``fetch_square``).  The
references here are computed independently: the same models on the square
BBox itself (which is fetched and embedded whole), sliced with hand-computed
token boxes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from model_cases.prithvi import CASES as PRITHVI_CASES  # noqa: E402
from model_cases.satmae import CASES as SATMAE_CASES  # noqa: E402
from model_cases.scalemae import CASES as SCALEMAE_CASES  # noqa: E402

from rs_embed_dask import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec, get_embedding  # noqa: E402
from rs_embed_dask.core.registry import get_model_class  # noqa: E402
from rs_embed_dask.fetch_square import (  # noqa: E402
    PIXELS_KEY,
    WINDOW_KEY,
    roi_input,
    roi_token_box,
    roi_window,
    square_fetch_request,
)
from rs_embed_dask.geometry import grid_window, mercator_to_lonlat  # noqa: E402

T = TemporalSpec.range("2022-06-01", "2022-09-01")
S = 10.0
COL, ROW = 90_000, -540_016  # a lattice pixel near 8.1 E, 43.6 N
GRID = OutputSpec.grid()
POOLED = OutputSpec.pooled()


def box(col: int, row: int, width: int, height: int, scale: float = S) -> BBox:
    """The lon/lat BBox of ``width`` x ``height`` lattice pixels whose top-left pixel is ``(col, row)``."""
    lon0, lat1 = mercator_to_lonlat(col * scale, -row * scale)
    lon1, lat0 = mercator_to_lonlat((col + width) * scale, -(row + height) * scale)
    return BBox(lon0, lat0, lon1, lat1)


def centred(side: int, width: int, height: int, scale: float = S) -> tuple[BBox, BBox]:
    """A ``width`` x ``height`` px rectangle centred in the ``side`` px square at (COL, ROW), and that square."""
    return box(COL + (side - width) // 2, ROW + (side - height) // 2, width, height, scale), box(
        COL, ROW, side, side, scale
    )


def embed(
    model: str, spatial: Any, cfg: dict[str, Any], output: OutputSpec = POOLED, **kw: Any
) -> np.ndarray:
    emb = get_embedding(
        model, spatial=spatial, temporal=T, backend="synthetic", device="cpu", output=output, **cfg, **kw
    )
    return np.asarray(emb.data, dtype=np.float32)


# -- geometry and rounding (pure) -----------------------------------------------------------------
def test_square_fetch_request_of_the_harness_rectangle() -> None:
    rect, square = centred(224, 224, 140)
    sq, meta = square_fetch_request(rect, S)
    assert grid_window(sq, S) == grid_window(square, S)  # the centred 224 x 224 px square
    assert meta[WINDOW_KEY] == [0.1875, 0.8125, 0.0, 1.0]
    assert meta[PIXELS_KEY] == [42, 182, 0, 224]
    # rs-embed's crops: 10 x 14 of a patch-16 ViT's 14 x 14 grid, 5 x 7 of RemoteCLIP's 7 x 7
    assert roi_token_box(roi_window(meta), 14, 14) == (2, 12, 0, 14)
    assert roi_token_box(roi_window(meta), 7, 7) == (1, 6, 0, 7)


def test_square_fetch_request_leaves_squares_and_points_alone() -> None:
    pb = PointBuffer(8.5, 47.3, 1120)
    assert square_fetch_request(pb, S) == (pb, {})
    sq = box(COL, ROW, 64, 64)
    assert square_fetch_request(sq, S) == (sq, {})
    assert roi_window(None) is None
    assert roi_window({WINDOW_KEY: [0.0, 1.0, 0.0, 1.0]}) is None


def test_window_is_rounded_to_six_decimals_before_the_outer_rounding() -> None:
    # a third of the square: 0.333333 * 6 = 1.999998 -> row 1, 0.666667 * 6 = 4.000002 -> row 5 (rs-embed's numbers)
    rect, _ = centred(96, 96, 32)
    _, meta = square_fetch_request(rect, S)
    assert meta[WINDOW_KEY] == [0.333333, 0.666667, 0.0, 1.0]
    assert roi_token_box(roi_window(meta), 6, 6) == (1, 5, 0, 6)
    # a tall, thin window keeps at least one cell
    assert roi_token_box((0.0, 1.0, 0.49, 0.51), 2, 2) == (0, 2, 0, 2)
    assert roi_token_box((0.0, 1.0, 0.4, 0.45), 4, 4) == (0, 4, 1, 2)


def test_the_square_input_models_are_rs_embeds() -> None:
    # rs-embed 0.3.1's `_requires_square_input` among the models both packages offer
    for name in ("remoteclip", "satmae", "scalemae", "dofa", "prithvi"):
        assert get_model_class(name).square_fetch, name
    for name in ("rcf", "gse", "tessera", "copernicus"):
        assert not get_model_class(name).square_fetch, name
    assert get_model_class("remoteclip").roi_pooling == "model"
    assert {get_model_class(n).roi_pooling for n in ("satmae", "scalemae", "dofa", "prithvi")} == {"grid"}


def test_a_model_sharing_a_squared_fetch_reads_the_rois_own_pixels() -> None:
    from rs_embed_dask.providers.synthetic import SyntheticProvider

    rect, _ = centred(64, 64, 40)
    sensor = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10)
    prov = SyntheticProvider()
    sq, meta = square_fetch_request(rect, S)
    square = prov.fetch(sq, T, sensor)
    direct = prov.fetch(rect, T, sensor)
    assert square.data.shape == (3, 64, 64)
    assert direct.data.shape == (3, 40, 64)
    np.testing.assert_array_equal(roi_input(square.data, meta), direct.data)
    np.testing.assert_array_equal(roi_input(square.data, {}), square.data)  # not squared: unchanged


# -- the models through get_embedding ---------------------------------------------------------
@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Tiny random checkpoints; every model at 64 px input (a 4 x 4 token grid)."""
    out: dict[str, dict[str, Any]] = {}
    for name, case in (
        ("satmae", SATMAE_CASES["satmae"]),
        ("scalemae", SCALEMAE_CASES["scalemae"]),
        ("prithvi", PRITHVI_CASES["prithvi"]),
    ):
        assert case.setup is not None
        out[name] = {**dict(case.setup(tmp_path_factory.mktemp(name))), "image_size": 64}
    out["remoteclip"] = _remoteclip_128(tmp_path_factory.mktemp("remoteclip"))
    out["dofa"] = _dofa_64(tmp_path_factory.mktemp("dofa"))
    return out


def _dofa_64(directory: Path) -> dict[str, Any]:
    """A tiny DOFA at 64 px (its position table is not resized on load); random norm and positions."""
    import torch
    from torchgeo.models.dofa import DOFA

    torch.manual_seed(2)
    m = DOFA(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, global_pool=False)
    state = dict(m.state_dict())
    with torch.no_grad():
        state["norm.weight"] = 1 + 0.1 * torch.randn(32)
        state["norm.bias"] = 0.1 * torch.randn(32)
        state["pos_embed"] = 0.1 * torch.randn_like(state["pos_embed"])
    torch.save({"model": state}, directory / "DOFA_ViT_base_e100.pth")
    return {"weights": str(directory), "image_size": 64, "depth": 1, "embed_dim": 32, "num_heads": 2}


def _remoteclip_128(directory: Path) -> dict[str, Any]:
    """A tiny CLIP ViT (patch 32) at 128 px: a 4 x 4 token grid, 64 wide; pooled 32-d."""
    import open_clip
    import torch

    torch.manual_seed(1)
    vision = {"image_size": 128, "layers": 1, "width": 64, "patch_size": 32}
    text = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
    torch.save(
        open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).state_dict(),
        directory / "RemoteCLIP-ViT-B-32.pt",
    )
    return {"weights": str(directory), "image_size": 128, "width": 64, "layers": 1, "embed_dim": 32}


def _side(model: str) -> int:
    return 128 if model == "remoteclip" else 64


@pytest.mark.parametrize("model", ["satmae", "scalemae", "dofa", "prithvi", "remoteclip"])
def test_wide_rectangle_is_the_squares_grid_cut_back(model: str, configs: dict[str, dict[str, Any]]) -> None:
    side = _side(model)
    scale = 30.0 if model == "prithvi" else S
    rect, square = centred(side, side, side // 2, scale)  # window (0.25, 0.75, 0, 1): token rows 1..3 of 4
    cfg = configs[model]
    ref = embed(model, square, cfg, GRID)
    assert ref.shape[-2:] == (4, 4)
    grid = get_embedding(
        model, spatial=rect, temporal=T, backend="synthetic", device="cpu", output=GRID, **cfg
    )
    assert grid.meta["input_grid"] == grid_window(square, scale).to_dict()  # the square was fetched
    assert grid.meta["input_prep"]["roi_cropped"] is True
    # prithvi's location input is the ROI's centre, which is the square's to ~1e-6 degrees of latitude
    tol = {"atol": 1e-4, "rtol": 1e-4} if model == "prithvi" else {"atol": 1e-6, "rtol": 1e-6}
    np.testing.assert_allclose(np.asarray(grid.data), ref[:, 1:3, :], **tol)
    pooled = embed(model, rect, cfg)
    if model == "remoteclip":  # the CLIP projection of the whole square (dims independent of the ROI's shape)
        np.testing.assert_allclose(pooled, embed(model, square, cfg), **tol)
        assert pooled.shape == (32,)
    else:
        np.testing.assert_allclose(pooled, ref[:, 1:3, :].mean(axis=(1, 2)), **tol)


def test_tall_rectangle_pooled_max_uses_the_roi_columns(configs: dict[str, dict[str, Any]]) -> None:
    cfg = configs["satmae"]
    rect, square = centred(64, 16, 64)  # window (0, 1, 0.375, 0.625): token columns 1..3 of 4
    ref = embed("satmae", square, cfg, GRID)
    np.testing.assert_allclose(embed("satmae", rect, cfg, GRID), ref[:, :, 1:3], atol=1e-6)
    mx = embed("satmae", rect, cfg, OutputSpec.pooled("max"))
    np.testing.assert_allclose(mx, ref[:, :, 1:3].max(axis=(1, 2)), atol=1e-6)


def test_resize_prep_crops_the_same_way(configs: dict[str, dict[str, Any]]) -> None:
    cfg = configs["satmae"]
    rect, square = centred(128, 128, 64)  # a 128 px square resized to the 64 px input: 4 x 4 tokens
    ref = embed("satmae", square, cfg, GRID, input_prep="resize")
    np.testing.assert_allclose(
        embed("satmae", rect, cfg, GRID, input_prep="resize"), ref[:, 1:3, :], atol=1e-6
    )


@pytest.mark.filterwarnings("ignore:Model 'satmae' returns an image-level ViT patch grid")
def test_tiled_square_grid_and_roi_weighted_pooling(configs: dict[str, dict[str, Any]]) -> None:
    cfg = {**configs["satmae"], "image_size": 32}  # 32 px tiles of 2 x 2 tokens
    rect, square = centred(96, 96, 48)  # a 96 px square: 3 x 3 tiles; ROI rows 24..72 px
    ref = embed("satmae", square, cfg, GRID)
    assert ref.shape[-2:] == (6, 6)
    # window (0.25, 0.75) of 6 token rows: floor(1.5) = 1 .. ceil(4.5) = 5
    np.testing.assert_allclose(embed("satmae", rect, cfg, GRID), ref[:, 1:5, :], atol=1e-6)
    # pooled: each tile's own pooled vector, weighted by the area it owns inside the ROI (8, 32, 8 px of rows)
    tiles = np.stack(
        [[embed("satmae", box(COL + 32 * c, ROW + 32 * r, 32, 32), cfg) for c in range(3)] for r in range(3)]
    )
    w = np.array([8.0, 32.0, 8.0])[:, None, None]
    expected = (tiles * w).sum(axis=(0, 1)) / (w.sum() * 3)
    np.testing.assert_allclose(embed("satmae", rect, cfg), expected, atol=1e-6)


def test_batch_mixes_rectangles_and_squares(configs: dict[str, dict[str, Any]]) -> None:
    from rs_embed_dask import get_embeddings_batch

    cfg = configs["dofa"]
    rect, square = centred(64, 64, 32)
    pb = PointBuffer(*mercator_to_lonlat((COL + 200) * S, -(ROW + 32) * S), 320)
    embs = get_embeddings_batch(
        "dofa", spatials=[rect, pb, square], temporal=T, backend="synthetic", device="cpu", **cfg
    )
    ref = embed("dofa", square, cfg, GRID)
    np.testing.assert_allclose(np.asarray(embs[0].data), ref[:, 1:3, :].mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(embs[1].data), embed("dofa", pb, cfg), atol=1e-6)
    np.testing.assert_allclose(np.asarray(embs[2].data), embed("dofa", square, cfg), atol=1e-6)
    assert embs[0].meta["pooling"] == "roi_grid_mean"
    assert WINDOW_KEY in embs[0].meta


# -- an export on a local cluster -------------------------------------------------------------------
@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    from rs_embed_dask.cluster import local_cluster

    cluster = local_cluster(io_threads=2, dashboard_address=None, verbose=False)
    try:
        with Client(cluster) as c:
            yield c
    finally:
        cluster.close()


@pytest.mark.cluster
@pytest.mark.slow
def test_export_fetches_squares_and_crops_on_the_worker(
    client: Any, configs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    from rs_embed_dask import ExportConfig, ExportModelRequest, ExportTarget, export_batch, load_export

    wide, square = centred(64, 64, 32)
    tall, _ = centred(64, 32, 64)
    rois = [wide, tall, square]
    out = tmp_path / "rect.npz"
    models = [ExportModelRequest(name="satmae", model_config=configs["satmae"])]
    man = export_batch(
        spatials=rois, temporal=T, models=models, target=ExportTarget.combined(str(out)),
        backend="synthetic", device="cpu", output=GRID, client=client,
        config=ExportConfig(chunk_size=2, show_progress=False, save_inputs=True),
    )  # fmt: skip
    assert man["status"] == "ok"
    with pytest.warns(UserWarning, match="different shapes per item"):
        res = load_export(out)
    inputs = np.asarray(res.models["satmae"].inputs)
    assert inputs.shape == (3, 3, 64, 64)  # save_inputs keeps the squares the model read (rs-embed's choice)
    np.testing.assert_array_equal(inputs[0], inputs[2])  # the wide box's square is the square itself
    ref = embed("satmae", square, configs["satmae"], GRID)
    ragged = res.models["satmae"].embeddings_ragged  # three grid shapes: written per item
    grids = [np.asarray(ragged[i]) for i in range(3)]
    np.testing.assert_allclose(grids[0], ref[:, 1:3, :], atol=1e-5)
    np.testing.assert_allclose(grids[1], ref[:, :, 1:3], atol=1e-5)
    np.testing.assert_allclose(grids[2], ref, atol=1e-5)
