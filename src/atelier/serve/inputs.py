"""From a request's form to checked inputs: option values and uploaded images (the models: ``catalog``).

Contracts:

- Options arrive as form text and are converted by the type of the ``StylizeOptions`` field of the same name; an
  empty value means "not given" (what an HTML form sends for an untouched input). Unknown names, malformed values
  and values past the service's limits (``ServeOptions``) raise ``ServiceError(422)``. Messages name options as the
  form does (``style_weight``): the library's ``OptionError`` already names the field, so it is passed on as is.
- What a client may set for a method comes from the method (``Method.options``, the fields it reads): for a
  one-pass method all of them (``client_options``), for an engine those of them in the curated ``JOB_OPTIONS``.
  A field the method does not read is refused naming it, as the library's ``refuse_inapplicable`` does. Options
  that name files or devices on the service's machine (``init`` paths, every weights or model-folder option,
  ``device``, ``save_every``, ``max_pixels``) are the operator's, not the client's, and are not accepted: to a
  client they are unknown options.
- Uploaded images are identified from their bytes, not their file name or declared type, and from the header
  only: a format outside ``ServeOptions.formats`` is 415, more than ``max_pixels`` pixels is 413. Decoding happens
  later, on a worker thread (``decode``), so the number of images being decoded at once is bounded by the workers;
  a file that then turns out truncated or corrupt is 400.
"""

from __future__ import annotations

import io
import math
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional

from PIL import Image, UnidentifiedImageError

from ..options import ServeOptions, StylizeOptions
from ..errors import AtelierError
from ..images import open_image
from ..methods.base import WEIGHTS_OPTIONS, Method
from .jobs import ServiceError

# What a client may set. The engines' list is StylizeOptions minus what names server files or hardware, and
# minus lbfgs_history (each unit costs two image-sized vectors: a large value is a memory bomb, not a preference).
JOB_OPTIONS = ("size", "iterations", "optimizer", "learning_rate", "content_weight", "style_weight", "tv_weight",
               "content_layers", "style_layers", "style_weights", "strength", "init", "pooling", "style_scale",
               "preserve_color", "scales", "seed")
STUDENT_OPTIONS = ("size", "tile", "strength")
# Never a client's, whatever a method reads: how the method is chosen (the form's model and method fields), the
# service's hardware and limits, files written on its disk, and L-BFGS memory (see above). Options naming files on
# the service's machine (``serves_files``) are refused too.
OPERATOR_OPTIONS = frozenset({"method", "model", "device", "max_pixels", "save_every", "lbfgs_history"})
MIN_SIZE = 16  # smallest output long side a request may ask for
INIT_CHOICES = ("content", "random")
_TILE_HELP = "tile side in pixels: large images run in overlapping tiles of this size (0: one pass)"
# Help in the form's words where the library's help names a command-line flag.
_FORM_HELP = {"style_weights": "blend weights, one per style image or style name (default: equal)",
              "strength": "how far from the photo to go: 0 = the photo, 1 = the full style (engines scale the style "
                          "weight by it; students blend their picture with the photo; magenta moves its style "
                          "embedding from the photo's own to the painting's)"}
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
_FIELDS = {f.name: f for f in fields(StylizeOptions)}
_HINTS = typing.get_type_hints(StylizeOptions)


def format_list(formats: tuple) -> str:
    names = [_FORMAT_NAMES.get(f.upper(), f) for f in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# ------------------------------------------------------------------------------------------------ options


def _kind(name: str) -> tuple[type, Optional[type]]:
    """(scalar type, element type of a comma list or None) of an option."""
    f = _FIELDS[name]
    if f.metadata.get("list_of"):
        return tuple, f.metadata["list_of"]
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), None


def names_server_files(name: str) -> bool:
    """Whether an option names files or folders on the service's machine (weights, model folders, paths): a
    feature net's or a one-pass net's weights option, or any text option whose value is a path or a folder."""
    if name in WEIGHTS_OPTIONS:
        return True
    kind, item = _kind(name)
    if kind is not str or item is not None:
        return False
    metavar = str(_FIELDS[name].metadata.get("metavar") or "").upper()
    return any(w in metavar for w in ("PATH", "DIR", "FILE")) or name.endswith(("_weights", "_model", "_dir",
                                                                                "_path", "_file"))


