"""The typed events of a drill run: the one record every view and every verdict is built from.

Why this module exists: a run used to tell its story through an untyped progress channel, parsed
by key name in two places, with its observations spread over files only the verdict read. Now
everything that happens in a run is one of the frozen dataclasses below, emitted by the runner,
appended to `_events.jsonl` (one JSON object per line) and folded by every consumer with the same
code (`drillui.evidence.state.RunState`). Consumers match on the type, never on message text.

Only deltas travel: a trigger event is announced once, a metrics sample carries the series that
changed since that worker's previous sample (`full` says when it carries them all), a span or a
log line is recorded once. Every event gets, when it is emitted, its sequence number, the seconds
since the run started (`t`) and the wall-clock time (`wall`).

Versioned: `SCHEMA_VERSION` is written in `RunStarted`; a reader keeps an event of a type it does
not know as `UnknownEvent` instead of failing, so an older drillui can still read a newer record.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, Literal, TypeVar

SCHEMA_VERSION: Final = 1

Phase = Literal["preparing", "starting", "arming", "armed", "running", "recovering", "collecting", "ended"]
SamplePhase = Literal["before", "live", "after", "recovered"]
"""before/after/recovered: the runner's phase scrapes the verdict compares; live: the samples
taken while the drill runs (peaks, sparklines)."""
EndState = Literal["passed", "failed", "stopped", "error"]
"""How a recorded run ended. A refused run (dirty environment) records nothing: no folder."""
WorkerEnd = Literal["stopped", "killed", "exited"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: where it sits in the run."""

    type: ClassVar[str] = "event"
    seq: int = 0
    t: float = 0.0
    """Seconds since the run started (monotonic clock)."""
    wall: float = 0.0
    """Unix time when it was emitted."""


# ---- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_id: str
    scenario: str
    letter: str
    title: str
    snapshot: str
    """The run's folder, as the runner wrote it (absolute)."""
    drill: Mapping[str, Any]
    """The drill's catalog entry as it was when the run started: verify judges by this one."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "bounded"
    infrastructure: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True, kw_only=True)
class PhaseChanged(Event):
    type: ClassVar[str] = "phase_changed"
    phase: Phase
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Said(Event):
    """One line of the runner's narration (what it does and why)."""

    type: ClassVar[str] = "said"
    message: str


@dataclass(frozen=True, kw_only=True)
class WorkerStarted(Event):
    type: ClassVar[str] = "worker_started"
    name: str
    worker_id: str
    pid: int | None
    metrics_url: str | None
    log_file: str
    """Relative to the run's folder (`_logs/<worker>-<run_id>.log`)."""


@dataclass(frozen=True, kw_only=True)
class WorkerStopped(Event):
    type: ClassVar[str] = "worker_stopped"
    name: str
    worker_id: str
    pid: int | None
    exit_code: int | None
    how: WorkerEnd


@dataclass(frozen=True, kw_only=True)
class TriggersWritten(Event):
    """Outbox rows the run wrote (only the new ones)."""

    type: ClassVar[str] = "triggers_written"
    events: tuple[Mapping[str, Any], ...]
    """Each {outbox_event_id, entity_id, op, projection, delay}."""


@dataclass(frozen=True, kw_only=True)
class FaultArmed(Event):
    type: ClassVar[str] = "fault_armed"
    fault: str
    evidence: str


@dataclass(frozen=True, kw_only=True)
class FaultNotArmed(Event):
    """The fault could not prove it is in force: the drill fails loudly before its clock starts."""

    type: ClassVar[str] = "fault_not_armed"
    fault: str
    evidence: str


@dataclass(frozen=True, kw_only=True)
class FaultHeld(Event):
    """Guided mode: the fault stays armed until the trainer recovers it, or the hold limit."""

    type: ClassVar[str] = "fault_held"
    until: float | None = None
    """Unix time the hold limit ends; None: until the trainer recovers it."""


@dataclass(frozen=True, kw_only=True)
class FaultReverted(Event):
    type: ClassVar[str] = "fault_reverted"
    fault: str
    evidence: str
    still_armed: bool = False
    """True when the revert could not be proven: the environment is dirty."""


# ---- observations -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MetricsSampled(Event):
    """One scrape of one worker's /metrics, parsed.

    `samples` are `[name, labels, value, kind]`. With `full` false they are only the series whose
    value changed since the same worker's previous sample; a reader keeps the rest as they were.
    """

    type: ClassVar[str] = "metrics_sampled"
    worker: str
    phase: SamplePhase
    taken_at: float
    samples: tuple[tuple[str, Mapping[str, str], float, str], ...]
    full: bool = True
    file: str | None = None
    """The raw text of a phase scrape (`_metrics/...`), relative to the run's folder."""


@dataclass(frozen=True, kw_only=True)
class MetricsUnreachable(Event):
    """A worker did not answer a scrape (killed, stopping, or slowed by the drill)."""

    type: ClassVar[str] = "metrics_unreachable"
    worker: str
    error: str


