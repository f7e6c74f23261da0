"""The conditional tiny generator: one small net for many styles, or for any style (conditional instance norm).

Dumoulin et al. (2017) showed that the styles of one feed-forward net can differ only in the scale and shift of its
instance norms. Here every norm's scale and shift come from one linear map of a condition vector ``c`` of
``cond_dim`` numbers: a one-hot style choice (then the map's columns are exactly Dumoulin's per-style tables, and a
convex mix of one-hots blends the styles in one pass), or Magenta's 100-d style embedding (Ghiasi et al. 2017, then
any style image can be painted: the arbitrary student).

Where the time goes and why the shape: at 1024 px and above, the tiny generator's full-resolution tensors (the
padded stem input, the upsampled decoder features concatenated with the photo) cost more memory traffic than its
convolutions. This net touches full resolution only to fold it into 2x2 blocks (``pixel_unshuffle``: 12 channels at
1/2 resolution, no copy of padded pixels) and to unfold the 12-channel result (``pixel_shuffle``), so every output
pixel is still computed (not interpolated) while all convolutions run at 1/2 and 1/4 resolution. The body is the
tiny generator's: a stride-2 depthwise-separable conv to 1/4 resolution, residual blocks of depthwise-separable convs
(the second dilated by 2), 1x1 channel reduction before each upsampling, a skip at 1/2 resolution, and a head that
sees the folded photo again so edges survive.

Contract: the ``Generator`` one, plus ``forward(x, cond=None, strength=None)``: ``cond`` is ``[N, cond_dim]``
(None: zeros, the net's unconditioned mean style) and ``strength`` ``[N]`` or a number in [0,1] blends the output
with the photo in the same pass (0 = the photo, 1 = the full style).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Generator, check_int, conv, init_weights, pad_to
from .tiny import separable


class CondTinyGenerator(Generator):
    """Folded full resolution, conditional instance norms everywhere, depthwise-separable body at 1/4 resolution."""

    name = "tiny-cond"
    pad_multiple = 4
    min_size = 8

    def __init__(self, cond_dim: int = 8, base: int = 16, width: int = 64, blocks: int = 4, fold: int = 4,
                 bilinear: bool = False, detail: int = 0):
        where = "tiny-cond generator"
        check_int(where, "cond_dim", cond_dim, 1, 4096)
        check_int(where, "base", base, 2, 256)
        check_int(where, "width", width, 1, 512)
        check_int(where, "blocks", blocks, 0, 32)
        check_int(where, "fold", fold, 1, 8)
        check_int(where, "detail", detail, 0, 8)
        super().__init__(cond_dim=cond_dim, base=base, width=width, blocks=blocks, fold=fold, bilinear=bool(bilinear),
                         detail=detail)
        self.pad_multiple = 2 * fold
        self.min_size = 4 * fold
        folded = 3 * fold * fold
        self.stem = conv(folded, base, 3)                               # 1/2 resolution, on the folded photo
        self.down = separable(base, width, stride=2)                # 1/4
        self.res_a = nn.ModuleList([separable(width, width) for _ in range(blocks)])
        self.res_b = nn.ModuleList([separable(width, width, dilation=2) for _ in range(blocks)])
        self.reduce = nn.Conv2d(width, base, 1)
        self.up = separable(base, base)                             # 1/2, after nearest upsampling
        # The detail stage: residual blocks at the folded resolution, where each channel is one pixel of a fold x
        # fold block, so they can draw strokes a few pixels wide that the body's 1/8-resolution features cannot.
        self.detail_a = nn.ModuleList([separable(base, base) for _ in range(detail)])
        self.detail_b = nn.ModuleList([separable(base, base) for _ in range(detail)])
        self.head = separable(base + folded, folded)                        # 1/2, then unfolded to full resolution
        # One norm after the stem, the down conv, each block's first conv, the decoder and each detail block's first
        # conv; every norm's scale and shift come from one linear map of the condition.
        self.norm_channels = [base, width] + [width] * blocks + [base] + [base] * detail
        self.film = nn.Linear(cond_dim, 2 * sum(self.norm_channels))
        init_weights(self)
        nn.init.zeros_(self.film.weight)   # start unconditioned: scale 1, shift 0 for every condition
        nn.init.zeros_(self.film.bias)

    def _norms(self, cond: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p = self.film(cond)
        out, at = [], 0
        for ch in self.norm_channels:
            gamma = p[:, at:at + ch].unsqueeze(-1).unsqueeze(-1)
            beta = p[:, at + ch:at + 2 * ch].unsqueeze(-1).unsqueeze(-1)
            out.append((1.0 + gamma, beta))
            at += 2 * ch
        return out

    @staticmethod
    def _cin(x: torch.Tensor, gb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.group_norm(x, x.shape[1]) * gb[0] + gb[1]

    def core(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if cond is None:
            cond = x.new_zeros(x.shape[0], self.arch["cond_dim"])
        norms = iter(self._norms(cond))
        u = F.pixel_unshuffle(x, self.arch["fold"]).contiguous(memory_format=torch.channels_last)
        s = F.relu(self._cin(self.stem(u), next(norms)))
        y = F.relu(self._cin(self.down(s), next(norms)))
        for a, b in zip(self.res_a, self.res_b):
            y = y + b(F.relu(self._cin(a(y), next(norms))))
        # Bilinear (what the trainers build), not nearest: nearest copies of the 1/8-resolution features left a grid
        # of dots every 8 px on flat areas of a trained style set. The default stays nearest so that a folder whose
        # config predates the argument is rebuilt with the arithmetic it was trained with.
        if self.arch["bilinear"]:
            y = F.interpolate(self.reduce(y), scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            y = F.interpolate(self.reduce(y), scale_factor=2.0, mode="nearest")
        y = F.relu(self._cin(self.up(y) + s, next(norms)))
        for a, b in zip(self.detail_a, self.detail_b):
            y = y + b(F.relu(self._cin(a(y), next(norms))))
        return F.pixel_shuffle(self.head(torch.cat([y, u], dim=1)), self.arch["fold"])

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None,
                strength: Union[None, float, torch.Tensor] = None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        xp, top, left = pad_to(x, self.pad_multiple, self.min_size)
        y = self.core(xp * 2.0 - 1.0, cond)
        ph, pw = y.shape[-2] - h, y.shape[-1] - w
        y = 0.5 * (torch.tanh(F.pad(y, (-left, left - pw, -top, top - ph))) + 1.0)
        if strength is None:
            return y
        s = torch.as_tensor(strength, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        return x + s * (y - x)
