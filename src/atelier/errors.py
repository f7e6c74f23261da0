"""The one exception type for errors a user can cause.

Contract: the message is a single line that says what went wrong and what to do about it.
The CLI prints it as ``atelier: error: <message>`` and exits with status 2; the service answers 4xx.
Never raise it for programming errors (those should surface as ordinary exceptions with tracebacks).
"""


class AtelierError(Exception):
    """A problem with the user's input, files, options or environment (one-line message)."""

    def __init__(self, message: str):
        # Keep messages on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
