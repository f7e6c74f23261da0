"""Magenta's style transformer rearranged for speed, computing the same function as
``nets.magenta.StyleTransformer.forward`` (up to float rounding): the graph ``atelier export magenta`` writes.

Where the time goes at full resolution: the expand stage upsamples by nearest x2 and convolves with few channels
(3x3 16->8, then 9x9 8->3) at every output pixel, and a conv with 3 or 8 output channels uses CPU vector units
poorly. Here the expand layers compute in the *phase domain* instead: a map ``y`` of C channels is held as ``z`` at
half its resolution with 4C channels, ``y[c, 2i + a, 2j + b]`` being channel ``4c + 2a + b`` of ``z`` (CRD order,
undone by ``pixel_shuffle``: ONNX DepthToSpace CRD) or ``(2a + b) * C + c`` (DCR order, where the four phases are
contiguous slices: used between expand conv2 and conv3, which never leave the phase domain). Then:

- nearest x2 upsample + reflect pad 1 + 3x3 conv (expand conv1, conv2) is a 3x3 conv of the low-resolution input
  padded by edge replication (the reflection of an upsampled edge row is the edge row itself), with 4 x Cout
  outputs whose weights are sums of the original taps (sub-pixel convolution);
- reflect pad 4 + 9x9 conv of ``y`` (expand conv3) is a 5x5 conv of ``z`` padded by 2 low-resolution rows and
  columns, where each phase has its own rule (the full-resolution reflection maps row phase 0 to a low-resolution
  reflection at the top and a symmetric copy at the bottom, phase 1 the other way round);
- the conditional instance norms take each channel's statistics over its 4 phases; ReLU and the sigmoid are
  pointwise; a DepthToSpace after expand conv1 and one at the end give the pictures.

Same MACs for the sub-pixel convs, 1.23x for the last one, but at half resolution with 32 input and 12 output
channels, where the convolution kernels run near their peak: in onnxruntime 1.3x faster than the net as it is, in
torch eager 1.2-1.4x (``benchmarks/magenta_onnx.py``).

The contract (reflect pads), the stride-2 convs and the residual blocks are the original modules, shared with the
net given (no copy of their weights). The input padding to a multiple of 4 is done in the graph with symbolic
amounts (reflect), so an exported graph takes any ``H, W >= 8``; ``nets.magenta._pad_to``'s replicate branch for
smaller pictures is the runtime's job (it pads before calling the graph).

Imports nothing from atelier but ``nets.magenta``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .magenta import CIN_EPS, EMBEDDING, ConditionalInstanceNorm, StyleTransformer

GRAPH_MIN = 8  # the smallest H and W the graph takes (the reflect pads of the residual blocks at 1/4 resolution)


def _subpixel_upconv(w: np.ndarray, crd: bool) -> np.ndarray:
    """Weights ``[Cout, Cin, 3, 3]`` of nearest-x2 + reflect-pad-1 + 3x3 conv -> ``[4 Cout, Cin, 3, 3]`` of the
    3x3 conv over the edge-padded low-resolution input; output channels in CRD order (``4c + 2a + b``) or DCR."""
    cout, cin = w.shape[:2]
    out = np.zeros((2, 2, cout, cin, 3, 3), np.float64)
    for a in range(2):
        for b in range(2):
            for kr in range(3):
                for kc in range(3):
                    # full-resolution tap 2i + a - 1 + kr reads low-resolution row i + floor((a - 1 + kr) / 2)
                    dr, dc = (a - 1 + kr) // 2 + 1, (b - 1 + kc) // 2 + 1
                    out[a, b, :, :, dr, dc] += w[:, :, kr, kc]
    if crd:
        out = out.transpose(2, 0, 1, 3, 4, 5)
    return out.reshape(4 * cout, cin, 3, 3)


def _phase_conv(w: np.ndarray) -> np.ndarray:
    """Weights ``[Cout, Cin, k, k]`` (k odd, stride 1) of a conv over a full-resolution map padded by ``k // 2`` ->
    ``[4 Cout, 4 Cin, n, n]`` of the conv over its phase-domain form padded by ``(k // 2 + 1) // 2`` low-resolution
    rows and columns (``n`` = twice that + 1); input channels in DCR order, output channels in CRD order."""
    cout, cin, k = w.shape[0], w.shape[1], w.shape[2]
    p = k // 2
    lo = (-p) // 2          # lowest low-resolution offset a tap reaches (phase 0)
    hi = (1 + p) // 2       # highest (phase 1)
    n = hi - lo + 1
    out = np.zeros((2, 2, cout, 2, 2, cin, n, n), np.float64)
    for a in range(2):
        for b in range(2):
            for kr in range(k):
                for kc in range(k):
                    fr, fc = a - p + kr, b - p + kc  # full-resolution offset from the output pixel's 2i, 2j
                    out[a, b, :, fr % 2, fc % 2, :, fr // 2 - lo, fc // 2 - lo] += w[:, :, kr, kc]
    return out.transpose(2, 0, 1, 3, 4, 5, 6, 7).reshape(4 * cout, 4 * cin, n, n)




def _phase_norm(x: torch.Tensor, norm: ConditionalInstanceNorm, e: torch.Tensor, c: int, crd: bool) -> torch.Tensor:
    """The conditional instance norm of the full-resolution map whose phase domain is ``x`` ``[N, 4c, h, w]``."""
    n, _, h, w = x.shape
    v = x.reshape(n, c, 4 * h * w) if crd else x.reshape(n, 4, c, h * w)
    dims = (2,) if crd else (1, 3)
    mean = v.mean(dims, keepdim=True)  # two passes, as nets.magenta's norm (torch.var_mean is slower on CPU)
    d = v - mean
    var = (d * d).mean(dims, keepdim=True)
    gamma, beta = norm.gamma(e), norm.beta(e)
    gamma, beta = (gamma[:, :, None], beta[:, :, None]) if crd else (gamma[:, None, :, None], beta[:, None, :, None])
    scale = torch.rsqrt(var + norm.eps) * gamma
    return (v * scale + (beta - mean * scale)).reshape(n, 4 * c, h, w)


def _rows(x: torch.Tensor, dim: int, idx: list[int]) -> torch.Tensor:
    return torch.cat([x.narrow(dim, i if i >= 0 else x.shape[dim] + i, 1) for i in idx], dim)


def _phase_reflect_pad2(z: torch.Tensor, c: int) -> torch.Tensor:
    """The phase domain of ``reflect_pad(y, 4)`` from the phase domain ``z`` of ``y``: 2 low-resolution rows and
    columns each side, phase 0 reflected at the top/left and copied symmetrically at the bottom/right, phase 1 the
    other way round."""
    rules = {0: ([2, 1], [-1, -2]), 1: ([1, 0], [-2, -3])}  # phase -> (rows before, rows after)
    groups = []
    for a in range(2):
        for b in range(2):
            g = z[:, (2 * a + b) * c:(2 * a + b + 1) * c]
            top, bottom = rules[a]
            g = torch.cat([_rows(g, 2, top), g, _rows(g, 2, bottom)], 2)
            left, right = rules[b]
            groups.append(torch.cat([_rows(g, 3, left), g, _rows(g, 3, right)], 3))
    return torch.cat(groups, 1)


class PhaseTransformer(nn.Module):
    """``StyleTransformer``'s function with the expand stage in the phase domain (module docstring). ``forward(image
    [N,3,H,W] in [0,1], embedding [N,100]) -> [N,3,H,W]`` for ``H, W >= 8``."""

    min_size = GRAPH_MIN

    def __init__(self, net: StyleTransformer):
        super().__init__()
        if getattr(net, "act_quant", None) is not None:
            raise ValueError("the phase-domain transformer is fp32; switch off the int8 emulation first")
        self.net = net  # contract and trunk: the original modules
        up1, up2, up3 = net.expand_layers
        self.c1, self.c2, self.c3 = up1.conv.out_channels, up2.conv.out_channels, up3.conv.out_channels
        self.norms = nn.ModuleList([up1.norm, up2.norm, up3.norm])

        def conv(weight: np.ndarray, bias: np.ndarray) -> nn.Conv2d:
            m = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], bias=True)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                m.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
            return m.eval().requires_grad_(False)

        def arrays(layer: nn.Conv2d) -> tuple[np.ndarray, np.ndarray]:
            return layer.weight.detach().cpu().double().numpy(), layer.bias.detach().cpu().double().numpy()

        for up in (up1, up2):
            if up.factor != 2 or up.conv.kernel_size != (3, 3) or up.conv.stride != (1, 1):
                raise ValueError("not Magenta's expand layer (nearest x2, 3x3 conv)")
        if up3.factor != 1 or up3.conv.kernel_size != (9, 9):
            raise ValueError("not Magenta's last layer (9x9 conv)")
        w, b = arrays(up1.conv)
        self.up1 = conv(_subpixel_upconv(w, crd=True), np.repeat(b, 4))
        w, b = arrays(up2.conv)
        self.up2 = conv(_subpixel_upconv(w, crd=False), np.tile(b, 4))
        w, b = arrays(up3.conv)
        self.up3 = conv(_phase_conv(w), np.repeat(b, 4))

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        x = F.pad(image, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
        e = embedding
        x = self.net.trunk(self.net.contract(x), e)
        x = self.up1(F.pad(x, (1, 1, 1, 1), mode="replicate"))
        x = F.pixel_shuffle(F.relu(_phase_norm(x, self.norms[0], e, self.c1, crd=True)), 2)
        z = self.up2(F.pad(x, (1, 1, 1, 1), mode="replicate"))
        z = F.relu(_phase_norm(z, self.norms[1], e, self.c2, crd=False))
        y = self.up3(_phase_reflect_pad2(z, self.c2))
        y = torch.sigmoid(_phase_norm(y, self.norms[2], e, self.c3, crd=True))
        return F.pixel_shuffle(y, 2)[..., :h, :w]


__all__ = ["PhaseTransformer", "GRAPH_MIN", "EMBEDDING", "CIN_EPS"]
