"""The YAML job schema: parsing into frozen specs and one clear message per bad field."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from rs_embed_dask import BBox, ExportConfig, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_dask.core.errors import ModelError, SpecError
from rs_embed_dask.core.types import ExportLayout
from rs_embed_dask.jobfile import ExportJob, load_job, parse_job

GOOD: dict[str, Any] = {
    "spatials": {"points": [[121.5, 31.2], [121.6, 31.3]], "buffer_m": 320},
    "temporal": {"start": "2022-06-01", "end": "2022-09-01"},
    "models": ["rcf", {"name": "mosaiks", "model_config": {"features": 64}}],
    "backend": "synthetic",
    "target": {"combined": "out/export.zarr"},
    "config": {"format": "zarr", "chunk_size": 4},
}


def job(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(GOOD)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def test_a_good_job_parses_into_frozen_specs(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "job.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(GOOD))
    j = load_job(path)
    assert isinstance(j, ExportJob)
    with pytest.raises(dataclasses.FrozenInstanceError):
        j.backend = "x"  # type: ignore[misc]
    assert j.spatials.open() == [PointBuffer(121.5, 31.2, 320.0), PointBuffer(121.6, 31.3, 320.0)]
    assert j.temporal == TemporalSpec.range("2022-06-01", "2022-09-01")
    assert [m.name for m in j.models] == ["rcf", "mosaiks"]
    assert j.models[1].model_config == {"features": 64}
    # relative paths are resolved against the job file's folder
    assert j.target.layout == ExportLayout.COMBINED
    assert j.target.out_file == str(path.parent / "out" / "export.zarr")
    assert j.config == ExportConfig(format="zarr", chunk_size=4)
    assert j.output == OutputSpec.pooled()
    assert j.cluster.kind == "local"
    kw = j.export_kwargs()
    assert kw["backend"] == "synthetic"
    assert kw["models"] == list(j.models)


def test_unquoted_yaml_dates_bboxes_grid_output_and_per_item(tmp_path: Path) -> None:
    text = yaml.safe_dump(
        job(
            tmp_path,
            spatials={"bboxes": [[121.5, 31.2, 121.51, 31.21]]},
            output={"mode": "grid"},
            target={"per_item": "items", "names": ["a"]},
            config={"format": "npz"},
            cluster={"scheduler": "tcp://127.0.0.1:8786"},
        )
    ).replace("'2022-06-01'", "2022-06-01")
    assert "start: 2022-06-01" in text  # YAML reads this as a date
    j = parse_job(yaml.safe_load(text), base=tmp_path)
    assert j.temporal == TemporalSpec.range("2022-06-01", "2022-09-01")
    assert j.spatials.open() == [BBox(121.5, 31.2, 121.51, 31.21)]
    assert j.output.mode == "grid"
    assert j.target.out_dir == str(tmp_path / "items")
    assert j.target.names == ("a",)
    assert (j.cluster.kind, j.cluster.address) == ("scheduler", "tcp://127.0.0.1:8786")


@pytest.mark.parametrize(
    ("changes", "exc", "pattern"),
    [
        ({"models": ["rcf", {"name": "rcf2", "model_config": {"variant": "x"}}]}, ModelError, r"models\[1\]\.name: unknown model 'rcf2'; known: \[.*'rcf'"),
        ({"models": ["rcf", {"name": "mosaiks", "model_config": {"variant": "x"}}]}, SpecError, r"job\.yaml: models\[1\]\.model_config\.variant: unknown key; allowed keys: \['bands', 'bias', 'features'"),
        ({"models": [{"name": "rcf", "model_config": {"features": 3}}]}, ModelError, r"models\[0\]\.model_config: .*features"),
        ({"models": [{"name": "rcf", "sensor": {"collection": "S2", "bands": ["B2"], "composite": "best"}}]}, SpecError, r"models\[0\]\.sensor: .*'median' or 'mosaic'"),
        ({"models": [{"name": "rcf", "weights": "x"}]}, SpecError, r"models\[0\]\.weights: unknown key; allowed keys: \['name', 'sensor', 'fetch', 'modality', 'model_config'\]"),
        ({"models": []}, SpecError, r"models: expected a non-empty list"),
        ({"config": {"format": "tiff"}}, ModelError, r"config\.format: unsupported format 'tiff'; allowed: \['npz', 'netcdf', 'zarr'\]"),
        ({"config": {"chunk_size": 0}}, ModelError, r"config\.chunk_size: .*integer >= 1"),
        ({"config": {"resume": "yes"}}, SpecError, r"config\.resume: expected true or false"),
        ({"config": {"chunks": 4}}, SpecError, r"config\.chunks: unknown key; allowed keys: \['format'"),
        ({"output": {"mode": "median"}}, SpecError, r"output: Unknown output mode: 'median' \(expected 'grid' or 'pooled'\)"),
        ({"input_prep": "crop"}, ModelError, r"input_prep: unknown mode 'crop'; allowed: \['auto', 'resize', 'tile'\]"),
        ({"spatials": {"points": [[121.5, 31.2]]}}, SpecError, r"spatials\.buffer_m: required"),
        ({"spatials": {"points": [[121.5]], "buffer_m": 10}}, SpecError, r"spatials\.points\[0\]: expected \[lon, lat\]"),
        ({"spatials": {"bboxes": [[1, 0, 0, 1]]}}, SpecError, r"spatials\.bboxes\[0\]: Invalid bbox bounds"),
        ({"spatials": {"points": [[1, 2]], "bboxes": [[0, 0, 1, 1]], "buffer_m": 5}}, SpecError, r"spatials: give exactly one of \['points', 'bboxes', 'file', 'region'\]"),
        ({"spatials": {"file": "missing.csv"}}, SpecError, r"spatials\.file: .*missing\.csv' does not exist"),
        ({"spatials": {"region": {"bbox": [0, 0, 1, 1]}}}, SpecError, r"spatials\.tile_m: required"),
        ({"temporal": {"start": "2022-09-01", "end": "2022-06-01"}}, SpecError, r"temporal: TemporalSpec\.range requires start < end"),
        ({"temporal": {"year": 2022, "end": "2023-01-01"}}, SpecError, r"temporal: give either \{year: Y\}"),
        ({"target": {"combined": "a.npz", "per_item": "d"}}, SpecError, r"target: give exactly one of"),
        ({"target": None}, SpecError, r"missing required key 'target'"),
        ({"backend": "foo"}, ModelError, r"backend: unknown provider 'foo'; allowed: \['auto', .*'synthetic'"),
        ({"cluster": {"workers": 3}}, SpecError, r"cluster\.workers: unknown key; allowed keys: \['local', 'scheduler', 'scheduler_file', 'jobqueue', 'scale', 'adapt'\]"),
        ({"cluster": {"local": {"io_threads": 0}}}, SpecError, r"cluster\.local\.io_threads: expected an integer >= 1"),
        ({"cluster": {"jobqueue": "slurm", "scale": {"cpu": 2}}}, SpecError, r"cluster\.scale\.cpu: unknown key; allowed keys: \['gpu', 'io'\]"),
        ({"cluster": {"jobqueue": "slurm", "adapt": {"gpu": [4, 1]}}}, SpecError, r"cluster\.adapt\.gpu: expected \[minimum, maximum\]"),
        ({"cluster": {"jobqueue": "nope.yaml", "scale": {"gpu": 1}}}, SpecError, r"cluster\.jobqueue: .*does not exist"),
        ({"sensro": {}}, SpecError, r"job\.yaml: sensro: unknown key; allowed keys: \['spatials'"),
    ],
)
def test_bad_jobs_name_the_field_and_the_allowed_values(
    tmp_path: Path, changes: dict[str, Any], exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        parse_job(job(tmp_path, **changes), source="job.yaml", base=tmp_path)


def test_request_level_checks_run_before_anything_starts(tmp_path: Path) -> None:
    # the export's own validation (build_plan) runs on the whole request: duplicate names
    with pytest.raises(ModelError, match=r"job\.yaml: Duplicate model name"):
        parse_job(job(tmp_path, models=["rcf", "rcf"]), source="job.yaml", base=tmp_path)
    # per-item targets cannot be zarr
    with pytest.raises(ModelError, match=r"job\.yaml: models\[0\]: format='zarr' writes one store"):
        parse_job(job(tmp_path, target={"per_item": "d"}), source="job.yaml", base=tmp_path)


def fake_batch_tools(folder: Path, *names: str) -> str:
    """A PATH holding do-nothing stand-ins of the batch system's commands (never run here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        tool = folder / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return str(folder)


