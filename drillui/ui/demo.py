"""A recorded drill A run, replayed into the dashboard without any server or clock.

Why: the snapshot tests need the main screens filled with the same data on every machine (fixed
catalog, fixed scrapes, fixed log lines, fixed spans, fixed times), and the pivot tests need a
trace store that answers instantly. `replay` feeds a `DrillScreen` created with `autostart=False`
through the same message handlers a live run uses; `FakeTraceBackend` answers the screen's trace
searches from the recorded spans with the Jaeger matching rule (one span carries every tag).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from drillui.scenarios import Catalog, parse_catalog
from drillui.sources.logs import LogRecord, parse_line
from drillui.sources.metrics import MetricsSnapshot
from drillui.sources.traces import Span, Trace, TraceQueryResult
from drillui.ui.messages import (
    DrillProgressed,
    LogsTailed,
    MetricsSampled,
    RunEnded,
    TracesFetched,
)

if TYPE_CHECKING:
    from drillui.ui.screens.drill import DrillScreen

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the recorded run's start
ARMED = T0 + 0.8
TRIGGERED = ARMED + 0.05
REVERTED = ARMED + 5.0
ATTEMPTS = [ARMED + d for d in (0.1, 0.5, 1.1, 1.9, 3.0, 4.4)]
RECOVERED_AT = REVERTED + 0.15
SCRAPES = [T0 + 0.5 * k for k in range(1, 16)]
RUN_ID = "20270115T080000"
SNAPSHOT = f"snapshots/es_down_connect/{RUN_ID}"
WORKER_ID = f"worker@{RUN_ID}"
EVENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "drillui-demo-event"))
ENTITY_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "drillui-demo-entity"))

CATALOG_YAML = """
version: 1
drills:
  - id: es_down_connect
    letter: A
    runbook: "3.1"
    title: Search engine down / connection refused
    goal: >-
      With the engine unreachable, a delete event forces an engine call: the worker retries with
      backoff (reason es_connect), never fails the event terminally, and finishes it once the
      engine is back.
    fault: {type: engine_unreachable}
    workload: {projection: search_index_to_elastic, op: delete, trigger_count: 1}
    duration: 5
    expect:
      metrics:
        - selector: outbox_retry_scheduled_total{reason="es_connect"}
          change: ">= 1"
          promql: sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component="worker"}[1m]))
        - selector: outbox_terminal_failed_total
          change: "== 0"
        - selector: outbox_processed_total{op="delete"}
          change: ">= 1"
          at: recovered
      traces:
        - operation: projection.process_batch
          by: claim_batch_id
          attributes: {result: retry, reason: es_connect}
        - operation: outbox.process
          by: outbox_event_id
          attributes: {op: delete, result: retry, reason: es_connect}
      logs:
        - event: outbox.retry_scheduled
          fields: {reason: es_connect, op: delete}
          require: [attempt, trace_id, span_id, claim_batch_id]
          joined_on_trace: true
        - event: outbox.failed
          max_count: 0
          min_count: 0
      db:
        - probe: trigger_status
          expect: done
    steps:
      - say: "Watch Retry first: it grows while the engine is down, by reason."
        promql: sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component="worker"}[1m]))
      - say: "Find the batch overview by its claim_batch_id: result=retry, reason=es_connect."
        trace_query: 'operation=projection.process_batch tags={"wordloom.claim_batch_id":"<id>"}'
      - say: "Back to the logs on trace_id: attempt=N, the error summary, the same keys."
    recover: Bring the engine back (the drill does it); the event is retried and done.
  - id: es_429
    letter: B
    runbook: "3.2"
    title: Rate limited (429) by the engine
    goal: The worker's own injection knob answers every 3rd engine call with a 429.
    fault: {type: es_429, every_n: 3}
    workload: {op: upsert, trigger_count: 6}
    duration: 4
    expect:
      metrics:
        - selector: outbox_retry_scheduled_total{reason="es_429"}
          change: ">= 1"
    steps:
      - say: "Retry grows with reason=es_429."
  - id: es_write_block_4xx
    letter: C
    runbook: "3.3"
    title: Deterministic 4xx (write block) goes straight to failed
    goal: With index.blocks.write=true every write is a 403.
    fault: {type: write_block}
    duration: 3
    expect:
      metrics:
        - selector: outbox_terminal_failed_total{reason="es_4xx"}
          change: ">= 1"
