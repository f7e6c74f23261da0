"""The one method contract: everything that makes a picture is a ``Method``.

A method is a small object, registered by name (``registry.register("method", NAME, "module:factory")``) or found
as a model folder (``atelier.methods.find``):

- ``name``, ``kind`` (``"optimisation"``, ``"student"`` or ``"one-pass"``) and a one-line ``description``;
- ``style``: ``"required"`` (one or more style images, blended by ``style_weights``), ``"baked"`` (a trained
  student: its style is in its weights, and a style image given to it is refused) or ``"named"`` (a style set: one
  or more of its style names, ``find_style(name)``, blended by ``style_weights``; ``run`` gets the names);
- ``options``: the ``StylizeOptions`` fields it reads. Any other option the caller gave is refused with one line
  (``refuse_inapplicable``), never silently ignored;
- ``availability()`` -> ``(ok, reason)``, reading no weights;
- ``defaults(options)`` -> the values of ``options.METHOD_DEFAULTS`` it fills (optimisation methods: the feature
  net's; others: none), and ``resolve(options)`` -> the options with them filled in;
- ``run(content, styles, options, device, callback)`` -> ``Painting``: ``content`` is ``[1,3,H,W]`` in [0,1] at the
  output size, ``styles`` a list of ``[1,3,h,w]`` (empty for a baked style). The painting's ``metadata`` names the
  weights (``weights``, ``random_weights``) and whatever else the method wants recorded; a method that reads
  ``strength`` records it and how it applied it (``strength``, ``strength_applied``).

``atelier.api.stylize`` holds no branching by kind: it finds the method, refuses what does not apply, converts the
inputs through the one gate and calls ``run``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Optional, Sequence

import torch

from ..errors import AtelierError, OptionError
from ..options import StylizeOptions
from ..progress import Callback

KINDS = ("optimisation", "student", "one-pass")
# Options every method reads: how it is chosen, the output size, where it computes and the input pixel limit.
COMMON_OPTIONS = frozenset({"method", "model", "size", "device", "max_pixels"})
# Each feature net's weights option: an optimisation method reads its own and no other.
WEIGHTS_OPTIONS = frozenset({"lite_model", "vgg_weights", "effnet_weights", "magenta_weights"})
# Options that only one-pass nets read (tile a large picture so memory stays bounded).
ONE_PASS_OPTIONS = frozenset({"tile"})
# How far from the photo to go, in [0,1]. Every built-in kind reads it, each in its own way (``StylizeOptions.
# strength`` says how; the painting's metadata records ``strength_applied``). A Method subclass claims it only by
# listing it, so one that does not apply it has it refused, never ignored.
STRENGTH_OPTIONS = frozenset({"strength"})


@dataclass
class Painting:
    """What ``Method.run`` returns."""

    image: torch.Tensor                     # [1,3,H,W] in [0,1]
    seconds: float
    evaluations: int = 0                    # loss evaluations (optimisation methods)
    optimizer_steps: int = 0
    history: list[dict] = field(default_factory=list)  # one StepInfo.record() per loss evaluation
    metadata: dict[str, Any] = field(default_factory=dict)  # at least "weights" and "random_weights"


class Method:
    name = ""
    kind = ""
    description = ""
    style = "required"
    options: frozenset = COMMON_OPTIONS

    def __repr__(self) -> str:
        return f"<{self.kind} method {self.name}>"

    def availability(self) -> tuple[bool, str]:
        return True, ""

    def defaults(self, options: Optional[StylizeOptions] = None) -> dict[str, Any]:
        return {}

    def resolve(self, options: StylizeOptions) -> StylizeOptions:
        return options

    def refuse_inapplicable(self, given: Iterable[str]) -> None:
        """Refuse the first option in ``given`` (field names the caller set) that this method does not read."""
        extra = sorted(set(given) - set(self.options))
        if extra:
            reads = sorted(set(self.options) - {"method", "model"})
            what = f" (it reads only {', '.join(reads)})" if len(reads) <= 8 else ""
            raise OptionError(extra[0], f"does not apply to {self.kind} method {self.name}{what}")

    def style_side(self, options: StylizeOptions) -> Optional[int]:
        """The long side style images are loaded at (None: their own size, within ``max_pixels``)."""
        return max(16, round(options.size * options.style_scale))

    def check_styles(self, count: int) -> None:
        if self.style == "baked" and count:
            raise AtelierError(f"{self.name} has its style baked in: give no style image (or choose a method that "
                               "takes one)")
        if self.style == "required" and not count:
            raise AtelierError(f"a style image is needed for method {self.name}; pass one, or use a trained student")
        if self.style == "named" and not count:
            names = ", ".join(getattr(self, "style_names", ()))
            raise AtelierError(f"{self.name} paints named styles: choose one or more as the style ({names}; "
                               "`atelier styles` lists them)")

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
            device: torch.device, callback: Optional[Callback] = None) -> Painting:
        raise NotImplementedError


PIXEL_BLEND = "pixel blend: strength x picture + (1 - strength) x photo"


def blend_with_photo(picture: torch.Tensor, photo: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength * picture + (1 - strength) * photo`` (the photo resized to the picture's size if they differ):
    strength 1 gives the picture and 0 the photo, exactly."""
    if strength >= 1:
        return picture
    from ..images import resize_to

    photo = resize_to(photo.to(picture.device, picture.dtype), tuple(picture.shape[-2:]))
    if strength <= 0:
        return photo.clone()
    return (strength * picture + (1 - strength) * photo).clamp(0, 1)


class OnePassMethod(Method):
    """The slot for style-conditioned one-pass methods (a photo and a style image in, a picture out, one forward
    pass). A subclass gives ``paint``; more than one style image is refused unless it sets ``blends_styles``.
    ``strength`` blends the picture with the photo in pixel space (``blend_with_photo``) unless the subclass applies
    it itself (its own ``run``, as magenta does in its style embedding)."""

    kind = "one-pass"
    style = "required"
    options = COMMON_OPTIONS | STRENGTH_OPTIONS | {"style_scale", "seed"}
    blends_styles = False
    weights = "random"         # the identity of its weights, recorded with every picture
    random_weights = True

    def paint(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
              device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
            device: torch.device, callback: Optional[Callback] = None) -> Painting:
        if len(styles) > 1 and not self.blends_styles:
            raise AtelierError(f"method {self.name} takes one style image, got {len(styles)}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            photo = content.to(device)
            image = photo if options.strength <= 0 else \
                self.paint(photo, [s.to(device) for s in styles], options, device).clamp(0, 1)
            image = blend_with_photo(image, photo, options.strength)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return Painting(image.clamp(0, 1), time.perf_counter() - t0,
                        metadata={"weights": self.weights, "random_weights": self.random_weights,
                                  "strength": options.strength, "strength_applied": PIXEL_BLEND})


@functools.lru_cache(maxsize=1)
def all_options() -> frozenset:
    return frozenset(f.name for f in fields(StylizeOptions))
