"""rs-embed's two commands, ``export-npz`` and ``inspect-gee``, with its flags, defaults and errors.

The flags, defaults and messages follow ``rs-embed`` 0.3.1's command line:

* ``export-npz`` exports one ROI for one or more models into a combined
  ``.npz`` (plus its ``.json`` manifest) and prints the manifest as JSON;
* ``inspect-gee`` fetches one patch (no model) and prints the
  :func:`~rs_embed_dask.inspect_api.inspect_gee_patch` dict as JSON.

Additions: both commands run on any provider (``--backend synthetic``; for
``inspect-gee`` the default stays ``gee``) and take ``--provider-option
KEY=VALUE``; ``export-npz`` takes ``--scheduler ADDRESS`` to run on a running
cluster.  Informational lines (the dashboard link of the embedded cluster)
go to stderr, so stdout holds only the JSON.

Differences: a malformed ``--value-range`` is an argparse usage error
(exit 2, rs-embed's message) where rs-embed lets the
:class:`argparse.ArgumentTypeError` escape as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

__all__ = [
    "add_export_npz_parser",
    "add_inspect_gee_parser",
    "cmd_export_npz",
    "cmd_inspect_gee",
    "parse_bands",
    "parse_models",
    "parse_provider_option",
    "parse_value_range",
]


# -- argument types (rs-embed's messages) -------------------------------------------------------


def parse_bands(s: str) -> tuple[str, ...]:
    """``"B4,B3,B2"`` -> ``("B4", "B3", "B2")``; :class:`argparse.ArgumentTypeError` when empty."""
    parts = tuple(p.strip() for p in s.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError("--bands must be a comma-separated list, e.g. 'B4,B3,B2'")
    return parts


def parse_models(s: str) -> list[str]:
    """``"rcf,remoteclip"`` -> ``["rcf", "remoteclip"]``; :class:`argparse.ArgumentTypeError` when empty."""
    parts = [p.strip() for p in s.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("--models must be a comma-separated list, e.g. 'remoteclip,prithvi'")
    return parts


def parse_value_range(s: str | None) -> tuple[float, float] | None:
    """``"lo,hi"`` -> ``(lo, hi)``; ``None`` for ``None``/``""``.

    Raises
    ------
    argparse.ArgumentTypeError
        Not two comma-separated floats.
    """
    if not s:
        return None
    try:
        lo, hi = s.split(",")
        return (float(lo), float(hi))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("--value-range must be 'lo,hi' (floats)") from exc


def parse_provider_option(s: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, value)``, the value read as YAML (``3``, ``0.2``, ``true``, text).

    Raises
    ------
    argparse.ArgumentTypeError
        No ``=`` or an empty key.
    """
    import yaml

    key, sep, raw = s.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"--provider-option expects KEY=VALUE (e.g. latency_s=0.2); got {s!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# -- shared argument groups ---------------------------------------------------------------------


def _add_spatial_args(p: argparse.ArgumentParser) -> None:
    sp = p.add_mutually_exclusive_group(required=True)
    sp.add_argument(
        "--bbox", nargs=4, type=float, metavar=("MINLON", "MINLAT", "MAXLON", "MAXLAT"), help="EPSG:4326 bbox"
    )
    sp.add_argument(
        "--pointbuffer",
        nargs=3,
        type=float,
        metavar=("LON", "LAT", "BUFFER_M"),
        help="EPSG:4326 pointbuffer (meters)",
    )


def _add_temporal_args(p: argparse.ArgumentParser) -> None:
    tg = p.add_mutually_exclusive_group(required=False)
    tg.add_argument("--year", type=int, help="Year mode (will use [year-01-01, year+1-01-01)")
    tg.add_argument(
        "--range", nargs=2, metavar=("START", "END"), help="Date range, e.g. 2022-06-01 2022-09-01"
    )


def _add_sensor_args(p: argparse.ArgumentParser, *, what: str) -> None:
    p.add_argument("--scale-m", type=int, default=10, help=f"{what}pixel scale (meters, default 10)")
    p.add_argument("--cloudy-pct", type=int, default=30, help=f"{what}cloud filter percentage (default 30)")
    p.add_argument("--fill-value", type=float, default=0.0, help=f"{what}fill value (default 0.0)")
    p.add_argument(
        "--composite",
        choices=["median", "mosaic"],
        default="median",
        help=f"{what}composite (default median)",
    )


