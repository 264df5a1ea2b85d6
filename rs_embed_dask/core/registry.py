"""``rs_embed.core.registry``: ``register``, ``get_embedder_cls`` and ``list_models``.

They work on this package's model registry (:mod:`rs_embed_dask.registry`),
whose own functions are re-exported too.  Unlike rs-embed's runtime
registry, :func:`list_models` lists every registered model, imported or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rs_embed_dask.registry import (
    canonical_model_name,
    describe_model,
    get_model_class,
    get_provider_class,
    list_models,
    list_providers,
    register_model,
    register_provider,
)

__all__ = [
    "canonical_model_name",
    "describe_model",
    "get_embedder_cls",
    "get_model_class",
    "get_provider_class",
    "list_models",
    "list_providers",
    "register",
    "register_model",
    "register_provider",
]

T = TypeVar("T", bound=type)

#: rs-embed's name for :func:`rs_embed_dask.registry.get_model_class`.
get_embedder_cls = get_model_class


def register(name: str) -> Callable[[T], T]:
    """Class decorator registering an embedder under ``name`` (replacing an earlier one).

    Parameters
    ----------
    name : str
        Model id or alias (case-insensitive).

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Examples
    --------
    >>> from rs_embed_dask.core.registry import register
    >>> from rs_embed_dask.models.base import Embedder
    >>> @register("my_model")  # doctest: +SKIP
    ... class MyModel(Embedder): ...
    """

    def deco(cls: T) -> T:
        register_model(name, cls, overwrite=True)
        return cls

    return deco
