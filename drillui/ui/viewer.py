"""Read-only views of a run: `drillui replay` (a recorded run) and `drillui watch` (one in progress).

Why here and so small: the live run screen is already a function of the run's events. A replay
feeds it the recorded events on a player's clock (pause, step, seek, speed); a watcher feeds it
the events of another process's run as its `_events.jsonl` grows. Neither can stop, recover or
change the run: their screens are the run screen with its controls off. Many watchers can follow
one run at once, each reading the file; `drillui serve` hands one watcher to each browser tab.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

from drillui.errors import DrillError
from drillui.record.eventlog import follow_events, read_events
from drillui.record.events import Event, RunEnded, RunStarted
from drillui.record.player import Player, parse_seek
from drillui.record.reader import RecordedRun
from drillui.record.snapshot import EVENTS, RESULT, RUN_ID_PATTERN
from drillui.scenarios import Catalog, Drill, parse_drill
from drillui.settings import DrillSettings
from drillui.training.answers import HEARTBEAT_SECONDS  # a run whose log stopped growing lost its runner
from drillui.ui.app import DrillApp
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.widgets.timeline import TimelineBar

TICK_SECONDS = 0.1
SCAN_SECONDS = 1.0


# ---- replay -------------------------------------------------------------------------------------


class SeekModal(ModalScreen[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Static(Content.styled("Seek to", "bold"), id="modal-title")
            yield Input(placeholder="12.5 (from the start) · +5s / -10s (from now) · 1m30s", id="seek-input")
            yield Static(Content.styled("Enter: go  Esc: close", "$foreground-muted"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_close(self) -> None:
        self.dismiss(None)


class ReplayScreen(DrillScreen):
    """A recorded run, drawn as it was at the player's time."""

    read_only = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "play_pause", "Pause/play", tooltip="Pause or play the replay"),
        Binding("left_square_bracket", "step_event(-1)", "Prev event", tooltip="The previous event worth stopping at (paused)"),
        Binding("right_square_bracket", "step_event(1)", "Next event", tooltip="The next event worth stopping at (paused)"),
        Binding("S", "seek", "Seek", tooltip="Go to a moment: 12.5, +5s, -10s, 1m30s"),
        Binding("minus", "speed(-1)", "Slower", tooltip="Play slower (½×, 1×, 2×, 4×)"),
        Binding("plus,equals_sign", "speed(1)", "Faster", tooltip="Play faster (½×, 1×, 2×, 4×)"),
        Binding("home", "seek_to(0)", "Start", show=False, tooltip="Back to the start of the run"),
        Binding("end", "seek_to(-1)", "End", show=False, tooltip="To the end of the run"),
    ]

    def __init__(self, drill: Drill, run: RecordedRun, *, playing: bool = True, start_at: float | None = None) -> None:
        super().__init__(drill, autostart=False)
        self.run = run
        self.player = Player(run.events)
        self.player.playing = playing
        self.start_at = start_at
        self._last_tick = time.monotonic()

    def compose(self) -> ComposeResult:
        yield TimelineBar(id="timeline")
        yield from super().compose()

    def on_mount(self) -> None:
        # Textual calls DrillScreen.on_mount too (every class's handler in the MRO): not again here.
        bar = self.query_one(TimelineBar)
        bar.duration = self.player.duration
        bar.marks = self.player.marks()
        if self.run.legacy:
            bar.note = "recorded before the event log: some moments are missing (see the notice)"
            self.notify("This run was recorded before the event log existed. Missing: " + "; ".join(self.run.missing),
                        title="Older run", timeout=12, markup=False)
        self._last_tick = time.monotonic()
        self.set_interval(TICK_SECONDS, self._tick)
        if self.start_at is not None:
            self.show_at(self.start_at)
        self._sync_bar()

    def _tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        due = self.player.advance(dt)
        if due:
            self.feed(due)
        self._sync_bar()

    def _sync_bar(self) -> None:
        if self.player.at_end and self.player.playing:
            self.player.playing = False  # the end of the run: stay on its verdict, paused
        bar = self.query_one(TimelineBar)
        bar.t, bar.speed, bar.playing = self.player.t, self.player.speed, self.player.playing

    def _jump(self, back: bool, events: Iterable[Event]) -> None:
        if back:
            self.reset_view()
        self.feed(events)
        self._sync_bar()

    def show_at(self, t: float) -> None:
        """The screen as it was `t` seconds into the run (paused there)."""
        self.player.playing = False
        self._jump(*self.player.seek(t))

    def action_play_pause(self) -> None:
        self.player.toggle()
        self._sync_bar()

    def action_step_event(self, by: int) -> None:
        self._jump(*self.player.step(by))

    def action_speed(self, by: int) -> None:
        self.player.faster(by)
        self._sync_bar()

    def action_seek_to(self, where: float) -> None:
        self.show_at(self.player.duration if where < 0 else where)

    def action_seek(self) -> None:
        def done(text: str | None) -> None:
            if not text:
                return
            try:
                t = parse_seek(text, self.player.t)
            except ValueError as exc:
                self.notify(str(exc), title="Seek", severity="warning", markup=False)
                return
            self.show_at(t)

        self.app.push_screen(SeekModal(), done)


# ---- watch --------------------------------------------------------------------------------------


class FollowScreen(DrillScreen):
    """A run another process is running, drawn as its events arrive."""

    read_only = True


