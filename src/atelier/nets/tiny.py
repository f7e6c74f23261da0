"""The tiny generator: a depthwise-separable net for low-end CPUs (well under 2 MB of fp32 weights).

Contract: see ``blocks.Generator``. Input is padded to a multiple of 4 and to at least 8 px (so the 1/4-resolution
maps hold more than one pixel for their instance norms).

Where the time goes and why the shape: a conv's cost is pixels x in x out x k x k, so almost all the work is done
at 1/4 resolution (1/16 of the pixels). A 3x3 stride-2 stem conv (``base`` channels) and a depthwise-separable
stride-2 conv reach 1/4 resolution at once; ``blocks`` residual blocks of two depthwise-separable convs
(depthwise 3x3 then pointwise 1x1) run there at ``width`` channels, the second depthwise conv dilated by 2 to widen
the receptive field (brush strokes span more than a few pixels) at no extra cost. The decoder reduces channels
*before* each upsampling (1x1 convs), smooths with a depthwise-separable conv at 1/2 resolution, adds the stem's
features there (a U-Net skip), and ends with a depthwise-separable conv to RGB at full resolution over
``base / 2`` upsampled channels concatenated with the input photo (so edges survive the trip to 1/4 resolution).
No norm at full resolution (two more passes over the largest tensors), and the net runs channels-last inside.
Defaults: about 43 k parameters (0.17 MB in fp32) and 0.79 GMAC at 512x512; a 512x512 image took 65-100 ms
(median of 20) on one core of a busy, shared AMD EPYC with torch 2.13.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Generator, check_int, conv, init_weights, norm


def separable(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: about 9/cout + 1/9 of a full 3x3 conv's cost.

    Zero padding here, unlike the other generators: a reflection pad materialises a padded copy in NCHW, which
    then has to be reordered for the channels-last depthwise kernel, and those copies cost more than the convs.
    """
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride=stride, padding=dilation, dilation=dilation, groups=cin,
                                   bias=False),
                         nn.Conv2d(cin, cout, 1))


class SeparableBlock(nn.Module):
    """separable conv, norm, ReLU, separable conv dilated by 2, identity shortcut (one norm: norms are not free)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(separable(ch, ch), norm(ch), nn.ReLU(), separable(ch, ch, dilation=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyGenerator(Generator):
    """Stride-2 stem to 1/4 resolution, depthwise-separable residual blocks there, cheap decoder."""

    name = "tiny"
    pad_multiple = 4
    min_size = 8

    def __init__(self, base: int = 16, width: int = 64, blocks: int = 4):
        where = "tiny generator"
        check_int(where, "base", base, 2, 256)
        check_int(where, "width", width, 1, 512)
        check_int(where, "blocks", blocks, 0, 32)
        super().__init__(base=base, width=width, blocks=blocks)
        half = max(1, base // 2)
        self.stem = nn.Sequential(conv(3, base, 3, stride=2), norm(base), nn.ReLU())          # 1/2, reflect-padded
        self.down = nn.Sequential(separable(base, width, stride=2), norm(width), nn.ReLU())   # 1/4
        self.res = nn.Sequential(*[SeparableBlock(width) for _ in range(blocks)])
        self.up = nn.Sequential(
            nn.Conv2d(width, 2 * base, 1),  # fewer channels before the 4x more pixels
            nn.Upsample(scale_factor=2, mode="nearest"),
            separable(2 * base, base), norm(base), nn.ReLU(),
        )
        self.up_full = nn.Sequential(nn.Conv2d(base, half, 1), nn.Upsample(scale_factor=2, mode="nearest"))
        self.head = separable(half + 3, 3)
        init_weights(self)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last: PyTorch's CPU depthwise kernels are 10-20x faster on NHWC than on NCHW. A no-op for ONNX.
        x = x.contiguous(memory_format=torch.channels_last)
        s = self.stem(x)
        y = self.up(self.res(self.down(s))) + s
        return self.head(torch.cat([self.up_full(y), x], dim=1))
