"""Bad input is refused on the client, before a cluster starts or a byte is written (issue 16).

Each test names a case of the issue.  A refused export must not start (or
reach) a cluster, which the ``no_cluster`` fixture records, and must leave
no target behind.  Earth Engine is faked at the ``ee`` boundary
(``tests/fake_ee.py``); nothing else is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rs_embed_dask.cluster as clusters
from rs_embed_dask import (
    BBox,
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    export_batch,
    get_embedding,
    get_embeddings_batch,
)
from rs_embed_dask.core.errors import ModelError, ProviderError, SpecError
from rs_embed_dask.providers import ee_session
from rs_embed_dask.providers.gee import GEEProvider
from rs_embed_dask.resolve import reset_runtime

sys.path.insert(0, os.path.dirname(__file__))
from fake_ee import FakeEarthEngine

S2 = "COPERNICUS/S2_SR_HARMONIZED"
T = TemporalSpec.range("2022-06-01", "2022-07-01")
ROI = PointBuffer(10.0, 45.0, 160)
GOOD = [PointBuffer(10.0 + 0.01 * i, 45.0, 160) for i in range(3)]
KEY = (
    '{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", '
    '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQ-TOPSECRET-MATERIAL\\n-----END PRIVATE KEY-----\\n"}'
)


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any attempt to start or reach a cluster for an export (none is expected)."""
    calls: list[str] = []

    def spy(*a: Any, **k: Any) -> Any:
        calls.append("export_client")
        raise AssertionError("a refused export must not start or reach a cluster")

    monkeypatch.setattr(clusters, "export_client", spy)
    return calls


def export(tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("spatials", list(GOOD))
    kw.setdefault("temporal", T)
    kw.setdefault("models", ["rcf"])
    kw.setdefault("backend", "synthetic")
    kw.setdefault("target", ExportTarget.combined(str(tmp_path / "out" / "e.npz")))
    kw.setdefault("config", ExportConfig(show_progress=False))
    return export_batch(**kw)


def refused(tmp_path: Path, no_cluster: list[str], exc: type, pattern: str, **kw: Any) -> str:
    """Run a refused export; check the error, that no cluster was touched and nothing written."""
    with pytest.raises(exc, match=pattern) as info:
        export(tmp_path, **kw)
    assert no_cluster == []
    assert not (tmp_path / "out").exists()
    return str(info.value)


# -- bands ------------------------------------------------------------------------------------------
def test_unknown_sensor_band_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    sensor = SensorSpec(S2, ("B2", "B3", "B4", "B99"))
    pattern = r"Model 'rcf': SensorSpec\.bands: the synthetic provider has no band\(s\) \['B99'\]; bands: \['B1'"
    refused(tmp_path, no_cluster, SpecError, pattern, sensor=sensor)
    # continue_on_error used to turn it into an export with every ROI failed
    refused(tmp_path, no_cluster, SpecError, pattern, sensor=sensor,
            config=ExportConfig(continue_on_error=True, show_progress=False))  # fmt: skip
    with pytest.raises(SpecError, match=pattern):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", sensor=sensor)


def test_unknown_model_config_band_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    req = ExportModelRequest("rcf", model_config={"bands": ("B99",)})
    refused(tmp_path, no_cluster, SpecError, r"no band\(s\) \['B99'\]", models=[req])
    with pytest.raises(SpecError, match=r"no band\(s\) \['B99'\]"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", bands=("B99",))


def test_unknown_earth_engine_band_is_refused_against_the_collection(
    tmp_path: Path, no_cluster: list[str], fake_ee: FakeEarthEngine
) -> None:
    refused(tmp_path, no_cluster, SpecError,
            r"Earth Engine collection 'COPERNICUS/S2_SR_HARMONIZED' has no band\(s\) \['B99'\]; bands: \['B1'",
            backend="gee", sensor=SensorSpec(S2, ("RED", "GREEN", "NIR", "B99")))  # fmt: skip
    assert fake_ee.requests == []
    assert fake_ee.value_requests == []


def test_band_count_other_than_the_model_reads_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    refused(tmp_path, no_cluster, ModelError, r"Model 'rcf' expects 4 bands \['B2', 'B3', 'B4', 'B8'\]; the sensor gives 5",
            sensor=SensorSpec(S2, ("B2", "B3", "B4", "B8", "B11")))  # fmt: skip


# -- ROIs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (PointBuffer(179.999, 10.0, 5000), r"^spatials\[1\]: The region .* crosses the antimeridian"),
        (BBox(0.0, 86.0, 1.0, 87.0), r"^spatials\[1\]: The region .* has no extent in Web-Mercator"),
        (PointBuffer(10.0, 45.0, 2e6), r"^spatials\[1\]: its grid window at scale_m=10 is 400000 x 400000 = "
                                       r"160,000,000,000 pixels, over the limit of 100,000,000 pixels per ROI\. .*"
                                       r"RS_EMBED_MAX_WINDOW_PIXELS=160000000000"),
        (PointBuffer(10.0, 45.0, 5.0), r"^spatials\[1\]: its grid window at scale_m=10 is 1 x 1 pixels; "
                                       r"model\(s\) \['rcf'\] need at least 3 x 3"),
    ],
    ids=["antimeridian", "beyond-85.06", "huge-window", "smaller-than-the-kernel"],
)
def test_roi_without_a_usable_window_is_refused(
    tmp_path: Path, no_cluster: list[str], bad: Any, pattern: str
) -> None:
    refused(tmp_path, no_cluster, SpecError, pattern, spatials=[GOOD[0], bad, GOOD[1]])
    with pytest.raises(SpecError, match=pattern):
        get_embeddings_batch("rcf", spatials=[GOOD[0], bad], temporal=T, backend="synthetic")


