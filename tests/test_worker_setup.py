"""Per-process set-up of model-hosting workers: glibc's allocator thresholds.

Each case runs in a fresh interpreter, since the tuning is process-wide and
glibc reads ``MALLOC_*`` variables only at start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")

# allocate, touch and free 1 MiB blocks, as a forward pass does with its activations,
# and count the minor page faults before and after tuning
PROBE = r"""
import json, resource
import numpy as np
from rs_embed_dask.cluster.worker_setup import malloc_tuning, tune_malloc_for_inference

def faults(n=200):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(2**17)  # 1 MiB (too small for a transparent huge page), every page written
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults(4)
untuned = faults()
applied = tune_malloc_for_inference()
faults(4)
tuned = faults()
print(json.dumps({"untuned": untuned, "tuned": tuned, "applied": applied, "again": malloc_tuning()}))
"""


def probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "RS_EMBED_MALLOC_TUNING"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuning_stops_a_fresh_mmap_per_large_temporary_under_dask_trim_threshold() -> None:
    from rs_embed_dask.cluster.worker_setup import INFERENCE_MALLOC

    # what a Dask nanny gives its worker processes (distributed.nanny.pre-spawn-environ)
    res = probe(MALLOC_TRIM_THRESHOLD_="65536")
    assert res["applied"] == INFERENCE_MALLOC
    assert res["again"] == INFERENCE_MALLOC
    # every block was a fresh mapping, faulted in again (256 pages; the kernel may
    # map a few per fault)
    assert res["untuned"] > 200 * 32, res
    # after tuning the blocks come back from the heap
    assert res["tuned"] < res["untuned"] / 10, res


def test_tuning_leaves_glibc_dynamic_thresholds_alone() -> None:
    res = probe()
    assert res["applied"] is None
    assert res["again"] is None


def test_tuning_can_be_turned_off() -> None:
    res = probe(MALLOC_TRIM_THRESHOLD_="65536", RS_EMBED_MALLOC_TUNING="0")
    assert res["applied"] is None
    assert res["tuned"] > 200 * 32, res  # still a fresh mapping per block
