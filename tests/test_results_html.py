"""Notebook HTML views of export results: models, statuses, counts, shapes and whole error texts, no array read."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from rs_embed_dask import load_export
from rs_embed_dask.export.results import ModelResult

FIXTURES = Path(__file__).parent / "data" / "upstream_exports"


def test_model_result_html_names_counts_shapes_and_whole_errors_without_reading():
    long = "fetch failed: " + "x" * 300 + " END"
    lazy = da.zeros((4, 8), dtype=np.float32, chunks=2)
    m = ModelResult(
        "rcf", "partial", lazy, None, [{}] * 4,
        errors={1: long, 3: long}, item_status=np.array([1, 2, 1, 2], dtype=np.int8),
    )  # fmt: skip
    html = m._repr_html_()
    assert "<code>rcf</code>" in html
    assert "partial" in html
    assert "2 ok, 2 failed" in html
    assert "(4, 8) float32 (lazy)" in html
    assert "2 items</code>: fetch failed: " + "x" * 300 + " END" in html  # the whole message, once
    assert not m.loaded


def test_error_text_is_escaped():
    m = ModelResult("m", "failed", None, None, None, error="<script>alert(1)</script>")
    html = m._repr_html_()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_export_result_html_of_an_rs_embed_export():
    r = load_export(FIXTURES / "combined_npz_fetch_failed.npz")
    html = r._repr_html_()
    assert html.startswith("<div><b>ExportResult</b> combined")
    assert f"{r.n_items} items" in html
    for name, m in r.models.items():
        assert f"<code>{name}</code>" in html
        assert m.status in html
    assert ".to_xarray()" in html
