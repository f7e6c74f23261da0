"""How the command line says the options: one flag per field of an options dataclass (``add_option_flags``), the
fields a command line gave (``given``), and an option error in flag words (``in_flags``)."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any, Iterable, Optional

from .errors import AtelierError, OptionError
from .options import StylizeOptions


def parse_list(kind: type, flag: str):
    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return tuple(kind(t) for t in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated {kind.__name__} values, "
                                             f"got {text!r}") from None
    return parse


def whole_number(flag: str, low: int, high: Optional[int] = None):
    """An argparse type: a whole number in [low, high] (no upper bound: None), or a one-line error naming ``flag``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a whole number, got {text!r}") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be from {low} to {high}, got {value}")
        return value
    return parse


def unit_number(flag: str, below_one: bool = False):
    """An argparse type: a number in [0, 1] (``below_one``: [0, 1)), or a one-line error naming ``flag``."""
    span = "at least 0 and below 1" if below_one else "from 0 to 1"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number {span}, got {text!r}") from None
        if not (0.0 <= value < 1.0 if below_one else 0.0 <= value <= 1.0):  # NaN fails too
            raise argparse.ArgumentTypeError(f"{flag} must be {span}, got {text}")
        return value
    return parse


def _scalar_type(cls: type, f) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_option_flags(parser: argparse.ArgumentParser, cls: type = StylizeOptions,
                     title: str = "optimisation options (defaults from atelier.options.StylizeOptions)",
                     only: Optional[Iterable[str]] = None) -> None:
    """Add one flag per field of the options dataclass ``cls``, with the field's default and help.

    Choices are not given to argparse: the dataclass's ``validate`` checks them, so a bad value gets the same
    one-line error from the CLI and from the Python API. ``only``: just these fields.
    """
    group = parser.add_argument_group(title)
    for f in fields(cls):
        meta = f.metadata
        if meta.get("hidden") or (only is not None and f.name not in only):
            continue
        flag = "--" + (meta.get("flag") or f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = meta.get("help", "")
        if "default" not in text and "required" not in text:  # some say their default in words (None: found for you)
            text = f"{text} (default: {shown})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        kind = _scalar_type(cls, f)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("repeat"):
            kwargs["action"] = "append"
            kwargs["metavar"] = meta.get("metavar")
        elif meta.get("list_of"):
            kwargs["type"] = parse_list(meta["list_of"], flag)
            kwargs["metavar"] = meta.get("metavar") or "A,B"
        else:
            choices = meta.get("choices")
            kwargs["type"] = kind
            kwargs["metavar"] = meta.get("metavar") or ("|".join(choices) if choices else None)
        group.add_argument(*([meta["short"]] if meta.get("short") else []), flag, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of the options dataclass ``cls`` that were given on the command line (the rest keep defaults)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def in_flags(e: AtelierError) -> str:
    """The message in this front-end's words: an option's field (``style_weight``) is its flag (``--style-weight``)."""
    return e.render(lambda name: "--" + name.replace("_", "-")) if isinstance(e, OptionError) else str(e)
