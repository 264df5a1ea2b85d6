"""The parity plan of satmaepp and clay: modality cases, native sizes, the justified exception.

Only the harness's plan and call plumbing (numpy, no second environment).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the harness lives at the repo root, outside the package
    sys.path.insert(0, str(ROOT))

from parity.compare import KNOWN  # noqa: E402
from parity.inputs import Plan, build_plan  # noqa: E402
from parity.sides.common import call_case  # noqa: E402


def test_modality_cases_at_their_native_size_and_clay_at_256(tmp_path):
    plan = build_plan(1, {"satmaepp": 10, "clay": 10}, quick=True)
    s2 = [c for c in plan.cases if c.modality == "s2_10b"]
    assert {c.model for c in s2} == {"satmaepp"}
    assert {plan.rois[c.rois[0]].px for c in s2} == {96, 300}
    assert {c.output for c in s2} == {"pooled", "grid"}
    assert all(c.id.endswith("/s2_10b") for c in s2)
    clay = [c for c in plan.cases if c.model == "clay"]
    assert 256 in {plan.rois[c.rois[0]].px for c in clay}
    assert not any(c.modality for c in clay)
    plan.to_json(tmp_path / "plan.json")
    again = Plan.from_json(tmp_path / "plan.json")
    assert [c.modality for c in again.cases] == [c.modality for c in plan.cases]


def test_call_case_passes_the_modality():
    plan = build_plan(1, {"satmaepp": 10}, quick=True)
    seen: list[dict[str, Any]] = []

    class Pkg:
        """Just enough of either package's API for call_case."""

        @staticmethod
        def PointBuffer(*a: Any) -> tuple:
            return a

        BBox = PointBuffer

        class TemporalSpec:
            @staticmethod
            def range(a: str, b: str) -> tuple:
                return (a, b)

        class OutputSpec:
            @staticmethod
            def grid() -> str:
                return "grid"

            @staticmethod
            def pooled() -> str:
                return "pooled"

        @staticmethod
        def get_embedding(model: str, **kw: Any) -> str:
            seen.append({"model": model, **kw})
            return "emb"

    s2 = next(c for c in plan.cases if c.modality == "s2_10b")
    rgb = next(c for c in plan.cases if c.modality is None)
    call_case(Pkg, plan, s2, "fake")
    call_case(Pkg, plan, rgb, "fake")
    assert seen[0]["modality"] == "s2_10b"
    assert "modality" not in seen[1]


def test_satmaepp_grid_is_a_known_exception():
    assert ("satmaepp", "grid") in KNOWN
    assert ("clay", "grid") not in KNOWN
