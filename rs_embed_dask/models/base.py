"""The embedder contract.

An embedder describes itself (:meth:`Embedder.describe`), says which sensor it
reads by default (:meth:`Embedder.default_sensor`), loads its weights once
per process (:meth:`Embedder.load`) and turns a batch of raw provider inputs
into embeddings (:meth:`Embedder.embed_inputs`).  Torch models subclass
:class:`TorchEmbedder` and implement three small hooks: ``build_module``,
``preprocess`` and ``forward_grid``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.core.errors import ModelError
from rs_embed_dask.core.specs import OutputSpec, SensorSpec
from rs_embed_dask.core.types import Embedding
from rs_embed_dask.models.memory import default_memory_per_item
from rs_embed_dask.models.torch_runtime import (
    autocast_dtype_for,
    batch_size_for_memory,
    compile_backend_for,
    is_out_of_memory,
    pool_grid,
)

__all__ = [
    "Embedder",
    "TorchEmbedder",
    "autocast_dtype_for",
    "batch_size_for_memory",
    "compile_backend_for",
    "is_out_of_memory",
    "pool_grid",
    "resolve_device",
]

S2_SR = "COPERNICUS/S2_SR_HARMONIZED"
logger = logging.getLogger(__name__)


def resolve_device(device: str | None) -> str:
    """``"auto"`` -> ``cuda`` if available, else ``mps``, else ``cpu``; lower-cased otherwise."""
    dev = (device or "auto").strip().lower()
    if dev != "auto":
        return dev
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class Embedder:
    """Base class of every model.

    Class attributes
    ----------------
    name : str
        Canonical model id.
    model_type : str
        ``"onthefly"`` (reads provider pixels) or ``"precomputed"``.
    requires : tuple of str
        Importable modules needed to *run* the model (not to describe it).
    extra : str or None
        The optional-dependency extra providing ``requires``.
    config_keys : frozenset of str
        ``model_config`` keys the model accepts (``**model_kwargs``).
    n_frames : int or None
        Frames per input for multi-temporal models, ``None`` for one composite.
    supports_autocast : bool
        Whether bf16/fp16 autocast is safe for this model on a GPU.
    input_size : int or None
        The backbone's native square input in pixels (e.g. 224), used by
        ``input_prep`` to choose the tile size; ``None`` for any size.
    autocast_dtype : {"bfloat16", "float16"} or None
        Autocast precision on CUDA when ``supports_autocast`` (``None``:
        bfloat16 where the GPU supports it, else float16).
    image_level_vit_patch_grid : bool
        The grid output is an image-level ViT's patch tokens (satmae,
        scalemae): ``input_prep`` ``None``/``"auto"`` resolve to ``"tile"``
        and tiled grids warn about seams, as in rs-embed.
    runtime_config_keys : frozenset of str
        ``model_config`` keys every model of the class accepts that change how
        it runs, not what it computes (``compile`` for torch models); they are
        kept apart in ``runtime_options``, out of ``model_config``.
    modality_config_key : str or None
        The ``model_config`` key that ``modality=`` sets, for models whose
        weights differ per modality (croma's ``"modality"``).
    modality_aliases : dict of str to str
        Other names of the modalities in ``describe()["modalities"]``.
    requires_georef : bool
        The forward pass conditions on the ROI's location, so user data
        (``get_embedding_from_data``) must be georeferenced.
    square_fetch : bool
        The model needs a square input (rs-embed's ``_requires_square_input``):
        a rectangular BBox is fetched as the centred EPSG:3857 square around it
        and the output is cut back to the ROI (:mod:`rs_embed_dask.fetch_square`).
    roi_pooling : {"grid", "model"}
        The pooled output of such a cut-back square: the mean (or max) of the
        ROI's grid cells (``"grid"``), or the model's pooled vector of the whole
        square (``"model"``, for a pooled vector that is no pooling of the grid).
    """

    name: ClassVar[str] = ""
    model_type: ClassVar[str] = "onthefly"
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    config_keys: ClassVar[frozenset[str]] = frozenset()
    n_frames: ClassVar[int | None] = None
    supports_autocast: ClassVar[bool] = False
    input_size: ClassVar[int | None] = None
    output_modes: ClassVar[tuple[str, ...]] = ("pooled", "grid")
    autocast_dtype: ClassVar[str | None] = None
    image_level_vit_patch_grid: ClassVar[bool] = False
    runtime_config_keys: ClassVar[frozenset[str]] = frozenset()
    modality_config_key: ClassVar[str | None] = None
    modality_aliases: ClassVar[Mapping[str, str]] = {}
    requires_georef: ClassVar[bool] = False
    square_fetch: ClassVar[bool] = False
    roi_pooling: ClassVar[str] = "grid"
    memory_per_item = default_memory_per_item  # peak forward bytes of one input; models override

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(model_config or {})
        runtime = set(self.runtime_config_keys) - set(self.config_keys)
        self.runtime_options: dict[str, Any] = {k: cfg.pop(k) for k in sorted(runtime & set(cfg))}
        unknown = sorted(set(cfg) - set(self.config_keys))
        if unknown:
            # rs-embed's message, whether or not the model accepts other keys
            allowed = f" Allowed keys: {sorted(self.config_keys)}." if self.config_keys else ""
            raise ModelError(
                f"Model {self.name} does not accept model-specific keyword arguments for "
                f"get_embedding(); got keys {unknown}.{allowed}"
            )
        self.model_config = cfg
        self.device = "cpu"
        self._lock = threading.RLock()
        self._loaded = False

    # -- description -------------------------------------------------------------
    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`ModelError` with the ``pip install`` to run if a dependency is missing."""
        for mod in cls.requires:
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                hint = f"pip install 'rs-embed-dask[{cls.extra}]'" if cls.extra else f"pip install {mod}"
                raise ModelError(
                    f"Model {cls.name!r} needs the Python package {mod!r}, which is not installed. "
                    f"Install it with: {hint}"
                ) from exc

    def describe(self) -> dict[str, Any]:
        """What the model reads and returns (bands, scale, dims, outputs, temporal needs)."""
        raise NotImplementedError

    def describe_head(self, inputs: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
        """The leading keys of an on-the-fly model's ``describe()``, in order; callers add the rest.

        ``inputs`` is the ``"inputs"`` entry; ``defaults`` are merged over
        rs-embed's fetch defaults (``scale_m=10``, ``cloudy_pct=30``,
        ``composite="median"``).
        """
        return {
            "model": self.name,
            "type": "onthefly",
            "backend": ["provider"],
            "output": list(self.output_modes),
            "inputs": dict(inputs),
            "defaults": {"scale_m": 10, "cloudy_pct": 30, "composite": "median", **defaults},
        }

    def default_sensor(self) -> SensorSpec | None:
        """The sensor an export fetches when the request names none."""
        d = self.describe()
        inputs = d.get("inputs") or {}
        if not inputs.get("bands"):
            return None
        defaults = d.get("defaults") or {}
        return SensorSpec(
            collection=inputs.get("collection", S2_SR),
            bands=tuple(inputs["bands"]),
            scale_m=int(defaults.get("scale_m", 10)),
            cloudy_pct=int(defaults.get("cloudy_pct", 30)),
            composite=defaults.get("composite", "median"),
            fill_value=float(defaults.get("fill_value", 0.0)),
        )

    @property
    def is_precomputed(self) -> bool:
        """``True`` for products that are their own source (no provider fetch)."""
        return "precomputed" in self.model_type

    def frame_count(self, temporal: Any = None) -> int | None:
        """Frames fetched for a time window (``None``: one composite); ``temporal=None`` is rs-embed's default window.

        ``n_frames`` unless a model derives the count from the window (prithvi).
        """
        return self.n_frames

    def temporal_semantics(self, temporal: Any = None) -> str:
        """How inputs are fetched in time (``"single"`` or ``"multi:<T>"``); part of the input-sharing key."""
        n = self.frame_count(temporal)
        return "single" if n is None else f"multi:{n}"

    def resolve_input_size(self) -> int | None:
        """The square input size ``input_prep`` tiles to: ``input_size``, else ``describe()["defaults"]["image_size"]``.

        Override when the size depends on ``model_config``.  ``None`` means the
        model takes any size and is never tiled unless ``InputPrepSpec.tile_size``
        is given.
        """
        if self.input_size:
            return int(self.input_size)
        try:
            size = (self.describe().get("defaults") or {}).get("image_size")
        except NotImplementedError:
            return None
        return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None

    # -- running -----------------------------------------------------------------
    def load(self, device: str = "cpu") -> None:
        """Build the model and load its weights on ``device`` (once per process)."""
        self.device = resolve_device(device)
        self._loaded = True

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed a batch of raw provider inputs.

        Parameters
        ----------
        inputs : sequence of numpy.ndarray
            ``(C, H, W)`` (or ``(T, C, H, W)``) float32 arrays in raw provider units.
        output : OutputSpec
            Pooled or grid output.
        contexts : sequence of dict, optional
            Per input: ``spatial``, ``temporal``, ``sensor`` and ``fetch_meta``.

        Returns
        -------
        list of Embedding
            One per input, in order.
        """
        raise NotImplementedError

    def embed_spatials(
        self, spatials: Sequence[Any], *, temporal: Any, output: OutputSpec, sensor: SensorSpec | None
    ) -> list[Embedding]:
        """Precomputed products: read the embeddings of each ROI directly."""
        raise ModelError(f"Model {self.name!r} needs provider inputs; it is not a precomputed product.")

    def base_meta(self, output: OutputSpec) -> dict[str, Any]:
        """Meta keys every embedding of this model carries."""
        return {
            "model": self.name,
            "type": self.model_type,
            "output": output.mode,
            "pooling": output.pooling if output.mode == "pooled" else None,
            "device": self.device,
        }


class TorchEmbedder(Embedder):
    """A torch model: ``preprocess`` -> ``forward_grid`` -> pooled or grid output.

    Subclasses implement :meth:`build_module`, :meth:`preprocess` and
    :meth:`forward_grid`; :meth:`forward_pooled` defaults to pooling the grid.
    Models with per-input side inputs (coordinates, dates, ground sample
    distances from the embedding context) implement :meth:`side_inputs` and
    :meth:`forward_with_sides`; :meth:`input_meta` adds per-input meta keys.

    The forward pass runs on the process's device with pinned host memory and
    non-blocking copies, autocast where the class allows it
    (``supports_autocast``, ``autocast_dtype``), one device-to-host copy per
    forward batch, and batches shrunk to the device's free memory: a batch
    that runs out of memory is halved and retried, and the smaller size is
    kept for later batches of that input shape.  ``torch.compile`` is opt-in
    (``model_config={"compile": True}`` or a backend name, or
    ``RS_EMBED_TORCH_COMPILE=1``): the module is compiled on the first
    forward, and a compile failure warns and falls back to eager.
    """

    requires: ClassVar[tuple[str, ...]] = ("torch",)
    runtime_config_keys = frozenset({"compile"})

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self.module: Any = None
        self._eager_module: Any = None
        self._compiled = False
        self._compile_failed = False
        self._batch_caps: dict[tuple[int, ...], int] = {}
        self._bytes_per_item: dict[tuple[int, ...], float] = {}

    def build_module(self) -> Any:
        """Return the ``torch.nn.Module`` with its weights loaded (on CPU)."""
        raise NotImplementedError

    def preprocess(self, x: Any) -> Any:
        """Raw provider units ``(B, C, H, W)`` tensor -> model-ready tensor."""
        raise NotImplementedError

    def forward_grid(self, x: Any) -> Any:
        """Model-ready ``(B, C, H, W)`` -> feature grid ``(B, D, h, w)``."""
        raise NotImplementedError

    def forward_pooled(self, x: Any, pooling: str) -> Any:
        """Model-ready batch -> pooled ``(B, D)``; default: mean/max of the grid."""
        return pool_grid(self.forward_grid(x), pooling)

    def side_inputs(self, x: np.ndarray, context: Mapping[str, Any] | None) -> dict[str, np.ndarray | None]:
        """Per-input side values the forward pass needs besides the pixels.

        Parameters
        ----------
        x : numpy.ndarray
            One raw input, ``(C, H, W)`` or ``(T, C, H, W)``.
        context : dict or None
            Its embedding context (``spatial``, ``temporal``, ``sensor``,
            ``fetch_meta``), ``None`` when the caller gave none.

        Returns
        -------
        dict of str to numpy.ndarray or None
            The same keys for every input; ``None`` where the context does not
            give the value.  Each value is recorded in the embedding's meta.
            The default has none.
        """
        return {}

    def forward_with_sides(self, x: Any, sides: Mapping[str, Any], output: OutputSpec) -> Any:
        """Model-ready batch and its side inputs -> pooled ``(B, D)`` or grid ``(B, D, h, w)``.

        ``sides`` maps each key of :meth:`side_inputs` to the batch's stacked
        float32 tensor on the device, or ``None`` where no input of the batch
        knows it (a batch never mixes known and unknown values).  The default
        ignores ``sides`` and calls :meth:`forward_pooled` or :meth:`forward_grid`.
        """
        if output.mode == "pooled":
            return self.forward_pooled(x, output.pooling)
        return self.forward_grid(x)

    def input_meta(self, x: np.ndarray) -> dict[str, Any]:
        """Meta keys added to the embedding of one raw input (default: none)."""
        return {}

    def load(self, device: str = "cpu") -> None:
        with self._lock:
            if self._loaded:
                return
            self.check_available()
            import torch

            self.device = resolve_device(device)
            module = self.build_module()
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            self.module = module.to(torch.device(self.device))
            self._loaded = True

    # -- precision and compilation ------------------------------------------------------
    def autocast_settings(self) -> str | None:
        """Autocast dtype name used on this embedder's device, ``None`` for float32."""
        import torch

        dev = torch.device(self.device)
        bf16 = True
        if dev.type == "cuda" and torch.cuda.is_available():
            bf16 = bool(torch.cuda.is_bf16_supported())
        return autocast_dtype_for(
            self.supports_autocast, dev.type, preferred=self.autocast_dtype, bf16_supported=bf16
        )

    def _autocast(self) -> Any:
        import torch

        name = self.autocast_settings()
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=getattr(torch, name))

    def compile_backend(self) -> str | None:
        """The ``torch.compile`` backend this embedder uses, ``None`` when eager."""
        if self._compile_failed:
            return None
        return compile_backend_for(self.runtime_options.get("compile"))

    def _maybe_compile(self) -> None:
        backend = self.compile_backend()
        if backend is None or self._compiled or self.module is None:
            return
        import torch

        self._eager_module = self.module
        try:
            self.module = torch.compile(self._eager_module, backend=backend)
        except Exception as exc:
            self._compile_fallback(exc)
            return
        self._compiled = True

    def _compile_fallback(self, exc: BaseException) -> None:
        warnings.warn(
            f"torch.compile of model {self.name!r} failed ({exc!r}); running it eagerly.",
            RuntimeWarning,
            stacklevel=4,
        )
        if self._eager_module is not None:
            self.module = self._eager_module
        self._compiled = False
        self._compile_failed = True

    # -- the forward pass -----------------------------------------------------------------
    def _to_device(self, arr: np.ndarray) -> Any:
        """Host array -> device tensor (pinned memory and a non-blocking copy on CUDA)."""
        import torch

        dev = torch.device(self.device)
        t = torch.from_numpy(arr)
        return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)

    def _forward_to_host(
        self, batch: np.ndarray, output: OutputSpec, sides: Mapping[str, np.ndarray | None] | None = None
    ) -> np.ndarray:
        """Host batch (and side inputs) -> device -> preprocess -> forward -> one copy back as float32."""
        x = self.preprocess(self._to_device(batch))
        side_t = {k: None if v is None else self._to_device(v) for k, v in (sides or {}).items()}
        self._maybe_compile()
        try:
            out = self.forward_with_sides(x, side_t, output)
        except Exception as exc:
            if not self._compiled or is_out_of_memory(exc) or isinstance(exc, ModelError):
                raise
            self._compile_fallback(exc)
            out = self.forward_with_sides(x, side_t, output)
        return out.float().cpu().numpy().astype(np.float32, copy=False)

    def _device_batch_size(self, n: int, key: tuple[int, ...]) -> int:
        """Batch size for ``n`` items of shape ``key``: OOM back-off cap, then free device memory."""
        import torch

        bs = min(n, self._batch_caps.get(key, n))
        dev = torch.device(self.device)
        if dev.type == "cuda" and key in self._bytes_per_item:
            free, _total = torch.cuda.mem_get_info(dev)
            bs = batch_size_for_memory(bs, free, self._bytes_per_item[key])
        return max(1, bs)

    def _forward_batched(
        self, batch: np.ndarray, output: OutputSpec, sides: Mapping[str, np.ndarray | None] | None = None
    ) -> np.ndarray:
        """Run ``batch`` and its side inputs in device-sized sub-batches, halving on out-of-memory errors."""
        import torch

        dev = torch.device(self.device)
        key = tuple(batch.shape[1:])
        n = len(batch)
        bs = self._device_batch_size(n, key)
        parts: list[np.ndarray] = []
        i = 0
        while i < n:
            part = batch[i : i + bs]
            part_sides = {k: None if v is None else v[i : i + bs] for k, v in (sides or {}).items()}
            measure = dev.type == "cuda"
            if measure:
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            try:
                parts.append(self._forward_to_host(part, output, part_sides))
            except Exception as exc:
                if not is_out_of_memory(exc) or bs == 1:
                    raise
                bs = max(1, bs // 2)
                self._batch_caps[key] = bs
                logger.warning("Model %s ran out of memory; retrying with batches of %d.", self.name, bs)
                if measure:
                    torch.cuda.empty_cache()
                continue
            if measure:
                used = (torch.cuda.max_memory_allocated(dev) - base) / len(part)
                self._bytes_per_item[key] = max(self._bytes_per_item.get(key, 0.0), float(used))
            i += len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        """Embed a batch of raw provider inputs with their side inputs.

        Inputs are grouped by shape and by which side inputs
        (:meth:`side_inputs`) their contexts give, so that a batch gives
        exactly what single calls give; each group runs through the batched
        forward pass (pinned memory, autocast, out-of-memory back-off,
        optional compilation).  Side values are recorded in each embedding's
        meta, as are :meth:`input_meta`'s keys.

        Raises
        ------
        ModelError
            When ``contexts`` is given with another length than ``inputs``.
        """
        import torch

        if not self._loaded:
            self.load(self.device)
        ctxs: list[Mapping[str, Any] | None] = [None] * len(inputs) if contexts is None else list(contexts)
        if len(ctxs) != len(inputs):
            raise ModelError(f"{self.name}: got {len(inputs)} inputs but {len(ctxs)} contexts")
        sides = [self.side_inputs(np.asarray(x), c) for x, c in zip(inputs, ctxs, strict=True)]
        results: list[Embedding | None] = [None] * len(inputs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, arr in enumerate(inputs):
            known = tuple(sorted((k, v is not None) for k, v in sides[i].items()))
            groups.setdefault((tuple(np.shape(arr)), known), []).append(i)
        with self._lock, torch.inference_mode(), self._autocast():
            for (shape, known), idx in groups.items():
                batch = np.stack([np.asarray(inputs[i], dtype=np.float32) for i in idx])
                stacked = {
                    k: np.stack([np.asarray(sides[i][k], dtype=np.float32) for i in idx]) if ok else None
                    for k, ok in known
                }
                out_np = self._forward_batched(batch, output, stacked)
                for j, i in enumerate(idx):
                    meta = self.base_meta(output)
                    meta["input_hw"] = [int(shape[-2]), int(shape[-1])]
                    for k, v in sides[i].items():
                        meta[k] = None if v is None else np.asarray(v).tolist()
                    if output.mode == "grid":
                        meta["grid_hw"] = [int(out_np.shape[-2]), int(out_np.shape[-1])]
                        meta["y_axis_direction"] = "north_to_south"
                    meta.update(self.input_meta(np.asarray(inputs[i])))
                    results[i] = Embedding(data=np.ascontiguousarray(out_np[j]), meta=meta)
        return [r for r in results if r is not None]

    def embed_in_groups(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None,
        key_of: Callable[[np.ndarray, Mapping[str, Any] | None], Hashable],
        state: str,
        idle: Any,
    ) -> list[Embedding]:
        """:meth:`TorchEmbedder.embed_inputs` per group of inputs with one ``key_of(input, context)``.

        For models whose preprocessing depends on a per-input key (a fetch
        scale, a unit): while a group runs, under the model's lock, the
        attribute ``state`` holds the group's key; it is set back to ``idle``
        after.  Results come back in input order.
        """
        ctxs: list[Mapping[str, Any] | None] = [None] * len(inputs) if contexts is None else list(contexts)
        if len(ctxs) != len(inputs):
            raise ModelError(f"{self.name}: got {len(inputs)} inputs but {len(ctxs)} contexts")
        groups: dict[Hashable, list[int]] = {}
        for i, (x, c) in enumerate(zip(inputs, ctxs, strict=True)):
            groups.setdefault(key_of(x, c), []).append(i)
        results: list[Embedding | None] = [None] * len(inputs)
        with self._lock:
            for key, idx in groups.items():
                setattr(self, state, key)
                try:
                    part = TorchEmbedder.embed_inputs(
                        self,
                        [inputs[i] for i in idx],
                        output=output,
                        contexts=None if contexts is None else [ctxs[i] or {} for i in idx],
                    )
                finally:
                    setattr(self, state, idle)
                for i, emb in zip(idx, part, strict=True):
                    results[i] = emb
        return [r for r in results if r is not None]
