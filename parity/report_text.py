"""The text of ``docs/parity.md`` around the results table (see :func:`render`)."""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DIAGNOSIS", "NOTES", "NOT_COMPARED", "render"]

#: Hand-written diagnosis of failing rows: a key found in the case id (a model, ``-rect``) -> the text.
DIAGNOSIS: dict[str, str] = {
    "-rect": (
        "rectangular ROIs (BBoxes of 0.625 x the model's native size, and of the largest size, whose square is "
        "tiled): both packages fetch the centred EPSG:3857 square around the box, run the model on it and cut the "
        "grid back to the ROI window (`roi_window_geo` rounded to 6 decimals; token rows floor(y0 h)..ceil(y1 h)); "
        "pooled vectors are the mean of the ROI's tokens, or, for a tiled square, the tile vectors weighted by "
        "their area inside the ROI (`rs_embed_dask/fetch_square.py`, rs-embed's `tools/spatial.py`, "
        "`tools/shape.py`, `tools/tiling._aggregate_tiled_embeddings`). A failing row here means the two "
        "disagree on the square (raw pixel hashes), the window, or the cut."
    ),
}

#: Observations on passing rows, by model (differences well inside the tolerance, with their cause).
NOTES: dict[str, str] = {
    "satmae": (
        "the model inputs differ in the last bits (max abs diff ~2e-7, no sample byte-identical) while Scale-MAE, "
        "which goes through the same preprocessing function, is byte-identical: our fMoW mean/std constants are "
        "rounded to 7 digits (`FMOW_MEAN = (0.4182007, ...)`) where rs-embed uses rshf's config values "
        "(`0.4182007312774658, ...`). Harmless (outputs agree to ~4e-7 relative)."
    ),
    "tessera": (
        "pooled vectors differ by ~1e-5 (~1e-6 relative): rs-embed averages in float32, ours in float64; grids are "
        "bit-identical. Both read geotessera 0.10's offline layout written once by `parity/products_tessera.py`."
    ),
    "gse": (
        "both packages read one fake Earth Engine (`parity/products_gse.py`) at the `ee.data` boundary: rs-embed's "
        "`sampleRectangle` (split in two for the 520x530 px box over the 262144-pixel limit) and our "
        "`computePixels`; masked pixels are NaN on both sides at the same cells (`compare.metrics` checks the masks)."
    ),
    "copernicus": (
        "a local sparse GeoTIFF stands in for `embed_map_310k.tif` (`parity/products.py`); both take a "
        "PointBuffer's `buffer_m` as ground metres (a degree box), pool every product pixel the box touches and "
        "return the native EPSG:4326 grid."
    ),
}

#: Models both packages offer that the harness does not compare yet, and why.
NOT_COMPARED: dict[str, str] = {}


def _verdict_counts(rows: Sequence[Mapping[str, Any]]) -> str:
    c = Counter(r["verdict"] for r in rows)
    return ", ".join(f"{n} {v}" for v, n in sorted(c.items()))


def _auto_diagnosis(r: Mapping[str, Any]) -> str:
    inp = r.get("inputs") or {}
    if r["verdict"] == "error":
        return "; ".join(f"{s}: {e}" for s, e in r["errors"].items())
    parts = []
    w_r, w_o = inp.get("windows", ([], []))
    windows_differ = inp.get("raw_same") is False and w_r != w_o
    if inp.get("raw_same") is False:
        if windows_differ:
            parts.append(f"the packages fetched different windows (rs-embed {', '.join(w_r)}; ours {', '.join(w_o)})")
        else:
            parts.append("the providers served different pixels for the same windows (harness problem)")
    n_r, n_o = inp.get("n_model_inputs", (0, 0))
    same = inp.get("model_inputs_same", 0)
    if (n_r, n_o) == (0, 0):
        parts.append("precomputed product: no provider, no model input")
    elif n_r != n_o:
        parts.append(f"different number of model-input samples (rs-embed {n_r}, ours {n_o}: tiling/batching differs)")
    elif same == n_r and n_r:
        parts.append("model inputs byte-identical -> the difference is in the network or in the pooling/stitching")
    elif windows_differ:
        parts.append("hence different model inputs")
    else:
        mx = inp.get("model_input_max_abs")
        parts.append(f"model inputs differ ({same}/{n_r} identical, max abs diff {f'{mx:.3g}' if mx is not None else '?'}) "
                     "-> preprocessing (resize, normalisation, padding) differs")  # fmt: skip
    if "shape_ref" in r and r.get("shape_ref") != r.get("shape_ours"):
        parts.append(f"output shapes differ ({tuple(r['shape_ref'])} vs {tuple(r['shape_ours'])})")
    return "; ".join(parts)


