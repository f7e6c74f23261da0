"""The PatchGAN discriminator: pix2pix's 70x70 ``NLayerDiscriminator``, at one scale or several.

Contract: input ``[N, in_channels, H, W]`` (by default 6 = the content photo and an image, concatenated on the
channel axis, both in [0,1]; the net maps them to [-1,1] itself; a conditional student appends its condition as
constant channels), ``H, W >= min_size`` (24 for ``n_layers=3``, times 2 for each extra scale); output raw logits
``[N, 1, h, w]``, one per overlapping 70x70 patch (use a with-logits loss), or with ``scales > 1`` a list of them:
scale ``k`` is its own PatchGAN that sees the input average-pooled ``2**k`` times (pix2pixHD's multi-scale
discriminator, Wang et al. 2018), so the coarser one judges strokes larger than 70 px. ``arch`` holds the
constructor arguments so ``build_discriminator(discriminator_arch(d))`` rebuilds the same shapes.

Shape (n_layers=3): 4x4 convs with strides 2, 2, 2, 1, 1 and channels 64, 128, 256, 512, 1; LeakyReLU 0.2;
norm after every conv but the first and the last. Departure from pix2pix: InstanceNorm instead of BatchNorm, so
the result does not depend on how a batch is split across DDP workers (each patch still sees the image's
statistics through the norm, so a logit is not a function of its 70x70 window alone). Zero padding, as pix2pix.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AtelierError
from .blocks import check_int, init_weights, norm


class PatchDiscriminator(nn.Module):
    """pix2pix NLayerDiscriminator with InstanceNorm; 70x70 receptive field at ``n_layers=3``."""

    def __init__(self, in_channels: int = 6, base: int = 64, n_layers: int = 3, scales: int = 1):
        super().__init__()
        where = "discriminator"
        check_int(where, "in_channels", in_channels, 1, 1024)
        check_int(where, "base", base, 1, 1024)
        check_int(where, "n_layers", n_layers, 1, 6)
        check_int(where, "scales", scales, 1, 4)
        self.arch = {"in_channels": in_channels, "base": base, "n_layers": n_layers, "scales": scales}
        nets = [self._patchgan(in_channels, base, n_layers) for _ in range(scales)]
        # One scale keeps pix2pix's module names (``net.N``), so weights saved before ``scales`` existed still load.
        if scales == 1:
            self.net = nets[0]
        else:
            self.nets = nn.ModuleList(nets)
        # Smallest input whose last norm sees more than one pixel: n_layers halvings, then two convs losing 1 each;
        # the coarsest scale sees the input halved scales - 1 times.
        self.min_size = 2 ** n_layers * 3 * 2 ** (scales - 1)
        init_weights(self)

    @staticmethod
    def _patchgan(in_channels: int, base: int, n_layers: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(base * prev, base * mult, 4, stride=stride, padding=1), norm(base * mult),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(base * mult, 1, 4, stride=1, padding=1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        if x.shape[1] != self.arch["in_channels"]:
            raise ValueError(f"discriminator expects {self.arch['in_channels']} channels (content and image "
                               f"concatenated), got {x.shape[1]}")
        if min(x.shape[-2:]) < self.min_size:
            raise AtelierError(f"discriminator needs crops of at least {self.min_size}x{self.min_size} px, got "
                               f"{x.shape[-2]}x{x.shape[-1]}; use a larger crop size")
        x = x * 2.0 - 1.0
        if self.arch["scales"] == 1:
            return self.net(x)
        out = []
        for k, net in enumerate(self.nets):
            out.append(net(x if k == 0 else F.avg_pool2d(x, 2 ** k)))
        return out
