"""load_export verifies what it reads: damaged exports raise ExportIntegrityError, or load as failed items."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rs_embed_dask
from rs_embed_dask import ExportIntegrityError, ExportTarget, ModelError, load_export
from rs_embed_dask.core.errors import RSEmbedWarning

distributed = pytest.importorskip("distributed")

sys.path.insert(0, os.path.dirname(__file__))
from _exports import rois, small_export  # noqa: E402

N = 12
ROIS = rois(N, per_row=6)


def export(client: Any, target: ExportTarget, **config: Any) -> Any:
    """The module's export of ``ROIS`` on conftest's in-process ``client``."""
    return small_export(client, target, list(ROIS), **config)


@pytest.fixture(scope="module")
def pristine(client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    export(client, ExportTarget.combined(str(root / "c.npz")))
    export(client, ExportTarget.combined(str(root / "z.zarr")), format="zarr")
    export(client, ExportTarget.per_item(str(root / "items")))
    return {"npz": root / "c.npz", "json": root / "c.json", "zarr": root / "z.zarr", "items": root / "items"}


@pytest.fixture
def copy(pristine: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    out = {}
    for k, p in pristine.items():
        out[k] = tmp_path / p.name
        if p.is_dir():
            shutil.copytree(p, out[k])
        else:
            shutil.copy2(p, out[k])
    return out


def load_lenient(path: Path) -> Any:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = load_export(path, strict=False)
    assert any(issubclass(w.category, RSEmbedWarning) and "damaged export" in str(w.message) for w in rec)
    return r


def test_error_type_is_public_and_a_value_error() -> None:
    assert rs_embed_dask.ExportIntegrityError is ExportIntegrityError
    assert issubclass(ExportIntegrityError, ValueError)


def test_intact_exports_load_strictly(pristine: dict[str, Path]) -> None:
    for key in ("npz", "zarr", "items"):
        r = load_export(pristine[key])
        assert r.status == "ok", key
        emb = r.models["rcf"].embeddings
        assert emb is not None, key
        assert emb.shape[0] == N, key
        assert np.isfinite(emb).all(), key


# -- zarr ----------------------------------------------------------------------------------------
def test_zarr_missing_an_embeddings_chunk(copy: dict[str, Path]) -> None:
    chunk = copy["zarr"] / "models" / "rcf" / "embeddings" / "c" / "1"
    assert chunk.exists()
    shutil.rmtree(chunk)
    with pytest.raises(ExportIntegrityError) as info:
        load_export(copy["zarr"])
    msg = str(info.value)
    assert str(copy["zarr"] / "models" / "rcf" / "embeddings") in msg
    assert "chunks [1] are missing" in msg
    assert "4 ok items" in msg

    r = load_lenient(copy["zarr"])
    m = r.models["rcf"]
    assert m.status == "partial"
    assert r.status == "partial"
    assert list(np.flatnonzero(m.item_status == 2)) == [4, 5, 6, 7]
    assert m.errors[5].startswith("damaged export: ")
    assert np.isnan(m.embeddings[4:8]).all()
    assert np.isfinite(m.embeddings[:4]).all()


def test_zarr_missing_the_embeddings_array_metadata(copy: dict[str, Path]) -> None:
    (copy["zarr"] / "models" / "rcf" / "embeddings" / "zarr.json").unlink()
    with pytest.raises(
        ExportIntegrityError, match=r"embeddings.zarr\.json: the array is missing but 12 items are ok"
    ):
        load_export(copy["zarr"])
    r = load_lenient(copy["zarr"])
    assert r.models["rcf"].status == "failed"
    assert r.models["rcf"].embeddings is None


def test_zarr_damaged_chunk_bytes_name_the_array(copy: dict[str, Path]) -> None:
    chunk = copy["zarr"] / "models" / "rcf" / "embeddings" / "c" / "0" / "0"
    chunk.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 10)  # a zstd frame header, then nonsense
    r = load_export(copy["zarr"])
    with pytest.raises(ExportIntegrityError) as info:
        _ = r.models["rcf"].embeddings
    assert "models/rcf/embeddings" in str(info.value).replace("\\", "/")
    assert "truncated or damaged" in str(info.value)


# -- combined npz ------------------------------------------------------------------------------------
def rewrite_npz(path: Path, change: Any) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez_compressed(path, **arrays)


def test_npz_missing_the_member_its_manifest_names(copy: dict[str, Path]) -> None:
    rewrite_npz(copy["npz"], lambda a: a.pop("embeddings__rcf"))
    with pytest.raises(
        ExportIntegrityError,
        match=r"member 'embeddings__rcf' \(embeddings of model 'rcf'\) named by the manifest is missing",
    ) as info:
        load_export(copy["npz"])
    assert info.value.path == str(copy["npz"])
    r = load_lenient(copy["npz"])
    assert r.models["rcf"].status == "failed"
    assert (r.models["rcf"].item_status == 2).all()
    assert r.models["rcf"].inputs.shape[0] == N  # the intact member still loads


def test_npz_member_five_rows_short(copy: dict[str, Path]) -> None:
    def short(a: dict[str, np.ndarray]) -> None:
        a["embeddings__rcf"] = a["embeddings__rcf"][:-5]

    rewrite_npz(copy["npz"], short)
    with pytest.raises(ExportIntegrityError, match=r"has 7 rows; the manifest promises 12 \(n_items\)"):
        load_export(copy["npz"])
    assert load_lenient(copy["npz"]).models["rcf"].status == "failed"


def test_truncated_npz_names_the_file(copy: dict[str, Path]) -> None:
    data = copy["npz"].read_bytes()
    copy["npz"].write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportIntegrityError) as info:
        load_export(copy["npz"])
    assert str(copy["npz"]) in str(info.value)
    assert "BadZipFile" in str(info.value)


def test_damaged_npz_member_bytes_name_the_file_and_member(copy: dict[str, Path]) -> None:
    import zipfile

    with zipfile.ZipFile(copy["npz"]) as zf:
        info = zf.getinfo("embeddings__rcf.npy")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        size = info.compress_size
    data = bytearray(copy["npz"].read_bytes())
    for j in range(start + size // 2, start + size // 2 + 64):
        data[j] ^= 0xA5
    copy["npz"].write_bytes(bytes(data))
    r = load_export(copy["npz"])  # the headers are intact
    with pytest.raises(ExportIntegrityError) as err:
        _ = r.models["rcf"].embeddings
    assert str(copy["npz"]) in str(err.value)
    assert "'embeddings__rcf'" in str(err.value)


@pytest.mark.parametrize("models", ["rcf", {"model": "rcf"}, [1]])
def test_manifest_models_of_the_wrong_type(copy: dict[str, Path], models: Any) -> None:
    man = json.loads(copy["json"].read_text())
    man["models"] = models
    copy["json"].write_text(json.dumps(man))
    for strict in (True, False):
        with pytest.raises(ExportIntegrityError, match="models"):
            load_export(copy["npz"], strict=strict)


@pytest.mark.parametrize("n_items", [1e9, 10**9, -1, "12", True])
def test_impossible_n_items_is_refused_before_allocating(copy: dict[str, Path], n_items: Any) -> None:
    man = json.loads(copy["json"].read_text())
    man["n_items"] = n_items
    copy["json"].write_text(json.dumps(man))
    tracemalloc.start()
    try:
        with pytest.raises(ExportIntegrityError, match="n_items"):
            load_export(copy["npz"], strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_status_ok_with_failed_indices_is_inconsistent(copy: dict[str, Path]) -> None:
    man = json.loads(copy["json"].read_text())
    man["models"][0]["failed_indices"] = [3]
    copy["json"].write_text(json.dumps(man))
    with pytest.raises(ExportIntegrityError, match="status 'ok' but lists failed_indices"):
        load_export(copy["npz"])


# -- per-item ---------------------------------------------------------------------------------------
def test_per_item_folder_missing_its_last_item(copy: dict[str, Path]) -> None:
    last = copy["items"] / f"p{N - 1:05d}.npz"
    last.unlink()
    with pytest.raises(ExportIntegrityError) as info:
        load_export(copy["items"])
    assert info.value.path == str(last)
    assert f"item {N - 1} listed by _rs_embed_dask_export.json is missing" in str(info.value)
    r = load_lenient(copy["items"])
    assert r.n_items == N
    assert r.models["rcf"].status == "partial"
    assert list(np.flatnonzero(r.models["rcf"].item_status == 2)) == [N - 1]


def test_per_item_damaged_item_manifest(copy: dict[str, Path]) -> None:
    p = copy["items"] / "p00003.json"
    man = json.loads(p.read_text())
    man["models"] = "rcf"
    p.write_text(json.dumps(man))
    with pytest.raises(ExportIntegrityError, match="models"):
        load_export(copy["items"])
    r = load_lenient(copy["items"])
    assert r.models["rcf"].item_status[3] == 2


def test_per_item_folder_manifest_with_impossible_n_items(copy: dict[str, Path]) -> None:
    p = copy["items"] / "_rs_embed_dask_export.json"
    man = json.loads(p.read_text())
    man["n_items"] = 10**9
    p.write_text(json.dumps(man))
    with pytest.raises(ExportIntegrityError, match="n_items"):
        load_export(copy["items"], strict=False)


# -- an export that did not finish ------------------------------------------------------------------
@pytest.fixture
def failed_strict(client: Any, tmp_path: Path) -> Path:
    out = tmp_path / "strict.npz"
    with pytest.raises(ModelError):
        small_export(
            client, ExportTarget.combined(str(out)), list(ROIS), provider_options={"failure_rate": 0.4}
        )
    return out


def test_loading_a_strict_export_that_failed_says_what_is_there(failed_strict: Path) -> None:
    store = str(failed_strict) + ".work.zarr"
    with pytest.raises(FileNotFoundError) as info:
        load_export(failed_strict)
    msg = str(info.value)
    assert msg.startswith(f"Export path does not exist: {str(failed_strict)!r}")
    assert store in msg
    assert "resume=True" in msg
    assert "items done" in msg
    r = load_export(store)  # what is done can be inspected
    assert r.status == "running"
    # the target as the user spelled it, before the export added ".npz"
    with pytest.raises(FileNotFoundError) as bare:
        load_export(str(failed_strict)[: -len(".npz")])
    assert store in str(bare.value)
    assert "resume=True" in str(bare.value)


def test_store_writes_chunks_equal_to_the_fill_value(tmp_path: Path) -> None:
    """An ok item may be all NaN (a no-data product): its chunk is on disk, so it is not taken for a lost one."""
    from rs_embed_dask.export import store as st

    store = tmp_path / "s.zarr"
    block = np.full((4, 3), np.nan, dtype=np.float32)
    st.write_column(str(store), "models/m/embeddings", 0, block, capacity=8, chunk_size=4, fill_value=np.nan)
    assert (store / "models" / "m" / "embeddings" / "c" / "0" / "0").exists()


def test_per_item_file_missing_the_member_its_manifest_names(copy: dict[str, Path]) -> None:
    item = copy["items"] / "p00002.npz"
    rewrite_npz(item, lambda a: a.pop("embedding__rcf"))
    r = load_export(copy["items"])  # per-item members are checked when read (no file is opened to load)
    with pytest.raises(ExportIntegrityError) as info:
        _ = r.models["rcf"].embeddings
    assert info.value.path == str(item)
    assert "'embedding__rcf'" in str(info.value)


def test_per_item_entry_naming_an_array_its_file_does_not_list(copy: dict[str, Path]) -> None:
    p = copy["items"] / "p00004.json"
    man = json.loads(p.read_text())
    man["npz_keys"] = [k for k in man["npz_keys"] if k != "embedding__rcf"]
    p.write_text(json.dumps(man))
    with pytest.raises(ExportIntegrityError, match=r"'embedding__rcf' .* named by its manifest is missing"):
        load_export(copy["items"])
    r = load_lenient(copy["items"])
    assert r.models["rcf"].item_status[4] == 2
    assert r.models["rcf"].status == "partial"
