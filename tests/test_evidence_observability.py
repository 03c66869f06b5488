"""The evaluator's checks that the observability drills (I-P) added, on hand-made events: a span
that must have a child (a batch span `ok` over an ERROR event span), a histogram quantile
between two scrapes, a log line that must lack a field, and the obs_schema pivot read from what
the workers said at start. No server: the end-to-end runs are in test_drills.py."""

from __future__ import annotations

import json
from typing import Any

from drillui.evidence.checks import Evaluation, evaluate
from drillui.evidence.state import RunState
from drillui.record.events import Event, FaultArmed, LogLinesSeen, MetricsSampled, RunStarted, SpansSeen, TriggersWritten
from drillui.scenarios import Drill
from drillui.sources.metrics import MetricsSnapshot
from drillui.sources.traces import Span, span_to_json

EVENT = "0b9a3c1e-0000-4000-8000-000000000001"
BATCH = "7c2d1f00-0000-4000-8000-000000000002"


def drill(expect: dict[str, Any]) -> Drill:
    return Drill.model_validate({"id": "x", "letter": "X", "runbook": "3", "title": "t", "goal": "g", "fault": {"type": "none"},
                                 "expect": expect})


def run(d: Drill, *events: Event) -> RunState:
    state = RunState(d)
    state.apply(RunStarted(run_id="r", scenario="x", letter="X", title="t", snapshot="s", drill={}))
    state.apply(FaultArmed(fault="none", evidence="-"))
    state.apply(TriggersWritten(events=({"outbox_event_id": EVENT, "entity_id": "e", "op": "upsert"},)))
    for ev in events:
        state.apply(ev)
    return state


def one(d: Drill, state: RunState, prefix: str) -> Evaluation:
    [ev] = [e for e in evaluate(d, state, final=True) if e.id.startswith(prefix)]
    return ev


def span(span_id: str, operation: str, parent: str | None = None, status: str = "UNSET", **attrs: Any) -> dict[str, Any]:
    return span_to_json(Span("t" * 32, span_id, parent, operation, "svc", 1, 1, dict(attrs), {}, status, []))  # type: ignore[arg-type]


def logs(*lines: dict[str, Any]) -> LogLinesSeen:
    return LogLinesSeen(worker="worker", file="_logs/w.log", start=0, end=0, first_line=1, lines=tuple(json.dumps(x) for x in lines))


# ---- a span and its child ---------------------------------------------------------------------------


CHILD_CHECK = {"traces": [{"operation": "projection.process_batch", "by": "claim_batch_id", "attributes": {"result": "ok"},
                           "child": {"operation": "outbox.process", "attributes": {"result": "failed"}, "status": "ERROR"}}]}


def _batch_run(child_status: str, child_result: str) -> tuple[Drill, RunState]:
    d = drill(CHILD_CHECK)
    claimed = logs({"event": "outbox.claimed", "claim_batch_id": BATCH, "outbox_event_ids": [EVENT]})
    spans = SpansSeen(spans=(span("b" * 16, "projection.process_batch", result="ok", **{"wordloom.claim_batch_id": BATCH}),
                             span("c" * 16, "outbox.process", "b" * 16, child_status, result=child_result,
                                  **{"wordloom.outbox_event_id": EVENT, "wordloom.claim_batch_id": BATCH})))
    return d, run(d, claimed, spans)


def test_a_batch_span_that_says_ok_over_an_error_child_is_found_by_comparing_the_two() -> None:
    d, state = _batch_run("ERROR", "failed")
    ev = one(d, state, "trace:projection.process_batch")
    assert ev.ok and ev.id.endswith(">outbox.process[result=failed, status=ERROR]")
    assert "over a child outbox.process with result=failed, status=ERROR" in ev.description
    d, state = _batch_run("UNSET", "ok")
    assert one(d, state, "trace:projection.process_batch").ok is False, "the batch span alone is not the evidence"


