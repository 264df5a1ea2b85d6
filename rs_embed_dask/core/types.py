"""Export request types and the :class:`Embedding` result, as in rs-embed (``rs_embed.core.types``).

rs-embed's ``FetchResult`` and ``UserData`` are importable from here too; they
live in :mod:`rs_embed_dask.providers.base` and :mod:`rs_embed_dask.user_data`
and are imported on first access (both import this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import FetchSpec, InputPrepSpec, SensorSpec

if TYPE_CHECKING:
    from rs_embed_dask.providers.base import FetchResult
    from rs_embed_dask.user_data import UserData

__all__ = [
    "EXPORT_FORMATS",
    "Embedding",
    "ExportConfig",
    "ExportLayout",
    "ExportModelRequest",
    "ExportTarget",
    "FetchResult",
    "ModelConfig",
    "UserData",
]

#: Formats ``export_batch`` writes.  rs-embed knows the first two.
EXPORT_FORMATS: tuple[str, ...] = ("npz", "netcdf", "zarr")


class ExportLayout(str, Enum):  # noqa: UP042 - StrEnum would change str(member) that writers may use
    """One file for all ROIs (``combined``) or one file per ROI (``per_item``)."""

    COMBINED = "combined"
    PER_ITEM = "per_item"


@dataclass(frozen=True)
class ExportTarget:
    """Where an export goes.

    Use :meth:`ExportTarget.combined` or :meth:`ExportTarget.per_item`.
    """

    layout: ExportLayout
    out_file: str | None = None
    out_dir: str | None = None
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layout, str) and not isinstance(self.layout, ExportLayout):
            try:
                object.__setattr__(self, "layout", ExportLayout(self.layout))
            except ValueError as exc:
                raise ModelError(
                    f"ExportTarget.layout must be 'combined' or 'per_item'; got {self.layout!r}"
                ) from exc
        if isinstance(self.names, (str, bytes)):
            raise TypeError(
                f"ExportTarget names must be a list of file names, one per ROI; got the string {self.names!r} "
                "(a str is not a list of names)."
            )
        if self.names is not None and not isinstance(self.names, tuple):
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    @classmethod
    def combined(cls, out_file: str) -> ExportTarget:
        """All ROIs in one ``.npz`` / ``.nc`` / ``.zarr`` file."""
        return cls(layout=ExportLayout.COMBINED, out_file=str(out_file))

    @classmethod
    def per_item(cls, out_dir: str, *, names: list[str] | None = None) -> ExportTarget:
        """One file pair per ROI in ``out_dir`` (``p00000.npz`` + ``p00000.json`` ...)."""
        if isinstance(names, (str, bytes)):
            raise TypeError(
                f"names must be a list of file names, one per ROI; got the string {names!r} "
                "(a str is not a list of names)."
            )
        return cls(
            layout=ExportLayout.PER_ITEM,
            out_dir=str(out_dir),
            names=None if names is None else tuple(str(n) for n in names),
        )


@dataclass(frozen=True)
class ExportModelRequest:
    """A model in an export, with per-model overrides."""

    name: str
    sensor: SensorSpec | None = None
    fetch: FetchSpec | None = None
    modality: str | None = None
    model_config: dict[str, Any] | None = None

    @classmethod
    def configure(
        cls,
        name: str,
        *,
        sensor: SensorSpec | None = None,
        fetch: FetchSpec | None = None,
        modality: str | None = None,
        **model_kwargs: Any,
    ) -> ExportModelRequest:
        """Build a request whose extra keywords become ``model_config``."""
        return cls(
            name=name,
            sensor=sensor,
            fetch=fetch,
            modality=modality,
            model_config=dict(model_kwargs) or None,
        )

    def __hash__(self) -> int:  # model_config is a dict
        return hash((self.name, self.sensor, self.fetch, self.modality, repr(self.model_config)))


@dataclass(frozen=True)
class ModelConfig:
    """A model request after resolution (internal, public in rs-embed)."""

    name: str
    backend: str
    sensor: SensorSpec | None = None
    model_config: dict[str, Any] | None = None
    model_type: str = ""

    @property
    def is_precomputed(self) -> bool:
        """``True`` for products served as precomputed embeddings."""
        return "precomputed" in self.model_type.lower()

    def __hash__(self) -> int:
        return hash((self.name, self.backend, self.sensor, repr(self.model_config), self.model_type))


@dataclass(frozen=True)
class ExportConfig:
    """Run options of :func:`export_batch` (rs-embed's fields and defaults)."""

    format: str = "npz"
    save_inputs: bool = True
    save_embeddings: bool = True
    save_manifest: bool = True
    fail_on_bad_input: bool = False
    chunk_size: int = 16
    infer_batch_size: int | None = None
    num_workers: int = 8
    continue_on_error: bool = False
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    async_write: bool = True
    writer_workers: int = 2
    resume: bool = False
    show_progress: bool = True
    input_prep: InputPrepSpec | str | None = None

    @property
    def effective_infer_batch_size(self) -> int:
        """``infer_batch_size`` falling back to ``chunk_size``, at least 1."""
        return max(1, int(self.infer_batch_size or self.chunk_size))

    @property
    def effective_chunk_size(self) -> int:
        """``chunk_size``, at least 1."""
        return max(1, int(self.chunk_size))

    @property
    def normalized_format(self) -> str:
        """The format lower-cased; :class:`ModelError` when unsupported."""
        fmt = str(self.format).strip().lower()
        if fmt not in EXPORT_FORMATS:
            raise ModelError(
                f"Unsupported export format: {self.format!r}. Supported: {EXPORT_FORMATS}."
            )
        return fmt

    def validate(self) -> None:
        """Check every field, naming the field and the allowed values."""
        _ = self.normalized_format
        for name in ("chunk_size", "num_workers", "writer_workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ModelError(f"ExportConfig.{name} must be an integer >= 1; got {v!r}.")
        if self.infer_batch_size is not None and (
            isinstance(self.infer_batch_size, bool)
            or not isinstance(self.infer_batch_size, int)
            or self.infer_batch_size < 1
        ):
            raise ModelError(
                f"ExportConfig.infer_batch_size must be None or an integer >= 1; "
                f"got {self.infer_batch_size!r}."
            )
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ModelError(f"ExportConfig.max_retries must be an integer >= 0; got {self.max_retries!r}.")
        if not isinstance(self.retry_backoff_s, (int, float)) or self.retry_backoff_s < 0:
            raise ModelError(
                f"ExportConfig.retry_backoff_s must be a number >= 0; got {self.retry_backoff_s!r}."
            )


@dataclass
class Embedding:
    """An embedding and its metadata.

    Attributes
    ----------
    data : numpy.ndarray or xarray.DataArray
        ``(D,)`` float32 for pooled output, ``(D, H, W)`` for grid output.
    meta : dict
        Model, input, grid and preparation information.
    """

    data: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # the generated dataclass __eq__ compares arrays with ``==`` and raises
        # "truth value of an array is ambiguous"; compare values, dtype and shape.
        if not isinstance(other, Embedding):
            return NotImplemented
        a = np.asarray(getattr(self.data, "values", self.data))
        b = np.asarray(getattr(other.data, "values", other.data))
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
            return False
        try:
            return bool(self.meta == other.meta)
        except ValueError:  # arrays inside meta
            return False

    def to_numpy(self) -> np.ndarray:
        """The values as a float32 numpy array."""
        return np.asarray(getattr(self.data, "values", self.data), dtype=np.float32)

    def to_xarray(self) -> Any:
        """The values as an :class:`xarray.DataArray` (dims ``d`` or ``d, y, x``)."""
        import xarray as xr

        if isinstance(self.data, xr.DataArray):
            return self.data
        arr = self.to_numpy()
        dims: tuple[str, ...] = ("d",) if arr.ndim == 1 else ("d", "y", "x")[-arr.ndim :]
        return xr.DataArray(arr, dims=dims, name="embedding", attrs={"model": self.meta.get("model")})


OutputMode = Literal["grid", "pooled"]


def __getattr__(name: str) -> Any:
    if name == "FetchResult":
        from rs_embed_dask.providers.base import FetchResult

        return FetchResult
    if name == "UserData":
        from rs_embed_dask.user_data import UserData

        return UserData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
