r"""How an option is declared and checked, once: ``opt`` (a dataclass field carrying its help, choices and list
type), ``check_known`` / ``coerce_lists`` (keyword options from the Python API), ``check_number`` (every numeric
bound), ``check_choices`` and ``check_whole``.

Every message names the field (``style_weight``), never a front-end's word for it: the errors are
``OptionError``\ s, which the CLI renders with its flags (``--style-weight``) and the service with its form fields.
"""

from __future__ import annotations

import math
import os
from dataclasses import field, fields
from typing import Any, Optional

from ..errors import AtelierError, OptionError

DEFAULT_MAX_PIXELS = 50_000_000
DEVICES = ("auto", "cpu", "cuda", "mps")


def opt(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
        short: str | None = None, metavar: str | None = None, list_of: type | None = None, repeat: bool = False,
        hidden: bool = False) -> Any:
    """A dataclass field that carries its CLI help; ``list_of`` marks comma-separated list options, ``repeat`` a
    flag given once per value (``--images A --images B``), ``hidden`` a field with no flag, ``short`` a one-letter
    alias."""
    meta = {"help": help, "choices": choices, "flag": flag, "short": short, "metavar": metavar, "list_of": list_of,
            "repeat": repeat, "hidden": hidden}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


def check_known(cls: type, kwargs: dict[str, Any], what: str = "option") -> None:
    """Refuse keyword options that are not fields of the dataclass ``cls``, listing the valid ones."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise AtelierError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(sorted(valid))}")


def _list_item(kind: type, item: Any) -> Any:
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if isinstance(item, str):
        return kind(item.strip())
    if isinstance(item, bool) or (kind is int and not isinstance(item, int)):
        raise ValueError(item)  # 256.5 is not a size, True is not a number
    return kind(item)


def coerce_lists(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """List options (``list_of`` fields) from the Python API and the command line as tuples: ``"b1_dw,b3_dw"``,
    ``["b1_dw", "b3_dw"]`` and a single value or path alike (a bare string would otherwise become a tuple of its
    characters). The one place comma lists are parsed."""
    out = dict(kwargs)
    for f in fields(cls):
        kind, v = f.metadata.get("list_of"), out.get(f.name)
        if not kind or v is None:
            continue
        items = [t for t in v.split(",") if t.strip()] if isinstance(v, str) else \
            list(v) if isinstance(v, (list, tuple)) else [v]
        try:
            out[f.name] = tuple(_list_item(kind, t) for t in items)
        except (TypeError, ValueError):
            raise OptionError(f.name, f"takes comma-separated {kind.__name__} values, got {v!r}") from None
    return out


def check_choices(obj: Any) -> None:
    """Refuse any field value outside the ``choices`` its metadata lists."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        if choices and getattr(obj, f.name) not in choices:
            raise OptionError(f.name, f"must be one of {', '.join(choices)}, got {getattr(obj, f.name)!r}")


def check_whole(obj: Any, bounds: tuple[tuple[str, int], ...]) -> None:
    """Refuse any field named in ``bounds`` ((name, low), ...) that is not a whole number >= low (bools refused)."""
    for name, low in bounds:
        check_number(name, getattr(obj, name), low=low, whole=True)




def check_number(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
                 strict_low: bool = False, strict_high: bool = False, whole: bool = False,
                 what: str = "") -> Any:
    """Refuse ``value`` unless it is a finite number (whole, if ``whole``) within the bounds; returns it.

    ``strict_low`` / ``strict_high`` make a bound open. Bools are never numbers. ``what`` overrides the description
    in the message (for example "a number of seconds").
    """
    kind = "a whole number" if whole else (what or "a finite number")
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and (whole or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value < high if strict_high else value <= high
    if not ok:
        if low is not None and high is not None:
            bounds = f" in {'(' if strict_low else '['}{low:g}, {high:g}{')' if strict_high else ']'}"
        elif low is not None:
            bounds = f" {'>' if strict_low else '>='} {low:g}"
        elif high is not None:
            bounds = f" {'<' if strict_high else '<='} {high:g}"
        else:
            bounds = ""
        raise OptionError(name, f"must be {kind}{bounds}, got {value!r}")
    return value