"""


def catalog() -> Catalog:
    return parse_catalog(yaml.safe_load(CATALOG_YAML), source="demo catalog")


def _hex(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def batch_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"drillui-demo-batch-{n}"))


def trace_id(n: int) -> str:
    return _hex(f"trace-{n}", 32)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- metrics ------------------------------------------------------------------------------------


def _attempts_before(t: float) -> int:
    return sum(1 for a in ATTEMPTS if a <= t and a < REVERTED)


def metrics_text(t: float) -> str:
    n = _attempts_before(t)
    done = t >= RECOVERED_AT
    pending = 1 if TRIGGERED <= t < RECOVERED_AT else 0
    age = max(0.0, t - TRIGGERED) if pending else 0.0
    lab = 'component="worker",env="drill",op="delete",projection="search_index_to_elastic"'
    lines = [
        "# TYPE outbox_retry_scheduled_total counter",
        f'outbox_retry_scheduled_total{{{lab},reason="es_connect"}} {n}.0',
        f'outbox_retry_scheduled_total{{{lab},reason="es_timeout"}} 0.0',
        "# TYPE outbox_failed_total counter",
        f'outbox_failed_total{{{lab},reason="es_connect"}} {n}.0',
        "# TYPE outbox_terminal_failed_total counter",
        f'outbox_terminal_failed_total{{{lab},reason="es_connect"}} 0.0',
        "# TYPE outbox_processed_total counter",
        f'outbox_processed_total{{{lab},result="noop"}} {1 if done else 0}.0',
        "# TYPE outbox_lag_events gauge",
        f'outbox_lag_events{{component="worker",env="drill",projection="search_index_to_elastic"}} {pending}.0',
        "# TYPE outbox_oldest_age_seconds gauge",
        f'outbox_oldest_age_seconds{{component="worker",env="drill",projection="search_index_to_elastic"}} {age:.3f}',
        "# TYPE outbox_stuck_processing_events gauge",
        'outbox_stuck_processing_events{component="worker",env="drill",projection="search_index_to_elastic"} 0.0',
    ]
    return "\n".join(lines) + "\n"


def scrape(t: float) -> MetricsSnapshot:
    return MetricsSnapshot.parse(metrics_text(t), taken_at=t)


# ---- logs ---------------------------------------------------------------------------------------


def _line(t: float, level: str, event: str, msg: str, **fields: Any) -> dict[str, Any]:
    return {"ts": _iso(t), "level": level, "event": event, "msg": msg, "service": "wordloom-search-outbox-worker",
            "worker_id": WORKER_ID, "env": "drill", "obs_schema": "labs-009-v2", **fields}


def log_lines() -> list[dict[str, Any]]:
    common = {"projection": "search_index_to_elastic", "op": "delete", "outbox_event_id": EVENT_ID, "entity_id": ENTITY_ID}
    lines = [
        _line(T0 + 0.3, "info", "obs.schema", "Observability schema: labs-009-v2"),
        _line(T0 + 0.3, "info", "tracing.config", "tracing enabled: OTLP/HTTP -> http://127.0.0.1:4318/v1/traces"),
        _line(T0 + 0.4, "info", "worker.started", f"worker {WORKER_ID} relaying search_index_to_elastic (batch 10, bulk=False)"),
    ]
    for n, a in enumerate(ATTEMPTS, 1):
        lines.append(_line(a, "info", "outbox.claimed", "claimed 1 event(s)", claim_batch_id=batch_id(n),
                           outbox_event_ids=[EVENT_ID], claimed_count=1, trace_id=trace_id(n), span_id=_hex(f"c{n}", 16)))
        backoff = min(1.5, 0.4 * 2 ** (n - 1))
        lines.append(_line(a + 0.002, "warning", "outbox.retry_scheduled",
                           f"Outbox delete attempt {n} failed (es_connect); retry in {backoff:.2f}s",
                           result="retry", reason="es_connect", attempt=n, error="ConnectError: [Errno 111] Connection refused",
                           error_type="ConnectError", claim_batch_id=batch_id(n), trace_id=trace_id(n),
                           span_id=_hex(f"p{n}", 16), **common))
    last = len(ATTEMPTS) + 1
    lines.append(_line(RECOVERED_AT, "info", "outbox.claimed", "claimed 1 event(s)", claim_batch_id=batch_id(last),
                       outbox_event_ids=[EVENT_ID], claimed_count=1, trace_id=trace_id(last), span_id=_hex(f"c{last}", 16)))
    lines.append(_line(RECOVERED_AT + 0.004, "info", "outbox.idempotent_noop", "doc not found in ES (noop)",
                       result="noop", reason="es_404", attempt=last, claim_batch_id=batch_id(last), trace_id=trace_id(last),
                       span_id=_hex(f"p{last}", 16), **common))
    return lines


def log_records() -> list[LogRecord]:
    return [parse_line(json.dumps(rec), source="worker", line_no=i) for i, rec in enumerate(log_lines(), 1)]


# ---- traces -------------------------------------------------------------------------------------


def _span(tid: str, sid: str, parent: str | None, op: str, start: float, ms: float, attrs: Mapping[str, Any],
          status: str = "UNSET") -> Span:
    return Span(trace_id=tid, span_id=sid, parent_span_id=parent, operation=op, service="wordloom-search-outbox-worker",
                start_unix_nano=int(start * 1e9), duration_ns=int(ms * 1e6), attributes=dict(attrs),
                resource={"service.name": "wordloom-search-outbox-worker"}, status=status,  # type: ignore[arg-type]
                events=[], kind="internal", scope_name="worker")


def traces() -> list[Trace]:
    out: list[Trace] = []
    for n, a in enumerate([*ATTEMPTS, RECOVERED_AT], 1):
        ok = n > len(ATTEMPTS)
        result, reason = ("noop", "es_404") if ok else ("retry", "es_connect")
        tid, batch_sid, event_sid = trace_id(n), _hex(f"b{n}", 16), _hex(f"p{n}", 16)
        common = {"projection": "search_index_to_elastic", "attempt": n, "result": result, "reason": reason,
                  "wordloom.obs_schema": "labs-009-v2"}
        batch = _span(tid, batch_sid, None, "projection.process_batch", a, 2.6 if not ok else 5.9,
                      {**common, "wordloom.claim_batch_id": batch_id(n), "op": "delete", "batch_size": 1,
                       "retry_count": 0 if ok else 1, "noop_count": 1 if ok else 0, "wordloom.worker_id": WORKER_ID})
        event = _span(tid, event_sid, batch_sid, "outbox.process", a + 0.0001, 2.2 if not ok else 5.7,
                      {**common, "wordloom.outbox_event_id": EVENT_ID, "wordloom.entity_id": ENTITY_ID, "op": "delete",
                       "wordloom.claim_batch_id": batch_id(n), "noop": ok, "correlation_id": f"drillui:{RUN_ID}"})
        out.append(Trace(tid, [batch, event]))
    return out


class FakeTraceBackend:
    """Answers trace searches from recorded traces, instantly (the Jaeger rule: one span must
    carry the operation and every tag)."""

    def __init__(self, recorded: list[Trace] | None = None) -> None:
        self.recorded = recorded if recorded is not None else traces()
        self.queries: list[tuple[str, dict[str, str]]] = []

    def find_traces(self, service: str, operation: str, attributes: Mapping[str, str], *, start: datetime,
                    end: datetime, limit: int = 20) -> TraceQueryResult:
        self.queries.append((operation, dict(attributes)))

        def hit(s: Span) -> bool:
            return s.operation == operation and all(_text(s.attributes.get(k)) == v for k, v in attributes.items())

        found = [t for t in self.recorded if any(hit(s) for s in t.spans)][:limit]
        return TraceQueryResult("api_v3", "fake://traces", 200, {}, found)

    def get_trace(self, trace_id: str) -> TraceQueryResult:
        found = [t for t in self.recorded if t.trace_id == trace_id]
        return TraceQueryResult("api_v3", "fake://traces", 200 if found else 404, {}, found)

    def close(self) -> None:
        """Nothing to release."""


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# ---- replay -------------------------------------------------------------------------------------


def progress(until: str = "verified") -> list[DrillProgressed]:
    """The runner's progress events of the recorded run, up to a phase ('running', 'verified')."""
    def p(phase: str, message: str, at: float, **data: Any) -> DrillProgressed:
        return DrillProgressed(phase, message, round(at - T0, 3), data)

    events = [
        p("preparing", f"run {RUN_ID}: evidence in {SNAPSHOT}", T0, snapshot=SNAPSHOT),
        p("starting", "starting worker(s) worker", T0 + 0.1),
        p("starting", "worker worker up (pid 4242, metrics http://127.0.0.1:9464/metrics)", T0 + 0.6, worker="worker",
          worker_id=WORKER_ID, pid=4242, metrics_url="http://127.0.0.1:9464/metrics", log_path=f"{SNAPSHOT}/_logs/worker-{RUN_ID}.log"),
        p("arming", "arming fault engine_unreachable", T0 + 0.7),
        p("armed", "fault armed: GET http://127.0.0.1:9200/ -> ConnectError: [Errno 111] Connection refused", ARMED, armed_at=ARMED),
        p("running", "workers run with the fault armed for 5s", ARMED + 0.01),
        p("running", f"wrote delete event {EVENT_ID} (entity {ENTITY_ID})", TRIGGERED, outbox_event_ids=[EVENT_ID]),
        p("running", "1 worker(s) alive; trigger events pending 1", ARMED + 3.0, statuses={"pending": 1}, alive=1),
    ]
    if until == "running":
        return events
    events += [
        p("recovering", "reverting fault engine_unreachable", REVERTED - 0.01),
        p("recovering", "fault reverted: GET http://127.0.0.1:9200/ -> HTTP 200", REVERTED, reverted_at=REVERTED),
        p("recovering", "all trigger events settled: done 1", RECOVERED_AT + 0.05, statuses={"done": 1}),
        p("collecting", "worker worker stopped (exit 0)", REVERTED + 1.0),
    ]
    return events


