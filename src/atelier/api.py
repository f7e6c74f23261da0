"""The facade: the CLI, the service and the benchmarks all call these functions.

``stylize(content, style, method=..., **options)`` loads inputs by the one pixel convention, runs the method and
returns a ``StylizeResult`` (the picture, per-step statistics and the metadata that ``save`` writes with it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from PIL import Image

from . import __version__, registry
from .config import StylizeOptions
from .errors import AtelierError
from .images import load_image, pil_to_tensor, resize_long_side, save_image, tensor_to_pil
from .progress import Callback

ImageLike = Union[str, os.PathLike, Image.Image, torch.Tensor]


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


def _to_tensor(image: ImageLike, long_side: int, max_pixels: int) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image if image.dim() == 4 else image.unsqueeze(0)
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise AtelierError(f"image tensors must be [1,3,H,W] or [3,H,W], got {tuple(image.shape)}")
        return resize_long_side(t.detach().float().cpu().clamp(0, 1), long_side)
    if isinstance(image, Image.Image):
        return resize_long_side(pil_to_tensor(image.convert("RGB")), long_side)
    return load_image(image, size=long_side, max_pixels=max_pixels)


def _label(image: ImageLike) -> str:
    return os.path.basename(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else type(image).__name__


def stylize(content: ImageLike, style: Union[ImageLike, Sequence[ImageLike]], method: str = "lite", *,
            callback: Optional[Callback] = None, **options: Any) -> StylizeResult:
    """Stylise ``content`` in the style of ``style`` (one image or several, blended by ``style_weights``).

    ``options`` are the fields of ``atelier.config.StylizeOptions`` (size, iterations, style_weight, ...).
    """
    opts = StylizeOptions.from_kwargs(**options)
    m = registry.create("method", method)
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if not styles:
        raise AtelierError("at least one style image is needed")
    device = resolve_device(opts.device)
    content_t = _to_tensor(content, opts.size, opts.max_pixels)
    style_long = max(16, round(opts.size * opts.style_scale))
    style_ts = [_to_tensor(s, style_long, opts.max_pixels) for s in styles]
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


def list_methods() -> list[dict[str, Any]]:
    """Every registered method with whether it can run here and why not."""
    out = []
    for name in registry.names("method"):
        m = registry.create("method", name)
        ok, reason = m.availability()
        out.append({"name": name, "description": m.description, "available": ok, "reason": reason})
    return out
