"""The input check the time-series models share: a batch of frames of known bands.

AgriFM, Galileo and Prithvi read ``(B, T, C, H, W)`` batches; a batch of
``(B, C, H, W)`` composites becomes a series of one frame (or of a model's
fixed frame count, the composite repeated).
"""

from __future__ import annotations

from typing import Any

from rs_embed_dask.core.errors import ModelError

__all__ = ["series_batch"]


def series_batch(x: Any, n_bands: int, expects: str, *, repeat: int = 1) -> Any:
    """``x`` (a torch tensor) as a ``(B, T, n_bands, H, W)`` batch.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, T, C, H, W)`` series or ``(B, C, H, W)`` composites.
    n_bands : int
        The bands ``C`` the model reads.
    expects : str
        The start of the error message, e.g. ``"prithvi expects (T, 6, H, W) inputs"``;
        the input's shape (without the batch axis) is appended.
    repeat : int, default 1
        Frames a composite becomes (a view of it repeated).

    Raises
    ------
    ModelError
        When ``x`` is neither, or has another number of bands.
    """
    if x.ndim == 4:
        x = x.unsqueeze(1) if repeat == 1 else x.unsqueeze(1).expand(-1, repeat, -1, -1, -1)
    if x.ndim != 5 or x.shape[2] != n_bands:
        raise ModelError(f"{expects}; got shape {tuple(x.shape[1:])}")
    return x
