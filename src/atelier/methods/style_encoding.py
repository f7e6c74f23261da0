"""How an arbitrary-style student turns style images into its condition, Magenta's 100-d style embedding.

Two embedders give that embedding from a style image's 256 px centre square (``methods.magenta.style_square``):

- the style encoder (``nets/style_encoder.py``; the bundled ``atelier/weights/style-encoder``, or a folder from
  ``atelier train style-encoder``): a small net distilled from Magenta's predictor, a few ms a style image. The
  default;
- Magenta's style predictor itself (``nets/magenta_port.py``): exact, about 4x slower (benchmarks/README.md
  section 16).

``StylizeOptions.style_encoder`` chooses (``choose_embedder``): ``None`` is the bundled encoder, unless
``magenta_weights`` is given (then the predictor with those weights, as before the encoder existed) or the student
was trained on another teacher than the one the encoder imitates (then the predictor, whose embedding that student
knows); ``"distilled"`` the bundled encoder, ``"magenta"`` the predictor, anything else a style encoder folder. An
encoder chosen by name for a student of another teacher, or with ``magenta_weights``, is refused in one line.

Style images reach ``embed_styles`` at their own size (``STYLE_LOAD_SIDE`` is applied here, as ``style_side`` would,
so the check below sees the image the user gave): one smaller than ``STYLE_MIN_SIDE`` on its short side is refused
for the encoder (it reads the statistics of the pixels it is given, and a tiny image upscaled to 256 px has none to
give). Then each is resized to ``STYLE_LOAD_SIDE`` on its long side (remembered for the same tensor, so the frames of
a video resize their style once) and embedded through ``methods.magenta.embed``, whose cache (keyed by the
embedder's identity and the square's pixels) serves both embedders.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch

from ..errors import AtelierError, OptionError
from ..images import resize_long_side

STYLE_LOAD_SIDE = 512  # the long side a style image is brought to before its centre square is taken
STYLE_MIN_SIDE = 32    # the short side a style image needs for the style encoder
DISTILLED, MAGENTA = "distilled", "magenta"
# The last few style images brought to STYLE_LOAD_SIDE, by tensor (and its version): a caller that paints many photos
# with the style tensors it prepared once (api.prepare: video frames) resizes a large painting once, as the gate did.
_sided: "OrderedDict[tuple[int, int], tuple[weakref.ref, torch.Tensor]]" = OrderedDict()
_lock = threading.Lock()


def student_teachers(config: dict[str, Any]) -> list[str]:
    """The Magenta identities a magenta-embedding student was trained on (from ``condition.teacher``)."""
    given = (config.get("condition") or {}).get("teacher")
    names = given if isinstance(given, list) else [given] if isinstance(given, str) else []
    out = []
    for name in names:
        text = str(name)
        out.append(text[len("magenta("):-1] if text.startswith("magenta(") and text.endswith(")") else text)
    return out


def choose_embedder(config: dict[str, Any], style_encoder: Optional[str] = None,
                    magenta_weights: Optional[str] = None) -> Any:
    """The embedder for a magenta-embedding student's ``config`` (see the module docstring): a
    ``nets.style_encoder.LoadedStyleEncoder`` or ``nets.magenta_port.MagentaNets``, both on the CPU."""
    from ..nets.magenta_port import load_magenta
    from ..nets.style_encoder import BUNDLED, load_style_encoder

    if style_encoder == MAGENTA or (style_encoder is None and magenta_weights is not None):
        return load_magenta(magenta_weights, torch.device("cpu"))
    if style_encoder is not None and magenta_weights is not None:
        raise OptionError("magenta_weights", f"is for Magenta's style predictor, not the style encoder "
                                             f"{style_encoder!r}; drop it, or choose style_encoder magenta")
    if style_encoder is None and not BUNDLED.is_dir():
        return load_magenta(None, torch.device("cpu"))  # an install without the bundled encoder
    encoder = load_style_encoder(None if style_encoder in (None, DISTILLED) else style_encoder)
    teachers = student_teachers(config)
    if encoder.teacher not in teachers:
        if style_encoder is None:
            return load_magenta(None, torch.device("cpu"))
        raise AtelierError(f"style encoder {encoder.identity} imitates {encoder.teacher}, but this student was "
                           f"trained on {', '.join(teachers) or 'an unnamed teacher'}; choose style_encoder magenta")
    return encoder


def default_encoder_fits(config: dict[str, Any]) -> bool:
    """Whether ``choose_embedder(config)`` with no options takes the bundled encoder (it exists and imitates a teacher
    the student was trained on); reads the encoder's config.json only, no weights."""
    import json

    from ..nets.style_encoder import BUNDLED

    try:
        encoder = json.loads((BUNDLED / "config.json").read_text())
    except (OSError, ValueError):
        return False
    teacher = (encoder.get("embedding") or {}).get("teacher") if isinstance(encoder, dict) else None
    return isinstance(teacher, str) and teacher in student_teachers(config)


def is_encoder(embedder: Any) -> bool:
    from ..nets.style_encoder import LoadedStyleEncoder

    return isinstance(embedder, LoadedStyleEncoder)


def load_side(style: torch.Tensor, embedder: Any) -> torch.Tensor:
    """``style`` ``[1,3,H,W]`` checked (the encoder's minimum side) and resized to ``STYLE_LOAD_SIDE`` on its long
    side."""
    if style.dim() != 4 or style.shape[1] != 3:
        raise AtelierError(f"a style image is [1,3,H,W], got {tuple(style.shape)}")
    h, w = int(style.shape[-2]), int(style.shape[-1])
    if is_encoder(embedder) and min(h, w) < STYLE_MIN_SIDE:
        raise AtelierError(f"the style image is {w}x{h} px; the style encoder needs at least {STYLE_MIN_SIDE} px on "
                           "its short side (give a larger style image, or style_encoder magenta)")
    key = (id(style), style._version)
    with _lock:
        hit = _sided.get(key)
        if hit is not None and hit[0]() is style:  # the same tensor, unchanged: a video's frames share it
            return hit[1]
    out = resize_long_side(style, STYLE_LOAD_SIDE)
    with _lock:
        _sided[key] = (weakref.ref(style), out)
        while len(_sided) > 8:
            _sided.popitem(last=False)
    return out


def embed_styles(embedder: Any, styles: Sequence[torch.Tensor],
                 weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The condition ``[1,100]``: each style image's embedding (cached), mixed by ``weights`` (equal by default)."""
    from .magenta import embed, mix

    if not styles:
        raise AtelierError("a style image is needed for an arbitrary-style student")
    return mix([embed(embedder, load_side(s.to("cpu", torch.float32), embedder)) for s in styles], weights)


def identity(embedder: Union[Any, None]) -> Optional[str]:
    """What made the embedding, for the painting's metadata."""
    if embedder is None:
        return None
    return embedder.identity if is_encoder(embedder) else f"magenta-style-predictor({embedder.identity})"


__all__ = ["choose_embedder", "default_encoder_fits", "embed_styles", "load_side", "identity", "is_encoder", "student_teachers",
           "STYLE_LOAD_SIDE", "STYLE_MIN_SIDE", "DISTILLED", "MAGENTA"]
