"""Trainer-paced drills on screen, on recorded data: steps applied with one key, the join keys
visible at every size, each drill's own signals, and the small frictions of a rehearsal.

No server: the recorded drill A run of `drillui.ui.demo` (its typed events), and stand-in runners
with the real one's signature. The real runner holding a fault until `R` is in test_ui_drill_a.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList

from drillui.evidence.checks import Verdict
from drillui.evidence.signals import drill_signal_views
from drillui.evidence.state import RunState
from drillui.record.events import Event, MetricsSampled, RunStarted
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DirtyState, RunOptions, StopSignal
from drillui.scenarios import Drill, load_catalog
from drillui.settings import DrillSettings
from drillui.stack.stack import Endpoints
from drillui.ui import demo
from drillui.ui.app import DrillApp
from drillui.ui.screens import drill as drill_screen
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.screens.menu import MenuScreen
from drillui.ui.screens.modals import ErrorModal
from drillui.ui.widgets.logs import LogsPanel
from drillui.ui.widgets.signals import SignalsPanel
from tests.screen import screen_text as _text

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")


def _app(tmp_path: Path, *, infra: Infrastructure | None = None) -> DrillApp:
    return DrillApp(demo.catalog(), snapshots=tmp_path / "snapshots", infra=infra, start_stack=False,
                    settings=DrillSettings.build({}, state_dir=tmp_path / "state"))


def _infra() -> Infrastructure:
    url = "http://127.0.0.1:9"
    return Infrastructure(Endpoints("postgresql://127.0.0.1:9/x", url, url, url), None, "stand-in")


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
    await pilot.pause(0.2)
    return screen


# ---- one key per step ---------------------------------------------------------------------------


async def test_applying_steps_filters_the_traces_and_the_logs_and_highlights_the_signal(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _replayed(pilot)
        traces = screen.query_one("#traces-table", DataTable)
        assert traces.row_count == 2 * (len(demo.ATTEMPTS) + 1)
        await pilot.press("a")  # step 1: PromQL on retry
        assert screen.query_one(SignalsPanel).highlight == "retry"
        assert any("retry: now 6" in str(n.message) for n in app._notifications)
        await pilot.press("n", "a")  # step 2: the batch by its claim_batch_id (the run's first batch)
        await _until(pilot, lambda: traces.row_count == 2)
        assert screen.query_one("#traces-filter", Input).value == (
            f'operation=projection.process_batch tags={{"wordloom.claim_batch_id":"{demo.batch_id(1)}"}}')
        await pilot.press("n", "a")  # step 3: the logs on trace_id, as a log query
        logs = screen.query_one(LogsPanel)
        await _until(pilot, lambda: 0 < logs.shown < len(demo.log_lines()))
        assert logs.filter.kv.get("event") == "outbox.retry_scheduled"
        await pilot.press("p", "p", "p")
        assert screen.query_one(SignalsPanel).highlight == ""


async def test_the_join_keys_stay_on_screen_at_100x30(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _replayed(pilot)
        shown = _text(app)
        trace = demo.trace_id(len(demo.ATTEMPTS) + 1)[:8]  # the latest trace, first in both panels
        left, right = zip(*[(line[:50], line[50:]) for line in shown.splitlines()], strict=True)
        assert any(trace in line for line in left), "no trace id in the traces panel"
        assert any(trace in line for line in right), "no trace id in the logs panel"
        assert "trace" in "".join(left) and "trace" in "".join(right)


async def test_a_drill_column_is_shown_in_both_panels(tmp_path: Path) -> None:
    drill = CATALOG.get("H")
    assert drill.columns == ["projection_version"]
    app = DrillApp(CATALOG, snapshots=tmp_path / "snapshots", start_stack=False,
                   settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = DrillScreen(drill, autostart=False)
        await app.push_screen(screen)
        await pilot.pause(0.2)
        assert "projection_version" in [c.key.value for c in screen.query_one("#traces-table", DataTable).ordered_columns]
        assert "projection_version" in [name for name, _, _ in screen.query_one(LogsPanel).table.cols]


# ---- each drill's own signals -------------------------------------------------------------------


def _sample(worker: str, phase: str, t: float, rows: list[tuple[str, dict[str, str], float, str]]) -> MetricsSampled:
    return MetricsSampled(worker=worker, phase=phase, taken_at=t, wall=t, samples=tuple(rows))  # type: ignore[arg-type]


@pytest.mark.parametrize(("letter", "rows", "expect"), [
    ("D", [("outbox_es_bulk_requests_total", {"result": "partial"}, 1.0, "counter"),
           ("outbox_es_bulk_requests_total", {"result": "ok"}, 2.0, "counter"),
           ("outbox_es_bulk_item_failures_total", {"failure_class": "4xx"}, 1.0, "counter")],
     {"bulk requests result=partial": (1, 1), "bulk requests result=ok": (2, 2), "item failures failure_class=4xx": (1, 1)}),
    ("E", [("outbox_inflight_events", {}, 3.0, "gauge"), ("outbox_owner_mismatch_skips_total", {}, 2.0, "counter")],
     {"in-flight worker1": (3, 3), "in-flight worker2": (3, 3), "owner-mismatch worker1": (2, 2)}),
    ("F", [("outbox_stuck_processing_events", {}, 5.0, "gauge"), ("outbox_reclaimed_total", {}, 5.0, "counter")],
     {"stuck": (0, 5), "reclaimed worker2": (5, 5)}),
    ("G", [("outbox_idempotent_noop_total", {"reason": "es_404"}, 1.0, "counter"),
           ("outbox_idempotent_noop_total", {"reason": "es_409"}, 1.0, "counter")],
     {"noops reason=es_404": (1, 1), "noops reason=es_409": (1, 1)}),
])
def test_each_drill_shows_its_own_signals_with_value_and_peak(letter: str, rows: list[Any],
                                                              expect: dict[str, tuple[float, float]]) -> None:
    drill = CATALOG.get(letter)
    state = RunState(drill)
    state.apply(RunStarted(run_id="r", scenario=drill.id, letter=letter, title="t", snapshot="s", drill={}))
    zero = [(n, lab, 0.0, k) for n, lab, _, k in rows]
    workers = [w.name for w in drill.workload.workers]
    for w in workers:
        state.apply(_sample(w, "before", 1.0, zero))
    for w in workers:
        state.apply(_sample(w, "live", 2.0, rows))
    if letter == "F":  # the stuck rows were taken back: the gauge is down, its peak stays
        state.apply(_sample(workers[-1], "live", 3.0, [(n, lab, 0.0 if "stuck" in n else v, k) for n, lab, v, k in rows]))
        state.apply(_sample(workers[0], "live", 3.0, [(n, lab, 0.0, k) for n, lab, _, k in rows]))
    views = {v.key: v for v in drill_signal_views(state)}
    for key, (value, peak) in expect.items():
        assert key in views, (key, sorted(views))
        assert views[key].value == value and views[key].peak == peak, (key, views[key])
    if letter == "E":
        assert views["claim time worker1"].unit == "ms"


async def test_the_signals_panel_lists_the_drills_signals(tmp_path: Path) -> None:
    drill = CATALOG.get("G")
    app = DrillApp(CATALOG, snapshots=tmp_path / "snapshots", start_stack=False,
                   settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = DrillScreen(drill, autostart=False)
        await app.push_screen(screen)
        rows = [("outbox_idempotent_noop_total", {"reason": "es_404", "op": "delete"}, 2.0, "counter")]
        screen.feed([RunStarted(run_id="r", scenario=drill.id, letter="G", title="t", snapshot="s", drill={}),
                     _sample("worker", "before", 1.0, [(n, lab, 0.0, k) for n, lab, _, k in rows]),
                     _sample("worker", "live", 2.0, rows)])
        await pilot.pause(0.2)
        shown = _text(app)
        assert "this drill's signals" in shown and "noops reason=es_404" in shown


# ---- the menu, the dialogs, the small frictions ---------------------------------------------------


async def test_menu_letters_jump_to_drills(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        menu = app.screen
        assert isinstance(menu, MenuScreen)
        options = menu.query_one("#drill-list", OptionList)
        await pilot.press("C")
        assert options.highlighted == 2
        await pilot.press("b")
        assert options.highlighted == 1
        await pilot.press("A")
        assert options.highlighted == 0


async def test_a_terminal_below_100x30_says_so(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(90, 26)) as pilot:
        await pilot.pause(0.2)
        assert "drillui needs at least 100×30" in _text(app)
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        assert "needs at least" not in _text(app)


class DirtyRunner:
    """Refuses like the real runner on a dirty environment, unless asked to clean first."""

    runs: ClassVar[list[bool]] = []

    def __init__(self, drill: Drill, infra: Infrastructure, options: RunOptions, *,
                 on_event: Callable[[Event], None], stop: StopSignal) -> None:
        self.drill, self.options, self.on_event = drill, options, on_event
        self._observers = None

    def run(self) -> Verdict:
        DirtyRunner.runs.append(self.options.force_clean)
        if not self.options.force_clean:
            raise DirtyState("the outbox has 1 pending row left by an earlier run", hint="drillui clean")
        for e in demo.events():
            self.on_event(e)
        return Verdict(self.drill.id, demo.RUN_ID, "passed", [], demo.SNAPSHOT)


async def test_the_dirty_environment_dialog_cleans_and_runs_with_its_own_key(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    DirtyRunner.runs = []
    monkeypatch.setattr(drill_screen, "DrillRunner", DirtyRunner)
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("r")
        await _until(pilot, lambda: isinstance(app.screen, ErrorModal))
        assert "c: Clean+run" in _text(app)
        await pilot.press("c")
        await _until(pilot, lambda: DirtyRunner.runs == [False, True])
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.ended is not None)


async def test_after_the_verdict_escape_goes_to_the_menu_and_the_run_can_be_reopened(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    DirtyRunner.runs = []
    monkeypatch.setattr(drill_screen, "DrillRunner", DirtyRunner)
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("r")
        await _until(pilot, lambda: isinstance(app.screen, ErrorModal))
        await pilot.press("c")
        await _until(pilot, lambda: isinstance(app.screen, DrillScreen) and app.screen.state.ended is not None)
        screen = app.screen
        await pilot.pause(0.2)
        await pilot.press("escape")
        assert isinstance(app.screen, MenuScreen)
        await pilot.press("l")
        await pilot.pause(0.1)
        assert app.screen is screen and screen.state.ended is not None
        assert "PASS · all 10 checks passed" in _text(app)


async def test_run_options_are_remembered_per_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drillui.ui.prefs import load_prefs
    from drillui.ui.screens.options import RunOptionsModal

    DirtyRunner.runs = []
    monkeypatch.setattr(drill_screen, "DrillRunner", DirtyRunner)
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, RunOptionsModal))
        app.screen.query_one("#opt-hold", Input).value = "90"
        app.screen.query_one("#opt-count", Input).value = "4"
        await pilot.press("enter")
        await _until(pilot, lambda: (tmp_path / "state" / "dashboard.json").exists())
    prefs = load_prefs(tmp_path / "state")
    assert prefs["es_down_connect"].hold == 90 and prefs["es_down_connect"].trigger_count == 4 and prefs["es_down_connect"].guided
    app = _app(tmp_path, infra=_infra())
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: "es_down_connect" in app.prefs)
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, RunOptionsModal))
        assert app.screen.query_one("#opt-hold", Input).value == "90"
        app.screen.query_one("#opt-count", Input).value = "lots"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, RunOptionsModal) and "is not a number" in _text(app)
