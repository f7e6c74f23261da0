"""The teacher contract, its helpers, and ``make_teacher`` (the factory over the registry's "teacher" entries).

A teacher (a subclass of ``Teacher``) has:

* ``name``: the registered name (``gatys``, ``lite``, ``effnet``, ``magenta``);
* ``options``: the JSON-ready dict of its options, recorded with every pair it makes;
* ``identity``: a string naming the weights it runs (e.g. ``lite(lite:bundled(sha256:...))``), known once the
  teacher is built, so a pairs folder can refuse a different teacher before any work is done;
* ``random_weights``: True when the weights are untrained (outputs are labelled, not real style transfer);
* ``stylize(content, style)``: ``content`` ``[1,3,H,W]`` and ``style`` ``[1,3,h,w]`` float32 in [0,1] (the one
  pixel convention) -> ``[1,3,H,W]`` in [0,1] on the CPU, always the content's size.

Building a teacher loads its weights (seconds), so missing weights or a missing package fail before a long
``atelier prepare`` starts. Every problem a user can cause raises a one-line ``AtelierError``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .. import registry
from ..errors import AtelierError
from ..images import resize_to


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


def check_image(t: torch.Tensor, what: str) -> torch.Tensor:
    """A teacher's input as a detached float32 CPU tensor in [0,1]; anything but ``[1,3,H,W]`` is a caller's bug."""
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[:2] != (1, 3):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"teacher {what} must be a [1,3,H,W] tensor, got {shape}")
    return t.detach().float().cpu().clamp(0, 1)


def as_content_size(out: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """A teacher's output on the CPU, NaN-free, in [0,1] and at the content's size."""
    out = torch.nan_to_num(out.detach().float().cpu(), nan=0.0).clamp(0, 1)
    return resize_to(out, (int(content.shape[-2]), int(content.shape[-1])))


def make_teacher(name: str, options: Optional[dict[str, Any]] = None, device: str = "auto",
                 seed: int = 0) -> Teacher:
    """Build the teacher ``name`` with ``options`` (a dict; for gatys/lite/effnet the fields of StylizeOptions other than
    size and device, with ``seed`` as the default seed; for magenta ``weights``, ``style_size`` or ``handle``)."""
    options = dict(options or {})
    for key, value in options.items():
        if not isinstance(key, str):
            raise AtelierError(f"teacher option names must be strings, got {key!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AtelierError(f"teacher option {key} must be finite, got {value!r}")
    return registry.create("teacher", name, options=options, device=device, seed=seed)


__all__ = ["Teacher", "check_image", "as_content_size", "make_teacher"]
