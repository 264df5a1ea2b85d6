"""The export benchmark's workload on rs-embed 0.3.1 (run in ``.venv-parity`` by ``bench_export.py``).

    .venv-parity/bin/python benchmarks/_rsembed_workload.py --n 600 --rounds 3 --chunk-size 16

Registers, through rs-embed's public registries, a provider ``bench_synth``
(4x128x128 float32 pixels per ROI after ``latency_s`` of sleep, as our
synthetic provider with ``latency_s=0.2``) and a model ``bench_vits`` (the
same timm ``vit_small_patch16_224``, img_size=128, 4 channels, random
weights, pooled pre-logits; batched forward in
``get_embeddings_batch_from_inputs`` as rs-embed's torch models do), then
times ``rs_embed.export_batch`` per-item and combined NPZ with
``save_inputs=True``, ``num_workers=32`` and the given chunk / batch sizes,
in interleaved rounds.  Prints one JSON line with ROIs/s per round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

NAME = "bench_vits"
PROVIDER = "bench_synth"
BANDS = ("B2", "B3", "B4", "B8")
IMG = 128


def register(latency_s: float) -> None:
    """Register the provider and the model in rs-embed's registries."""
    import torch
    from rs_embed.core.embedding import Embedding
    from rs_embed.core.registry import register as register_model
    from rs_embed.embedders.base import EmbedderBase
    from rs_embed.providers import ProviderBase, register_provider

    class BenchProvider(ProviderBase):
        name = PROVIDER

        def __init__(self, **_: Any) -> None:
            pass

        def ensure_ready(self) -> None:
            return None

        def get_region(self, spatial: Any) -> Any:
            return spatial

        def build_image(self, *, sensor: Any, temporal: Any, region: Any = None) -> Any:
            return {"sensor": sensor, "temporal": temporal}

        def _pixels(self, spatial: Any, n_bands: int) -> np.ndarray:
            time.sleep(latency_s)
            seed = abs(hash((round(float(spatial.lon), 6), round(float(spatial.lat), 6)))) % 2**32
            rng = np.random.default_rng(seed)
            return rng.uniform(0.0, 3000.0, size=(n_bands, IMG, IMG)).astype(np.float32)

        def fetch_array_chw(self, *, image: Any, bands: Any, region: Any, scale_m: Any,
                            fill_value: Any, collection: Any = None) -> np.ndarray:  # fmt: skip
            return self._pixels(region, len(bands))

        def fetch_sensor_patch_chw(self, *, spatial: Any, temporal: Any, sensor: Any,
                                   to_float_image: bool = False) -> np.ndarray:  # fmt: skip
            return self._pixels(spatial, len(sensor.bands))

    @register_model(NAME)
    class BenchViTS(EmbedderBase):
        model_name = NAME

        def __init__(self) -> None:
            super().__init__()
            self._module: Any = None

        def describe(self) -> dict[str, Any]:
            return {
                "type": "onthefly", "backend": ["provider", PROVIDER], "output": ["pooled"],
                "inputs": {"collection": "COPERNICUS/S2_SR_HARMONIZED", "bands": list(BANDS)},
                "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median", "image_size": IMG},
            }  # fmt: skip

        def _model(self) -> Any:
            if self._module is None:
                import timm

                torch.manual_seed(0)
                self._module = timm.create_model(
                    "vit_small_patch16_224", pretrained=False, img_size=IMG, in_chans=len(BANDS), num_classes=0
                ).eval()
            return self._module

        def _embed(self, arrays: list[np.ndarray]) -> list[Any]:
            x = torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))
            with torch.inference_mode():
                out = self._model()((x / 10000.0).clamp_(0.0, 1.0)).numpy()
            return [Embedding(data=out[i].astype(np.float32), meta={"model": NAME}) for i in range(len(arrays))]

        def get_embedding(self, *, spatial: Any, temporal: Any, sensor: Any, output: Any, backend: str,
                          device: str = "auto", input_chw: np.ndarray | None = None, **_: Any) -> Any:  # fmt: skip
            if input_chw is None:
                input_chw = self._get_provider(backend).fetch_sensor_patch_chw(
                    spatial=spatial, temporal=temporal, sensor=sensor
                )
            return self._embed([input_chw])[0]

        def get_embeddings_batch_from_inputs(self, *, spatials: Any, input_chws: Any, **_: Any) -> list[Any]:
            return self._embed(list(input_chws))

    register_provider(PROVIDER, BenchProvider)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--infer-batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=32)
    ap.add_argument("--latency-s", type=float, default=0.2)
    args = ap.parse_args()
    import rs_embed
    from rs_embed import ExportConfig, ExportTarget, OutputSpec, PointBuffer, TemporalSpec

    register(args.latency_s)
    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    cfg = ExportConfig(format="npz", save_inputs=True, num_workers=args.num_workers, chunk_size=args.chunk_size,
                       infer_batch_size=args.infer_batch_size, show_progress=False)  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="rsembed-ref-")

    def run(layout: str, n: int, tag: str, offset: int = 0) -> float:
        sps = [PointBuffer(lon=10.0 + 0.02 * ((i + offset) % 200), lat=45.0 + 0.02 * ((i + offset) // 200),
                           buffer_m=640) for i in range(n)]  # fmt: skip
        target = (ExportTarget.per_item(os.path.join(tmp, f"pi-{tag}")) if layout == "per_item"
                  else ExportTarget.combined(os.path.join(tmp, f"comb-{tag}.npz")))  # fmt: skip
        t0 = time.perf_counter()
        rs_embed.export_batch(spatials=sps, temporal=temporal, models=[NAME], target=target, config=cfg,
                              backend=PROVIDER, device="cpu", output=OutputSpec.pooled())  # fmt: skip
        return n / (time.perf_counter() - t0)

    res: dict[str, Any] = {"rs_embed": rs_embed.__version__ if hasattr(rs_embed, "__version__") else "0.3.1",
                           "torch_threads": __import__("torch").get_num_threads(),
                           "per_item": [], "combined": []}  # fmt: skip
    try:
        run("per_item", 16, "warm", offset=50000)
        run("combined", 16, "warm", offset=50000)
        for r in range(args.rounds):
            res["per_item"].append(run("per_item", args.n, f"{r}"))
            res["combined"].append(run("combined", args.n, f"{r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
