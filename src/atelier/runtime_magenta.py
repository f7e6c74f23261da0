"""Run Magenta's arbitrary-style network as written by ``atelier export magenta``, with onnxruntime, Pillow and numpy
only: no torch needed. ``atelier.runtime.load_model`` and ``python -m atelier.runtime MODEL PHOTO --style PAINTING``
come here for these files.

The pair of files (``export/magenta.py`` writes them):

- ``magenta.onnx``, the transformer: inputs ``image`` float32 ``[N,3,H,W]`` RGB in [0,1] (any ``H, W >= min_input``,
  8; smaller pictures are padded here as the torch net pads them) and ``embedding`` float32 ``[N,100]``; output
  ``stylized`` ``[N,3,H,W]`` in (0,1). ``atelier.kind`` is ``magenta``; ``atelier.predictor`` names the predictor file
  beside it and ``atelier.predictor_sha256`` its sha256, so a pair from different exports is refused.
- ``magenta.predict.onnx``, the style predictor: input ``style`` ``[N,3,256,256]``, output ``embedding``
  ``[N,100]``; ``atelier.kind`` is ``magenta-predictor``.

``MagentaStylizer.stylize(photo, styles, size=None, strength=1.0, style_weights=None)`` does what the torch method
``magenta`` (``methods/magenta.py``) does:

1. each style image: resized to the long side the method loads style images at (``atelier.style_load_side``,
   1024), its centre square (offsets ``(h - side) // 2``) resized to 256x256, then the predictor; both resizes are
   Pillow's bicubic on float planes, antialiased when shrinking (``runtime.resize_array``: the filter of torch's
   antialiased bicubic that the method uses);
2. several styles: the embeddings' weighted mean (weights normalised to sum to 1);
3. ``strength < 1``: the embedding interpolated from the photo's own (the photo after ``size``, its centre
   square at 256);
4. the transformer at the photo's full size.

``embed`` and ``run`` are the steps on their own, so a caller can predict a style once and paint many photos with it.
``StylePredictor`` (the predictor file a model's metadata names, checked by its sha256, and ``embed``) serves this
transformer and the arbitrary-style students' exports (``atelier.runtime.OnnxStylizer``) alike; for the students the
file is, by default, the distilled style encoder (``atelier.kind`` ``style-encoder``, ``export/style_encoder.py``:
the same input and output, about 4x faster), and the student's ``atelier.style_min_side`` refuses style
images smaller than the encoder reads.
Not here (the torch method has them): ``tile`` (the instance norms span the whole picture; the method's exact tiled
path needs the net in stages) and ``preserve_color``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .errors import AtelierError
from .runtime import (DEFAULT_MAX_PIXELS, INPUT_NAME, OUTPUT_NAME, ImageInput, PathLike, long_side_hw, open_session,
                      resize_array, to_array, to_pil)

KIND = "magenta"
PREDICTOR_KIND = "magenta-predictor"
ENCODER_KIND = "style-encoder"  # the distilled style encoder (export/style_encoder.py): the predictor's interface
EMBEDDING_NAME = "embedding"   # the transformer's second input and the predictor's output
STYLE_NAME = "style"           # the predictor's input
STYLE_SIZE = 256
EMBEDDING_SIZE = 100
PAD_MULTIPLE, MIN_SIZE = 4, 8  # nets.magenta: two stride-2 convs; the residual blocks' reflect pads at 1/4


def style_square(array: np.ndarray, size: int = STYLE_SIZE) -> np.ndarray:
    """The centre square of ``[1,3,H,W]`` resized to ``size`` x ``size`` (``methods.magenta.style_square``)."""
    h, w = array.shape[-2], array.shape[-1]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_array(np.ascontiguousarray(array[..., top:top + side, left:left + side]), (size, size))


def pad_like_transformer(x: np.ndarray) -> np.ndarray:
    """``nets.magenta._pad_to`` in numpy: at the bottom/right to a multiple of 4 and at least 8, by reflection where
    the picture is large enough, else by edge replication."""
    h, w = x.shape[-2], x.shape[-1]
    th = max(MIN_SIZE, math.ceil(h / PAD_MULTIPLE) * PAD_MULTIPLE)
    tw = max(MIN_SIZE, math.ceil(w / PAD_MULTIPLE) * PAD_MULTIPLE)
    if (th, tw) == (h, w):
        return x
    mode = "reflect" if th - h < h and tw - w < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, th - h), (0, tw - w)), mode=mode)


def mix(embeddings: Sequence[np.ndarray], weights: Optional[Sequence[float]] = None,
        what: str = "style image") -> np.ndarray:
    """The weighted mean of embeddings ``[1,100]`` (or of any conditions, ``what`` naming them in messages; equal
    weights by default)."""
    w = [1.0] * len(embeddings) if weights is None else list(weights)
    if len(w) != len(embeddings):
        raise AtelierError(f"style_weights has {len(w)} values for {len(embeddings)} {what}"
                           f"{'' if len(embeddings) == 1 else 's'}; give one weight per {what}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 for v in w) \
            or sum(w) <= 0:
        raise AtelierError(f"style_weights must be numbers >= 0, not all zero, got {w}")
    total = float(sum(w))
    return sum(e * np.float32(v / total) for e, v in zip(embeddings, w)).astype(np.float32)


def _io(session: Any) -> tuple[list[str], list[str]]:
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


class StylePredictor:
    """The style predictor a model's metadata names: ``atelier.predictor`` (the file beside the model) and
    ``atelier.predictor_sha256`` (so a predictor from another export is refused). Both ``atelier export magenta``'s
    transformer and an arbitrary-style student's export (``atelier export``) carry one.

    ``info``: the model's metadata; ``path``: the model's file (None for bytes); ``predictor``: the predictor's path
    or bytes (default: the file the metadata names, beside ``path``); ``label``: the model, for messages.
    """

    def __init__(self, info: dict[str, Any], path: Optional[Path], predictor: Union[PathLike, bytes, None],
                 threads: Optional[int], label: str):
        self.info = info
        data = self._predictor_bytes(path, predictor, label)
        want = str(info.get("predictor_sha256", ""))
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise AtelierError(f"the predictor ({got[:12]}...) is not the one {label} was exported with "
                               f"({want[:12] or '?'}...); export both again with atelier export")
        # The predictor's threads sleep when idle: spinning, they took the cores from the transformer's threads
        # that run next (at 512 px, 2 threads: predict + transform 92 ms with spinning, 63 ms without).
        self.session, pinfo, _ = open_session(data, threads, spinning=False)
        if pinfo.get("kind") not in (PREDICTOR_KIND, ENCODER_KIND) or _io(self.session) != ([STYLE_NAME],
                                                                                            [EMBEDDING_NAME]):
            raise AtelierError(f"the predictor of {label} is not a style predictor or style encoder; the file is "
                               "damaged")
        self.kind = pinfo["kind"]

    def _predictor_bytes(self, path: Optional[Path], predictor: Union[PathLike, bytes, None], label: str) -> bytes:
        if isinstance(predictor, bytes):
            return predictor
        if predictor is None:
            name = str(self.info.get("predictor", ""))
            if not name or Path(name).name != name:
                raise AtelierError(f"{label} names no predictor file (atelier.predictor); the file is damaged")
            if path is None:
                raise AtelierError(f"give the predictor ({name}) when the model is given as bytes")
            predictor = path.parent / name
        p = Path(predictor)
        if not p.is_file():
            raise AtelierError(f"the magenta style predictor {p} is missing; it belongs beside {label} (atelier "
                               "export writes both)")
        return p.read_bytes()

    def embed(self, image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The style embedding ``[1,100]`` of a style image (path, PIL image or array): loaded at the long side the
        torch path loads style images at (``atelier.style_load_side``: up or down), then its centre square at
        256."""
        x = to_array(image, max_pixels)[:1]
        least = self.info.get("style_min_side")  # the style encoder's (methods.style_encoding.STYLE_MIN_SIDE)
        if isinstance(least, int) and min(x.shape[-2:]) < least:
            raise AtelierError(f"the style image is {x.shape[-1]}x{x.shape[-2]} px; the style encoder needs at least "
                               f"{least} px on its short side (give a larger style image)")
        side = self.info.get("style_load_side")
        if isinstance(side, int) and side > 0:
            x = resize_array(x, long_side_hw(x.shape[-2], x.shape[-1], side))
        return self.embed_array(x)

    def embed_array(self, x: np.ndarray) -> np.ndarray:
        """The embedding of ``[1,3,H,W]`` as it is (its centre square at 256)."""
        return self.session.run([EMBEDDING_NAME], {STYLE_NAME: style_square(x[:1])})[0].astype(np.float32)


