"""Per-model cases of the model contract (``tests/test_models_contract.py``).

Each module of this package holds the cases of one model family in a dict
``CASES: dict[str, ModelCase]``; :func:`collect` merges them.  Adding a
model: register it, then add ``tests/model_cases/<family>.py`` with a small
``config``, golden preprocessing numbers and the (config, input size) pairs
for which its grid partitions the input exactly.  Models that need weights
give a ``setup`` that writes random weights in the library's own format
under the directory it is handed and returns the ``model_config`` entries
that point at them; no model is skipped for lack of weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _cases import collect_cases

__all__ = ["ModelCase", "collect"]


@dataclass(frozen=True)
class ModelCase:
    """What the contract needs to know about one model.

    Attributes
    ----------
    config : dict
        ``model_config`` used by the contract (keep it small: the suite must be fast).
    input_hw : tuple of int
        Input size for the batch and output-shape checks.
    raw : numpy.ndarray
        ``(1, C, H, W)`` (or ``(1, T, C, H, W)``) raw provider values for the
        preprocessing check.
    expected : numpy.ndarray
        What ``preprocess(raw)`` must return.
    exact_pooling : list of (dict, (int, int))
        ``(model_config, input_hw)`` pairs for which the pooled mean equals the
        mean of the grid (the grid cells partition the feature maps equally).
        Empty only when ``pooled_is_not_grid_mean`` says why.
    setup : callable, optional
        ``setup(directory) -> dict``: writes weights (random, in the library's
        own checkpoint format) under ``directory`` once per test session and
        returns the ``model_config`` entries (or nothing) every config of the
        case is merged with.
    pooled_is_not_grid_mean : str
        Why the pooled output is not the mean of the grid (e.g. a CLIP
        projection head), which exempts the model from that check.
    atol : float
        Tolerance of the batch-equals-single check (large models accumulate
        more float error).
    """

    config: dict[str, Any]
    input_hw: tuple[int, int]
    raw: np.ndarray
    expected: np.ndarray
    exact_pooling: list[tuple[dict[str, Any], tuple[int, int]]] = field(default_factory=list)
    setup: Callable[[Path], dict[str, Any]] | None = None
    pooled_is_not_grid_mean: str = ""
    atol: float = 1e-5


def collect() -> dict[str, ModelCase]:
    """Every ``CASES`` dict of this package's modules, merged (duplicates are an error)."""
    return collect_cases(__name__, __path__, "model")
