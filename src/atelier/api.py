"""The facade: the CLI, the service and the benchmarks all call these functions.

``stylize(content, style, method=..., **options)`` loads inputs by the one pixel convention, runs the method and
returns a ``StylizeResult`` (the picture, per-step statistics and the metadata that ``save`` writes with it).
``stylize(content, model=...)`` (or ``method=<StudentModel>``, or ``method=<bundled student name>``) runs a trained
feed-forward student instead: one forward pass, optionally in tiles; ``load_model`` loads one (cached).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from . import __version__, registry
from .config import DEFAULT_METHOD, StylizeOptions
from .errors import AtelierError
from .images import save_image, tensor_to_pil, to_image_tensor
from .methods.feedforward import KIND as STUDENT_KIND
from .methods.feedforward import StudentModel, list_students, resolve_model
from .progress import Callback

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
ModelLike = Union[str, os.PathLike, StudentModel]

_MODEL_CACHE_SIZE = 4
_models: "OrderedDict[tuple, StudentModel]" = OrderedDict()
_models_lock = threading.Lock()


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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AtelierError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AtelierError("--device mps asked for, but this machine has no MPS backend; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise AtelierError(f"--device must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)


def _label(image: ImageLike) -> str:
    return os.path.basename(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else type(image).__name__


def load_model(name_or_path: ModelLike) -> StudentModel:
    """A student model folder (a path, or a bundled student's name) loaded for inference.

    Cached by resolved folder and the weights file's modification time and size, so a service or a batch loads each
    model once, and a model folder rewritten in place is read again.
    """
    if isinstance(name_or_path, StudentModel):
        return name_or_path
    folder = resolve_model(name_or_path)
    from .checkpoint import WEIGHTS_NAME

    try:
        st = (folder / WEIGHTS_NAME).stat()
        key: Optional[tuple] = (str(folder.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # from_folder says what is wrong
    with _models_lock:
        if key is not None and key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = StudentModel.from_folder(folder)
    if key is not None:
        with _models_lock:
            _models[key] = model
            while len(_models) > _MODEL_CACHE_SIZE:
                _models.popitem(last=False)
    return model


DEFAULT_TILE = 0  # one pass; the CLI's --tile reads its default here


def _check_tile(tile: Any) -> int:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
        raise AtelierError(f"--tile must be a whole number of pixels >= 0 (0: one pass), got {tile!r}")
    return tile


def student_for(method: Any = "lite", model: Optional[ModelLike] = None) -> Optional[StudentModel]:
    """The student a ``stylize`` call with these arguments runs (``model=``, ``method=<StudentModel>`` or a bundled
    student's name as the method), loaded; None for an optimisation method."""
    if model is not None:
        student = load_model(model)
        if isinstance(method, StudentModel) and method is not student:
            raise AtelierError("give the student once: model= and method= name different models")
        return student
    if isinstance(method, StudentModel):
        return method
    if isinstance(method, str) and method not in registry.names("method") \
            and method in {s["name"] for s in list_students()}:
        return load_model(method)
    return None


def stylize(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike], None] = None,
            method: Union[str, StudentModel] = DEFAULT_METHOD, *, model: Optional[ModelLike] = None,
            callback: Optional[Callback] = None, **options: Any) -> StylizeResult:
    """Stylise ``content`` in the style of ``style`` (one image or several, blended by ``style_weights``).

    ``options`` are the fields of ``atelier.config.StylizeOptions`` (size, iterations, style_weight, ...), plus
    ``tile`` for students. With ``model=`` (a model folder, a bundled student's name or a ``StudentModel``) or
    ``method=<StudentModel>``, a trained student runs instead: ``style`` is ignored (the student's style is baked
    in), only ``size``, ``device``, ``max_pixels`` and ``tile`` (0: one pass; N: N x N tiles, blended) matter, and
    the other options are checked but unused.
    """
    tile = _check_tile(options.pop("tile", DEFAULT_TILE))
    student = student_for(method, model)
    if student is not None:
        return _stylize_student(content, student, tile, StylizeOptions.from_kwargs(**options))
    if not isinstance(method, str):
        raise AtelierError(f"method must be a method name or a loaded student model, got {type(method).__name__}")
    if tile:
        raise AtelierError(f"--tile works with student models (--model) only; method {method} optimises the "
                           "whole image at once")
    m = registry.create("method", method)
    opts = m.resolve(StylizeOptions.from_kwargs(**options))
    if style is None:
        raise AtelierError(f"a style image is needed for method {method}; pass one (--style), or use a trained "
                           "student (--model)")
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if not styles:
        raise AtelierError("at least one style image is needed")
    device = resolve_device(opts.device)
    content_t = to_image_tensor(content, opts.size, opts.max_pixels, "content")
    style_long = max(16, round(opts.size * opts.style_scale))
    style_ts = [to_image_tensor(s, style_long, opts.max_pixels, "style") for s in styles]
    result, net = m.run(content_t, style_ts, opts, device, callback)
    metadata = {
        "atelier_version": __version__,
        "method": method,
        "weights": net.identity,
        "random_weights": net.is_random,
        "seed": opts.seed,
        "content": _label(content),
        "styles": [_label(s) for s in styles],
        "evaluations": result.evaluations,
        "optimizer_steps": result.optimizer_steps,
        "seconds": round(result.seconds, 3),
        "device": str(device),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
    }
    return StylizeResult(result.image.detach().cpu(), method, opts, result.evaluations, result.optimizer_steps,
                         result.seconds, result.history, metadata)


def _stylize_student(content: ImageLike, student: StudentModel, tile: int, opts: StylizeOptions) -> StylizeResult:
    device = resolve_device(opts.device)
    content_t = to_image_tensor(content, opts.size, opts.max_pixels, "content")
    t0 = time.perf_counter()
    image = student.run(content_t, tile=tile, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    label = f"{STUDENT_KIND}:{student.name}"
    metadata = {
        "atelier_version": __version__,
        "method": label,
        "weights": student.identity,
        "random_weights": False,
        "content": _label(content),
        "style": student.style,
        "model_folder": str(student.folder),
        "tile": tile,
        "size": list(image.shape[-2:]),
        "evaluations": 0,
        "optimizer_steps": 0,
        "seconds": round(seconds, 3),
        "device": str(device),
    }
    return StylizeResult(image.detach().cpu(), label, opts, 0, 0, seconds, [], metadata)


def list_methods() -> list[dict[str, Any]]:
    """Every registered method with whether it can run here and why not, then the bundled students."""
    out = []
    for name in registry.names("method"):
        m = registry.create("method", name)
        ok, reason = m.availability()
        try:  # the defaults an option left unset takes (a damaged --lite-model folder has none to give)
            defaults = {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.defaults().items()}
        except AtelierError:
            defaults = {}
        out.append({"name": name, "kind": "optimisation", "description": m.description, "available": ok,
                    "reason": reason, "defaults": defaults})
    for st in list_students():  # bundled students: run with --model NAME (or method=NAME)
        out.append({"name": st["name"], "kind": STUDENT_KIND, "description": st["description"], "available": True,
                    "reason": f"bundled student model folder {st['folder']}; use --model {st['name']}"})
    return out