def _add_provider_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--provider-option",
        action="append",
        type=parse_provider_option,
        default=[],
        metavar="KEY=VALUE",
        help="provider option, the value read as YAML (repeatable; e.g. latency_s=0.2 for synthetic)",
    )


def _spatial(args: argparse.Namespace) -> Any:
    from rs_embed_dask import BBox, PointBuffer

    if args.bbox is not None:
        return BBox(*args.bbox)
    lon, lat, buf = args.pointbuffer
    return PointBuffer(lon=lon, lat=lat, buffer_m=buf)


def _temporal(args: argparse.Namespace) -> Any:
    from rs_embed_dask import TemporalSpec

    if args.year is not None:
        return TemporalSpec(mode="year", year=int(args.year))  # = TemporalSpec.year(Y)
    if args.range is not None:
        return TemporalSpec.range(args.range[0], args.range[1])
    return None


def _sensor(args: argparse.Namespace, *, save_dir: str | None = None) -> Any:
    from rs_embed_dask import SensorSpec

    return SensorSpec(
        collection=args.collection,
        bands=args.bands,
        scale_m=args.scale_m,
        cloudy_pct=args.cloudy_pct,
        fill_value=args.fill_value,
        composite=args.composite,
        check_input=True,
        check_raise=False,
        check_save_dir=save_dir,
    )


def _json_default(obj: Any) -> Any:
    """What JSON cannot take: numpy scalars/arrays as lists/numbers, the rest as text."""
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2, default=_json_default)
    sys.stdout.write("\n")
    sys.stdout.flush()


# -- export-npz ---------------------------------------------------------------------------------


def add_export_npz_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``export-npz`` (rs-embed's flags and defaults, plus ``--provider-option``/``--scheduler``)."""
    ex = sub.add_parser(
        "export-npz",
        help="export inputs + embeddings of one ROI for one or more models into a .npz plus a JSON manifest",
        description="Export the inputs and embeddings of one ROI for one or more models into a combined "
        ".npz plus its JSON manifest, and print the manifest as JSON (rs-embed's export-npz). Runs on "
        "an embedded local cluster unless --scheduler is given.",
    )
    ex.add_argument("--models", required=True, type=parse_models, help="Comma-separated model IDs")
    ex.add_argument("--out", required=True, help="Output .npz path")
    _add_spatial_args(ex)
    _add_temporal_args(ex)
    ex.add_argument("--backend", default="gee", help="Backend / provider (default: gee)")
    ex.add_argument("--device", default="auto", help="Device for model inference (default: auto)")
    ex.add_argument("--output", choices=["pooled", "grid"], default="pooled", help="Embedding output mode")
    ex.add_argument(
        "--pooling", choices=["mean", "max"], default="mean", help="Pooling method for pooled output"
    )
    ex.add_argument(
        "--collection", default=None, help="Override sensor.collection for every model (needs --bands)"
    )
    ex.add_argument("--bands", default=None, type=parse_bands, help="Override sensor bands (comma-separated)")
    _add_sensor_args(ex, what="Override ")
    ex.add_argument(
        "--value-range",
        default=None,
        type=parse_value_range,
        help="Not supported here (only for inspect-gee)",
    )
    ex.add_argument("--no-inputs", action="store_true", help="Do not save raw inputs into the npz")
    ex.add_argument("--no-embeddings", action="store_true", help="Do not run models / save embeddings")
    ex.add_argument("--no-json", action="store_true", help="Do not write a sidecar .json manifest")
    ex.add_argument(
        "--fail-on-bad-input",
        action="store_true",
        help="If input checks fail, stop and raise instead of exporting.",
    )
    ex.add_argument(
        "--continue-on-error",
        action="store_true",
        help="Keep exporting remaining models/items when one fails.",
    )
    ex.add_argument(
        "--max-retries",
        type=int,
        default=0,
        help="Retry count for network fetch / inference / write failures.",
    )
    ex.add_argument(
        "--retry-backoff-s",
        type=float,
        default=0.0,
        help="Base backoff seconds between retries (exponential).",
    )
    _add_provider_option_arg(ex)
    ex.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on a running scheduler, e.g. tcp://10.0.0.5:8786"
    )
    ex.set_defaults(func=cmd_export_npz)
    return ex


