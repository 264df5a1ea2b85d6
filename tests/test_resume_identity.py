"""Resume continues only the same request, and retries the items that failed.

The synthetic provider's ``seed`` changes every pixel but is not part of
rs-embed's request fingerprint; a run stopped with ``seed=0`` and resumed
with ``seed=7`` must be refused, naming the option.  Failure injection
(``failure_rate``) changes which items fail, not the pixels of the others,
so a run with failures resumes with a healthy provider and ends with every
item ok, equal to a clean run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import (
    ExportConfig,
    ExportTarget,
    ModelError,
    PointBuffer,
    SpecError,
    TemporalSpec,
    export_batch,
    load_export,
)
from rs_embed_dask.export.identity import identity_diff

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

TEMPORAL = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(lon=8.40 + 0.01 * (j % 6), lat=47.30 + 0.01 * (j // 6), buffer_m=80) for j in range(12)]
FAIL = {"failure_rate": 0.4}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=4, processes=False, dashboard_address=None
        ) as cl,
        distributed.Client(cl, set_as_default=False) as c,
    ):
        yield c


def run(client: Any, target: ExportTarget, spatials: Any = None, provider_options: dict[str, Any] | None = None,
        **config: Any) -> Any:  # fmt: skip
    config.setdefault("chunk_size", 4)
    config.setdefault("show_progress", False)
    return export_batch(
        spatials=list(ROIS) if spatials is None else spatials,
        temporal=TEMPORAL,
        models=["rcf"],
        target=target,
        backend="synthetic",
        config=ExportConfig(**config),
        provider_options=provider_options,
        client=client,
    )


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference(client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("ref") / "ref.npz"
    run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0})
    return npz(out)


def failing_at(client: Any, tmp_path: Path) -> list[int]:
    """Indices of ROIS whose fetch fails at ``FAIL`` (a probe export)."""
    man = run(client, ExportTarget.combined(str(tmp_path / "probe.npz")), provider_options=FAIL,
              continue_on_error=True)  # fmt: skip
    failed = man["models"][0].get("failed_indices", [])
    assert 0 < len(failed) < len(ROIS), "choose ROIs/rate so that some, not all, fail"
    return failed


def test_identity_diff_names_nested_fields() -> None:
    old = {"provider_options": {"seed": 0}, "models": {"rcf": {"model_config": None}}}
    new = {"provider_options": {"seed": 7}, "models": {"rcf": {"model_config": {"seed": 3}}}}
    assert identity_diff(old, new) == [
        'models.rcf.model_config: null -> {"seed": 3}',
        "provider_options.seed: 0 -> 7",
    ]
    assert identity_diff(old, old) == []


def test_stopped_run_resumed_with_another_seed_is_refused(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "mixed.npz"
    store = Path(str(out) + ".work.zarr")
    with pytest.raises(ModelError, match="simulated fetch failure"):  # a strict run stops partway
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0, **FAIL})
    assert store.exists()
    assert not out.exists()
    before = sorted(p.name for p in store.rglob("*"))

    with pytest.raises(SpecError) as info:
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 7}, resume=True)
    msg = str(info.value)
    assert "provider_options.seed: 0 -> 7" in msg
    assert "resume=False" in msg
    assert "failure_rate" not in msg  # failure injection does not change the pixels
    assert sorted(p.name for p in store.rglob("*")) == before  # nothing was touched
    assert not out.exists()


def test_stopped_run_resumed_healthy_ends_ok_and_equal_to_a_clean_run(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "healed.npz"
    with pytest.raises(ModelError):
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0, **FAIL})
    man = run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0}, resume=True)
    assert man["status"] == "ok"
    got = npz(out)
    assert sorted(got) == sorted(reference)
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)
    assert not os.path.exists(str(out) + ".work.zarr")


def test_failed_items_of_a_finished_npz_export_are_retried_on_resume(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    failed = failing_at(client, tmp_path)
    out = tmp_path / "partial.npz"
    first = run(client, ExportTarget.combined(str(out)), provider_options=FAIL, continue_on_error=True)
    assert first["status"] == "partial"
    assert first["models"][0]["failed_indices"] == failed
    assert os.path.exists(str(out) + ".work.zarr")  # kept for the retry

    man = run(client, ExportTarget.combined(str(out)), continue_on_error=True, resume=True)
    assert "resume_skipped" not in man
    assert man["status"] == "ok"
    assert "failed_indices" not in man["models"][0]
    r = load_export(out)
    assert r.status == "ok"
    assert (r.models["rcf"].item_status == 1).all()
    np.testing.assert_array_equal(npz(out)["embeddings__rcf"], reference["embeddings__rcf"])
    assert not os.path.exists(str(out) + ".work.zarr")
    again = run(client, ExportTarget.combined(str(out)), resume=True)  # now finished: returned as is
    assert again["resume_skipped"] is True


def test_failed_items_of_a_zarr_export_are_retried_on_resume(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "partial.zarr"
    first = run(
        client, ExportTarget.combined(str(out)), provider_options=FAIL, continue_on_error=True, format="zarr"
    )
    assert first["status"] == "partial"
    man = run(client, ExportTarget.combined(str(out)), continue_on_error=True, resume=True, format="zarr")
    assert man["status"] == "ok"
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["rs_embed_dask"]["complete"] is True
    np.testing.assert_array_equal(root["models/rcf/embeddings"][:], reference["embeddings__rcf"])


def test_failed_items_of_a_per_item_export_are_retried_on_resume(client: Any, tmp_path: Path) -> None:
    failed = failing_at(client, tmp_path)
    out = tmp_path / "items"
    mans = run(client, ExportTarget.per_item(str(out)), provider_options=FAIL, continue_on_error=True)
    assert [i for i, m in enumerate(mans) if m["status"] != "ok"] == failed
    mans = run(client, ExportTarget.per_item(str(out)), continue_on_error=True, resume=True)
    assert all(m["status"] == "ok" for m in mans)
    assert [i for i, m in enumerate(mans) if not m.get("resume_skipped")] == failed
    assert load_export(out).status == "ok"


def test_finished_zarr_export_is_not_replaced_by_a_changed_request(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "done.zarr"
    run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0}, format="zarr")
    before = np.asarray(zarr.open_group(str(out), mode="r")["models/rcf/embeddings"][:])
    with pytest.raises(SpecError, match=r"provider_options\.seed: 0 -> 7"):
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 7}, format="zarr", resume=True)
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["rs_embed_dask"]["complete"] is True
    np.testing.assert_array_equal(root["models/rcf/embeddings"][:], before)
    # starting fresh is asked for explicitly
    man = run(client, ExportTarget.combined(str(out)), provider_options={"seed": 7}, format="zarr")
    assert man["status"] == "ok"
    after = np.asarray(zarr.open_group(str(out), mode="r")["models/rcf/embeddings"][:])
    assert not np.array_equal(after, before)


def test_per_item_folder_resumed_with_another_seed_is_refused(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "items"
    run(client, ExportTarget.per_item(str(out)), provider_options={"seed": 0})
    folder = json.loads((out / "_rs_embed_dask_export.json").read_text())
    assert folder["complete"] is True
    assert folder["n_items"] == len(ROIS)
    with pytest.raises(SpecError, match=r"provider_options\.seed: 0 -> 7"):
        run(client, ExportTarget.per_item(str(out)), provider_options={"seed": 7}, resume=True)


def test_model_config_change_is_refused_naming_it(client: Any, tmp_path: Path) -> None:
    from rs_embed_dask import ExportModelRequest

    out = tmp_path / "cfg.zarr"
    base = {"spatials": list(ROIS[:4]), "temporal": TEMPORAL, "target": ExportTarget.combined(str(out)),
            "backend": "synthetic", "client": client}  # fmt: skip
    export_batch(models=["rcf"], config=ExportConfig(format="zarr", show_progress=False), **base)
    with pytest.raises(SpecError) as info:
        export_batch(
            models=[ExportModelRequest(name="rcf", model_config={"seed": 3})],
            config=ExportConfig(format="zarr", show_progress=False, resume=True),
            **base,
        )
    assert "models.rcf.model_config" in str(info.value)


def test_secret_provider_options_are_stored_as_digests() -> None:
    from rs_embed_dask.export.identity import _provider_options

    out = _provider_options(
        {"private_key": "-----BEGIN KEY-----abc", "seed": 1, "latency_s": 2}, {"synthetic"}
    )
    assert out["seed"] == 1
    assert "latency_s" not in out
    assert out["private_key"].startswith("sha1:")
    assert "BEGIN" not in out["private_key"]


def test_listed_store_resumed_by_a_stream_of_the_same_rois(
    client: Any, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = tmp_path / "stream.npz"
    with pytest.raises(ModelError):
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0, **FAIL})
    man = run(
        client,
        ExportTarget.combined(str(out)),
        spatials=iter(ROIS),
        provider_options={"seed": 0},
        resume=True,
    )
    assert man["status"] == "ok"
    np.testing.assert_array_equal(npz(out)["embeddings__rcf"], reference["embeddings__rcf"])


def test_listed_store_resumed_with_other_rois_is_refused(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "rois.npz"
    with pytest.raises(ModelError):
        run(client, ExportTarget.combined(str(out)), provider_options={"seed": 0, **FAIL})
    with pytest.raises(SpecError, match=r"spatials: \"12 ROIs, sha1:"):
        run(
            client,
            ExportTarget.combined(str(out)),
            spatials=ROIS[::-1],
            provider_options={"seed": 0},
            resume=True,
        )


def test_weights_identity_follows_the_file_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from rs_embed_dask.export.identity import _weights

    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"a" * 100)
    by_config = SimpleNamespace(config_dict={"weights": str(ckpt)})
    desc = {"weights": {"source": "huggingface: x/y", "env_var": "RS_EMBED_TEST_WEIGHTS"}}
    first = _weights(by_config, desc)
    ckpt.write_bytes(b"b" * 100)  # same path and size, other weights
    second = _weights(by_config, desc)
    assert identity_diff({"w": first}, {"w": second}) == [
        f"w.file.sha1_head_tail: {json.dumps(first['file']['sha1_head_tail'])} -> "
        f"{json.dumps(second['file']['sha1_head_tail'])}"
    ]
    by_env = SimpleNamespace(config_dict={})
    monkeypatch.setenv("RS_EMBED_TEST_WEIGHTS", str(ckpt))
    assert _weights(by_env, desc)["file"] == second["file"]
