"""The rs-embed 0.3.1 side; runs in ``.venv-parity``.

Subcommands
-----------
``weights``
    Build each model's default checkpoint with rs-embed's own model classes
    (rshf's ``RemoteCLIP``, ``SatMAE``, ``ScaleMAE``; rs-embed's vendored DOFA
    and Prithvi), replace its parameters by seeded random values
    (:func:`parity.weights.randomize_module`) and write it, in the format of
    the published file, into a Hugging Face hub cache.
``embed``
    Register a fake provider through rs-embed's public provider registry
    (``rs_embed.providers.register_provider``) serving the plan's pixels, and
    run the plan's cases through ``rs_embed.get_embedding`` /
    ``rs_embed.get_embeddings_batch``.

Workarounds (rs-embed environment only)
---------------------------------------
With transformers 5, rshf's hub-mixin wrappers of RemoteCLIP and ScaleMAE
cannot be built from a snapshot that holds a ``config.json``.  The published
repositories hold one, and so does the harness's cache; for those two models
this side first tries rshf's ``from_pretrained`` on the snapshot, as rs-embed
does, and only when that fails points rs-embed at a folder holding the same
weight file without ``config.json`` through rs-embed's own overrides
(``RS_EMBED_REMOTECLIP_ID``, ``RS_EMBED_SCALEMAE_ID``); the log records the
failure and the override, and the report repeats them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from parity.families import family_of
from parity.inputs import Case, Plan, lattice_window, mercator, s1_units, spatial_bounds, world_pixels
from parity.sides.common import FetchLog, call_case, run_cases
from parity.weights import (
    HUB_FILES,
    link_or_copy,
    randomize_module,
    save_safetensors,
    write_json,
    write_snapshot,
)

PROVIDER = "parity_fake"

SATMAE_CONFIG = {
    "decoder_depth": 8, "decoder_embed_dim": 512, "decoder_num_heads": 16, "depth": 24, "embed_dim": 1024,
    "img_mean": [0.4182007312774658, 0.4214799106121063, 0.3991275727748871], "img_size": 224,
    "img_std": [0.28774282336235046, 0.27541765570640564, 0.2764017581939697], "in_chans": 3,
    "mlp_ratio": 4, "norm_pix_loss": False, "num_heads": 16, "patch_size": 16,
}  # fmt: skip
SCALEMAE_CONFIG = {"feat_dim": 1024, "fc_dim": 1024, "global_pool": False, "cls_token_flag": True}
REMOTECLIP_CONFIG = {"model_name": "ViT-B-32"}
PRITHVI_CONFIG = {
    "architecture": "prithvi_eo_v2_100",
    "num_features": 768,
    "pretrained_cfg": {
        "img_size": 224, "num_frames": 4, "patch_size": [1, 16, 16], "in_chans": 6, "embed_dim": 768,
        "depth": 12, "num_heads": 12, "decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16,
        "mlp_ratio": 4, "coords_encoding": ["time", "location"], "coords_scale_learn": True,
        "mask_ratio": 0.75, "norm_pix_loss": False,
        "bands": ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"],
        "mean": [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0],
        "std": [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0],
    },
}  # fmt: skip


# -- weights ---------------------------------------------------------------------------
def _build(model: str) -> tuple[Any, dict[str, Any] | None]:
    """rs-embed's (or rshf's) module of ``model`` with default init, and its config.json."""
    if model == "remoteclip":
        from rshf.remoteclip import RemoteCLIP

        return RemoteCLIP(), REMOTECLIP_CONFIG
    if model == "satmae":
        from rshf.satmae import SatMAE, SatMAEConfig

        return SatMAE(SatMAEConfig()), SATMAE_CONFIG
    if model == "scalemae":
        from rshf.scalemae import ScaleMAE

        return ScaleMAE(), SCALEMAE_CONFIG
    if model == "dofa":
        from rs_embed.embedders._vendor.dofa_vit import vit_base_patch16

        # the published file is the MAE encoder: ``norm``, no ``fc_norm`` (rs-embed copies one to the other)
        return vit_base_patch16(global_pool=False), None
    if model == "prithvi":
        from rs_embed.embedders._vendor.prithvi_mae import PrithviMAE

        cfg = dict(PRITHVI_CONFIG["pretrained_cfg"])
        cfg["patch_size"] = tuple(cfg["patch_size"])
        return PrithviMAE(**cfg), PRITHVI_CONFIG
    fam = family_of(model)
    if fam is not None:
        return fam.build(model)
    raise ValueError(f"no weights recipe for {model!r}")


def write_weights(hub: Path, seed: int, models: list[str]) -> dict[str, Any]:
    """Write each model's random default checkpoint into the hub cache ``hub``; return what was written."""
    import torch

    done: dict[str, Any] = {}
    for model in (m for m in models if m in HUB_FILES):
        repo, *files = HUB_FILES[model]["rs_embed"]
        snap = write_snapshot(hub, repo, seed)
        stamp = snap / ".parity-complete"
        if stamp.exists():
            done[model] = json.loads(stamp.read_text())
            print(f"[rs-embed weights] {model}: cached in {snap}", flush=True)
            continue
        torch.manual_seed(seed)
        module, config = _build(model)
        randomize_module(module, seed, prefix=f"{model}/")
        state = module.state_dict()
        weight_file = next(f for f in files if f != "config.json")
        fam = family_of(model)
        if fam is not None and hasattr(fam, "save"):
            fam.save(model, state, snap, files)
        elif weight_file.endswith(".safetensors"):
            save_safetensors(state, snap / weight_file)
        else:
            torch.save({k: v.contiguous() for k, v in state.items()}, snap / weight_file)
        if config is not None:
            write_json(snap / "config.json", config)
        info = {"repo": repo, "snapshot": str(snap), "files": files, "tensors": len(state),
                "parameters": int(sum(v.numel() for v in state.values()))}  # fmt: skip
        stamp.write_text(json.dumps(info))
        done[model] = info
        print(f"[rs-embed weights] {model}: {info['tensors']} tensors -> {snap}", flush=True)
        del module, state
    return done


