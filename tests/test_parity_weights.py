"""The parity harness's weight handling (``parity/weights.py``), without rs-embed.

The harness writes rs-embed's RemoteCLIP checkpoint (rshf's hub-mixin
``model.safetensors``: open_clip keys under ``model.``) and converts it into
the file our loader reads (open_clip ``RemoteCLIP-ViT-B-32.pt``).  These tests
check the conversion on a tiny CLIP: the converted file loads strictly into
our embedder and gives the same image embedding as the source model, and the
hub cache layout is what ``huggingface_hub`` finds offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the harness lives at the repo root, outside the package
    sys.path.insert(0, str(ROOT))

from parity import weights as pw  # noqa: E402
from parity.compare import metrics  # noqa: E402
from parity.inputs import (  # noqa: E402
    Plan,
    Roi,
    build_plan,
    lattice_window,
    mercator,
    sha256_f32,
    world_pixels,
)


def test_remoteclip_key_conversion_round_trip() -> None:
    state = {"visual.conv1.weight": 1, "logit_scale": 2, "transformer.resblocks.0.ln_1.bias": 3}
    rshf = pw.open_clip_to_rshf_remoteclip(state)
    assert set(rshf) == {f"model.{k}" for k in state}
    assert pw.rshf_remoteclip_to_open_clip(rshf) == state


def test_remoteclip_conversion_rejects_other_formats() -> None:
    with pytest.raises(ValueError, match="not an rshf RemoteCLIP"):
        pw.rshf_remoteclip_to_open_clip({"model.a": 1, "visual.conv1.weight": 2})


def test_random_tensor_is_seeded_and_not_the_default_init() -> None:
    torch = pytest.importorskip("torch")
    ones, zeros, w = torch.ones(16), torch.zeros(16), torch.empty(32, 8)
    a, b = pw.random_tensor(w, "blocks.0.w", 1), pw.random_tensor(w, "blocks.0.w", 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, pw.random_tensor(w, "blocks.0.w", 2))
    assert not torch.equal(a, pw.random_tensor(w, "blocks.1.w", 1))
    assert abs(float(a.std()) - 8**-0.5) < 0.1  # N / sqrt(fan_in)
    norm_w = pw.random_tensor(ones, "norm.weight", 1)
    assert abs(float(norm_w.mean()) - 1.0) < 0.1
    assert float(norm_w.std()) > 0.01
    assert float(pw.random_tensor(zeros, "norm.bias", 1).abs().max()) > 0
    scalar = torch.tensor(4.6)
    assert torch.equal(pw.random_tensor(scalar, "logit_scale", 1), scalar)


def test_hub_snapshot_layout_is_found_offline(tmp_path: Path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    snap = pw.write_snapshot(tmp_path, "org/some-model", 7)
    (snap / "weights.pt").write_bytes(b"x")
    assert (tmp_path / "models--org--some-model" / "refs" / "main").read_text() == snap.name
    assert len(snap.name) == 40
    found = hub.hf_hub_download("org/some-model", "weights.pt", cache_dir=str(tmp_path), local_files_only=True)
    assert Path(found).resolve() == (snap / "weights.pt").resolve()


def test_remoteclip_converted_checkpoint_loads_into_our_embedder(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    pytest.importorskip("safetensors")
    from rs_embed_dask.models.remoteclip import RemoteCLIPEmbedder

    tiny = {"width": 64, "layers": 1, "embed_dim": 32, "image_size": 64}
    source = open_clip.CLIP(**RemoteCLIPEmbedder(tiny)._clip_config())
    pw.randomize_module(source, seed=3)
    rshf_file = tmp_path / "model.safetensors"
    pw.save_safetensors(pw.open_clip_to_rshf_remoteclip(source.state_dict()), rshf_file)

    ours_file = pw.convert_remoteclip(rshf_file, tmp_path / "RemoteCLIP-ViT-B-32.pt")
    emb = RemoteCLIPEmbedder({**tiny, "weights": str(ours_file)})
    visual = emb.build_module()  # strict load into open_clip's CLIP, image tower kept

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    source.eval()
    visual.eval()
    with torch.no_grad():
        expected = source.encode_image(x)
        out = visual(x)
    pooled = out[0] if isinstance(out, tuple) else out  # (pooled, tokens) when the tower returns tokens
    np.testing.assert_array_equal(pooled.numpy(), expected.numpy())


def test_plan_pixels_are_deterministic_and_sentinel2_like(tmp_path: Path) -> None:
    plan = build_plan(5, {"satmae": 10, "prithvi": 30}, quick=True)
    plan.to_json(tmp_path / "plan.json")
    again = Plan.from_json(tmp_path / "plan.json")
    assert again.cases == plan.cases
    assert again.rois == plan.rois
    roi = next(r for r in plan.rois.values() if not r.bbox)
    assert isinstance(roi, Roi)
    a = plan.pixels(roi, ["B4", "B3", "B2"], "2022-01-01", "2023-01-01")
    assert a.dtype == np.float32
    assert a.shape == (3, roi.px, roi.px)
    assert np.all(a == np.round(a))  # integer DN
    assert a.min() >= 0
    assert a.max() > 10000  # saturated patches
    assert sha256_f32(a) == sha256_f32(plan.pixels(roi, ["RED", "GREEN", "BLUE"], "2022-01-01", "2023-01-01"))
    frame = plan.pixels(roi, ["B4"], "2022-01-01", "2022-04-02")
    assert not np.array_equal(frame[0], a[0])  # another window, other pixels
    assert again.find_roi(roi.lon, roi.lat, roi.buffer_m) == roi
    with pytest.raises(LookupError):
        again.find_roi(roi.lon + 1.0, roi.lat)


def test_world_pixels_agree_where_windows_overlap() -> None:
    x, y = mercator(8.6, 47.4)
    r0, c0, h, w = lattice_window((x - 1120, y - 1120, x + 1120, y + 1120), 10)
    assert (h, w) == (224, 224)
    big = world_pixels(1, ["B8A"], "2022-01-01", "2023-01-01", r0, c0, h, w, 10)
    part = world_pixels(1, ["NIR_NARROW"], "2022-01-01", "2023-01-01", r0 + 40, c0 + 3, 100, 50, 10)
    np.testing.assert_array_equal(big[:, 40:140, 3:53], part)


def test_compare_metrics_pooled_and_grid() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 3, 3)).astype(np.float32)
    m = metrics(ref, ref + np.float32(1e-6))
    assert m["rel"] < 1e-5
    assert m["cos"] > 0.99999
    flipped = ref.copy()
    flipped[:, 0, 0] *= -1  # one cell reversed: the per-cell minimum cosine shows it
    assert metrics(ref, flipped)["cos"] == pytest.approx(-1.0)
    assert "rel" not in metrics(ref, ref[:, :2])  # shape mismatch: no numbers
    vec = rng.normal(size=16).astype(np.float32)
    assert metrics(vec, 2 * vec)["cos"] == pytest.approx(1.0)