def test_jobqueue_cluster_is_checked_without_starting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", fake_batch_tools(tmp_path / "bin", "sbatch", "scancel"))
    j = parse_job(job(tmp_path, cluster={"jobqueue": "slurm", "adapt": {"gpu": [1, 4]}, "scale": {"io": 1}}), base=tmp_path)
    assert j.cluster.kind == "jobqueue"
    assert j.cluster.address
    assert j.cluster.address.endswith("slurm.yaml")
    assert dict(j.cluster.adapt) == {"gpu": (1, 4)}
    assert dict(j.cluster.scale) == {"io": 1}


def test_load_job_reports_bad_yaml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spatials: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_job(bad)


def test_region_spatials_tile_lazily_on_the_common_grid(tmp_path: Path) -> None:
    regions = pytest.importorskip("rs_embed_dask.regions")
    d = job(tmp_path, spatials={"region": {"bbox": [121.3, 31.1, 121.4, 31.2]}, "tile_m": 2560, "scale_m": 40})
    j = parse_job(d, base=tmp_path)
    tiles = j.spatials.open()
    want = regions.tile_region(BBox(121.3, 31.1, 121.4, 31.2), 2560, scale_m=40)
    assert len(tiles) == len(want) > 1
    assert list(tiles) == list(want)
    with pytest.raises(SpecError, match=r"spatials\.overlap_m: must be smaller than tile_m"):
        parse_job(job(tmp_path, spatials={"region": {"bbox": [0, 0, 1, 1]}, "tile_m": 100, "overlap_m": 100}), base=tmp_path)


