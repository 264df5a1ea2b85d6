"""The ``rs-embed-dask`` command line (also ``python -m rs_embed_dask``).

Commands: ``export JOB.yaml``, ``models``, ``describe MODEL``, ``inspect EXPORT``,
``ls DIR``, ``demo`` and ``cluster local|slurm|pbs`` (:mod:`.commands`), and
rs-embed's ``export-npz`` and ``inspect-gee`` with its flags
(:mod:`.rs_embed_compat`); ``--version`` prints ``rs-embed-dask <version>``.
Exit codes (:data:`EXIT_CODES_HELP`, printed by ``--help``): 0 success, 1 an
export with failed or partial models or a provider error, 2 bad input (the
job file, arguments, a model name, a missing path).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rs_embed_dask.cli import commands, rs_embed_compat
from rs_embed_dask.cli.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES_HELP", "EXIT_FAILED", "EXIT_OK", "build_parser", "main"]

#: The exit codes, as ``--help`` prints them (README's CLI section says the same).
EXIT_CODES_HELP = """exit codes:
  0  success (export: every model ok; inspect: the export's status is ok)
  1  an export with failed or partial models (export, inspect), or a provider error (no
     data, credentials refused); rs-embed's export-npz and inspect-gee keep rs-embed's
     codes: 0 once the manifest is printed (read its status), 1 for their own argument
     checks
  2  bad input: the job file, an argument, a model name, or a path that does not exist
     (argparse usage errors exit 2 too)"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rs-embed-dask``.

    Returns
    -------
    argparse.ArgumentParser
        One sub-command per command; each sets ``func``, the command to run.
    """
    from rs_embed_dask import __version__

    p = argparse.ArgumentParser(
        prog="rs-embed-dask",
        description="Remote-sensing embeddings on Dask.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"rs-embed-dask {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "models",
        help="list the models: type, dims, sensor, extra needed, weights found here",
        description="List the registered models as a table: type (on the fly / precomputed), embedding dims "
        "(pooled; grid when different), sensor and bands, the optional extra it needs and whether it is "
        "installed, and whether its default weights are found locally (offline: nothing is downloaded).",
    )
    m.add_argument("--aliases", action="store_true", help="include aliases")
    m.add_argument("--json", action="store_true", help="print the rows as JSON")
    m.add_argument("--names", action="store_true", help="print the names only, one per line")
    m.add_argument("--no-weights", action="store_true", help="skip the local weights check")
    m.set_defaults(func=commands.cmd_models)
    d = sub.add_parser("describe", help="describe one model (bands, scale, dims, outputs)")
    d.add_argument("model")
    d.set_defaults(func=commands.cmd_describe)
    demo = sub.add_parser("demo", help="run the demo export (local cluster, synthetic provider, rcf)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--side", type=int, default=8, help="ROIs per side of the demo grid (default 8)")
    demo.add_argument("--buffer-m", type=float, default=320.0, help="ROI half side in metres")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=commands.cmd_demo)

    e = sub.add_parser(
        "export",
        help="run an export described by a YAML job file",
        description="Run an export described by a YAML job file (see docs/hpc.md). The whole job is "
        "validated before any cluster is started. Exit code 0: all models ok; 1: failed or partial "
        "models; 2: bad input.",
    )
    e.add_argument("job", help="the YAML job file")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run on an embedded local cluster (ignore the job's cluster)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="connect to a running scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument("--scheduler-file", metavar="PATH", help="connect to the scheduler that wrote PATH")
    where.add_argument("--jobqueue", metavar="CONFIG", help="start a dask-jobqueue cluster from a cluster YAML (or 'slurm'/'pbs')")
    e.add_argument("--scale", action="append", metavar="POOL=N", help="jobs per pool with --jobqueue (repeatable)")
    e.add_argument("--adapt", action="append", metavar="POOL=MIN:MAX", help="adaptive pool with --jobqueue (repeatable)")
    e.add_argument("--resume", action="store_true", help="skip chunks already in the working store (config.resume)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--wait", type=float, default=600.0, metavar="SECONDS", help="how long to wait for workers (default 600)")
    e.set_defaults(func=commands.cmd_export)

    i = sub.add_parser(
        "inspect",
        help="summarise an export: models, statuses, shapes, failures",
        description="Summarise an export: layout, items, per model its status, ok and failed counts and "
        "shapes, and the first error of each model, printed whole.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("export", help="a combined file (.npz/.nc/.zarr), its .json manifest, or a per-item folder")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=commands.cmd_inspect)

    ls = sub.add_parser(
        "ls",
        help="list the exports in a folder: layout, items, models, status, size",
        description="List the exports in a folder (combined .npz/.nc with their .json manifest, .zarr stores, "
        "per-item folders, and the .work.zarr working stores of unfinished runs) with their layout, items, "
        "models, status and size on disk. Only manifests are read, never the arrays.",
    )
    ls.add_argument("folder", help="the folder to list")
    ls.add_argument("--json", action="store_true", help="print the rows as JSON")
    ls.set_defaults(func=commands.cmd_ls)

    c = sub.add_parser(
        "cluster",
        help="start a cluster, print its address and dashboard, run until Ctrl-C",
        description="Start a cluster with an IO pool and an inference pool, print the scheduler address "
        "and the dashboard link, and keep it running until Ctrl-C. Exports connect with --scheduler.",
    )
    c.add_argument("kind", choices=("local", "slurm", "pbs"))
    c.add_argument("--config", help="cluster YAML for slurm/pbs (default: the name of the kind in cluster/)")
    c.add_argument("--scale", action="append", metavar="POOL=N", help="jobs per pool for slurm/pbs (repeatable)")
    c.add_argument("--adapt", action="append", metavar="POOL=MIN:MAX", help="adaptive pool for slurm/pbs (repeatable)")
    c.add_argument("--print-job-scripts", action="store_true", help="print each pool's batch script")
    c.add_argument("--io-workers", type=int, default=1, help="local: IO worker processes (default 1)")
    c.add_argument("--io-threads", type=int, default=8, help="local: fetch threads per IO worker (default 8)")
    c.add_argument("--inference-workers", type=int, default=None, help="local: inference workers (default one per GPU)")
    c.add_argument("--dashboard-address", default=":8787", help="local: dashboard address (default :8787)")
    c.add_argument("--scheduler-file", metavar="PATH", help="also write the scheduler's address to PATH")
    c.set_defaults(func=commands.cmd_cluster)

    rs_embed_compat.add_export_npz_parser(sub)
    rs_embed_compat.add_inspect_gee_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 success, 1 a failed or partial export (or a provider
        error), 2 bad input.  argparse usage errors and rs-embed's
        ``SystemExit`` messages exit through :class:`SystemExit`.
    """
    from rs_embed_dask.core.errors import RSEmbedError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RSEmbedError, FileNotFoundError) as exc:
        from rs_embed_dask.core.errors import ProviderError

        print(f"rs-embed-dask: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, ProviderError) else EXIT_BAD_INPUT
