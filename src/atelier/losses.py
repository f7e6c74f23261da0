"""Loss functions: pure, differentiable, no state.

Departures from Gatys et al. (2016), on purpose:
* Gram matrices are normalised by C*H*W (Gatys: unnormalised, with 1/(4 N^2 M^2) in the loss), so their values do
  not grow with image size.
* Content and style losses are *relative*: squared error divided by the target's own energy. A weight then means
  the same thing for every feature net (VGG19, random VGG19, the lite encoder) and every layer, and the default
  weights keep their balance from 256 px to 2048 px, because neither term scales with the pixel count.
* Total variation is the mean squared difference of neighbouring pixels (not a sum), for the same reason.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

_EPS = 1e-12


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of ``[N,C,H,W]`` features -> ``[N,C,C]``, normalised by C*H*W."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error ``|F - P|^2 / |P|^2`` (0 when equal, 1 when F is all zeros)."""
    return (features - target).pow(2).sum() / (target.pow(2).sum() + _EPS)


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Relative squared error between the Gram matrix of ``features`` and a target Gram matrix."""
    g = gram(features)
    return (g - target_gram).pow(2).sum() / (target_gram.pow(2).sum() + _EPS)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontally and vertically neighbouring pixels."""
    dh = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean() if image.shape[-2] > 1 else image.new_zeros(())
    dw = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean() if image.shape[-1] > 1 else image.new_zeros(())
    return dh + dw


def blend_grams(grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted mean of per-style Gram targets (several style images blended into one target per layer)."""
    if len(grams) != len(weights):
        raise ValueError("one weight per style")
    total = float(sum(weights))
    return {name: sum(w / total * g[name] for g, w in zip(grams, weights)) for name in grams[0]}
