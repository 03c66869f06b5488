"""The one error the evidence sources raise when the thing they read from is not answering.

It lives in its own module (not in `drillui/sources/__init__.py`) so every source can import it
without importing its siblings. It is a `DrillError`, so the CLI prints it as one line and the
dashboard can show it in place of a panel instead of crashing.
"""

from __future__ import annotations

from drillui.errors import DrillError


class SourceError(DrillError):
    """A source (a /metrics endpoint, a log file, a trace backend) could not be read."""

    title = "Evidence source unavailable"
    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, hint: str | None = None) -> None:
        self.source = source
        super().__init__(message, hint=hint)
