"""IO threads below inference in a worker that shares its cores with the model (export/priority.py)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from rs_embed_dask.export import priority

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 0), ("0", 0), ("7", 7), ("40", 19), ("-3", 0), ("x", 0)]
)
def test_io_nice_reads_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int
) -> None:
    if value is None:
        monkeypatch.delenv("RS_EMBED_IO_NICE", raising=False)
    else:
        monkeypatch.setenv("RS_EMBED_IO_NICE", value)
    assert priority.io_nice() == expected


def test_run_as_io_runs_on_a_lowered_thread_and_leaves_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_IO_NICE", "5")
    before = _nice()
    seen: dict[str, int] = {}

    def work(a: int, *, b: int) -> int:
        seen["nice"] = _nice()
        seen["tid"] = threading.get_native_id()
        return a + b

    assert priority.run_as_io(work, 2, b=3) == 5
    assert seen["tid"] != threading.get_native_id()
    assert seen["nice"] >= min(19, before + 5)
    assert (
        _nice() == before
    )  # the calling thread (a Dask thread that may run inference next) keeps its priority
    with pytest.raises(ZeroDivisionError):
        priority.run_as_io(lambda: 1 / 0)


def test_without_the_variable_work_stays_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RS_EMBED_IO_NICE", raising=False)
    assert priority.run_as_io(threading.get_native_id) == threading.get_native_id()
    with priority.thread_pool(2) as pool:
        assert pool.submit(_nice).result() == _nice()


def test_thread_pool_threads_are_lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_IO_NICE", "3")
    base = _nice()
    with priority.thread_pool(3) as pool:
        values = {pool.submit(_nice).result() for _ in range(6)}
    assert values == {min(19, base + 3)}
    assert _nice() == base
