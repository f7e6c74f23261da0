"""Which torch device a computation runs on: ``resolve_device("auto"|"cpu"|"cuda"|"mps")``."""

from __future__ import annotations

import torch

from .errors import OptionError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", "cuda asked for, but torch sees no CUDA GPU; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OptionError("device", "mps asked for, but this machine has no MPS backend; use cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise OptionError("device", f"must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)
