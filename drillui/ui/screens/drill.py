"""A drill run on screen: header, trainer's steps, signals, checklist, traces and logs.

Why it is built this way: the screen is a function of the run's event stream. The runner runs in
a thread worker; every event it emits (the metrics it sampled, the spans and log lines it saw,
the checks that changed, how the run ended) arrives here as one `RunEventReceived` message and is
folded into a `RunState`, the same fold `verify` and `replay` use. Nothing here queries the stack:
the panels show what the run recorded, so what a trainer sees live is what the record holds.
A paint tick redraws only the panels whose data changed, at most ten times a second, however
fast the events arrive.

A screen created with `autostart=False` shows recorded events fed with `feed` (snapshot tests,
the demo run) and starts no runner.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from drillui.errors import DrillError
from drillui.evidence.checks import Check
from drillui.evidence.signals import SIGNALS, drill_signal_views, signal_view
from drillui.evidence.state import RunState
from drillui.record.events import (
    AnswerGiven,
    ChecksChanged,
    Event,
    FaultArmed,
    FaultHeld,
    FaultReverted,
    GaugesProbed,
    HintGiven,
    LogLinesSeen,
    MetricsSampled,
    MetricsUnreachable,
    PromqlEvaluated,
    RunEnded,
    SpansSeen,
    StepChanged,
    TriggersWritten,
    fold_parts,
)
from drillui.record.snapshot import Snapshot
from drillui.runner.cleanup import RunRefused
from drillui.runner.infra import Infrastructure
from drillui.runner.promql import missing_text, promql_event, unavailable_event
from drillui.runner.runner import DirtyState, DrillRunner, RunOptions, StopSignal, scaled
from drillui.scenarios import Drill
from drillui.sources.traces import Trace
from drillui.ui.format import number, short_id, signed
from drillui.ui.messages import (
    LogFilterSubmitted,
    LogLineChosen,
    PromqlAnswered,
    PromqlPromptClosed,
    PromqlSubmitted,
    RunEventReceived,
    RunFinished,
    ScreenshotSaved,
    TraceChosen,
    TraceFilterSubmitted,
)
from drillui.ui.screens.modals import LogLineModal, PickerModal, SpanTreeModal
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.header import RunHeader, StepBar
from drillui.ui.widgets.logs import LogsPanel
from drillui.ui.widgets.promql import PromqlPanel
from drillui.ui.widgets.signals import SignalsPanel
from drillui.ui.widgets.traces import PIVOTS, TraceFilter, TracesPanel, parse_trace_filter
from drillui.ui.widgets.training import TrainingPanel

if TYPE_CHECKING:
    from drillui.ui.app import DrillApp

PAINT_EVERY = 0.1
TRACES_PAINT_EVERY = 0.5
INGEST_SLICE = 0.02
MAX_TRACE_ROWS = 200
"""Traces built for the table at most (each is one row or more; the table keeps 200 rows)."""
CLOCK_EVERY = 0.5
PANELS = ("header", "signals", "checks", "traces", "logs", "promql")
# What each kind of event can change on screen.
DIRTY: dict[type[Event], tuple[str, ...]] = {
    MetricsSampled: ("signals",),
    MetricsUnreachable: ("signals",),
    GaugesProbed: ("signals",),
    ChecksChanged: ("checks",),
    SpansSeen: ("traces",),
    LogLinesSeen: ("logs",),
    TriggersWritten: ("header", "traces"),
    FaultArmed: ("header", "signals", "traces"),
    FaultReverted: ("header", "signals"),
    AnswerGiven: ("checks",),
    HintGiven: ("checks",),
    PromqlEvaluated: ("promql",),
}


@dataclass(eq=False)  # identity: the app keeps a set of the runs in progress
class RunControl:
    """What the app needs to stop a run and wait until it has cleaned up (quit mid-drill)."""

    drill_id: str
    stop: StopSignal = field(default_factory=StopSignal)
    done: threading.Event = field(default_factory=threading.Event)
    runner: DrillRunner | None = None


class DrillScreen(Screen[None]):
    # Never a filter field: it would take the one-letter keys (s to stop, q to quit).
    AUTO_FOCUS = "#checklist"
    read_only: ClassVar[bool] = False
    """Watch and replay screens: they show a run, they never act on one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop", tooltip="Stop the drill: it ends as stopped, the fault reverted, the workers stopped"),
        Binding("R", "recover", "Recover", tooltip="Guided mode: recover the fault now; the events settle and the drill is judged"),
        Binding("plus", "top_up", "Top up", tooltip="Write more of the drill's trigger events while the fault is armed"),
        Binding("a", "apply_step", "Apply step", tooltip="Apply the current step: its trace or log query becomes the filter, "
                "its PromQL highlights the signal"),
        Binding("r", "run_again", "Run again", tooltip="Run the drill again"),
        Binding("c", "clean_run", "Clean+run", tooltip="Remove leftover drill events of an earlier run, then run again"),
        Binding("escape", "back", "Menu", tooltip="Back to the drill menu"),
        Binding("n", "step(1)", "Step", show=False, tooltip="Next trainer step (p: previous)"),
        Binding("p", "step(-1)", "Prev step", show=False, tooltip="Previous trainer step"),
        Binding("f", "filter_traces", "Trace filter", tooltip="Search traces by claim_batch_id=… or outbox_event_id=… (a prefix is enough)"),
        Binding("e", "pick_event", "Pick id", tooltip="Pick one of this drill's event or batch ids to search traces by"),
        Binding("slash", "filter_logs", "Log filter", tooltip="Filter the logs: free text and key=value terms"),
        Binding("x", "screenshot", "Screenshot", tooltip="Save a numbered SVG screenshot of the dashboard into the run's folder"),
        Binding("t", "focus_panel('traces-table')", "Traces", show=False, tooltip="Focus the traces table"),
        Binding("l", "focus_panel('logs-table')", "Logs", show=False, tooltip="Focus the logs table"),
        Binding("v", "focus_panel('checklist')", "Checklist", show=False,
                tooltip="Focus the evidence checklist (↑↓ or j/k to read each check's query)"),
        Binding("m", "promql", "PromQL", tooltip="Type a PromQL query: it runs over the drill's time range on the stack's "
                "Prometheus (a replay shows what the run recorded)"),
    ]

    def __init__(self, drill: Drill, *, autostart: bool = True, options: RunOptions | None = None) -> None:
        super().__init__()
        self.drill = scaled(drill, options.workers if options is not None else None)
        self.autostart = autostart
        self.options = options
        self.state = RunState(drill)
        self._control: RunControl | None = None
        self._run_active = False
        self._stopping = False
        self._event_mono = time.monotonic()
        self._dirty: set[str] = set(PANELS)
        self._traces_painted = 0.0
        self._traces_every = TRACES_PAINT_EVERY
        self._inbox: deque[tuple[int, Event]] = deque()
        self._inbox_lock = threading.Lock()
        self._inbox_posted = False
        self._trace_filter: TraceFilter | None = None
        self._want_tree: str | None = None
        self._run_number = 0
        self._error: str | None = None
        self._promql_pinned: PromqlEvaluated | None = None
        self._promql_pin = False
        """True: show `_promql_pinned` (a replay's recorded answer, one not recorded, or none with
        a note); False: the latest answer of the run."""
        self._promql_note = ""

    @property
    def dashboard(self) -> DrillApp:
        return cast("DrillApp", self.app)

    @property
    def run_number(self) -> int:
        """Which run of this screen the panels show (0: none started here, e.g. recorded events)."""
        return self._run_number

    # ---- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        yield RunHeader(id="run-header")
        yield StepBar(list(self.drill.steps), id="steps")
        # A training run's answers, hints and score, as the trainer sees them (shown once there are any).
        yield TrainingPanel(self.drill, "trainer", id="training")
        yield PromqlPanel(id="promql")
        # Two columns, each panel as tall as it needs: signals over traces, checklist over logs.
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with Vertical(id="signals-box"):
                    yield SignalsPanel(id="signals")
                yield TracesPanel(extra=tuple(self.drill.columns), id="traces")
            with Vertical(id="right"):
                with Vertical(id="checks-box"):
                    yield Checklist(id="checklist")
                yield LogsPanel(self.state.logs, workers=len(self.drill.workload.workers), extra=tuple(self.drill.columns),
                                worker_names=tuple(w.name for w in self.drill.workload.workers), id="logs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        header = self.query_one(RunHeader)
        header.drill_line = f"{self.drill.letter} · {self.drill.title}"
        header.worker_count = len(self.drill.workload.workers)
        self.query_one("#signals-box").border_title = "Signals · retry → failed → lag/age → stuck"
        self.query_one("#checks-box").border_title = "Evidence checklist"
        self.query_one("#traces").border_title = "Traces · by claim_batch_id / outbox_event_id"
        self.query_one("#logs").border_title = "Logs · every worker"
        self.paint()
        self.set_interval(PAINT_EVERY, self.paint)
        self.set_interval(CLOCK_EVERY, self._tick_clock)
        if self.autostart:
            self.start_run()

    # ---- the run ----------------------------------------------------------------------------

    def start_run(self, *, force_clean: bool = False) -> None:
        infra = self.dashboard.infra
        if infra is None:
            self.dashboard.show_error("The stack is not ready", self.dashboard.stack_summary or "the infrastructure has not started",
                                      "wait for the stack status to say ready, or read its error on the menu")
            return
        self.reset_view()
        self._run_number += 1
        self._control = RunControl(self.drill.id)
        self.dashboard.register_run(self._control)
        self._run_active = True
        self._stopping = False
        self._event_mono = time.monotonic()
        options = replace(self.options or self.dashboard.run_options, force_clean=force_clean)
        self.query_one(RunHeader).phase = "preparing"
        self._run_drill(infra, options, self._control, self._run_number)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="runner", exit_on_error=False)
    def _run_drill(self, infra: Infrastructure, options: RunOptions, control: RunControl, run: int) -> None:
        def forward(ev: Event) -> None:
            self.receive(ev, run)

        try:
            runner = DrillRunner(self.drill, infra, options, on_event=forward, stop=control.stop)
            control.runner = runner
            verdict = runner.run()
            self.post_message(RunFinished(verdict.state, run=run))
        except DirtyState as exc:
            # The CLI's hint names a flag; here the fix is a key, of the dialog itself.
            self.post_message(RunFinished(None, exc.title, exc.message, "press c (Clean+run): it removes the leftover "
                                          "drill events and runs the drill again", run=run, fix="clean_run"))
        except (RunRefused, DrillError) as exc:
            self.post_message(RunFinished(None, exc.title, exc.message, exc.hint, run=run))
        finally:
            # The runner has reverted the fault and stopped its workers by now (or raised after
            # doing so): whoever waits to quit may go on.
            control.done.set()

    def reset_view(self) -> None:
        """An empty run: a new state, every panel cleared (a new run, or a replay going back)."""
        self.state = RunState(self.drill)
        self.query_one(LogsPanel).set_buffer(self.state.logs)
        self._trace_filter = None
        self._want_tree = None
        self._error = None
        self.query_one(RunHeader).verdict = ""
        self.query_one(TracesPanel).set_filter("")
        self.query_one(LogsPanel).set_filter("")
        self._promql_pinned, self._promql_note, self._promql_pin = None, "", False
        self._dirty = set(PANELS)
        self._traces_painted = 0.0
        self.paint()

    def receive(self, ev: Event, run: int) -> None:
        """An event of run `run`, from any thread. Events wait in the screen's inbox and are
        folded in slices of at most `INGEST_SLICE` seconds, each slice one message: under a flood
        a key press waits for one slice, not for every event that arrived before it."""
        # One big poll (a second of a flooded log, a full page of the trace store) is folded in
        # parts, so that no part holds the screen for longer than a slice.
        parts = fold_parts(ev)
        with self._inbox_lock:
            self._inbox.extend((run, part) for part in parts)
            if self._inbox_posted:
                return
            self._inbox_posted = True
        self.post_message(RunEventReceived(ev, run))

    def on_run_event_received(self, message: RunEventReceived) -> None:
        self._ingest(INGEST_SLICE)

    def _ingest(self, budget: float) -> None:
        """Fold what waits in the inbox: for `budget` seconds (0: all of it), then yield."""
        deadline = time.perf_counter() + budget
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    self._inbox_posted = False
                    return
                run, ev = self._inbox.popleft()
            if run == self._run_number:
                self.apply(ev)
            if budget and time.perf_counter() > deadline:
                # The rest comes after what else is waiting (keys, the paint tick).
                self.post_message(RunEventReceived(ev, run))
                return

    def feed(self, events: Iterable[Event]) -> None:
        """Fold recorded events into the screen and paint them now (recorded runs, tests)."""
        for ev in events:
            self.apply(ev)
        self._traces_painted = 0.0  # recorded events: everything shows at once
        self.paint()

    def apply(self, ev: Event) -> None:
        self.state.apply(ev)
        self._event_mono = time.monotonic()
        self._dirty.add("header")
        self._dirty.update(DIRTY.get(type(ev), ()))
        if isinstance(ev, (FaultArmed, FaultHeld, FaultReverted, RunEnded)):
            self.refresh_bindings()  # recover / top up come and go with the fault
        if isinstance(ev, PromqlEvaluated) and ev.purpose != "check":
            # A new answer (live, watched or replayed) is what the panel shows next.
            self._promql_pinned, self._promql_note, self._promql_pin = None, "", False
        if isinstance(ev, StepChanged) and self.is_mounted:
            self.query_one(StepBar).index = ev.index  # the trainer's step, as recorded
        if isinstance(ev, SpansSeen) and self._want_tree and self.state.spans.trace(self._want_tree) is not None:
            trace = self.state.spans.trace(self._want_tree)
            self._want_tree = None
            if trace is not None:
                self._push_tree(trace)

    def on_run_finished(self, message: RunFinished) -> None:
        if message.run != self._run_number:
            return
        self._ingest(0)  # the run's last events before its end
        if self._control is not None:
            self.dashboard.unregister_run(self._control)
            self._control = None
        self._run_active = False
        self._stopping = False
        if message.error is not None:
            self._error = message.error
            actions = [("c", "Clean+run", "clean_run")] if message.fix == "clean_run" else []

            def then(result: str | None) -> None:
                if result == "clean_run":
                    self.action_clean_run()

            self.dashboard.show_error(message.error_title or "The drill could not run", message.error, message.hint,
                                      actions=actions, then=then)
        self._dirty = set(PANELS)
        self._traces_painted = 0.0
        self.paint()
        self.refresh_bindings()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        if event.worker.group == "runner":
            if self._control is not None:
                self.dashboard.unregister_run(self._control)
                self._control = None
            self._run_active = False
            self.refresh_bindings()
        self.dashboard.worker_failed(event.worker)

    def _tick_clock(self) -> None:
        if self._run_active and not self.state.finished:
            self.query_one(RunHeader).elapsed = self.state.elapsed + (time.monotonic() - self._event_mono)

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
        if message.record is None:
            return

        def then(trace_id: str | None) -> None:
            if trace_id:
                self._open_trace(trace_id)

        self.app.push_screen(LogLineModal(message.record), then)

    def _open_trace(self, trace_id: str) -> None:
        trace = self.state.spans.trace(trace_id)
        if trace is not None:
            self._push_tree(trace)
            return
        runner = self._control.runner if self._control is not None else None
        if runner is not None and runner._observers is not None:
            # Live: ask the runner to fetch it; it is recorded like every span, then shown.
            runner._observers.ask_trace_id(trace_id)
            self._want_tree = trace_id
            self.notify(f"trace {short_id(trace_id)} is not recorded yet: asked the trace store, it opens when it arrives",
                        title="Fetching the trace", markup=False)
            return
        self.notify(f"trace {trace_id} is not in this run's record (the workers may not have exported it)",
                    title="Trace not recorded", severity="warning", markup=False)

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
                flt = parse_trace_filter(text)
            except ValueError as exc:
                self.notify(str(exc), title="Trace filter", severity="warning", markup=False)
                return
            self._trace_filter = flt
            panel.set_filter(text)
            self._ask_runner(flt)
        self._dirty.add("traces")
        self._traces_painted = 0.0  # a filter the user typed shows at once
        self.paint()

    def _ask_runner(self, flt: TraceFilter) -> None:
        """Live: a pivot typed as a prefix of one of the run's ids is asked of the trace store too."""
        runner = self._control.runner if self._control is not None else None
        if runner is None or runner._observers is None:
            return
        known = {"outbox_event_id": self.state.outbox_event_ids.list(), "claim_batch_id": self.state.claim_batch_ids.list()}
        for key, value in flt.pivots():
            for full in [v for v in known[key] if v.startswith(value)][:5]:
                operation, attribute = PIVOTS[key]
                runner._observers.ask_traces(operation, attribute, full)

    def on_log_filter_submitted(self, message: LogFilterSubmitted) -> None:
        self.query_one(LogsPanel).set_filter(message.text)

    # ---- actions ------------------------------------------------------------------------------

    @property
    def runner(self) -> DrillRunner | None:
        return self._control.runner if self._control is not None and self._run_active else None

    READ_ONLY_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"stop", "recover", "top_up", "run_again", "clean_run", "screenshot", "step"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and action in self.READ_ONLY_ACTIONS:
            return False
        if action == "stop":
            return self._run_active and not self._stopping
        if action == "recover":
            return self._run_active and not self._stopping and self.state.held
        if action == "top_up":
            return self._run_active and not self._stopping and self.state.armed_at is not None and self.state.reverted_at is None
        if action in ("run_again", "clean_run", "back"):
            return not self._run_active
        if action == "screenshot":
            return self.state.snapshot is not None
        return True

    def request_stop(self, how: str) -> None:
        if self._control is not None and self._run_active:
            self._stopping = True
            self._control.stop.request(how)
            self.query_one(RunHeader).message = "stopping: the runner reverts the fault and stops the workers…"
            self.refresh_bindings()

    def action_stop(self) -> None:
        self.request_stop("key s")

    def action_run_again(self) -> None:
        self.start_run()

    def action_clean_run(self) -> None:
        self.notify("Removing leftover drill events, then running again.", title="Clean & run", markup=False)
        self.start_run(force_clean=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_recover(self) -> None:
        runner = self.runner
        if runner is not None and self.state.held:
            runner.recover_now()
            self.query_one(RunHeader).message = "recovering: the fault is reverted, the events settle, then the verdict"
            self.notify("The fault is reverted; the events settle and the drill is judged.", title="Recover", markup=False)

    def action_top_up(self) -> None:
        runner = self.runner
        if runner is not None:
            runner.top_up()
            self.notify("More trigger events are written.", title="Top up", markup=False)

    def action_step(self, by: int) -> None:
        bar = self.query_one(StepBar)
        bar.advance(by)
        runner = self.runner
        if runner is not None and self.drill.steps:
            runner.step(bar.index, self.drill.steps[bar.index].say)
        self.query_one(SignalsPanel).highlight = ""

    def action_apply_step(self) -> None:
        """The current step's query, applied: the filter it names, or the signal it watches."""
        bar = self.query_one(StepBar)
        if not self.drill.steps:
            self.notify("This drill has no trainer steps.", title="Apply step", markup=False)
            return
        step = self.drill.steps[bar.index]
        if step.trace_query:
            query = bar.fill(step.trace_query)
            self.apply_trace_filter(query)
            self.query_one(TracesPanel).table.focus()
        elif step.log_query:
            self.query_one(LogsPanel).set_filter(bar.fill(step.log_query))
            self.query_one(LogsPanel).table.focus()
        elif step.promql or step.signal:
            key, text = self._step_signal(step.signal, step.promql or "")
            panel = self.query_one(SignalsPanel)
            panel.highlight = key or ""
            self.notify(text, title=f"Step {bar.index + 1}: the signal", markup=False)
            if step.promql:
                self.ask_promql(step.promql, "step", bar.index)
        else:
            self.notify("This step has no query to apply: it is said aloud.", title="Apply step", markup=False)

    def _step_signal(self, name: str | None, promql: str) -> tuple[str | None, str]:
        """The signal a step is about (named, or the first one its PromQL reads) and its reading."""
        st = self.state
        for view in drill_signal_views(st):
            family = view.signal.metric or view.signal.mean or ""
            if name in (view.key, view.signal.label) or (name is None and family.split("{")[0] in promql):
                return view.signal.label, (f"{view.key}: now {number(view.value, view.unit)}, "
                                           f"change {signed(view.change, view.unit)}, peak {number(view.peak, view.unit)}")
        for sig in SIGNALS:
            if name == sig.key or (name is None and sig.metric in promql):
                v = signal_view(st, sig)
                text = f"{sig.label}: now {number(v.value, sig.unit)}, change since the start {signed(v.change, sig.unit)}"
                if v.by_reason:
                    text += " (" + ", ".join(f"{r} {signed(c)}" for r, c in v.by_reason) + ")"
                if v.peak is not None:
                    text += f", peak {number(v.peak, sig.unit)}"
                return sig.key, text
        return None, f"no panel signal for: {promql}"

    # ---- PromQL ---------------------------------------------------------------------------------

    def action_promql(self) -> None:
        found = self.query(PromqlPanel)
        if not found:
            return
        panel = found.first()
        steps = self.query_one(StepBar).steps
        step = steps[self.query_one(StepBar).index] if steps else None
        # The current step's query (of the steps on screen: a trainee's screen has none) is a good start to edit; what was typed before is kept.
        panel.open_prompt(None if panel.input.value else (step.promql if step is not None and step.promql else ""))

    def on_promql_submitted(self, message: PromqlSubmitted) -> None:
        if message.text:
            self.ask_promql(message.text, "prompt", None)

    def on_promql_prompt_closed(self, message: PromqlPromptClosed) -> None:
        self.query_one(PromqlPanel).close_prompt()
        self.query_one(Checklist).focus()

    def ask_promql(self, query: str, purpose: str, step_index: int | None) -> None:
        """Run `query` over the drill's time range (live), or show what the run recorded for it
        (a replay or a watcher has no Prometheus of its own)."""
        st = self.state
        if self.read_only:
            found = st.promql_result(step=step_index) if purpose == "step" else st.promql_result(query=query)
            self._promql_pinned, self._promql_pin = found, True
            recorded = len(st.promql)
            self._promql_note = "" if found is not None else (
                f"no result recorded for {'this step' if purpose == 'step' else 'this query'} in this run"
                + (f" ({recorded} other PromQL result(s) recorded: each shows here as the replay reaches it)" if recorded else ""))
            self._dirty.add("promql")
            self.paint()
            return
        if st.started_wall is None:
            self._show_promql(None, "start the drill first: PromQL runs over the drill's time range")
            return
        infra = self.dashboard.infra
        start = st.started_wall
        end = st.ended.wall if st.ended is not None else time.time()
        if infra is None or not infra.endpoints.prometheus_url:
            why = missing_text(infra) if infra is not None else "no Prometheus: the stack is not ready"
            self._show_promql(unavailable_event(query, purpose, why, start, end, step_index=step_index),
                              "the signals panel reads the same metrics from each worker's /metrics")
            return
        self._promql_note = "asking Prometheus…"
        self._dirty.add("promql")
        self._fetch_promql(infra.endpoints.prometheus_url, query, purpose, step_index, start, end, self.runner, self._run_number)

    @work(thread=True, exclusive=True, group="promql", exit_on_error=False)
    def _fetch_promql(self, url: str, query: str, purpose: str, step_index: int | None, start: float, end: float,
                      runner: DrillRunner | None, run: int) -> None:
        from drillui.sources.prometheus import PrometheusClient, range_step

        with PrometheusClient(url) as client:
            result = client.query_range(query, start, max(end, start + 1), range_step(start, end))
        event = promql_event(result, purpose, step_index=step_index)
        # Recorded through the runner's recorder: it comes back as a run event, like any other.
        recorded = runner is not None and runner.record_promql(event)
        self.post_message(PromqlAnswered(event, recorded, run))

    def on_promql_answered(self, message: PromqlAnswered) -> None:
        if message.run != self._run_number:
            return
        if message.recorded:
            if self._promql_note == "asking Prometheus…":
                self._promql_note = ""
                self._dirty.add("promql")
            return
        self._show_promql(message.event, "not recorded: the run has ended (its record is closed)")

    def _show_promql(self, event: PromqlEvaluated | None, note: str) -> None:
        self._promql_pinned, self._promql_note, self._promql_pin = event, note, True
        self._dirty.add("promql")
        self.paint()

    def action_focus_panel(self, widget_id: str) -> None:
        self.query_one(f"#{widget_id}").focus()

    def action_filter_traces(self) -> None:
        self.query_one("#traces-filter", Input).focus()

    def action_filter_logs(self) -> None:
        self.query_one("#logs-filter", Input).focus()

    def action_pick_event(self) -> None:
        options = [(f"outbox_event_id={e}", f"event  {e}") for e in self.state.outbox_event_ids.list()[:200]]
        options += [(f"claim_batch_id={b}", f"batch  {b}") for b in reversed(self.state.claim_batch_ids.list()[-200:])]

        def done(value: str | None) -> None:
            if value:
                self.apply_trace_filter(value)
                self.query_one(TracesPanel).table.focus()

        self.app.push_screen(PickerModal("Search traces by one of this drill's ids", options), done)

    def action_screenshot(self) -> None:
        if self.state.snapshot is None:
            return
        svg = self.app.export_screenshot()
        self._write_screenshot(Path(self.state.snapshot), svg)

    @work(thread=True, group="screenshot", exit_on_error=False)
    def _write_screenshot(self, folder: Path, svg: str) -> None:
        path = Snapshot.open(folder).new_screenshot_path()
        path.write_text(svg, encoding="utf-8")
        self.post_message(ScreenshotSaved(str(path)))

    def on_screenshot_saved(self, message: ScreenshotSaved) -> None:
        self.notify(message.path, title="Screenshot saved", markup=False)

    # ---- painting -------------------------------------------------------------------------------

    def paint(self) -> None:
        """Redraw the panels whose data changed since the last paint."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        if "header" in dirty:
            self._paint_header()
        if "signals" in dirty:
            self._paint_signals()
        if "checks" in dirty:
            self._paint_checks()
        if "traces" in dirty:
            # The table is rebuilt whole: under a span flood, at most a few times a second.
            now = time.monotonic()
            if now - self._traces_painted >= self._traces_every:
                self._traces_painted = now
                self._paint_traces()
                took = time.monotonic() - now
                # A rebuild that costs more than a slice of the screen's time waits longer next time.
                self._traces_every = TRACES_PAINT_EVERY if took < 0.03 else 2 * TRACES_PAINT_EVERY
            else:
                self._dirty.add("traces")
        if "logs" in dirty:
            self._paint_logs()
        if "promql" in dirty:
            shown = self._promql_pinned if self._promql_pin else self.state.promql_last
            # A screen that composes its own layout (e.g. a blind trainee's) may leave the panel out.
            for panel in self.query(PromqlPanel):
                panel.show(shown, self._promql_note)

    def _paint_header(self) -> None:
        header = self.query_one(RunHeader)
        st = self.state
        phase = st.phase
        if self._stopping and not st.finished:
            phase = "stopping"
        elif st.finished:
            phase = st.end_state or "ended"
        header.phase = phase
        header.elapsed = st.elapsed
        header.hold_until = st.hold_until if st.held else None
        header.controls = not self.read_only
        header.held = st.held and not self._stopping
        header.message = self._error or st.message
        header.worker_count = max(len(self.drill.workload.workers), len(st.workers))
        header.alive = st.alive if st.workers else None
        header.stack = self.dashboard.stack_mode
        ids = {k: v for k, v in (("claim_batch_id", st.claim_batch_ids.first()), ("outbox_event_id", st.outbox_event_ids.first()),
                                 ("entity_id", st.entity_ids.first())) if v}
        steps = self.query_one(StepBar)
        if ids != steps.ids:
            steps.ids = ids
        if st.ended is not None:
            word = {"passed": "PASS", "failed": "FAIL"}.get(st.ended.state, st.ended.state.upper())
            header.verdict = f"{word} · {st.ended.why} · evidence {st.snapshot}" + ("" if self.read_only else " · x saves a screenshot there")

    def _paint_signals(self) -> None:
        panel = self.query_one(SignalsPanel)
        st = self.state
        panel.window = (st.armed_at, st.reverted_at)
        panel.views = [signal_view(st, s) for s in SIGNALS] if st.metrics.samples else []
        panel.drill_views = drill_signal_views(st) if st.metrics.samples else []
        down = [f"{w}: {err}" for w, err in st.metrics.unreachable.items() if st.workers.get(w) and st.workers[w].alive]
        # Once a worker is stopped its silence is no news.
        panel.note = ("not answering: " + "; ".join(down)) if down and not st.finished else ""

    def _paint_checks(self) -> None:
        st = self.state
        if self.drill.questions and (st.trainee or st.answers or st.hints):
            panel = self.query_one(TrainingPanel)
            panel.display = True
            panel.border_title = f"Training · {st.trainee or 'trainee'} · questions, answers and hints as they arrive"
            panel.show(st)
        checklist = self.query_one(Checklist)
        checklist.checks = [Check.from_json(c) for c in self.state.checks.values()]
        box = self.query_one("#checks-box")
        ended = self.state.ended
        if ended is not None:
            box.border_title = f"Evidence checklist · {ended.state}"
        else:
            box.border_title = "Evidence checklist · live"
        box.border_subtitle = checklist.summary

    def _paint_traces(self) -> None:
        panel = self.query_one(TracesPanel)
        st = self.state
        if self._trace_filter is not None:
            traces = self._trace_filter.traces(st.spans.traces())
            what = f"filter {self._trace_filter}"
            if not traces:
                what += " · nothing recorded matches (yet)"
            status = f"{len(traces)} trace(s) · {what}"
        else:
            # Only the newest traces a table can show are built, however many are recorded.
            traces = st.spans.latest(MAX_TRACE_ROWS)
            if len(st.outbox_event_ids):
                ids = ", ".join(short_id(e) for e in st.outbox_event_ids.list()[:3])
                what = f"this drill's events ({ids}) and their batches"
            else:
                what = "waiting for the drill's events"
            total = len(st.spans.by_trace)
            status = f"{total} trace(s) · {what}" + (f" · the newest {len(traces)} shown" if total > len(traces) else "")
        if st.spans.omitted:
            status += f" · {st.spans.omitted} span(s) past the record's budget not kept"
        panel.show(traces, st.armed_at, status)

    def _paint_logs(self) -> None:
        self.query_one(LogsPanel).append()
