"""A drill running on screen: header, trainer's steps, signals, checklist, traces and logs.

Why it is built this way: the drill deliberately breaks or slows the infrastructure, so nothing
here may wait on it. The runner runs in a thread worker and reports `Progress` events as
messages; three polling loops (`set_interval`) start thread workers that scrape the workers'
`/metrics`, tail their log files and search the trace store, each at most one in flight, and post
what they found. The UI thread applies every message to one `LiveRun` (the headless model of the
run) and pushes the result down to dumb widgets. Every buffer is bounded.

The same screen replays recorded data (snapshot tests, pivots) when it is created with
`autostart=False`: the polling loops stay idle until a run starts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import httpx
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState, get_current_worker

from drillui.errors import DrillError
from drillui.evidence.live import SIGNALS, LiveRun, TraceQuery
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DirtyState, DrillRunner, Progress, RunOptions
from drillui.scenarios import Drill
from drillui.sources.logs import LogBuffer, LogRecord, LogTailer
from drillui.sources.traces import Trace
from drillui.ui.feeds import TraceBackend, final_scrapes, scrape_workers, search_traces
from drillui.ui.format import short_id
from drillui.ui.messages import (
    DrillProgressed,
    FeedFailed,
    LogFilterSubmitted,
    LogLineChosen,
    LogsTailed,
    MetricsSampled,
    RunEnded,
    ScreenshotSaved,
    TraceChosen,
    TraceFilterSubmitted,
    TraceLoaded,
    TracesFetched,
)
from drillui.ui.screens.modals import PickerModal, SpanTreeModal
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.header import RunHeader, StepBar
from drillui.ui.widgets.logs import LogsPanel
from drillui.ui.widgets.signals import SignalsPanel
from drillui.ui.widgets.traces import TracesPanel, parse_trace_filter

if TYPE_CHECKING:
    from drillui.ui.app import DrillApp

METRICS_EVERY = 0.5
LOGS_EVERY = 0.25
TRACES_EVERY = 1.5
CLOCK_EVERY = 0.5
LOG_BUFFER_LINES = 5000
TRACE_CACHE = 300
# Trace searches after the run ended: the workers export spans in batches, the last ones late.
TRACE_ROUNDS_AFTER_END = 2


@dataclass(eq=False)  # identity: the app keeps a set of the runs in progress
class RunControl:
    """What the app needs to stop a run and wait until it has cleaned up (quit mid-drill)."""

    drill_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class DrillScreen(Screen[None]):
    # Never a filter field: it would take the one-letter keys (s to stop, q to quit).
    AUTO_FOCUS = "#checklist"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop", tooltip="Stop the drill: the runner reverts the fault and stops the workers"),
        Binding("r", "run_again", "Run again", tooltip="Run the drill again"),
        Binding("c", "clean_run", "Clean+run", tooltip="Remove leftover drill events of an earlier run, then run again"),
        Binding("escape", "back", "Menu", tooltip="Back to the drill menu"),
        Binding("n", "step(1)", "Step", show=False, tooltip="Next trainer step (p: previous)"),
        Binding("p", "step(-1)", "Prev step", show=False, tooltip="Previous trainer step"),
        Binding("f", "filter_traces", "Trace filter", tooltip="Search traces by claim_batch_id=… or outbox_event_id=…"),
        Binding("e", "pick_event", "Pick id", tooltip="Pick one of this drill's event or batch ids to search traces by"),
        Binding("slash", "filter_logs", "Log filter", tooltip="Filter the logs: free text and key=value terms"),
        Binding("x", "screenshot", "Screenshot", tooltip="Save an SVG screenshot of the dashboard into the run's snapshot folder"),
        Binding("t", "focus_panel('traces-table')", "Traces", show=False, tooltip="Focus the traces table"),
        Binding("l", "focus_panel('logs-table')", "Logs", show=False, tooltip="Focus the logs table"),
        Binding("k", "focus_panel('checklist')", "Checklist", show=False, tooltip="Focus the checklist (↑↓ to read each check's query)"),
    ]

    def __init__(self, drill: Drill, *, autostart: bool = True) -> None:
        super().__init__()
        self.drill = drill
        self.autostart = autostart
        self.live = LiveRun(drill)
        self.buffer = LogBuffer(LOG_BUFFER_LINES)
        self._tailer = LogTailer()
        self._http = httpx.Client(timeout=1.0)
        self._backend: TraceBackend | None = None
        self._control: RunControl | None = None
        self._run_active = False
        self._stopping = False
        self._started_wall: float | None = None
        self._progress_mono = time.monotonic()
        self._logs_flushed = True
        self._trace_rounds_left = 0
        self._trace_filter: list[TraceQuery] | None = None
        self._trace_cache: OrderedDict[str, Trace] = OrderedDict()
        self._panel_traces: list[Trace] = []
        self._feed_errors: set[str] = set()
        self._failed_groups: set[str] = set()
        self._workers: dict[str, Worker[None]] = {}
        self._run_number = 0

    @property
    def dashboard(self) -> DrillApp:
        return cast("DrillApp", self.app)

    @property
    def run_number(self) -> int:
        """Which run of this screen the panels show (0: none started here, e.g. a replay)."""
        return self._run_number

    # ---- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield StepBar(list(self.drill.steps), id="steps")
        # Two columns, each panel as tall as it needs: signals over traces, checklist over logs.
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with Vertical(id="signals-box"):
                    yield SignalsPanel(id="signals")
                yield TracesPanel(id="traces")
            with Vertical(id="right"):
                with Vertical(id="checks-box"):
                    yield Checklist(id="checklist")
                yield LogsPanel(self.buffer, workers=len(self.drill.workload.workers), id="logs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        header = self.query_one(RunHeader)
        header.drill_line = f"{self.drill.letter} · {self.drill.title}"
        header.worker_count = len(self.drill.workload.workers)
        self.query_one("#signals-box").border_title = "Signals · retry → failed → lag/age → stuck"
        self.query_one("#checks-box").border_title = "Evidence checklist"
        self.query_one("#traces").border_title = "Traces · by claim_batch_id / outbox_event_id"
        self.query_one("#logs").border_title = "Logs · every worker"
        self._refresh_all()
        self.set_interval(METRICS_EVERY, self._tick_metrics)
        self.set_interval(LOGS_EVERY, self._tick_logs)
        self.set_interval(TRACES_EVERY, self._tick_traces)
        self.set_interval(CLOCK_EVERY, self._tick_clock)
        if self.autostart:
            self.start_run()

    def on_unmount(self) -> None:
        # No I/O: closing a client only releases its idle connections.
        self._http.close()
        if self._backend is not None:
            self._backend.close()

    # ---- the run ----------------------------------------------------------------------------

    def start_run(self, *, force_clean: bool = False) -> None:
        infra = self.dashboard.infra
        if infra is None:
            self.dashboard.show_error("The stack is not ready", self.dashboard.stack_summary or "the infrastructure has not started",
                                      "wait for the stack status to say ready, or read its error on the menu")
            return
        self._reset()
        self._run_number += 1
        self._control = RunControl(self.drill.id)
        self.dashboard.register_run(self._control)
        self._run_active = True
        self._stopping = False
        self._logs_flushed = False
        self._started_wall = time.time()
        self._progress_mono = time.monotonic()
        options = replace(self.dashboard.run_options, force_clean=force_clean)
        self.query_one(RunHeader).phase = "preparing"
        self._run_drill(infra, options, self._control)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="runner", exit_on_error=False)
    def _run_drill(self, infra: Infrastructure, options: RunOptions, control: RunControl) -> None:
        def forward(p: Progress) -> None:
            self.post_message(DrillProgressed(p.phase, p.message, p.elapsed, dict(p.data)))

        try:
            verdict = DrillRunner(self.drill, infra, options, on_progress=forward, stop=control.stop).run()
            self.post_message(RunEnded(verdict.passed))
        except DirtyState as exc:
            # The CLI's hint names a flag; here the fix is a key.
            self.post_message(RunEnded(None, exc.title, exc.message, "press c (Clean+run): it removes the leftover "
                                       "drill events and runs the drill again"))
        except DrillError as exc:
            self.post_message(RunEnded(None, exc.title, exc.message, exc.hint))
        finally:
            # The runner has reverted the fault and stopped its workers by now (or raised after
            # doing so): whoever waits to quit may go on.
            control.done.set()

    def _reset(self) -> None:
        self.live = LiveRun(self.drill)
        self.buffer.clear()
        self._tailer = LogTailer()
        self._trace_filter = None
        self._panel_traces = []
        self._feed_errors.clear()
        self._failed_groups.clear()
        self._trace_rounds_left = 0
        self.query_one(RunHeader).verdict = ""
        self.query_one(TracesPanel).set_filter("")
        self.query_one(TracesPanel).show([], None, "")
        self.query_one(LogsPanel).set_filter("")
        self._refresh_all()

    def on_drill_progressed(self, message: DrillProgressed) -> None:
        self.live.apply(message.phase, message.message, message.elapsed, message.data)
        self._progress_mono = time.monotonic()
        log_path = message.data.get("log_path")
        worker = message.data.get("worker")
        if log_path and worker and worker not in self._tailer.sources:
            self._tailer.add(log_path, source=str(worker))
        if message.data.get("metrics_url"):
            self._tick_metrics()  # a first scrape now: with luck it is taken before the fault is armed
        self._refresh_header()
        self._refresh_checks()
        if "armed_at" in message.data or "reverted_at" in message.data:
            self._refresh_signals()
        if "armed_at" in message.data or "outbox_event_ids" in message.data:
            self._refresh_traces()  # its status line names the events; its times count from armed

    def on_run_ended(self, message: RunEnded) -> None:
        self._end_run()
        if message.error is not None:
            self.live.message = message.error
            self.dashboard.show_error(message.error_title or "The drill could not run", message.error, message.hint)
        self._refresh_all()

    def _end_run(self) -> None:
        was_live = self._control is not None
        if self._control is not None:
            self.dashboard.unregister_run(self._control)
            self._control = None
        self._run_active = False
        self._stopping = False
        self.live.end()
        if was_live:
            # Last reads: the tail of the logs, the spans exported at the workers' shutdown, and
            # the runner's own final scrapes.
            self._trace_rounds_left = TRACE_ROUNDS_AFTER_END
            self._tick_logs()
            self._tick_traces()
            if self.live.snapshot is not None and self.live.workers:
                self._read_final_scrapes(Path(self.live.snapshot), list(self.live.workers), self._run_number)
        self.refresh_bindings()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if event.worker.group == "runner":
            self._end_run()
            self._refresh_all()
        # A polling feed that fails once will likely fail on every tick: one window per feed
        # and run is enough to tell, a stack of identical ones would hide the dashboard.
        if event.worker.group not in self._failed_groups:
            self._failed_groups.add(event.worker.group)
            self.dashboard.worker_failed(event.worker)

    # ---- polling ----------------------------------------------------------------------------

    def _busy(self, group: str) -> bool:
        w = self._workers.get(group)
        return w is not None and not w.is_finished

    def _tick_clock(self) -> None:
        if self._run_active:
            self.query_one(RunHeader).elapsed = self.live.elapsed + (time.monotonic() - self._progress_mono)

    def _tick_metrics(self) -> None:
        urls = {n: w.metrics_url for n, w in self.live.workers.items() if w.metrics_url}
        # From "collecting" on, the runner has stopped the workers: nothing left to scrape.
        if not self._run_active or self.live.phase == "collecting" or not urls or self._busy("metrics"):
            return
        self._workers["metrics"] = self._scrape(urls, self._run_number)

    @work(thread=True, group="metrics", exit_on_error=False)
    def _scrape(self, urls: dict[str, str], run: int) -> None:
        taken_at, scrapes, errors = scrape_workers(urls, self._http)
        self.post_message(MetricsSampled(taken_at, scrapes, errors, run))

    @work(thread=True, group="metrics-final", exit_on_error=False)
    def _read_final_scrapes(self, snapshot: Path, workers: list[str], run: int) -> None:
        try:
            taken_at, scrapes = final_scrapes(snapshot, workers)
        except (OSError, ValueError) as exc:
            self.post_message(FeedFailed("metrics", f"cannot read the final scrapes in {snapshot}: {exc}"))
            return
        if scrapes and taken_at is not None:
            self.post_message(MetricsSampled(taken_at, scrapes, {}, run))

    def on_metrics_sampled(self, message: MetricsSampled) -> None:
        if message.run != self._run_number:
            return
        self.live.add_scrapes(message.taken_at, message.scrapes, message.errors)
        self._refresh_signals()
        self._refresh_checks()

    def _tick_logs(self) -> None:
        if self._logs_flushed or not self._tailer.sources or self._busy("logs"):
            return
        self._workers["logs"] = self._tail(self._tailer, not self._run_active, self._run_number)

    @work(thread=True, group="logs", exit_on_error=False)
    def _tail(self, tailer: LogTailer, final: bool, run: int) -> None:
        records: list[LogRecord] = []
        try:
            records = tailer.flush() if final else tailer.poll()
        except DrillError as exc:
            self.post_message(FeedFailed("logs", exc.message))
        # Posted even when empty: a final read must be acknowledged so the feed stops.
        self.post_message(LogsTailed(records, final, run))

    def on_logs_tailed(self, message: LogsTailed) -> None:
        if message.run != self._run_number:
            return
        if message.final:
            self._logs_flushed = True
        if not message.records:
            return
        records = sorted(message.records, key=lambda r: r.ts or "")
        self.buffer.extend(records)
        self.live.add_logs(records)
        self.query_one(LogsPanel).append(records)
        self._refresh_checks()

    def _tick_traces(self, *, force: bool = False) -> None:
        wanted = self._run_active or self._trace_rounds_left > 0 or force
        if not wanted or self._busy("traces"):
            return
        if not self._run_active and self._trace_rounds_left > 0:
            self._trace_rounds_left -= 1
        # The checklist's queries always; the panel's are the filter, or the same run queries.
        run_queries = self.live.trace_queries()
        panel = self._trace_filter if self._trace_filter is not None else run_queries
        queries = list(dict.fromkeys([*run_queries, *panel]))
        if not queries:
            return
        self._workers["traces"] = self._search(queries, list(panel), self._started_wall, self._run_number)

    def _trace_backend(self) -> TraceBackend:
        if self._backend is None:
            self._backend = self.dashboard.make_trace_backend()
        return self._backend

    @work(thread=True, group="traces", exit_on_error=False)
    def _search(self, queries: list[TraceQuery], panel: list[TraceQuery], since: float | None, run: int) -> None:
        results, errors = search_traces(self._trace_backend(), queries, since)
        if not get_current_worker().is_cancelled:
            self.post_message(TracesFetched(results, panel, errors, run))

    def on_traces_fetched(self, message: TracesFetched) -> None:
        if message.run != self._run_number:
            return
        spans = {q: [s for t in traces for s in t.spans] for q, traces in message.results.items()}
        self.live.add_trace_results(spans)
        for traces in message.results.values():
            for t in traces:
                self._cache_trace(t)
        if list(message.panel) == list(self._trace_filter if self._trace_filter is not None else message.panel):
            seen: dict[str, Trace] = {}
            for q in message.panel:
                for t in message.results.get(q, []):
                    seen.setdefault(t.trace_id, t)
            self._panel_traces = list(seen.values())
            self._refresh_traces(message.errors)
        if message.errors:
            self._feed_error("traces", message.errors[0])
        self._refresh_checks()

    def _cache_trace(self, trace: Trace) -> None:
        self._trace_cache[trace.trace_id] = trace
        self._trace_cache.move_to_end(trace.trace_id)
        while len(self._trace_cache) > TRACE_CACHE:
            self._trace_cache.popitem(last=False)

    def on_feed_failed(self, message: FeedFailed) -> None:
        self._feed_error(message.feed, message.error)

    def _feed_error(self, feed: str, text: str) -> None:
        # An unreachable source is expected under some drills: say it once per run, then keep
        # it visible in the panel's status line instead of repeating toasts.
        if feed not in self._feed_errors:
            self._feed_errors.add(feed)
            self.notify(text, title=f"{feed} source unavailable", severity="warning", markup=False)

    # ---- pivots and filters -----------------------------------------------------------------

    def on_trace_chosen(self, message: TraceChosen) -> None:
        self._filter_logs_by_trace(message.trace_id)
        if message.open_tree:
            self._open_trace(message.trace_id)
        else:
            self.query_one(LogsPanel).table.focus()

    def _filter_logs_by_trace(self, trace_id: str) -> None:
        self.query_one(LogsPanel).set_filter(f"trace_id={trace_id}")

    def on_log_line_chosen(self, message: LogLineChosen) -> None:
        if not message.trace_id:
            self.notify("This line was not logged under a trace (no trace_id).", title="No trace", markup=False)
            return
        self._open_trace(message.trace_id)

    def _open_trace(self, trace_id: str) -> None:
        trace = self._trace_cache.get(trace_id)
        if trace is not None:
            self._push_tree(trace)
            return
        self._load_trace(trace_id)

    @work(thread=True, exclusive=True, group="trace-load", exit_on_error=False)
    def _load_trace(self, trace_id: str) -> None:
        try:
            res = self._trace_backend().get_trace(trace_id)
        except DrillError as exc:
            self.post_message(TraceLoaded(trace_id, None, exc.message))
            return
        self.post_message(TraceLoaded(trace_id, res.traces[0] if res.traces else None))

    def on_trace_loaded(self, message: TraceLoaded) -> None:
        if message.trace is None:
            why = message.error or (f"trace {message.trace_id} is not in the trace store (yet): workers export spans "
                                    "in batches, try again in a few seconds")
            self.notify(why, title="Trace not found", severity="warning", markup=False)
            return
        self._cache_trace(message.trace)
        self._push_tree(message.trace)

    def _push_tree(self, trace: Trace) -> None:
        def done(result: str | None) -> None:
            if result:
                self._filter_logs_by_trace(result)
                self.query_one(LogsPanel).table.focus()

        self.app.push_screen(SpanTreeModal(trace), done)

    def on_trace_filter_submitted(self, message: TraceFilterSubmitted) -> None:
        self.apply_trace_filter(message.text)

    def apply_trace_filter(self, text: str) -> None:
        panel = self.query_one(TracesPanel)
        if not text:
            self._trace_filter = None
            panel.set_filter("")
        else:
            try:
                self._trace_filter = parse_trace_filter(text, self.live.outbox_event_ids, self.live.claim_batch_ids)
            except ValueError as exc:
                self.notify(str(exc), title="Trace filter", severity="warning", markup=False)
                return
            panel.set_filter(text)
        self._panel_traces = []
        self._refresh_traces()
        self._workers.pop("traces", None)  # a new question: do not wait for the previous answer
        self._tick_traces(force=True)

    def on_log_filter_submitted(self, message: LogFilterSubmitted) -> None:
        self.query_one(LogsPanel).set_filter(message.text)

    # ---- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self._run_active and not self._stopping
        if action in ("run_again", "clean_run", "back"):
            return not self._run_active
        if action == "screenshot":
            return self.live.snapshot is not None
        return True

    def action_stop(self) -> None:
        if self._control is not None and self._run_active:
            self._stopping = True
            self._control.stop.set()
            self.query_one(RunHeader).message = "stopping: the runner reverts the fault and stops the workers…"
            self.refresh_bindings()

    def action_run_again(self) -> None:
        self.start_run()

    def action_clean_run(self) -> None:
        self.notify("Removing leftover drill events, then running again.", title="Clean & run", markup=False)
        self.start_run(force_clean=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_step(self, by: int) -> None:
        self.query_one(StepBar).advance(by)

    def action_focus_panel(self, widget_id: str) -> None:
        self.query_one(f"#{widget_id}").focus()

    def action_filter_traces(self) -> None:
        self.query_one("#traces-filter", Input).focus()

    def action_filter_logs(self) -> None:
        self.query_one("#logs-filter", Input).focus()

    def action_pick_event(self) -> None:
        options = [(f"outbox_event_id={e}", f"event  {e}") for e in self.live.outbox_event_ids[:200]]
        options += [(f"claim_batch_id={b}", f"batch  {b}") for b in reversed(self.live.claim_batch_ids)]

        def done(value: str | None) -> None:
            if value:
                self.apply_trace_filter(value)
                self.query_one(TracesPanel).table.focus()

        self.app.push_screen(PickerModal("Search traces by one of this drill's ids", options), done)

    def action_screenshot(self) -> None:
        run_id = self.live.run_id
        if self.live.snapshot is None or run_id is None:
            return
        svg = self.app.export_screenshot()
        self._write_screenshot(Path(self.live.snapshot) / f"dashboard-{run_id}.svg", svg)

    @work(thread=True, group="screenshot", exit_on_error=False)
    def _write_screenshot(self, path: Path, svg: str) -> None:
        path.write_text(svg, encoding="utf-8")
        self.post_message(ScreenshotSaved(str(path)))

    def on_screenshot_saved(self, message: ScreenshotSaved) -> None:
        self.notify(message.path, title="Screenshot saved", markup=False)

    # ---- pushing state down ---------------------------------------------------------------------

    def _refresh_all(self) -> None:
        self._refresh_header()
        self._refresh_signals()
        self._refresh_checks()
        self._refresh_traces()

    def _refresh_header(self) -> None:
        header = self.query_one(RunHeader)
        live = self.live
        phase = live.phase
        if self._stopping:
            phase = "stopping"
        elif live.finished and live.verdict is None and phase not in ("verified", "failed"):
            phase = "ended"
        header.phase = phase
        header.elapsed = live.elapsed
        header.message = live.message
        header.worker_count = max(len(self.drill.workload.workers), len(live.workers))
        header.alive = live.alive if live.alive is not None else (len(live.workers) if self._run_active and live.workers else None)
        header.stack = self.dashboard.stack_mode
        pivots = {"claim_batch_id": live.claim_batch_ids, "outbox_event_id": live.outbox_event_ids, "entity_id": live.entity_ids}
        ids = {key: values[0] for key, values in pivots.items() if values}
        steps = self.query_one(StepBar)
        if ids != steps.ids:
            steps.ids = ids
        if live.verdict is not None:
            word = "PASS" if live.verdict.get("passed") else "FAIL"
            header.verdict = f"{word} · evidence {live.verdict.get('snapshot', live.snapshot)} · x saves a screenshot there"

    def _refresh_signals(self) -> None:
        panel = self.query_one(SignalsPanel)
        m = self.live.metrics
        panel.window = (self.live.armed_at, self.live.reverted_at)
        panel.views = [m.signal_view(s) for s in SIGNALS] if m.scrapes else []
        down = [f"{w}: {err}" for w, err in m.unreachable.items()]
        # Once the run is over the workers are stopped on purpose: their silence is no news.
        panel.note = ("not answering: " + "; ".join(down)) if down and self._run_active else ""

    def _refresh_checks(self) -> None:
        checklist = self.query_one(Checklist)
        checklist.checks = self.live.checks()
        box = self.query_one("#checks-box")
        if self.live.verdict is not None:
            box.border_title = f"Evidence checklist · verdict {'PASS' if self.live.verdict.get('passed') else 'FAIL'}"
        else:
            box.border_title = "Evidence checklist · live"
        box.border_subtitle = checklist.summary

    def _refresh_traces(self, errors: Sequence[str] = ()) -> None:
        panel = self.query_one(TracesPanel)
        if self._trace_filter is not None:
            what = "filter " + " | ".join(str(q) for q in self._trace_filter)
        elif self.live.outbox_event_ids:
            ids = ", ".join(short_id(e) for e in self.live.outbox_event_ids[:3])
            what = f"this drill's events ({ids}) and their batches"
        else:
            what = "waiting for the drill's events"
        status = f"{len(self._panel_traces)} trace(s) · {what}" + (f" · {errors[0]}" if errors else "")
        panel.show(self._panel_traces, self.live.armed_at, status)
