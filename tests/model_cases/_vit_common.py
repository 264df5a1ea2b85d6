"""Golden preprocessing helpers and the case builder shared by the ViT model cases (float32 like the models)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model_cases import ModelCase

# Sentinel-2 DN covering clipping, truncation to 8-bit levels and the top of the range
DN = np.array([-100.0, 0.0, 39.0, 40.0, 2500.0, 5000.0, 9999.0, 12345.0], dtype=np.float32)


def raw_tile(channels: int, size: int) -> np.ndarray:
    """``(1, channels, size, size)``: the DN pattern, shifted per channel so bands differ."""
    base = np.resize(DN, size * size).reshape(size, size)
    return np.stack([np.roll(base, c, axis=1) for c in range(channels)])[None].astype(np.float32)


def rgb_golden(raw: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(floor(clip(DN / 10000, 0, 1) * 255) / 255 - mean) / std`` per band."""
    f32 = np.float32
    levels = np.floor(np.clip(raw / f32(10000.0), f32(0.0), f32(1.0)) * f32(255.0))
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((levels / f32(255.0) - m) / s).astype(np.float32)


def vit_case(
    raw: np.ndarray,
    expected: np.ndarray,
    setup: Callable[[Path], dict[str, Any]],
    *,
    input_hw: tuple[int, int] = (32, 32),
    exact_pooling: list[tuple[dict[str, Any], tuple[int, int]]] | None = None,
    pooled_is_not_grid_mean: str = "",
) -> ModelCase:
    """A ViT family's case: the default ``model_config`` on weights written by ``setup``, ``atol=1e-4``."""
    return ModelCase(
        config={},
        input_hw=input_hw,
        raw=raw,
        expected=expected,
        exact_pooling=exact_pooling or [],
        setup=setup,
        pooled_is_not_grid_mean=pooled_is_not_grid_mean,
        atol=1e-4,
    )
