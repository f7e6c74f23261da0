"""Load, convert, resize and save images: the one pixel convention.

Contract: between modules an image is a ``float32`` torch tensor ``[N,3,H,W]``, RGB, range [0,1].
``open_image`` turns any readable file (a path, its bytes or a binary file object such as stdin) into a fully
loaded 8-bit RGB ``PIL.Image`` (EXIF orientation applied,
alpha composited over white); ``pil_to_tensor``/``tensor_to_pil`` convert exactly for 8-bit values.
Every problem a user can cause (missing, unreadable, corrupt or oversized file, bad output path) raises
``AtelierError`` with a one-line message naming the path. Writes are atomic: a temporary file in the target's
directory is fsynced and renamed into place, so a crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .errors import AtelierError, OptionError
from .files import atomic_path, atomic_write_text, check_writable_parent

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_MAX_PIXELS = 50_000_000
SUPPORTED_SAVE = {".png", ".jpg", ".jpeg", ".webp"}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
METADATA_KEY = "atelier"  # PNG text-chunk key holding json.dumps(metadata)
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_READABLE = "JPEG, PNG, WebP, TIFF, BMP or GIF"


_PILLOW_LIMIT_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------- reading


def _allow_in_pillow(max_pixels: int) -> None:
    # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that, from the same header size we
    # check. Raise its limit (never lower it, never disable it) to at least ours, so --max-pixels can really
    # go higher while Pillow's check stays a backstop for every other Image.open in the process.
    with _PILLOW_LIMIT_LOCK:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _too_many(path: Path, size: tuple[int, int] | None, max_pixels: int) -> AtelierError:
    dims = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, " if size else ""
    return OptionError("max_pixels", "", before=f"{path} is too large ({dims}limit {max_pixels:,} pixels); shrink "
                                                "it or raise the limit with")


def _corrupt(path: Path, err: BaseException) -> AtelierError:
    return AtelierError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); "
                        "re-export or re-download the image")


def open_image(source: Union[PathLike, bytes, bytearray, memoryview, BinaryIO],
               max_pixels: int = DEFAULT_MAX_PIXELS, label: str | None = None) -> Image.Image:
    """Open an image as a fully decoded RGB ``PIL.Image`` (EXIF-rotated, alpha over white).

    ``source``: a path, the file's bytes, or a binary file object (read to its end: stdin, an upload). Messages name
    a path by itself and bytes or a file object by ``label`` (default ``"image bytes"``; the CLI says ``stdin``).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise OptionError("max_pixels", f"must be a positive whole number, got {max_pixels!r}")
    if isinstance(source, (bytes, bytearray, memoryview)) or hasattr(source, "read"):
        name = label or "image bytes"
        data = _read_all(source, name)
        if not data:
            raise AtelierError(f"{name} is empty (0 bytes); give the bytes of an image file")
        return _decode(io.BytesIO(data), name, max_pixels)
    p = Path(source)
    try:
        f = open(p, "rb")  # opened by us so missing/directory/permission problems get precise messages
    except FileNotFoundError:
        raise AtelierError(f"image not found: {p}; check the path") from None
    except IsADirectoryError:
        raise AtelierError(f"{p} is a directory, not an image file; pass an image file") from None
    except PermissionError:
        raise AtelierError(f"permission denied reading {p}; check the file's permissions") from None
    except OSError as e:
        raise AtelierError(f"cannot read {p} ({e.strerror or e}); check the path") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise AtelierError(f"{p} is empty (0 bytes); re-export or re-download the image")
        return _decode(f, label or str(p), max_pixels)


def _read_all(source: Any, name: str) -> bytes:
    """The bytes of ``source`` (bytes-like, or a binary file object read to its end)."""
    if not hasattr(source, "read"):
        return bytes(source)
    try:
        data = source.read()
    except OSError as e:
        raise AtelierError(f"cannot read {name} ({e.strerror or e})") from None
    if not isinstance(data, (bytes, bytearray)):
        raise AtelierError(f"{name} gave text, not bytes; open the file in binary mode ('rb')")
    return bytes(data)