def cmd_export_npz(args: argparse.Namespace) -> int:
    """Run ``export-npz``: export one ROI into a combined ``.npz`` and print the manifest JSON.

    Returns
    -------
    int
        0 once the manifest is printed, whatever the models' statuses (as rs-embed).

    Raises
    ------
    SystemExit
        ``--value-range`` given, or ``--collection`` without ``--bands`` (rs-embed's messages).
    """
    from rs_embed_dask import ExportConfig, ExportTarget, OutputSpec, export_batch

    spatial = _spatial(args)
    temporal = _temporal(args)
    if args.value_range is not None:
        raise SystemExit("--value-range is currently supported only for inspect-gee.")
    output = OutputSpec.pooled(pooling=args.pooling) if args.output == "pooled" else OutputSpec.grid()
    sensor = None
    if args.collection is not None:
        if args.bands is None:
            raise SystemExit("--bands is required when --collection is provided for export-npz")
        sensor = _sensor(args)
    config = ExportConfig(
        save_inputs=not args.no_inputs,
        save_embeddings=not args.no_embeddings,
        save_manifest=not args.no_json,
        fail_on_bad_input=args.fail_on_bad_input,
        continue_on_error=args.continue_on_error,
        max_retries=args.max_retries,
        retry_backoff_s=args.retry_backoff_s,
    )
    client = None
    if args.scheduler:
        from rs_embed_dask import cluster as clusters

        client = clusters.connect(args.scheduler, verbose=False)
    try:
        # the embedded cluster's dashboard line goes to stderr: stdout is the manifest alone
        with contextlib.redirect_stdout(sys.stderr):
            manifest = export_batch(
                spatials=[spatial],
                temporal=temporal,
                models=args.models,
                target=ExportTarget.combined(args.out),
                config=config,
                sensor=sensor,
                output=output,
                backend=args.backend,
                device=args.device,
                client=client,
                provider_options=dict(args.provider_option) or None,
            )
    finally:
        if client is not None:
            client.close()
    _print_json(manifest)
    return 0


# -- inspect-gee --------------------------------------------------------------------------------


def add_inspect_gee_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``inspect-gee`` (rs-embed's flags and defaults, plus ``--backend``/``--provider-option``)."""
    ig = sub.add_parser(
        "inspect-gee",
        help="fetch one patch (Earth Engine or another provider) and print an input-inspection report (no model)",
        description="Fetch one patch and print the inspect_gee_patch report as JSON (rs-embed's "
        "inspect-gee); no model is run. --backend picks another provider.",
    )
    ig.add_argument("--collection", required=True, help="GEE ImageCollection (or Image) id")
    ig.add_argument("--bands", required=True, type=parse_bands, help="Comma-separated band list")
    _add_sensor_args(ig, what="")
    _add_spatial_args(ig)
    _add_temporal_args(ig)
    ig.add_argument(
        "--value-range", default=None, type=parse_value_range, help="Optional sanity range 'lo,hi' for values"
    )
    ig.add_argument(
        "--save-dir", default=None, help="Optional directory to save a quicklook PNG (first 3 bands)"
    )
    ig.add_argument("--backend", default="gee", help="provider to fetch from (default: gee)")
    _add_provider_option_arg(ig)
    ig.set_defaults(func=cmd_inspect_gee)
    return ig


def cmd_inspect_gee(args: argparse.Namespace) -> int:
    """Run ``inspect-gee``: fetch one patch and print the inspection dict as JSON.

    Returns
    -------
    int
        0 once the report is printed, whether or not the input checks passed (as rs-embed).
    """
    from rs_embed_dask.inspect_api import inspect_gee_patch

    out = inspect_gee_patch(
        spatial=_spatial(args),
        temporal=_temporal(args),
        sensor=_sensor(args, save_dir=args.save_dir),
        backend=args.backend,
        value_range=args.value_range,
        provider_options=dict(args.provider_option) or None,
    )
    _print_json(out)
    return 0
