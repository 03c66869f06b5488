"""Pilot tests of the dashboard on recorded data: menu, running, pivots, filters, help, quitting.

No server runs here: the drill's data is the recorded drill A run of `drillui.ui.demo` (its typed
events), and "running a drill" uses a stand-in runner with the real one's signature that emits
those events. `test_ui_drill_a.py` runs the real runner on the embedded stack.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList, Static, Tree

from drillui.evidence.checks import Verdict
from drillui.record.events import Event, PhaseChanged, RunEnded, StopRequested
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import RunOptions, StopSignal
from drillui.scenarios import Drill
from drillui.settings import DrillSettings
from drillui.sources.logs import LogRecord
from drillui.stack.stack import Endpoints
from drillui.ui import demo
from drillui.ui.app import DrillApp
from drillui.ui.screens import drill as drill_screen
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.screens.help import HelpScreen
from drillui.ui.screens.menu import MenuScreen
from drillui.ui.screens.modals import ErrorModal, LogLineModal, PickerModal, SpanTreeModal, TextModal
from drillui.ui.screens.options import RunOptionsModal
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.logs import LogsPanel
from tests.screen import screen_text as _screen_text

pytestmark = pytest.mark.anyio
SIZE = (160, 48)


def _app(tmp_path: Path, *, infra: Infrastructure | None = None) -> DrillApp:
    return DrillApp(demo.catalog(), snapshots=tmp_path / "snapshots", infra=infra, start_stack=False,
                    settings=DrillSettings.build({}, state_dir=tmp_path / "state"))


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


async def _replayed(pilot: Pilot[Any], until: str = "verified") -> DrillScreen:
    app = pilot.app
    assert isinstance(app, DrillApp)
    screen = DrillScreen(app.catalog.drills[0], autostart=False)
    await app.push_screen(screen)
    await pilot.pause()
    demo.replay(screen, until=until)
    await pilot.pause()
    return screen




def _trace_cell(table: DataTable[Any], row: int, name: str) -> str:
    keys = [c.key.value for c in table.ordered_columns]
    return str(table.get_row_at(row)[keys.index(name)])


def _log_rows(screen: DrillScreen) -> list[LogRecord]:
    view = screen.query_one(LogsPanel).table
    return [view.buffer.record(view.number(i)) for i in range(view.count)]


# ---- menu ---------------------------------------------------------------------------------------


async def test_menu_lists_every_drill_with_its_last_verdict(tmp_path: Path) -> None:
    run = tmp_path / "snapshots" / "es_down_connect" / "20270101T000000"
    run.mkdir(parents=True)
    (run / "_recipe.json").write_text("{}")
    (run / "_result.json").write_text(json.dumps({"verdict": "pass", "passed": True, "checks": []}))
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        menu = app.screen
        assert isinstance(menu, MenuScreen)
        await _until(pilot, lambda: "es_down_connect" in menu.last)
        options = menu.query_one(OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert len(labels) == len(app.catalog.drills)
        assert labels[0].startswith("A Search engine down") and "PASS 20270101T000000" in labels[0]
        assert "never run" in labels[1]
        await pilot.press("down")
        await pilot.pause()
        shown = _screen_text(app)
        assert "B  Rate limited (429) by the engine" in shown and "Retry grows with reason=es_429" in shown


async def test_menu_shows_the_last_verdict_of_a_drill(tmp_path: Path) -> None:
    run = tmp_path / "snapshots" / "es_down_connect" / "20270101T000000"
    run.mkdir(parents=True)
    (run / "_recipe.json").write_text("{}")
    check = {"id": "metric:x", "description": "retry grew [b]by reason[/b]", "expected": ">= 1", "observed": "+4", "passed": True}
    (run / "_result.json").write_text(json.dumps({"verdict": "pass", "passed": True, "run_id": run.name,
                                                   "snapshot": str(run), "checks": [check]}))
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        menu = app.screen
        assert isinstance(menu, MenuScreen)
        await _until(pilot, lambda: "es_down_connect" in menu.last)
        await pilot.press("v")
        await _until(pilot, lambda: isinstance(app.screen, TextModal))
        await pilot.pause()
        shown = _screen_text(app)
        # Text from the files is shown as written, never read as markup.
        assert "retry grew [b]by reason[/b]" in shown and "observed +4" in shown and "PASS" in shown
        await pilot.press("escape")
        assert app.screen is menu


async def test_menu_refuses_to_run_before_the_stack_is_ready(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ErrorModal)
        assert "not ready" in app.screen.title_text


# ---- running a drill (stand-in runner) ----------------------------------------------------------


class StandInRunner:
    """The runner's signature and events, without servers: it emits the recorded run's events,
    and holds in the "running" phase until released or stopped."""

    release = threading.Event()
    stops: ClassVar[list[str]] = []

    def __init__(self, drill: Drill, infra: Infrastructure, options: RunOptions, *,
                 on_event: Callable[[Event], None], stop: StopSignal) -> None:
        self.drill, self.on_event, self.stop = drill, on_event, stop
        self._observers = None

    def run(self) -> Verdict:
        running = demo.events("running")
        for e in running:
            self.on_event(e)
        deadline = time.monotonic() + 20
        while not (self.release.is_set() or self.stop.is_set()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.stop.is_set():
            StandInRunner.stops.append(self.stop.how)
            self.on_event(StopRequested(how=self.stop.how))
            verdict = Verdict(self.drill.id, demo.RUN_ID, "stopped", [], demo.SNAPSHOT, why=f"stopped by {self.stop.how}")
            self.on_event(PhaseChanged(phase="ended", message="STOPPED"))
            self.on_event(RunEnded(state="stopped", why=verdict.why, verdict=verdict.to_json()))
            return verdict
        rest = demo.events("verified")[len(running):]
        for e in rest:
            self.on_event(e)
        return Verdict(self.drill.id, demo.RUN_ID, "passed", [], demo.SNAPSHOT)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> type[StandInRunner]:
    StandInRunner.release = threading.Event()
    StandInRunner.stops = []
    monkeypatch.setattr(drill_screen, "DrillRunner", StandInRunner)
    return StandInRunner


def _infra() -> Infrastructure:
    url = "http://127.0.0.1:9"
    return Infrastructure(Endpoints("postgresql://127.0.0.1:9/x", url, url, url), None, "stand-in")


async def test_choosing_and_running_a_drill(tmp_path: Path, stand_in: type[StandInRunner]) -> None:
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "up", "enter")
        await _until(pilot, lambda: isinstance(app.screen, RunOptionsModal))
        await pilot.press("enter")  # Start, with the catalog's defaults
        await _until(pilot, lambda: isinstance(app.screen, DrillScreen))
        screen = app.screen
        assert isinstance(screen, DrillScreen) and screen.drill.letter == "A"
        await _until(pilot, lambda: screen.state.armed_at is not None and bool(len(screen.state.outbox_event_ids)))
        assert screen.check_action("stop", ()) and not screen.check_action("back", ())
        await pilot.pause(0.2)
        shown = _screen_text(app)
        assert "RUNNING" in shown and "workers 1/1 alive" in shown
        stand_in.release.set()
        await _until(pilot, lambda: screen.state.verdict is not None and not screen.check_action("stop", ()))
        await pilot.pause(0.2)
        assert f"PASS · all 10 checks passed · evidence {demo.SNAPSHOT}" in _screen_text(app)
        assert screen.check_action("run_again", ()) and screen.check_action("back", ())
        await pilot.press("escape")
        assert isinstance(app.screen, MenuScreen)


async def test_stop_key_stops_the_run(tmp_path: Path, stand_in: type[StandInRunner]) -> None:
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.phase == "running")
        await pilot.press("s")
        await _until(pilot, lambda: screen.state.verdict is not None and not screen.check_action("stop", ()))
        assert stand_in.stops == ["key s"]
        await pilot.pause(0.2)
        shown = _screen_text(app)
        assert "STOPPED" in shown and f"STOPPED · stopped by key s · evidence {demo.SNAPSHOT}" in shown


async def test_quitting_mid_drill_stops_the_run_before_exiting(tmp_path: Path, stand_in: type[StandInRunner]) -> None:
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.phase == "running")
        await pilot.press("q")
        await _until(pilot, lambda: app.return_code is not None)
    # The app exited only once the runner had seen the stop and returned.
    assert stand_in.stops == ["key q"]


async def test_ctrl_c_in_the_dashboard_stops_the_run_as_ctrl_c(tmp_path: Path, stand_in: type[StandInRunner]) -> None:
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.phase == "running")
        await pilot.press("ctrl+c")
        await _until(pilot, lambda: app.return_code is not None)
    assert stand_in.stops == ["Ctrl+C"]


# ---- pivots and filters -------------------------------------------------------------------------


async def test_pivot_trace_to_logs(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        await pilot.press("t")
        table = screen.query_one("#traces-table", DataTable)
        assert app.focused is table and table.row_count > 0
        await pilot.press("down", "down", "enter")  # the third row: a retry attempt's batch span
        await _until(pilot, lambda: isinstance(app.screen, SpanTreeModal))
        modal = app.screen
        assert isinstance(modal, SpanTreeModal)
        trace_id = modal.trace.trace_id
        assert trace_id == demo.trace_id(len(demo.ATTEMPTS))  # the latest trace first: the recovery, then the last retry
        await pilot.press("g")
        await _until(pilot, lambda: app.screen is screen)
        await _until(pilot, lambda: bool(_log_rows(screen)))
        rows = _log_rows(screen)
        assert rows and all(r.trace_id == trace_id for r in rows)
        assert screen.query_one("#logs-filter", Input).value == f"trace_id={trace_id}"
        assert app.focused is screen.query_one("#logs-table")


async def test_pivot_log_to_trace(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        screen.query_one(LogsPanel).set_filter("event=outbox.retry_scheduled attempt=2")
        await _until(pilot, lambda: len(_log_rows(screen)) == 1)
        await pilot.press("l", "enter")
        await _until(pilot, lambda: isinstance(app.screen, LogLineModal))
        await pilot.pause()
        shown = _screen_text(app)
        assert "outbox.retry_scheduled" in shown and "es_connect" in shown and demo.trace_id(2) in shown
        await pilot.press("enter")  # from the line to its trace
        await _until(pilot, lambda: isinstance(app.screen, SpanTreeModal))
        assert isinstance(app.screen, SpanTreeModal)
        assert app.screen.trace.trace_id == demo.trace_id(2)
        tree: Tree[str] = app.screen.query_one("#span-tree", Tree)
        labels = [str(n.label) for n in tree.root.children]
        assert labels[0].startswith("projection.process_batch")
        await pilot.press("escape")
        assert app.screen is screen


async def test_log_line_without_trace_says_so(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        screen.query_one(LogsPanel).set_filter("event=obs.schema")
        await _until(pilot, lambda: len(_log_rows(screen)) == 1)
        await pilot.press("l", "enter")
        await _until(pilot, lambda: isinstance(app.screen, LogLineModal))
        await pilot.pause()
        assert "no trace_id on this line" in _screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen


async def test_log_filters_free_text_and_key_value(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        await pilot.press("slash")
        assert app.focused is screen.query_one("#logs-filter", Input)
        await pilot.press(*"reason=es_connect attempt=2", "enter")
        await _until(pilot, lambda: len(_log_rows(screen)) == 1)
        rows = _log_rows(screen)
        assert rows[0].event == "outbox.retry_scheduled" and rows[0].attempt == 2
        await pilot.press("slash", "ctrl+u", *'"connection refused"', "enter")
        await _until(pilot, lambda: len(_log_rows(screen)) == len(demo.ATTEMPTS))
        await pilot.press("slash", "ctrl+u", "enter")
        await _until(pilot, lambda: len(_log_rows(screen)) == len(demo.log_lines()))


async def test_trace_filter_typed_and_picked(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        table = screen.query_one("#traces-table", DataTable)
        assert table.row_count == 2 * (len(demo.ATTEMPTS) + 1)
        await pilot.press("f", *f"claim_batch_id={demo.batch_id(3)}", "enter")
        await _until(pilot, lambda: table.row_count == 2)
        assert _trace_cell(table, 0, "id") == demo.batch_id(3)[:8]
        # An id typed as the panel shows it (its first 8 characters) finds the same trace.
        await pilot.press("f", "ctrl+u", *f"claim_batch_id={demo.batch_id(4)[:8]}", "enter")
        await _until(pilot, lambda: table.row_count == 2 and _trace_cell(table, 0, "id") == demo.batch_id(4)[:8])
        await pilot.press("f", "ctrl+u", *demo.trace_id(2)[:8], "enter")
        await _until(pilot, lambda: table.row_count == 2)
        await pilot.press("e")
        await _until(pilot, lambda: isinstance(app.screen, PickerModal))
        await pilot.press("enter")  # the first id offered: the drill's outbox event
        await _until(pilot, lambda: table.row_count == 2 * (len(demo.ATTEMPTS) + 1))
        assert screen.query_one("#traces-filter", Input).value == f"outbox_event_id={demo.EVENT_ID}"


async def test_a_bad_trace_filter_is_explained(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _replayed(pilot)
        await pilot.press("f", *"claim_batch_id=", "enter")
        await pilot.pause()
        assert any("needs a value" in str(n.message) for n in app._notifications)


async def test_escape_leaves_a_filter_field_for_its_table(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _replayed(pilot)
        await pilot.press("slash", "s")  # typed into the field: not the stop key
        assert screen.query_one("#logs-filter", Input).value == "s"
        await pilot.press("escape")
        assert app.focused is screen.query_one("#logs-table")
        assert app.screen is screen


async def test_checklist_reads_each_check(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _replayed(pilot, until="running")
        checklist = screen.query_one(Checklist)
        await pilot.press("v", "down")  # v focuses the checklist (k moves up in lists)
        assert app.focused is checklist and checklist.cursor == 1
        await pilot.pause()
        assert "query sum by (env, projection, reason)" in _screen_text(app)


# ---- help -------------------------------------------------------------------------------------


async def test_help_shows_every_key(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _replayed(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        body = app.screen.query_one("#modal-body", Static)
        text = str(body.visual.plain if hasattr(body.visual, "plain") else body.visual)
        for words in ("Stop the drill", "Run the drill again", "Remove leftover drill events", "Span tree of the trace",
                      "Open the trace of the line", "Save a numbered SVG screenshot", "Quit", "Pivots"):
            assert words in text, words
        await pilot.press("escape")
        assert isinstance(app.screen, DrillScreen)
