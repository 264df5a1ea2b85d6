"""YAML export jobs: the schema of ``rs-embed-dask export JOB.yaml``, parsed and validated.

A job file is read into frozen dataclasses and checked as a whole, models,
specs, target and cluster included, before anything is started.  Every error
is a :class:`~rs_embed_dask.core.errors.SpecError` (or ``ModelError``) whose message
starts with the file and the field path (``models[1].model_config.variant``)
and lists the allowed values.

Relative paths in a job file (spatial files, target, jobqueue config) are
resolved against the job file's folder, so a job is a self-contained unit
that can be submitted from anywhere.

Example
-------
.. code-block:: yaml

    spatials: {points: [[121.5, 31.2], [121.6, 31.3]], buffer_m: 320}
    temporal: {start: "2022-06-01", end: "2022-09-01"}
    models:
      - rcf
      - {name: mosaiks, model_config: {features: 256}}
    backend: synthetic
    target: {combined: out/export.zarr}
    config: {format: zarr, chunk_size: 32, resume: true}
    cluster: {scheduler: "tcp://10.0.0.5:8786"}
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_embed_dask.core.errors import ModelError, RSEmbedError, SpecError
from rs_embed_dask.core.specs import (
    BBox,
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)
from rs_embed_dask.core.types import ExportConfig, ExportModelRequest, ExportTarget
from rs_embed_dask.validation.fields import Err as _Err
from rs_embed_dask.validation.fields import keys as _keys
from rs_embed_dask.validation.fields import non_empty_list as _list
from rs_embed_dask.validation.fields import number as _number
from rs_embed_dask.validation.fields import path_field as _path
from rs_embed_dask.validation.fields import spec_from as _spec
from rs_embed_dask.validation.fields import validated as _validated

__all__ = ["ClusterChoice", "ExportJob", "SpatialSource", "load_job", "parse_job"]

_TOP_KEYS = (
    "spatials", "temporal", "models", "target", "config", "backend", "device", "output",
    "sensor", "fetch", "modality", "input_prep", "provider_options", "cluster",
)  # fmt: skip
_SPATIAL_KINDS = ("points", "bboxes", "file", "region")
_CLUSTER_KINDS = ("local", "scheduler", "scheduler_file", "jobqueue")
_LOCAL_KEYS = ("io_workers", "io_threads", "inference_workers", "memory_limit")


@dataclass(frozen=True)
class SpatialSource:
    """Where a job's ROIs come from.

    Attributes
    ----------
    kind : {"points", "bboxes", "file", "region"}
        Inline points with a buffer, inline boxes, a CSV/GeoJSON/GeoParquet file
        (:func:`rs_embed_dask.regions.read_spatials`), or a region tiled on the
        common grid (:func:`rs_embed_dask.regions.tile_region`).
    specs : tuple
        The inline ROIs (``points``/``bboxes``).
    path : str, optional
        The file (``file``) or GeoJSON region (``region.geojson``).
    bbox : tuple of float, optional
        The region box (``region.bbox``).
    buffer_m, tile_m, overlap_m, scale_m : float, optional
        Buffer of points read from a file; tile size, overlap and grid scale of a region.
    """

    kind: str
    specs: tuple[Any, ...] = ()
    path: str | None = None
    bbox: tuple[float, ...] | None = None
    buffer_m: float | None = None
    tile_m: float | None = None
    overlap_m: float = 0.0
    scale_m: float = 10.0

    def open(self) -> Any:
        """The ROIs: a list for inline specs, a lazy iterable for files and regions."""
        if self.kind in ("points", "bboxes"):
            return list(self.specs)
        regions = _regions_module(self.kind)
        if self.kind == "file":
            return regions.read_spatials(self.path, buffer_m=self.buffer_m)
        region: Any = _bbox(self.bbox) if self.bbox is not None else self.path
        return regions.tile_region(region, self.tile_m, overlap_m=self.overlap_m, scale_m=self.scale_m)


def _bbox(vals: Any, crs: str = "EPSG:4326") -> BBox:
    return BBox(float(vals[0]), float(vals[1]), float(vals[2]), float(vals[3]), crs=crs)


def _regions_module(kind: str) -> Any:
    try:
        from rs_embed_dask import regions  # type: ignore[attr-defined, unused-ignore]
    except ImportError as exc:
        raise SpecError(
            f"spatials.{kind} needs rs_embed_dask.regions, which is not available in this installation; "
            "use spatials.points or spatials.bboxes."
        ) from exc
    return regions


@dataclass(frozen=True)
class ClusterChoice:
    """Where a job runs.

    Attributes
    ----------
    kind : {"local", "scheduler", "scheduler_file", "jobqueue"}
        An embedded local cluster, a running scheduler (address or scheduler
        file), or a dask-jobqueue cluster from a YAML file.
    address : str, optional
        Scheduler address, scheduler file or jobqueue config, by ``kind``.
    local : dict
        :func:`rs_embed_dask.cluster.local_cluster` keywords.
    scale, adapt : dict
        Jobs per pool, or ``(minimum, maximum)`` per pool, of a jobqueue cluster.
    """

    kind: str = "local"
    address: str | None = None
    local: Mapping[str, Any] = field(default_factory=dict)
    scale: Mapping[str, int] = field(default_factory=dict)
    adapt: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportJob:
    """A parsed, validated export job: :func:`rs_embed_dask.export_batch` arguments plus a cluster."""

    spatials: SpatialSource
    temporal: TemporalSpec | None
    models: tuple[ExportModelRequest, ...]
    target: ExportTarget
    config: ExportConfig
    backend: str = "auto"
    device: str = "auto"
    output: OutputSpec = field(default_factory=OutputSpec.pooled)
    sensor: SensorSpec | None = None
    fetch: FetchSpec | None = None
    modality: str | None = None
    input_prep: InputPrepSpec | str | None = None
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    cluster: ClusterChoice = field(default_factory=ClusterChoice)
    source: str = ""

    def export_kwargs(self, spatials: Any = None) -> dict[str, Any]:
        """Keyword arguments of :func:`rs_embed_dask.export_batch` (``client`` aside)."""
        return {
            "spatials": self.spatials.open() if spatials is None else spatials,
            "temporal": self.temporal,
            "models": list(self.models),
            "target": self.target,
            "config": self.config,
            "backend": self.backend,
            "device": self.device,
            "output": self.output,
            "sensor": self.sensor,
            "fetch": self.fetch,
            "modality": self.modality,
            "input_prep": self.input_prep,
            "provider_options": dict(self.provider_options),
        }

    def with_cluster(self, cluster: ClusterChoice) -> ExportJob:
        """The same job on another cluster (command-line overrides)."""
        return dataclasses.replace(self, cluster=cluster)


# -- sections ---------------------------------------------------------------------------------------
def _parse_spatials(err: _Err, d: Any, base: Path) -> SpatialSource:
    allowed = (*_SPATIAL_KINDS, "buffer_m", "crs", "tile_m", "overlap_m", "scale_m")
    d = _keys(err, d, "spatials", allowed)
    kinds = [k for k in _SPATIAL_KINDS if k in d]
    if len(kinds) != 1:
        raise err("spatials", f"give exactly one of {list(_SPATIAL_KINDS)}; got {kinds}.")
    kind = kinds[0]
    crs = str(d.get("crs", "EPSG:4326"))
    buffer = _number(err, d["buffer_m"], "spatials.buffer_m", positive=True) if d.get("buffer_m") is not None else None
    tiling = [k for k in ("tile_m", "overlap_m", "scale_m") if k in d]
    if kind != "region" and tiling:
        raise err(f"spatials.{tiling[0]}", "only applies to spatials.region.")
    if kind == "points":
        if buffer is None:
            raise err("spatials.buffer_m", "required with spatials.points (half side of each ROI in metres).")
        specs: list[Any] = []
        for i, p in enumerate(_list(err, d["points"], "spatials.points")):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise err(f"spatials.points[{i}]", f"expected [lon, lat]; got {p!r}.")
            lon, lat = (_number(err, v, f"spatials.points[{i}]") for v in p)
            specs.append(_validated(err, PointBuffer(lon, lat, buffer, crs=crs), f"spatials.points[{i}]"))
        return SpatialSource(kind=kind, specs=tuple(specs))
    if kind == "bboxes":
        if buffer is not None:
            raise err("spatials.buffer_m", "does not apply to spatials.bboxes.")
        specs = []
        for i, b in enumerate(_list(err, d["bboxes"], "spatials.bboxes")):
            if not isinstance(b, (list, tuple)) or len(b) != 4:
                raise err(f"spatials.bboxes[{i}]", f"expected [minlon, minlat, maxlon, maxlat]; got {b!r}.")
            vals = [_number(err, v, f"spatials.bboxes[{i}]") for v in b]
            specs.append(_validated(err, _bbox(vals, crs), f"spatials.bboxes[{i}]"))
        return SpatialSource(kind=kind, specs=tuple(specs))
    if kind == "file":
        path = _path(err, d["file"], "spatials.file", base, must_exist=True)
        if Path(path).suffix.lower() not in (".csv", ".geojson", ".json", ".parquet", ".geoparquet"):
            raise err("spatials.file", f"expected a .csv, .geojson or .parquet file; got {path!r}.")
        return SpatialSource(kind=kind, path=path, buffer_m=buffer)
    region = _keys(err, d["region"], "spatials.region", ("bbox", "geojson"))
    if len(region) != 1:
        raise err("spatials.region", "give exactly one of ['bbox', 'geojson'].")
    if "tile_m" not in d:
        raise err("spatials.tile_m", "required with spatials.region (tile side in metres, e.g. 2560).")
    tile_m = _number(err, d["tile_m"], "spatials.tile_m", positive=True)
    overlap = _number(err, d.get("overlap_m", 0.0), "spatials.overlap_m", minimum=0.0)
    if overlap >= tile_m:
        raise err("spatials.overlap_m", f"must be smaller than tile_m={tile_m}; got {overlap}.")
    scale = _number(err, d.get("scale_m", 10.0), "spatials.scale_m", positive=True)
    if "bbox" in region:
        b = region["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise err("spatials.region.bbox", f"expected [minlon, minlat, maxlon, maxlat]; got {b!r}.")
        box = tuple(_number(err, v, "spatials.region.bbox") for v in b)
        _validated(err, _bbox(box), "spatials.region.bbox")
        return SpatialSource(kind="region", bbox=box, tile_m=tile_m, overlap_m=overlap, scale_m=scale)
    path = _path(err, region["geojson"], "spatials.region.geojson", base, must_exist=True)
    return SpatialSource(kind="region", path=path, tile_m=tile_m, overlap_m=overlap, scale_m=scale)


def _parse_temporal(err: _Err, d: Any) -> TemporalSpec | None:
    if d is None:
        return None
    d = _keys(err, d, "temporal", ("year", "start", "end"))
    if "year" in d:
        if set(d) != {"year"}:
            raise err("temporal", "give either {year: Y} or {start: YYYY-MM-DD, end: YYYY-MM-DD}.")
        t = TemporalSpec(mode="year", year=d["year"])
        return _validated(err, t, "temporal.year")
    if set(d) != {"start", "end"}:
        raise err("temporal", "give either {year: Y} or {start: YYYY-MM-DD, end: YYYY-MM-DD}.")
    # YAML reads unquoted dates as datetime.date: back to ISO text
    return _validated(err, TemporalSpec.range(str(d["start"]), str(d["end"])), "temporal")


def _parse_models(err: _Err, v: Any) -> tuple[ExportModelRequest, ...]:
    from rs_embed_dask.core.registry import get_model_class, list_models

    out = []
    for i, m in enumerate(_list(err, v, "models")):
        path = f"models[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        m = _keys(err, m, path, ("name", "sensor", "fetch", "modality", "model_config"), required=("name",))
        name = m["name"]
        if not isinstance(name, str):
            raise err(f"{path}.name", f"expected a model name; known: {list_models()}.")
        try:
            cls = get_model_class(name)
        except ModelError as exc:
            raise err(f"{path}.name", f"unknown model {name!r}; known: {list_models(include_aliases=True)}.", ModelError) from exc
        cfg = m.get("model_config")
        if cfg is not None:
            allowed = sorted(getattr(cls, "config_keys", ()) or ())
            cfg = _keys(err, cfg, f"{path}.model_config", allowed)
            try:
                cls(cfg)
            except RSEmbedError as exc:
                raise err(f"{path}.model_config", str(exc), type(exc)) from exc
        out.append(
            ExportModelRequest(
                name=name,
                sensor=_spec(err, SensorSpec, m["sensor"], f"{path}.sensor") if m.get("sensor") is not None else None,
                fetch=_spec(err, FetchSpec, m["fetch"], f"{path}.fetch") if m.get("fetch") is not None else None,
                modality=m.get("modality"),
                model_config=cfg or None,
            )
        )
    return tuple(out)


def _parse_target(err: _Err, d: Any, base: Path) -> ExportTarget:
    d = _keys(err, d, "target", ("combined", "per_item", "names"))
    if ("combined" in d) == ("per_item" in d):
        raise err("target", "give exactly one of {combined: FILE} or {per_item: FOLDER}.")
    if "combined" in d:
        if "names" in d:
            raise err("target.names", "only applies to target.per_item.")
        return ExportTarget.combined(_path(err, d["combined"], "target.combined", base))
    names = d.get("names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise err("target.names", "expected a list of file names, one per ROI.")
    return ExportTarget.per_item(_path(err, d["per_item"], "target.per_item", base), names=names)


def _parse_config(err: _Err, d: Any) -> ExportConfig:
    names = [f.name for f in dataclasses.fields(ExportConfig) if f.name != "input_prep"]
    d = _keys(err, d or {}, "config", names)
    cfg = ExportConfig(**d)
    try:
        cfg.validate()
    except RSEmbedError as exc:
        # messages name the ExportConfig field: map them onto the job's field path
        text = str(exc)
        bad = next((n for n in names if f"ExportConfig.{n} " in text or (n == "format" and "format" in text)), "")
        if bad == "format":
            from rs_embed_dask.core.types import EXPORT_FORMATS

            raise err("config.format", f"unsupported format {d.get('format')!r}; allowed: {list(EXPORT_FORMATS)}.", ModelError) from exc
        raise err(f"config.{bad}" if bad else "config", text, type(exc)) from exc
    for k in ("save_inputs", "save_embeddings", "save_manifest", "fail_on_bad_input", "continue_on_error", "resume", "show_progress", "async_write"):
        if not isinstance(getattr(cfg, k), bool):
            raise err(f"config.{k}", f"expected true or false; got {getattr(cfg, k)!r}.")
    return cfg


def _parse_output(err: _Err, v: Any) -> OutputSpec:
    if v is None:
        return OutputSpec.pooled()
    if isinstance(v, str):
        v = {"mode": v}
    d = _keys(err, v, "output", ("mode", "pooling", "grid_orientation"), required=("mode",))
    try:
        return OutputSpec(**d)
    except RSEmbedError as exc:
        raise err("output", str(exc), type(exc)) from exc


def _parse_input_prep(err: _Err, v: Any) -> InputPrepSpec | str | None:
    if v is None or isinstance(v, InputPrepSpec):
        return v
    if isinstance(v, str):
        if v not in InputPrepSpec.MODES:
            raise err("input_prep", f"unknown mode {v!r}; allowed: {list(InputPrepSpec.MODES)}.", ModelError)
        return v
    spec = _spec(err, InputPrepSpec, v, "input_prep")
    if spec.mode not in InputPrepSpec.MODES:
        raise err("input_prep.mode", f"unknown mode {spec.mode!r}; allowed: {list(InputPrepSpec.MODES)}.", ModelError)
    return spec


def _parse_cluster(err: _Err, v: Any, base: Path) -> ClusterChoice:
    if v is None or v == "local":
        return ClusterChoice()
    if isinstance(v, str):
        raise err("cluster", f"expected 'local' or a mapping with one of {list(_CLUSTER_KINDS)}; got {v!r}.")
    d = _keys(err, v, "cluster", (*_CLUSTER_KINDS, "scale", "adapt"))
    kinds = [k for k in _CLUSTER_KINDS if k in d]
    if len(kinds) != 1:
        raise err("cluster", f"give exactly one of {list(_CLUSTER_KINDS)}; got {kinds}.")
    kind = kinds[0]
    extra = [k for k in ("scale", "adapt") if k in d]
    if extra and kind != "jobqueue":
        raise err(f"cluster.{extra[0]}", "only applies to cluster.jobqueue.")
    if kind == "local":
        local = _keys(err, d["local"] or {}, "cluster.local", _LOCAL_KEYS)
        for k, val in local.items():
            if k != "memory_limit" and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise err(f"cluster.local.{k}", f"expected an integer >= 1; got {val!r}.")
        return ClusterChoice(kind="local", local=local)
    if kind == "scheduler":
        addr = d["scheduler"]
        if not isinstance(addr, str) or ("://" not in addr and ":" not in addr):
            raise err("cluster.scheduler", f"expected an address like 'tcp://HOST:PORT'; got {addr!r}.")
        return ClusterChoice(kind="scheduler", address=addr)
    if kind == "scheduler_file":
        return ClusterChoice(kind="scheduler_file", address=_path(err, d["scheduler_file"], "cluster.scheduler_file", base))
    return jobqueue_choice(err, d["jobqueue"], d.get("scale"), d.get("adapt"), base)


def jobqueue_choice(err: Any, config: Any, scale: Any, adapt: Any, base: Path) -> ClusterChoice:
    """A checked jobqueue :class:`ClusterChoice` (the config file is read, nothing started)."""
    from rs_embed_dask.cluster import load_cluster_config

    if not isinstance(config, str):
        raise err("cluster.jobqueue", f"expected a cluster YAML file or name ('slurm', 'pbs'); got {config!r}.")
    p = Path(config).expanduser()
    ref = str(p if p.is_absolute() or p.suffix not in (".yaml", ".yml") else base / p)
    try:
        cfg = load_cluster_config(ref)
    except RSEmbedError as exc:
        raise err("cluster.jobqueue", str(exc)) from exc
    pools = [p.name for p in cfg.pools]
    scale_d = _keys(err, scale or {}, "cluster.scale", pools)
    for k, n in scale_d.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise err(f"cluster.scale.{k}", f"expected a job count >= 0; got {n!r}.")
    adapt_d = _keys(err, adapt or {}, "cluster.adapt", pools)
    bounds = {}
    for k, b in adapt_d.items():
        if not (isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in b) and 0 <= b[0] <= b[1]):
            raise err(f"cluster.adapt.{k}", f"expected [minimum, maximum] with 0 <= minimum <= maximum; got {b!r}.")
        bounds[k] = (int(b[0]), int(b[1]))
    if not scale_d and not bounds:
        raise err("cluster.jobqueue", f"give cluster.scale or cluster.adapt for the pools {pools}.")
    from rs_embed_dask.cluster.jobqueue import check_scheduler_tools

    try:
        check_scheduler_tools(cfg)  # no sbatch here: refused now, not after a 600 s wait for workers
    except RSEmbedError as exc:
        raise err("cluster.jobqueue", str(exc)) from exc
    return ClusterChoice(kind="jobqueue", address=cfg.path, scale=scale_d, adapt=bounds)


# -- entry points -----------------------------------------------------------------------------------
def parse_job(data: Any, *, source: str = "<job>", base: str | os.PathLike[str] | None = None) -> ExportJob:
    """Parse and validate a job given as a mapping (the loaded YAML).

    Parameters
    ----------
    data : Mapping
        The job.
    source : str
        Name used at the start of error messages (the file).
    base : path, optional
        Folder that relative paths are resolved against (default: the working directory).

    Returns
    -------
    ExportJob

    Raises
    ------
    SpecError, ModelError
        The first problem found, with the field path and the allowed values.
    """
    err = _Err(source)
    root = Path(base) if base is not None else Path.cwd()
    d = _keys(err, data, "", _TOP_KEYS, required=("spatials", "models", "target"))
    spatials = _parse_spatials(err, d["spatials"], root)
    temporal = _parse_temporal(err, d.get("temporal"))
    models = _parse_models(err, d["models"])
    target = _parse_target(err, d["target"], root)
    config = _parse_config(err, d.get("config"))
    backend, device = d.get("backend", "auto"), d.get("device", "auto")
    for k, val in (("backend", backend), ("device", device)):
        if not isinstance(val, str) or not val.strip():
            raise err(k, f"expected a name; got {val!r}.")
    if backend not in ("auto", "provider"):
        from rs_embed_dask.core.registry import list_providers

        if backend not in list_providers():
            raise err("backend", f"unknown provider {backend!r}; allowed: {['auto', *list_providers()]}.", ModelError)
    sensor = _spec(err, SensorSpec, d["sensor"], "sensor") if d.get("sensor") is not None else None
    fetch = _spec(err, FetchSpec, d["fetch"], "fetch") if d.get("fetch") is not None else None
    opts = d.get("provider_options") or {}
    if not isinstance(opts, Mapping):
        raise err("provider_options", f"expected a mapping of provider options; got {opts!r}.")
    job = ExportJob(
        spatials=spatials,
        temporal=temporal,
        models=models,
        target=target,
        config=config,
        backend=backend,
        device=device,
        output=_parse_output(err, d.get("output")),
        sensor=sensor,
        fetch=fetch,
        modality=d.get("modality"),
        input_prep=_parse_input_prep(err, d.get("input_prep")),
        provider_options=dict(opts),
        cluster=_parse_cluster(err, d.get("cluster"), root),
        source=source,
    )
    _check_request(err, job)
    return job


def _field_of(default: str, msg: str) -> tuple[str, str]:
    """The field a plan error is about: an ROI's ``spatials[i]`` when it names one, else ``default``."""
    head, sep, rest = msg.partition(": ")
    if sep and head.startswith("spatials[") and head.endswith("]") and head[9:-1].isdigit():
        return head, rest
    return default, msg


