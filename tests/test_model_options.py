"""One way to pass model options and weights, whatever the entry point.

``get_embedding(..., weights=PATH)`` (rs-embed's ``**model_kwargs``) and
``get_embedding(..., model_config={"weights": PATH})`` (the form of
``ExportModelRequest`` and job files) mean the same thing, and the "no
weights" error names both.
"""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_dask import PointBuffer, TemporalSpec, get_embedding
from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.resolve import flatten_model_config, resolve_model

ROI = PointBuffer(12.5, 41.9, 320)
WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")


def test_flatten_model_config():
    assert flatten_model_config(None) is None
    assert flatten_model_config({"seed": 1}) == {"seed": 1}
    assert flatten_model_config({"model_config": {"seed": 1}, "features": 8}) == {"seed": 1, "features": 8}
    assert flatten_model_config({"model_config": None}) is None
    with pytest.raises(ModelError, match=r"given both as keywords and in model_config"):
        flatten_model_config({"model_config": {"seed": 1}, "seed": 2})
    with pytest.raises(ModelError, match=r"model_config must be a dict of model options; got str"):
        flatten_model_config({"model_config": "seed=1"})


def test_keyword_and_model_config_forms_give_the_same_embedding():
    a = get_embedding("rcf", spatial=ROI, temporal=WHEN, backend="synthetic", seed=3, features=64)
    b = get_embedding("rcf", spatial=ROI, temporal=WHEN, backend="synthetic", model_config={"seed": 3, "features": 64})
    c = get_embedding("rcf", spatial=ROI, temporal=WHEN, backend="synthetic", features=64)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.shape == (64,)
    assert not np.array_equal(a.data, c.data)
    assert resolve_model("rcf", backend="synthetic", model_config={"model_config": {"seed": 3}}).config_dict == {"seed": 3}


def test_missing_weights_error_names_every_form(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("RS_EMBED_SATMAE_WEIGHTS", raising=False)
    with pytest.raises(ModelError) as info:
        get_embedding("satmae", spatial=ROI, temporal=WHEN, backend="synthetic")
    msg = str(info.value)
    assert "No weights found for model 'satmae'" in msg
    assert "weights='/path/to/checkpoint'" in msg
    assert "model_config={'weights': ...}" in msg
    assert "RS_EMBED_SATMAE_WEIGHTS=" in msg
    # the form the message gives is accepted by get_embedding
    with pytest.raises(ModelError, match="does not exist"):
        get_embedding("satmae", spatial=ROI, temporal=WHEN, backend="synthetic", model_config={"weights": str(tmp_path / "nope.pth")})
