"""Every message the dashboard's workers and widgets post, in one place.

Why: thread workers never touch widgets; they report facts back as messages and the UI thread
applies them. Each message is a small dataclass named as a fact in the past tense. Messages that
carry a snapshot of a state (the latest scrape, the latest trace search) override `can_replace`,
so a panel that falls behind under load drops stale snapshots instead of queueing a backlog.
Messages carrying increments (log lines, progress events) are never replaced: each one counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from drillui.evidence.live import TraceQuery
from drillui.sources.logs import LogRecord
from drillui.sources.metrics import MetricsSnapshot
from drillui.sources.traces import Trace
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
class DrillProgressed(Message):
    """One runner `Progress` event, forwarded from the runner's thread."""

    phase: str
    message: str
    elapsed: float
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunEnded(Message):
    """The runner returned (verdict in the last progress event) or raised an expected error."""

    passed: bool | None
    error_title: str | None = None
    error: str | None = None
    hint: str | None = None


@dataclass
class MetricsSampled(Message):
    taken_at: float
    scrapes: Mapping[str, MetricsSnapshot]
    errors: Mapping[str, str]
    run: int = 0
    """Which run of the screen it belongs to: a late answer for a previous run is dropped."""

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued (older) message whether `message` (newer) supersedes it. Only a
        # newer scrape of at least the same workers does: the points between are just skipped.
        return isinstance(message, MetricsSampled) and message.run == self.run and set(self.scrapes) <= set(message.scrapes)


@dataclass
class LogsTailed(Message):
    records: Sequence[LogRecord]
    final: bool = False
    """The last read of a finished run (partial last lines included)."""
    run: int = 0


@dataclass
class FeedFailed(Message):
    """An evidence source could not be read (an expected failure under some drills)."""

    feed: str
    error: str


@dataclass
class TracesFetched(Message):
    """Results of one round of trace searches: per query, the traces the backend returned."""

    results: Mapping[TraceQuery, Sequence[Trace]]
    panel: Sequence[TraceQuery]
    """The queries whose traces the traces panel shows (the filter, or the run's ids)."""
    errors: Sequence[str] = ()
    run: int = 0

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TracesFetched) and message.run == self.run and list(message.panel) == list(self.panel)


@dataclass
class TraceLoaded(Message):
    """The answer to "open the trace of this log line"."""

    trace_id: str
    trace: Trace | None
    error: str | None = None


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
    """A log line was picked: open the trace it was logged under."""

    trace_id: str | None


@dataclass
class TraceFilterSubmitted(Message):
    text: str


@dataclass
class LogFilterSubmitted(Message):
    text: str
