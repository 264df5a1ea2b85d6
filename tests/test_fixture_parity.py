"""Our exports against the files rs-embed 0.3.1 wrote for the same requests.

Every case of ``tests/data/upstream_exports/expected.json`` is re-run
through our ``export_batch`` with the fixtures' provider and toy models
(``tests/_fixture_plugins.py``, rebuilt from the fixtures' README), and the
result is compared with upstream's files: the same array keys, shapes, dtypes
and NetCDF dims; the same values; the same manifest fields in the same order;
the same statuses, failed indices and error strings; the same return value.
Fields that differ on every run (timestamps, fingerprints, upstream's
``temporal.year`` quirk) and the ``describe`` of the models are left out.

The strict (``continue_on_error=False``) cases raise what upstream raises.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import _fixture_plugins as toy  # noqa: E402

from rs_embed_dask import (  # noqa: E402
    BBox,
    ExportConfig,
    ExportTarget,
    ModelError,
    OutputSpec,
    PointBuffer,
    TemporalSpec,
    export_batch,
)

#: rs-embed 0.3.1's files, copied into the repository (a missing file fails, never skips)
FIXTURES = Path(TESTS_DIR) / "data" / "upstream_exports"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CASES = sorted(EXPECTED["fixtures"])
TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
SPATIALS = [
    PointBuffer(lon=-122.42, lat=37.77, buffer_m=80.0),
    BBox(minlon=-105.0, minlat=40.0, maxlon=-104.99812, maxlat=40.00144),
    PointBuffer(lon=2.35, lat=48.86, buffer_m=80.0),
]
RAGGED = [SPATIALS[0], PointBuffer(lon=139.69, lat=35.69, buffer_m=120.0)]
#: where our files differ from upstream's on purpose (also in the README)
DEVIATIONS = {
    "prefetch": "the combined manifest's prefetch entries name each shared input's sensor and the "
    "models using it, instead of npz_key/shape of checkpoint arrays that are no longer in the file",
    "combined error": "a combined model that failed at every point also gets a model-level 'error' "
    "(the first point's), so load_export gives ModelResult.error as it does for per-item exports",
    "meta": "embedding metas carry rs-embed's keys plus georeferencing (input_grid, sensor, ...)",
    "provider errors": "a failed fetch stays a ProviderError (upstream rewraps it as ModelError)",
}


def _upstream_error(text: Any) -> Any:
    """Upstream's error strings with its ModelError rewrap of provider errors undone."""
    if isinstance(text, dict):
        return {k: _upstream_error(v) for k, v in text.items()}
    if isinstance(text, str):
        return text.replace("ModelError('synthetic provider", "ProviderError('synthetic provider")
    return text
#: fields that change on every run, upstream and here
VOLATILE = {"created_at", "completed_at", "request_fingerprint", "year"}

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    toy.register()
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=4, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
    toy.unregister()


def _run(case: dict[str, Any], root: Path, client: Any, *, continue_on_error: bool | None = None) -> Any:
    name = case["name"]
    target = (
        ExportTarget.combined(str(root / name)) if case["layout"] == "combined" else ExportTarget.per_item(str(root / name))
    )
    return export_batch(
        spatials=RAGGED if "ragged" in name else SPATIALS,
        temporal=TEMPORAL,
        models=list(case["models"]),
        target=target,
        backend=toy.PROVIDER,
        device="cpu",
        sensor=toy.SENSOR,
        output=OutputSpec.grid() if case["output"] == "grid" else OutputSpec.pooled(),
        config=ExportConfig(
            format=case["format"],
            save_inputs=True,
            save_embeddings=True,
            continue_on_error=case["continue_on_error"] if continue_on_error is None else continue_on_error,
            show_progress=False,
        ),
        provider_options={"fail_spatial_1": bool(case.get("failing_fetch_spatial_indices"))},
        client=client,
    )


def _arrays(path: Path) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: (z[k], None) for k in z.files}
    import xarray as xr

    with xr.open_dataset(path) as ds:
        return {k: (ds[k].values, list(ds[k].dims)) for k in ds.data_vars}


def _structure(obj: Any, path: str = "") -> Any:
    """Key order and nesting of a manifest, leaving out volatile fields and models' ``describe``.

    Embedding metas are the models' own dicts: ours carry rs-embed's keys
    plus georeferencing (``input_grid``, ``sensor``, ...), so only the keys
    upstream wrote are compared there (:func:`_meta_keys`).
    """
    if isinstance(obj, dict):
        if path.endswith(".describe"):
            return "<describe>"
        if path.endswith((".meta", ".metas[]")):
            return "<meta>"
        if path.startswith(".prefetch.") and path.count(".") == 2:  # DEVIATIONS["prefetch"]
            return [("sensor", _structure(obj["sensor"], path + ".sensor"))]
        if path == ".models[]" and "metas" in obj and obj.get("status") == "failed":
            obj = {k: v for k, v in obj.items() if k != "error"}  # DEVIATIONS["combined error"]
        return [(k, _structure(v, f"{path}.{k}")) for k, v in obj.items() if k not in VOLATILE]
    if isinstance(obj, list):
        return [_structure(v, f"{path}[]") for v in obj]
    return type(obj).__name__ if obj is not None else None