def _decode(f: BinaryIO, p: Any, max_pixels: int) -> Image.Image:
    """Decode an opened binary file ``f`` (``p`` names it in messages) within ``max_pixels``."""
    _allow_in_pillow(max_pixels)
    # Pillow's bomb warning means "over the limit": make it an exception so nothing gets decoded.
    # (catch_warnings is process-wide; racing threads can at worst leave this stricter filter installed.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(f)  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(p, None, max_pixels) from None
        except UnidentifiedImageError:
            raise AtelierError(f"{p} is not an image atelier can read; use {_READABLE}") from None
        except Exception as e:  # a broken header surfaces as many exception types
            raise _corrupt(p, e) from None
        w, h = img.size
        if w <= 0 or h <= 0:
            raise AtelierError(f"{p} has zero width or height ({w}x{h}); use a non-empty image")
        if w * h > max_pixels:
            raise _too_many(p, (w, h), max_pixels)
        try:
            # ImageFile.LOAD_TRUNCATED_IMAGES stays False, so a short file raises here instead of
            # being padded with grey. GIF/WebP/APNG: the current frame after open is the first one.
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(p, (w, h), max_pixels) from None
        except MemoryError:
            raise AtelierError(f"not enough memory to decode {p} ({w}x{h}); "
                               "use a smaller image or lower --max-pixels") from None
        except Exception as e:
            raise _corrupt(p, e) from None
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:
        pass  # malformed EXIF: the pixels are fine, so keep them as stored rather than refuse the file
    try:
        return _to_rgb(img)
    except ValueError:
        raise AtelierError(f"{p} uses colour mode {img.mode!r}, which cannot be converted to RGB; "
                           "convert it to RGB first") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; alpha/transparency is composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # Pillow's own I;16 -> L conversion clips at 255 instead of scaling, so scale here.
        # I;16* and I are 16-bit data in practice; F is taken as [0,1] unless it clearly is [0,255].
        a = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode != "F" else (255.0 if a.size and a.max() > 1.0 else 1.0)
        g = np.clip(np.rint(a / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    palette_alpha = img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info or palette_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr...


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> ``[1,3,H,W]`` float32 in [0,1] (non-RGB modes converted as in ``open_image``)."""
    arr = np.array(_to_rgb(img), dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    # Make the channel-first layout while still uint8 (a quarter of the bytes); converting the permuted view to
    # float first and then calling .contiguous() made a second full-size float copy.
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0).unsqueeze(0)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """``[1,3,H,W]`` or ``[3,H,W]`` tensor -> 8-bit RGB image (clamped to [0,1], rounded to nearest)."""
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a [1,3,H,W] or [3,H,W] tensor, got shape {tuple(t.shape)}")
    x = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0)  # new tensor: safe to edit in place
    x = x.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).contiguous().numpy())


def load_image(path: PathLike, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Read a file as ``[1,3,H,W]``; with ``size``, resize (up or down) so the long side equals it."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise OptionError("size", f"must be a positive whole number of pixels, got {size!r}")
    t = pil_to_tensor(open_image(path, max_pixels))
    if size is not None:
        _check_resized(t, size, max_pixels, str(path))
        t = resize_long_side(t, size)  # same resampler as everywhere else, so results don't depend on entry point
    return t if device is None else t.to(device)


def to_image_tensor(image: Any, size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                    what: str = "image") -> torch.Tensor:
    """The one input gate: a path, an image file's bytes or a binary file object (decoded as ``open_image`` decodes a
    file), a PIL image of any mode, a numpy array or a tensor -> ``[1,3,H,W]`` float32 in [0,1] on the CPU, resized
    so the long side is ``size`` (if given). Anything else raises ``AtelierError``.

    PIL images go through the same conversion as files (``_to_rgb``: 16-bit and float modes scaled, alpha over
    white). Arrays and tensors: ``[H,W]``, ``[H,W,C]`` (numpy) or ``[C,H,W]``/``[1,C,H,W]`` (torch), C = 1, 3 or 4;
    uint8 is 0..255, uint16 0..65535, floats must be finite and in [0,1] (a float image in 0..255 is refused, not
    clamped to white).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, size=size, max_pixels=max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)) or (hasattr(image, "read") and not
                                                             isinstance(image, (np.ndarray, torch.Tensor))):
        image = open_image(image, max_pixels, label=f"{what} (bytes)")  # then the PIL path: the same pixels
    if isinstance(image, Image.Image):
        w, h = image.size
        if w <= 0 or h <= 0:
            raise AtelierError(f"{what} has zero width or height ({w}x{h}); use a non-empty image")
        if w * h > max_pixels:
            raise OptionError("max_pixels", f"{max_pixels:,}", before=f"{what} has {w}x{h} = {w * h:,} pixels, more than")
        try:
            t = pil_to_tensor(image)
        except (ValueError, OSError) as e:
            raise AtelierError(f"{what}: PIL mode {image.mode!r} cannot be converted to RGB ({e})") from None
    elif isinstance(image, np.ndarray):
        t = _array_to_tensor(torch.from_numpy(np.ascontiguousarray(image)) if image.dtype != np.uint16
                             else torch.from_numpy(image.astype(np.int32)), channels_last=True, what=what,
                             uint16=image.dtype == np.uint16, max_pixels=max_pixels)
    elif isinstance(image, torch.Tensor):
        t = _array_to_tensor(image.detach().cpu(), channels_last=False, what=what, max_pixels=max_pixels)
    else:
        raise AtelierError(f"{what} must be a file path, an image file's bytes, a binary file object, a PIL image, a "
                           f"numpy array or a torch tensor, got {type(image).__name__}")
    if size is None:
        return t
    _check_resized(t, size, max_pixels, what)
    return resize_long_side(t, size)


