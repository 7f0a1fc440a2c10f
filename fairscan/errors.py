"""One error hierarchy; the CLI maps each class to an exit code.

Library code raises these and never calls ``sys.exit``. A message says what is wrong and where;
``hint`` says what to do about it.
"""

from __future__ import annotations


class FairscanError(Exception):
    """Base class: a failure fairscan can explain to its user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        if hint is None:
            message, hint = _from_worker(type(self), message)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}{HINT_SEP}{self.hint}"


class InputError(FairscanError):
    """Bad usage or bad input (a file, a column, an option): exit 2."""

    exit_code = 2


class RunError(FairscanError):
    """A runtime failure that is not the input's fault (non-finite loss, a crashed worker): exit 1."""

    exit_code = 1


class GateFailed(FairscanError):
    """An audit gate (``--max-gap``, ``--min-auc``) failed: exit 3, for CI scripts."""

    exit_code = 3


HINT_SEP = "\n  hint: "


def _from_worker(cls: type, text: str) -> tuple[str, str | None]:
    """The original message and hint of an error raised in a data-loading worker process.

    PyTorch re-raises a worker's exception in the main process as ``cls(traceback text)``; the text ends with
    the original ``str(error)`` after its class name. Without this the user would see a worker's traceback in
    place of the message (a corrupt image, a missing file).
    """
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return text, None
    original = text.rsplit(marker, 1)[1].rstrip("\n")
    message, _, hint = original.partition(HINT_SEP)
    return message, hint or None
