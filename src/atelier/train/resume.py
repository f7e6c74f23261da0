"""Resume checkpoints: one file holding everything a trainer needs to continue exactly (model, optimiser and EMA
state, step, RNG states, the config it was started with).

It is our own file, written atomically with ``torch.save`` and read back with ``weights_only=True`` (tensors,
numbers, strings, lists and dicts only): nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import AtelierError
from ..files import PathLike, atomic_path


def save_resume(path: PathLike, state: dict[str, Any]) -> Path:
    """Write a resume checkpoint atomically (tensors, numbers, strings, lists and dicts only)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as e:
        raise AtelierError(f"cannot write checkpoint {path} ({e.strerror or e})") from None
    return path


def load_resume(path: PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AtelierError(f"no checkpoint to resume from at {path}; run without --resume to start afresh")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle objects
    except Exception as e:
        raise AtelierError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it to start afresh") \
            from None
    if not isinstance(state, dict):
        raise AtelierError(f"checkpoint {path} is not an atelier training checkpoint")
    return state
