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
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import ExportConfig, ExportTarget, ModelError, SpecError, export_batch, load_export
from rs_embed_dask.export.identity import identity_diff
from rs_embed_dask.providers.synthetic import SyntheticProvider

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

sys.path.insert(0, os.path.dirname(__file__))
from _exports import TEMPORAL, rois, small_export  # noqa: E402

ROIS = rois(12, per_row=6)
FAIL = {"failure_rate": 0.4}


def run(client: Any, target: ExportTarget, spatials: Any = None, provider_options: dict[str, Any] | None = None,
        **config: Any) -> Any:  # fmt: skip
    """The module's export (``ROIS`` unless ``spatials``) on conftest's in-process ``client``."""
    spatials = list(ROIS) if spatials is None else spatials
    return small_export(client, target, spatials, provider_options=provider_options, **config)


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
    assert np.all(r.models["rcf"].item_status == 1)
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
    # the refused run touched nothing: xarray still reads the root variables from consolidated metadata
    assert (out / "zarr.json").exists()
    assert "consolidated_metadata" in (out / "zarr.json").read_text()
    import xarray as xr

    ds = xr.open_zarr(str(out))
    np.testing.assert_array_equal(ds["rcf"].values, before)
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


# -- secrets ------------------------------------------------------------------------------------------
TOKEN = "hf_TOPSECRET0123456789"


class TokenProvider(SyntheticProvider):
    """The synthetic world behind an access token (``hf_token``), as a private archive would be.

    Defined here, not in a plugin module: the tests run it on conftest's
    in-process cluster, where its class is found by reference.
    """

    name = "tokened"

    def __init__(self, *, hf_token: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.hf_token = hf_token


def test_secret_provider_options_are_left_out_of_the_identity() -> None:
    from rs_embed_dask.export.identity import _provider_options, fingerprint_extras

    opts = {
        "private_key": "-----BEGIN KEY-----abc",
        "hf_token": "hf_abc",
        "gcpAccessToken": "ya29.x",
        "db-password": "hunter2",
        "cloud_mask": '{"type": "service_account"}',  # key material under any name
        "credentials_file": "/keys/sa.json",  # a path (and a runtime option)
        "seed": 1,
        "latency_s": 2,
        "max_tokens": 5,  # "tokens" is not "token": it may change the pixels, so it is compared
    }
    assert _provider_options(opts, {"synthetic"}) == {"max_tokens": 5, "seed": 1}
    assert fingerprint_extras([], opts) == {"provider_options": {"max_tokens": 5, "seed": 1}}


def test_every_option_name_refused_by_validation_and_gee_is_secret_for_identity() -> None:
    from rs_embed_dask.core.errors import ProviderError
    from rs_embed_dask.providers.gee import GEEProvider
    from rs_embed_dask.validation.options import ProviderOptionError, check_provider_options
    from rs_embed_dask.validation.secrets import SECRET_OPTION_NAMES, is_secret_option

    for name in sorted(SECRET_OPTION_NAMES):
        assert is_secret_option(name), name
        assert is_secret_option(f"gcp_{name}"), name
        assert not is_secret_option(f"{name}_file"), name  # where a secret is, not the secret
        with pytest.raises(ProviderOptionError, match="not accepted"):
            check_provider_options(SyntheticProvider, {name: "x"})
        secret: dict[str, Any] = {name: "x"}
        with pytest.raises(ProviderError, match="not accepted"):
            GEEProvider(**secret)


def test_secret_provider_option_is_never_written_to_the_store(client: Any, tmp_path: Path) -> None:
    from rs_embed_dask import register_provider
    from rs_embed_dask.core.registry import unregister_provider

    out = tmp_path / "tok.zarr"
    target = ExportTarget.combined(str(out))
    register_provider(TokenProvider.name, TokenProvider, overwrite=True)
    try:
        man = small_export(client, target, list(ROIS[:4]), backend=TokenProvider.name, format="zarr",
                           provider_options={"seed": 0, "hf_token": TOKEN})  # fmt: skip
        assert man["status"] == "ok"
        ident = zarr.open_group(str(out), mode="r").attrs["rs_embed_dask"]["resume_identity"]
        assert ident["provider_options"] == {"seed": 0}
        files = [f for f in out.rglob("*") if f.is_file()]
        assert any(f.name == "zarr.json" for f in files)
        assert not [f for f in files if TOKEN.encode() in f.read_bytes()]

        # a token changes no pixel: another one resumes the finished export ...
        again = small_export(client, target, list(ROIS[:4]), backend=TokenProvider.name, format="zarr",
                             resume=True, provider_options={"seed": 0, "hf_token": "hf_another"})  # fmt: skip
        assert again["status"] == "ok"
        assert again.get("resume_skipped") is True
        # ... and a refusal names what differs, never the token
        with pytest.raises(SpecError, match=r"provider_options\.seed: 0 -> 7") as info:
            small_export(client, target, list(ROIS[:4]), backend=TokenProvider.name, format="zarr",
                         resume=True, provider_options={"seed": 7, "hf_token": TOKEN})  # fmt: skip
        assert "hf_token" not in str(info.value)
        assert TOKEN not in str(info.value)
    finally:
        unregister_provider(TokenProvider.name)


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