def test_file_spatials_read_through_regions(tmp_path: Path) -> None:
    regions = pytest.importorskip("rs_embed_dask.regions")
    if not hasattr(regions, "read_spatials"):
        pytest.skip("rs_embed_dask.regions.read_spatials not available yet")
    csv = tmp_path / "rois.csv"
    csv.write_text("lon,lat\n121.5,31.2\n121.6,31.3\n")
    j = parse_job(job(tmp_path, spatials={"file": "rois.csv", "buffer_m": 320}), base=tmp_path)
    assert [(s.lon, s.lat, s.buffer_m) for s in j.spatials.open()] == [(121.5, 31.2, 320.0), (121.6, 31.3, 320.0)]


# -- the client-side checks of export_batch, in job validation (issue 16) -----------------------------
def test_jobqueue_without_the_batch_commands_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_batch_tools(tmp_path / "bin", "scancel"))  # no sbatch
    with pytest.raises(SpecError, match=r"cluster\.jobqueue: .*slurm\.yaml: kind 'slurm' submits jobs with .*\['sbatch'\] is not on PATH"):
        parse_job(job(tmp_path, cluster={"jobqueue": "slurm", "scale": {"gpu": 1}}), source="job.yaml", base=tmp_path)
    # pbs: qsub and qdel
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SpecError, match=r"\['qsub', 'qdel'\] are not on PATH"):
        parse_job(job(tmp_path, cluster={"jobqueue": "pbs", "scale": {"io": 1}}), source="job.yaml", base=tmp_path)


@pytest.mark.parametrize(
    ("changes", "exc", "pattern"),
    [
        ({"sensor": {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": ["B2", "B3", "B4", "B99"]}, "models": ["rcf"]},
         SpecError, r"job\.yaml: models\[0\]: Model 'rcf': SensorSpec\.bands: the synthetic provider has no band\(s\) \['B99'\]"),
        ({"models": [{"name": "rcf", "model_config": {"bands": ["B99"]}}]}, SpecError, r"no band\(s\) \['B99'\]"),
        ({"provider_options": {"bogus": 1}}, SpecError, r"Unknown synthetic provider option\(s\) \['bogus'\]"),
        ({"provider_options": {"failure_rate": 2}}, SpecError, r"failure_rate must be in \[0, 1\]; got 2"),
        ({"device": "tpu"}, ModelError, r"device must be one of \['auto', 'cpu', 'cuda', 'mps'\]"),
        ({"spatials": {"points": [[179.999, 10.0]], "buffer_m": 5000}}, SpecError, r"spatials\[0\]: .*crosses the antimeridian"),
        ({"spatials": {"bboxes": [[0, 86, 1, 87]]}}, SpecError, r"spatials\[0\]: .*no extent in Web-Mercator"),
        ({"spatials": {"points": [[10.0, 45.0]], "buffer_m": 2.0e6}}, SpecError,
         r"spatials\[0\]: .*160,000,000,000 pixels, over the limit of 100,000,000 .*RS_EMBED_MAX_WINDOW_PIXELS"),
        ({"models": ["rcf", "RCF"]}, ModelError, r"'rcf' and 'RCF' are the same model"),
        ({"models": ["rcf", "mosaiks"]}, ModelError, r"'rcf' and 'mosaiks' are the same model \('rcf'\)"),
    ],
)
def test_job_validation_runs_the_client_checks(tmp_path: Path, changes: dict[str, Any], exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        parse_job(job(tmp_path, **changes), source="job.yaml", base=tmp_path)
    assert not (tmp_path / "out").exists()


def test_job_with_a_key_pasted_as_credentials_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nSECRETSECRET\\n"}'
    d = job(tmp_path, backend="gee", models=["rcf"], provider_options={"credentials_file": key})
    with pytest.raises(SpecError) as info:
        parse_job(d, source="job.yaml", base=tmp_path)
    assert "credentials_file looks like the contents of a credential" in str(info.value)
    assert "SECRETSECRET" not in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_job_target_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SpecError, match=r"is under '.*afile', which is a file, not a folder"):
        parse_job(job(tmp_path, target={"combined": "afile/out/export.zarr"}), source="job.yaml", base=tmp_path)


def test_bad_roi_is_reported_at_its_own_field_path_not_under_a_model(tmp_path: Path) -> None:
    d = job(tmp_path, spatials={"points": [[121.5, 31.2], [179.999, 10.0]], "buffer_m": 5000}, models=["rcf"])
    with pytest.raises(SpecError) as info:
        parse_job(d, source="job.yaml", base=tmp_path)
    msg = str(info.value)
    assert msg.startswith("job.yaml: spatials[1]: "), msg
    assert "models[" not in msg
    assert "crosses the antimeridian" in msg