def replay(screen: DrillScreen, *, until: str = "verified") -> None:
    """Feed the recorded run into `screen` through its message handlers, in time order."""
    events = progress(until)
    end = events[-1].elapsed + T0
    records = [r for r in log_records() if r.timestamp is not None and r.timestamp.timestamp() <= end]
    scrapes = [t for t in SCRAPES if t <= end]
    timeline: list[tuple[float, int, Any]] = [(e.elapsed + T0, 0, e) for e in events]
    timeline += [(t, 1, t) for t in scrapes]
    timeline += [(r.timestamp.timestamp(), 2, r) for r in records if r.timestamp is not None]
    for _, kind, item in sorted(timeline, key=lambda x: (x[0], x[1])):
        if kind == 0:
            screen.on_drill_progressed(item)
        elif kind == 1:
            screen.on_metrics_sampled(MetricsSampled(item, {"worker": scrape(item)}, {}, screen.run_number))
        else:
            screen.on_logs_tailed(LogsTailed([item], run=screen.run_number))
    backend = FakeTraceBackend([t for t in traces() if t.spans[0].start_unix_nano / 1e9 <= end])
    queries = screen.live.trace_queries()
    found = {q: backend.find_traces("", q.operation, q.tags, start=datetime.now(UTC), end=datetime.now(UTC)).traces for q in queries}
    screen.on_traces_fetched(TracesFetched(found, queries, run=screen.run_number))
    if until != "running":
        checks = [
            {"id": c.id, "kind": c.kind, "description": c.description, "expected": c.expected,
             "observed": c.observed if c.state != "at_end" else '["done"]', "passed": True, "query": c.query,
             "first_seen_seconds": c.first_seen_seconds}
            for c in screen.live.checks()
        ]
        verdict = {"scenario": "es_down_connect", "run_id": RUN_ID, "verdict": "pass", "passed": True, "snapshot": SNAPSHOT,
                   "checks": checks, "notes": []}
        screen.on_drill_progressed(DrillProgressed("verified", "verdict: PASS", round(REVERTED + 1.7 - T0, 3), {"verdict": verdict}))
        screen.on_run_ended(RunEnded(True))
