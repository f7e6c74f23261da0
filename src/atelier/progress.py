"""The one progress record every engine emits and every front-end reads (bar, service jobs, traces, benchmarks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch


@dataclass
class StepInfo:
    engine: str                   # "gatys", "lite", ...
    scale: int                    # index of the current scale, 0-based (coarse to fine)
    scales: int                   # number of scales
    size: tuple[int, int]         # (height, width) being optimised at this scale
    step: int                     # loss evaluations done at this scale
    total: int                    # loss evaluations planned at this scale
    evaluations: int              # loss evaluations done over all scales
    optimizer_steps: int          # optimiser steps over all scales (L-BFGS may evaluate more than once a step)
    loss: float                   # weighted total
    parts: dict[str, float] = field(default_factory=dict)  # weighted content / style / tv terms
    elapsed: float = 0.0          # seconds since the run started
    image: Optional[torch.Tensor] = None  # [1,3,H,W] in [0,1] when the engine attached one (save_every, scale end)

    def record(self) -> dict[str, Any]:
        """JSON-friendly copy without the image."""
        d = asdict(self)
        d.pop("image")
        d["size"] = list(self.size)
        return d


Callback = Callable[[StepInfo], None]
