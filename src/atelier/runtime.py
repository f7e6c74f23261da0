"""Run a model written by ``atelier export`` with onnxruntime, Pillow and numpy only: no torch needed.

``load_model(path)`` opens any such file: a student gives an ``OnnxStylizer`` (below); ``atelier export magenta``'s
transformer gives a ``runtime_magenta.MagentaStylizer`` (a photo and style images in). The command line
(``main``) takes both: ``--style``, ``--style-weights`` and ``--strength`` are for magenta files and conditional
students.

Contract of an atelier ONNX file (written by ``atelier.export.export_onnx``, read here):

- one input ``image`` and one output ``stylized``, both float32 ``[N,3,H,W]`` RGB in [0,1], with symbolic
  ``batch``, ``height`` and ``width``; any ``H, W >= 1`` is accepted here (see "small images" below).
- ``metadata_props`` keys prefixed ``atelier.``: ``export_format`` (an int; this module reads up to
  ``EXPORT_FORMAT``), ``name``, ``kind`` ("student"), ``generator``, ``architecture`` (JSON), ``style``,
  ``pad_multiple``, ``min_size``, ``min_input``, ``version`` (atelier's), ``source`` (the weights' identity, e.g.
  ``student:starry-tiny(sha256:...)``), ``opset``, ``quantize``, ``parity_max_abs_diff`` and ``psnr_db`` (what the
  export measured). ``OnnxStylizer.info`` holds them without the prefix, numbers as numbers.

Conditional students (``nets/cond.py``; ``export_format`` 2, so an older runtime says "upgrade" instead of
mis-reading them) have three inputs: ``image``, ``cond`` float32 ``[N, cond_dim]`` and ``strength`` float32 ``[N]``
in [0,1] (0: the photo, 1: the full style; the net blends in the same pass), all with the symbolic ``batch``. Their
metadata adds ``condition`` and ``cond_dim``, and:

- ``condition`` ``styles`` (a style set): ``styles`` (JSON list of the names, one per ``cond`` column) and
  ``style_images``; ``cond`` is a convex mix of one-hot rows (``OnnxStylizer.condition(["dots", "waves"], [1, 3])``),
  names matched exactly or ignoring case and punctuation, as ``StudentModel.find_style`` does;
- ``condition`` ``magenta-embedding`` (an arbitrary-style student): ``cond`` is Magenta's 100-d style embedding of a
  style image, from the style predictor written beside the model (``<stem>.predict.onnx``, named by ``predictor`` and
  checked by ``predictor_sha256``, as for ``atelier export magenta``); ``style_load_side`` (512), ``style_size`` and
  ``embedding_size`` say how style images are loaded (``runtime_magenta.StylePredictor``); several styles are mixed
  by their weighted mean. ``magenta_source`` names the predictor's weights (the one the embedding is Magenta's).
  By default that file is the distilled style encoder (its ``atelier.kind`` ``style-encoder``; the student's
  ``style_encoder`` names it and ``style_min_side`` the smallest style image it takes).

Every tile of a tiled run gets the same condition and strength.

Small images: the exported graph covers ``H, W >= min_input`` (the trace froze the generator's pad branches for that
range). A smaller input is padded here exactly as the generator pads it in torch (``nets.blocks.pad_to``: to
``pad_multiple`` and at least ``min_size``, reflection where possible, else edge replication), run, and cropped
back, so any size gives the torch result.

Tiling (``tile=T``) uses ``atelier.tiling``, the same plan the torch path uses: tiles of at most T x T overlapping
by at least ``overlap`` pixels, blended by raised-cosine weights, so the result matches ``StudentModel.run`` with the
same tile and overlap up to the two runtimes' float differences.

Resizing (``size=``) is Pillow's bicubic on float32 planes (antialiased when shrinking), which is the filter torch's
``interpolate(mode="bicubic", antialias=True)`` in ``atelier.images`` reproduces, so results match the torch path's
``size=`` to within float rounding. Errors a user can cause raise ``AtelierError`` with a one-line message.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import AtelierError
from .tiling import DEFAULT_OVERLAP, check_tiling, iter_tiles

INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
COND_NAME = "cond"          # a conditional student's condition [N, cond_dim]
STRENGTH_NAME = "strength"  # and its strength [N] in [0,1]
METADATA_PREFIX = "atelier."
EXPORT_FORMAT = 2  # the newest format this module reads: 2 for conditional students, which older runtimes refuse
PLAIN_FORMAT = 1   # what every other file is written as, so older runtimes still read them
CONDITIONS = ("styles", "magenta-embedding")  # methods.feedforward.CONDITIONS (that module imports torch)
DEFAULT_MAX_PIXELS = 50_000_000  # the same limit as atelier.images (which imports torch, so it is not imported)
_INT_KEYS = ("export_format", "pad_multiple", "min_size", "min_input", "opset", "style_size", "embedding_size",
             "style_load_side", "style_min_side", "cond_dim")
_JSON_KEYS = ("architecture", "styles", "style_images")
MAGENTA_KINDS = ("magenta", "magenta-predictor")  # atelier export magenta (runtime_magenta.py)
_FLOAT_KEYS = ("parity_max_abs_diff", "psnr_db")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")  # a style set refuses these

PathLike = Union[str, "os.PathLike[str]"]
ImageInput = Union[PathLike, Image.Image, np.ndarray]


# ------------------------------------------------------------------------------------------------ pixels


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency composited over white (as ``atelier.images`` does)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A fully decoded RGB image (EXIF orientation applied); one-line AtelierErrors for unreadable files."""
    p = Path(path)
    if not p.is_file():
        raise AtelierError(f"image not found: {p}; check the path" if not p.exists() else
                           f"{p} is not an image file; pass an image file")
    try:
        with warnings.catch_warnings():
            # Pillow's bomb warning means "over its limit": refuse before decoding anything.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise AtelierError(f"{p} is too large ({w}x{h} = {w * h:,} pixels, limit {max_pixels:,} "
                                       "pixels); shrink it")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except AtelierError:
        raise
    except UnidentifiedImageError:
        raise AtelierError(f"{p} is not an image this runtime can read; use JPEG, PNG, WebP, TIFF or BMP") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AtelierError(f"{p} is too large for Pillow's decompression-bomb limit; shrink it") from None
    except OSError as e:
        raise AtelierError(f"cannot read {p} ({type(e).__name__}: {e}); re-export or re-download the image") \
            from None


