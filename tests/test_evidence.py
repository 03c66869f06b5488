"""The one evaluator and the fold behind it, headless, on hand-made events.

These rules decide what ticks on the trainer's screen and when, and what the verdict says; the
runner, the dashboard and `verify` all apply them to the same events. Events go through a real
`Recorder` on a fake clock, exactly as a run records them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from drillui.evidence.checks import Check
from drillui.evidence.signals import SIGNALS, signal_view
from drillui.evidence.state import RunState
from drillui.record.events import (
    Event,
    FaultArmed,
    GaugesProbed,
    LogLinesSeen,
    MetricsSampled,
    RunStarted,
    SpansSeen,
    TriggersWritten,
)
from drillui.runner.recorder import Recorder
from drillui.scenarios import Drill
from drillui.sources.metrics import MetricsSnapshot, delta
from drillui.sources.traces import span_to_json
from drillui.ui import demo
from drillui.ui.widgets.signals import columns
from drillui.ui.widgets.traces import parse_trace_filter

T0 = demo.T0


def _drill() -> Drill:
    return demo.catalog().drills[0]


class Live:
    """A recorder on a fake clock: emit events at given times, read the checklist."""

    def __init__(self, drill: Drill | None = None) -> None:
        self.t = T0
        self.events: list[Event] = []
        self.rec = Recorder(drill or _drill(), listeners=[self.events.append], clock=lambda: self.t)
        self.at(T0, RunStarted(run_id=demo.RUN_ID, scenario="es_down_connect", letter="A", title="t", snapshot="s", drill={}))
        self.rec.initial_checks()

    @property
    def state(self) -> RunState:
        return self.rec.state

    def at(self, t: float, ev: Event) -> None:
        self.t = t
        self.rec.emit(ev)

    def scrape(self, t: float, text: str | None = None, worker: str = "worker", phase: str = "live") -> None:
        snap = MetricsSnapshot.parse(text or demo.metrics_text(t), taken_at=t)
        rows = tuple((s.name, dict(s.labels), s.value, s.kind) for s in snap.samples)
        self.at(t, MetricsSampled(worker=worker, phase=phase, taken_at=t, samples=rows))  # type: ignore[arg-type]

    def armed(self) -> None:
        self.at(demo.ARMED, FaultArmed(fault="engine_unreachable", evidence="refused"))
        self.at(demo.TRIGGERED, TriggersWritten(events=({"outbox_event_id": demo.EVENT_ID, "entity_id": demo.ENTITY_ID, "op": "delete"},)))

    def logs(self, lines: list[dict[str, Any]], first: int = 1) -> None:
        self.at(self.t, LogLinesSeen(worker="worker", file="_logs/w.log", start=0, end=0, first_line=first,
                                     lines=tuple(json.dumps(x) for x in lines)))

    def check(self, prefix: str) -> Check:
        [c] = [Check.from_json(c) for cid, c in self.state.checks.items() if cid.startswith(prefix)]
        return c


@pytest.mark.parametrize("module", ["drillui.evidence.checks", "drillui.evidence.state", "drillui.record.events",
                                    "drillui.runner.recorder", "drillui.ui.feeds", "drillui.ui.format"])
def test_headless_modules_never_import_textual(module: str) -> None:
    code = f"import sys, {module}; sys.exit('textual imported' if 'textual' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_a_metric_ticks_when_first_seen_with_its_time_after_armed_and_its_query() -> None:
    live = Live()
    live.scrape(T0 + 0.5, phase="before")
    live.armed()
    retry = 'metric:outbox_retry_scheduled_total{reason="es_connect"}'
    assert live.check(retry).state == "waiting"
    live.scrape(demo.ATTEMPTS[0] + 0.05)
    check = live.check(retry)
    assert check.state == "seen" and check.observed == "+1"
    assert check.first_seen_seconds is not None and abs(check.first_seen_seconds - 0.15) < 1e-6
    assert check.query.startswith("sum by (env, projection, reason)")
    # Seen stays seen, and keeps its first time.
    live.scrape(demo.ATTEMPTS[3])
    assert live.check(retry).first_seen_seconds == check.first_seen_seconds


def test_a_stays_flat_expectation_holds_then_breaks() -> None:
    live = Live()
    live.scrape(T0 + 0.5, phase="before")
    live.armed()
    live.scrape(T0 + 1.0)
    assert live.check("metric:outbox_terminal_failed_total").state == "holding"
    broken = demo.metrics_text(T0 + 2).replace(
        'outbox_terminal_failed_total{component="worker",env="drill",op="delete",projection="search_index_to_elastic",reason="es_connect"} 0.0',
        'outbox_terminal_failed_total{component="worker",env="drill",op="delete",projection="search_index_to_elastic",reason="es_connect"} 1.0',
    )
    live.scrape(T0 + 2, broken)
    assert live.check("metric:outbox_terminal_failed_total").state == "broken"


def test_a_worker_started_after_the_fault_counts_from_zero() -> None:
    live = Live()
    live.armed()
    late = '# TYPE outbox_reclaimed_total counter\noutbox_reclaimed_total{projection="p"} 5.0\n'
    live.scrape(T0 + 3, late, worker="worker2")
    from drillui.evidence.signals import change

    assert change(live.state, "outbox_reclaimed_total") == 5


def test_signals_counters_show_increase_per_sample_and_gauges_their_max_over_workers() -> None:
    live = Live()
    for t in demo.SCRAPES[:6]:
        live.scrape(t, worker="worker", phase="before" if t == demo.SCRAPES[0] else "live")
        live.scrape(t, demo.metrics_text(T0), worker="other", phase="before" if t == demo.SCRAPES[0] else "live")
    retry = signal_view(live.state, SIGNALS[0])
    # Attempts at +0.9s, +1.3s, +1.9s, +2.7s after T0; samples every 0.5s from +0.5s, two workers each.
    assert sum(v for _, v in retry.points) == 4
    assert retry.value == 4 and retry.change == 4 and retry.by_reason == [("es_connect", 4.0)]
    lag = signal_view(live.state, next(s for s in SIGNALS if s.key == "lag"))
    assert lag.value == 1  # max over the two workers, not their sum


def test_the_final_gauges_are_the_databases_not_a_workers_last_refresh() -> None:
    live = Live()
    live.armed()
    live.scrape(demo.REVERTED - 0.5)  # the worker last refreshed its gauges while the event was pending
    views = {s.key: signal_view(live.state, s) for s in SIGNALS}
    assert views["lag"].value == 1 and views["age"].value and views["age"].value > 0
    live.at(demo.REVERTED + 1, GaugesProbed(projection="search_index_to_elastic", lag=0, oldest_age=0.0, stuck=0))
    views = {s.key: signal_view(live.state, s) for s in SIGNALS}
    assert views["lag"].value == 0 and views["age"].value == 0 and views["stuck"].value == 0
    assert views["lag"].peak == 1  # the history still shows what happened


def test_signal_history_is_bounded() -> None:
    state = RunState(_drill(), history=4)
    for t in demo.SCRAPES:
        snap = demo.scrape(t)
        state.apply(MetricsSampled(worker="worker", phase="live", taken_at=t, wall=t,
                                   samples=tuple((s.name, dict(s.labels), s.value, s.kind) for s in snap.samples)))
    assert len(signal_view(state, SIGNALS[0]).points) == 4


def test_fault_window_columns_line_up() -> None:
    points = [(T0 + i, float(i)) for i in range(10)]
    cols = columns(points, 5, (T0 + 3, T0 + 6), counter=True)
    assert [f for _, f in cols] == [False, True, True, True, False]
    assert [v for v, _ in cols] == [1, 5, 9, 13, 17]
    wide = columns(points[:2], 10, (T0, None), counter=False)
    assert len(wide) == 6 and all(f for _, f in wide)


def test_trace_and_log_checks_follow_the_run_ids_and_the_trace_join() -> None:
    live = Live()
    lines = demo.log_lines()
    live.logs(lines[:5])  # read before the event that names the run's trigger event
    live.armed()
    assert live.state.claim_batch_ids.list() == [demo.batch_id(1)]
    live.logs(lines[5:], first=6)
    # The log check needs a trace found by the drill's trace checks (joined_on_trace).
    assert live.check("log:outbox.retry_scheduled").state == "waiting"
    live.at(demo.ATTEMPTS[-1] + 1, SpansSeen(spans=tuple(span_to_json(s) for t in demo.traces() for s in t.spans)))
    assert live.check("trace:projection.process_batch-by-claim_batch_id").state == "seen"
    assert live.check("trace:outbox.process-by-outbox_event_id").state == "seen"
    log = live.check("log:outbox.retry_scheduled")
    assert log.state == "seen" and log.observed.startswith(f"{len(demo.ATTEMPTS)} line(s)")
    assert log.first_seen_seconds is not None and abs(log.first_seen_seconds - 0.102) < 1e-3
    assert live.check("log:outbox.failed").state == "holding"


def test_span_counts_count_distinct_spans_whatever_returned_them() -> None:
    live = Live()
    live.armed()
    spans = tuple(span_to_json(s) for t in demo.traces() for s in t.spans)
    for _ in range(3):  # the same traces, returned by three queries (by event, by each batch...)
        live.at(demo.ATTEMPTS[-1] + 1, SpansSeen(spans=spans))
    assert len(live.state.spans) == len(spans)
    event = live.check("trace:outbox.process-by-outbox_event_id")
    n = len(demo.traces())
    assert event.observed.startswith(f"{len(demo.ATTEMPTS)} matching of {2 * n} span(s) in {n} trace(s)"), event.observed


def test_raw_lines_never_break_the_live_log_checks() -> None:
    live = Live()
    live.armed()
    live.at(T0 + 2, LogLinesSeen(worker="worker", file="_logs/w.log", start=0, end=0, first_line=1,
                                 lines=("Traceback (most recent call last):", "")))
    assert live.check("log:outbox.failed").state == "holding"
    assert len(live.state.logs) == 1  # the empty line carries nothing, its number still counts


def test_the_final_judgement_fails_what_was_never_observed() -> None:
    live = Live()
    live.armed()
    final = {c.id: c for c in live.rec.final_checks()}
    assert final['metric:outbox_retry_scheduled_total{reason="es_connect"}'].observed == "no scrape recorded"
    assert final["db:trigger_status"].observed == "not probed" and final["db:trigger_status"].state == "failed"
    assert final["clean:reverted"].state == "failed"
    assert final["fault:armed"].state == "passed"


def test_step_bar_fills_the_trace_query_placeholder_with_the_runs_id() -> None:
    from drillui.scenarios import Step
    from drillui.ui.widgets.header import StepBar

    bar = StepBar([Step(say="find the batch", trace_query='operation=projection.process_batch tags={"wordloom.claim_batch_id":"<id>"}')])
    assert bar.fill(bar.steps[0].trace_query or "").endswith('"<id>"}')
    bar.set_reactive(StepBar.ids, {"outbox_event_id": "e1", "claim_batch_id": "b1"})
    assert bar.fill(bar.steps[0].trace_query or "") == 'operation=projection.process_batch tags={"wordloom.claim_batch_id":"b1"}'


def test_trace_filter_matches_recorded_spans_by_id_prefix_and_by_attribute() -> None:
    traces = demo.traces()
    batch = parse_trace_filter(f"claim_batch_id={demo.batch_id(2)[:8]}")
    assert [t.trace_id for t in batch.traces(traces)] == [demo.trace_id(2)]
    assert batch.pivots() == [("claim_batch_id", demo.batch_id(2)[:8])]
    assert len(parse_trace_filter("wordloom.outbox_event_id=" + demo.EVENT_ID).traces(traces)) == len(traces)
    assert len(parse_trace_filter("result=noop").traces(traces)) == 1
    assert len(parse_trace_filter('operation=outbox.process tags={"result":"retry"}').traces(traces)) == len(demo.ATTEMPTS)
    assert [t.trace_id for t in parse_trace_filter(demo.trace_id(3)[:8]).traces(traces)] == [demo.trace_id(3)]
    for bad in ("claim_batch_id=", "two words", 'tags={"a":', 'operation=outbox.process tags={"x":"<id>"}'):
        with pytest.raises(ValueError):
            parse_trace_filter(bad)


def test_a_dead_workers_last_gauge_reading_is_not_now() -> None:
    """Drill F: the killed worker last read Lag 5; worker 2 then did all five. The panel's Lag
    now is worker 2's 0 (the killed one's counters still count: what it did happened)."""
    from drillui.record.events import WorkerStarted, WorkerStopped

    state = RunState(_drill())
    labels = {"projection": "p"}

    def scrape(worker: str, t: float, lag: float, retries: float) -> MetricsSampled:
        return MetricsSampled(worker=worker, phase="live", taken_at=t, wall=t,  # type: ignore[arg-type]
                              samples=(("outbox_lag_events", labels, lag, "gauge"),
                                       ("outbox_retry_scheduled_total", {**labels, "reason": "es_connect"}, retries, "counter")))

    for name in ("worker1", "worker2"):
        state.apply(WorkerStarted(name=name, worker_id=name, pid=1, metrics_url="", log_file=""))
    state.apply(scrape("worker1", T0, 5, 3))
    state.apply(scrape("worker2", T0 + 0.5, 5, 0))
    views = {s.key: signal_view(state, s) for s in SIGNALS}
    assert views["lag"].value == 5
    state.apply(WorkerStopped(name="worker1", worker_id="worker1", pid=1, exit_code=-9, how="killed"))
    state.apply(scrape("worker2", T0 + 2, 0, 1))
    views = {s.key: signal_view(state, s) for s in SIGNALS}
    assert views["lag"].value == 0 and views["lag"].peak == 5
    assert views["retry"].value == 4  # both workers' retries


def test_a_worker_restarted_under_its_name_keeps_what_its_first_process_counted() -> None:
    """Drill J's fix restarts the worker on the right endpoint: its counters start at 0 again.
    Two events done before the restart and one after are three, not one."""
    from drillui.record.events import WorkerStarted

    state = RunState(_drill())
    ok = ("outbox_processed_total", {"result": "ok"})

    def scrape(t: float, done: float, phase: str = "live", full: bool = True) -> MetricsSampled:
        return MetricsSampled(worker="worker", phase=phase, taken_at=t, wall=t, full=full,  # type: ignore[arg-type]
                              samples=((*ok, done, "counter"), ("outbox_lag_events", {}, 3 - done, "gauge")))

    started = WorkerStarted(name="worker", worker_id="w", pid=1, metrics_url="", log_file="")
    state.apply(started)
    state.apply(scrape(T0, 0, "before"))
    state.apply(scrape(T0 + 1, 2))
    state.apply(started)  # the same name, a new process
    state.apply(MetricsSampled(worker="worker", phase="live", taken_at=T0 + 2, wall=T0 + 2,  # type: ignore[arg-type]
                               samples=(("outbox_lag_events", {}, 1.0, "gauge"),)))  # the counter not created yet
    m = state.metrics
    assert delta(m.baseline("worker"), m.latest["worker"], 'outbox_processed_total{result="ok"}') == 2
    state.apply(scrape(T0 + 3, 1, "after"))
    assert delta(m.baseline("worker"), m.phase("after")["worker"], 'outbox_processed_total{result="ok"}') == 3
    assert m.latest["worker"].value("outbox_lag_events") == 2  # a gauge is read as it is
    state.apply(scrape(T0 + 4, 2, full=False))  # a partial sample of the same process
    assert m.latest["worker"].value('outbox_processed_total{result="ok"}') == 4
