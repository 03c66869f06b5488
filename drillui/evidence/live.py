"""Live evidence: the checklist that ticks while a drill runs, and the runbook's four main signals.

Why this module exists: the verdict (`verdict.py`) is computed once, from the snapshot files, after
the run. A trainer wants more than that on the shared screen: each expected signal ticking the
moment it appears, with how long after the fault was armed it showed up and the query that found
it. `LiveRun` applies the drill's expectations to what the dashboard sees while the drill runs
(the runner's progress events, the live scrapes of each worker's `/metrics`, the tailed logs, the
trace queries by the run's ids) with the same rules as the verdict. It never decides anything:
when the run ends the dashboard replaces these live ticks with the Verdict's checks, which are the
authoritative result.

Headless (never imports textual) and single-threaded by design: the dashboard's thread workers
fetch, and its UI thread is the only caller, so nothing here needs a lock. Every buffer is bounded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, Final, Literal

from drillui.evidence.verdict import CheckResult, trace_check_name
from drillui.evidence.verdict import (
    _span_matches as span_matches,  # the verdict's own rule, on purpose
)
from drillui.scenarios import DbCheck, Drill, LogCheck, MetricCheck, TraceCheck
from drillui.sources.logs import LogRecord
from drillui.sources.metrics import MetricsSnapshot, delta
from drillui.sources.traces import Span
from worker.contract import OBS_SCHEMA

__all__ = [
    "SIGNALS",
    "LiveCheck",
    "LiveMetrics",
    "LiveRun",
    "Signal",
    "SignalView",
    "TraceQuery",
    "WorkerInfo",
]

# Points kept per signal: at one scrape every 0.5 s, four minutes of drill.
HISTORY_POINTS: Final = 480
# Pivot values queried per trace check, as the runner does (MAX_PIVOTS): a drill with a hundred
# events must not turn each poll into a hundred trace queries.
MAX_PIVOTS: Final = 5
# Ids remembered from the logs (claim batches, entities); older ones are dropped first.
MAX_IDS: Final = 200
# Log lines remembered for their ids (event -> claim batch, entity), in case they are read before
# the progress event that names the run's events.
MAX_LINKS: Final = 5000
# Spans kept per trace check (the oldest dropped first), and trigger event ids remembered.
MAX_SPANS_PER_CHECK: Final = 5000
MAX_EVENT_IDS: Final = 10_000
# Distinct trace ids remembered per log check, for the `joined_on_trace` rule.
MAX_TRACE_IDS_PER_CHECK: Final = 2000

CheckState = Literal["waiting", "seen", "holding", "broken", "at_end", "passed", "failed"]
"""waiting: not observed yet; seen: observed live; holding: a "stays flat" expectation true so
far; broken: such an expectation already violated; at_end: only the final verdict can tell;
passed / failed: the verdict's result."""


# ---- the four main signals (runbook 2.1) -------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    key: str
    group: str
    label: str
    metric: str
    kind: Literal["counter", "gauge"]
    promql: str
    by_reason: bool = False
    unit: str = ""


