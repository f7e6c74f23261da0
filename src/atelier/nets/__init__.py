"""Student networks: the feed-forward generators (``unet``, ``resnet``, ``transformer``, ``tiny``) and the PatchGAN
discriminator they are trained against; and Magenta's arbitrary-stylization nets (``magenta.py``, not a generator:
a style predictor and a style-conditioned transformer) with their port from ONNX (``magenta_port.py``).

Contract for every generator (the registry's "generator" entries are the one catalogue: ``registry.names``):
- input float32 ``[N,3,H,W]`` RGB in [0,1], any ``H, W >= 1``; output ``[N,3,H,W]`` in [0,1] (``0.5 * (tanh + 1)``).
  The net pads internally to ``module.pad_multiple`` (and ``module.min_size``) with reflection where the image is
  large enough, else replicate, and crops back; the pad amount is the only size-dependent branch.
- fully convolutional, ONNX-friendly operations only: Conv2d (reflection padding), nearest upsample x2 + conv
  (never ConvTranspose2d), InstanceNorm/GroupNorm/LayerNorm, ReLU/LeakyReLU/GELU, Dropout, matmul/softmax.
  No nn.MultiheadAttention, no adaptive pooling. The pad and the crop (a negative pad, not a view) are written
  so that ``torch.export`` with dynamic H and W declared ``>= 2 * module.pad_multiple`` traces all four generators
  without guards and matches eager output exactly at multiples and non-multiples alike; smaller images still work
  in eager mode (they take the replicate / minimum-size branches, which an export freezes out).
- constructor arguments are plain ints/floats with defaults; ``generator_arch(m)`` returns them as a JSON-ready
  dict and ``build_generator(m.name, generator_arch(m))`` rebuilds the same shapes. Weights are pix2pix's
  N(0, 0.02), drawn from torch's global generator (``torch.manual_seed`` makes them repeatable).
- unknown names or arguments, or invalid values, raise ``AtelierError`` naming the valid choices.

This package imports nothing from atelier but ``atelier.errors`` and the ground-floor ``atelier.registry`` (which
imports the generator classes here lazily, by dotted path), and ``magenta_port.py`` the ground-floor ``atelier.files``
(the cache folder, sha256, atomic writes); training and export sit above it.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .. import registry
from ..errors import AtelierError
from .blocks import Generator, count_macs
from .discriminator import PatchDiscriminator

__all__ = ["Generator", "PatchDiscriminator", "build_generator", "generator_arch",
           "build_discriminator", "discriminator_arch", "count_macs", "arch_defaults"]


def arch_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    """The constructor's keyword arguments and their defaults (the valid architecture arguments)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def _checked(cls: type[nn.Module], arch: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """``arch`` with unknown keys and wrongly typed values turned into AtelierErrors (ranges: the constructors)."""
    if arch is None:
        return {}
    if not isinstance(arch, dict):
        raise AtelierError(f"{where}: architecture arguments must be a mapping, got {type(arch).__name__}")
    defaults = arch_defaults(cls)
    unknown = sorted(set(arch) - set(defaults))
    if unknown:
        raise AtelierError(f"{where}: unknown argument(s) {', '.join(map(str, unknown))}; valid: "
                           f"{', '.join(defaults)}")
    out = {}
    for key, value in arch.items():
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:  # pragma: no cover - every constructor argument is a plain number today
            ok = True
        if not ok:
            raise AtelierError(f"{where}: {key} must be {type(default).__name__} like its default {default!r}, "
                               f"got {value!r}")
        out[key] = value
    return out


def build_generator(name: str, arch: dict[str, Any] | None = None) -> Generator:
    """A freshly initialised generator ``name`` built from ``arch`` (missing arguments take their defaults)."""
    cls = registry.get("generator", name).factory()  # unknown names: one line listing the registered ones
    return cls(**_checked(cls, arch, f"{name} generator"))


def generator_arch(module: nn.Module) -> dict[str, Any]:
    """The arguments that rebuild ``module``'s shapes with ``build_generator(module.name, ...)`` (a JSON-ready copy)."""
    if not isinstance(module, Generator):
        raise TypeError(f"not an atelier generator: {type(module).__name__}")
    return dict(module.arch)


def build_discriminator(arch: dict[str, Any] | None = None) -> PatchDiscriminator:
    """A freshly initialised PatchGAN discriminator (defaults: 6 input channels, base 64, 3 layers = 70x70)."""
    return PatchDiscriminator(**_checked(PatchDiscriminator, arch, "discriminator"))


def discriminator_arch(module: nn.Module) -> dict[str, Any]:
    """The arguments that rebuild ``module`` with ``build_discriminator``."""
    if not isinstance(module, PatchDiscriminator):
        raise TypeError(f"not an atelier discriminator: {type(module).__name__}")
    return dict(module.arch)