@dataclass(frozen=True, kw_only=True)
class SpansSeen(Event):
    """Spans the trace backend returned that the run had not recorded yet."""

    type: ClassVar[str] = "spans_seen"
    spans: tuple[Mapping[str, Any], ...]
    omitted: int = 0
    """New spans not recorded because the run's span budget is spent (the count only)."""


@dataclass(frozen=True, kw_only=True)
class LogLinesSeen(Event):
    """Lines a worker appended to its log file, read in one poll.

    `start`/`end` are byte offsets in `file` and `first_line` the 1-based number of its first
    line: a stable reference into `_logs/`. `lines` holds them verbatim, unless the run's inline
    budget is spent (`omitted` lines then are only in the file, at that reference).
    """

    type: ClassVar[str] = "log_lines_seen"
    worker: str
    file: str
    start: int
    end: int
    first_line: int
    lines: tuple[str, ...]
    omitted: int = 0


@dataclass(frozen=True, kw_only=True)
class StatusesPolled(Event):
    """How many of the run's trigger rows are in each status."""

    type: ClassVar[str] = "statuses_polled"
    statuses: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class ProbeRecorded(Event):
    """A database or engine probe (e.g. `trigger_status`, `chronicle_versions`)."""

    type: ClassVar[str] = "probe_recorded"
    name: str
    value: Any


@dataclass(frozen=True, kw_only=True)
class GaugesProbed(Event):
    """lag / oldest age / stuck read from the database itself: the final state, not a worker's
    last refresh of its gauges."""

    type: ClassVar[str] = "gauges_probed"
    projection: str
    lag: int
    oldest_age: float
    stuck: int


@dataclass(frozen=True, kw_only=True)
class TracesExported(Event):
    """The runner's trace queries by the run's ids, written to `_exports/`."""

    type: ClassVar[str] = "traces_exported"
    folder: str
    queries: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, kw_only=True)
class CleanChecked(Event):
    type: ClassVar[str] = "clean_checked"
    clean: bool
    summary: str
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RowsSettled(Event):
    """The run's own trigger rows it left unsettled at its end, removed from the outbox."""

    type: ClassVar[str] = "rows_settled"
    removed: tuple[str, ...]
    statuses: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PromqlEvaluated(Event):
    """A PromQL query run against the stack's Prometheus over the drill's time range, and what it
    answered: a trainer step applied, a query a trainee typed, or a PromQL check the runner judged.

    Recorded so that a replay (which has no Prometheus) shows what the run saw, and the check is
    judged from the record, never by querying again.
    """

    type: ClassVar[str] = "promql_evaluated"
    query: str
    purpose: str
    """`step` (a trainer step applied, `step_index`), `prompt` (typed), `check` (`check`)."""
    start: float
    """Unix seconds: the drill's time range the query ran over."""
    end: float
    step: float = 0.0
    """Seconds between points (a range query); 0: an instant query at `end`."""
    result_type: str = ""
    series: tuple[Mapping[str, Any], ...] = ()
    """`{"metric": {labels}, "values": [[unix seconds, value], ...]}` each, at most 40."""
    omitted: int = 0
    """Series past the bound, counted only."""
    error: str | None = None
    """Prometheus's own error text (a bad query), or why it did not answer."""
    available: bool = True
    """False: the stack runs no Prometheus (`error` says why and how to get one)."""
    step_index: int | None = None
    check: str | None = None
    phase: str | None = None
    """For a check: the runner's phase it was judged at (`after`, `recovered`)."""


# ---- the checklist, the trainer, the end --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChecksChanged(Event):
    """Checks whose state or observed value changed (all of them in the first one)."""

    type: ClassVar[str] = "checks_changed"
    checks: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, kw_only=True)
class StepChanged(Event):
    type: ClassVar[str] = "step_changed"
    index: int
    say: str = ""


@dataclass(frozen=True, kw_only=True)
class TrainerActed(Event):
    """Something the trainer did to the run (other than stopping it)."""

    type: ClassVar[str] = "trainer_acted"
    action: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class AnswerGiven(Event):
    """Training: a trainee's answer, graded from the run's evidence at that moment."""

    type: ClassVar[str] = "answer_given"
    question: str
    value: str
    right: bool
    evidence: str
    by: str = ""
    via: str = "screen"
    """screen (the trainee's), answer (`drillui answer`), trainer."""
    request: str = ""
    """The id of the request that asked for it (`drillui answer` waits for its own)."""
    counted: bool = True
    """False: not an answer (an id too short or ambiguous, not a class): recorded, never scored."""
    after_end: bool = False
    """Given once the run had ended (recorded in `_answers.jsonl`, beside the closed event log)."""


@dataclass(frozen=True, kw_only=True)
class HintGiven(Event):
    """Training: the next hint of the drill's ladder, shown to the trainee."""

    type: ClassVar[str] = "hint_given"
    index: int
    text: str
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class StopRequested(Event):
    type: ClassVar[str] = "stop_requested"
    how: str
    """`key s`, `key q`, `Ctrl+C`, `SIGTERM`, `SIGHUP`, ..."""


