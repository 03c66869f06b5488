"""The live checklist and signals (`drillui.evidence.live`), headless, on hand-made inputs.

These rules decide what ticks on the trainer's screen and when; they follow the verdict's rules
(same selectors, same span matching, same log fields) but apply them to live data as it arrives.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from drillui.evidence.live import SIGNALS, LiveMetrics, LiveRun, TraceQuery
from drillui.scenarios import Drill
from drillui.sources.logs import parse_line
from drillui.sources.metrics import MetricsSnapshot
from drillui.ui import demo
from drillui.ui.feeds import search_traces
from drillui.ui.widgets.signals import columns
from drillui.ui.widgets.traces import parse_trace_filter

T0 = demo.T0


def _drill() -> Drill:
    return demo.catalog().drills[0]


def _state(run: LiveRun, prefix: str) -> str:
    [check] = [c for c in run.checks() if c.id.startswith(prefix)]
    return check.state


def _armed(run: LiveRun) -> None:
    run.apply("armed", "fault armed: refused", 0.8, {"armed_at": demo.ARMED})
    run.apply("running", "wrote", 0.9, {"outbox_event_ids": [demo.EVENT_ID]})


@pytest.mark.parametrize("module", ["drillui.evidence.live", "drillui.ui.feeds", "drillui.ui.format"])
def test_headless_modules_never_import_textual(module: str) -> None:
    code = f"import sys, {module}; sys.exit('textual imported' if 'textual' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_a_metric_ticks_when_first_seen_with_its_time_after_armed_and_its_query() -> None:
    run = LiveRun(_drill())
    run.add_scrapes(T0 + 0.5, {"worker": demo.scrape(T0 + 0.5)}, {})  # before the fault: the baseline
    _armed(run)
    retry = 'metric:outbox_retry_scheduled_total{reason="es_connect"}'
    assert _state(run, retry) == "waiting"
    run.add_scrapes(demo.ATTEMPTS[0] + 0.05, {"worker": demo.scrape(demo.ATTEMPTS[0] + 0.05)}, {})
    [check] = [c for c in run.checks() if c.id == retry]
    assert check.state == "seen" and check.observed == "+1"
    assert check.first_seen_seconds is not None and abs(check.first_seen_seconds - 0.15) < 1e-6
    assert check.query.startswith("sum by (env, projection, reason)")
    # Seen stays seen, and keeps its first time.
    run.add_scrapes(demo.ATTEMPTS[3], {"worker": demo.scrape(demo.ATTEMPTS[3])}, {})
    assert [c.first_seen_seconds for c in run.checks() if c.id == retry] == [check.first_seen_seconds]


def test_a_stays_flat_expectation_holds_then_breaks() -> None:
    run = LiveRun(_drill())
    _armed(run)
    assert _state(run, "metric:outbox_terminal_failed_total") == "holding"
    broken = demo.metrics_text(T0 + 2).replace(
        'outbox_terminal_failed_total{component="worker",env="drill",op="delete",projection="search_index_to_elastic",reason="es_connect"} 0.0',
        'outbox_terminal_failed_total{component="worker",env="drill",op="delete",projection="search_index_to_elastic",reason="es_connect"} 1.0',
    )
    run.add_scrapes(T0 + 2, {"worker": MetricsSnapshot.parse(broken, taken_at=T0 + 2)}, {})
    assert _state(run, "metric:outbox_terminal_failed_total") == "broken"


def test_a_worker_started_after_the_fault_counts_from_zero() -> None:
    metrics = LiveMetrics()
    late = MetricsSnapshot.parse('# TYPE outbox_reclaimed_total counter\noutbox_reclaimed_total{projection="p"} 5.0\n', taken_at=T0 + 3)
    metrics.add(T0 + 3, {"worker2": late}, {}, armed_at=T0 + 1)
    assert metrics.change("outbox_reclaimed_total") == 5


def test_signals_counters_show_increase_per_scrape_and_gauges_their_max_over_workers() -> None:
    metrics = LiveMetrics()
    for t in demo.SCRAPES[:6]:
        metrics.add(t, {"worker": demo.scrape(t), "other": demo.scrape(T0)}, {}, armed_at=demo.ARMED)
    retry = metrics.signal_view(SIGNALS[0])
    # Attempts at +0.9s, +1.3s, +1.9s, +2.7s after T0; scrapes every 0.5s from +0.5s.
    assert [v for _, v in retry.points] == [0, 1, 1, 1, 0, 1]
    assert retry.value == 4 and retry.change == 4 and retry.by_reason == [("es_connect", 4.0)]
    lag = metrics.signal_view(next(s for s in SIGNALS if s.key == "lag"))
    assert lag.value == 1  # max over the two workers, not their sum


def test_signal_history_is_bounded() -> None:
    metrics = LiveMetrics(maxlen=4)
    for t in demo.SCRAPES:
        metrics.add(t, {"worker": demo.scrape(t)}, {}, armed_at=None)
    assert len(metrics.signal_view(SIGNALS[0]).points) == 4


def test_fault_window_columns_line_up() -> None:
    points = [(T0 + i, float(i)) for i in range(10)]
    cols = columns(points, 5, (T0 + 3, T0 + 6), counter=True)
    assert [f for _, f in cols] == [False, True, True, True, False]
    assert [v for v, _ in cols] == [1, 5, 9, 13, 17]
    wide = columns(points[:2], 10, (T0, None), counter=False)
    assert len(wide) == 6 and all(f for _, f in wide)


def test_trace_and_log_checks_follow_the_run_ids_and_the_trace_join() -> None:
    run = LiveRun(_drill())
    records = demo.log_records()
    run.add_logs(records[:5])  # read before the progress event that names the run's event
    _armed(run)
    assert run.claim_batch_ids == [demo.batch_id(1)]
    run.add_logs(records[5:])
    queries = run.trace_queries()
    assert TraceQuery("outbox.process", "wordloom.outbox_event_id", demo.EVENT_ID) in queries
    assert TraceQuery("projection.process_batch", "wordloom.claim_batch_id", demo.batch_id(1)) in queries
    # The log check needs a trace found by the drill's trace queries (joined_on_trace).
    assert _state(run, "log:outbox.retry_scheduled") == "waiting"
    results, errors = search_traces(demo.FakeTraceBackend(), queries, since=T0)
    assert not errors
    run.add_trace_results({q: [s for t in traces for s in t.spans] for q, traces in results.items()})
    assert _state(run, "trace:projection.process_batch-by-claim_batch_id") == "seen"
    assert _state(run, "trace:outbox.process-by-outbox_event_id") == "seen"
    [log] = [c for c in run.checks() if c.id.startswith("log:outbox.retry_scheduled")]
    assert log.state == "seen" and log.observed.startswith(f"{len(demo.ATTEMPTS)} line(s)")
    assert log.first_seen_seconds is not None and abs(log.first_seen_seconds - 0.102) < 1e-3
    assert _state(run, "log:outbox.failed") == "holding"


def test_the_verdict_replaces_the_live_checks_keeping_live_first_seen_times() -> None:
    run = LiveRun(_drill())
    run.add_scrapes(T0 + 0.5, {"worker": demo.scrape(T0 + 0.5)}, {})
    _armed(run)
    run.add_scrapes(T0 + 1.5, {"worker": demo.scrape(T0 + 1.5)}, {})
    verdict = {"checks": [
        {"id": 'metric:outbox_retry_scheduled_total{reason="es_connect"}', "kind": "metric", "description": "d",
         "expected": ">= 1", "observed": "+6", "passed": True, "query": "q", "first_seen_seconds": None},
        {"id": "db:trigger_status", "kind": "db", "description": "d", "expected": "done", "observed": '["pending"]',
         "passed": False, "query": "", "first_seen_seconds": None},
    ]}
    run.apply("failed", "verdict: FAIL", 9.0, {"verdict": json.loads(json.dumps(verdict))})
    final = run.checks()
    assert [c.state for c in final] == ["passed", "failed"]
    assert final[0].first_seen_seconds is not None and final[1].first_seen_seconds is None


def test_trace_filter_parses_the_two_pivots_only() -> None:
    assert parse_trace_filter("wordloom.claim_batch_id=abc") == [TraceQuery("projection.process_batch", "wordloom.claim_batch_id", "abc")]
    assert parse_trace_filter(demo.EVENT_ID, events=[demo.EVENT_ID]) == [
        TraceQuery("outbox.process", "wordloom.outbox_event_id", demo.EVENT_ID)
    ]
    assert len(parse_trace_filter("some-id")) == 2
    for bad in ("attempt=2", "claim_batch_id=", "two words"):
        try:
            parse_trace_filter(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_raw_lines_never_break_the_live_log_checks() -> None:
    run = LiveRun(_drill())
    _armed(run)
    run.add_logs([parse_line("Traceback (most recent call last):", source="worker", line_no=1)])
    assert _state(run, "log:outbox.failed") == "holding"


def test_step_bar_fills_the_trace_query_placeholder_with_the_runs_id() -> None:
    from drillui.scenarios import Step
    from drillui.ui.widgets.header import StepBar

    bar = StepBar([Step(say="find the batch", trace_query='operation=projection.process_batch tags={"wordloom.claim_batch_id":"<id>"}')])
    assert bar.fill(bar.steps[0].trace_query or "").endswith('"<id>"}')
    bar.set_reactive(StepBar.ids, {"outbox_event_id": "e1", "claim_batch_id": "b1"})
    assert bar.fill(bar.steps[0].trace_query or "") == 'operation=projection.process_batch tags={"wordloom.claim_batch_id":"b1"}'
