"""Foundation models in a real export: satmae and scalemae share one fetch per ROI.

Both read Sentinel-2 B4, B3, B2 at 10 m, so the plan gives them one input
key: the provider is called once per ROI (counted in the provider's own log
from the worker processes), the input is stored once, and each model's
embeddings equal what ``get_embedding`` gives in this process for the same
ROI.  Weights are tiny random ones in each family's checkpoint format,
loaded through the real loading code in the worker processes.
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

import _engine_plugins as plug  # noqa: E402
from _clusters import plugin_client  # noqa: E402
from model_cases.satmae import CASES as SATMAE_CASES  # noqa: E402
from model_cases.scalemae import CASES as SCALEMAE_CASES  # noqa: E402

from rs_embed_dask import (  # noqa: E402
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    PointBuffer,
    TemporalSpec,
    export_batch,
    get_embedding,
    load_export,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(lon=8.40 + 0.01 * i, lat=47.30, buffer_m=160) for i in range(6)]


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = {}
    for name, case in (("satmae", SATMAE_CASES["satmae"]), ("scalemae", SCALEMAE_CASES["scalemae"])):
        assert case.setup is not None
        out[name] = dict(case.setup(tmp_path_factory.mktemp(name)))
    return out


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with plugin_client(plug) as c:
        yield c


def test_two_foundation_models_share_one_fetch(client: Any, configs: dict[str, Any], tmp_path: Path) -> None:
    log = str(tmp_path / "fetches.log")
    out = tmp_path / "fm.npz"
    man = export_batch(
        spatials=ROIS,
        temporal=TEMPORAL,
        models=[ExportModelRequest(name=n, model_config=cfg) for n, cfg in configs.items()],
        target=ExportTarget.combined(str(out)),
        backend=plug.PROVIDER_NAME,
        device="cpu",
        config=ExportConfig(chunk_size=3, show_progress=False, save_inputs=True),
        client=client,
        provider_options={"log": log},
    )
    assert isinstance(man, dict)  # a combined export's manifest
    assert man["status"] == "ok"
    lines = plug.read_lines(log)
    assert sorted(ln.split("\t")[1] for ln in lines) == sorted(plug.roi_id(sp) for sp in ROIS)
    assert str(os.getpid()) not in {ln.split("\t")[0] for ln in lines}  # fetched on the workers
    assert len(man["prefetch"]) == 1
    entries = {e["model"]: e for e in man["models"]}
    assert entries["scalemae"]["inputs"] == {**entries["satmae"]["inputs"], "dedup_reused": True}

    res = load_export(out)
    assert res.ok_models == ["satmae", "scalemae"]
    inputs = np.asarray(res.models["satmae"].inputs)
    assert inputs.shape == (len(ROIS), 3, 32, 32)
    for name, cfg in configs.items():
        emb = np.asarray(res.embedding(name))
        assert emb.shape == (len(ROIS), 32)
        for i in (0, len(ROIS) - 1):
            ref = get_embedding(
                name, spatial=ROIS[i], temporal=TEMPORAL, backend="synthetic", device="cpu", **cfg
            )
            np.testing.assert_allclose(emb[i], ref.data, rtol=1e-4, atol=1e-5, err_msg=f"{name}[{i}]")
