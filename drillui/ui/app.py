"""The dashboard app: owns the infrastructure and the running drills, wires screens and errors.

Why it is only wiring: the screens do the showing, `feeds` does the fetching, `LiveRun` does the
thinking. The app keeps what outlives a screen: the infrastructure, opened once in a thread worker
at startup and held open (ExitStack) until quit; the set of running drills, so quitting mid-drill
first stops each run and waits until its runner has reverted the fault and stopped its workers;
and the one error path every worker failure ends in (a titled modal, text escaped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from drillui.errors import DrillError
from drillui.runner.infra import Infrastructure, open_infrastructure
from drillui.runner.runner import RunOptions
from drillui.scenarios import Catalog, Drill, load_catalog
from drillui.settings import DrillSettings
from drillui.ui.commands import DrillCommands
from drillui.ui.messages import StackFailed, StackReady, StackStatusChanged
from drillui.ui.prefs import DrillChoices, load_prefs, load_theme, save_prefs, save_theme
from drillui.ui.screens.drill import DrillScreen, RunControl
from drillui.ui.screens.help import HelpScreen
from drillui.ui.screens.menu import MenuScreen
from drillui.ui.screens.modals import ErrorModal
from drillui.ui.screens.options import RunOptionsModal
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.traces import TracesPanel

TRAINEE_KEYS = (
    Binding("a", "answer", "Answer a question (1-9: that question)"),
    Binding("h", "hint", "Show the next hint (it costs points)"),
    Binding("R", "recover", "Recover the fault once you have found the cause"),
)
GENERIC_STACK_FIX = (
    "give drillui a writable state folder (--state-dir or DRILLUI_STATE_DIR), free the ports it needs, or point "
    "DATABASE_URL / ES_URL / JAEGER_URL / OTEL_EXPORTER_OTLP_ENDPOINT at servers that run; then start drillui again"
)
MIN_WIDTH, MIN_HEIGHT = 100, 30
# How long quitting waits for a running drill to revert its fault and stop its workers.
STOP_TIMEOUT_SECONDS = 90.0


class DrillApp(App[int]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "drillui"
    # Typed by Textual itself; ruff cannot see that they are class-level settings.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (140, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]  # noqa: RUF012

    # Ctrl+P: drillui's own actions (run a drill, recover, apply the step, filter by an id,
    # screenshot, replay, PromQL) beside Textual's (the theme picker, the keys, quit).
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {DrillCommands}  # noqa: RUF012 - Textual's class-level setting
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", tooltip="Every key of the dashboard"),
        Binding("q", "quit", "Quit", tooltip="Quit: a running drill is stopped and cleaned up first"),
        Binding("ctrl+q", "quit('Ctrl+Q')", "Quit", show=False, priority=True, tooltip="Quit (also from a text field)"),
        Binding("ctrl+c", "quit('Ctrl+C')", "Quit", show=False, priority=True, tooltip="Quit: a running drill is stopped and cleaned up first"),
    ]

    stack_state: reactive[str] = reactive("none")
    stack_summary: reactive[str] = reactive("")
    stack_detail: reactive[str] = reactive("")

    def __init__(
        self,
        catalog: Catalog,
        *,
        settings: DrillSettings | None = None,
        snapshots: Path = Path("snapshots"),
        infra: Infrastructure | None = None,
        run_options: RunOptions | None = None,
        start_stack: bool = True,
    ) -> None:
        """`infra`: a ready infrastructure (tests); else the stack is opened at startup unless
        `start_stack` is False (recorded-data previews). `run_options` is the template of each run
        (its `snapshots` is replaced by `snapshots`)."""
        super().__init__()
        self.catalog = catalog
        self.settings = settings or DrillSettings.build()
        self.snapshots = snapshots
        self.infra = infra
        # The dashboard's pace is the trainer's (guided) unless told otherwise.
        self.run_options = replace(run_options or RunOptions(guided=True), snapshots=snapshots)
        self._start_stack = start_stack and infra is None
        self._exit_stack = ExitStack()
        self._stack_opened = threading.Event()
        self._runs: set[RunControl] = set()
        self._runs_lock = threading.Lock()
        self._quitting = False
        self._cleaned = False
        self.prefs: dict[str, DrillChoices] = {}
        self._stack_lines: list[str] = []
        self._when_ready: list[Callable[[], None]] = []
        self._theme_loaded = False

    # ---- startup ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.first_screens()
        if self.infra is not None:
            self.stack_state, self.stack_summary = "ready", f"ready: {self.infra.mode} · {self._prometheus_word()}"
            self.stack_detail = self._endpoints_line(self.infra)
            self._stack_opened.set()
        elif self._start_stack:
            self.stack_state, self.stack_summary = "starting", "opening the infrastructure…"
            self._open_stack()
        else:
            self.stack_state, self.stack_summary = "none", "not started (preview)"
            self._stack_opened.set()

    def first_screens(self) -> None:
        """What the app opens on (the viewer apps open a replay or a watcher instead)."""
        self._load_prefs()
        self.push_screen(MenuScreen(self.catalog, self.snapshots))

    @property
    def stack_mode(self) -> str:
        return f"stack {self.infra.mode}" if self.infra is not None else f"stack {self.stack_state}"

    def _prometheus_word(self) -> str:
        """The stack line's word on Prometheus: it runs, or how to get it."""
        from drillui.stack.prometheus import INSTALL_HINT

        if self.infra is not None and self.infra.endpoints.prometheus_url:
            return "Prometheus: PromQL runs"
        return f"no Prometheus: PromQL steps cannot run ({INSTALL_HINT})"

    @staticmethod
    def _endpoints_line(infra: Infrastructure) -> str:
        from drillui.redact import redact_url

        e = infra.endpoints
        line = f"postgres {redact_url(e.database_url)} · engine {redact_url(e.es_url)} · traces {redact_url(e.jaeger_url)}"
        # Prometheus is optional: say whether it runs, and when it does not, how to get it.
        if e.prometheus_url:
            return f"{line} · prometheus {redact_url(e.prometheus_url)}"
        return f"{line} · no prometheus ({infra.prometheus_note or 'none'}): PromQL steps cannot run"

    @work(thread=True, exclusive=True, group="stack", exit_on_error=False)
    def _open_stack(self) -> None:
        began = time.monotonic()

        def status(text: str) -> None:
            self.post_message(StackStatusChanged(text))

        try:
            infra = self._exit_stack.enter_context(open_infrastructure(self.settings, on_status=status))
        except DrillError as exc:
            self.post_message(StackFailed(exc.title, exc.message, exc.hint))
            return
        finally:
            self._stack_opened.set()
        self.infra = infra
        self.post_message(StackReady(infra.mode, time.monotonic() - began))

    def on_stack_status_changed(self, message: StackStatusChanged) -> None:
        if self.stack_state == "starting":
            self._stack_lines = [*self._stack_lines[-9:], message.text]
            self.stack_detail = message.text

    def on_stack_ready(self, message: StackReady) -> None:
        self.stack_state = "ready"
        self.stack_summary = f"ready in {message.seconds:.1f}s: {message.mode} · {self._prometheus_word()}"
        # What started and how long each part took, then where it answers.
        parts = [line for line in self._stack_lines if ": " in line and not line.startswith("stack ready")]
        endpoints = self._endpoints_line(self.infra) if self.infra is not None else ""
        self.stack_detail = " · ".join([*parts, endpoints]) if parts else endpoints
        pending, self._when_ready = self._when_ready, []
        for then in pending:
            then()

    def on_stack_failed(self, message: StackFailed) -> None:
        hint = message.hint or GENERIC_STACK_FIX
        self.stack_state = "failed"
        self.stack_summary = f"{message.title}: {message.message}"
        self.stack_detail = f"fix: {hint}"
        self.show_error(message.title, message.message, hint)

    # ---- drills -------------------------------------------------------------------------------

    def open_drill(self, drill: Drill, *, ask: bool = True) -> None:
        """Run a drill: with its run options form first (`ask`), else with the remembered ones."""
        if self.infra is None:
            self.show_error("The stack is not ready", self.stack_summary or "the infrastructure has not started",
                            "wait until the stack status says ready" if self.stack_state == "starting" else
                            "read the stack status on the menu, fix it, and start drillui again")
            return
        choices = self.prefs.get(drill.id) or DrillChoices(guided=self.run_options.guided)

        def start(chosen: DrillChoices | None) -> None:
            if chosen is None:
                return
            self.prefs[drill.id] = chosen
            self._save_prefs(dict(self.prefs))
            try:
                screen = DrillScreen(drill, options=chosen.apply(self.run_options))
            except DrillError as exc:
                self.show_error(exc.title, exc.message, exc.hint)
                return
            # Kept after Esc, so the last run of a drill can be reopened from the menu.
            name = f"run-{drill.id}"
            if name in self._installed_screens:
                old = self._installed_screens[name]
                if old in self.screen_stack:
                    self.notify("That drill's screen is open.", markup=False)
                    return
                self.uninstall_screen(name)
            self.install_screen(screen, name)
            self.push_screen(name)

        if ask:
            self.push_screen(RunOptionsModal(drill, choices), start)
        else:
            start(choices)

    def open_training(self) -> None:
        from drillui.ui.screens.training import TrainPickScreen

        self.push_screen(TrainPickScreen(self.catalog))

    def start_training(self, drill: Drill, *, trainee: str | None = None, hold: float | None = None) -> None:
        """A blind training run of `drill`: the trainee's name first (unless given), then the
        trainee's screen. Waits for the stack if it is still starting."""
        from drillui.ui.screens.training import MAX_NAME, TextInputModal, TraineeScreen, training_options

        if self.infra is None:
            if self.stack_state == "starting":
                self.notify("The stack is starting: the drill begins once it is ready.", title="Training", markup=False)
                # The latest pick only: picking twice while the stack starts is one drill, not two.
                self._when_ready[:] = [lambda: self.start_training(drill, trainee=trainee, hold=hold)]
                return
            self.show_error("The stack is not ready", self.stack_summary or "the infrastructure has not started",
                            "read the stack status, fix it, and start drillui again")
            return

        def begin(name: str | None) -> None:
            if not name:
                return
            who = name.strip()[:MAX_NAME]
            self.push_screen(TraineeScreen(drill, options=training_options(self.run_options, who, hold)))

        if trainee:
            begin(trainee)
        else:
            self.push_screen(TextInputModal("Your name, please (it goes with your answers and score)",
                                            "Enter to start the drill · Esc to go back", placeholder="e.g. Ana",
                                            max_length=MAX_NAME), begin)

    def reopen_run(self, drill: Drill) -> bool:
        """The screen of the drill's last run in this dashboard, as it was left."""
        name = f"run-{drill.id}"
        if name not in self._installed_screens:
            return False
        self.push_screen(name)
        return True

    @property
    def prefs_folder(self) -> Path:
        from drillui.stack.stack import default_state_dir

        return self.settings.state_dir or default_state_dir(self.settings.environ)

    @work(thread=True, group="prefs", exit_on_error=False)
    def _load_prefs(self) -> None:
        loaded = load_prefs(self.prefs_folder)
        theme = load_theme(self.prefs_folder)
        self.call_from_thread(self._merge_prefs, loaded)
        self.call_from_thread(self._apply_theme, theme)

    def _apply_theme(self, theme: str | None) -> None:
        if theme is not None and theme in self.available_themes and theme != self.theme:
            self.theme = theme
        self._theme_loaded = True

    def _theme_changed(self, theme: object) -> None:
        # The remembered theme is applied first; only a change made after that is saved.
        if self._theme_loaded:
            self._save_theme(self.theme)

    @work(thread=True, group="prefs-theme", exit_on_error=False)
    def _save_theme(self, theme: str) -> None:
        try:
            save_theme(self.prefs_folder, theme)
        except OSError:
            return  # as with the run options: a read-only state folder only loses the choice

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Textual's screenshot writes to the current folder; drillui's own (in the palette, and
        # `x`) writes into the run's folder, numbered.
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":
                yield command

    def replay_last(self, drill_id: str | None) -> None:
        """Replay the newest recorded run of a drill (or of any drill) on the run screen."""
        self._load_replay(drill_id)

    @work(thread=True, exclusive=True, group="replay-load", exit_on_error=False)
    def _load_replay(self, drill_id: str | None) -> None:
        from drillui.evidence.verify import recorded_drill
        from drillui.record.reader import read_run
        from drillui.record.snapshot import latest_run

        ids = [drill_id] if drill_id else [d.id for d in self.catalog.drills]
        found = [p for p in (latest_run(self.snapshots, i) for i in ids) if p is not None]
        if not found:
            self.call_from_thread(self.notify, f"no recorded run under {self.snapshots}", title="Replay", markup=False)
            return
        folder = max(found, key=lambda p: p.name)
        try:
            run = read_run(folder)
            drill, _ = recorded_drill(run, next((d for d in self.catalog.drills if d.id == folder.parent.name), None))
        except (DrillError, ValueError) as exc:
            self.call_from_thread(self.show_error, "Cannot replay that run", str(exc))
            return
        self.call_from_thread(self._push_replay, drill, run)

    def _push_replay(self, drill: Drill, run: Any) -> None:
        from drillui.ui.viewer import ReplayScreen

        self.push_screen(ReplayScreen(drill, run))

    def _merge_prefs(self, loaded: dict[str, DrillChoices]) -> None:
        # Choices made while the file was read win over the remembered ones.
        self.prefs.update({k: v for k, v in loaded.items() if k not in self.prefs})

    @work(thread=True, group="prefs-save", exit_on_error=False)
    def _save_prefs(self, prefs: dict[str, DrillChoices]) -> None:
        try:
            save_prefs(self.prefs_folder, prefs)
        except OSError:
            return  # remembering is a convenience: a read-only state folder only loses it

    def on_resize(self, event: events.Resize) -> None:
        small = event.size.width < MIN_WIDTH or event.size.height < MIN_HEIGHT
        self.set_class(small, "-too-small")
        for notice in self.screen.query("#too-small"):
            if isinstance(notice, Static):
                notice.update(f"This terminal is {event.size.width}×{event.size.height}: drillui needs at least "
                              f"{MIN_WIDTH}×{MIN_HEIGHT}. Enlarge the window or make the font smaller.")

    def register_run(self, control: RunControl) -> None:
        with self._runs_lock:
            self._runs.add(control)

    def unregister_run(self, control: RunControl) -> None:
        with self._runs_lock:
            self._runs.discard(control)

    # ---- errors -------------------------------------------------------------------------------

    def show_error(self, title: str, message: str, hint: str | None = None, *,
                   actions: Sequence[tuple[str, str, str]] = (), then: Callable[[str | None], None] | None = None) -> None:
        """The one error path: a titled modal; `actions` offer the fix as a key of the dialog."""
        self.push_screen(ErrorModal(title, message, hint, actions), then)

    def worker_failed(self, worker: Worker[Any]) -> None:
        """The one place unexpected worker failures end: a titled modal, never a crash."""
        error = worker.error
        if worker.group == "stack":
            self.stack_state, self.stack_summary = "failed", f"{type(error).__name__}: {error}"
        if isinstance(error, DrillError):
            self.show_error(error.title, error.message, error.hint)
        else:
            self.show_error(f"Unexpected error in {worker.name or worker.group}", f"{type(error).__name__}: {error}",
                            "this is a bug in drillui: the run's snapshot folder and this message help to report it")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.worker_failed(event.worker)

    # ---- keys ---------------------------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen([
            ("Everywhere", list(self.BINDINGS)),
            ("Drill menu", [*MenuScreen.BINDINGS, Binding("enter", "run", "Run the highlighted drill"),
                            Binding("up,down", "move", "Choose a drill")]),
            ("Running drill", list(DrillScreen.BINDINGS)),
            ("Training (the trainee's screen)", [*TRAINEE_KEYS]),
            ("Traces panel", [Binding("enter", "tree", "Span tree of the trace (and filter the logs to it)"),
                              *TracesPanel.BINDINGS]),
            ("Logs panel", [Binding("enter", "trace", "Open the trace of the line"), Binding("j,k", "move", "Down / up")]),
            ("Checklist", list(Checklist.BINDINGS)),
            ("PromQL prompt (m)", [Binding("enter", "run", "Run the query over the drill's time range (a replay: show what the run recorded)"),
                                   Binding("escape", "leave", "Back to the dashboard; the answer stays under the step")]),
            ("Lists", [Binding("j,k", "move", "Down / up in the drill list, the tables, the checklist, the span tree, pickers")]),
            ("Command palette", [Binding("ctrl+p", "command_palette", "Run a drill, recover, apply the step, filter by an id, "
                                         "screenshot, replay the last run, PromQL; and Textual's theme picker (remembered)")]),
            ("Filters", [Binding("enter", "apply", "Apply the filter"), Binding("escape", "leave", "Back to the table")]),
        ]))

    def on_unmount(self) -> None:
        # However the app ends, ask every run to stop now; `cleanup` then waits for them.
        with self._runs_lock:
            for control in self._runs:
                control.stop.request("dashboard closed")

    def stop_runs(self, how: str) -> None:
        """Ask every run to stop (safe from a signal handler: no lock, no I/O)."""
        for control in list(self._runs):
            control.stop.request(how)

    async def action_quit(self, how: str = "key q") -> None:
        if self._quitting:
            self.notify("Still cleaning up: reverting faults and stopping workers…", title="Quitting", markup=False)
            return
        self._quitting = True
        with self._runs_lock:
            running = bool(self._runs)
            for control in self._runs:
                control.stop.request(how)
        if not running and not self._start_stack:
            self.exit(0)
            return
        if running:
            self.notify("Stopping the drill: reverting the fault and stopping its workers…", title="Quitting", markup=False)
        self.stack_state, self.stack_summary = "stopping", "stopping…"
        self._quit_in_background()

    @work(thread=True, exclusive=True, group="shutdown", exit_on_error=False)
    def _quit_in_background(self) -> None:
        self.cleanup()
        self.call_from_thread(self.exit, 0)

    def cleanup(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Blocking: stop every run, wait until each has cleaned up, then close the stack.

        Called from the quit worker, and again (a no-op by then) after the app has exited, so
        that even an app that crashed leaves no worker process or fault behind.
        """
        with self._runs_lock:
            runs = list(self._runs)
        for control in runs:
            control.stop.request("dashboard closed")
        for control in runs:
            control.done.wait(timeout)
        if self._start_stack:
            self._stack_opened.wait(timeout)
        with self._runs_lock:
            if self._cleaned:
                return
            self._cleaned = True
        self._exit_stack.close()


def run_dashboard(settings: DrillSettings) -> int:
    """`drillui` with no subcommand: the dashboard on the chosen infrastructure (embedded by
    default, `--infra docker` for the compose stack)."""
    app = DrillApp(load_catalog(settings.catalog_path()), settings=settings)
    return run_guarded(app)


class TrainingApp(DrillApp):
    """`drillui train`: the trainer's pick (or the drill given), the name, the blind screen."""

    def __init__(self, catalog: Catalog, *, drill: Drill | None, surprise: bool, trainee: str | None,
                 hold: float | None, **kw: Any) -> None:
        super().__init__(catalog, **kw)
        self.first_drill, self.surprise, self.trainee, self.hold = drill, surprise, trainee, hold

    def first_screens(self) -> None:
        from drillui.ui.screens.training import TrainPickScreen, surprise

        self._load_prefs()
        self.push_screen(TrainPickScreen(self.catalog, trainee=self.trainee, hold=self.hold, can_go_back=False))
        drill = surprise(self.catalog) if self.surprise else self.first_drill
        if drill is not None:
            # After on_mount: by then the stack is starting, and the drill waits for it.
            chosen = drill
            self.call_after_refresh(lambda: self.start_training(chosen, trainee=self.trainee, hold=self.hold))


def run_training(settings: DrillSettings, *, snapshots: Path, drill: Drill | None, surprise: bool,
                 trainee: str | None, hold: float | None) -> int:
    app = TrainingApp(load_catalog(settings.catalog_path()), drill=drill, surprise=surprise, trainee=trainee, hold=hold,
                      settings=settings, snapshots=snapshots)
    return run_guarded(app)


def quiet_collector() -> None:
    """Keep the cyclic garbage collector from freezing the screen under a flood.

    A drill floods the dashboard with spans and log lines: hundreds of thousands of live objects,
    nearly all of them acyclic and freed by reference counting. With the default thresholds a full
    collection walks all of them every few seconds and held the event loop for up to 330 ms
    (bench/bench_dashboard.py, 5,000 spans/s). What exists at startup is frozen out of the scans
    and full collections run far less often; every buffer is bounded, so memory stays bounded.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_guarded(app: DrillApp) -> int:
    """Run an app so that SIGTERM and SIGHUP end it the honest way, even without its terminal.

    A closed terminal (SIGHUP: the window or the ssh session went away) leaves Textual unable to
    draw or read, and its own shutdown may never complete. So the handler only asks every run to
    stop (recorded as stopped by SIGTERM/SIGHUP), and a watchdog thread waits until each run
    has reverted its fault and stopped its workers, closes the stack, asks the app to exit, and
    ends the process itself if the app cannot.
    """
    import os
    import signal

    fired: list[int] = []

    def watchdog(signum: int) -> None:
        app.cleanup()  # waits for every run to clean up, then closes the stack
        try:
            app.call_from_thread(app.exit, 128 + signum)
        except Exception:  # noqa: BLE001 - the loop may be gone or wedged: exit below either way
            pass
        time.sleep(3.0)
        os._exit(128 + signum)  # the app did not manage to exit by itself (no terminal left)

    def on_signal(signum: int, frame: object) -> None:
        app.stop_runs("SIGHUP" if signum == signal.SIGHUP else "SIGTERM")
        if not fired:
            fired.append(signum)
            threading.Thread(target=watchdog, args=(signum,), name="drillui-signal-watchdog", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    quiet_collector()
    try:
        code = app.run()
    finally:
        app.cleanup()
        for sig, old in previous.items():
            signal.signal(sig, old)
    return (code or 0) if not fired else 128 + fired[0]
