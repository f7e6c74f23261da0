"""``PrepareOptions``: ``atelier prepare`` (a teacher stylises many photographs into a pairs folder), with the parsers
of its two small languages, ``--teacher-options k=v,...`` and ``--shard I/N``."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from ..errors import OptionError
from .fields import DEVICES, check_choices, check_known, check_whole, opt

# The registered teachers (the registry's "teacher" entries; a contract test holds the two lists equal).
TEACHERS = ("gatys", "lite", "effnet", "magenta")
MIN_SIDE = 16  # smaller photographs are skipped: the feature nets pool four times


@dataclass(frozen=True)
class PrepareOptions:
    content: Optional[str] = opt(None, "folder of content photographs, required (not searched recursively)",
                                 metavar="DIR")
    style: Optional[str] = opt(None, "a style image, or a folder of them (each photograph gets one, picked by a "
                               "hash of its bytes and --seed), required", metavar="IMAGE|DIR")
    teacher: str = opt("lite", "the model that stylises the photographs (magenta needs atelier[magenta])",
                       choices=TEACHERS)
    out: Optional[str] = opt(None, "pairs folder to write, required (run the same command again to continue an "
                             "interrupted run)", metavar="PAIRS_DIR")
    size: int = opt(256, "long side of the stored pairs in pixels")
    teacher_options: Union[str, dict, None] = opt(None, "teacher options as key=value pairs, e.g. "
                                                  "iterations=60,style_weight=20 (gatys/lite/effnet: the stylize options; "
                                                  "magenta: weights, style_size, or handle for TensorFlow) (default: none)", metavar="K=V,...")
    limit: int = opt(0, "use at most this many photographs, the first in name order (0: all)")
    shard: str = opt("", "do only shard I of N (I/N, 0 <= I < N): every N-th photograph from the I-th; under "
                     "torchrun each process takes its part of it (default: all)", metavar="I/N")
    seed: int = opt(0, "random seed: which style each photograph gets (several styles) and the teacher's seed")
    device: str = opt("auto", "where the teacher computes", choices=DEVICES)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "PrepareOptions":
        check_known(cls, kwargs, "prepare option")
        for name in ("content", "style", "out"):
            if kwargs.get(name) is not None:
                kwargs[name] = str(kwargs[name])
        kwargs["teacher_options"] = parse_teacher_options(kwargs.get("teacher_options"))
        if kwargs.get("shard") is None:
            kwargs.pop("shard", None)
        return cls(**kwargs).validate()

    def validate(self) -> "PrepareOptions":
        for name, what in (("content", "is required (a folder of photographs)"),
                           ("style", "is required (a style image or a folder of them)"),
                           ("out", "is required (the pairs folder to write)")):
            if not getattr(self, name):
                raise OptionError(name, what)
        check_whole(self, (("size", MIN_SIDE), ("limit", 0), ("seed", 0)))
        check_choices(self)
        if not isinstance(self.teacher_options, dict):
            raise OptionError("teacher_options", f"must be key=value pairs, got {self.teacher_options!r}")
        parse_shard(self.shard)
        return self

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _scalar(text: str) -> Union[int, float, str]:
    for kind in (int, float):
        try:
            v = kind(text)
        except ValueError:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            break
        return v
    return text


def parse_teacher_options(value: Union[str, dict, None]) -> dict[str, Any]:
    """``"iterations=60,style_weight=20"`` -> ``{"iterations": 60, "style_weight": 20}`` (ints, floats, strings).

    A piece without ``=`` continues the previous value, so list values keep their commas:
    ``"scales=128,256,iterations=5"`` -> ``{"scales": "128,256", "iterations": 5}``.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise OptionError("teacher_options", f"names must be non-empty strings, got {k!r}")
            if isinstance(v, tuple):
                v = list(v)
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError):
                raise OptionError("teacher_options", f"{k} must be a number, string or list, got {v!r}") from None
            out[k] = v
        return out
    if not isinstance(value, str):
        raise OptionError("teacher_options", f"must be key=value pairs like iterations=60,style_weight=20, "
                                             f"got {value!r}")
    pairs: list[list[str]] = []
    for piece in value.split(","):
        if "=" in piece:
            key, _, v = piece.partition("=")
            key = key.strip().replace("-", "_")
            if not key:
                raise OptionError("teacher_options", f"misses a name before '=' in {value!r}")
            pairs.append([key, v.strip()])
        elif pairs:
            pairs[-1][1] += "," + piece.strip()
        elif piece.strip():
            raise OptionError("teacher_options", f"must be key=value pairs like iterations=60,style_weight=20, "
                                                 f"got {value!r}")
    out: dict[str, Any] = {}
    for key, v in pairs:
        if key in out:
            raise OptionError("teacher_options", f"gives {key} twice")
        out[key] = _scalar(v)
    return out


def parse_shard(spec: str) -> tuple[int, int]:
    """``""`` -> (0, 1); ``"I/N"`` -> (I, N) with 0 <= I < N."""
    if spec is None or str(spec).strip() == "":
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise OptionError("shard", f"must be I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    return int(m.group(1)), int(m.group(2))
