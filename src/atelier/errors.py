"""The one exception type for errors a user can cause.

Contract: the message is a single line that says what went wrong and what to do about it.
The CLI prints it as ``atelier: error: <message>`` and exits with status 2; the service answers 4xx.
Never raise it for programming errors (those should surface as ordinary exceptions with tracebacks).
"""

from __future__ import annotations

from typing import Callable


class AtelierError(Exception):
    """A problem with the user's input, files, options or environment (one-line message)."""

    def __init__(self, message: str):
        # Keep messages on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


class OptionError(AtelierError):
    """A bad option value. The message names the option's field (``style_weight must be ...``; ``before`` is any text
    ahead of the name), so each front-end can say it in its own words: ``render(lambda f: "--" + f.replace("_",
    "-"))`` gives the CLI's flag; ``str(e)`` keeps the field name (the Python API's keyword, the service's form
    field)."""

    def __init__(self, field: str, rest: str, before: str = ""):
        self.field, self.rest, self.before = field, " ".join(str(rest).split()), " ".join(str(before).split())
        super().__init__(self.render(str))

    def render(self, name: "Callable[[str], str]") -> str:
        return " ".join(part for part in (self.before, name(self.field), self.rest) if part)