def config_json_workaround(hub: Path, seed: int, model: str) -> str | None:
    """Load ``model``'s rshf wrapper from its snapshot as rs-embed would; on failure, set the override.

    For remoteclip and scalemae, rs-embed builds rshf's hub-mixin wrapper from
    the snapshot folder.  When that fails (transformers 5 and a ``config.json``),
    rs-embed's own override variable is pointed at a folder holding the same
    weight file without ``config.json``.  Returns a description of the
    workaround, or ``None`` when none is needed.
    """
    env = {"remoteclip": "RS_EMBED_REMOTECLIP_ID", "scalemae": "RS_EMBED_SCALEMAE_ID"}.get(model)
    if env is None:
        return None
    repo = HUB_FILES[model]["rs_embed"][0]
    snap = write_snapshot(hub, repo, seed)
    try:
        if model == "remoteclip":
            from rshf.remoteclip import RemoteCLIP as cls
        else:
            from rshf.scalemae import ScaleMAE as cls
        cls.from_pretrained(str(snap))
        return None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    folder = config_free_copy(hub, seed, model, hub.parent / "rsembed-no-config" / model)
    os.environ[env] = str(folder)
    print(f"[rs-embed] {model}: rshf cannot load the snapshot ({reason}); using {env}={folder}", flush=True)
    return f"rshf from_pretrained(<snapshot with config.json>) fails with {reason}; rs-embed run with {env}={folder} (the same weight file, no config.json)"


def config_free_copy(hub: Path, seed: int, model: str, dest: Path) -> Path:
    """A folder holding ``model``'s snapshot files except ``config.json`` (hard links)."""
    repo, *files = HUB_FILES[model]["rs_embed"]
    snap = write_snapshot(hub, repo, seed)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f != "config.json":
            link_or_copy(snap / f, dest / f)
    return dest


# -- provider ----------------------------------------------------------------------------
_PLAN: Plan | None = None
_LOG = FetchLog()


