"""Pilot tests of the field's habits and of PromQL on the run screen.

The PromQL prompt, the step's result, the replay of a recorded answer, the command palette,
j/k in the lists, `/` on the menu and the remembered theme. Recorded data from `drillui.ui.demo`;
the prompt's live answers come from a real Prometheus (skipped, saying why, without the binary).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import OptionList

from drillui.record.events import PromqlEvaluated
from drillui.runner.infra import Infrastructure
from drillui.settings import DrillSettings
from drillui.stack.prometheus import EmbeddedPrometheus
from drillui.stack.stack import Endpoints
from drillui.ui import demo
from drillui.ui.app import DrillApp
from drillui.ui.commands import commands
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.screens.menu import MenuScreen
from drillui.ui.viewer import ReplayScreen
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.promql import PromqlPanel, PromqlView, time_columns

pytestmark = pytest.mark.anyio
SIZE = (160, 48)
PROMETHEUS = shutil.which("prometheus")


def _app(tmp_path: Path, *, infra: Infrastructure | None = None) -> DrillApp:
    return DrillApp(demo.catalog(), snapshots=tmp_path / "snapshots", infra=infra, start_stack=False,
                    settings=DrillSettings.build({}, state_dir=tmp_path / "state"))


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


def _answer(purpose: str = "step", **kw: Any) -> PromqlEvaluated:
    start = demo.T0
    series = ({"metric": {"env": "drill", "projection": "search_index_to_elastic", "reason": "es_connect"},
               "values": [[start + i, 0.05 * i] for i in range(10)]},
              {"metric": {"env": "drill", "projection": "search_index_to_elastic", "reason": "es_429"},
               "values": [[start + i, 0.0] for i in range(10)]})
    base: dict[str, Any] = dict(query=demo.catalog().drills[0].steps[0].promql or "", purpose=purpose, start=start, end=start + 10,
                                step=1.0, result_type="matrix", series=series, step_index=0 if purpose == "step" else None,
                                wall=start + 8, seq=999)
    base.update(kw)
    return PromqlEvaluated(**base)


def test_a_column_between_two_samples_holds_the_earlier_one() -> None:
    cols = time_columns([(0.0, 1.0), (1.0, 2.0)], 0.0, 2.0, 8, step=1.0)
    assert cols[:4] == [1.0, 1.0, 1.0, 1.0] and cols[4] == 2.0 and cols[5:] == [None, None, None]


async def test_replay_shows_the_recorded_answer_of_a_step_or_says_none(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        from drillui.record.reader import RecordedRun
        from drillui.record.snapshot import Snapshot

        folder = tmp_path / "run"
        folder.mkdir()
        run = RecordedRun(Snapshot.open(folder), _events=[*demo.events("verified")])
        screen = ReplayScreen(app.catalog.drills[0], run, playing=False)
        await app.push_screen(screen)
        await pilot.pause()
        screen.show_at(10_000)
        await pilot.press("a")  # step 1 is the runbook's PromQL: nothing recorded for it
        await pilot.pause()
        view = screen.query_one(PromqlView)
        assert view.result is None and view.note.startswith("no result recorded for this step")
        screen.feed([_answer()])  # a run that recorded it
        await pilot.press("a")
        await pilot.pause()
        assert view.result is not None and view.result.step_index == 0
        text = str(view.render())
        assert "reason=es_connect" in text and "0.45" in text and "all series: env=drill projection=search_index_to_elastic" in text
        # A typed query on a replay: the recorded answer to that query, or none.
        await pilot.press("m")
        panel = screen.query_one(PromqlPanel)
        panel.input.value = "sum(up)"
        await pilot.press("enter")
        await pilot.pause()
        assert view.result is None and "no result recorded for this query" in view.note


async def test_a_recorded_error_is_shown_in_prometheus_words(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        screen.feed([*demo.events("running"), _answer("prompt", query="sum(x{", series=(), error="1:6: parse error: unexpected end of input")])
        await pilot.pause()
        text = str(screen.query_one(PromqlView).render())
        assert "Prometheus: 1:6: parse error: unexpected end of input" in text and "typed" in text


async def test_without_prometheus_the_step_says_so_and_how_to_get_it(tmp_path: Path) -> None:
    infra = Infrastructure(Endpoints("postgresql://x@127.0.0.1:1/d", "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:2"),
                           None, "test", prometheus_note="not running: no prometheus binary on PATH")
    app = _app(tmp_path, infra=infra)
    async with app.run_test(size=SIZE) as pilot:
        assert "no Prometheus: PromQL steps cannot run (apt-get install prometheus" in app.stack_summary
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        screen.feed(demo.events("running"))
        await pilot.press("a")
        await pilot.pause()
        view = screen.query_one(PromqlView)
        assert view.result is not None and not view.result.available
        assert "no Prometheus in this stack" in (view.result.error or "") and "apt-get install prometheus" in (view.result.error or "")


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary on PATH (apt-get install prometheus)")
async def test_the_prompt_asks_the_real_prometheus_and_shows_its_error(tmp_path: Path) -> None:
    prom = EmbeddedPrometheus(tmp_path / "prometheus", Path(str(PROMETHEUS)))
    prom.start()
    try:
        infra = Infrastructure(Endpoints("postgresql://x@127.0.0.1:1/d", "http://127.0.0.1:1", "http://127.0.0.1:2",
                                         "http://127.0.0.1:2", prometheus_url=prom.url), None, "test")
        app = _app(tmp_path, infra=infra)
        async with app.run_test(size=SIZE) as pilot:
            screen = DrillScreen(app.catalog.drills[0], autostart=False)
            await app.push_screen(screen)
            await pilot.pause()
            screen.feed(demo.events("running"))
            await pilot.press("m")
            panel = screen.query_one(PromqlPanel)
            assert panel.input.has_focus and panel.input.value.startswith("sum by (env, projection, reason)")
            panel.input.value = "vector(2)"
            await pilot.press("enter")
            view = screen.query_one(PromqlView)
            await _until(pilot, lambda: view.result is not None and view.result.query == "vector(2)")
            assert view.result is not None and not view.result.error
            # No runner: shown, and said not to be in the record.
            assert "not recorded" in view.note
            panel.input.value = "sum(vector(2)"
            await pilot.press("enter")
            await _until(pilot, lambda: view.result is not None and view.result.query == "sum(vector(2)")
            assert view.result is not None and "parse error" in (view.result.error or "")
            assert "Prometheus: 1:" in str(view.render())
            await pilot.press("escape")
            assert screen.query_one(Checklist).has_focus
    finally:
        prom.stop()


async def test_j_and_k_move_in_the_checklist_and_the_menu(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        menu = app.screen
        assert isinstance(menu, MenuScreen)
        await pilot.press("j", "j")
        assert menu.query_one("#drill-list", OptionList).highlighted == 2
        await pilot.press("k")
        assert menu.selected.letter == "B"
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        screen.feed(demo.events("verified"))
        await pilot.press("v")  # the checklist's focus key (k moves in lists now)
        checklist = screen.query_one(Checklist)
        assert checklist.has_focus
        await pilot.press("j", "j", "j", "k")
        assert checklist.cursor == 2


async def test_slash_filters_the_drill_list(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        menu = app.screen
        assert isinstance(menu, MenuScreen)
        await pilot.press("slash")
        for ch in "429":
            await pilot.press(ch)
        await pilot.pause()
        lst = menu.query_one("#drill-list", OptionList)
        assert lst.option_count == 1 and menu.selected.id == "es_429"
        await pilot.press("enter")  # back to the list, the filter kept
        assert lst.has_focus and lst.option_count == 1


async def test_the_palette_offers_drillui_actions_where_they_apply(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        names = [name for name, _, _ in commands(app, app.screen)]
        assert "Run drill A: Search engine down / connection refused" in names and "Replay the last run" in names
        assert "Recover the fault now" not in names
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        screen.feed(demo.events("running"))
        names = [name for name, _, _ in commands(app, screen)]
        assert {"Apply the current step", "PromQL prompt", "Filter traces by an id…"} <= set(names)
        assert any(n.startswith("Filter traces by outbox_event_id=") for n in names)
        await pilot.press("ctrl+p")
        await _until(pilot, lambda: isinstance(app.screen, CommandPalette))
        for ch in "promql":
            await pilot.press(ch)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await _until(pilot, lambda: app.screen is screen and screen.query_one(PromqlPanel).input.has_focus)


async def test_the_theme_is_remembered(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: app._theme_loaded)
        app.theme = "nord"
        prefs = tmp_path / "state" / "dashboard.json"
        await _until(pilot, lambda: prefs.exists() and json.loads(prefs.read_text()).get("theme") == "nord")
    again = _app(tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: again.theme == "nord")
