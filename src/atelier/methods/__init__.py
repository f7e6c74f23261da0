"""Everything that makes a picture, behind one contract (``base.Method``): ``optimize.py`` (gatys, effnet and lite:
one engine for any feature net), ``feedforward.py`` (trained students: one forward pass, optionally in blended tiles)
and the slot for style-conditioned one-pass methods (``base.OnePassMethod``).

``find(spec)`` is how every front-end turns what a user named into a method: a registered name (the bundled students
are registered names too), a student model folder, a loaded ``StudentModel`` or a ``Method`` object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import AtelierError
from .base import Method, OnePassMethod, Painting

__all__ = ["Method", "OnePassMethod", "Painting", "find"]


def find(spec: Any) -> Method:
    """The method meant by ``spec``; an unknown name or a bad folder raises ``AtelierError`` in one line."""
    from .feedforward import StudentMethod, StudentModel, looks_like_path

    if isinstance(spec, Method):
        return spec
    if isinstance(spec, (StudentModel, os.PathLike)):
        return StudentMethod(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise AtelierError(f"a method is a registered name (see `atelier methods`) or a student model folder, got "
                           f"{type(spec).__name__ if not isinstance(spec, str) else repr(spec)}")
    if looks_like_path(spec):
        return StudentMethod(spec)
    try:
        entry = registry.get("method", spec)  # a registered name; bundled students are only scanned if needed
    except AtelierError:
        if Path(spec).is_dir():  # a bare word that is a folder here, as for --model
            return StudentMethod(spec)
        raise  # unknown method, with the valid names
    return entry.factory()()
