"""Drills I-P from the dashboard as a trainer runs them: guided (the dashboard's default), the
fault held until the trainer sees the drill's point on the checklist and presses R, then judged.
The same runner as `drillui run`; here the point is that the screen drives it to a pass, the
restart of drill J's workers and the Postgres outage of N included."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from drillui.evidence.checks import Check
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import RunOptions
from drillui.scenarios import load_catalog
from drillui.settings import DrillSettings
from drillui.ui.app import DrillApp
from drillui.ui.screens.drill import DrillScreen

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parent.parent

# What the trainer waits for on the checklist before recovering the fault. J also waits for its
# three events: its check counts them while the fault is armed, so recovering before they are
# done is an honest FAIL (a trainer's too-early R), not the drill's.
POINT: dict[str, tuple[str, ...]] = {
    "I": ("log:outbox.retry_scheduled[reason=es_connect]",),
    "J": ("log:tracing.export_failed", 'metric:outbox_processed_total{result="ok"}'),
    "N": ("log:db.unavailable[reason=db_error]",),
    "P": ('metric:outbox_terminal_failed_total{reason="es_connect"}',),
}


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


@pytest.mark.parametrize("letter", sorted(POINT))
async def test_a_guided_run_from_the_menu_passes(letter: str, drill_infra: Infrastructure, tmp_path: Path) -> None:
    catalog = load_catalog(ROOT / "scenarios.yaml")
    app = DrillApp(catalog, infra=drill_infra, snapshots=tmp_path, run_options=RunOptions(guided=True, hold=60),
                   settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press(letter)  # the drill's letter picks it, r runs it with its options
        await pilot.press("r")
        await _until(pilot, lambda: isinstance(app.screen, DrillScreen), 10, "the drill screen")
        screen = app.screen
        assert isinstance(screen, DrillScreen) and screen.drill.letter == letter

        def state_of(cid: str) -> str:
            c = screen.state.checks.get(cid)
            return Check.from_json(c).state if c is not None else "absent"

        await _until(pilot, lambda: screen.state.held and all(state_of(c) == "seen" for c in POINT[letter]), 60,
                     f"{POINT[letter]} seen")
        assert screen.state.reverted_at is None, "the fault is held until the trainer recovers it"
        await pilot.press("R")
        await _until(pilot, lambda: screen.state.verdict is not None, 90, "the verdict")
        verdict = screen.state.verdict
        assert verdict is not None and verdict["state"] == "passed", [c for c in verdict["checks"] if not c["passed"]]
        run = Path(str(verdict["snapshot"]))
        assert json.loads((run / "_result.json").read_text())["state"] == "passed"
        recipe = json.loads((run / "_recipe.json").read_text())
        assert recipe["parameters"]["guided"] is True
        attempts = {w["env"].get("OUTBOX_MAX_ATTEMPTS") for w in recipe["workers"]}
        # Guided runs raise the attempts so a held transient fault stays transient; drill P's own
        # setting wins, or it could never exhaust them.
        assert attempts == ({"3"} if letter == "P" else {"1000"}), attempts