def _window(temporal: Any) -> tuple[str, str]:
    if temporal is None:
        raise ValueError("the parity provider needs a temporal window")
    if getattr(temporal, "mode", "range") == "year":
        y = int(temporal.year)
        return date(y, 1, 1).isoformat(), date(y + 1, 1, 1).isoformat()
    return str(temporal.start), str(temporal.end)


def _label(spatial: Any, window: tuple[int, int, int, int], scale: float) -> str:
    """The planned ROI nearest the request (for the log) and the lattice window served."""
    assert _PLAN is not None
    x0, y0, x1, y1 = spatial_bounds(spatial)
    best = min(_PLAN.rois.values(), key=lambda r: _dist(r, (x0 + x1) / 2, (y0 + y1) / 2))
    r0, c0, h, w = window
    return f"{best.name} r{r0} c{c0} {h}x{w}@{scale:g}m"


def _dist(roi: Any, x: float, y: float) -> float:
    rx, ry = mercator(roi.lon, roi.lat)
    return abs(rx - x) + abs(ry - y)


def make_provider_class() -> type:
    """The fake provider, a ``rs_embed.providers.ProviderBase`` subclass."""
    from rs_embed.providers import ProviderBase
    from rs_embed.tools.temporal import split_date_range

    class ParityProvider(ProviderBase):
        """Serves :class:`parity.inputs.Plan` pixels for planned ROIs."""

        name = PROVIDER

        def __init__(self, **_: Any) -> None:
            pass

        def ensure_ready(self) -> None:
            return None

        def get_region(self, spatial: Any) -> Any:
            return spatial

        def build_image(self, *, sensor: Any, temporal: Any, region: Any = None) -> Any:
            return {"sensor": sensor, "temporal": temporal, "region": region}

        def fetch_array_chw(self, *, image: Any, bands: Any, region: Any, scale_m: Any,
                            fill_value: Any, collection: Any = None) -> np.ndarray:  # fmt: skip
            return self._serve(region, image["temporal"], bands, float(scale_m))

        def fetch_sensor_patch_chw(self, *, spatial: Any, temporal: Any, sensor: Any,
                                   to_float_image: bool = False) -> np.ndarray:  # fmt: skip
            return self._serve(spatial, temporal, sensor.bands, float(sensor.scale_m))

        def fetch_multiframe_collection_raw_tchw(self, *, spatial: Any, temporal: Any, collection: Any,
                                                 bands: Any, n_frames: int, scale_m: Any = 10,
                                                 **_: Any) -> np.ndarray:  # fmt: skip
            start, end = _window(temporal)
            frames = [self._serve(spatial, None, bands, float(scale_m), window=b)
                      for b in split_date_range(start, end, n_frames)]  # fmt: skip
            return np.stack(frames, axis=0)

        def fetch_s1_vvvh_raw_chw_with_meta(self, *, spatial: Any, temporal: Any, scale_m: Any = 10,
                                            use_float_linear: bool = True,
                                            **_: Any) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
            arr = self._serve(spatial, temporal, ("VV", "VH"), float(scale_m))
            return s1_units(arr, bool(use_float_linear)), {}

        def fetch_s1_vvvh_raw_chw(self, **kw: Any) -> np.ndarray:
            return self.fetch_s1_vvvh_raw_chw_with_meta(**kw)[0]

        def _serve(self, spatial: Any, temporal: Any, bands: Any, scale: float,
                   window: tuple[str, str] | None = None) -> np.ndarray:  # fmt: skip
            assert _PLAN is not None
            start, end = window or _window(temporal)
            win = lattice_window(spatial_bounds(spatial), scale)
            arr = world_pixels(_PLAN.seed, list(bands), start, end, *win, scale)
            _LOG.add(_label(spatial, win, scale), list(bands), start, end, arr)
            return arr

    return ParityProvider


# -- embed -------------------------------------------------------------------------------
def _call(case: Case) -> list[Any]:
    import rs_embed

    assert _PLAN is not None
    if case.model == "tessera":
        # rs-embed leaves geotessera's embeddings_dir at its default, the working directory
        cwd = os.getcwd()
        os.chdir(os.environ["RS_EMBED_TESSERA_CACHE"])
        try:
            return call_case(rs_embed, _PLAN, case, PROVIDER)
        finally:
            os.chdir(cwd)
    return call_case(rs_embed, _PLAN, case, PROVIDER)


