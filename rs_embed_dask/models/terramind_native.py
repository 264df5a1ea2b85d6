"""TerraMind's raw-input S2L2A encoder written here, for ``model_config={"implementation": "native"}``.

``terratorch`` (the library that publishes TerraMind) is an optional extra of
about 400 MB (lightning, wandb, tensorboard, opencv, diffusers); this module
rebuilds the part of its ``TerraMindViT`` that embeds one raw Sentinel-2 L2A
image, with the same module names, so the published checkpoint's encoder
keys load unchanged with ``strict=True``:

* ``encoder_embeddings.untok_sen2l2a@224``: ``proj`` (a bias-free linear map
  of each 16 x 16 x 12 patch, pixels ordered ``(row, column, band)``),
  ``mod_emb`` and the fixed 2-D sin-cos table ``pos_emb`` (MoCo v3 layout:
  ``sin w, cos w, sin h, cos h``);
* ``encoder.<i>``: pre-norm blocks (``norm1``, ``attn.qkv``, ``attn.proj``,
  ``norm2``, ``mlp.fc1/fc2`` with GELU, or the gated ``fc1/fc2/fc3`` SwiGLU of
  the base and large models), LayerNorms without bias (a zero ``bias``
  buffer), ``eps=1e-6``;
* ``encoder_norm``.

With terratorch installed, ``tests/test_models_terramind.py`` checks that both
give the same tokens.
"""

from __future__ import annotations

from typing import Any, cast

__all__ = ["ARCH", "MODALITY_KEY", "build_native_encoder"]

MODALITY_KEY = "untok_sen2l2a@224"
#: model_key -> (dim, depth, heads, gated SwiGLU MLP, biases in attention and MLP)
ARCH: dict[str, tuple[int, int, int, bool, bool]] = {
    "terramind_v1_tiny": (192, 12, 3, False, True),
    "terramind_v1_small": (384, 12, 6, False, True),
    "terramind_v1_base": (768, 12, 12, True, False),
    "terramind_v1_large": (1024, 24, 16, True, False),
    "terramind_v01_base": (768, 12, 12, True, False),
}


def _sincos_2d(h: int, w: int, dim: int) -> Any:
    import torch

    gw, gh = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="ij")  # (W, H), as TerraMind builds it
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ow = torch.einsum("n,d->nd", gw.reshape(-1).float(), omega)
    oh = torch.einsum("n,d->nd", gh.reshape(-1).float(), omega)
    return torch.cat([torch.sin(ow), torch.cos(ow), torch.sin(oh), torch.cos(oh)], dim=1).unsqueeze(0)


def build_native_encoder(
    model_key: str, *, in_chans: int = 12, image_size: int = 224, patch: int = 16
) -> Any:
    """TerraMind's S2L2A raw-input encoder for ``model_key`` (random weights; load the checkpoint into it)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dim, depth, heads, gated, bias = ARCH[model_key]

    class _Norm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.register_buffer("bias", torch.zeros(dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(x, (dim,), self.weight, cast(torch.Tensor, self.bias), eps=1e-6)

    class _Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
            self.proj = nn.Linear(dim, dim, bias=bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
            y = F.scaled_dot_product_attention(q, k, v, scale=(c // heads) ** -0.5)
            return self.proj(y.transpose(1, 2).reshape(b, n, c))

    class _Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = int(2 * 4 * dim / 3) if gated else 4 * dim
            self.fc1 = nn.Linear(dim, hidden, bias=bias)
            self.fc2 = nn.Linear(hidden, dim, bias=bias)
            if gated:
                self.fc3 = nn.Linear(dim, hidden, bias=bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if gated:
                return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))
            return self.fc2(F.gelu(self.fc1(x)))

    class _Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.attn, self.norm2, self.mlp = _Norm(), _Attention(), _Norm(), _Mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class _Embedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = image_size // patch
            self.register_buffer("pos_emb", _sincos_2d(g, g, dim))
            self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
            self.proj = nn.Linear(in_chans * patch * patch, dim, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            nh, nw = h // patch, w // patch
            # b c (nh ph) (nw pw) -> b (nh nw) (ph pw c)
            p = x.reshape(b, c, nh, patch, nw, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, -1)
            return self.proj(p) + (cast(torch.Tensor, self.pos_emb) + self.mod_emb)

    class TerraMindS2L2AEncoder(nn.Module):
        """``{"S2L2A": (B, 12, 224, 224)}`` -> ``[tokens (B, 196, D)]`` (the last layer, after ``encoder_norm``)."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder_embeddings = nn.ModuleDict({MODALITY_KEY: _Embedding()})
            self.encoder = nn.ModuleList([_Block() for _ in range(depth)])
            self.encoder_norm = _Norm()

        def forward(self, d: dict[str, torch.Tensor]) -> list[torch.Tensor]:
            x = self.encoder_embeddings[MODALITY_KEY](next(iter(d.values())))
            for blk in self.encoder:
                x = blk(x)
            return [self.encoder_norm(x)]

    return TerraMindS2L2AEncoder()