def test_window_limit_is_a_documented_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    roi = PointBuffer(10.0, 45.0, 320)  # 64 x 64 pixels at 10 m
    monkeypatch.setenv("RS_EMBED_MAX_WINDOW_PIXELS", "1000")
    with pytest.raises(SpecError, match=r"64 x 64 = 4,096 pixels, over the limit of 1,000 .*RS_EMBED_MAX_WINDOW_PIXELS=4096"):
        get_embedding("rcf", spatial=roi, temporal=T, backend="synthetic")
    monkeypatch.setenv("RS_EMBED_MAX_WINDOW_PIXELS", "4096")
    assert get_embedding("rcf", spatial=roi, temporal=T, backend="synthetic").data.shape == (512,)
    monkeypatch.setenv("RS_EMBED_MAX_WINDOW_PIXELS", "lots")
    with pytest.raises(SpecError, match=r"\$RS_EMBED_MAX_WINDOW_PIXELS must be a positive integer"):
        get_embedding("rcf", spatial=roi, temporal=T, backend="synthetic")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None, set_as_default=False) as c:
        yield c


def _stream(rois: list[Any]) -> Iterator[Any]:
    yield from rois


def test_generator_roi_is_checked_as_read_and_the_store_resumes(client: Any, tmp_path: Path) -> None:
    good = [PointBuffer(10.0 + 0.01 * i, 45.0, 160) for i in range(12)]
    bad = PointBuffer(179.999, 10.0, 5000)
    out = str(tmp_path / "s.npz")
    cfg = ExportConfig(chunk_size=4, show_progress=False, resume=True)
    with pytest.raises(SpecError, match=r"^spatials\[9\]: The region .* crosses the antimeridian"):
        export_batch(spatials=_stream([*good[:9], bad, *good[10:]]), temporal=T, models=["rcf"],
                     backend="synthetic", target=ExportTarget.combined(out), config=cfg, client=client)  # fmt: skip
    assert not os.path.exists(out)  # nothing materialised...
    assert os.path.isdir(out + ".work.zarr")  # ...but the working store is kept for resume
    # fixed ROI: the export resumes from the store and ends with every item ok, equal to a fresh run
    got = export_batch(spatials=_stream(good), temporal=T, models=["rcf"], backend="synthetic",
                       target=ExportTarget.combined(out), config=cfg, client=client)  # fmt: skip
    assert got["status"] == "ok"
    fresh = str(tmp_path / "fresh.npz")
    export_batch(spatials=list(good), temporal=T, models=["rcf"], backend="synthetic",
                 target=ExportTarget.combined(fresh), config=ExportConfig(chunk_size=4, show_progress=False),
                 client=client)  # fmt: skip
    with np.load(out, allow_pickle=False) as a, np.load(fresh, allow_pickle=False) as b:
        keys = [k for k in b.files if k.startswith(("embeddings", "inputs"))]
        assert keys
        for k in keys:
            np.testing.assert_array_equal(a[k], b[k])