def _check_resized(t: torch.Tensor, size: int, max_pixels: int, what: str) -> None:
    """Refuse a resize whose result would have more than ``max_pixels`` pixels, before allocating it (a huge
    ``--size`` would otherwise try to allocate tens of GB, or write a picture past the pixel limit)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise OptionError("size", f"must be a positive whole number of pixels, got {size!r}")
    h, w = long_side_hw(int(t.shape[-2]), int(t.shape[-1]), size)
    if h * w > max_pixels:
        raise OptionError("size", f"{size} makes {what} {w}x{h} = {w * h:,} pixels, more than max_pixels "
                                  f"{max_pixels:,}; use a smaller size")


def _array_to_tensor(t: torch.Tensor, channels_last: bool, what: str, max_pixels: int,
                     uint16: bool = False) -> torch.Tensor:
    shape = tuple(t.shape)
    if t.is_complex() or t.dtype == torch.bool:
        raise AtelierError(f"{what} has dtype {str(t.dtype).replace('torch.', '')}; give uint8 (0..255) or float "
                           "(0..1) pixels")
    if channels_last:  # numpy: [H,W] or [H,W,C]
        x = t.unsqueeze(-1) if t.dim() == 2 else t
        x = x.permute(2, 0, 1).unsqueeze(0) if x.dim() == 3 else None
    else:              # torch: [H,W], [C,H,W] or [1,C,H,W]
        x = t.unsqueeze(0) if t.dim() == 2 else t
        x = x.unsqueeze(0) if x is not None and x.dim() == 3 else x
        x = x if x is not None and x.dim() == 4 and x.shape[0] == 1 else None
    if x is None or x.shape[1] not in (1, 3, 4):
        layout = "[H,W] or [H,W,C]" if channels_last else "[C,H,W] or [1,C,H,W]"
        raise AtelierError(f"{what} has shape {shape}; give {layout} with C = 1, 3 or 4")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h == 0 or w == 0:
        raise AtelierError(f"{what} is empty (shape {shape}); give an image with pixels")
    if h * w > max_pixels:
        raise OptionError("max_pixels", f"{max_pixels:,}", before=f"{what} has {w}x{h} = {w * h:,} pixels, more than")
    if uint16:
        x = x.to(torch.float32) / 65535.0
    elif x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    elif x.is_floating_point():
        x = x.to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise AtelierError(f"{what} holds NaN or infinite values; give finite pixels in [0,1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (it looks like 0..255: divide by 255)" if hi > 1.5 else ""
            raise AtelierError(f"{what} holds values from {lo:.3g} to {hi:.3g}; float pixels must be in [0,1]{hint}")
    else:
        raise AtelierError(f"{what} has dtype {str(x.dtype).replace('torch.', '')}; give uint8 (0..255) or float "
                           "(0..1) pixels")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:  # alpha over white, as for files
        rgb, a = x[:, :3], x[:, 3:]
        x = rgb * a + (1.0 - a)
    return x.contiguous()


# ---------------------------------------------------------------------------------------------- resizing


def long_side_hw(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Target (H, W) with the long side = ``long_side``, aspect kept, short side rounded half up, >= 1."""
    if long_side < 1:
        raise ValueError(f"long_side must be >= 1, got {long_side}")
    scale = long_side / max(h, w)
    if h >= w:
        return long_side, max(1, math.floor(w * scale + 0.5))
    return max(1, math.floor(h * scale + 0.5)), long_side


