"""A small vision-transformer generator: conv encoder to 1/``patch`` resolution, self-attention there, conv decoder.

Contract: see ``blocks.Generator``. Input is padded to a multiple of ``patch`` and to at least ``2 * patch`` (the
token grid is then at least 2x2 and reflection padding is valid at every level).

Shape: a 3x3 stem at full resolution (``dim / 4`` channels, at least 8), ``log2(patch)`` 3x3 stride-2 convs
doubling channels up to ``dim``, ``depth`` pre-norm transformer blocks over the flattened token grid, then as many
nearest-upsample + 3x3 conv stages back up, each added to the encoder map of the same size (additive U-Net skips:
attention at 1/8 resolution alone loses the photo's fine edges), and a 3x3 conv to RGB.

Each block: ``x + dwconv3x3(x)`` (conditional position encoding, Chu et al. 2021 "CPVT": position comes from the
zero-padded depthwise conv seeing the border, so there is no position table and any size works), then
``x + attn(LN(x))`` and ``x + mlp(LN(x))``. Attention is written with matmul/softmax (no nn.MultiheadAttention,
which exports poorly with dynamic sizes). Its cost grows with the square of the token count: at ``patch=8``
a 512x512 image has 4096 tokens (about 2 GMAC of attention per block); ``patch=4`` is for small images.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AtelierError
from .blocks import Generator, check_float, check_int, conv, init_weights, norm, up_conv

PATCHES = (2, 4, 8, 16)


class Attention(nn.Module):
    """Multi-head self-attention over tokens ``[N, L, C]`` with plain matmul and softmax."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, c = x.shape
        # [N, L, 3, heads, C/heads] -> three [N, heads, L, C/heads]; -1 keeps L symbolic for a dynamic export.
        q, k, v = self.qkv(x).reshape(n, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, -1, c))


class TransformerBlock(nn.Module):
    """Conditional position encoding, then pre-norm attention and MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        # Zero padding on purpose: the border's zeros are what tells a token where it is (CPVT).
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x + self.pos(x)
        t = x.flatten(2).transpose(1, 2)  # [N, H*W, C]
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(n, c, h, w)


class TransformerGenerator(Generator):
    """Conv encoder to 1/``patch``, ``depth`` transformer blocks, conv decoder with additive skips."""

    name = "transformer"

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 4, patch: int = 8, mlp_ratio: int = 4,
                 dropout: float = 0.0):
        where = "transformer generator"
        check_int(where, "dim", dim, 8, 1024)
        check_int(where, "heads", heads, 1, 64)
        check_int(where, "depth", depth, 0, 32)
        check_int(where, "mlp_ratio", mlp_ratio, 1, 16)
        check_float(where, "dropout", dropout, 0.0, 1.0, hi_open=True)
        if patch not in PATCHES:
            raise AtelierError(f"{where}: patch must be one of {', '.join(map(str, PATCHES))}, got {patch!r}")
        if dim % heads:
            raise AtelierError(f"{where}: dim ({dim}) must be divisible by heads ({heads})")
        super().__init__(dim=dim, heads=heads, depth=depth, patch=patch, mlp_ratio=mlp_ratio, dropout=float(dropout))
        self.pad_multiple = patch
        self.min_size = 2 * patch
        levels = patch.bit_length() - 1  # number of stride-2 convs
        ch = [min(dim, max(8, dim // 4) * 2 ** i) for i in range(levels + 1)]  # channels at 1/2**i resolution

        self.stem = nn.Sequential(conv(3, ch[0], 3), norm(ch[0]), nn.GELU())
        self.downs = nn.ModuleList(
            nn.Sequential(conv(ch[i], ch[i + 1], 3, stride=2), norm(ch[i + 1]), nn.GELU()) for i in range(levels))
        self.proj_in = nn.Conv2d(ch[-1], dim, 1) if ch[-1] != dim else nn.Identity()
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm_out = nn.GroupNorm(1, dim)  # LayerNorm over (C, H, W) of the token grid
        # ups[j] goes from level levels - j to levels - j - 1.
        self.ups = nn.ModuleList()
        for j in range(levels):
            i = levels - j
            cin = dim if j == 0 else ch[i]
            self.ups.append(nn.Sequential(up_conv(cin, ch[i - 1]), norm(ch[i - 1]), nn.GELU()))
        self.head = conv(ch[0], 3, 3)
        init_weights(self)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.norm_out(self.blocks(self.proj_in(x)))
        for j, up in enumerate(self.ups):
            x = up(x) + skips[len(skips) - 2 - j]
        return self.head(x)

    def attention_macs(self, h: int, w: int) -> int:
        """MACs of the attention matmuls (q @ k and attn @ v) for an ``h`` x ``w`` input (not seen by hooks)."""
        p = self.arch["patch"]
        hp, wp = max(-(-h // p) * p, self.min_size), max(-(-w // p) * p, self.min_size)
        tokens = (hp // p) * (wp // p)
        return 2 * tokens * tokens * self.arch["dim"] * self.arch["depth"]
