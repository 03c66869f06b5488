"""SVG snapshots of the dashboard's main screens, on fixed data, at 100x30 and 160x48.

Everything on screen comes from `drillui.ui.demo` (a fixed catalog, a recorded drill A run with
fixed scrapes, log lines, spans and times) and from a last-verdict file written here; no clock,
no server, cursor blink off. Update with `pytest tests/test_ui_snapshots.py --snapshot-update`
after checking the new pictures in the report.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from drillui.settings import DrillSettings
from drillui.ui import demo
from drillui.ui.app import DrillApp
from drillui.ui.screens.drill import DrillScreen

SIZES = [pytest.param((100, 30), id="100x30"), pytest.param((160, 48), id="160x48")]
SnapCompare = Callable[..., bool]


def _app(tmp_path: Path) -> DrillApp:
    run = tmp_path / "snapshots" / "es_down_connect" / demo.RUN_ID
    run.mkdir(parents=True)
    (run / "_recipe.json").write_text("{}")
    (run / "_result.json").write_text(json.dumps({"scenario": "es_down_connect", "run_id": demo.RUN_ID, "state": "passed",
                                                  "verdict": "pass", "passed": True, "checks": []}))
    return DrillApp(demo.catalog(), snapshots=tmp_path / "snapshots", start_stack=False,
                    settings=DrillSettings.build({}, state_dir=tmp_path / "state"))


async def _settle(pilot: Pilot[Any]) -> None:
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _drill(until: str, *keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, DrillApp)
        await app.workers.wait_for_complete()  # the menu's last verdicts
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        demo.replay(screen, until=until)
        await _settle(pilot)
        if keys:
            await pilot.press(*keys)
            await pilot.app.workers.wait_for_complete()
            await _settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_menu(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES)
def test_drill_running(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=_drill("running"))


@pytest.mark.parametrize("size", SIZES)
def test_drill_verified(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=_drill("verified"))


def test_span_tree(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=(100, 30), run_before=_drill("verified", "t", "down", "down", "enter"))


def test_logs_filtered_by_trace(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=(160, 48), run_before=_drill("verified", "t", "down", "down", "g"))


def test_help(snap_compare: SnapCompare, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=(100, 30), run_before=_drill("verified", "question_mark"))


def _trainee(pilot_answers: bool) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """The blind screen of a training run, on the recorded drill A run, with answers and a hint."""

    async def run_before(pilot: Pilot[Any]) -> None:
        from drillui.record.events import AnswerGiven, HintGiven
        from drillui.runner.runner import RunOptions
        from drillui.scenarios import load_catalog
        from drillui.ui.screens.training import TraineeScreen, training_options

        app = pilot.app
        assert isinstance(app, DrillApp)
        await app.workers.wait_for_complete()
        real = load_catalog(Path(__file__).resolve().parent.parent / "scenarios.yaml").get("es_down_connect")
        drill = app.catalog.drills[0].model_copy(update={"questions": real.questions, "hints": real.hints})
        screen = TraineeScreen(drill, options=training_options(RunOptions(), "Ana", None), autostart=False)
        await app.push_screen(screen)
        await pilot.pause()
        demo.replay(screen, until="running")
        if pilot_answers:
            armed = screen.state.armed_at or 0.0
            screen.feed([
                AnswerGiven(wall=armed + 2, question="cause", value="es_timeout", right=False, evidence="-", by="Ana"),
                AnswerGiven(wall=armed + 3, question="cause", value="es_connect", right=True, evidence="-", by="Ana"),
                HintGiven(wall=armed + 4, index=0, text=real.hints[0]),
            ])
        await _settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_trainee_screen(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    """Blind: the questions where the checklist was; no drill name, steps, checklist or verdict."""
    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=_trainee(True))
