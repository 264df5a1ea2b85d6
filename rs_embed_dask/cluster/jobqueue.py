"""dask-jobqueue pools: one scheduler, one job template per pool (see :class:`JobQueuePools`).

Public through :mod:`rs_embed_dask.cluster`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import SpecCluster

from rs_embed_dask.cluster.client import print_dashboard
from rs_embed_dask.core.errors import SpecError

__all__ = [
    "ClusterConfig",
    "JobQueuePools",
    "PoolConfig",
    "check_scheduler_tools",
    "job_script",
    "load_cluster_config",
    "pbs_cluster",
    "slurm_cluster",
]

# -- dask-jobqueue pools ----------------------------------------------------------------------------
_KINDS = ("slurm", "pbs", "local")
_RESOURCES = ("gpu", "io")
#: where config names (``slurm_cluster("slurm")``) are looked up, after $RS_EMBED_DASK_CLUSTER_DIR
_REPO_CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"


def _job_class(kind: str) -> Any:
    if kind == "slurm":
        from dask_jobqueue.slurm import SLURMJob

        return SLURMJob
    if kind == "pbs":
        from dask_jobqueue.pbs import PBSJob

        return PBSJob
    # runs the job script as a local process: the same machinery without a batch system
    from dask_jobqueue.local import LocalJob

    return LocalJob


def _job_keys(kind: str) -> tuple[str, ...]:
    """The YAML keys a pool of ``kind`` accepts (the job class's keywords, hyphenated)."""
    import inspect

    from dask_jobqueue.core import Job

    names: set[str] = set()
    for cls in (Job, _job_class(kind)):
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
    names -= {"self", "scheduler", "name", "config_name", "job_name", "security", "protocol"}
    names.add("name")  # the batch job's name (``job_name`` of the job class)
    return tuple(sorted(n.replace("_", "-") for n in names))


def _resource_of(args: list[str]) -> tuple[str, float] | None:
    """``("gpu", 1.0)`` from worker arguments ``[..., "--resources", "gpu=1", ...]``."""
    for i, a in enumerate(args):
        value = None
        if a == "--resources" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--resources="):
            value = a.split("=", 1)[1]
        if value is not None:
            for part in re.split(r"[ ,]+", value.strip().strip("\"'")):
                k, _, v = part.partition("=")
                if k in _RESOURCES:
                    try:
                        return k, float(v)
                    except ValueError:
                        return None
    return None


@dataclass(frozen=True)
class PoolConfig:
    """One kind of batch job: the job template of a pool.

    Attributes
    ----------
    name : str
        Pool name (``"gpu"``, ``"io"``, ...), the prefix of its worker names.
    resource : {"gpu", "io"}
        The resource its workers advertise (from ``--resources`` in ``worker-extra-args``).
    slots : float
        Amount of ``resource`` per worker: concurrent tasks of that kind.
    job_kwargs : dict
        Keywords of the dask-jobqueue job class (underscored YAML keys).
    """

    name: str
    resource: str
    slots: float
    job_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    """A jobqueue cluster file: the batch system, scheduler options and pools.

    Attributes
    ----------
    kind : {"slurm", "pbs", "local"}
        The batch system (``local`` runs job scripts as local processes, for tests).
    pools : tuple of PoolConfig
        The job templates, one per pool.
    scheduler_options : dict
        Keywords of the ``distributed.Scheduler`` started on this host.
    path : str
        The file it was read from.
    """

    kind: str
    pools: tuple[PoolConfig, ...]
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""

    def pool(self, name: str) -> PoolConfig:
        """The pool called ``name``."""
        for p in self.pools:
            if p.name == name:
                return p
        raise SpecError(f"{self.path}: no pool {name!r}; pools are {[p.name for p in self.pools]}.")


def _find_config(path_or_name: str | os.PathLike[str]) -> Path:
    p = Path(os.fspath(path_or_name)).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SpecError(f"cluster config file {str(p)!r} does not exist.")
        return p
    dirs = [Path(d) for d in os.environ.get("RS_EMBED_DASK_CLUSTER_DIR", "").split(os.pathsep) if d]
    dirs.append(_REPO_CLUSTER_DIR)
    for d in dirs:
        for ext in (".yaml", ".yml"):
            if (d / f"{p.name}{ext}").is_file():
                return d / f"{p.name}{ext}"
    known = sorted({f.stem for d in dirs if d.is_dir() for f in d.glob("*.y*ml")})
    raise SpecError(
        f"cluster config {str(path_or_name)!r} is neither a YAML file nor a known name; "
        f"known names: {known} (folders searched: $RS_EMBED_DASK_CLUSTER_DIR, {_REPO_CLUSTER_DIR})."
    )


def load_cluster_config(path_or_name: str | os.PathLike[str]) -> ClusterConfig:
    """Read and check a jobqueue cluster file.

    Parameters
    ----------
    path_or_name : str or path
        A YAML file, or a name (``"slurm"``, ``"pbs"``) looked up in
        ``$RS_EMBED_DASK_CLUSTER_DIR`` and the repository's ``cluster/`` folder.

    Returns
    -------
    ClusterConfig

    Raises
    ------
    SpecError
        Unknown file or name, unknown keys (the message names the key path
        and lists the allowed keys), or a pool without ``--resources gpu=..``
        or ``io=..`` in its ``worker-extra-args``.

    Notes
    -----
    The file has the keys ``kind`` (``slurm``, ``pbs`` or ``local``),
    ``scheduler-options`` (optional) and ``pools``: a mapping of pool name
    to the keys of the ``jobqueue.<kind>`` section of dask-jobqueue's own
    configuration (``cores``, ``memory``, ``processes``, ``queue``,
    ``walltime``, ``job-extra-directives``, ``worker-extra-args``, ...).
    Keys a pool leaves out take dask-jobqueue's configured defaults.
    """
    import yaml

    path = _find_config(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping with keys 'kind', 'pools', 'scheduler-options'.")
    unknown = sorted(set(raw) - {"kind", "pools", "scheduler-options"})
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown}; allowed: ['kind', 'pools', 'scheduler-options'].")
    kind = raw.get("kind")
    if kind not in _KINDS:
        raise SpecError(f"{path}: kind must be one of {list(_KINDS)}; got {kind!r}.")
    sched = raw.get("scheduler-options") or {}
    if not isinstance(sched, dict):
        raise SpecError(f"{path}: scheduler-options must be a mapping of Scheduler keywords.")
    pools_raw = raw.get("pools")
    if not isinstance(pools_raw, dict) or not pools_raw:
        raise SpecError(f"{path}: pools must be a non-empty mapping of pool name to job settings.")
    allowed = _job_keys(kind)
    pools = []
    for name, spec in pools_raw.items():
        where = f"{path}: pools.{name}"
        if not isinstance(spec, dict):
            raise SpecError(f"{where} must be a mapping of job settings; allowed keys: {list(allowed)}.")
        bad = sorted(set(spec) - set(allowed))
        if bad:
            raise SpecError(f"{where}.{bad[0]}: unknown key; allowed keys: {list(allowed)}.")
        kwargs = {("job_name" if k == "name" else k.replace("-", "_")): v for k, v in spec.items()}
        args = [str(a) for a in (kwargs.get("worker_extra_args") or [])]
        res = _resource_of(args)
        if res is None:
            raise SpecError(
                f"{where}.worker-extra-args must advertise a resource: '--resources', 'gpu=1' "
                f"or '--resources', 'io=N' (resources {list(_RESOURCES)}); got {args}."
            )
        pools.append(PoolConfig(name=str(name), resource=res[0], slots=res[1], job_kwargs=kwargs))
    return ClusterConfig(kind=kind, pools=tuple(pools), scheduler_options=dict(sched), path=str(path))


def check_scheduler_tools(config: ClusterConfig) -> None:
    """Refuse a batch system whose commands are not on ``PATH`` here (e.g. ``sbatch`` for SLURM).

    Checked before the scheduler starts: without the commands no job could
    be submitted and the export would wait for workers that never come.

    Raises
    ------
    SpecError
        Naming the missing commands, the cluster file and where to run instead.
    """
    if config.kind == "local":
        return
    job = _job_class(config.kind)
    tools = [t for t in (getattr(job, "submit_command", None), getattr(job, "cancel_command", None)) if t]
    missing = [t for t in tools if shutil.which(str(t).split()[0]) is None]
    if missing:
        raise SpecError(
            f"{config.path}: kind {config.kind!r} submits jobs with {tools}, but {missing} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH on this machine. Run the export on a "
            f"login node of the {config.kind.upper()} cluster (where {missing[0]!r} exists), or choose "
            "another cluster (cluster: local, or cluster: {scheduler: ADDRESS})."
        )


def job_script(config: ClusterConfig | str | os.PathLike[str], pool: str, *, scheduler: str | None = None) -> str:
    """The batch script a pool submits, without starting anything.

    Parameters
    ----------
    config : ClusterConfig, path or name
        The cluster file.
    pool : str
        Pool name.
    scheduler : str, optional
        Scheduler address written into the script (a placeholder by default).
    """
    cfg = config if isinstance(config, ClusterConfig) else load_cluster_config(config)
    p = cfg.pool(pool)
    cls = _job_class(cfg.kind)
    addr = scheduler or "tcp://<scheduler-address>:8786"
    return str(cls(addr, name=f"{p.name}-dummy", config_name=cfg.kind, **dict(p.job_kwargs)).job_script())


class JobQueuePools(SpecCluster):
    """One scheduler on this host and two pools of batch jobs (GPU and CPU/IO).

    A dask-jobqueue cluster has one job template, so it cannot hold a GPU
    partition and a CPU partition at once (dask/dask-jobqueue#103, #378).
    This cluster is the ``SpecCluster`` underneath dask-jobqueue with one
    job template per pool: each pool submits dask-jobqueue's own job class
    (``SLURMJob``, ``PBSJob``) with its own settings, and all workers join
    the one scheduler, so the engine sees ``io`` and ``gpu`` workers side by
    side.  Two separate jobqueue clusters would start two schedulers, and
    an export runs on one.

    Parameters
    ----------
    config : ClusterConfig
        The kind of batch system and the pools (see :func:`load_cluster_config`).
    scheduler_options : dict, optional
        Keywords of the scheduler, over the file's ``scheduler-options``.
    keep_alive : float, default 30
        Every so many seconds, resubmit the jobs of each pool that have ended
        (walltime, ``--lifetime``) so a pool keeps its size during a long
        export; and apply :meth:`adapt` targets.  ``0`` turns this off.
    **kwargs
        Passed to ``distributed.SpecCluster`` (``asynchronous``, ``loop``, ...).

    Notes
    -----
    Scale each pool with ``scale(gpu=4, io=2)`` or let it follow the work
    with ``adapt(gpu=(1, 8), io=(1, 4))``.  Keep at least one job per pool
    while an export runs: the engine restricts tasks to ``io`` and ``gpu``
    workers only when the cluster has them when the export starts.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        scheduler_options: Mapping[str, Any] | None = None,
        keep_alive: float = 30.0,
        **kwargs: Any,
    ) -> None:
        from distributed import Scheduler

        self.config = config
        self._job_cls = _job_class(config.kind)
        self._adapt_bounds: dict[str, tuple[int, int]] = {}
        self._over_target: dict[str, int] = {}
        self._keep_alive = float(keep_alive)
        self._callback: Any = None
        options: dict[str, Any] = {"dashboard_address": ":8787"}
        options.update(config.scheduler_options)
        options.update(scheduler_options or {})
        kwargs.setdefault("silence_logs", "error")
        kwargs.setdefault("name", f"rs-embed-dask-{config.kind}")
        super().__init__(scheduler={"cls": Scheduler, "options": options}, **kwargs)

    # -- the pools ----------------------------------------------------------------------------------
    @property
    def pools(self) -> dict[str, PoolConfig]:
        """The pools by name."""
        return {p.name: p for p in self.config.pools}

    def _pool_of(self, worker_name: Any) -> str | None:
        prefix = str(worker_name).rsplit("-", 1)[0]
        return prefix if prefix in self.pools else None

    def pool_workers(self, pool: str) -> list[str]:
        """Names of the jobs planned for ``pool`` (submitted or not yet)."""
        self.config.pool(pool)
        return sorted((str(n) for n in self.worker_spec if self._pool_of(n) == pool), key=_name_order)

    def _spec(self, pool: PoolConfig) -> dict[str, Any]:
        opts = {"config_name": self.config.kind, **dict(pool.job_kwargs)}
        spec: dict[str, Any] = {"cls": self._job_cls, "options": opts}
        processes = opts.get("processes")
        if isinstance(processes, int) and processes > 1:
            spec["group"] = [f"-{i}" for i in range(processes)]
        return spec

    def _set_pool_size(self, pool: str, n: int) -> None:
        p = self.config.pool(pool)
        names = self.pool_workers(pool)
        if len(names) > n:
            running = {str(v["name"]) for v in self.scheduler_info.get("workers", {}).values()}
            # drop jobs that never started first, then the newest
            order = sorted(names, key=lambda w: (w in running, _name_order(w)))
            for w in order[: len(names) - n]:
                del self.worker_spec[w]
        while len(names) < n:
            self._i += 1
            name = f"{pool}-{self._i}"
            if name not in self.worker_spec:
                self.worker_spec[name] = self._spec(p)
                names.append(name)

    def scale(self, n: int | None = None, memory: Any = None, cores: Any = None, **pools: int) -> Any:
        """Set the number of jobs of each pool, e.g. ``scale(gpu=4, io=2)``.

        ``scale(0)`` (as ``SpecCluster.close`` calls it) empties every pool; any
        other total is ambiguous between the pools and raises :class:`SpecError`.
        """
        if memory is not None or cores is not None or (n is not None and n != 0):
            raise SpecError(
                f"JobQueuePools.scale takes a job count per pool, e.g. scale(gpu=4, io=2); "
                f"pools are {sorted(self.pools)}."
            )
        if n == 0:
            pools = {name: 0 for name in self.pools}
        for pool, count in pools.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SpecError(f"scale({pool}=...) must be an integer >= 0; got {count!r}.")
            self._set_pool_size(pool, count)
            self._adapt_bounds.pop(pool, None)
        self._call_soon(self._correct_state)
        self._ensure_callback()
        return None

    def adapt(self, *args: Any, interval: float | None = None, **pools: tuple[int, int]) -> None:  # type: ignore[override]
        """Let pools follow the work, e.g. ``adapt(gpu=(1, 8), io=(1, 4))``.

        A pool's target is the number of unfinished tasks that need its
        resource divided by each job's amount of it, within ``(minimum,
        maximum)``.  Idle jobs above the target are retired after three
        checks in a row.

        Parameters
        ----------
        interval : float, optional
            Seconds between checks (default ``keep_alive``, or 5 when that is 0).
        **pools : tuple of int
            ``(minimum, maximum)`` jobs per pool.
        """
        if args:
            raise SpecError(f"adapt() takes (minimum, maximum) per pool, e.g. adapt(gpu=(1, 8)); pools are {sorted(self.pools)}.")
        for pool, bounds in pools.items():
            self.config.pool(pool)
            try:
                lo, hi = (int(b) for b in bounds)
            except (TypeError, ValueError) as exc:
                raise SpecError(f"adapt({pool}=...) must be (minimum, maximum); got {bounds!r}.") from exc
            if not 0 <= lo <= hi:
                raise SpecError(f"adapt({pool}=...) needs 0 <= minimum <= maximum; got {bounds!r}.")
            self._adapt_bounds[pool] = (lo, hi)
            if len(self.pool_workers(pool)) < lo:
                self._set_pool_size(pool, lo)
        if interval is not None:
            self._keep_alive = float(interval)
        elif self._keep_alive <= 0:
            self._keep_alive = 5.0
        self._call_soon(self._correct_state)
        self._ensure_callback()

    def adapt_targets(self) -> dict[str, int]:
        """The job count each adapted pool would have now (from the scheduler's tasks)."""
        demand = dict.fromkeys(_RESOURCES, 0)
        sched = self.scheduler
        for ts in list(getattr(sched, "tasks", {}).values()):
            if ts.state in ("released", "memory", "erred", "forgotten") or not ts.resource_restrictions:
                continue
            for r in ts.resource_restrictions:
                if r in demand:
                    demand[r] += 1
        out = {}
        for pool, (lo, hi) in self._adapt_bounds.items():
            p = self.config.pool(pool)
            need = math.ceil(demand[p.resource] / max(p.slots, 1.0))
            out[pool] = min(hi, max(lo, need))
        return out

    def _call_soon(self, fn: Any) -> None:
        loop = self.loop
        assert loop is not None  # set by Cluster.__init__
        loop.add_callback(fn)

    def _ensure_callback(self) -> None:
        from tornado.ioloop import PeriodicCallback

        if self._callback is None and self._keep_alive > 0:
            self._callback = PeriodicCallback(self._tick, self._keep_alive * 1000)
            self._call_soon(self._callback.start)

    async def _tick(self) -> None:
        if self.status.name not in ("running", "created"):
            return
        busy = {
            str(w.name)
            for w in getattr(self.scheduler, "workers", {}).values()
            if getattr(w, "processing", None)
        }
        for pool, target in self.adapt_targets().items():
            names = self.pool_workers(pool)
            if target > len(names):
                self._over_target[pool] = 0
                self._set_pool_size(pool, target)
            elif target < len(names):
                self._over_target[pool] = self._over_target.get(pool, 0) + 1
                if self._over_target[pool] >= 3:
                    idle = [w for w in reversed(names) if w not in busy][: len(names) - target]
                    if idle and self.scheduler_comm is not None:
                        await self.scheduler_comm.retire_workers(names=idle, close_workers=True)
                        for w in idle:
                            self.worker_spec.pop(w, None)
                    self._over_target[pool] = 0
            else:
                self._over_target[pool] = 0
        # submits the jobs of the spec that are not running: new ones and those that ended
        await self._correct_state()

    async def _close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        await super()._close()

    def job_script(self, pool: str) -> str:
        """The batch script ``pool`` submits, with this cluster's scheduler address."""
        addr = getattr(self.scheduler, "address", None) or None
        return job_script(self.config, pool, scheduler=addr)


def _name_order(name: str) -> tuple[str, int]:
    head, _, tail = str(name).rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (str(name), -1)


def _jobqueue_cluster(
    kind: str,
    config: str | os.PathLike[str] | ClusterConfig,
    *,
    scale: Mapping[str, int] | None,
    adapt: Mapping[str, tuple[int, int]] | None,
    scheduler_options: Mapping[str, Any] | None,
    keep_alive: float,
    verbose: bool,
) -> JobQueuePools:
    cfg = config if isinstance(config, ClusterConfig) else load_cluster_config(config)
    if cfg.kind != kind and cfg.kind != "local":
        raise SpecError(f"{cfg.path}: kind is {cfg.kind!r}; {kind}_cluster() needs kind: {kind}.")
    check_scheduler_tools(cfg)
    cluster = JobQueuePools(cfg, scheduler_options=scheduler_options, keep_alive=keep_alive)
    try:
        if scale:
            cluster.scale(**scale)
        if adapt:
            cluster.adapt(**dict[str, Any](adapt))
    except Exception:
        cluster.close()
        raise
    if verbose:
        print_dashboard(cluster, f"{kind} cluster")
    return cluster


def slurm_cluster(
    config: str | os.PathLike[str] | ClusterConfig = "slurm",
    *,
    scale: Mapping[str, int] | None = None,
    adapt: Mapping[str, tuple[int, int]] | None = None,
    scheduler_options: Mapping[str, Any] | None = None,
    keep_alive: float = 30.0,
    verbose: bool = True,
) -> JobQueuePools:
    """A SLURM cluster with a GPU pool and a CPU/IO pool, from a YAML file.

    Parameters
    ----------
    config : str, path or ClusterConfig, default "slurm"
        A cluster file, or a name looked up in ``$RS_EMBED_DASK_CLUSTER_DIR``
        and the repository's ``cluster/`` folder (``cluster/slurm.yaml``).
    scale : dict, optional
        Jobs per pool to submit now, e.g. ``{"gpu": 4, "io": 2}``.
    adapt : dict, optional
        ``(minimum, maximum)`` jobs per pool, e.g. ``{"gpu": (1, 8)}``.
    scheduler_options : dict, optional
        Scheduler keywords over the file's (``{"dashboard_address": ":8788"}``).
    keep_alive : float, default 30
        Seconds between resubmissions of ended jobs (see :class:`JobQueuePools`).
    verbose : bool, default True
        Print the scheduler address and the dashboard link.

    Returns
    -------
    JobQueuePools
        Use it with ``distributed.Client(cluster)``.

    Examples
    --------
    >>> cluster = slurm_cluster("cluster/slurm.yaml", scale={"gpu": 4, "io": 2})  # doctest: +SKIP
    >>> print(cluster.job_script("gpu"))  # doctest: +SKIP
    """
    return _jobqueue_cluster(
        "slurm", config, scale=scale, adapt=adapt, scheduler_options=scheduler_options,
        keep_alive=keep_alive, verbose=verbose,
    )  # fmt: skip


def pbs_cluster(
    config: str | os.PathLike[str] | ClusterConfig = "pbs",
    *,
    scale: Mapping[str, int] | None = None,
    adapt: Mapping[str, tuple[int, int]] | None = None,
    scheduler_options: Mapping[str, Any] | None = None,
    keep_alive: float = 30.0,
    verbose: bool = True,
) -> JobQueuePools:
    """A PBS cluster with a GPU pool and a CPU/IO pool, from a YAML file.

    The parameters are those of :func:`slurm_cluster`; the default file is
    ``cluster/pbs.yaml``.
    """
    return _jobqueue_cluster(
        "pbs", config, scale=scale, adapt=adapt, scheduler_options=scheduler_options,
        keep_alive=keep_alive, verbose=verbose,
    )  # fmt: skip
