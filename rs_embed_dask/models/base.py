"""The embedder contract.

An embedder describes itself (:meth:`Embedder.describe`), says which sensor it
reads by default (:meth:`Embedder.default_sensor`), loads its weights once
per process (:meth:`Embedder.load`) and turns a batch of raw provider inputs
into embeddings (:meth:`Embedder.embed_inputs`).  Torch models subclass
:class:`TorchEmbedder` and implement three small hooks: ``build_module``,
``preprocess`` and ``forward_grid``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from rs_embed_dask.errors import ModelError
from rs_embed_dask.specs import OutputSpec, SensorSpec
from rs_embed_dask.types import Embedding

__all__ = ["Embedder", "TorchEmbedder", "resolve_device"]

S2_SR = "COPERNICUS/S2_SR_HARMONIZED"


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

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(model_config or {})
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

    def temporal_semantics(self) -> str:
        """How inputs are fetched in time (``"single"`` or ``"multi:<T>"``); part of the input-sharing key."""
        return "single" if self.n_frames is None else f"multi:{self.n_frames}"

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
    """

    requires = ("torch",)

    def __init__(self, model_config: Mapping[str, Any] | None = None) -> None:
        super().__init__(model_config)
        self.module: Any = None

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
        grid = self.forward_grid(x)
        return grid.amax(dim=(-2, -1)) if pooling == "max" else grid.mean(dim=(-2, -1))

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

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.supports_autocast and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def embed_inputs(
        self,
        inputs: Sequence[np.ndarray],
        *,
        output: OutputSpec,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Embedding]:
        import torch

        if not self._loaded:
            self.load(self.device)
        results: list[Embedding | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, arr in enumerate(inputs):
            groups.setdefault(tuple(np.shape(arr)), []).append(i)
        dev = torch.device(self.device)
        with self._lock, torch.inference_mode(), self._autocast():
            for shape, idx in groups.items():
                batch = np.stack([np.asarray(inputs[i], dtype=np.float32) for i in idx])
                t = torch.from_numpy(batch)
                t = t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)
                x = self.preprocess(t)
                if output.mode == "pooled":
                    out = self.forward_pooled(x, output.pooling)
                else:
                    out = self.forward_grid(x)
                out_np = out.float().cpu().numpy().astype(np.float32, copy=False)
                for j, i in enumerate(idx):
                    meta = self.base_meta(output)
                    meta["input_hw"] = [int(shape[-2]), int(shape[-1])]
                    if output.mode == "grid":
                        meta["grid_hw"] = [int(out_np.shape[-2]), int(out_np.shape[-1])]
                        meta["y_axis_direction"] = "north_to_south"
                    results[i] = Embedding(data=np.ascontiguousarray(out_np[j]), meta=meta)
        return [r for r in results if r is not None]
