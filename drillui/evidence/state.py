"""`RunState`: everything known about one run, folded from its events, one event at a time.

Why this module exists: the runner, the live dashboard, `watch`, `replay` and `verify` must see a
run the same way. Each of them folds the same typed events (`drillui.record.events`) into a
`RunState` with this one `apply`, and reads its panels, its checks and its verdict from it; they
differ only in where the events come from (the runner's callback, a followed file, a recorded
file). Nothing here does I/O, and nothing here knows Textual.

Bounded: the log lines kept for the panel, the spans kept, the ids remembered and the points of
every signal all have a limit; the per-check tallies keep counts, not lines, so a flood of logs
costs memory only up to those limits.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from drillui.evidence.rules import PIVOT_ATTRIBUTES, log_complete, log_matches
from drillui.record.events import (
    AnswerGiven,
    ChecksChanged,
    CleanChecked,
    Event,
    FaultArmed,
    FaultHeld,
    FaultNotArmed,
    FaultReverted,
    GaugesProbed,
    HintGiven,
    LogLinesSeen,
    MetricsSampled,
    MetricsUnreachable,
    PhaseChanged,
    ProbeRecorded,
    PromqlEvaluated,
    RowsSettled,
    RunEnded,
    RunStarted,
    Said,
    SpansSeen,
    StatusesPolled,
    StepChanged,
    StopRequested,
    TracesExported,
    TrainerActed,
    TriggersWritten,
    WorkerStarted,
    WorkerStopped,
)
from drillui.scenarios import Drill, parse_drill
from drillui.sources.logs import LineBuffer, LogRecord, parse_line
from drillui.sources.metrics import MetricsSnapshot, Sample, SeriesKey
from drillui.sources.traces import Span, Trace, span_from_json

# Points kept per signal: at two samples a second, four minutes of drill.
HISTORY_POINTS: Final = 480
LOG_BUFFER_LINES: Final = 50_000
MAX_SPANS: Final = 20_000
MAX_IDS: Final = 10_000
# Log lines remembered for their ids (event -> claim batch, entity), in case a line is read
# before the trigger event it names is announced.
MAX_LINKS: Final = 5000
MAX_TRACE_IDS_PER_CHECK: Final = 2000
NARRATION_LINES: Final = 200
MAX_ANSWERS: Final = 500
PROMQL_KEPT: Final = 100
"""PromQL results remembered per kind (steps and typed queries; checks keep their latest each)."""


# ---- pieces of the state ------------------------------------------------------------------------


@dataclass
class WorkerInfo:
    name: str
    worker_id: str = ""
    pid: int | None = None
    metrics_url: str | None = None
    log_file: str = ""
    alive: bool = False
    exit_code: int | None = None
    how: str = ""


@dataclass
class LogTally:
    """Lines of one log check so far: matching the event and fields, complete (carrying every
    required field), and the complete ones by trace id (bounded) for the trace join."""

    hits: int = 0
    complete: int = 0
    first_ts: float | None = None
    by_trace: dict[str, tuple[int, float | None]] = field(default_factory=dict)

    def add(self, record: LogRecord, complete: bool) -> None:
        self.hits += 1
        if not complete:
            return
        self.complete += 1
        ts = record.timestamp
        t = ts.timestamp() if ts is not None else None
        if t is not None and (self.first_ts is None or t < self.first_ts):
            self.first_ts = t
        tid = record.trace_id
        if tid:
            n, first = self.by_trace.get(tid, (0, None))
            if tid not in self.by_trace and len(self.by_trace) >= MAX_TRACE_IDS_PER_CHECK:
                return
            self.by_trace[tid] = (n + 1, t if first is None or (t is not None and t < first) else first)


class OrderedIds:
    """Ids in the order first seen, with O(1) membership; the oldest dropped past `limit`."""

    def __init__(self, limit: int = MAX_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.limit = limit

    def add(self, value: str | None) -> bool:
        if not value or value in self._ids:
            return False
        self._ids[value] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, value: object) -> bool:
        return value in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def list(self) -> list[str]:
        return list(self._ids)

    def first(self) -> str | None:
        return next(iter(self._ids), None)


class MetricsState:
    """Per worker: the phase scrapes the verdict compares, the latest sample, and the peaks.

    A worker that stops answering keeps its last sample: a killed worker's retries do not vanish
    from the totals. A worker restarted under the same name (drill J's fix, the dead-port method
    of drill A) is a new process whose counters start at 0: its counter-like series continue from
    its predecessor's last values, so an increase since the "before" scrape keeps what the first
    process counted.
    """

    def __init__(self, peak_selectors: Iterable[str] = (), history: int = HISTORY_POINTS) -> None:
        self.phases: dict[str, dict[str, MetricsSnapshot]] = {}
        self.latest: dict[str, MetricsSnapshot] = {}
        self.unreachable: dict[str, str] = {}
        self.samples = 0
        self.history = history
        self.points: dict[str, deque[tuple[float, float]]] = {}
        """Signal key -> (unix time, value) after each sample (filled by `signals`)."""
        self.peak_selectors = list(dict.fromkeys(peak_selectors))
        self.peaks: dict[str, tuple[float, float, str]] = {}
        """selector -> (highest value any worker reported, when, which worker)."""
        self.peak_samples: dict[str, int] = {}
        self.drill_points: dict[str, deque[tuple[float, float]]] = {}
        """Drill signal row -> (unix time, value) after each sample (filled by `signals`)."""
        self.drill_peaks: dict[str, float] = {}
        self._carry: dict[str, dict[SeriesKey, Sample]] = {}
        """Worker -> counter-like series of its earlier processes: their last value, added on."""
        self._restarted: set[str] = set()

    def restarted(self, worker: str) -> None:
        """A new process for `worker`: its next sample starts its counters from 0."""
        if worker in self.latest:
            self._restarted.add(worker)

    def add(self, ev: MetricsSampled) -> MetricsSnapshot:
        samples = tuple(Sample(str(n), dict(labels), _num(v), str(kind)) for n, labels, v, kind in ev.samples)
        if ev.worker in self._restarted:
            self._restarted.discard(ev.worker)
            self._carry[ev.worker] = {s.key: s for s in self.latest[ev.worker].samples if s.cumulative}
        carry = self._carry.get(ev.worker)
        if carry:
            samples = tuple(replace(s, value=s.value + carry[s.key].value) if s.key in carry and s.cumulative else s
                            for s in samples)
            if ev.full:
                # A series the new process has not created yet still holds what the old one counted.
                present = {s.key for s in samples}
                samples = (*samples, *(c for k, c in carry.items() if k not in present))
        if ev.full or ev.worker not in self.latest:
            snap = MetricsSnapshot("", ev.taken_at, samples)
        else:
            changed = {s.key: s for s in samples}
            merged = [changed.pop(s.key, s) for s in self.latest[ev.worker].samples]
            snap = MetricsSnapshot("", ev.taken_at, (*merged, *changed.values()))
        if ev.phase != "live":
            self.phases.setdefault(ev.phase, {})[ev.worker] = snap
        # Deltas are taken against the worker's previous sample, whatever its phase.
        self.latest[ev.worker] = snap
        self.unreachable.pop(ev.worker, None)
        self.samples += 1
        for sel in self.peak_selectors:
            v = snap.value(sel)
            self.peak_samples[sel] = self.peak_samples.get(sel, 0) + 1
            if sel not in self.peaks or v > self.peaks[sel][0]:
                self.peaks[sel] = (v, snap.taken_at, ev.worker)
        return snap

    def phase(self, name: str) -> dict[str, MetricsSnapshot]:
        return self.phases.get(name, {})

    def baseline(self, worker: str) -> MetricsSnapshot:
        """The worker's "before" scrape; a worker started after it counts from zero."""
        return self.phase("before").get(worker) or MetricsSnapshot.empty(taken_at=0.0)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class SpanPool:
    """Every span the run recorded, once each, with an index by the pivot attributes.

    A trace query returns whole traces where one span has the operation and the attribute: the
    index answers exactly that (operation, attribute, value) -> trace ids.
    """

    def __init__(self, limit: int = MAX_SPANS) -> None:
        self.limit = limit
        self.spans: OrderedDict[tuple[str, str], Span] = OrderedDict()
        self.by_trace: dict[str, dict[str, Span]] = {}
        self.started: dict[str, int] = {}
        """trace id -> its earliest span's start: the newest traces without sorting them all."""
        self.index: dict[tuple[str, str, str], set[str]] = {}
        self.dropped = 0
        self.omitted = 0

    def __len__(self) -> int:
        return len(self.spans)

    def add(self, span: Span) -> bool:
        key = (span.trace_id, span.span_id)
        if key in self.spans:
            return False
        self.spans[key] = span
        self.by_trace.setdefault(span.trace_id, {})[span.span_id] = span
        start = self.started.get(span.trace_id)
        if start is None or span.start_unix_nano < start:
            self.started[span.trace_id] = span.start_unix_nano
        for attr in PIVOT_ATTRIBUTES.values():
            v = span.attributes.get(attr)
            if v is not None:
                self.index.setdefault((span.operation, attr, str(v)), set()).add(span.trace_id)
        while len(self.spans) > self.limit:
            (tid, sid), old = self.spans.popitem(last=False)
            self.dropped += 1
            self.by_trace.get(tid, {}).pop(sid, None)
            if not self.by_trace.get(tid):
                self.by_trace.pop(tid, None)
                self.started.pop(tid, None)
            for attr in PIVOT_ATTRIBUTES.values():
                v = old.attributes.get(attr)
                if v is not None and tid not in self.by_trace:
                    self.index.get((old.operation, attr, str(v)), set()).discard(tid)
        return True

    def traces_with(self, operation: str, attribute: str, value: str) -> set[str]:
        return set(self.index.get((operation, attribute, value), ()))

    def trace(self, trace_id: str) -> Trace | None:
        spans = self.by_trace.get(trace_id)
        if not spans:
            return None
        return Trace(trace_id, sorted(spans.values(), key=lambda s: s.start_unix_nano))

    def latest(self, n: int) -> list[Trace]:
        """The `n` newest traces, newest first (what a table of `n` rows can show)."""
        import heapq

        ids = heapq.nlargest(n, self.by_trace, key=lambda tid: self.started.get(tid, 0))
        return [t for t in (self.trace(tid) for tid in ids) if t is not None]

    def traces(self, trace_ids: Iterable[str] | None = None) -> list[Trace]:
        ids = self.by_trace.keys() if trace_ids is None else trace_ids
        out = [t for t in (self.trace(tid) for tid in ids) if t is not None]
        return sorted(out, key=lambda t: min(s.start_unix_nano for s in t.spans), reverse=True)