def _check_request(err: _Err, job: ExportJob) -> None:
    """Run the export's own validation on the whole request (first ROIs only, nothing submitted)."""
    from rs_embed_dask.export.plan import build_plan

    try:
        first = list(itertools.islice(iter(job.spatials.open()), 2))
    except RSEmbedError as exc:
        raise err("spatials", str(exc), type(exc)) from exc
    except (OSError, ValueError) as exc:
        raise err("spatials", f"could not be read: {exc}") from exc
    if not first:
        raise err("spatials", "no ROIs (the file or region is empty).")
    kwargs = job.export_kwargs(spatials=first)
    for i, m in enumerate(job.models):
        try:
            build_plan(**{**kwargs, "models": [m]})
        except (RSEmbedError, TypeError) as exc:
            raise err(*_field_of(f"models[{i}]", str(exc)), type(exc)) from exc
    try:
        plan = build_plan(**kwargs)
    except (RSEmbedError, TypeError) as exc:
        raise err(*_field_of("", str(exc)), type(exc)) from exc
    from rs_embed_dask.validation.preflight import preflight_export

    try:  # target, weights, credentials; the device only where the workers run here
        preflight_export(plan, local=job.cluster.kind == "local")
    except RSEmbedError as exc:
        raise err("", str(exc), type(exc)) from exc


def load_job(path: str | os.PathLike[str]) -> ExportJob:
    """Read, parse and validate a YAML job file.

    Relative paths inside it are resolved against the file's folder.

    Raises
    ------
    SpecError, ModelError
        Unreadable YAML or an invalid job (see :func:`parse_job`).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"job file {str(p)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from exc
    return parse_job(data, source=str(p), base=p.resolve().parent)
