"""``rs-embed-dask models`` describes every model without importing a deep-learning library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rs_embed_dask.models import torchgeo_models as tgm

HEAVY = ("torch", "torchgeo", "timm", "torchvision", "transformers")

PROBE = f"""
import contextlib, io, json, sys
from rs_embed_dask.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["models"])
print(json.dumps({{"code": code, "lines": len(out.getvalue().splitlines()),
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_models_table_imports_no_deep_learning_library(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["lines"] > 10
    assert report["heavy"] == []


@pytest.mark.parametrize(
    ("emb", "enum", "member"),
    [
        (tgm.CROMAEmbedder(), "CROMABase_Weights", "CROMA_VIT"),
        (tgm.CROMAEmbedder({"variant": "large"}), "CROMALarge_Weights", "CROMA_VIT"),
        (tgm.CopernicusFMEmbedder(), "CopernicusFM_Base_Weights", "CopernicusFM_ViT"),
        (tgm.PanopticonEmbedder(), "Panopticon_Weights", "VIT_BASE14"),
        (tgm.SSL4EOViTEmbedder(), "ViTSmall16_Weights", "SENTINEL2_ALL_MOCO"),
        (tgm.SSL4EOResNetEmbedder(), "ResNet50_Weights", "SENTINEL2_ALL_MOCO"),
    ],
)
def test_weights_urls_are_torchgeos(emb: tgm._TorchgeoEmbedder, enum: str, member: str) -> None:
    """The URLs written as plain data are those of the installed torchgeo's weights enums."""
    models = pytest.importorskip("torchgeo.models")
    module = models.croma if enum.startswith("CROMA") else models
    assert emb.weights_url == getattr(getattr(module, enum), member).url


def test_torch_hub_dir_without_torch_matches_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from rs_embed_dask.models.torchgeo_models import _torch_hub_dir; "
        "mine = str(_torch_hub_dir()); assert 'torch' not in sys.modules; "
        "import torch; print(mine == torch.hub.get_dir(), mine)"
    )
    for extra in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        env = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")} | extra
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("True"), (extra, done.stdout)