def test_a_bad_first_generator_roi_is_refused_before_any_cluster(tmp_path: Path, no_cluster: list[str]) -> None:
    refused(tmp_path, no_cluster, SpecError, r"^spatials\[0\]: .*antimeridian",
            spatials=_stream([PointBuffer(-179.999, 0.0, 5000), *GOOD]))  # fmt: skip


# -- provider options, device ----------------------------------------------------------------------
def test_unknown_provider_option_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    msg = refused(tmp_path, no_cluster, SpecError, r"Unknown synthetic provider option\(s\) \['bogus'\]; allowed: "
                  r"\['cloud_fraction', 'failure_rate', 'latency_s', 'seed', 'transient_failure_rate'\]",
                  provider_options={"bogus": 1})  # fmt: skip
    assert msg


@pytest.mark.parametrize(
    ("opts", "pattern"),
    [
        ({"failure_rate": 2}, r"synthetic provider option failure_rate must be in \[0, 1\]; got 2"),
        ({"latency_s": -1}, r"latency_s must be in \[0, inf\]; got -1"),
        ({"seed": "seven"}, r"seed must be an integer; got str 'seven'"),
        ({"cloud_fraction": float("nan")}, r"cloud_fraction must be a finite number"),
        ({"seed": True}, r"seed must be an integer; got bool"),
    ],
)
def test_provider_option_value_is_refused(tmp_path: Path, no_cluster: list[str], opts: dict, pattern: str) -> None:
    refused(tmp_path, no_cluster, SpecError, pattern, provider_options=opts)
    # still a ProviderError for code that catches what the provider itself raises
    with pytest.raises(ProviderError, match=pattern):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", provider_options=opts)


def test_other_providers_declare_their_options(tmp_path: Path, no_cluster: list[str]) -> None:
    refused(tmp_path, no_cluster, SpecError, r"stac provider option sign must be one of \['auto', 'planetary-computer', 'none'\]",
            backend="stac", provider_options={"sign": "yes"})  # fmt: skip
    refused(tmp_path, no_cluster, SpecError, r"Unknown local provider option\(s\) \['pth'\]; allowed: \['nodata', 'path', 'resampling'\]",
            backend="local", provider_options={"pth": "/data"})  # fmt: skip
    refused(tmp_path, no_cluster, SpecError, r"gee provider option max_concurrency must be in \[1, inf\]; got 0",
            backend="gee", provider_options={"max_concurrency": 0})  # fmt: skip


def test_device_tpu_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    pattern = r"device must be one of \['auto', 'cpu', 'cuda', 'mps'\] or 'cuda:<index>'; got 'tpu'"
    refused(tmp_path, no_cluster, ModelError, pattern, device="tpu")
    with pytest.raises(ModelError, match=pattern):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", device="tpu")