def to_array(image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path, PIL image or array as float32 ``[1,3,H,W]`` in [0,1].

    Arrays: ``[H,W,3]`` uint8 (0..255) or float (0..1), or float ``[3,H,W]`` / ``[N,3,H,W]`` in [0,1].
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, max_pixels)
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(_to_rgb(image), dtype=np.float32).transpose(2, 0, 1)[None] / 255.0)
    if not isinstance(image, np.ndarray):
        raise AtelierError(f"an image is a path, a PIL image or a numpy array, got {type(image).__name__}")
    a = image
    if a.ndim == 3 and a.shape[-1] == 3 and a.shape[0] != 3:
        a = (a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)).transpose(2, 0, 1)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1] != 3 or a.shape[2] < 1 or a.shape[3] < 1:
        raise AtelierError(f"image arrays must be [H,W,3], [3,H,W] or [N,3,H,W], got shape {tuple(image.shape)}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise AtelierError("the image array has NaN or infinite values")
    return np.ascontiguousarray(np.clip(a, 0.0, 1.0))


def to_pil(array: np.ndarray) -> Image.Image:
    """``[1,3,H,W]`` / ``[3,H,W]`` float in [0,1] -> 8-bit RGB (clamped, rounded half to even like torch)."""
    a = array[0] if array.ndim == 4 else array
    a = np.rint(np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))


