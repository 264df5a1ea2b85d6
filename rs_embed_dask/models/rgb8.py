"""8-bit RGB images and Pillow resizing, the way rs-embed prepares its RGB models' inputs.

rs-embed turns Sentinel-2 digital numbers into an 8-bit image
(``(clip(DN / 10000, 0, 1) * 255).astype(uint8)``), resizes that image with
Pillow's bicubic filter (``uint8`` in, ``uint8`` out) and only then scales to
``[0, 1]`` and normalises.  Pillow's filter is not torch's (another support,
rounding and clamping at every pass), so these helpers call Pillow itself:
the resized levels are the very bytes rs-embed feeds its models.

The functions take and return ``torch`` tensors in ``(B, C, H, W)`` layout;
the resize runs on the CPU, one image at a time, and the result is returned
on the input's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["normalize_levels", "pil_resize", "resize_short_side_center_crop", "to_levels_u8"]


def to_levels_u8(x: Any) -> Any:
    """Digital numbers ``(B, C, H, W)`` -> ``uint8`` levels ``floor(clip(DN / 10000, 0, 1) * 255)``.

    The arithmetic is float32, as numpy's on rs-embed's float32 arrays; the
    cast to ``uint8`` truncates.  Missing values (NaN) become level 0.
    """
    import torch

    unit = (x.to(torch.float32) / 10000.0).clamp(0.0, 1.0)
    return torch.nan_to_num(torch.floor(unit * 255.0), nan=0.0).to(torch.uint8)


def _pil_one(img: Any, size: tuple[int, int]) -> Any:
    """One ``(C, H, W)`` uint8 numpy image resized to ``size = (h, w)`` with ``Image.BICUBIC``."""
    import numpy as np
    from PIL import Image

    h, w = size
    if img.shape[0] == 3:  # rs-embed's own call: one RGB image
        rgb = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))  # mode RGB
        return np.asarray(rgb.resize((w, h), resample=Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    planes = [
        Image.fromarray(np.ascontiguousarray(p)).resize((w, h), resample=Image.Resampling.BICUBIC)
        for p in img
    ]
    return np.stack([np.asarray(p) for p in planes])


def pil_resize(levels: Any, size: int | Sequence[int]) -> Any:
    """Resize ``uint8`` levels ``(B, C, H, W)`` to ``size`` (``s`` or ``(h, w)``) with Pillow's bicubic filter.

    Parameters
    ----------
    levels : torch.Tensor
        ``uint8`` images; three channels are resized as one ``RGB`` image
        (what rs-embed does), other counts channel by channel (``L`` images).
    size : int or (int, int)
        Output side, or output height and width.

    Returns
    -------
    torch.Tensor
        ``uint8`` ``(B, C, h, w)`` on ``levels``' device; ``levels`` itself when
        it already has that size (Pillow would return a copy).
    """
    import numpy as np
    import torch

    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(levels.shape[-2:]) == (h, w):
        return levels
    host = levels.detach().to("cpu", torch.uint8).numpy()
    out = np.stack([_pil_one(img, (h, w)) for img in host])
    return torch.from_numpy(np.ascontiguousarray(out)).to(levels.device)


def resize_short_side_center_crop(levels: Any, size: int) -> Any:
    """Resize the short side to ``size`` and centre-crop, as torchvision does on ``uint8`` PIL images.

    The short side becomes ``size`` and the long one ``int(size * long / short)``
    (Pillow bicubic), then the centre ``size x size`` window is kept, its
    offset ``round((side - size) / 2)`` (CLIP's image transform, as rs-embed
    builds it for RemoteCLIP).
    """
    h, w = int(levels.shape[-2]), int(levels.shape[-1])
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    out = pil_resize(levels, (nh, nw))
    top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
    return out[..., top : top + size, left : left + size]


def normalize_levels(levels: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """``uint8`` levels -> ``(levels / 255 - mean) / std`` in float32 (``ToTensor`` then ``Normalize``)."""
    import torch

    x = levels.to(torch.float32) / 255.0
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
