"""Shared fixtures of the test suite.

Contract cases live in ``tests/model_cases/`` and ``tests/provider_cases/``
(one module per plugin family; see their docstrings).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_python() -> Callable[[str], str]:
    """Run Python code in a fresh interpreter (same venv, repo root as cwd); return stdout."""

    def run(code: str, timeout: float = 120.0) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"subprocess failed:\n{proc.stderr}"
        return proc.stdout.strip()

    return run


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A client of an in-process cluster (one worker, four threads) per test module, not the default client.

    A module that needs another cluster (worker processes, test plugins, a
    set-up that must precede the cluster) defines its own ``client``, which
    takes precedence; :mod:`_clusters` has the shared ones.
    """
    from _clusters import threaded_client

    with threaded_client() as c:
        yield c