def long_side_hw(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Target (H, W) with the long side = ``long_side``, aspect kept, short side rounded half up (as
    ``atelier.images.long_side_hw``, whose module imports torch)."""
    scale = long_side / max(h, w)
    if h >= w:
        return long_side, max(1, math.floor(w * scale + 0.5))
    return max(1, math.floor(h * scale + 0.5)), long_side


def resize_array(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize ``[N,3,H,W]`` float32 to ``hw``: Pillow bicubic on float planes (antialiased when shrinking), clamped.

    Float planes (mode "F") rather than 8-bit RGB, so nothing is rounded to 8 bits before the net sees it.
    """
    h, w = int(hw[0]), int(hw[1])
    if array.shape[-2:] == (h, w):
        return array
    out = np.empty(array.shape[:2] + (h, w), dtype=np.float32)
    for n in range(array.shape[0]):
        for c in range(array.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(array[n, c], dtype=np.float32), mode="F")
            out[n, c] = np.asarray(plane.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def _padded(n: int, multiple: int, min_size: int) -> int:
    # The generator's own rule (nets.blocks._padded): up to a multiple, and to at least min_size.
    if n < min_size:
        return max(min_size, -(-n // multiple) * multiple)
    return (n + multiple - 1) // multiple * multiple


def pad_like_generator(x: np.ndarray, multiple: int, min_size: int) -> tuple[np.ndarray, int, int]:
    """``nets.blocks.pad_to`` in numpy: pad split between both sides, reflection when each side's pad is smaller
    than the image, else edge replication; returns the padded array and (top, left)."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = _padded(h, multiple, min_size) - h, _padded(w, multiple, min_size) - w
    top, left = ph // 2, pw // 2
    mode = "reflect" if ph - top < h and pw - left < w else "edge"  # numpy's reflect = torch's (edge not repeated)
    return np.pad(x, ((0, 0), (0, 0), (top, ph - top), (left, pw - left)), mode=mode), top, left


# ------------------------------------------------------------------------------------------------- model


def _parse_info(props: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(METADATA_PREFIX):
            continue
        k = key[len(METADATA_PREFIX):]
        try:
            if k in _INT_KEYS:
                info[k] = int(value)
            elif k in _FLOAT_KEYS:
                info[k] = float(value) if value not in ("", "None") else None
            elif k in _JSON_KEYS:
                info[k] = json.loads(value)
            else:
                info[k] = value
        except ValueError:
            info[k] = value  # a damaged number stays a string; the checks below name what is needed
    return info


def open_session(model: Union[PathLike, bytes], threads: Optional[int] = None,
                 spinning: bool = True) -> tuple[Any, dict[str, Any], str]:
    """(onnxruntime CPU session, the ``atelier.*`` metadata without the prefix, a label for messages) of a file written
    by ``atelier export``; refuses with one line anything else. ``spinning=False``: the session's threads sleep
    when idle instead of spinning (for a second session that alternates with a first, see ``runtime_magenta``)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise AtelierError("running an ONNX model needs onnxruntime; run: pip install onnxruntime") from None
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise AtelierError(f"threads must be a whole number >= 1 (or None for the default), got {threads!r}")
    label = "the model bytes" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        p = Path(model)
        if not p.is_file():
            raise AtelierError(f"ONNX model not found: {p}; export one with: atelier export MODEL_DIR -o {p.name}"
                               if not p.exists() else f"{p} is not a file; pass an .onnx file")
        model = str(p)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1  # one chain of convs: nothing runs in parallel across operators
    options.log_severity_level = 3  # errors only: the warnings are about fusions, not about the user's input
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for damaged or unsupported files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AtelierError(f"cannot load {label} as an ONNX model ({first[:200]}); re-export it with "
                           "atelier export") from None
    info = _parse_info(dict(session.get_modelmeta().custom_metadata_map))
    fmt = info.get("export_format")
    if not isinstance(fmt, int):
        raise AtelierError(f"{label} was not written by atelier export (no atelier metadata); export the "
                           "model with: atelier export MODEL_DIR -o model.onnx")
    if fmt > EXPORT_FORMAT:
        raise AtelierError(f"{label} uses atelier export format {fmt}, newer than this runtime reads "
                           f"({EXPORT_FORMAT}); upgrade atelier")
    return session, info, label


def load_model(model: Union[PathLike, bytes], threads: Optional[int] = None) -> Any:
    """The stylizer for any file ``atelier export`` writes: an ``OnnxStylizer`` (a student, conditional ones
    included) or a ``runtime_magenta.MagentaStylizer`` (``atelier export magenta``), chosen by the file's
    ``atelier.kind``."""
    opened = open_session(model, threads)
    if opened[1].get("kind") in MAGENTA_KINDS:
        from .runtime_magenta import MagentaStylizer

        return MagentaStylizer(model, threads=threads, opened=opened)
    return OnnxStylizer(model, threads=threads, opened=opened)


def _strengths(strength: Any, n: int) -> np.ndarray:
    """``strength`` (None: 1; a number, or one per picture, in [0,1]) as float32 ``[n]``."""
    s = np.empty(0)
    if strength is None or (isinstance(strength, (numbers.Real, np.ndarray)) and not isinstance(strength, bool)):
        s = np.asarray(1.0 if strength is None else strength, dtype=np.float64).reshape(-1)
    if s.size not in (1, n) or not (np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()):
        raise AtelierError(f"strength must be a number from 0 to 1 (or one per picture), got {strength!r}")
    return np.ascontiguousarray(np.broadcast_to(s.astype(np.float32), (n,)))


class OnnxStylizer:
    """An exported atelier model loaded into an onnxruntime CPU session.

    ``model``: a path to a ``.onnx`` file (or its bytes). ``threads``: intra-op threads (None: onnxruntime's default,
    one per physical core). ``predictor``: an arbitrary-style student's style predictor, path or bytes (default: the
    file its metadata names, beside the model).
    """

    def __init__(self, model: Union[PathLike, bytes], threads: Optional[int] = None,
                 opened: Optional[tuple[Any, dict[str, Any], str]] = None,
                 predictor: Union[PathLike, bytes, None] = None):
        self.session, self.info, label = opened or open_session(model, threads)  # opened: by load_model
        self.path = None if label == "the model bytes" else Path(label)
        self.label = label
        if self.info.get("kind") in MAGENTA_KINDS:
            raise AtelierError(f"{label} is a magenta model (a photo and a style image in): load it with "
                               "atelier.runtime.load_model, or run python -m atelier.runtime MODEL PHOTO --style "
                               "PAINTING -o OUT")
        self.condition: Optional[str] = self.info.get("condition") or None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if self.condition is None and (inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]):
            raise AtelierError(f"{label} does not have one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}; "
                               "the file is damaged")
        if self.condition is not None and (inputs != [INPUT_NAME, COND_NAME, STRENGTH_NAME]
                                           or outputs != [OUTPUT_NAME]):
            raise AtelierError(f"{label} does not have the inputs {INPUT_NAME!r}, {COND_NAME!r}, {STRENGTH_NAME!r} "
                               f"and the output {OUTPUT_NAME!r} of a conditional student; the file is damaged")
        for key in ("pad_multiple", "min_size", "min_input"):
            if not isinstance(self.info.get(key), int) or self.info[key] < 1:
                raise AtelierError(f"{label} has no valid atelier.{key} metadata; the file is damaged")
        self.style_names: list[str] = []
        self.predictor: Any = None  # runtime_magenta.StylePredictor of an arbitrary-style student
        if self.condition is not None:
            self._check_condition(predictor, threads)
        elif predictor is not None:
            raise AtelierError(f"{label} has its style built in; a style predictor is for arbitrary-style students")

    def _check_condition(self, predictor: Union[PathLike, bytes, None], threads: Optional[int]) -> None:
        label, dim = self.label, self.info.get("cond_dim")
        if self.condition not in CONDITIONS:
            raise AtelierError(f"{label} has condition {self.condition!r}, which this runtime does not know "
                               f"(known: {', '.join(CONDITIONS)}); upgrade atelier")
        if not isinstance(dim, int) or dim < 1:
            raise AtelierError(f"{label} has no valid atelier.cond_dim metadata; the file is damaged")
        if self.condition == "styles":
            names = self.info.get("styles")
            if not (isinstance(names, list) and len(names) == dim and all(isinstance(n, str) and n for n in names)
                    and len(set(names)) == len(names)):
                raise AtelierError(f"{label}: atelier.styles must name the {dim} styles, once each; the file is "
                                   "damaged")
            self.style_names = list(names)
            if predictor is not None:
                raise AtelierError(f"{label} is a style set; a style predictor is for arbitrary-style students")
            return
        from .runtime_magenta import EMBEDDING_SIZE, StylePredictor

        if dim != EMBEDDING_SIZE:
            raise AtelierError(f"{label} takes {dim} numbers, not Magenta's {EMBEDDING_SIZE}-d style embedding; the "
                               "file is damaged")
        self.predictor = StylePredictor(self.info, self.path, predictor, threads, label)

    def __repr__(self) -> str:
        return f"OnnxStylizer({self.info.get('source', '?')}, quantize={self.info.get('quantize', '?')})"

    @property
    def min_tile(self) -> int:
        """The smallest tile side (the generator's ``min_size``, as on the torch path)."""
        return int(self.info["min_size"])

    # ------------------------------------------------------------------------------ conditional students

    def find_style(self, name: Any) -> str:
        """A style set's name for ``name``: exact, or ignoring case and ``-``/``_``/spaces (as
        ``StudentModel.find_style``); an image, or a name it does not have, is refused in one line."""
        known = self.style_names
        if isinstance(name, str) and name in known:
            return name
        if not isinstance(name, str) or Path(name).suffix.lower() in IMAGE_SUFFIXES or Path(name).is_file():
            what = name if isinstance(name, (str, os.PathLike)) else f"a {type(name).__name__}"
            raise AtelierError(f"{self.info.get('name', self.label)} is a style set: it takes one of its style names "
                               f"({', '.join(known)}), not an image ({what})")

        def key(text: str) -> str:
            return "".join(ch for ch in text.lower() if ch.isalnum())
        matches = [k for k in known if key(k) == key(name)]
        if len(matches) == 1:
            return matches[0]
        raise AtelierError(f"{self.info.get('name', self.label)} has no style {name!r}; its styles: "
                           f"{', '.join(known)}")

    def condition_of(self, style: Any, style_weights: Optional[Sequence[float]] = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The condition ``[1, cond_dim]`` for ``style`` (one or a list) mixed by ``style_weights`` (equal by
        default): style names for a style set, style images (paths, PIL images, arrays) for an arbitrary-style
        student. Compute it once to paint many photos with ``run`` or ``stylize(cond=...)``."""
        from .runtime_magenta import mix

        if self.condition is None:
            raise AtelierError(f"{self.label} is a student with its style built in; it takes no style")
        many = list(style) if isinstance(style, (list, tuple)) else [style]
        if not many:
            raise AtelierError(f"{self.label} is a conditional student: give it a style")
        if self.condition == "styles":
            hot = np.eye(len(self.style_names), dtype=np.float32)
            names = [self.find_style(s) for s in many]
            return mix([hot[self.style_names.index(n)][None] for n in names], style_weights, "style")
        return mix([self.predictor.embed(s, max_pixels) for s in many], style_weights)

    def _condition_feeds(self, cond: Any, strength: Any, n: int) -> dict[str, np.ndarray]:
        """The ``cond`` and ``strength`` inputs for a batch of ``n`` (none for a student with its style built in)."""
        if self.condition is None:
            if cond is not None or strength is not None:
                raise AtelierError(f"{self.label} is a student with its style built in; cond and strength are for "
                                   "conditional students")
            return {}
        dim = self.info["cond_dim"]
        if cond is None:
            what = "style names" if self.condition == "styles" else "a style image"
            raise AtelierError(f"{self.label} is a conditional student: give it a style ({what}) or a cond")
        c = np.asarray(cond, dtype=np.float32)
        if c.ndim != 2 or c.shape[1] != dim or c.shape[0] not in (1, n) or not np.isfinite(c).all():
            raise AtelierError(f"cond must be finite [N,{dim}] or [1,{dim}], got {tuple(c.shape)}")
        return {COND_NAME: np.ascontiguousarray(np.broadcast_to(c, (n, dim))), STRENGTH_NAME: _strengths(strength, n)}

    # ------------------------------------------------------------------------------------------ running

    def _forward(self, x: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One pass over ``x`` ``[N,3,H,W]`` float32, padding inputs smaller than the graph covers (docstring)."""
        h, w = x.shape[-2], x.shape[-1]
        top = left = 0
        if min(h, w) < self.info["min_input"]:
            x, top, left = pad_like_generator(x, self.info["pad_multiple"], self.info["min_size"])
        feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32), **feeds}
        y = self.session.run([OUTPUT_NAME], feed)[0]
        return y[..., top:top + h, left:left + w]

    def run(self, array: np.ndarray, tile: int = 0, overlap: int = DEFAULT_OVERLAP, cond: Any = None,
            strength: Any = None) -> np.ndarray:
        """Stylise float32 ``[N,3,H,W]`` in [0,1]; returns the same shape. ``tile=0``: one pass; ``tile=T``: tiles of
        at most T x T blended over at least ``overlap`` pixels (``atelier.tiling``). Conditional students need
        ``cond`` (``[1, cond_dim]`` or ``[N, cond_dim]``, see ``condition_of``) and take ``strength`` (a number in
        [0,1] or one per picture; default 1); every tile gets the same."""
        if not isinstance(array, np.ndarray) or array.ndim != 4 or array.shape[1] != 3:
            shape = tuple(array.shape) if isinstance(array, np.ndarray) else type(array).__name__
            raise AtelierError(f"run takes a float32 array [N,3,H,W], got {shape}")
        check_tiling(tile, overlap, self.min_tile, f"{self.info.get('generator', '?')} generator")
        feeds = self._condition_feeds(cond, strength, array.shape[0])
        x = array.astype(np.float32, copy=False)
        h, w = x.shape[-2], x.shape[-1]
        if not tile or (h <= tile and w <= tile):
            return self._forward(x, feeds)
        out = np.zeros(x.shape, dtype=np.float32)
        for t in iter_tiles(h, w, tile, overlap):
            piece = self._forward(x[..., t.y:t.y + t.h, t.x:t.x + t.w], feeds)
            region = out[..., t.y:t.y + t.h, t.x:t.x + t.w]
            region += t.share * (piece - region)  # incremental weighted mean, as on the torch path
        return out

    def stylize(self, image: ImageInput, size: Optional[int] = None, tile: int = 0,
                overlap: int = DEFAULT_OVERLAP, max_pixels: int = DEFAULT_MAX_PIXELS, *, style: Any = None,
                style_weights: Optional[Sequence[float]] = None, strength: Any = None,
                cond: Any = None) -> Image.Image:
        """Stylise a path, PIL image or array (see ``to_array``); ``size`` resizes so the long side is ``size``
        first. Conditional students: ``style`` (names or style images, see ``condition_of``) mixed by
        ``style_weights``, or a ready ``cond``; ``strength`` in [0,1]. Returns an 8-bit RGB PIL image."""
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise AtelierError(f"size must be a positive whole number of pixels, got {size!r}")
        if self.condition is None and (style is not None or style_weights is not None):
            raise AtelierError(f"{self.label} is a student with its style built in; it takes no style")
        if self.condition is not None and style is not None and cond is not None:
            raise AtelierError("give styles or a cond (one of the two)")
        if style is not None:
            cond = self.condition_of(style, style_weights, max_pixels)
        elif style_weights is not None:
            raise AtelierError("style_weights mixes several styles; give them with style")
        x = to_array(image, max_pixels)
        if size is not None:
            x = resize_array(x, long_side_hw(x.shape[-2], x.shape[-1], size))
        return to_pil(self.run(x[:1], tile=tile, overlap=overlap, cond=cond, strength=strength))


# --------------------------------------------------------------------------------------------- command line


def save_atomic(image: Image.Image, path: PathLike) -> Path:
    """Write ``image`` to ``path`` (format from the extension) via a temporary file renamed into place, so a
    failure never leaves a half-written picture that looks whole."""
    import tempfile

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise AtelierError(f"{path}: output must end in .png, .jpg, .jpeg or .webp")
    if not path.parent.is_dir():
        raise AtelierError(f"{path}: the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format=fmt)
        os.replace(tmp, path)
    except OSError as e:
        raise AtelierError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m atelier.runtime MODEL.onnx PHOTO -o OUT.png [--style STYLE ...] [--style-weights W1,W2]
    [--strength S] [--size N] [--tile N] [--threads N]``: stylise one picture with an exported model (a student; a
    style set with its style names; an arbitrary-style student or magenta with style images), on a machine without
    torch. Errors print one line and exit 2."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m atelier.runtime",
                                description="Stylise a photograph with a model written by `atelier export` "
                                            "(onnxruntime, Pillow and numpy only: no torch needed).")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("image", metavar="PHOTO")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output image (.png, .jpg, .webp)")
    p.add_argument("--size", type=int, default=None, help="long side in pixels (default: the photo's own)")
    p.add_argument("--tile", type=int, default=0, help="tiles of N x N blended over their overlap (default: 0, "
                                                       "one pass); bounds memory on large pictures (students)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: its own choice)")
    p.add_argument("--style", action="append", default=None, metavar="STYLE",
                   help="magenta models and arbitrary-style students: a style image; style sets: a style name (repeat "
                        "to mix several)")
    p.add_argument("--style-weights", default=None, metavar="W1,W2", help="one weight per --style (default: equal)")
    p.add_argument("--strength", type=float, default=None, help="how much style, in [0,1] (default: 1): magenta "
                                                                "moves from the photo's own style, conditional "
                                                                "students blend with the photo")
    args = p.parse_args(argv)
    try:
        model = load_model(args.model, threads=args.threads)
        styled = args.style is not None or args.style_weights is not None or args.strength is not None
        weights = None
        if args.style_weights is not None:
            try:
                weights = [float(w) for w in args.style_weights.split(",")]
            except ValueError:
                raise AtelierError(f"--style-weights takes numbers separated by commas, got "
                                   f"{args.style_weights!r}") from None
        if isinstance(model, OnnxStylizer) and model.condition is None:
            if styled:
                raise AtelierError(f"{args.model} is a student with its style built in; --style, --style-weights "
                                   "and --strength are for magenta models and conditional students")
            picture = model.stylize(args.image, size=args.size, tile=args.tile)
        elif isinstance(model, OnnxStylizer):
            if not args.style:
                raise AtelierError(f"{args.model} is a style set: choose a style with --style NAME (its styles: "
                                   f"{', '.join(model.style_names)})" if model.condition == "styles" else
                                   f"{args.model} is an arbitrary-style student: give a style image with --style "
                                   "PAINTING")
            picture = model.stylize(args.image, size=args.size, tile=args.tile, style=args.style,
                                    style_weights=weights, strength=args.strength)
        else:
            if args.tile:
                raise AtelierError("--tile is not available for magenta models in this runtime (its instance norms "
                                   "span the whole picture); use atelier stylize --method magenta --tile")
            if not args.style:
                raise AtelierError(f"{args.model} is a magenta model: give a style image with --style PAINTING")
            picture = model.stylize(args.image, args.style, size=args.size, style_weights=weights,
                                    strength=1.0 if args.strength is None else args.strength)
        out = save_atomic(picture, args.output)
    except AtelierError as e:
        print(f"atelier: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