def resize_long_side(t: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize ``[N,3,H,W]`` (or ``[3,H,W]``) so its long side is ``long_side``; differentiable."""
    return resize_to(t, long_side_hw(int(t.shape[-2]), int(t.shape[-1]), long_side))


def resize_to(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize ``[N,3,H,W]`` (or ``[3,H,W]``) to ``hw``: bicubic, antialiased when shrinking, clamped to [0,1].

    Returns ``t`` itself when the size already matches. Differentiable (used inside the optimisation).
    """
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"target size must be at least 1x1, got {h}x{w}")
    if (int(t.shape[-2]), int(t.shape[-1])) == (h, w):
        return t
    x = t.unsqueeze(0) if t.dim() == 3 else t
    # antialias=True low-pass filters when shrinking; without it a fine texture aliases into moire.
    y = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
    return y.squeeze(0) if t.dim() == 3 else y


# ----------------------------------------------------------------------------------------------- writing


def check_output_path(path: PathLike) -> Path:
    """Validate an output path before a long computation: extension, existing writable directory."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_SAVE:
        raise AtelierError(f"cannot save {p}: unsupported extension {ext or '(none)'!r}; "
                           f"use one of {', '.join(sorted(SUPPORTED_SAVE))}")
    if p.is_dir():
        raise AtelierError(f"cannot save to {p}: it is a directory; give a file name such as {p / 'out.png'}")
    check_writable_parent(p, "save")
    return p


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")  # out.jpg -> out.jpg.json


FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}  # what ``encode_image`` writes, by name


def _encoding(image: torch.Tensor | Image.Image, fmt: str, metadata: dict[str, Any] | None,
              quality: int) -> tuple[Image.Image, str | None, dict[str, Any]]:
    """(8-bit RGB picture, metadata as JSON text or None, Pillow save options) for writing ``image`` as ``fmt``."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise AtelierError(f"quality must be a whole number from 1 to 100, got {quality!r}")
    if isinstance(image, torch.Tensor):
        pil = tensor_to_pil(image)
    elif isinstance(image, Image.Image):
        pil = _to_rgb(image)
    else:
        raise TypeError(f"expected a tensor or PIL image, got {type(image).__name__}")
    text = None if metadata is None else json.dumps(metadata)  # TypeError here = caller bug, nothing written
    options: dict[str, Any] = {}
    if fmt == "PNG" and text is not None:
        info = PngInfo()
        info.add_text(METADATA_KEY, text)
        options["pnginfo"] = info
    elif fmt == "JPEG":
        options.update(quality=quality, subsampling=0)  # 4:4:4: stylised colour edges blur under 4:2:0
    elif fmt == "WEBP":
        options.update(quality=quality)
    return pil, text, options


