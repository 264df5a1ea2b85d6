"""Merging the per-family ``CASES`` dicts of a test-case package (model and provider contracts)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any


def collect_cases(package: str, path: Iterable[str], kind: str) -> dict[str, Any]:
    """Every ``CASES`` dict of the modules of ``package``, merged; a name defined twice is an error."""
    cases: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for name, case in getattr(module, "CASES", {}).items():
            if name in cases:
                raise RuntimeError(f"{kind} case {name!r} is defined twice (in {info.name})")
            cases[name] = case
    return cases
