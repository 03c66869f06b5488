"""Every message the dashboard's workers and widgets post, in one place.

Why: thread workers never touch widgets; they report facts back as messages and the UI thread
applies them. Each message is a small dataclass named as a fact in the past tense. A run's
events arrive one message each (`RunEventReceived`) and are never replaced: each one is part of
the run's record, and the screen folds them in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from textual.message import Message

from drillui.record.events import Event, PromqlEvaluated
from drillui.sources.logs import LogRecord
from drillui.ui.feeds import LastVerdict

# ---- infrastructure ---------------------------------------------------------------------------


@dataclass
class StackStatusChanged(Message):
    """One line of what the infrastructure is doing (starting Postgres, ready in 1.1s...)."""

    text: str


@dataclass
class StackReady(Message):
    mode: str
    seconds: float


@dataclass
class StackFailed(Message):
    title: str
    message: str
    hint: str | None = None


# ---- the menu ---------------------------------------------------------------------------------


@dataclass
class LastVerdictsLoaded(Message):
    verdicts: Mapping[str, LastVerdict]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LastVerdictsLoaded)


# ---- a drill run ------------------------------------------------------------------------------


@dataclass
class RunEventReceived(Message):
    """One event of the run, from the runner's thread (or a followed event log)."""

    event: Event
    run: int = 0
    """Which run of the screen it belongs to: a late event of a previous run is dropped."""


@dataclass
class RunFinished(Message):
    """The runner returned (its end is in the last event) or refused / failed to start."""

    state: str | None
    error_title: str | None = None
    error: str | None = None
    hint: str | None = None
    run: int = 0
    fix: str | None = None
    """An action of the screen that fixes it (offered as a key of the error dialog)."""


@dataclass
class ScreenshotSaved(Message):
    path: str


# ---- widgets to their screen ------------------------------------------------------------------


@dataclass
class TraceChosen(Message):
    """A trace was picked in the traces panel: open its span tree, or filter the logs by it."""

    trace_id: str
    open_tree: bool


@dataclass
class LogLineChosen(Message):
    """A log line was picked: show it whole, and from there the trace it was logged under."""

    trace_id: str | None
    record: LogRecord | None = None


@dataclass
class TraceFilterSubmitted(Message):
    text: str


@dataclass
class LogFilterSubmitted(Message):
    text: str


# ---- PromQL -----------------------------------------------------------------------------------


@dataclass
class PromqlSubmitted(Message):
    """A query typed in the PromQL prompt (Enter)."""

    text: str


@dataclass
class PromqlPromptClosed(Message):
    """Escape in the PromQL prompt: the keys go back to the dashboard."""


@dataclass
class PromqlAnswered(Message):
    """Prometheus answered a query the screen asked (in a thread worker)."""

    event: PromqlEvaluated
    recorded: bool
    """False: the run had ended (or none was running), so the answer is shown, not recorded."""
    run: int = 0