@contextmanager
def satmae_tokens_in_order() -> Iterator[None]:
    """Control experiment: rshf's SatMAE ``random_masking`` replaced by the identity (nothing else).

    With ``mask_ratio=0`` the masking keeps every token but in the order of
    ``argsort(torch.rand(...))``; the identity keeps the row-major order.  If
    rs-embed's grid then matches ours, the token permutation is the only
    difference.
    """
    import torch
    from rshf.satmae import SatMAE

    def identity(self: Any, x: Any, mask_ratio: float) -> Any:
        n, length, _ = x.shape
        ids = torch.arange(length, device=x.device).expand(n, length)
        return x, torch.zeros(n, length, device=x.device), ids

    original = SatMAE.random_masking
    SatMAE.random_masking = identity
    try:
        yield
    finally:
        SatMAE.random_masking = original


def main(argv: list[str] | None = None) -> int:
    """Command line of the rs-embed side (see the module docstring)."""
    global _PLAN
    ap = argparse.ArgumentParser(prog="python -m parity.sides.rsembed_side")
    ap.add_argument("command", choices=("weights", "embed"))
    ap.add_argument("--plan", required=True)
    ap.add_argument("--hub", required=True, help="Hugging Face hub cache folder")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--out", help="output prefix (embed)")
    ap.add_argument("--repeat-grid", nargs="*", default=["satmae"],
                    help="models whose native single grid case runs twice")  # fmt: skip
    args = ap.parse_args(argv)
    _PLAN = Plan.from_json(args.plan)
    hub = Path(args.hub)
    if args.command == "weights":
        write_weights(hub, _PLAN.seed, args.models)
        return 0

    import rs_embed
    from rs_embed.providers import register_provider

    workarounds = {m: w for m in args.models if (w := config_json_workaround(hub, _PLAN.seed, m))}
    for m in args.models:  # a family that runs rs-embed on a smaller config than its default (satvision)
        setup = getattr(family_of(m), "rsembed_setup", None)
        if setup is not None:
            workarounds[m] = setup(m)
    register_provider(PROVIDER, make_provider_class())
    if "gse" in args.models:  # the shared fake Earth Engine (parity/products_gse.py)
        from parity.products_gse import install

        install(_PLAN.seed, log=lambda label, arr: _LOG.add(f"gse {label}", ["A00-A63"], "", "", arr))
    if "tessera" in args.models:  # geotessera offline: registry files from the cache, no HTTP
        from parity.products_tessera import offline_geotessera

        offline_geotessera()
    import torch

    torch.manual_seed(0)
    cases = [c for c in _PLAN.cases if c.model in args.models]
    first_grid = {m: next((c.id for c in cases if c.model == m and c.output == "grid"), None) for m in args.repeat_grid}
    run_cases(
        _PLAN, cases, _call, _LOG, f"{args.out}.npz", f"{args.out}.json", side="rs-embed",
        repeat=lambda c: first_grid.get(c.model) == c.id,
        extra={"version": rs_embed.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
               "workarounds": workarounds, "threads": torch.get_num_threads()},
    )  # fmt: skip
    # families with a control (parity/families/*.py ``control``) join satmae's control run
    ctl_models = {"satmae"} | {c.model for c in cases if hasattr(family_of(c.model), "control")}
    # a family's pooled rectangle is pooled from its cut-back grid: it joins the control run too
    control = [c for c in cases if c.model in ctl_models
               and (c.output == "grid" or (c.model != "satmae" and "-rect/" in c.id))]  # fmt: skip
    if control:
        from contextlib import ExitStack

        with satmae_tokens_in_order(), ExitStack() as stack:
            for m in sorted(ctl_models - {"satmae"}):
                stack.enter_context(family_of(m).control(m))  # type: ignore[union-attr]
            run_cases(_PLAN, control, _call, _LOG, f"{args.out}_control.npz", f"{args.out}_control.json",
                      side=f"rs-embed control: {', '.join(sorted(ctl_models))} random_masking -> identity")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