def client_options(method: Method) -> tuple[str, ...]:
    """The options a request may set for ``method`` (in ``StylizeOptions`` order): the fields it reads, less the
    operator's (``OPERATOR_OPTIONS`` and every option that names files on the service's machine)."""
    reads = set(method.options)
    return tuple(name for name in _FIELDS if name in reads and name not in OPERATOR_OPTIONS
                 and not names_server_files(name))


def job_options(method: Method) -> tuple[str, ...]:
    """The options a job may set for an engine: the curated ``JOB_OPTIONS`` it reads."""
    reads = set(method.options)
    return tuple(name for name in JOB_OPTIONS if name in reads)


def effective_default(name: str, limits: ServeOptions, method_defaults: Optional[dict[str, Any]] = None) -> Any:
    """The value an option takes when a request leaves it out: the library's default (or, for the fields whose
    default is the method's, ``method_defaults``), within the service's limits (an operator who lowers --max-size
    lowers the default size with it)."""
    d = _FIELDS[name].default
    if d is None and method_defaults and name in method_defaults and name != "iterations":
        d = method_defaults[name]
    if name == "size":
        return min(d, limits.max_size)
    if name == "iterations":  # None: the method's own default (atelier methods), itself below any sane limit
        return None if d is None else min(d, limits.max_iterations)
    return None if d is MISSING else (list(d) if isinstance(d, tuple) else d)


