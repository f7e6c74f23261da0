"""The pix2pix U-Net generator (Isola et al. 2017, ``UnetGenerator`` in the pix2pix/CycleGAN code).

Contract: see ``blocks.Generator``. Input is padded to a multiple of ``2 ** depth`` (64 for the default depth 6).

Shape: ``depth`` 4x4 stride-2 convs down (LeakyReLU 0.2 before each but the first, InstanceNorm after each but
the first and the innermost, as in pix2pix: the innermost map can be 1x1, where instance statistics are
meaningless), then ``depth`` blocks up (ReLU, nearest upsample x2, 3x3 conv, InstanceNorm except at the output),
each concatenated with the encoder map of the same size. Channels are ``base * min(2 ** i, max_mult)``.
Departures from pix2pix: nearest upsample + 3x3 conv instead of ConvTranspose2d (no checkerboard), reflection
instead of zero padding, InstanceNorm instead of BatchNorm, and 6 downsamplings by default instead of 8 (256 px
crops then reach 4x4 at the bottom, and the net is about 5 M parameters instead of 54 M). ``dropout`` applies to
the up blocks just above the innermost one (up to three, as pix2pix's ``num_downs - 5`` blocks at 8x width).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Generator, check_float, check_int, conv, conv4, init_weights, norm


class UNetGenerator(Generator):
    """pix2pix U-Net with skip connections; ``depth`` stride-2 downsamplings."""

    name = "unet"

    def __init__(self, base: int = 32, depth: int = 6, max_mult: int = 8, dropout: float = 0.0):
        where = "unet generator"
        check_int(where, "base", base, 1, 1024)
        check_int(where, "depth", depth, 2, 8)
        check_int(where, "max_mult", max_mult, 1, 64)
        check_float(where, "dropout", dropout, 0.0, 1.0, hi_open=True)
        super().__init__(base=base, depth=depth, max_mult=max_mult, dropout=float(dropout))
        self.pad_multiple = self.min_size = 2 ** depth
        ch = [base * min(2 ** i, max_mult) for i in range(depth)]

        self.downs = nn.ModuleList()
        for i in range(depth):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(conv4(3 if i == 0 else ch[i - 1], ch[i]))
            if 0 < i < depth - 1:
                layers.append(norm(ch[i]))
            self.downs.append(nn.Sequential(*layers))

        # ups[j] works at encoder level i = depth - 1 - j: it takes that level's map (concatenated with the
        # previous up output except at the innermost level) and upsamples it to level i - 1's size.
        self.ups = nn.ModuleList()
        for j in range(depth):
            i = depth - 1 - j
            cin = ch[i] if j == 0 else 2 * ch[i]
            cout = ch[i - 1] if i > 0 else 3
            layers = [nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"), conv(cin, cout, 3)]
            if i > 0:
                layers.append(norm(cout))
                if 1 <= j <= 3 and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.ups.append(nn.Sequential(*layers))
        init_weights(self)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        for j, up in enumerate(self.ups):
            if j > 0:
                x = torch.cat([x, skips[len(skips) - 1 - j]], dim=1)
            x = up(x)
        return x
