"""``gatys``, ``lite`` and ``effnet`` as teachers: the optimisation method (``Method.run``) with fixed options."""

from __future__ import annotations

from typing import Any

import torch

from .. import registry
from ..errors import AtelierError
from .base import Teacher, as_content_size, check_image

# StylizeOptions fields a teacher sets itself: its output always has the content's size, and the device is the
# teacher's (``make_teacher(device=...)``, ``atelier prepare --device``).
_FIXED = {"size": "a teacher's output has the content's size (set the pairs' size with --size)",
          "device": "the teacher runs on --device"}


class OptimizeTeacher(Teacher):
    """``gatys``, ``lite`` and ``effnet``: the registered method's ``run`` with fixed options (StylizeOptions
    fields)."""

    def __init__(self, name: str, options: dict[str, Any], device: str = "auto", seed: int = 0):
        from ..devices import resolve_device
        from ..options import StylizeOptions, coerce_lists

        given = dict(options)
        for key, why in _FIXED.items():
            if key in given:
                raise AtelierError(f"teacher option {key} is not accepted: {why}")
        given.setdefault("seed", seed)
        self._method = registry.create("method", name)
        try:
            given = coerce_lists(StylizeOptions, given)  # "conv4_2,conv5_1" from a key=value list -> a tuple
            opts = StylizeOptions.from_kwargs(**given, device=device)  # unknown names and bad values first
            self._method.refuse_inapplicable(given)
            self._opts = self._method.resolve(opts)
        except AtelierError as e:
            raise AtelierError(f"{name} teacher: {e}") from None
        self._kwargs = given
        super().__init__({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(given.items())})
        self.name = name
        self._device = resolve_device(device)
        # Loads the feature net now (cached, so stylize reuses it): missing weights fail before any work.
        net = self._method.load_net(self._opts, self._device)
        self._weights, self.random_weights = net.identity, bool(net.is_random)

    @property
    def identity(self) -> str:
        return f"{self.name}({self._weights})"

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content, style = check_image(content, "content"), check_image(style, "style")
        options = self._opts.replace(size=max(int(content.shape[-2]), int(content.shape[-1])))
        painting = self._method.run(content, [style], options, self._device)
        self._weights = painting.metadata.get("weights", self._weights)
        return as_content_size(painting.image.detach().cpu(), content)


def gatys_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return OptimizeTeacher("gatys", options, device=device, seed=seed)


def lite_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return OptimizeTeacher("lite", options, device=device, seed=seed)


def effnet_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return OptimizeTeacher("effnet", options, device=device, seed=seed)


__all__ = ["OptimizeTeacher", "gatys_teacher", "lite_teacher", "effnet_teacher"]
