"""The recorder: the one door every event of a run goes through.

`emit` stamps an event (sequence number, seconds since the start, wall time), folds it into the
run's `RunState`, appends it to `_events.jsonl`, hands it to the listeners (the CLI's progress
printer, the dashboard), and after each observation evaluates the checks again and emits the ones
that changed. Thread-safe: the runner's thread and its observer threads all emit here, and one
lock keeps the order of the record the order of the fold.

Bounded: log lines are written inline up to `log_inline_budget`; past it a `log_lines_seen`
event keeps only its reference into `_logs/` (offsets and line number) and the count, and says so
once. Spans past `span_budget` are counted, not recorded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Final

from drillui.evidence.checks import Check, CheckTracker, Verdict, evaluate
from drillui.evidence.state import RunState
from drillui.record.eventlog import EventLogWriter
from drillui.record.events import (
    OBSERVATIONS,
    ChecksChanged,
    Event,
    LogLinesSeen,
    PhaseChanged,
    RunEnded,
    Said,
    SpansSeen,
)
from drillui.scenarios import Drill

LOG_INLINE_BUDGET: Final = 50_000
SPAN_BUDGET: Final = 100_000
RUNNER_LOG_LINES: Final = 200

Listener = Callable[[Event], None]
_log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self,
        drill: Drill,
        *,
        writer: EventLogWriter | None = None,
        progress: Path | None = None,
        listeners: list[Listener] | None = None,
        log_inline_budget: int = LOG_INLINE_BUDGET,
        span_budget: int = SPAN_BUDGET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the wall clock events are stamped with (a recorded run's own, for replays
        built in tests)."""
        self.drill = drill
        # The runner reads its logs for the checks (tallies) and ids, never to show them.
        self.state = RunState(drill, log_lines=RUNNER_LOG_LINES)
        self.tracker = CheckTracker()
        self.writer = writer
        self.listeners = list(listeners or [])
        self._clock = clock
        self._monotonic = time.monotonic if clock is time.time else clock
        self.t0 = self._monotonic()
        self._lock = threading.RLock()
        self._seq = 0
        self._log_budget = log_inline_budget
        self._span_budget = span_budget
        self._inline_lines = 0
        self._spans = 0
        self._capped_said = False
        self._closed = False
        self._progress: IO[str] | None = None
        if progress is not None:
            self._progress = os.fdopen(os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8")

    @property
    def seconds(self) -> float:
        return self._monotonic() - self.t0

    def emit(self, event: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = replace(event, seq=self._seq, t=round(self.seconds, 4), wall=self._clock())
            self.state.apply(event)
            if self.writer is not None:
                self.writer.append(self._bounded(event))
            self._narrate(event)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a broken display must not break the run it displays
                    _log.exception("event listener failed")
            if isinstance(event, OBSERVATIONS):
                changed = self.tracker.update(evaluate(self.drill, self.state, final=False), self.state, event.wall)
                if changed:
                    self.emit(ChecksChanged(checks=tuple(c.to_json() for c in changed)))
            return event

    def emit_if_open(self, event: Event) -> Event | None:
        """`emit`, unless the run has ended (`run_ended` is the record's last event): for events
        from outside the runner (the dashboard's PromQL answers), which may arrive at any time."""
        with self._lock:
            if self.state.ended is not None or self._closed:
                return None
            return self.emit(event)

    def initial_checks(self) -> None:
        """The whole checklist once, at the start: every consumer learns the checks and their order."""
        with self._lock:
            checks = self.tracker.update(evaluate(self.drill, self.state, final=False), self.state, None)
            self.emit(ChecksChanged(checks=tuple(c.to_json() for c in checks)))

    def final_checks(self) -> list[Check]:
        with self._lock:
            return self.tracker.final(evaluate(self.drill, self.state, final=True), self.state)

    def end(self, verdict: Verdict) -> None:
        """The checklist as judged at the end, then the end itself: the last two events."""
        with self._lock:
            self.emit(ChecksChanged(checks=tuple(c.to_json() for c in verdict.checks)))
            self.emit(RunEnded(state=verdict.state, why=verdict.why, verdict=verdict.to_json(),  # type: ignore[arg-type]
                               duration=verdict.duration_seconds or 0.0))

    def _bounded(self, event: Event) -> Event:
        if isinstance(event, LogLinesSeen) and event.lines:
            if self._inline_lines + len(event.lines) > self._log_budget:
                if not self._capped_said:
                    self._capped_said = True
                    self._write_note(f"log lines past {self._log_budget:,} are recorded by reference into _logs/ "
                                     "(offsets and line numbers), not inline")
                return replace(event, lines=(), omitted=len(event.lines) + event.omitted)
            self._inline_lines += len(event.lines)
        if isinstance(event, SpansSeen):
            room = max(0, self._span_budget - self._spans)
            if len(event.spans) > room:
                event = replace(event, spans=event.spans[:room], omitted=event.omitted + len(event.spans) - room)
            self._spans += len(event.spans)
        return event

    def _write_note(self, message: str) -> None:
        # Written straight to the record (and folded), without recursion through emit's budget.
        self._seq += 1
        note = Said(message=message, seq=self._seq, t=round(self.seconds, 4), wall=self._clock())
        self.state.apply(note)
        if self.writer is not None:
            self.writer.append(note)

    def _narrate(self, event: Event) -> None:
        if self._progress is None:
            return
        if isinstance(event, PhaseChanged):
            line = f"[{event.t:6.1f}s] {event.phase:<10} {event.message}\n"
        elif isinstance(event, Said):
            line = f"[{event.t:6.1f}s] {self.state.phase:<10} {event.message}\n"
        else:
            return
        self._progress.write(line)
        self._progress.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.writer is not None:
                self.writer.close()
            if self._progress is not None:
                self._progress.close()
                self._progress = None
