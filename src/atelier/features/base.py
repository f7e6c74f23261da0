"""Contract for feature networks (VGG19, the lite encoder, and anything registered later).

A feature net is an ``nn.Module`` that:

* takes pixels as the project's one convention: ``float32 [N,3,H,W]``, RGB, range [0,1], and applies its own
  input normalisation inside (ImageNet mean/std for VGG19, whatever the encoder was trained with otherwise);
* names its layers (``conv1_1``, ``relu1_1``, ``pool1`` ... in forward order) in ``layer_names``;
* ``forward(x, layers)`` returns ``{name: tensor}`` for exactly the requested names and runs only as deep as the
  deepest requested layer (so a content-only pass at conv4_2 never touches block 5);
* states its defaults (``default_content_layers``, ``default_style_layers``, and ``stylize_defaults``: iterations,
  style and TV weights, scales, measured per net) and an ``identity`` string that says
  which weights it carries (for example ``vgg19:torchvision-imagenet`` or ``vgg19:random(seed=0)``). Outputs record
  the identity so an image made with random weights is always labelled as such;
* has its parameters frozen (``requires_grad=False``) and is in eval mode.

The optimisation engine only talks to this contract, so it never knows which net it drives.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import AtelierError


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FeatureNet(nn.Module):
    """Base class: subclasses fill ``self.layers`` (ordered name -> module) and ``_normalize``."""

    default_content_layers: tuple[str, ...] = ()
    default_style_layers: tuple[str, ...] = ()
    # The optimisation engine's other per-net defaults (``config.METHOD_DEFAULTS``): a style weight that suits one
    # net's feature statistics over- or under-stylises on another, so each net states its own, measured.
    stylize_defaults: dict = {"iterations": 200, "style_weight": 10.0, "tv_weight": 10.0, "scales": "auto"}
    # The smallest image side the net runs on (VGG19's floor-rounded pools need 16 px to reach conv5_1).
    min_side: int = 1

    @classmethod
    def defaults(cls) -> dict:
        """Every per-net default of the optimisation engine (``config.METHOD_DEFAULTS``), from the class alone."""
        return {"content_layers": tuple(cls.default_content_layers), "style_layers": tuple(cls.default_style_layers),
                **cls.stylize_defaults}

    def __init__(self, identity: str):
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleDict()  # ordered: name -> module applied in sequence

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.layers.keys())

    @property
    def is_random(self) -> bool:
        """True when the weights are seeded random ones rather than trained ones (a loader that knows sets
        ``_random``; otherwise the identity says)."""
        known = getattr(self, "_random", None)
        return bool(known) if known is not None else "random" in self.identity

    def use_imagenet_input(self) -> None:
        """Normalise inputs with ImageNet's mean and std (``_normalize``), as nets trained on ImageNet expect."""
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def check_layers(self, layers: Iterable[str], what: str = "layer") -> list[str]:
        """Return ``layers`` as a list, or raise AtelierError naming the valid choices."""
        layers = list(layers)
        valid = self.layer_names
        for name in layers:
            if name not in valid:
                raise AtelierError(
                    f"unknown {what} {name!r} for this feature net; choose from: {', '.join(valid)}"
                )
        if not layers:
            raise AtelierError(f"no {what}s given; choose from: {', '.join(valid)}")
        return layers

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if hasattr(self, "mean") else x

    def freeze(self) -> "FeatureNet":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = set(self.check_layers(layers))
        out: dict[str, torch.Tensor] = {}
        h = self._normalize(x)
        for name, module in self.layers.items():
            h = module(h)
            if name in wanted:
                out[name] = h
                if len(out) == len(wanted):
                    break  # nothing deeper is needed
        return out
