"""The SatVision SwinV2 architecture as plain data (no torch), so describing the model stays light."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GIANT", "SatVisionArch"]


@dataclass(frozen=True)
class SatVisionArch:
    """Architecture of a SatVision SwinV2 encoder.

    Attributes
    ----------
    embed_dim : int
        Channels of stage 0 (doubled at every merge).
    depths, num_heads : tuple of int
        Blocks and attention heads per stage.
    in_chans, img_size, patch_size, window_size : int
        Input channels, input side, patch side and attention window.
    norm_period : int
        An extra LayerNorm (``norm3``) after every ``norm_period``-th block of a stage (0: none).
    norm_stage : bool
        An extra LayerNorm after the last block of every stage as well.
    pretrained_window_sizes : tuple of int
        Window of the pretraining run per stage (0: this window), scales the position-bias table.
    mlp_ratio : float
    """

    embed_dim: int = 512
    depths: tuple[int, ...] = (2, 2, 42, 2)
    num_heads: tuple[int, ...] = (16, 32, 64, 128)
    in_chans: int = 14
    img_size: int = 128
    patch_size: int = 4
    window_size: int = 8
    norm_period: int = 6
    norm_stage: bool = False
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    mlp_ratio: float = 4.0

    @property
    def num_features(self) -> int:
        """Channels of the last stage (the embedding width)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def grid_side(self) -> int:
        """Side of the last stage's token map."""
        return self.img_size // self.patch_size // 2 ** (len(self.depths) - 1)


#: The published SatVision-TOA giant (rs-embed's hard-coded build): 4096-d, 4 x 4 tokens at 128 px.
GIANT = SatVisionArch()