SIGNALS: Final[tuple[Signal, ...]] = (
    Signal("retry", "Retry", "retry", "outbox_retry_scheduled_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component="worker"}[1m]))', True),
    Signal("failed", "Failed", "failed", "outbox_failed_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_failed_total{component="worker"}[1m]))', True),
    Signal("terminal", "Failed", "terminal", "outbox_terminal_failed_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_terminal_failed_total{component="worker"}[1m]))', True),
    Signal("lag", "Lag/Age", "lag", "outbox_lag_events", "gauge",
           'max by (env, projection) (outbox_lag_events{component="worker"})'),
    Signal("age", "Lag/Age", "oldest age", "outbox_oldest_age_seconds", "gauge",
           'max by (env, projection) (outbox_oldest_age_seconds{component="worker"})', unit="s"),
    Signal("stuck", "Stuck", "stuck", "outbox_stuck_processing_events", "gauge",
           'max by (env, projection) (outbox_stuck_processing_events{component="worker"})'),
)


@dataclass(frozen=True)
class SignalView:
    """What the signals panel draws for one signal."""

    signal: Signal
    points: list[tuple[float, float]]
    """(unix time, value): per-scrape increase for counters, the value for gauges."""
    value: float | None
    change: float | None
    by_reason: list[tuple[str, float]]
    """(reason, change since the drill started), largest first; only reasons that moved."""


class LiveMetrics:
    """The latest scrape of each worker, its baseline, and a bounded history per signal.

    A worker's baseline is its first scrape when that came before the fault was armed, and an
    empty scrape otherwise (a worker started later counts from zero), which is what the verdict
    does with the runner's "before" scrapes. A worker that stops answering keeps its last scrape:
    a killed worker's retries do not vanish from the totals.
    """

    def __init__(self, maxlen: int = HISTORY_POINTS) -> None:
        self.baseline: dict[str, MetricsSnapshot] = {}
        self.latest: dict[str, MetricsSnapshot] = {}
        self.unreachable: dict[str, str] = {}
        self.scrapes = 0
        self._points: dict[str, deque[tuple[float, float]]] = {s.key: deque(maxlen=maxlen) for s in SIGNALS}
        self._peaks: dict[str, tuple[float, float, str]] = {}
        self._peak_selectors: set[str] = set()

    def track_peak(self, selector: str) -> None:
        self._peak_selectors.add(selector)

    def add(self, taken_at: float, scrapes: Mapping[str, MetricsSnapshot], errors: Mapping[str, str],
            armed_at: float | None) -> None:
        for worker, snap in scrapes.items():
            if worker not in self.baseline:
                before_fault = armed_at is None or snap.taken_at <= armed_at
                self.baseline[worker] = snap if before_fault else MetricsSnapshot.empty(taken_at=snap.taken_at)
            self.latest[worker] = snap
            self.unreachable.pop(worker, None)
            for sel in self._peak_selectors:
                v = snap.value(sel)
                if sel not in self._peaks or v > self._peaks[sel][0]:
                    self._peaks[sel] = (v, snap.taken_at, worker)
        self.unreachable.update(errors)
        if not scrapes:
            return
        self.scrapes += 1
        for sig in SIGNALS:
            self._points[sig.key].append((taken_at, self.current(sig)))

    def current(self, signal: Signal) -> float:
        """Counters summed over workers; gauges (database-wide numbers each worker reports) as
        their maximum, like the runbook's `max by (...)` panels."""
        values = [snap.value(signal.metric) for snap in self.latest.values()]
        if not values:
            return 0.0
        return math.fsum(values) if signal.kind == "counter" else max(values)

    def change(self, selector: str) -> float | None:
        """The verdict's rule: the change of `selector` summed over workers; None before a scrape."""
        if not self.latest:
            return None
        return math.fsum(
            delta(self.baseline.get(w, MetricsSnapshot.empty(taken_at=0.0)), snap, selector) for w, snap in self.latest.items()
        )

    def peak(self, selector: str) -> tuple[float, float, str] | None:
        """(highest value any worker reported, when, which worker)."""
        return self._peaks.get(selector)

    def signal_view(self, signal: Signal) -> SignalView:
        raw = list(self._points[signal.key])
        if signal.kind == "counter":
            # Increase per scrape: a bar appears while the counter grows (a drop is a restart).
            points = [(t1, (v1 if v1 < v0 else v1 - v0)) for (_, v0), (t1, v1) in pairwise(raw)]
            if raw:
                points.insert(0, (raw[0][0], 0.0))
        else:
            points = raw
        if not self.latest:
            return SignalView(signal, points, None, None, [])
        value = self.current(signal)
        if signal.kind == "counter":
            change = self.change(signal.metric)
        else:
            base = [self.baseline[w].value(signal.metric) for w in self.latest if w in self.baseline]
            change = value - (max(base) if base else 0.0)
        reasons: list[tuple[str, float]] = []
        if signal.by_reason:
            seen = {s.labels.get("reason", "") for snap in self.latest.values() for s in snap.series(signal.metric)}
            for reason in sorted(r for r in seen if r):
                moved = self.change(f'{signal.metric}{{reason="{reason}"}}') or 0.0
                if moved:
                    reasons.append((reason, moved))
            reasons.sort(key=lambda rc: (-abs(rc[1]), rc[0]))
        return SignalView(signal, points, value, change, reasons)


# ---- live checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveCheck:
    id: str
    kind: str
    description: str
    expected: str
    observed: str
    state: CheckState
    query: str = ""
    first_seen_seconds: float | None = None
    """Seconds after the fault was armed when the evidence first appeared (negative: before)."""

    @property
    def done(self) -> bool:
        return self.state in ("seen", "passed")

    @classmethod
    def from_result(cls, c: CheckResult | Mapping[str, Any]) -> LiveCheck:
        d = c if isinstance(c, Mapping) else c.__dict__
        return cls(
            id=str(d["id"]), kind=str(d["kind"]), description=str(d["description"]), expected=str(d["expected"]),
            observed=str(d["observed"]), state="passed" if d["passed"] else "failed", query=str(d.get("query") or ""),
            first_seen_seconds=d.get("first_seen_seconds"),
        )


@dataclass(frozen=True)
class TraceQuery:
    """One trace search by one of the two pivots: an operation and one id attribute."""

    operation: str
    attribute: str
    value: str

    @property
    def tags(self) -> dict[str, str]:
        return {self.attribute: self.value}

    def __str__(self) -> str:
        return f'operation={self.operation} tags={{"{self.attribute}":"{self.value}"}}'


@dataclass
class WorkerInfo:
    name: str
    worker_id: str = ""
    pid: int | None = None
    metrics_url: str | None = None
    log_path: str | None = None


def _s(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _bounded_append(items: list[str], value: str, limit: int = MAX_IDS) -> None:
    if value and value not in items:
        items.append(value)
        if len(items) > limit:
            del items[0]


@dataclass
class _LogTally:
    """Matching lines of one log check so far, by trace id (bounded), for `joined_on_trace`."""

    total: int = 0
    first_ts: float | None = None
    by_trace: dict[str, tuple[int, float | None]] = field(default_factory=dict)

    def add(self, trace_id: str | None, ts: float | None) -> None:
        self.total += 1
        if ts is not None and (self.first_ts is None or ts < self.first_ts):
            self.first_ts = ts
        if trace_id:
            n, first = self.by_trace.get(trace_id, (0, None))
            if trace_id not in self.by_trace and len(self.by_trace) >= MAX_TRACE_IDS_PER_CHECK:
                return
            self.by_trace[trace_id] = (n + 1, ts if first is None else first)


class LiveRun:
    """Everything the dashboard knows about the drill being run, fed by progress events, scrapes,
    log records and trace results, and read by its panels."""

    def __init__(self, drill: Drill, *, history: int = HISTORY_POINTS) -> None:
        self.drill = drill
        self.phase = "idle"
        self.message = ""
        self.elapsed = 0.0
        self.snapshot: str | None = None
        self.armed_at: float | None = None
        self.reverted_at: float | None = None
        self.workers: dict[str, WorkerInfo] = {}
        self.alive: int | None = None
        self.statuses: dict[str, int] = {}
        self.outbox_event_ids: list[str] = []
        self.entity_ids: list[str] = []
        self.claim_batch_ids: list[str] = []
        self.verdict: dict[str, Any] | None = None
        self.fault_evidence: str | None = None
        self.fault_not_armed: str | None = None
        self.finished = False
        self.metrics = LiveMetrics(history)
        for mc in drill.expect.metrics:
            if getattr(mc, "over", "delta") == "peak":
                self.metrics.track_peak(mc.selector)
        self._log_tallies = [_LogTally() for _ in drill.expect.logs]
        self._trace_spans: list[dict[str, Span]] = [{} for _ in drill.expect.traces]
        self._first_seen: dict[str, float] = {}
        self._broken_at: dict[str, float] = {}
        self._links: deque[tuple[frozenset[str], str | None, str | None]] = deque(maxlen=MAX_LINKS)
        self._event_ids: set[str] = set()

    # ---- inputs ------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self.snapshot.rstrip("/").rsplit("/", 1)[-1] if self.snapshot else None

    def apply(self, phase: str, message: str, elapsed: float, data: Mapping[str, Any]) -> None:
        """One runner `Progress` event (its fields, so this module needs no runner import)."""
        self.phase, self.message, self.elapsed = phase, message, elapsed
        if "snapshot" in data:
            self.snapshot = str(data["snapshot"])
        if "worker" in data:
            info = self.workers.setdefault(str(data["worker"]), WorkerInfo(str(data["worker"])))
            info.worker_id = str(data.get("worker_id") or info.worker_id)
            info.pid = data.get("pid", info.pid)
            info.metrics_url = data.get("metrics_url") or info.metrics_url
            info.log_path = data.get("log_path") or info.log_path
        if "armed_at" in data:
            self.armed_at = float(data["armed_at"])
            self.fault_evidence = message
        if phase == "failed" and "NOT ARMED" in message:
            self.fault_not_armed = message
        if "reverted_at" in data:
            self.reverted_at = float(data["reverted_at"])
        # The runner repeats the whole list with each new event: only the new ones cost anything.
        new_ids = [str(e) for e in data.get("outbox_event_ids") or [] if str(e) not in self._event_ids]
        for eid in new_ids[: max(0, MAX_EVENT_IDS - len(self.outbox_event_ids))]:
            self.outbox_event_ids.append(eid)
            self._event_ids.add(eid)
        if new_ids:
            for events, batch, entity in self._links:
                if not events.isdisjoint(new_ids):
                    self._link(batch, entity)
        for ent in data.get("entity_ids") or []:
            _bounded_append(self.entity_ids, str(ent))
        if isinstance(data.get("statuses"), Mapping):
            self.statuses = {str(k): int(v) for k, v in data["statuses"].items()}
        if "alive" in data:
            self.alive = int(data["alive"])
        if isinstance(data.get("verdict"), Mapping):
            self.verdict = dict(data["verdict"])
            self.finished = True

    def end(self) -> None:
        """The runner returned or raised: no worker is left running."""
        self.finished = True
        self.alive = 0

    def add_scrapes(self, taken_at: float, scrapes: Mapping[str, MetricsSnapshot], errors: Mapping[str, str]) -> None:
        self.metrics.add(taken_at, scrapes, errors, self.armed_at)
        for i, mc in enumerate(self.drill.expect.metrics):
            self._metric_state(i, mc)  # records first-seen times as they happen

    def add_logs(self, records: Iterable[LogRecord]) -> None:
        wanted = self._event_ids
        for rec in records:
            if rec.is_raw:
                continue
            carried = rec.fields.get("outbox_event_ids")
            events = frozenset(str(e) for e in carried) if isinstance(carried, list) else frozenset()
            if rec.outbox_event_id:
                events |= {rec.outbox_event_id}
            if events and (rec.claim_batch_id or rec.entity_id):
                self._links.append((events, rec.claim_batch_id, rec.entity_id))
                if not events.isdisjoint(wanted):
                    self._link(rec.claim_batch_id, rec.entity_id)
            for check, tally in zip(self.drill.expect.logs, self._log_tallies, strict=True):
                if self._log_matches(check, rec):
                    ts = rec.timestamp
                    tally.add(rec.trace_id, ts.timestamp() if ts is not None else None)

    def _link(self, batch: str | None, entity: str | None) -> None:
        if batch:
            _bounded_append(self.claim_batch_ids, batch)
        if entity:
            _bounded_append(self.entity_ids, entity)

    def add_trace_results(self, results: Mapping[TraceQuery, Sequence[Span]]) -> None:
        """Spans each query returned (whole traces); kept per check when the check asked it."""
        for i, check in enumerate(self.drill.expect.traces):
            kept = self._trace_spans[i]
            for q in self.trace_queries_for(check):
                for span in results.get(q, ()):
                    kept[span.span_id] = span
            while len(kept) > MAX_SPANS_PER_CHECK:
                del kept[next(iter(kept))]

    # ---- derived: ids and queries -----------------------------------------------------------

    def pivots(self, by: str) -> list[str]:
        return {
            "outbox_event_id": self.outbox_event_ids,
            "claim_batch_id": self.claim_batch_ids,
            "entity_id": self.entity_ids,
            "obs_schema": [OBS_SCHEMA] if self.armed_at is not None else [],
        }.get(by, [])

    def trace_queries_for(self, check: TraceCheck) -> list[TraceQuery]:
        values = self.pivots(check.by)
        which = getattr(check, "which", "all")
        if which == "first":
            values = values[:1]
        elif which == "last":
            values = values[-1:]
        return [TraceQuery(check.operation, f"wordloom.{check.by}", v) for v in values[:MAX_PIVOTS]]

    def trace_queries(self) -> list[TraceQuery]:
        """What the checklist needs asked now, plus the two runbook pivots of the drill's events."""
        out: list[TraceQuery] = []
        for check in self.drill.expect.traces:
            out.extend(self.trace_queries_for(check))
        out.extend(TraceQuery("outbox.process", "wordloom.outbox_event_id", v) for v in self.outbox_event_ids[:MAX_PIVOTS])
        out.extend(TraceQuery("projection.process_batch", "wordloom.claim_batch_id", v) for v in self.claim_batch_ids[-MAX_PIVOTS:])
        return list(dict.fromkeys(out))

    def found_trace_ids(self) -> set[str]:
        ids: set[str] = set()
        for check, spans in zip(self.drill.expect.traces, self._trace_spans, strict=True):
            ids.update(s.trace_id for s in spans.values() if span_matches(s, check))
        return ids

    # ---- derived: the checklist -------------------------------------------------------------

    def checks(self) -> list[LiveCheck]:
        """The verdict's checks once it exists, else the live view of every expectation, in the
        verdict's order. Live first-seen times fill in where the verdict does not have one."""
        live = self._live_checks()
        if self.verdict is None:
            return live
        seen = {c.id: c.first_seen_seconds for c in live if c.first_seen_seconds is not None}
        final = [LiveCheck.from_result(c) for c in self.verdict.get("checks", [])]
        return [replace(c, first_seen_seconds=seen[c.id]) if c.first_seen_seconds is None and c.id in seen else c for c in final]

    def _live_checks(self) -> list[LiveCheck]:
        e = self.drill.expect
        out = [self._fault_check()]
        metrics = list(enumerate(e.metrics))
        out += [self._metric_state(i, mc) for i, mc in metrics if getattr(mc, "over", "delta") == "peak" or mc.at == "after"]
        out += [self._metric_state(i, mc) for i, mc in metrics if getattr(mc, "over", "delta") != "peak" and mc.at == "recovered"]
        out += [self._labels_check(label) for label in getattr(e, "forbidden_labels", [])]
        found = self.found_trace_ids()
        out += [self._trace_check(i, tc) for i, tc in enumerate(e.traces)]
        out += [self._log_check(i, lc, found) for i, lc in enumerate(e.logs)]
        out += [self._db_check(dc) for dc in e.db]
        out.append(self._clean_check())
        return out

    def _since_armed(self, t: float | None) -> float | None:
        if t is None or self.armed_at is None:
            return None
        return t - self.armed_at

    def _seen(self, cid: str, t: float | None) -> float | None:
        if cid not in self._first_seen and t is not None:
            since = self._since_armed(t)
            if since is not None:
                self._first_seen[cid] = since
        return self._first_seen.get(cid)

    def _fault_check(self) -> LiveCheck:
        desc = f"fault {self.drill.fault.type} armed before the clock started"
        if self.fault_not_armed:
            return LiveCheck("fault:armed", "fault", desc, "armed", self.fault_not_armed, "broken", self.drill.fault.type)
        if self.armed_at is None:
            return LiveCheck("fault:armed", "fault", desc, "armed", "not armed yet", "waiting", self.drill.fault.type)
        evidence = (self.fault_evidence or "").removeprefix("fault armed: ")
        return LiveCheck("fault:armed", "fault", desc, "armed", evidence, "seen", self.drill.fault.type, 0.0)

    def _metric_state(self, index: int, mc: MetricCheck) -> LiveCheck:
        query = mc.promql or mc.selector
        if getattr(mc, "over", "delta") == "peak":
            cid, desc = f"metric:peak:{mc.selector}", f"peak of {mc.selector} while the drill ran {mc.change}"
            peak = self.metrics.peak(mc.selector)
            value, when = (peak[0], peak[1]) if peak else (None, None)
            observed = "no scrape yet" if peak is None else f"{peak[0]:g} (on {peak[2]})"
        else:
            cid, desc = f"metric:{mc.selector}", f"{mc.selector} changes {mc.change}"
            value = self.metrics.change(mc.selector)
            when = max((s.taken_at for s in self.metrics.latest.values()), default=None)
            observed = "no scrape yet" if value is None else f"{value:+g}"
        if mc.at == "recovered" and getattr(mc, "over", "delta") != "peak":
            desc += " (after recovery)"
        return self._compare_state(cid, "metric", desc, mc.change, observed, query, value, when, mc.compare)

    def _compare_state(self, cid: str, kind: str, desc: str, expected: str, observed: str, query: str,
                       value: float | None, when: float | None, compare: Callable[[float], bool]) -> LiveCheck:
        holds_at_rest = compare(0.0)
        if value is None:
            state: CheckState = "holding" if holds_at_rest and self.armed_at is not None else "waiting"
            return LiveCheck(cid, kind, desc, expected, observed, state, query)
        if holds_at_rest:
            # "Stays flat" expectations cannot be seen appearing: they hold until they break.
            if cid in self._broken_at or not compare(value):
                if cid not in self._broken_at and when is not None:
                    self._broken_at[cid] = when
                return LiveCheck(cid, kind, desc, expected, observed, "broken", query, self._since_armed(self._broken_at.get(cid)))
            return LiveCheck(cid, kind, desc, expected, observed, "holding", query)
        if compare(value) or cid in self._first_seen:
            return LiveCheck(cid, kind, desc, expected, observed, "seen", query, self._seen(cid, when))
        return LiveCheck(cid, kind, desc, expected, observed, "waiting", query)

    def _labels_check(self, label: str) -> LiveCheck:
        carrying = sorted({s.name for snap in self.metrics.latest.values() for s in snap.samples if label in s.labels})
        desc = f"no metric carries a {label} label"
        if not self.metrics.latest:
            return LiveCheck(f"labels:{label}", "metric", desc, "none", "no scrape yet", "waiting", label)
        state: CheckState = "broken" if carrying else "holding"
        return LiveCheck(f"labels:{label}", "metric", desc, "none", ", ".join(carrying) or "none so far", state, label)

    def _trace_check(self, index: int, tc: TraceCheck) -> LiveCheck:
        attrs = ", ".join(f"{k}={_s(v)}" for k, v in tc.attributes.items())
        cid = f"trace:{trace_check_name(tc)}" + (f"[{attrs}]" if attrs else "")
        desc = f"span {tc.operation} found by {tc.by}" + (f" with {attrs}" if attrs else "")
        spans = list(self._trace_spans[index].values())
        matching = sorted((s for s in spans if span_matches(s, tc)), key=lambda s: s.start_unix_nano)
        expected = f">= {tc.min_spans} span(s)" + (f", <= {tc.max_spans}" if tc.max_spans is not None else "")
        queries = self.trace_queries_for(tc)
        query = str(queries[0]) if queries else f"operation={tc.operation} tags={{\"wordloom.{tc.by}\":\"<id>\"}}"
        observed = f"{len(matching)} matching of {len(spans)} span(s)"
        if matching:
            observed += f"; trace {matching[0].trace_id}"
        n = len(matching)
        first = matching[0].start_unix_nano / 1e9 if matching else None
        if tc.min_spans == 0:
            if tc.max_spans is not None and n > tc.max_spans:
                return LiveCheck(cid, "trace", desc, expected, observed, "broken", query, self._since_armed(first))
            return LiveCheck(cid, "trace", desc, expected, observed, "holding" if queries else "waiting", query)
        if n >= tc.min_spans:
            if tc.max_spans is not None and n > tc.max_spans:
                return LiveCheck(cid, "trace", desc, expected, observed, "broken", query)
            return LiveCheck(cid, "trace", desc, expected, observed, "seen", query, self._seen(cid, first))
        return LiveCheck(cid, "trace", desc, expected, observed, "waiting", query)

    @staticmethod
    def _log_matches(check: LogCheck, rec: LogRecord) -> bool:
        if rec.fields.get("event") != check.event:
            return False
        if not all(_s(rec.fields.get(k)) == _s(v) for k, v in check.fields.items()):
            return False
        return all(k in rec.fields for k in check.require)

    def _log_check(self, index: int, lc: LogCheck, found: set[str]) -> LiveCheck:
        fields = ", ".join(f"{k}={_s(v)}" for k, v in lc.fields.items())
        cid = f"log:{lc.event}" + (f"[{fields}]" if fields else "")
        desc = f"log event {lc.event}" + (f" with {fields}" if fields else "")
        if lc.require:
            desc += f", carrying {', '.join(lc.require)}"
        if lc.joined_on_trace:
            desc += ", joined to a found trace on trace_id"
        tally = self._log_tallies[index]
        if lc.joined_on_trace:
            joined = [v for tid, v in tally.by_trace.items() if tid in found]
            n = sum(c for c, _ in joined)
            first = min((t for _, t in joined if t is not None), default=None)
        else:
            n, first = tally.total, tally.first_ts
        if lc.max_count is None:
            expected = f">= {lc.min_count} line(s)"
        else:
            expected = f"{lc.min_count}..{lc.max_count} line(s)" if lc.min_count else f"<= {lc.max_count} line(s)"
        observed = f"{n} line(s)"
        if lc.joined_on_trace and tally.total != n:
            observed += f" ({tally.total} before the trace join)"
        query = f"event={lc.event}" + "".join(f" {k}={_s(v)}" for k, v in lc.fields.items())

        def compare(v: float) -> bool:
            return v >= lc.min_count and (lc.max_count is None or v <= lc.max_count)

        return self._compare_state(cid, "log", desc, expected, observed, query, float(n), first, compare)

    def _db_check(self, dc: DbCheck) -> LiveCheck:
        cid, desc = f"db:{dc.probe}", f"database probe {dc.probe}"
        if dc.probe == "trigger_status" and isinstance(dc.expect, str) and self.statuses:
            observed = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
            if set(self.statuses) == {dc.expect}:
                return LiveCheck(cid, "db", desc, dc.expect, observed, "seen", "runner status poll",
                                 self._seen(cid, self.reverted_at or self.armed_at))
            return LiveCheck(cid, "db", desc, dc.expect, observed, "waiting", "runner status poll")
        return LiveCheck(cid, "db", desc, _s(dc.expect), "probed at the end of the run", "at_end")

    def _clean_check(self) -> LiveCheck:
        desc = "fault reverted and environment clean"
        if self.reverted_at is not None:
            return LiveCheck("clean:reverted", "clean", desc, "clean", "fault reverted (cleanliness checked at the end)",
                             "seen", self.drill.fault.type, self._since_armed(self.reverted_at))
        return LiveCheck("clean:reverted", "clean", desc, "clean", "not reverted yet", "waiting", self.drill.fault.type)