def test_missing_gpu_is_refused_when_the_work_runs_here(tmp_path: Path, no_cluster: list[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(tmp_path, no_cluster, ModelError, r"device='cuda:1': this machine has no CUDA device", device="cuda:1")


# -- credentials and weights -----------------------------------------------------------------------
@pytest.fixture
def fake_ee(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEarthEngine]:
    monkeypatch.setenv("EE_PROJECT", "test-project")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    fake = FakeEarthEngine().install(monkeypatch)
    yield fake
    reset_runtime()
    ee_session.reset_session()


def test_earth_engine_without_credentials_is_refused_before_the_cluster(
    tmp_path: Path, no_cluster: list[str], fake_ee: FakeEarthEngine
) -> None:
    fake_ee.authenticated = False
    refused(tmp_path, no_cluster, ProviderError, r"(?s)Earth Engine authentication is required .*earthengine authenticate",
            backend="gee")  # fmt: skip


def test_revoked_earth_engine_credentials_are_found_by_one_cheap_call(
    tmp_path: Path, no_cluster: list[str], fake_ee: FakeEarthEngine
) -> None:
    fake_ee.revoked = True  # ee.Initialize succeeds; the service refuses every request
    refused(tmp_path, no_cluster, ProviderError, r"Earth Engine authentication is required .*invalid authentication credentials",
            backend="gee")  # fmt: skip
    assert len(fake_ee.value_requests) == 1
    assert fake_ee.requests == []  # no pixels asked for


def test_valid_earth_engine_credentials_are_checked_once_per_process(fake_ee: FakeEarthEngine) -> None:
    for _ in range(2):
        GEEProvider.preflight({})
    assert len(fake_ee.value_requests) == 1


def test_missing_weights_are_refused_before_the_cluster(
    tmp_path: Path, no_cluster: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nope = str(tmp_path / "nope.pth")
    refused(tmp_path, no_cluster, ModelError, r"model_config\['weights'\] for model 'satmae' is '.*nope\.pth', which does not exist",
            models=[ExportModelRequest("satmae", model_config={"weights": nope})])  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.delenv("RS_EMBED_SATMAE_WEIGHTS", raising=False)
    refused(tmp_path, no_cluster, ModelError, r"No weights found for model 'satmae'", models=["satmae"])
    monkeypatch.delenv("RS_EMBED_CLAY_WEIGHTS", raising=False)
    refused(tmp_path, no_cluster, ModelError, r"No weights found for model 'clay'", models=["clay"])


# -- the target --------------------------------------------------------------------------------------
def test_target_under_a_file_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    (tmp_path / "afile").write_text("x")
    refused(tmp_path, no_cluster, SpecError, r"is under '.*afile', which is a file, not a folder",
            target=ExportTarget.combined(str(tmp_path / "afile" / "out" / "e.npz")))  # fmt: skip
    refused(tmp_path, no_cluster, SpecError, r"which is a file, not a folder",
            target=ExportTarget.per_item(str(tmp_path / "afile" / "items")))  # fmt: skip
    assert (tmp_path / "afile").read_text() == "x"


_READ_ONLY = """
import sys
import rs_embed_dask.cluster as clusters
from rs_embed_dask import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch
from rs_embed_dask.core.errors import SpecError

def no_cluster(*a, **k):
    raise AssertionError("a cluster was started")

clusters.export_client = no_cluster
try:
    export_batch(spatials=[PointBuffer(10.0, 45.0, 160)], temporal=TemporalSpec.year(2022), models=["rcf"],
                 backend="synthetic", target=ExportTarget.combined(sys.argv[1]),
                 config=ExportConfig(show_progress=False))
except SpecError as exc:
    print("SpecError:", exc)
"""


def test_read_only_target_folder_is_refused(tmp_path: Path) -> None:
    import shutil

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = str(ro / "sub" / "e.npz")
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: run the check without the capability that allows it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", _READ_ONLY, target], capture_output=True, text=True, timeout=120,
        cwd=str(Path(__file__).resolve().parents[1]), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"SpecError: target '{target}' cannot be written: the folder '{ro}' is read-only" in proc.stdout
    assert not (ro / "sub").exists()


# -- types -------------------------------------------------------------------------------------------
def test_wrong_argument_types_name_the_field(tmp_path: Path, no_cluster: list[str]) -> None:
    refused(tmp_path, no_cluster, TypeError, r"^backend must be a provider name .*\(a str\); got int 123", backend=123)
    refused(tmp_path, no_cluster, TypeError, r"^client must be a distributed\.Client or None; got str", client="x")
    refused(tmp_path, no_cluster, TypeError, r"^provider_options must be a dict of option name to value .*; got str",
            provider_options="abc")  # fmt: skip
    refused(tmp_path, no_cluster, TypeError, r"^models\[0\]\.model_config must be a dict of model options; got str",
            models=[ExportModelRequest("rcf", model_config="abc")])  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(TypeError, match=r"^backend must be"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend=123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^provider_options must be a dict"):
        get_embedding("rcf", spatial=ROI, temporal=T, backend="synthetic", provider_options="abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("year", [float("inf"), float("nan"), 2022.7, -0.5])
def test_non_integer_year_is_refused_not_truncated(tmp_path: Path, no_cluster: list[str], year: float) -> None:
    refused(tmp_path, no_cluster, SpecError, r"^TemporalSpec\.year requires an integer year\.",
            temporal=TemporalSpec.year(year))  # type: ignore[arg-type]  # fmt: skip


def test_integral_float_year_still_works() -> None:
    TemporalSpec.year(2022.0).validate()  # type: ignore[arg-type]


def test_names_as_a_string_is_refused(tmp_path: Path, no_cluster: list[str]) -> None:
    with pytest.raises(TypeError, match=r"names must be a list of file names, one per ROI; got the string 'abc'"):
        ExportTarget.per_item(str(tmp_path / "out"), names="abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"names must be a list of file names, one per ROI; got str 'abc'"):
        export(tmp_path, target=None, out_dir=str(tmp_path / "out"), names="abc")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("models", [["rcf", "RCF"], ["rcf", "mosaiks"], ["mosaiks", ExportModelRequest("Rcf")]])
def test_one_model_under_two_names_is_refused(tmp_path: Path, no_cluster: list[str], models: list[Any]) -> None:
    refused(tmp_path, no_cluster, ModelError, r"are the same model \('rcf'\) with the same configuration", models=models)


def test_two_configurations_of_one_model_are_still_allowed(client: Any, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(tmp_path, client=client, spatials=GOOD[:1],
                     models=["rcf", ExportModelRequest("mosaiks", model_config={"features": 64})])  # fmt: skip
    assert out["status"] == "ok"


# -- secrets -----------------------------------------------------------------------------------------
def test_key_content_as_credentials_file_is_refused_without_echo(tmp_path: Path, no_cluster: list[str]) -> None:
    msg = refused(tmp_path, no_cluster, SpecError, r"gee provider option credentials_file looks like the contents of a credential",
                  backend="gee", provider_options={"credentials_file": KEY})  # fmt: skip
    for leak in ("TOPSECRET", "PRIVATE KEY", "client_email"):
        assert leak not in msg


@pytest.mark.parametrize("opt", ["token", "private_key", "key_data"])
def test_credential_options_are_refused_without_echo(tmp_path: Path, no_cluster: list[str], opt: str) -> None:
    for backend in ("synthetic", "gee"):
        msg = refused(tmp_path, no_cluster, SpecError, rf"option\(s\) \['{opt}'\] are not accepted",
                      backend=backend, provider_options={opt: KEY})  # fmt: skip
        assert "TOPSECRET" not in msg


def test_key_content_never_reaches_a_provider_error_or_repr(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as info:
        ee_session.resolve_credentials_file(KEY)
    with pytest.raises(ProviderError) as info2:
        GEEProvider(credentials_file=KEY)
    for text in (str(info.value), str(info2.value), repr(info.value.__cause__)):
        assert "TOPSECRET" not in text
        assert "BEGIN PRIVATE" not in text
    # a path is what travels, and what messages show
    key_path = tmp_path / "sa.json"
    key_path.write_text(json.dumps({"type": "service_account"}))
    assert str(key_path) in repr(GEEProvider(credentials_file=str(key_path)))


# -- scheduler tooling -------------------------------------------------------------------------------
def test_slurm_cluster_without_sbatch_is_refused_before_the_scheduler_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Scheduler

    from rs_embed_dask.cluster import slurm_cluster

    started: list[Any] = []
    real_init = Scheduler.__init__

    def recording_init(self: Any, *a: Any, **k: Any) -> None:
        started.append(self)
        real_init(self, *a, **k)

    monkeypatch.setattr(Scheduler, "__init__", recording_init)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SpecError, match=r"slurm\.yaml: kind 'slurm' submits jobs with \['sbatch', 'scancel'\]"):
        slurm_cluster("slurm", scale={"gpu": 1}, verbose=False)
    assert started == []
