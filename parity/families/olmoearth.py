"""olmoearth: OlmoEarth v1.2 Base, written as the published ``config.json`` + ``weights.pth``.

The model is built with ``olmoearth_pretrain_minimal.OlmoEarthPretrain_v1("base", "v1.2")``
(the whole pretraining model: encoder, decoder, target encoder; default init, parameters
replaced by seeded values); ``config.json`` is the ``LatentMIMConfig`` it builds from
(``{"model": config.as_config_dict()}``), as the published repository's.  Both packages
read the same two files: rs-embed through ``load_model_from_id``, ours through
``Config.from_dict(...).build()`` and a strict ``load_state_dict``.

Windows: the plan's one-year window would give 12 frames of 64 x 64 tokens (49k tokens:
hours on two CPU cores), so olmoearth's cases use a 30-day window (one composite) and one
40-day window (two 30-day bins: 30 + 10 days, timestamps of the bin starts).
"""

from __future__ import annotations

from typing import Any

MODELS = {"olmoearth": 10}
NATIVE = {"olmoearth": 256}
HUB_FILES = {"olmoearth": {"rs_embed": ("allenai/OlmoEarth-v1_2-Base", "config.json", "weights.pth")}}
WINDOW = {"olmoearth": ("2022-06-01", "2022-07-01")}
WINDOWS = {"olmoearth": ((("2022-06-01", "2022-07-11"), 40),)}


def build(model: str) -> tuple[Any, dict[str, Any]]:
    """The v1.2 Base pretraining model (default init) and its ``config.json`` document."""
    from olmoearth_pretrain_minimal import OlmoEarthPretrain_v1
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.latent_mim import LatentMIMConfig

    captured: list[Any] = []
    original = LatentMIMConfig.build

    def _build(self: Any) -> Any:
        captured.append(self)
        return original(self)

    LatentMIMConfig.build = _build  # type: ignore[method-assign]
    try:
        wrapper = OlmoEarthPretrain_v1("base", "v1.2")
    finally:
        LatentMIMConfig.build = original  # type: ignore[method-assign]
    return wrapper.model, {"model": captured[0].as_config_dict()}
