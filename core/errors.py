"""User-facing errors.

Every error a researcher can cause by typing something wrong is a ``LabError``: the CLI prints its
message on one line and exits non-zero, so the message must name the problem *and* the fix.
"""


class LabError(Exception):
    """A problem with the user's input or the lab's state, with a one-line message naming the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class LabBusyError(LabError):
    """Another process held the lab database for longer than we were willing to wait."""

    exit_code = 3


def first_line(e: BaseException) -> str:
    """An exception's message on one line: its first line, or its type's name when it has no message.

    For a one-line error, log entry or error row that quotes a lower layer's (often multi-line) error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