def render(
    rows: Sequence[Mapping[str, Any]],
    table: Sequence[str],
    log_r: Mapping[str, Any],
    log_o: Mapping[str, Any],
    timings: Mapping[str, float],
) -> str:
    """The whole Markdown document."""
    from parity.compare import COS_TOL, KNOWN, REL_TOL

    models = sorted({r["model"] for r in rows})
    out = [
        "# Parity with rs-embed 0.3.1",
        "",
        f"Generated by `make parity` (`parity/run.py`) on {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC. "
        "Do not edit by hand: rerun the harness.",
        "",
        f"**Result: {_verdict_counts(rows)}** over {len(rows)} rows ({', '.join(models)}).",
        "",
        "## What is compared",
        "",
        "* **Same weights.** Seeded random checkpoints (`parity/weights.py`), built with rs-embed's own model classes "
        "(rshf `RemoteCLIP`, `SatMAE`, `ScaleMAE`, `SatMAEPP`; rs-embed's vendored DOFA, Prithvi, THOR, TerraFM, "
        "SatMAE++ S2 and Clay; terratorch's TerraMind; olmoearth-pretrain-minimal's OlmoEarth; recipes of the "
        "later families in `parity/families/`) in the format of the published "
        "files, written into a temporary Hugging Face hub cache (`models--org--name/snapshots/<rev>/...`, `refs/main`) "
        "read offline (`HF_HUB_OFFLINE=1`) by both packages as their *default* checkpoint. Where our loader reads "
        "another file of the same checkpoint it is converted (RemoteCLIP: rshf `model.safetensors` with keys "
        "`model.<open_clip key>` -> open_clip `RemoteCLIP-ViT-B-32.pt`; tested in `tests/test_parity_weights.py`). "
        "SatMAE, Scale-MAE, DOFA and Prithvi read the very same file on both sides.",
        "* **Same pixels.** Each side registers a fake provider through its public API (`rs_embed_dask.register_provider` "
        "with a `Provider` subclass; `rs_embed.providers.register_provider` with a `ProviderBase` subclass). Both serve "
        "one deterministic Sentinel-2-like world (`parity/inputs.py`: integer DN, smooth fields around per-band "
        "levels, pixel noise, small saturated patches above 10000) defined on the lattice of the common EPSG:3857 grid, "
        "so the same window gives the same array and different windows of one ROI overlap consistently. ROIs are "
        "`PointBuffer`s of exactly N x N pixels, plus two rectangular `BBox`es per model (140 x 224 px, and 188 x 300 px whose square is tiled: fetch-square behaviour); S1 VV/VH for the `modality=\"s1\"` cases. "
        "Every request is logged with the sha256 of the float32 array served (column *raw pixels*: whether both "
        "sides were served the same arrays, the first hash and how many others; every hash is in "
        "`build/parity/{rsembed,ours}.json`).",
        "* **Same calls.** `get_embedding` (and `get_embeddings_batch` on all sizes at once) with pooled and grid "
        "outputs, ROIs at the model's native size and at sizes that need resizing or tiling (128 and 300 px), each "
        "package's default `input_prep` and `input_prep=\"resize\"`, `device=\"cpu\"`, "
        "`TemporalSpec.range(2022-01-01, 2023-01-01)` (four 91-day frames for Prithvi on both sides; Prithvi also "
        "with 61- and 30-day windows: two frames, one composite), products with `TemporalSpec.year(2021)`.",
        "* **Model input.** A global torch forward pre-hook records what reaches each model's patch embedding (the "
        "normalised, resized, padded tensor; `parity/capture.py`); column *model input* gives how many of rs-embed's "
        "samples (tiles, frames) are byte-identical to one of ours, and, when some are not, the max abs diff of the "
        "closest pair among the first eight.",
        f"* **Tolerance.** max abs diff <= {REL_TOL:g} x max|rs-embed embedding| and cosine >= {COS_TOL} (pooled: of "
        "the two vectors; grid: per cell over channels, minimum over cells).",
        "* **Not compared.** Everything before the provider: both fakes compute a ROI's pixel window with our grid's "
        "rule (`inputs.lattice_window`), so how rs-embed's GEE provider would map a ROI to pixels (`sampleRectangle` "
        "footprint) is outside this harness.",
        "",
        "The two packages run in two processes and environments (ours: `.venv`; rs-embed: `.venv-parity`, Python "
        "3.11, rs-embed installed with `--ignore-requires-python`) and exchange arrays through `.npz` files: rs-embed "
        "pins `timm<=1.0.15` and pulls open_clip 2.x and transformers 5, so installing both packages in one "
        "environment would test ours against dependency versions it does not ship with, or break one of them.",
        "",
        "## Environments",
        "",
        f"* rs-embed {log_r.get('version', '?')}, torch {log_r.get('torch', '?')}, Python {log_r.get('python', '?')}",
        f"* rs-embed-dask {log_o.get('version', '?')}, torch {log_o.get('torch', '?')}, Python {log_o.get('python', '?')}",
    ]
    workarounds = log_r.get("workarounds") or {}
    if workarounds:
        out += ["", "### Workarounds in the rs-embed environment", ""]
        out += [f"* **{m}**: {w}" for m, w in sorted(workarounds.items())]
    out += ["", "## Results", "", *table, ""]

    exc = [r for r in rows if r["verdict"] == "exception"]
    if exc:
        out += ["## Justified exceptions", ""]
        for (model, mode), why in KNOWN.items():
            mine = [r for r in exc if (r["model"], r["output"]) == (model, mode)]
            if not mine:
                continue
            out += [f"### {model} {mode}", "", why, "", "Evidence per row:", ""]
            for r in mine:
                ev = r["evidence"]
                bits = []
                if "repeat_vs_first" in ev and "rel" in ev["repeat_vs_first"]:
                    e = ev["repeat_vs_first"]
                    bits.append(f"two rs-embed calls on the same input differ by {e['max_abs']:.3g} (min cosine {e['cos']:.3f})")
                if "sorted_tokens" in ev and "rel" in ev["sorted_tokens"]:
                    e = ev["sorted_tokens"]
                    bits.append(f"tokens sorted on both sides: max abs diff {e['max_abs']:.2e}, min cosine {e['cos']:.6f}")
                if "ours_grid_mean_vs_rsembed" in ev and "rel" in ev["ours_grid_mean_vs_rsembed"]:
                    e = ev["ours_grid_mean_vs_rsembed"]
                    bits.append(f"rs-embed {tuple(r['shape_ref'])} here but {tuple(ev['rsembed_square_shape'])} for "
                                f"the square ROI `{ev['square_roi']}`; ours {tuple(r['shape_ours'])} for both; the mean "
                                f"of our {tuple(ev['grid_shape_ours'])} grid vs rs-embed's vector: max abs diff "
                                f"{e['max_abs']:.2e} (rel {e['rel']:.2e}), cosine {e['cos']:.6f}")  # fmt: skip
                    if ev.get("rsembed_other_rect"):
                        name, shape = ev["rsembed_other_rect"]
                        bits.append(f"rs-embed {tuple(shape)} for the tiled rectangle `{name}`")
                if "control_grid_mean_vs_ours" in ev and "rel" in ev["control_grid_mean_vs_ours"]:
                    e = ev["control_grid_mean_vs_ours"]
                    bits.append(f"mean of the control run's grid for this ROI vs ours: max abs diff {e['max_abs']:.2e} "
                                f"(rel {e['rel']:.2e}), cosine {e['cos']:.6f}")  # fmt: skip
                if "rsembed_grid_mean_vs_rsembed_pooled" in ev and "rel" in ev["rsembed_grid_mean_vs_rsembed_pooled"]:
                    e = ev["rsembed_grid_mean_vs_rsembed_pooled"]
                    bits.append(f"rs-embed's own grid and pooled calls on this ROI disagree: mean of its grid vs its "
                                f"pooled vector, max abs diff {e['max_abs']:.2e} (rel {e['rel']:.2e})")  # fmt: skip
                if "unshuffled_vs_ours" in ev and "rel" in ev["unshuffled_vs_ours"]:
                    e = ev["unshuffled_vs_ours"]
                    bits.append(f"rs-embed with `random_masking` replaced by the identity vs ours: max abs diff "
                                f"{e['max_abs']:.2e} (rel {e['rel']:.2e}), min cosine {e['cos']:.6f}")  # fmt: skip
                out.append(f"* {r['px']} px / {r['prep']} / {r['call']}: " + "; ".join(bits))
            out.append("")

    bad = [r for r in rows if r["verdict"] not in ("pass", "exception")]
    if bad:
        out += ["## Failures", "", "Automatic diagnosis (where the two pipelines part):", ""]
        for r in bad:
            out.append(f"* `{r['case']}` ({r['roi']}): {_auto_diagnosis(r)}")
        notes = [(k, t) for k, t in DIAGNOSIS.items() if any(k in r["case"] for r in bad)]
        if notes:
            out += ["", "Diagnosis:", ""] + [f"* **{k.strip('-')}**: {t}" for k, t in notes]
        out.append("")

    notes = [(m, t) for m, t in NOTES.items() if m in models]
    if notes:
        out += ["## Observations", ""] + [f"* **{m}**: {t}" for m, t in notes] + [""]
    out += ["## Not yet compared", ""]
    out += [f"* **{m}**: {t}" for m, t in NOT_COMPARED.items() if m not in models]
    if timings:
        out += ["", "## Timings of the last run", ""]
        out += [f"* {k}: {v:.0f} s" for k, v in timings.items()]
    out += ["", "## How to run", "", "```", "make parity                                      # builds .venv-parity once "
            "(~2 min with the pip cache), writes docs/parity.md", "make parity PARITY_ARGS=\"--models dofa prithvi\"",
            "make parity PARITY_ARGS=\"--quick\"                # native and largest size, single calls only",
            "# one family at a time, then one report from the runs (every model's full matrix takes hours on 2 cores):",
            ".venv/bin/python -m parity.run --models thor --quick --workdir build/parity-thor --report build/parity-thor/parity.md",
            ".venv/bin/python -m parity.merge --from build/parity-rect build/parity-thor ... --workdir build/parity-all "
            "--report docs/parity.md",
            "```", "", "Outputs, logs and the random checkpoints (~4 GB, reused) stay in `build/parity/`.", ""]  # fmt: skip
    return "\n".join(out)
