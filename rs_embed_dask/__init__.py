"""rs-embed-dask: rs-embed's API for remote-sensing embeddings, run on a Dask cluster.

Code written for ``rs_embed`` runs after changing the import::

    from rs_embed_dask import PointBuffer, TemporalSpec, get_embedding
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from rs_embed_dask.api import get_embedding, get_embeddings_batch
from rs_embed_dask.api_data import (
    get_embedding_from_data,
    get_embeddings_batch_from_data,
    list_models_for_data,
)
from rs_embed_dask.core.errors import (
    ExportIntegrityError,
    ExportLockedError,
    ModelError,
    ProviderError,
    RSEmbedError,
    SpecError,
)
from rs_embed_dask.core.registry import (
    describe_model,
    list_models,
    list_providers,
    register_model,
    register_provider,
)
from rs_embed_dask.core.specs import (
    BBox,
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)
from rs_embed_dask.core.types import (
    Embedding,
    ExportConfig,
    ExportLayout,
    ExportModelRequest,
    ExportTarget,
    ModelConfig,
)
from rs_embed_dask.export.batch import export_batch, export_npz
from rs_embed_dask.export.exporter import BatchExporter
from rs_embed_dask.export.load import load_export
from rs_embed_dask.export.results import ExportResult, ModelResult
from rs_embed_dask.inspect_api import inspect_gee_patch, inspect_model_input, inspect_provider_patch
from rs_embed_dask.model_api import Model
from rs_embed_dask.pretty_warnings import disable_pretty_warnings, enable_pretty_warnings
from rs_embed_dask.regions import RegionTiles, read_spatials, tile_region
from rs_embed_dask.resolve import reset_runtime
from rs_embed_dask.user_data import UserData

try:
    __version__ = version("rs-embed-dask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "BBox",
    "BatchExporter",
    "Embedding",
    "ExportConfig",
    "ExportIntegrityError",
    "ExportLayout",
    "ExportLockedError",
    "ExportModelRequest",
    "ExportResult",
    "ExportTarget",
    "FetchSpec",
    "InputPrepSpec",
    "Model",
    "ModelConfig",
    "ModelError",
    "ModelResult",
    "OutputSpec",
    "PointBuffer",
    "ProviderError",
    "RSEmbedError",
    "RegionTiles",
    "SensorSpec",
    "SpecError",
    "TemporalSpec",
    "UserData",
    "__version__",
    "describe_model",
    "disable_pretty_warnings",
    "enable_pretty_warnings",
    "export_batch",
    "export_npz",
    "get_embedding",
    "get_embedding_from_data",
    "get_embeddings_batch",
    "get_embeddings_batch_from_data",
    "inspect_gee_patch",
    "inspect_model_input",
    "inspect_provider_patch",
    "list_models",
    "list_models_for_data",
    "list_providers",
    "load_export",
    "read_spatials",
    "register_model",
    "register_provider",
    "reset_runtime",
    "tile_region",
]

# rs-embed's import-time side effect: this package's warnings as a short block
# (opt out with RS_EMBED_PLAIN_WARNINGS=1)
enable_pretty_warnings()