def describe_options(names: tuple[str, ...], limits: ServeOptions,
                     method_defaults: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """One entry per option a client may set: name, type, default, help, choices and bounds (for the page)."""
    out = []
    for name in names:
        kind, item = _kind(name)
        if name == "tile":
            text, choices = _TILE_HELP, []
        elif name == "init":
            text, choices = "start image: content (the photo) or random (seeded noise)", list(INIT_CHOICES)
        else:
            text = _FORM_HELP.get(name) or _FIELDS[name].metadata.get("help", "")
            choices = list(_FIELDS[name].metadata.get("choices") or ())
        entry: dict[str, Any] = {"name": name, "type": f"list[{item.__name__}]" if item else kind.__name__,
                                 "default": effective_default(name, limits, method_defaults), "help": text,
                                 "choices": choices}
        if name == "size":
            entry.update(min=MIN_SIZE, max=limits.max_size)
        elif name == "iterations":
            entry.update(min=1, max=limits.max_iterations)
        elif name in ("tile", "seed"):
            entry.update(min=0)
        elif name == "strength":
            entry.update(min=0, max=1)
        out.append(entry)
    return out


def _convert(name: str, text: str) -> Any:
    kind, item = _kind(name)
    try:
        if item is not None:
            return tuple(item(t.strip()) for t in text.split(",") if t.strip())
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        what = {int: "a whole number", float: "a finite number"}.get(item or kind, "a value")
        listed = " (comma-separated)" if item else ""
        raise ServiceError(422, f"option {name} must be {what}{listed}, got {text[:40]!r}") from None


def refuse_others(given: Any, allowed: tuple[str, ...], method: Optional[Method] = None,
                  who: str = "this endpoint") -> None:
    """Refuse any name in ``given`` outside ``allowed`` with 422. A client's option that ``method`` does not read is
    named as the library's ``refuse_inapplicable`` names it; anything else (not an option at all, or the operator's)
    is an unknown option."""
    others = sorted(set(given) - set(allowed))
    if not others:
        return
    takes = ", ".join(allowed) or "no options"
    unknown = [n for n in others if n not in _FIELDS or n in OPERATOR_OPTIONS or names_server_files(n)]
    if unknown:
        raise ServiceError(422, f"unknown option(s) {', '.join(n[:40] for n in unknown)}; {who} takes: {takes}")
    if method is not None:
        raise ServiceError(422, f"{others[0]} does not apply to {method.kind} method {method.name} (it takes "
                                f"{takes})")
    raise ServiceError(422, f"unknown option(s) {', '.join(others)}; {who} takes: {takes}")


def parse_options(form: dict[str, str], allowed: tuple[str, ...], limits: ServeOptions,
                  method: Optional[Method] = None, who: str = "this endpoint") -> dict[str, Any]:
    """Checked option values from form text (only those given); raises ``ServiceError(422)``. ``method``, when
    given, is the method the options are for (its name goes in the message refusing an option it does not read)."""
    refuse_others(form, allowed, method, who)
    values = {name: _convert(name, text.strip()) for name, text in form.items() if text.strip()}
    for name in ("size", "iterations"):
        if name in allowed and name not in values and effective_default(name, limits) is not None:
            values[name] = effective_default(name, limits)
    size = values.get("size", effective_default("size", limits))
    if size < MIN_SIZE:  # what /v1/models advertises as the minimum
        raise ServiceError(422, f"size {size} is below the minimum of {MIN_SIZE} px")
    if size > limits.max_size:
        raise ServiceError(422, f"size {size} is larger than this service allows ({limits.max_size} px)")
    if (values.get("iterations") or 0) > limits.max_iterations:
        raise ServiceError(422, f"iterations {values['iterations']} is more than this service allows "
                           f"({limits.max_iterations})")
    if "style_scale" in values and values["style_scale"] * size > limits.max_size:
        raise ServiceError(422, f"style_scale {values['style_scale']:g} makes the style image "
                           f"{round(values['style_scale'] * size)} px, larger than this service allows "
                           f"({limits.max_size} px)")
    if "init" in values and values["init"] not in INIT_CHOICES:
        raise ServiceError(422, f"init must be {' or '.join(INIT_CHOICES)} here (paths on the service's machine "
                           f"are not accepted), got {values['init'][:40]!r}")
    if values.get("tile", 0) < 0:
        raise ServiceError(422, f"tile must be a whole number >= 0, got {values['tile']}")
    try:  # the engines' own checks: an OptionError names the field, which is the form's name for it too
        StylizeOptions.from_kwargs(**{k: v for k, v in values.items() if k != "tile"})
    except AtelierError as e:
        raise ServiceError(422, str(e)) from None
    return values


# ------------------------------------------------------------------------------------------------- images


def check_image(data: bytes, label: str, limits: ServeOptions) -> str:
    """The upload's format, after checking it from the header: 415 for other formats, 413 for too many pixels."""
    if not data:
        raise ServiceError(422, f"{label} is empty; choose an image file")
    formats = tuple(f.upper() for f in limits.formats)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:  # the header only: nothing is decoded yet
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError:
        raise ServiceError(413, f"{label} has far too many pixels (limit {limits.max_pixels:,})") from None
    except UnidentifiedImageError:
        raise ServiceError(415, f"{label} is not a {format_list(formats)} image; convert it to one of "
                           "those") from None
    except Exception as e:  # a broken header shows up as many exception types
        raise ServiceError(400, f"{label} is truncated or corrupt ({type(e).__name__}); re-export it") from None
    if w * h > limits.max_pixels:
        raise ServiceError(413, f"{label} is {w}x{h} = {w * h:,} pixels, more than this service accepts "
                           f"({limits.max_pixels:,}); shrink it first")
    return fmt


def decode(source: bytes | Path, label: str, max_pixels: int) -> Image.Image:
    """Decode an upload exactly as the CLI reads a file (EXIF rotation, alpha over white): 400 if it cannot be. The
    bytes are decoded in memory; a stored upload (a job's) is read from its file."""
    try:
        return open_image(source, max_pixels, label=label)
    except AtelierError as e:
        # The message names the upload by ``label``; a stored upload's path never reaches the client.
        raise ServiceError(400, str(e).replace(str(source), label) if isinstance(source, Path) else str(e)) from None


def clean_name(filename: Optional[str]) -> str:
    """An upload's file name as shown in messages and metadata: its last path part, printable, at most 80 chars."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:80]


def upload_label(field: str, filename: Optional[str]) -> str:
    name = clean_name(filename)
    return f"{field} {name!r}" if name else field
