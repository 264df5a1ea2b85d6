"""A combined NPZ with failed items is finished from the write tasks' parts (O(chunks)), in rs-embed's layout."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, load_export
from rs_embed_dask.core.specs import OutputSpec
from rs_embed_dask.export import npz_parts, tasks
from rs_embed_dask.export import store as st
from rs_embed_dask.export.engine import _static_models, _store_attrs
from rs_embed_dask.export.identity import resume_identity
from rs_embed_dask.export.materialize import finalize_combined
from rs_embed_dask.export.plan import build_plan

T = TemporalSpec.range("2022-06-01", "2022-09-01")
N, CHUNK, DIM, INPUT = 20, 8, 16, (3, 4, 4)
FAILED = {3, 17}


def _store(tmp_path: Path) -> tuple[Any, str, np.ndarray, np.ndarray]:
    import zarr

    out = str(tmp_path / "run.npz")
    plan = build_plan(
        spatials=[PointBuffer(10 + 0.01 * i, 45, 320) for i in range(N)], temporal=T, models=["rcf"],
        target=ExportTarget.combined(out), config=ExportConfig(chunk_size=CHUNK, continue_on_error=True),
        backend="synthetic", device="cpu", output=OutputSpec.pooled(), sensor=None, fetch=None, modality=None,
        input_prep=None,
    )  # fmt: skip
    plan.identity = resume_identity(plan, _static_models(plan))
    store = out + ".work.zarr"
    zarr.open_group(store, mode="w").attrs["rs_embed_dask"] = _store_attrs(plan, complete=False, n_items=N, manifest={})
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(N, DIM)).astype(np.float32)
    inp = rng.normal(size=(N, *INPUT)).astype(np.float32)
    (key,) = plan.inputs
    for s0 in range(0, N, CHUNK):
        idx = range(s0, min(N, s0 + CHUNK))
        errs = ["ProviderError('x')" if i in FAILED else None for i in idx]
        meta = [None if i in FAILED else {"i": i} for i in idx]
        tasks.write_chunk_combined(
            store, s0, plan.spatials[s0 : s0 + len(idx)],
            {key: tasks.ChunkInputs(key=key, data=[None if i in FAILED else inp[i] for i in idx], meta=meta, errors=errs)},
            {"rcf": tasks.ChunkEmbeddings(model="rcf", data=[None if i in FAILED else emb[i] for i in idx],
                                          meta=list(meta), errors=list(errs))},
            model_keys={"rcf": "rcf"}, capacity=N, chunk_size=CHUNK, save_inputs=True, npz_parts=True,
        )  # fmt: skip
    return plan, store, emb, inp


@pytest.mark.parametrize("lost_part", [None, 8], ids=["all-parts", "a-part-lost"])
def test_partial_npz_members_come_from_the_parts(tmp_path: Path, lost_part: int | None) -> None:
    plan, store, emb, inp = _store(tmp_path)
    if lost_part is not None:  # an embeddings part lost: deflated from the store's copy
        os.remove(npz_parts._part_path(store, "models/rcf/embeddings", lost_part))
    man = finalize_combined(plan, store, N)
    entry = man["models"][0]
    assert entry["status"] == "partial"
    assert entry["failed_indices"] == sorted(FAILED)
    ok = [i for i in range(N) if i not in FAILED]
    with zipfile.ZipFile(plan.out_file) as zf:
        assert zf.testzip() is None  # every member's CRC-32 (stored with the parts) checks out
    with np.load(plan.out_file, allow_pickle=False) as z:
        assert sorted(k for k in z.files if k.startswith("embedding__")) == [f"embedding__rcf__{i:05d}" for i in ok]
        for i in ok:
            np.testing.assert_array_equal(z[f"embedding__rcf__{i:05d}"], emb[i])
        ref = entry["inputs"]
        assert ref["indices"] == ok
        np.testing.assert_array_equal(z[ref["npz_key"]], inp[ok])
    assert entry["embeddings"]["indices"] == ok
    res = load_export(plan.out_file)
    try:
        got = res.embedding("rcf")
        np.testing.assert_array_equal(got[ok], emb[ok])
        assert np.isnan(got[sorted(FAILED)]).all()
    finally:
        res.close()


def test_lost_input_part_is_an_integrity_error_not_nan_rows(tmp_path: Path) -> None:
    """An NPZ target keeps input rows in their parts only: finishing without one names it (resume redoes the chunk)."""
    from rs_embed_dask.core.errors import ExportIntegrityError

    plan, store, _emb, _inp = _store(tmp_path)
    data = f"inputs/{next(iter(plan.inputs))}/data"
    assert not st.rows_on_disk(store, data, 8)  # no zarr copy of the input rows
    assert st.rows_on_disk(store, "models/rcf/embeddings", 8)
    assert npz_parts.part_intact(store, data, 8, CHUNK)
    os.remove(npz_parts._part_path(store, data, 8))
    assert not npz_parts.part_intact(store, data, 8, CHUNK)
    with pytest.raises(ExportIntegrityError, match="part"):
        finalize_combined(plan, store, N)
    assert not os.path.exists(plan.out_file)


def test_store_rows_member_equals_numpys(tmp_path: Path) -> None:
    """One-item and selected-row members from parts read as np.savez_compressed writes them."""
    x = np.random.default_rng(3).normal(size=(10, 2, 3)).astype(np.float32)
    store = str(tmp_path / "s.zarr")
    import zarr

    zarr.open_group(store, mode="w").create_array("a", shape=x.shape, chunks=(4, 2, 3), dtype=np.float32)[:] = x
    for s0 in range(0, 10, 4):
        npz_parts.write_part(store, "a", s0, x[s0 : s0 + 4])
    out = tmp_path / "o.npz"
    npz_parts.write_npz_from_parts(
        out,
        {"one": npz_parts.StoreRows(store, "a", [5], (2, 3), single=True),
         "some": npz_parts.StoreRows(store, "a", [0, 4, 9], (2, 3))},
        {},
    )  # fmt: skip
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["one"], x[5])
        np.testing.assert_array_equal(z["some"], x[[0, 4, 9]])
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
    npz_parts.write_part(store, "a", 4, -x[4:8])  # a decoy: the member holds the part's bytes, not the store's
    npz_parts.write_npz_from_parts(out, {"one": npz_parts.StoreRows(store, "a", [5], (2, 3), single=True)}, {})
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["one"], -x[5])
