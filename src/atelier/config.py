"""Every default lives here, once.

``StylizeOptions`` holds the options of the optimisation engines (gatys now, lite later). The CLI builds its flags
from these fields (name, type, default, help, choices all come from here), ``atelier.stylize(**options)`` takes the
same names, and ``validate()`` is the single place that refuses bad values with a one-line ``AtelierError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from .errors import AtelierError

DEFAULT_MAX_PIXELS = 50_000_000


def opt(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
        metavar: str | None = None, list_of: type | None = None) -> Any:
    """A dataclass field that carries its CLI help; ``list_of`` marks comma-separated list options."""
    meta = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "list_of": list_of}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StylizeOptions:
    size: int = opt(512, "long side of the output in pixels")
    iterations: int = opt(200, "loss evaluations at each scale (L-BFGS closure calls; Adam steps)")
    optimizer: str = opt("lbfgs", "optimiser over the pixels", choices=("lbfgs", "adam"))
    learning_rate: float = opt(0.02, "Adam step size in [0,1] pixel units (L-BFGS ignores it)")
    content_weight: float = opt(1.0, "weight of the content loss")
    style_weight: float = opt(10.0, "weight of the style loss")
    tv_weight: float = opt(10.0, "weight of the total-variation (smoothness) loss")
    content_layers: tuple = opt(("conv4_2",), "feature layers for content", list_of=str)
    style_layers: tuple = opt(("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
                              "feature layers whose Gram matrices define style", list_of=str)
    style_weights: Optional[tuple] = opt(None, "blend weights, one per --style (default: equal)",
                                         list_of=float, metavar="W1,W2")
    init: str = opt("content", "start image: content, random (seeded noise) or a path to an image",
                    metavar="content|random|PATH")
    pooling: str = opt("max", "pooling in the feature net", choices=("max", "avg"))
    style_scale: float = opt(1.0, "style image size relative to the output size")
    preserve_color: str = opt("none", "keep the content's colours: luminance-only transfer (Gatys 2017) "
                              "or style recoloured to the content's colour statistics first",
                              choices=("none", "luminance", "histogram"))
    scales: str = opt("auto", "coarse-to-fine sizes: auto (from ~128 px up by x1.4), none, or a list like 256,512",
                      metavar="auto|none|S1,S2")
    seed: int = opt(0, "random seed (same seed, same image on CPU)")
    save_every: int = opt(0, "write an intermediate image every N loss evaluations (0: never)")
    device: str = opt("auto", "where to compute", choices=("auto", "cpu", "cuda", "mps"))
    vgg_weights: Optional[str] = opt(None, "VGG19 weights: a .pth/.safetensors path, or 'random' for seeded "
                                     "random weights (offline runs; outputs are labelled); default: "
                                     "$ATELIER_VGG_WEIGHTS, then the slim cache, then torch's hub cache",
                                     metavar="PATH|random")
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse input images with more pixels than this")

    def replace(self, **changes: Any) -> "StylizeOptions":
        return replace(self, **changes)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "StylizeOptions":
        """Build from keyword options, refusing unknown names with the list of valid ones."""
        check_known(cls, kwargs)
        return cls(**kwargs).validate()

    def validate(self) -> "StylizeOptions":
        def finite_nonneg(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AtelierError(f"--{_flag(name)} must be a finite number >= 0, got {v!r}")

        for name in ("content_weight", "style_weight", "tv_weight"):
            finite_nonneg(name)
        for name in ("learning_rate", "style_scale"):
            finite_nonneg(name)
            if getattr(self, name) == 0:
                raise AtelierError(f"--{_flag(name)} must be > 0")
        for name, low in (("size", 1), ("iterations", 1), ("max_pixels", 1), ("save_every", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise AtelierError(f"--{_flag(name)} must be a whole number >= {low}, got {v!r}")
        check_choices(self)
        if not self.content_layers or not self.style_layers:
            raise AtelierError("--content-layers and --style-layers need at least one layer each")
        if self.style_weights is not None:
            for w in self.style_weights:
                if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise AtelierError(f"--style-weights must be finite numbers >= 0, got {w!r}")
            if sum(self.style_weights) <= 0:
                raise AtelierError("--style-weights must not all be zero")
        self.scale_sizes()  # raises on a malformed --scales
        return self

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine; the last is always ``size``."""
        spec = str(self.scales).strip().lower()
        if spec in ("none", "", "1"):
            return [self.size]
        if spec == "auto":
            # From about 128 px to the target in steps of about x1.4 (each scale starts from the previous result).
            n = max(0, round(math.log(self.size / 128) / math.log(1.4))) if self.size > 128 else 0
            sizes = [max(16, round(self.size / 1.4 ** k)) for k in range(n, 0, -1)]
            return sizes + [self.size]
        try:
            sizes = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise AtelierError(f"--scales must be auto, none or sizes like 256,512; got {self.scales!r}") from None
        if not sizes or any(s < 16 for s in sizes) or sizes != sorted(set(sizes)):
            raise AtelierError(f"--scales must be increasing sizes of at least 16 px, got {self.scales!r}")
        if sizes[-1] > self.size:
            raise AtelierError(f"--scales {self.scales} goes past --size {self.size}; make the last scale <= size")
        return sizes if sizes[-1] == self.size else sizes + [self.size]


def check_known(cls: type, kwargs: dict[str, Any], what: str = "option") -> None:
    """Refuse keyword options that are not fields of the dataclass ``cls``, listing the valid ones."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise AtelierError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(sorted(valid))}")


def check_choices(obj: Any) -> None:
    """Refuse any field value outside the ``choices`` its metadata lists."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        if choices and getattr(obj, f.name) not in choices:
            raise AtelierError(f"--{_flag(f.name)} must be one of {', '.join(choices)}, got {getattr(obj, f.name)!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def defaults() -> StylizeOptions:
    return StylizeOptions()