class TrainerFollowScreen(FollowScreen):
    """`drillui watch --trainer`: the whole run (the drill, its steps, its checklist, the verdict)
    and the trainee's answers as they arrive. The trainer acts on the run through its inbox:
    the next hint, recovering the fault, ending the drill."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("h", "send('hint')", "Send hint", tooltip="Show the trainee the next hint of the drill's ladder"),
        Binding("R", "send('recover')", "Recover", tooltip="Recover the fault (the trainee's time to recovery ends)"),
        Binding("s", "send('stop')", "End drill", tooltip="End the drill now: it is recorded as stopped by the trainer"),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "send":
            st = self.state
            if st.snapshot is None or st.ended is not None:
                return False
            if parameters and parameters[0] == "hint":
                return len(st.hints) < len(self.drill.hints)
            if parameters and parameters[0] == "recover":
                return st.held
            return True
        return super().check_action(action, parameters)

    def action_send(self, action: str) -> None:
        if self.state.snapshot is None:
            return
        self._send(Path(self.state.snapshot), action)
        said = {"hint": "The next hint goes to the trainee.", "recover": "The fault is recovered.",
                "stop": "The drill ends (recorded as stopped by the trainer)."}
        self.notify(said.get(action, action), title="Sent to the run", markup=False)

    @work(thread=True, group="inbox", exit_on_error=False)
    def _send(self, folder: Path, action: str) -> None:
        from drillui.training.answers import send

        fields = {"how": "the trainer's view"} if action == "stop" else {}
        send(folder, action, by="trainer", **fields)


class WaitingScreen(Screen[None]):
    """No run in progress yet: says where it looks, and keeps looking."""

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        yield Static("", id="waiting")
        yield Footer(compact=True)

    def say(self, text: str) -> None:
        self.query_one("#waiting", Static).update(Content.assemble(("drillui watch  ", "bold $accent"), text))


def live_runs(root: Path, drill_id: str | None, *, heartbeat: float = HEARTBEAT_SECONDS) -> list[Path]:
    """Run folders with an event log still growing and no result yet, newest first."""
    if not root.is_dir():
        return []
    scenarios = [root / drill_id] if drill_id else [p for p in root.iterdir() if p.is_dir()]
    now = time.time()
    found: list[Path] = []
    for scenario in scenarios:
        if not scenario.is_dir():
            continue
        for run in scenario.iterdir():
            events = run / EVENTS
            if not RUN_ID_PATTERN.match(run.name) or (run / RESULT).exists():
                continue
            try:
                if now - events.stat().st_mtime <= heartbeat:
                    found.append(run)
            except FileNotFoundError:
                continue
    return sorted(found, key=lambda p: p.name, reverse=True)


class ViewerApp(DrillApp):
    """The dashboard's frame without a stack: one replay, or a watcher."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", tooltip="Every key of the viewer"),
        Binding("q", "quit", "Quit", tooltip="Quit (the run is not touched)"),
        Binding("ctrl+q,ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, catalog: Catalog, *, first: Screen[Any] | None = None, watch_root: Path | None = None,
                 drill_id: str | None = None, settings: DrillSettings | None = None, trainer: bool = False) -> None:
        super().__init__(catalog, start_stack=False, settings=settings)
        self.trainer = trainer
        self.first = first
        self.watch_root = watch_root
        self.drill_id = drill_id
        self.following: Path | None = None
        self.follow_screen: FollowScreen | None = None
        self._stop_following = False

    @property
    def stack_mode(self) -> str:
        if self.watch_root is not None:
            who = "trainer's view" if self.trainer else "watching"
            return f"{who} {self.following.name}" if self.following else who
        return "replay (no stack)"

    def first_screens(self) -> None:
        if self.first is not None:
            self.push_screen(self.first)
            return
        self.push_screen(WaitingScreen())
        self._follow()

    def on_unmount(self) -> None:
        self._stop_following = True

    async def action_quit(self, how: str = "key q") -> None:
        self._stop_following = True
        self.exit(0)

    # ---- following ----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, WaitingScreen):
                screen.say(text)

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def _follow(self) -> None:
        assert self.watch_root is not None
        root, done = self.watch_root, set[Path]()
        what = f"drill {self.drill_id}" if self.drill_id else "any drill"
        start = "`drillui train`, or t on the dashboard's menu" if self.trainer else "the dashboard or `drillui run`"
        while not self._stop_following:
            runs = [r for r in live_runs(root, self.drill_id) if r not in done]
            if not runs:
                if self.follow_screen is None:
                    self.call_from_thread(self._say, f"no run in progress of {what} under {root.resolve()}: waiting for one "
                                                     f"(start it from {start}) · q quits")
                time.sleep(SCAN_SECONDS)
                continue
            run = runs[0]
            first = read_events(run / EVENTS)[:1]
            started = first[0] if first and isinstance(first[0], RunStarted) else None
            if started is None:
                time.sleep(SCAN_SECONDS / 4)
                continue
            try:
                drill = parse_drill(dict(started.drill), source=f"{run.name}: the recorded drill")
            except DrillError:
                done.add(run)
                continue
            self.call_from_thread(self._open, run, drill)
            for batch in follow_events(run / EVENTS, stopped=lambda: self._stop_following):
                if batch:
                    self.call_from_thread(self._feed, batch)
                if any(isinstance(e, RunEnded) for e in batch):
                    break
            done.add(run)

    def _open(self, run: Path, drill: Drill) -> None:
        """A new run to follow: its screen replaces the previous one (whose verdict stayed up)."""
        self.following = run
        screen = (TrainerFollowScreen if self.trainer else FollowScreen)(drill, autostart=False)
        if self.follow_screen is not None and self.follow_screen in self.screen_stack:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)
        self.follow_screen = screen

    def _feed(self, events: list[Event]) -> None:
        # Folded even before the screen is mounted: it paints all of it when it is.
        if self.follow_screen is not None:
            for ev in events:
                self.follow_screen.apply(ev)
