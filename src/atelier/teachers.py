"""Teachers: models that stylise photographs so a feed-forward student can learn from (content, stylised) pairs.

Contract for a teacher (a subclass of ``Teacher``):

* ``name``: the registered name (``gatys``, ``lite``, ``magenta``);
* ``options``: the JSON-ready dict of its options, recorded with every pair it makes;
* ``identity``: a string naming the weights it runs (e.g. ``lite(lite:bundled(sha256:...))``), known once the
  teacher is built, so a pairs folder can refuse a different teacher before any work is done;
* ``random_weights``: True when the weights are untrained (outputs are labelled, not real style transfer);
* ``stylize(content, style)``: ``content`` ``[1,3,H,W]`` and ``style`` ``[1,3,h,w]`` float32 in [0,1] (the one
  pixel convention) -> ``[1,3,H,W]`` in [0,1] on the CPU, always the content's size.

Building a teacher loads its weights (seconds), so missing weights or a missing TensorFlow fail before a long
``atelier prepare`` starts. Every problem a user can cause raises a one-line ``AtelierError``.

``make_teacher(name, options, device)`` is the factory: it looks ``name`` up in the registry (kind ``teacher``), whose
entries point at ``gatys_teacher``, ``lite_teacher`` and ``magenta_teacher`` below; ``TEACHERS`` lists the registered
names and the pairs options take their choices from it.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import torch

from . import registry
from .errors import AtelierError
from .images import resize_to, sha256_file

TEACHERS = tuple(registry.names("teacher"))
MAGENTA_HANDLE = "https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2"
MAGENTA_STYLE_SIZE = 256  # the model was trained with 256x256 style images; Magenta recommends that size
MAGENTA_MISSING = "the magenta teacher needs TensorFlow: pip install 'atelier[magenta]'"

# StylizeOptions fields a teacher sets itself: its output always has the content's size, and the device is the
# teacher's (``make_teacher(device=...)``, ``atelier prepare --device``).
_FIXED = {"size": "a teacher's output has the content's size (set the pairs' size with --size)",
          "device": "the teacher runs on --device"}


class Teacher:
    """See the module docstring for the contract."""

    name = ""
    random_weights = False

    def __init__(self, options: dict[str, Any]):
        self.options = options

    @property
    def identity(self) -> str:
        raise NotImplementedError

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _check_image(t: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[:2] != (1, 3):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"teacher {what} must be a [1,3,H,W] tensor, got {shape}")
    return t.detach().float().cpu().clamp(0, 1)


def _as_content_size(out: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    out = torch.nan_to_num(out.detach().float().cpu(), nan=0.0).clamp(0, 1)
    return resize_to(out, (int(content.shape[-2]), int(content.shape[-1])))


class OptimizeTeacher(Teacher):
    """``gatys`` and ``lite``: ``atelier.api.stylize`` with fixed options (StylizeOptions fields)."""

    def __init__(self, name: str, options: dict[str, Any], device: str = "auto", seed: int = 0):
        from .api import resolve_device
        from .config import StylizeOptions

        given = dict(options)
        for key, why in _FIXED.items():
            if key in given:
                raise AtelierError(f"teacher option {key} is not accepted: {why}")
        kinds = {f.name: f.metadata.get("list_of") for f in fields(StylizeOptions)}
        for key, value in list(given.items()):  # "conv4_2,conv5_1" from a key=value list -> a tuple
            kind = kinds.get(key)
            if kind and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                parts = [p.strip() for p in str(value).split(",") if p.strip()]
                try:
                    given[key] = tuple(kind(p) for p in parts)
                except ValueError:
                    raise AtelierError(f"teacher option {key} takes comma-separated {kind.__name__} values, "
                                       f"got {value!r}") from None
        given.setdefault("seed", seed)
        try:
            self._opts = StylizeOptions.from_kwargs(**given, device=device)
        except AtelierError as e:
            raise AtelierError(f"{name} teacher: {e}") from None
        self._kwargs = given
        super().__init__({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(given.items())})
        self.name = name
        self._device = resolve_device(device)
        # Loads the feature net now (cached, so stylize reuses it): missing weights fail before any work.
        net = registry.create("method", name).load_net(self._opts, self._device)
        self._weights, self.random_weights = net.identity, bool(net.is_random)

    @property
    def identity(self) -> str:
        return f"{self.name}({self._weights})"

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        from .api import stylize

        content, style = _check_image(content, "content"), _check_image(style, "style")
        options = dict(self._kwargs)
        options.update(size=max(int(content.shape[-2]), int(content.shape[-1])), device=self._opts.device)
        result = stylize(content, style, method=self.name, **options)
        self._weights = result.metadata.get("weights", self._weights)
        return _as_content_size(result.tensor, content)


class MagentaTeacher(Teacher):
    """Google Magenta's arbitrary-image-stylization-v1-256 (Ghiasi et al. 2017) through TensorFlow (Hub).

    ``handle``: a TF-Hub handle (URL) or a local SavedModel folder; ``style_size``: the style image is resized to
    this square before the call (Magenta recommends 256, the size the model was trained with).
    """

    name = "magenta"
    VALID = ("handle", "style_size")

    def __init__(self, options: dict[str, Any]):
        unknown = sorted(set(options) - set(self.VALID))
        if unknown:
            raise AtelierError(f"unknown magenta teacher option(s) {', '.join(unknown)}; valid: "
                               f"{', '.join(self.VALID)}")
        handle = str(options.get("handle") or MAGENTA_HANDLE)
        style_size = options.get("style_size", MAGENTA_STYLE_SIZE)
        if isinstance(style_size, bool) or not isinstance(style_size, int) or style_size < 16:
            raise AtelierError(f"magenta teacher option style_size must be a whole number >= 16, got {style_size!r}")
        super().__init__({"handle": handle, "style_size": style_size})
        self._tf, self._model, self._identity = load_magenta(handle)

    @property
    def identity(self) -> str:
        return self._identity

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content, style = _check_image(content, "content"), _check_image(style, "style")
        s = self.options["style_size"]
        style = resize_to(style, (s, s))
        out = call_magenta(self._tf, self._model, content, style)
        return _as_content_size(out, content)


def load_magenta(handle: str) -> tuple[Any, Any, str]:
    """(tensorflow module, loaded model, identity) from a TF-Hub handle or a local SavedModel folder."""
    try:
        import tensorflow as tf  # optional extra: imported only when a magenta teacher is built
    except ImportError:
        raise AtelierError(MAGENTA_MISSING) from None
    local = Path(handle).expanduser()
    try:
        if local.is_dir():
            model = tf.saved_model.load(str(local))
            pb = local / "saved_model.pb"
            digest = f", sha256:{sha256_file(pb)[:12]}" if pb.is_file() else ""
            return tf, model, f"magenta({local.name}{digest})"
        try:
            import tensorflow_hub as hub
        except ImportError:
            raise AtelierError(f"the magenta teacher needs tensorflow-hub to load {handle}: "
                               "pip install 'atelier[magenta]' (or pass a local SavedModel folder)") from None
        return tf, hub.load(handle), f"magenta({handle})"
    except AtelierError:
        raise
    except Exception as e:  # TF raises many types (OSError, NotFoundError, ValueError ...)
        raise AtelierError(f"cannot load the magenta model from {handle} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); check the handle or folder") from None


def call_magenta(tf: Any, model: Any, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Magenta's call: ``outputs = model(content, style)``, NHWC float32 in [0,1]; ``outputs[0]`` is the image."""
    c = tf.constant(content.permute(0, 2, 3, 1).contiguous().numpy(), dtype=tf.float32)
    s = tf.constant(style.permute(0, 2, 3, 1).contiguous().numpy(), dtype=tf.float32)
    outputs = model(c, s)
    image = outputs[0]
    array = image.numpy() if hasattr(image, "numpy") else image
    out = torch.as_tensor(array, dtype=torch.float32)
    if out.dim() == 3:
        out = out.unsqueeze(0)
    if out.dim() != 4 or out.shape[-1] != 3:
        raise AtelierError(f"the magenta model returned an image of shape {tuple(out.shape)}, not [1,H,W,3]; "
                           "is the handle Magenta's arbitrary-image-stylization model?")
    return out.permute(0, 3, 1, 2).contiguous()


def make_teacher(name: str, options: Optional[dict[str, Any]] = None, device: str = "auto",
                 seed: int = 0) -> Teacher:
    """Build the teacher ``name`` with ``options`` (a dict; for gatys/lite the fields of StylizeOptions other than
    size and device, with ``seed`` as the default seed; for magenta ``handle`` and ``style_size``)."""
    options = dict(options or {})
    for key, value in options.items():
        if not isinstance(key, str):
            raise AtelierError(f"teacher option names must be strings, got {key!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AtelierError(f"teacher option {key} must be finite, got {value!r}")
    return registry.create("teacher", name, options=options, device=device, seed=seed)


def gatys_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return OptimizeTeacher("gatys", options, device=device, seed=seed)


def lite_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return OptimizeTeacher("lite", options, device=device, seed=seed)


def magenta_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    return MagentaTeacher(options)  # runs where TensorFlow puts it; the seed does not apply (deterministic)


__all__ = ["TEACHERS", "Teacher", "OptimizeTeacher", "MagentaTeacher", "make_teacher", "load_magenta",
           "call_magenta", "MAGENTA_HANDLE", "MAGENTA_MISSING"]
