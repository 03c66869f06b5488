"""One error tree for everything a user can get wrong or the environment can refuse.

The CLI prints `str(error)` as a single line on stderr and exits with `exit_code`; the
dashboard shows `title` and the same line in a modal. Never a traceback for expected failures.
"""

from __future__ import annotations


class DrillError(Exception):
    """Base of every expected failure. The message names what is wrong and how to fix it."""

    title = "drillui error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class UsageError(DrillError):
    """Bad input: a flag, a variable, a port, a URL, a scenario file. Exit code 2."""

    title = "Bad usage"
    exit_code = 2


class StackError(DrillError):
    """The infrastructure could not be started, reached or stopped."""

    title = "Infrastructure problem"
    exit_code = 2


class StackAlreadyRunning(StackError):
    title = "Stack already running"