# ---- the state ----------------------------------------------------------------------------------


class RunState:
    """Everything known about one run, folded from its events."""

    def __init__(self, drill: Drill | None = None, *, log_lines: int = LOG_BUFFER_LINES, max_spans: int = MAX_SPANS,
                 history: int = HISTORY_POINTS) -> None:
        self._log_lines = log_lines
        self._history = history
        self.spans = SpanPool(max_spans)
        self.events_applied = 0
        self.last_t = 0.0
        self.last_wall: float | None = None
        # the run
        self.run_id: str | None = None
        self.scenario: str | None = None
        self.snapshot: str | None = None
        self.mode = "bounded"
        self.parameters: dict[str, Any] = {}
        self.started_wall: float | None = None
        self.phase = "idle"
        self.message = ""
        self.narration: deque[tuple[float, str]] = deque(maxlen=NARRATION_LINES)
        self.workers: dict[str, WorkerInfo] = {}
        # the fault
        self.armed_at: float | None = None
        self.fault_evidence: str | None = None
        self.fault_not_armed: str | None = None
        self.held = False
        self.hold_until: float | None = None
        self.reverted_at: float | None = None
        self.revert_evidence: str | None = None
        self.still_armed = False
        # ids
        self.outbox_event_ids = OrderedIds()
        self.entity_ids = OrderedIds()
        self.claim_batch_ids = OrderedIds()
        self.obs_schemas = OrderedIds(limit=16)
        """The observability schemas the run's workers said at start (`obs.schema` lines)."""
        self.trigger_ops: dict[str, str] = {}
        self.triggered_at: float | None = None
        self._links: deque[tuple[frozenset[str], str | None, str | None]] = deque(maxlen=MAX_LINKS)
        # observations
        self.logs = LineBuffer(log_lines)
        """The last lines of every worker as written (the logs panel; filters run over all of it)."""
        self.log_lines_total = 0
        self.log_lines_omitted = 0
        self.log_tallies: list[LogTally] = []
        self.statuses: dict[str, int] = {}
        self.probes: dict[str, Any] = {}
        self.gauges: GaugesProbed | None = None
        self.exports: list[TracesExported] = []
        self.clean: CleanChecked | None = None
        self.rows_settled: RowsSettled | None = None
        self.promql: OrderedDict[tuple[str, str], PromqlEvaluated] = OrderedDict()
        """The latest result of each step (`("step", index)`) and typed query (`("prompt", query)`),
        oldest first, bounded; `promql_last` is the newest of them (what the panel shows)."""
        self.promql_last: PromqlEvaluated | None = None
        self.promql_checks: dict[str, PromqlEvaluated] = {}
        """Check id -> the runner's latest evaluation of that PromQL check."""
        # the checklist, the trainer, the end
        self.checks: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self.check_ticks: list[tuple[float, str, str]] = []
        """(wall, check id, new state) each time a check changed state: the replay timeline."""
        self.step = 0
        self.actions: deque[TrainerActed] = deque(maxlen=200)
        self.answers: list[AnswerGiven] = []
        self.hints: list[HintGiven] = []
        self.trainee: str | None = None
        self.last_seq = 0
        self.stop: StopRequested | None = None
        self.ended: RunEnded | None = None
        self.drill: Drill | None = None
        self.metrics = MetricsState()
        if drill is not None:
            self._set_drill(drill)

    def _set_drill(self, drill: Drill) -> None:
        self.drill = drill
        self.metrics = MetricsState([m.selector for m in drill.expect.metrics if m.over == "peak"], self._history)
        self.log_tallies = [LogTally() for _ in drill.expect.logs]

    # ---- derived --------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.ended is not None

    @property
    def end_state(self) -> str | None:
        return self.ended.state if self.ended is not None else None

    @property
    def verdict(self) -> Mapping[str, Any] | None:
        return self.ended.verdict if self.ended is not None else None

    @property
    def alive(self) -> int:
        return sum(w.alive for w in self.workers.values())

    @property
    def elapsed(self) -> float:
        return self.last_t

    def pivots(self, by: str) -> list[str]:
        if by == "outbox_event_id":
            return self.outbox_event_ids.list()
        if by == "claim_batch_id":
            return self.claim_batch_ids.list()
        if by == "entity_id":
            return self.entity_ids.list()
        if by == "obs_schema":
            from worker.contract import OBS_SCHEMA

            # The schemas the workers said they speak: a stale worker's spans are found by its own.
            return (self.obs_schemas.list() or [OBS_SCHEMA]) if self.armed_at is not None else []
        return []

    def since_armed(self, wall: float | None) -> float | None:
        if wall is None or self.armed_at is None:
            return None
        return wall - self.armed_at

    # ---- the fold -------------------------------------------------------------------------------

    def apply_all(self, events: Iterable[Event]) -> RunState:
        for ev in events:
            self.apply(ev)
        return self

    def apply(self, ev: Event) -> None:
        self.events_applied += 1
        self.last_seq = max(self.last_seq, ev.seq)
        self.last_t = max(self.last_t, ev.t)
        self.last_wall = ev.wall or self.last_wall
        match ev:
            case RunStarted():
                self.run_id, self.scenario, self.snapshot = ev.run_id, ev.scenario, ev.snapshot
                self.mode, self.parameters, self.started_wall = ev.mode, dict(ev.parameters), ev.wall
                self.trainee = str(ev.parameters.get("trainee")) if ev.parameters.get("trainee") else None
                self.phase = "preparing"
                if self.drill is None and ev.drill:
                    self._set_drill(parse_drill(dict(ev.drill)))
            case PhaseChanged():
                self.phase = ev.phase
                if ev.message:
                    self._say(ev.wall, ev.message)
            case Said():
                self._say(ev.wall, ev.message)
            case WorkerStarted():
                self.metrics.restarted(ev.name)
                self.workers[ev.name] = WorkerInfo(ev.name, ev.worker_id, ev.pid, ev.metrics_url, ev.log_file, True)
            case WorkerStopped():
                info = self.workers.setdefault(ev.name, WorkerInfo(ev.name, ev.worker_id))
                info.alive, info.exit_code, info.how = False, ev.exit_code, ev.how
            case TriggersWritten():
                self._triggers(ev)
            case FaultArmed():
                self.armed_at, self.fault_evidence = ev.wall, ev.evidence
                self.phase = "armed"
            case FaultNotArmed():
                self.fault_not_armed = ev.evidence
            case FaultHeld():
                self.held, self.hold_until = True, ev.until
            case FaultReverted():
                self.held = False
                self.reverted_at, self.revert_evidence, self.still_armed = ev.wall, ev.evidence, ev.still_armed
            case MetricsSampled():
                self.metrics.add(ev)
                from drillui.evidence.signals import record_drill_points, record_points

                record_points(self)
                record_drill_points(self)
            case MetricsUnreachable():
                self.metrics.unreachable[ev.worker] = ev.error
            case SpansSeen():
                for d in ev.spans:
                    self.spans.add(span_from_json(d))
                self.spans.omitted += ev.omitted
            case LogLinesSeen():
                self._log_lines_seen(ev)
            case StatusesPolled():
                self.statuses = dict(ev.statuses)
            case ProbeRecorded():
                self.probes[ev.name] = ev.value
            case GaugesProbed():
                self.gauges = ev
                from drillui.evidence.signals import record_points

                record_points(self)
            case TracesExported():
                self.exports.append(ev)
            case CleanChecked():
                self.clean = ev
            case RowsSettled():
                self.rows_settled = ev
            case PromqlEvaluated():
                self._promql(ev)
            case ChecksChanged():
                for c in ev.checks:
                    cid = str(c.get("id"))
                    old = self.checks.get(cid)
                    self.checks[cid] = c
                    if old is None or old.get("state") != c.get("state"):
                        self.check_ticks.append((ev.wall, cid, str(c.get("state"))))
            case StepChanged():
                self.step = ev.index
            case TrainerActed():
                self.actions.append(ev)
            case AnswerGiven():
                if len(self.answers) < MAX_ANSWERS:
                    self.answers.append(ev)
            case HintGiven():
                self.hints.append(ev)
            case StopRequested():
                self.stop = ev
            case RunEnded():
                self.ended = ev
                self.phase = "ended"
                for w in self.workers.values():
                    w.alive = False
            case _:
                pass  # an UnknownEvent from a newer drillui: nothing this one can show

    def _promql(self, ev: PromqlEvaluated) -> None:
        if ev.purpose == "check":
            if ev.check:
                self.promql_checks[ev.check] = ev
            return
        key = (ev.purpose, str(ev.step_index) if ev.purpose == "step" else " ".join(ev.query.split()))
        self.promql.pop(key, None)
        self.promql[key] = ev
        while len(self.promql) > PROMQL_KEPT:
            self.promql.popitem(last=False)
        self.promql_last = ev

    def promql_result(self, *, step: int | None = None, query: str | None = None) -> PromqlEvaluated | None:
        """The recorded result of a trainer step, or of a query as typed (spaces normalised)."""
        if step is not None:
            return self.promql.get(("step", str(step)))
        if query is not None:
            wanted = " ".join(query.split())
            return self.promql.get(("prompt", wanted)) or next(
                (ev for ev in reversed(self.promql.values()) if " ".join(ev.query.split()) == wanted), None)
        return None

    def _say(self, wall: float, message: str) -> None:
        self.message = message
        self.narration.append((wall, message))

    def _triggers(self, ev: TriggersWritten) -> None:
        new: list[str] = []
        for t in ev.events:
            eid = str(t.get("outbox_event_id") or "")
            if self.outbox_event_ids.add(eid or None):
                new.append(eid)
                self.trigger_ops[eid] = str(t.get("op", ""))
            self.entity_ids.add(str(t.get("entity_id") or "") or None)
        if self.triggered_at is None and ev.events:
            self.triggered_at = ev.wall
        if new:
            fresh = set(new)
            for events, batch, entity in self._links:
                if not events.isdisjoint(fresh):
                    self.claim_batch_ids.add(batch)
                    self.entity_ids.add(entity)

    def _log_lines_seen(self, ev: LogLinesSeen) -> None:
        self.log_lines_total += len(ev.lines) + ev.omitted
        self.log_lines_omitted += ev.omitted
        drill = self.drill
        for i, line in enumerate(ev.lines):
            if not line.strip():
                continue  # an empty line carries nothing; its number still counts
            rec = parse_line(line, source=ev.worker, line_no=ev.first_line + i)
            self.logs.append(ev.worker, rec.line_no, line)
            if rec.is_raw:
                continue
            if rec.event == "obs.schema" and rec.obs_schema:
                self.obs_schemas.add(rec.obs_schema)
            carried = rec.fields.get("outbox_event_ids")
            events = frozenset(str(e) for e in carried) if isinstance(carried, list) else frozenset()
            if rec.outbox_event_id:
                events |= {rec.outbox_event_id}
            if events and (rec.claim_batch_id or rec.entity_id):
                self._links.append((events, rec.claim_batch_id, rec.entity_id))
                if any(e in self.outbox_event_ids for e in events):
                    self.claim_batch_ids.add(rec.claim_batch_id)
                    self.entity_ids.add(rec.entity_id)
            if drill is not None:
                for check, tally in zip(drill.expect.logs, self.log_tallies, strict=True):
                    if log_matches(check, rec.fields):
                        tally.add(rec, log_complete(check, rec))
