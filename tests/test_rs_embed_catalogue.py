"""Every model of rs-embed 0.3.1's catalogue is listed here, and each of its names resolves.

The names are rs-embed 0.3.1's ``rs_embed.embedders.catalog.MODEL_SPECS`` (20
canonical ids) and ``MODEL_ALIASES`` (legacy ids), written out as data so the
test needs no rs-embed install.  Until all 20 families are built, the test of
the missing ones fails and names them.
"""

from __future__ import annotations

import pytest

from rs_embed_dask.core.registry import canonical_model_name, get_model_class, list_models

#: rs-embed 0.3.1 ``MODEL_SPECS`` keys, in its order.
RS_EMBED_MODELS = (
    "gse", "remoteclip", "copernicus", "tessera", "satmae", "satmaepp", "scalemae",
    "anysat", "galileo", "wildsat", "prithvi", "terrafm", "terramind", "dofa", "fomo",
    "thor", "agrifm", "satvision", "olmoearth", "clay",
)  # fmt: skip

#: rs-embed 0.3.1 ``MODEL_ALIASES``: legacy id -> canonical id.
RS_EMBED_ALIASES = {
    "gse_annual": "gse",
    "remoteclip_s2rgb": "remoteclip",
    "copernicus_embed": "copernicus",
    "satmae_rgb": "satmae",
    "satmaepp_rgb": "satmaepp",
    "satmae++": "satmaepp",
    "scalemae_rgb": "scalemae",
    "prithvi_eo_v2_s2_6b": "prithvi",
    "terrafm_b": "terrafm",
    "thor_1_0_base": "thor",
    "satvision_toa": "satvision",
}


def test_the_catalogue_data_is_complete() -> None:
    assert len(RS_EMBED_MODELS) == 20 == len(set(RS_EMBED_MODELS))
    assert set(RS_EMBED_ALIASES.values()) <= set(RS_EMBED_MODELS)


def test_list_models_holds_every_rs_embed_model() -> None:
    listed = set(list_models())
    missing = [m for m in RS_EMBED_MODELS if m not in listed]
    assert not missing, f"rs-embed 0.3.1 models missing from list_models(): {missing}"


@pytest.mark.parametrize("name", RS_EMBED_MODELS)
def test_each_canonical_name_resolves_to_a_model_class(name: str) -> None:
    assert canonical_model_name(name) == name
    cls = get_model_class(name)
    assert cls is get_model_class(f"  {name.upper()} ")  # rs-embed strips and lower-cases names


@pytest.mark.parametrize(("alias", "target"), sorted(RS_EMBED_ALIASES.items()))
def test_each_rs_embed_alias_resolves_to_its_model(alias: str, target: str) -> None:
    assert canonical_model_name(alias) == target
    assert alias in list_models(include_aliases=True)
    assert get_model_class(alias) is get_model_class(target)