@dataclass(frozen=True, kw_only=True)
class RunEnded(Event):
    type: ClassVar[str] = "run_ended"
    state: EndState
    why: str = ""
    verdict: Mapping[str, Any] | None = None
    duration: float = 0.0


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """A line of a type this drillui does not know (a newer record): kept, never interpreted."""

    type: ClassVar[str] = "unknown"
    raw: Mapping[str, Any] = field(default_factory=dict)


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.type: cls
    for cls in (
        RunStarted, PhaseChanged, Said, WorkerStarted, WorkerStopped, TriggersWritten, FaultArmed, FaultNotArmed,
        FaultHeld, FaultReverted, MetricsSampled, MetricsUnreachable, SpansSeen, LogLinesSeen, StatusesPolled, ProbeRecorded,
        GaugesProbed, TracesExported, CleanChecked, RowsSettled, PromqlEvaluated, ChecksChanged, StepChanged, TrainerActed,
        AnswerGiven, HintGiven, StopRequested, RunEnded,
    )
}

OBSERVATIONS: Final = (MetricsSampled, SpansSeen, LogLinesSeen, StatusesPolled, ProbeRecorded, GaugesProbed, CleanChecked,
                       FaultArmed, FaultNotArmed, FaultReverted, TriggersWritten, PromqlEvaluated)
"""Events that can change what a check sees: the checks are evaluated again after each."""

E = TypeVar("E", bound=Event)


# ---- codec --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a metric that is NaN reads as absent
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(event: Event) -> dict[str, Any]:
    """The event as one JSON object: `type` first, then its envelope and its fields."""
    if isinstance(event, UnknownEvent):
        return dict(event.raw)
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        out[f.name] = _jsonable(getattr(event, f.name))
    return out


def _default(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else str(value)


def dumps(event: Event) -> str:
    # Fast path: the fields as they are, encoded by the C encoder (a flood's spans are most of a
    # record: copying them through `_jsonable` first cost more than the encoding). A value JSON
    # cannot hold as it is (NaN, a key that is not a string) takes the exact path.
    if not isinstance(event, UnknownEvent):
        raw: dict[str, Any] = {"type": event.type}
        for f in dataclasses.fields(event):
            raw[f.name] = getattr(event, f.name)
        try:
            return json.dumps(raw, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
        except (ValueError, TypeError):
            pass
    return json.dumps(to_json(event), separators=(",", ":"), ensure_ascii=False, default=str)


_TUPLE_FIELDS: dict[type[Event], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple"))
    for cls in EVENT_TYPES.values()
}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def from_json(data: Mapping[str, Any]) -> Event:
    """An event from its JSON object; an unknown type (or a malformed known one) is kept as
    `UnknownEvent` so one bad line never hides the rest of a record."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    envelope = {k: data[k] for k in ("seq", "t", "wall") if isinstance(data.get(k), (int, float))}
    if cls is None:
        return UnknownEvent(raw=dict(data), **envelope)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    for name in _TUPLE_FIELDS[cls] & kwargs.keys():
        # Inner sequences of a tuple field (metric samples) become tuples too; mappings stay.
        kwargs[name] = tuple(_tuples(v) if isinstance(v, list) else v for v in kwargs[name])
    try:
        return cls(**kwargs)
    except TypeError:
        return UnknownEvent(raw=dict(data), **envelope)


def loads(line: str) -> Event:
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("an event is a JSON object")
    return from_json(data)


SPANS_PER_PART = 200
LINES_PER_PART = 500


def fold_parts(ev: Event) -> list[Event]:
    """`ev` as smaller events that fold into the same state: a poll's spans or log lines in
    parts of at most `SPANS_PER_PART` / `LINES_PER_PART`, each at its own place in the file.

    For a screen that folds events between key presses; what is recorded is `ev` itself.
    """
    if isinstance(ev, SpansSeen) and len(ev.spans) > SPANS_PER_PART:
        n = SPANS_PER_PART
        parts = [replace(ev, spans=ev.spans[i:i + n], omitted=0) for i in range(0, len(ev.spans), n)]
        parts[-1] = replace(parts[-1], omitted=ev.omitted)
        return list(parts)
    if isinstance(ev, LogLinesSeen) and len(ev.lines) > LINES_PER_PART:
        n, out, start = LINES_PER_PART, [], ev.start
        for i in range(0, len(ev.lines), n):
            chunk = ev.lines[i:i + n]
            # Lines are read without their "\n"; the last part ends where the poll ended.
            end = ev.end if i + n >= len(ev.lines) else start + sum(len(x.encode()) + 1 for x in chunk)
            out.append(replace(ev, start=start, end=end, first_line=ev.first_line + i, lines=chunk, omitted=0))
            start = end
        out[-1] = replace(out[-1], omitted=ev.omitted)
        return list(out)
    return [ev]
