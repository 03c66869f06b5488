"""A recorded drill A run, as the typed events a real run records, with no server or clock.

Why: the snapshot tests need the main screens filled with the same data on every machine (fixed
catalog, fixed scrapes, fixed log lines, fixed spans, fixed times). `events` builds the run's
event stream through the real `Recorder` (so the checklist is judged by the real evaluator) on a
fake clock; `replay` feeds it to a `DrillScreen` created with `autostart=False`, exactly as a live
run's events arrive.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from drillui.record.events import (
    CleanChecked,
    Event,
    FaultArmed,
    FaultReverted,
    GaugesProbed,
    LogLinesSeen,
    MetricsSampled,
    PhaseChanged,
    ProbeRecorded,
    RunStarted,
    Said,
    SpansSeen,
    StatusesPolled,
    TriggersWritten,
    WorkerStarted,
    WorkerStopped,
)
from drillui.scenarios import Catalog, parse_catalog
from drillui.sources.metrics import MetricsSnapshot
from drillui.sources.traces import Span, Trace, span_to_json

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
        log_query: event=outbox.retry_scheduled reason=es_connect
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


# ---- the event stream ---------------------------------------------------------------------------


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _rows(snap: MetricsSnapshot) -> tuple[tuple[str, dict[str, str], float, str], ...]:
    return tuple((s.name, dict(s.labels), s.value, s.kind) for s in snap.samples)


def events(until: str = "verified") -> list[Event]:
    """The recorded run's events up to a moment ('running': the fault still armed; 'verified':
    the end), stamped with the run's own clock and judged by the real evaluator."""
    from drillui.evidence.checks import Verdict, end_state, key_figure
    from drillui.runner.recorder import Recorder

    clock = _Clock(T0)
    out: list[Event] = []
    rec = Recorder(catalog().drills[0], listeners=[out.append], clock=clock)
    end = ARMED + 3.0 if until == "running" else REVERTED + 1.7
    timeline: list[tuple[float, int, Event]] = [
        (T0, 0, RunStarted(run_id=RUN_ID, scenario="es_down_connect", letter="A", title=catalog().drills[0].title,
                           snapshot=SNAPSHOT, drill=catalog().drills[0].model_dump(mode="json"))),
        (T0 + 0.001, 0, PhaseChanged(phase="preparing", message=f"run {RUN_ID}: evidence in {SNAPSHOT}")),
        (T0 + 0.1, 0, PhaseChanged(phase="starting", message="starting worker(s) worker")),
        (T0 + 0.4, 0, WorkerStarted(name="worker", worker_id=WORKER_ID, pid=4242, metrics_url="http://127.0.0.1:9464/metrics",
                                    log_file=f"_logs/worker-{RUN_ID}.log")),
        (T0 + 0.7, 0, PhaseChanged(phase="arming", message="arming fault engine_unreachable")),
        (ARMED, 0, FaultArmed(fault="engine_unreachable", evidence="GET http://127.0.0.1:9200/ -> ConnectError: [Errno 111] Connection refused")),
        (ARMED + 0.01, 0, PhaseChanged(phase="running", message="workers run with the fault armed for 5s")),
        (TRIGGERED, 0, TriggersWritten(events=({"outbox_event_id": EVENT_ID, "entity_id": ENTITY_ID, "op": "delete",
                                                "projection": "search_index_to_elastic", "delay": 0.0},))),
        (TRIGGERED, 1, Said(message=f"wrote delete event {EVENT_ID} (entity {ENTITY_ID})")),
        (TRIGGERED + 0.01, 1, StatusesPolled(statuses={"pending": 1})),
    ]
    for k, t in enumerate(SCRAPES):
        timeline.append((t, 2, MetricsSampled(worker="worker", phase="before" if k == 0 else "live", taken_at=t, samples=_rows(scrape(t)))))
    for n, line in enumerate(log_lines(), 1):
        t = datetime.fromisoformat(line["ts"]).timestamp()
        text = json.dumps(line)
        timeline.append((t + 0.05, 3, LogLinesSeen(worker="worker", file=f"_logs/worker-{RUN_ID}.log", start=0, end=0,
                                                   first_line=n, lines=(text,))))
    for tr in traces():
        t = tr.spans[0].start_unix_nano / 1e9 + 0.3
        timeline.append((t, 4, SpansSeen(spans=tuple(span_to_json(s) for s in tr.spans))))
    timeline += [
        (REVERTED - 0.01, 0, PhaseChanged(phase="recovering", message="reverting fault engine_unreachable")),
        (REVERTED, 0, FaultReverted(fault="engine_unreachable", evidence="GET http://127.0.0.1:9200/ -> HTTP 200")),
        (RECOVERED_AT + 0.05, 1, StatusesPolled(statuses={"done": 1})),
        (RECOVERED_AT + 0.06, 1, Said(message="all trigger events settled: done 1")),
        (RECOVERED_AT + 0.07, 2, MetricsSampled(worker="worker", phase="after", taken_at=RECOVERED_AT + 0.07,
                                                samples=_rows(scrape(RECOVERED_AT + 0.07)))),
        (RECOVERED_AT + 0.08, 2, MetricsSampled(worker="worker", phase="recovered", taken_at=RECOVERED_AT + 0.08,
                                                samples=_rows(scrape(RECOVERED_AT + 0.08)))),
        (REVERTED + 0.9, 5, ProbeRecorded(name="trigger_status", value=["done"])),
        (REVERTED + 1.0, 5, PhaseChanged(phase="collecting", message="stopping the workers")),
        (REVERTED + 1.0, 6, WorkerStopped(name="worker", worker_id=WORKER_ID, pid=4242, exit_code=0, how="stopped")),
        (REVERTED + 1.1, 6, GaugesProbed(projection="search_index_to_elastic", lag=0, oldest_age=0.0, stuck=0)),
        (REVERTED + 1.6, 6, CleanChecked(clean=True, summary="clean: GET http://127.0.0.1:9200/ -> HTTP 200; no worker left")),
    ]
    for t, _, ev in sorted(timeline, key=lambda x: (x[0], x[1])):
        if t > end:
            break
        clock.t = t
        rec.emit(ev)
    if until != "running":
        clock.t = end
        checks = rec.final_checks()
        state, why = end_state(checks, stopped=False, error=None)
        verdict = Verdict("es_down_connect", RUN_ID, state, checks, SNAPSHOT, key_figure(checks), round(end - T0, 3), [], why)
        rec.emit(PhaseChanged(phase="ended", message=f"{state.upper()}: {why}"))
        rec.end(verdict)
    return out


def replay(screen: DrillScreen, *, until: str = "verified") -> None:
    """Feed the recorded run into `screen`, as a live run's events arrive."""
    screen.feed(events(until))