def encode_image(image: torch.Tensor | Image.Image, fmt: str = "png", metadata: dict[str, Any] | None = None,
                 quality: int = 95) -> bytes:
    """The bytes of ``image`` as a ``fmt`` file (``png``, ``jpeg`` or ``webp``), encoded as ``save_image`` encodes
    it: for a pipe or a response. ``metadata`` goes into a PNG's ``"atelier"`` text chunk; JPEG and WebP bytes have
    no sidecar to carry it, so it is left out of them."""
    name = str(fmt).lower().removeprefix(".")
    name = "jpeg" if name == "jpg" else name
    if name not in FORMATS:
        raise OptionError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    pil, _text, options = _encoding(image, FORMATS[name], metadata if name == "png" else None, quality)
    buf = io.BytesIO()
    try:
        pil.save(buf, format=FORMATS[name], **options)
    except Exception as e:  # encoder limits (WebP max 16383 px)
        raise AtelierError(f"could not encode the picture as {FORMATS[name]} ({type(e).__name__}: {e}); "
                           "check the image size") from None
    return buf.getvalue()


def save_image(image: torch.Tensor | Image.Image, path: PathLike, metadata: dict[str, Any] | None = None,
               quality: int = 95) -> Path:
    """Save a ``[1,3,H,W]``/``[3,H,W]`` tensor or PIL image atomically; format from the extension.

    ``metadata`` (JSON-serialisable) goes into a PNG text chunk ``"atelier"``, or for JPEG/WebP into a sidecar
    ``<path>.json``; a stale sidecar from an earlier save without metadata is removed. Read it back with
    ``read_metadata``.
    """
    p = check_output_path(path)
    fmt = SAVE_FORMATS[p.suffix.lower()]
    pil, text, options = _encoding(image, fmt, metadata, quality)
    try:
        with atomic_path(p) as tmp:
            pil.save(tmp, format=fmt, **options)
    except AtelierError:
        raise
    except Exception as e:  # encoder limits (WebP max 16383 px), disk full, ...: the temp file is gone
        raise AtelierError(f"could not write {p} as {fmt} ({type(e).__name__}: {e}); "
                           "check free disk space, permissions and image size") from None
    if fmt != "PNG":
        sidecar = _sidecar(p)
        if text is not None:
            atomic_write_text(sidecar, text + "\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()  # it described an earlier image under this name
    return p


def read_metadata(path: PathLike) -> dict[str, Any] | None:
    """Metadata written by ``save_image`` (PNG text chunk, else ``<path>.json`` sidecar); None if absent."""
    p = Path(path)
    if not p.is_file():
        raise AtelierError(f"image not found: {p}; check the path")
    if p.suffix.lower() == ".png":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # header only, nothing decoded
                with Image.open(p) as im:
                    text = im.info.get(METADATA_KEY)  # save_image puts the chunk before the pixel data
        except Exception as e:
            raise AtelierError(f"cannot read metadata from {p} ({type(e).__name__}: {e}); "
                               "is it a PNG written by atelier?") from None
    else:
        sidecar = _sidecar(p)
        try:
            text = sidecar.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AtelierError(f"cannot read {sidecar} ({e.strerror or e}); check its permissions") from None
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise AtelierError(f"metadata of {p} is not valid JSON; re-save the image") from None
    if not isinstance(data, dict):
        raise AtelierError(f"metadata of {p} is not a JSON object; re-save the image")
    return data


def list_images(folder: PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted; hidden files are skipped."""
    d = Path(folder)
    if not d.exists():
        raise AtelierError(f"folder not found: {d}; check the path")
    if not d.is_dir():
        raise AtelierError(f"{d} is not a folder; pass a folder of images")
    try:
        entries = list(d.iterdir())
    except PermissionError:
        raise AtelierError(f"permission denied listing {d}; check the folder's permissions") from None
    # Hidden names skip macOS "._x.jpg" resource forks and our own in-progress ".x.png.*.tmp" files.
    return sorted(e for e in entries
                  if e.suffix.lower() in IMAGE_EXTENSIONS and not e.name.startswith(".") and e.is_file())
