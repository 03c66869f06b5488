"""Small formatting rules shared by the panels, so every panel spells a time or an id the same way.

Pure functions (no Textual): numbers and ids in, short strings out. Styles are Textual theme
variables, so the dashboard follows the user's theme and stays readable when screen-shared.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

PHASE_STYLE: Final[dict[str, str]] = {
    "idle": "$foreground-muted",
    "preparing": "$foreground",
    "starting": "$foreground",
    "arming": "$warning",
    "armed": "bold $error",
    "running": "bold $warning",
    "recovering": "bold $accent",
    "collecting": "$accent",
    "verified": "bold $success",
    "failed": "bold $error",
    "stopping": "bold $warning",
    "ended": "$foreground-muted",
    "passed": "bold $success",
    "stopped": "bold $warning",
    "error": "bold $error",
    "refused": "bold $warning",
}

RESULT_STYLE: Final[dict[str, str]] = {
    "ok": "green",
    "retry": "yellow",
    "failed": "bold red",
    "partial": "magenta",
    "noop": "cyan",
}

LEVEL_STYLE: Final[dict[str, str]] = {
    "debug": "dim",
    "info": "",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold red",
    "raw": "magenta",
}


def since(seconds: float | None) -> str:
    """'+3.2s' after the fault was armed, '-0.4s' before it, '' when unknown."""
    if seconds is None:
        return ""
    return f"{seconds:+.1f}s"


def clock(seconds: float) -> str:
    """Elapsed time of a run: '9.4s', '1m05s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def duration_ns(ns: int) -> str:
    ms = ns / 1e6
    if ms < 1:
        return f"{ns / 1e3:.0f}µs"
    if ms < 1000:
        return f"{ms:.1f}ms"
    return f"{ms / 1000:.2f}s"


def short_id(value: str | None, n: int = 8) -> str:
    return (value or "")[:n]


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if value == int(value) and abs(value) < 1e12:
        text = f"{int(value)}"
    else:
        text = f"{value:.1f}"
    return text + unit


def signed(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    text = number(abs(value), unit)
    return ("-" if value < 0 else "+") + text


def wall_time(unix: float) -> str:
    """HH:MM:SS.s in UTC: the same clock as the workers' `ts` fields."""
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%S.%f")[:10]