def test_the_child_must_be_a_direct_child_of_that_span() -> None:
    d = drill(CHILD_CHECK)
    claimed = logs({"event": "outbox.claimed", "claim_batch_id": BATCH, "outbox_event_ids": [EVENT]})
    stranger = SpansSeen(spans=(span("b" * 16, "projection.process_batch", result="ok", **{"wordloom.claim_batch_id": BATCH}),
                                span("c" * 16, "outbox.process", "d" * 16, "ERROR", result="failed")))
    assert one(d, run(d, claimed, stranger), "trace:projection.process_batch").ok is False


# ---- a quantile between two scrapes --------------------------------------------------------------------


def _histogram(counts: dict[str, float], taken_at: float, phase: str) -> MetricsSampled:
    lines = [f'outbox_es_bulk_request_duration_seconds_bucket{{component="worker",le="{le}"}} {n}' for le, n in counts.items()]
    snap = MetricsSnapshot.parse("# TYPE outbox_es_bulk_request_duration_seconds histogram\n" + "\n".join(lines) + "\n",
                                 taken_at=taken_at)
    return MetricsSampled(worker="worker", phase=phase, taken_at=taken_at,  # type: ignore[arg-type]
                          samples=tuple((s.name, dict(s.labels), s.value, s.kind) for s in snap.samples), full=True)


P95 = {"metrics": [{"selector": "outbox_es_bulk_request_duration_seconds", "quantile": 0.95, "change": ">= 0.4"}]}


def test_a_quantile_counts_only_what_was_observed_between_the_scrapes() -> None:
    d = drill(P95)
    # Twenty fast requests before the drill, ten slow ones (0.5 s to 1 s) during it.
    before = _histogram({"0.05": 20, "0.5": 20, "1.0": 20, "+Inf": 20}, 1.0, "before")
    after = _histogram({"0.05": 20, "0.5": 20, "1.0": 30, "+Inf": 30}, 2.0, "after")
    ev = one(d, run(d, before, after), "metric:p95:")
    assert ev.ok and ev.observed == "0.975 s", ev.observed
    assert ev.id == "metric:p95:outbox_es_bulk_request_duration_seconds"
    fast = _histogram({"0.05": 30, "0.5": 30, "1.0": 30, "+Inf": 30}, 2.0, "after")
    ev = one(d, run(d, before, fast), "metric:p95:")
    assert ev.ok is False and ev.observed.startswith("0.0")
    nothing = _histogram({"0.05": 20, "0.5": 20, "1.0": 20, "+Inf": 20}, 2.0, "after")
    ev = one(d, run(d, before, nothing), "metric:p95:")
    assert ev.ok is False and ev.observed == "no observations since the before scrape"


# ---- a field that must be absent ------------------------------------------------------------------------


def test_a_log_check_can_require_a_field_to_be_absent() -> None:
    d = drill({"logs": [{"event": "outbox.retry_scheduled", "require": ["attempt"], "absent": ["trace_id"]}]})
    with_trace = {"event": "outbox.retry_scheduled", "attempt": 1, "trace_id": "a" * 32}
    without = {"event": "outbox.retry_scheduled", "attempt": 2}
    ev = one(d, run(d, logs(with_trace)), "log:")
    assert ev.ok is False and ev.observed == "0 line(s) (1 with the event and fields)"
    assert ", without trace_id" in ev.description
    assert one(d, run(d, logs(with_trace, without)), "log:").ok


# ---- the obs_schema pivot ---------------------------------------------------------------------------------


def test_the_obs_schema_pivot_is_what_the_workers_said_at_start() -> None:
    d = drill({"traces": [{"operation": "outbox.process", "by": "obs_schema", "attributes": {"wordloom.obs_schema": "labs-009-v1"}}]})
    assert run(d).pivots("obs_schema") == ["labs-009-v2"], "nothing said yet: the current schema"
    stale = logs({"event": "obs.schema", "obs_schema": "labs-009-v1", "msg": "Observability schema: labs-009-v1"})
    state = run(d, stale, SpansSeen(spans=(span("e" * 16, "outbox.process", **{"wordloom.obs_schema": "labs-009-v1",
                                                                               "wordloom.outbox.id": "e"}),)))
    assert state.pivots("obs_schema") == ["labs-009-v1"]
    assert one(d, state, "trace:outbox.process-by-obs_schema").ok
