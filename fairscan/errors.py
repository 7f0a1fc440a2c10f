"""One error hierarchy; the CLI maps each class to an exit code.

Library code raises these and never calls ``sys.exit``. A message says what is wrong and where;
``hint`` says what to do about it.
"""

from __future__ import annotations


class FairscanError(Exception):
    """Base class: a failure fairscan can explain to its user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InputError(FairscanError):
    """Bad usage or bad input (a file, a column, an option): exit 2."""

    exit_code = 2


class RunError(FairscanError):
    """A runtime failure that is not the input's fault (non-finite loss, a crashed worker): exit 1."""

    exit_code = 1


class NotBuiltError(FairscanError):
    """A reserved command that a later release will provide: exit 1, never pretending to work."""

    exit_code = 1


class GateFailed(FairscanError):
    """An audit gate (``--max-gap``, ``--min-auc``) failed: exit 3, for CI scripts."""

    exit_code = 3
