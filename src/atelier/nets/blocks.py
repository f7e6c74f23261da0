"""Building blocks shared by the generators: the pad-to-multiple wrapper, reflect-padded convs, argument checks,
pix2pix initialisation and a MAC counter.

Contract of ``Generator`` (the base class every generator derives from): ``forward(x)`` takes float32
``[N,3,H,W]`` RGB in [0,1] for any ``H, W >= 1`` and returns ``[N,3,H,W]`` in [0,1]. It pads the input (reflection
where the image is large enough, else replicate) to ``pad_multiple`` and to at least ``min_size``, maps it to
[-1,1], runs ``core`` (the architecture, which returns unbounded values), crops back and squashes with
``0.5 * (tanh + 1)``. ``arch`` holds the constructor arguments (plain JSON values) so the net can be rebuilt.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AtelierError


def check_int(where: str, name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]`` or an AtelierError naming the argument and the allowed range."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise AtelierError(f"{where}: {name} must be a whole number {bound}, got {value!r}")
    return value


def check_float(where: str, name: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``) or an AtelierError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and lo <= value and (value < hi if hi_open else value <= hi)
    if not ok:
        bound = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise AtelierError(f"{where}: {name} must be a number in {bound}, got {value!r}")
    return float(value)


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
         bias: bool = True) -> nn.Conv2d:
    """A conv with reflection padding of ``dilation * (k // 2)``: borders see mirrored content, not black.

    Conv2d's ``padding_mode="reflect"`` exports to ONNX as Pad(reflect) + Conv. Odd ``k`` only (keeps the size);
    the U-Net's 4x4 stride-2 downsamplings use ``conv4``.
    """
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=groups,
                     bias=bias, padding_mode="reflect")


def conv4(cin: int, cout: int) -> nn.Conv2d:
    """pix2pix's 4x4 stride-2 downsampling conv (halves even sizes exactly), reflection-padded by 1."""
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1, padding_mode="reflect")


def up_conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Nearest upsampling by 2 then a conv: no transposed conv, so no checkerboard (Odena et al. 2016)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(cin, cout, k))


def norm(ch: int) -> nn.GroupNorm:
    """Affine instance norm, written as GroupNorm with one channel per group (the same arithmetic).

    Per-image statistics: no batch coupling, so DDP and batch size 1 behave the same. GroupNorm rather than
    InstanceNorm2d because on CPU it is 5-10x faster (InstanceNorm2d goes through batch_norm on a reshaped copy),
    it accepts 1x1 maps, and it exports to ONNX as well.
    """
    return nn.GroupNorm(ch, ch)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix initialisation: conv/linear weights ~ N(0, std), biases 0, norm scales 1 and shifts 0.

    Draws from torch's global generator, so ``torch.manual_seed`` before construction fixes the weights.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _padded(n: int, multiple: int, min_size: int) -> int:
    # The branch is static for an export that declares n >= min_size, and the ceil-to-multiple form lets the
    # exporter's shape solver prove that every stride-2 level halves exactly (no guards on H and W).
    if n < min_size:
        return max(min_size, -(-n // multiple) * multiple)
    return (n + multiple - 1) // multiple * multiple


def pad_to(x: torch.Tensor, multiple: int, min_size: int = 1) -> tuple[torch.Tensor, int, int]:
    """Pad ``x`` so H and W are multiples of ``multiple`` and at least ``min_size``; return it with (top, left).

    The padding is split between both sides (the image stays centred, so border effects are shared out). Reflection
    needs each side's pad to be smaller than the image; tiny images fall back to replicate. These branches depend
    only on the input size, never on pixel values.
    """
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = _padded(h, multiple, min_size) - h, _padded(w, multiple, min_size) - w
    top, left = ph // 2, pw // 2
    mode = "reflect" if ph - top < h and pw - left < w else "replicate"
    return F.pad(x, (left, pw - left, top, ph - top), mode=mode), top, left


class Generator(nn.Module):
    """Base class: padding, [0,1] <-> [-1,1] mapping, cropping and the output squash (see the module docstring)."""

    name = "generator"
    pad_multiple = 1
    min_size = 1

    def __init__(self, **arch: Any):
        super().__init__()
        self.arch: dict[str, Any] = dict(arch)

    def core(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        xp, top, left = pad_to(x, self.pad_multiple, self.min_size)
        y = self.core(xp * 2.0 - 1.0)
        # Crop with a negative pad rather than a slice: a slice is a strided view whose contiguity (and a slice end's
        # clamping) makes torch.export guard on "no padding was needed"; a pad makes a fresh tensor (ONNX Pad).
        ph, pw = y.shape[-2] - h, y.shape[-1] - w
        y = F.pad(y, (-left, left - pw, -top, top - ph))
        # 0.5 * (tanh + 1) rather than sigmoid: pix2pix's tanh head, moved to [0,1] (it equals sigmoid(2y)).
        return 0.5 * (torch.tanh(y) + 1.0)


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted on Conv2d and Linear layers with forward hooks.

    Conv2d: output elements x (in_channels / groups) x kh x kw; Linear: output elements x in_features. Attention's
    matmuls are not modules and are not counted (``TransformerGenerator.attention_macs`` gives them).
    """
    total = 0

    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total
