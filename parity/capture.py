"""Record what each side hands its model: the input of the patch embedding.

A global ``torch`` forward pre-hook (it sees every module of every model in
the process, including those hidden in a package's caches) records the first
argument of each *patchifier*: a convolution whose stride equals its kernel
(open_clip's ``conv1``, timm's ``patch_embed.proj``, Prithvi's 3-D
``patch_embed.proj``) or DOFA's wavelength-conditioned patch embedding,
whose convolution is functional.  That tensor is the model-ready input
(normalised, resized, padded), so comparing it between the sides tells
whether a difference comes from preprocessing or from the network.

Each sample of a captured batch is recorded separately: its shape, the sha256
of its float32 bytes and (for the first ``keep`` samples) the array itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from parity.inputs import sha256_f32

__all__ = ["capture_model_inputs"]

# Patch embeddings that are modules but whose convolution is functional.
_PATCH_EMBED_CLASSES = {"DynamicMLPOFA", "DOFAEmbedding", "Dynamic_MLP_OFA"}


def _is_patchifier(module: Any) -> bool:
    import torch

    if type(module).__name__ in _PATCH_EMBED_CLASSES:
        return True
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
        k, s = tuple(module.kernel_size), tuple(module.stride)
        return k == s and max(k) >= 4
    return False


@contextmanager
def capture_model_inputs(keep: int = 6) -> Any:
    """Context manager yielding a list that fills with one record per captured sample.

    Parameters
    ----------
    keep : int
        Samples whose arrays are kept (the others keep only shape and hash).

    Yields
    ------
    list of dict
        ``{"module": class name, "shape": [...], "sha256": str, "array":
        numpy.ndarray or None}`` in call order.
    """
    import torch

    records: list[dict[str, Any]] = []

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        if not args or not _is_patchifier(module):
            return
        x = args[0]
        if not (torch.is_tensor(x) and x.is_floating_point() and x.ndim in (4, 5)):
            return
        arr = x.detach().float().cpu().numpy()
        for sample in arr:
            records.append(
                {
                    "module": type(module).__name__,
                    "shape": list(sample.shape),
                    "sha256": sha256_f32(sample),
                    "array": np.array(sample, dtype=np.float32) if len(records) < keep else None,
                }
            )

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield records
    finally:
        handle.remove()