def _manifests(root: Path, name: str, layout: str) -> dict[str, Any]:
    if layout == "combined":
        return {f"{name}.json": json.loads((root / f"{name}.json").read_text())}
    return {p.name: json.loads(p.read_text()) for p in sorted((root / name).glob("p*.json"))}


@pytest.mark.parametrize("name", CASES)
def test_export_matches_upstream_files(name: str, client: Any, tmp_path: Path) -> None:
    case = {"name": name, **EXPECTED["fixtures"][name]}
    returned = _run(case, tmp_path, client)

    # the return value: per-item statuses, or the combined status and summary
    want = case["returned"]
    if case["layout"] == "per_item":
        assert [r["status"] for r in returned] == [w["status"] for w in want]
        assert [[m["status"] for m in r["models"]] for r in returned] == [w["model_status"] for w in want]
    else:
        assert returned["status"] == want["status"]
        assert [m["status"] for m in returned["models"]] == want["model_status"]
        assert returned["summary"] == want["summary"]

    # arrays: keys, shapes, dtypes, NetCDF dims and values
    base = tmp_path / name if case["layout"] == "per_item" else tmp_path
    up_base = FIXTURES / name if case["layout"] == "per_item" else FIXTURES
    for fname, keys in case["files"].items():
        ours = _arrays(base / fname)
        theirs = _arrays(up_base / fname)
        assert sorted(ours) == sorted(keys), fname
        for key, spec in keys.items():
            arr, dims = ours[key]
            assert [list(arr.shape), str(arr.dtype)] == spec[:2], f"{fname}:{key}"
            if len(spec) > 2:
                assert dims == spec[2], f"{fname}:{key} dims"
            np.testing.assert_allclose(arr, theirs[key][0], rtol=1e-5, atol=1e-5, err_msg=f"{fname}:{key}")

    # manifests: the same fields in the same order, the same statuses and errors
    ours_m = _manifests(tmp_path, name, case["layout"])
    theirs_m = _manifests(FIXTURES, name, case["layout"])
    assert sorted(ours_m) == sorted(theirs_m)
    for fname, theirs in theirs_m.items():
        mine = ours_m[fname]
        assert _structure(mine) == _structure(theirs), fname
        assert mine["status"] == theirs["status"], fname
        for a, b in zip(mine["models"], theirs["models"], strict=True):
            assert a["model"] == b["model"]
            assert a["status"] == b["status"], (fname, a["model"])
            for field in ("failed_indices", "errors_by_index", "error"):
                if field == "error" and "metas" in a and "error" not in b:
                    continue  # DEVIATIONS["combined error"]
                assert a.get(field) == _upstream_error(b.get(field)), (fname, a["model"], field)
            for ma, mb in zip(a.get("metas") or [a.get("meta")], b.get("metas") or [b.get("meta")], strict=True):
                if mb is None:
                    assert ma is None, (fname, a["model"])
                else:
                    assert set(mb) <= set(ma), (fname, a["model"], sorted(set(mb) - set(ma)))
                    assert ma["input_prep"] == mb["input_prep"], (fname, a["model"])
            for field in ("input", "inputs"):
                if isinstance(b.get(field), dict):
                    assert a[field].get("dedup_reused") == b[field].get("dedup_reused"), (fname, field)
                    assert a[field].get("npz_key") == b[field].get("npz_key"), (fname, field)


@pytest.mark.parametrize("key", sorted(EXPECTED["strict_behaviour"]))
def test_strict_mode_raises_like_upstream(key: str, client: Any, tmp_path: Path) -> None:
    want = EXPECTED["strict_behaviour"][key]
    layout = "combined" if key.startswith("combined") else "per_item"
    fetch_error = "fetch" in key
    case = {
        "name": "out",
        "layout": layout,
        "format": "npz",
        "output": "pooled",
        "models": ["toy_stats", "toy_proj" if fetch_error else "toy_flaky"],
        "continue_on_error": False,
        "failing_fetch_spatial_indices": [1] if fetch_error else [],
    }
    assert want["raised"] == "ModelError"
    with pytest.raises(ModelError, match=want["message"]):
        _run(case, tmp_path, client)
    # no final file claims to be complete: a combined export leaves only its resumable working store
    if layout == "combined":
        assert not (tmp_path / "out.npz").exists()
        assert not (tmp_path / "out.json").exists()