class MagentaStylizer:
    """The exported transformer and its predictor in onnxruntime CPU sessions.

    ``model``: the transformer's ``.onnx`` path (or bytes). ``predictor``: the predictor's path or bytes (default:
    the file the transformer's metadata names, beside it). ``threads``: intra-op threads (None: onnxruntime's
    default). ``opened``: a session already opened by ``runtime.load_model``.
    """

    def __init__(self, model: Union[PathLike, bytes], predictor: Union[PathLike, bytes, None] = None,
                 threads: Optional[int] = None, opened: Optional[tuple[Any, dict[str, Any], str]] = None):
        self.session, self.info, label = opened or open_session(model, threads)
        kind = self.info.get("kind")
        if kind == PREDICTOR_KIND:
            raise AtelierError(f"{label} is the magenta style predictor; pass the transformer file (the one "
                               "without .predict), which finds its predictor beside it")
        if kind != KIND:
            raise AtelierError(f"{label} is not a magenta model (kind {kind!r}); use atelier.runtime.OnnxStylizer")
        if _io(self.session) != ([INPUT_NAME, EMBEDDING_NAME], [OUTPUT_NAME]):
            raise AtelierError(f"{label} does not have the inputs {INPUT_NAME!r}, {EMBEDDING_NAME!r} and the output "
                               f"{OUTPUT_NAME!r} of a magenta transformer; the file is damaged")
        for key, want in (("style_size", STYLE_SIZE), ("embedding_size", EMBEDDING_SIZE), ("min_input", MIN_SIZE)):
            if self.info.get(key) != want:
                raise AtelierError(f"{label} has atelier.{key} {self.info.get(key)!r}, not {want}; the file is "
                                   "damaged or from another atelier")
        self.path = None if isinstance(model, bytes) else Path(model)
        self.style_predictor = StylePredictor(self.info, self.path, predictor, threads, label)
        self.predictor = self.style_predictor.session

    def __repr__(self) -> str:
        return f"MagentaStylizer({self.info.get('source', '?')})"

    def embed(self, image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The style embedding ``[1,100]`` of a style image (path, PIL image or array): see ``StylePredictor.embed``."""
        return self.style_predictor.embed(image, max_pixels)

    def embed_array(self, x: np.ndarray) -> np.ndarray:
        """The embedding of ``[1,3,H,W]`` as it is (its centre square at 256): the photo's own, for ``strength``."""
        return self.style_predictor.embed_array(x)

    def run(self, array: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """The transformer over float32 ``[N,3,H,W]`` in [0,1] with embeddings ``[N,100]`` (or ``[1,100]`` for
        all); returns ``[N,3,H,W]``. Any ``H, W >= 1``."""
        if not isinstance(array, np.ndarray) or array.ndim != 4 or array.shape[1] != 3:
            shape = tuple(array.shape) if isinstance(array, np.ndarray) else type(array).__name__
            raise AtelierError(f"run takes a float32 array [N,3,H,W], got {shape}")
        e = np.asarray(embedding, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != EMBEDDING_SIZE or e.shape[0] not in (1, array.shape[0]) \
                or not np.isfinite(e).all():
            raise AtelierError(f"embedding must be finite [N,{EMBEDDING_SIZE}] or [1,{EMBEDDING_SIZE}], got "
                               f"{tuple(e.shape)}")
        n, h, w = array.shape[0], array.shape[-2], array.shape[-1]
        x = np.ascontiguousarray(array, dtype=np.float32)
        if min(h, w) < MIN_SIZE:
            x = pad_like_transformer(x)
        feed = {INPUT_NAME: x, EMBEDDING_NAME: np.ascontiguousarray(np.broadcast_to(e, (n, EMBEDDING_SIZE)))}
        return self.session.run([OUTPUT_NAME], feed)[0][..., :h, :w]

    def stylize(self, image: ImageInput, styles: Union[ImageInput, Sequence[ImageInput], None] = None, *,
                embedding: Optional[np.ndarray] = None, size: Optional[int] = None, strength: float = 1.0,
                style_weights: Optional[Sequence[float]] = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Paint ``image`` in the style of ``styles`` (one image or several, mixed by ``style_weights``), or with a
        ready ``embedding`` ``[1,100]`` (from ``embed``/``mix``); ``size``: long side first; ``strength`` in [0,1].
        Returns an 8-bit RGB PIL image."""
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise AtelierError(f"size must be a positive whole number of pixels, got {size!r}")
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
            raise AtelierError(f"strength must be a number from 0 to 1, got {strength!r}")
        if (styles is None) == (embedding is None):
            raise AtelierError("give style images or an embedding (one of the two)")
        x = to_array(image, max_pixels)[:1]
        if size is not None:
            x = resize_array(x, long_side_hw(x.shape[-2], x.shape[-1], size))
        if embedding is None:
            many = list(styles) if isinstance(styles, (list, tuple)) else [styles]
            if not many:
                raise AtelierError("a style image is needed for a magenta model")
            embedding = mix([self.embed(s, max_pixels) for s in many], style_weights)
        e = np.asarray(embedding, dtype=np.float32)
        if strength < 1:
            e = np.float32(strength) * e + np.float32(1 - strength) * self.embed_array(x)
        return to_pil(self.run(x, e))


__all__ = ["MagentaStylizer", "StylePredictor", "style_square", "mix", "pad_like_transformer", "KIND", "PREDICTOR_KIND",
           "ENCODER_KIND", "EMBEDDING_NAME", "STYLE_NAME", "STYLE_SIZE", "EMBEDDING_SIZE"]
