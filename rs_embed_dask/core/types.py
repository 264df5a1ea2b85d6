"""``rs_embed.core.types``: export types, ``FetchResult`` and ``UserData``.

``UserData`` is imported on first access (from :mod:`rs_embed_dask.user_data`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_dask.providers.base import FetchResult
from rs_embed_dask.types import ExportConfig, ExportLayout, ExportModelRequest, ExportTarget, ModelConfig

if TYPE_CHECKING:
    from rs_embed_dask.user_data import UserData

__all__ = [
    "ExportConfig",
    "ExportLayout",
    "ExportModelRequest",
    "ExportTarget",
    "FetchResult",
    "ModelConfig",
    "UserData",
]


def __getattr__(name: str) -> Any:
    if name == "UserData":
        from rs_embed_dask.user_data import UserData

        return UserData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
