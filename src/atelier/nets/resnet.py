"""The Johnson et al. (2016) residual generator, as in pix2pix/CycleGAN's ``ResnetGenerator``.

Contract: see ``blocks.Generator``. Input is padded to a multiple of 4 and to at least 8 px (the 1/4-resolution
maps must hold more than one pixel for InstanceNorm and reflection padding).

Shape: 7x7 reflection-padded stem (``base`` channels), two 3x3 stride-2 convs (2x, 4x ``base``), ``blocks``
residual blocks at 1/4 resolution (reflect-pad, 3x3 conv, norm, ReLU, optional dropout, 3x3 conv, norm, add), two
nearest-upsample + 3x3 conv stages back, and a 7x7 conv to RGB. Departures: InstanceNorm (as CycleGAN, not
Johnson's BatchNorm), upsample + conv instead of fractionally-strided convs, 3x3 stride-2 downsamplings with
reflection instead of zero padding, and 6 blocks of width 128 by default (Johnson used 5; CycleGAN 9 at 256).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Generator, check_float, check_int, conv, init_weights, norm, up_conv


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-(dropout)-conv-norm with an identity shortcut (no ReLU after the add, as CycleGAN)."""

    def __init__(self, ch: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [conv(ch, ch, 3), norm(ch), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [conv(ch, ch, 3), norm(ch)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(Generator):
    """Johnson-style encoder / residual blocks / decoder at 1/4 resolution."""

    name = "resnet"
    pad_multiple = 4
    min_size = 8

    def __init__(self, base: int = 32, blocks: int = 6, dropout: float = 0.0):
        where = "resnet generator"
        check_int(where, "base", base, 1, 1024)
        check_int(where, "blocks", blocks, 0, 64)
        check_float(where, "dropout", dropout, 0.0, 1.0, hi_open=True)
        super().__init__(base=base, blocks=blocks, dropout=float(dropout))
        b = base
        self.stem = nn.Sequential(conv(3, b, 7), norm(b), nn.ReLU())
        self.down = nn.Sequential(
            conv(b, 2 * b, 3, stride=2), norm(2 * b), nn.ReLU(),
            conv(2 * b, 4 * b, 3, stride=2), norm(4 * b), nn.ReLU(),
        )
        self.res = nn.Sequential(*[ResidualBlock(4 * b, dropout) for _ in range(blocks)])
        self.up = nn.Sequential(
            up_conv(4 * b, 2 * b), norm(2 * b), nn.ReLU(),
            up_conv(2 * b, b), norm(b), nn.ReLU(),
        )
        self.head = conv(b, 3, 7)
        init_weights(self)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.res(self.down(self.stem(x)))))
