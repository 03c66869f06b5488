"""Drill A through the dashboard on the embedded stack: the same runner, the same evidence.

The dashboard is given the session's real servers (PostgreSQL, the search engine behind its relay,
the trace store) as a ready `Infrastructure`. A trainee's path is followed with keys only: run the
drill from the menu, watch the checklist tick live, read the verdict, save a screenshot into the
snapshot; and, separately, quit in the middle of the drill and find nothing left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from drillui.evidence.checks import Check
from drillui.evidence.signals import SIGNALS, signal_view
from drillui.faults.base import probe_engine
from drillui.record.eventlog import read_events
from drillui.record.events import FaultReverted, StopRequested
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import RunOptions
from drillui.scenarios import load_catalog
from drillui.settings import DrillSettings
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.stack import Endpoints, LocalEngineSwitch
from drillui.stack.tracestore import TraceStoreServer
from drillui.ui.app import DrillApp
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.screens.options import RunOptionsModal
from tests.screen import screen_text as _text
from worker.db import connect

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def infra(db_url: str, es_url: str, engine: EmbeddedEngine, trace_store: TraceStoreServer) -> Iterator[Infrastructure]:
    url = trace_store.url.rstrip("/")
    yield Infrastructure(Endpoints(db_url, es_url, url, url), LocalEngineSwitch(engine), "test")


def _app(infra: Infrastructure, snapshots: Path) -> DrillApp:
    return DrillApp(load_catalog(ROOT / "scenarios.yaml"), infra=infra, snapshots=snapshots,
                    run_options=RunOptions(duration=3), settings=DrillSettings.build({}, state_dir=snapshots / "state"))


async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


async def test_drill_a_from_the_screen_completes_its_checklist(infra: Infrastructure, tmp_path: Path) -> None:
    app = _app(infra, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("enter")  # drill A is the first of the menu
        await _until(pilot, lambda: isinstance(app.screen, RunOptionsModal), 10, "the run options")
        await pilot.press("enter")  # Start: bounded, as the app's run options say
        await _until(pilot, lambda: isinstance(app.screen, DrillScreen), 10, "the drill screen")
        screen = app.screen
        assert isinstance(screen, DrillScreen) and screen.drill.id == "es_down_connect"

        def checks() -> dict[str, Check]:
            return {cid: Check.from_json(c) for cid, c in screen.state.checks.items()}

        # Live: the retry signal and its checks tick while the fault is still armed.
        def live_retry_seen() -> bool:
            check = checks().get('metric:outbox_retry_scheduled_total{reason="es_connect"}')
            return screen.state.reverted_at is None and check is not None and check.state == "seen"

        await _until(pilot, lambda: live_retry_seen() or screen.state.reverted_at is not None, 60, "the run to progress")
        assert live_retry_seen(), "retry did not tick while the fault was armed"
        seen = checks()['metric:outbox_retry_scheduled_total{reason="es_connect"}']
        assert seen.first_seen_seconds is not None and 0 <= seen.first_seen_seconds < 3
        assert "outbox_retry_scheduled_total" in seen.query

        await _until(pilot, lambda: screen.state.verdict is not None and not screen.check_action("stop", ()), 90, "the verdict")
        final = list(checks().values())
        # PromQL checks are not applicable on these servers (no Prometheus): skipped, never failed.
        assert final and all(c.state == "passed" or (c.kind == "promql" and c.state == "skipped") for c in final), \
            [c for c in final if c.state != "passed"]

        # The same evidence as `drillui run`: the runner's own snapshot, with its verdict.
        verdict = screen.state.verdict
        assert verdict is not None
        run = Path(str(verdict["snapshot"]))
        assert run.parent == tmp_path / "es_down_connect"
        result = json.loads((run / "_result.json").read_text())
        assert result["verdict"] == "pass" and [c["id"] for c in result["checks"]] == [c.id for c in final]

        # The panels show the evidence: traces by the run's ids, logs of the worker.
        table = screen.query_one("#traces-table", DataTable)
        await _until(pilot, lambda: table.row_count > 0, 15, "traces in the panel")
        assert len(screen.state.logs) > 0
        logs = screen.state.logs
        assert any(logs.record(n).event == "outbox.retry_scheduled" for n in range(logs.first, logs.total))
        # The gauges at the verdict are the final state (the database's), not a stale scrape.
        views = {v.signal.key: v for v in (signal_view(screen.state, s) for s in SIGNALS)}
        assert views["lag"].value == 0 and views["age"].value == 0 and views["stuck"].value == 0

        await pilot.press("x")
        shot = run / f"dashboard-{run.name}-01.svg"
        await _until(pilot, lambda: shot.exists(), 10, "the screenshot")
        assert "<svg" in shot.read_text()[:500]
        await pilot.press("x")
        await _until(pilot, lambda: (run / f"dashboard-{run.name}-02.svg").exists(), 10, "a second, numbered screenshot")


async def test_quitting_mid_drill_reverts_the_fault_and_stops_the_workers(infra: Infrastructure, tmp_path: Path) -> None:
    app = _app(infra, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.armed_at is not None and bool(len(screen.state.outbox_event_ids)), 60,
                     "the fault armed")
        assert not probe_engine(infra.endpoints.es_url)[0], "the engine should be unreachable while armed"
        pids = [w.pid for w in screen.state.workers.values() if w.pid]
        assert pids and all(psutil.pid_exists(p) for p in pids)
        await pilot.press("q")
        await _until(pilot, lambda: app.return_code is not None, 90, "the app to exit")
    assert probe_engine(infra.endpoints.es_url)[0], "the fault was left armed"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"worker {pid} left running"
    runs = list((tmp_path / "es_down_connect").iterdir())
    assert len(runs) == 1
    result = json.loads((runs[0] / "_result.json").read_text())
    assert result["state"] == "stopped" and result["why"] == "stopped by key q", result
    events = read_events(runs[0] / "_events.jsonl")
    assert any(isinstance(e, StopRequested) and e.how == "key q" for e in events)
    assert any(isinstance(e, FaultReverted) and not e.still_armed for e in events)
    with connect(infra.endpoints.database_url) as conn:
        left = conn.execute("SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'processing')").fetchone()
    assert left is not None and left["n"] == 0, "the stopped run left its trigger row behind"


async def test_guided_mode_holds_the_fault_until_the_trainer_recovers_it(infra: Infrastructure, tmp_path: Path) -> None:
    app = DrillApp(load_catalog(ROOT / "scenarios.yaml"), infra=infra, snapshots=tmp_path,
                   settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, RunOptionsModal), 10, "the run options")
        await pilot.press("enter")  # Start: guided, the dashboard's default
        await _until(pilot, lambda: isinstance(app.screen, DrillScreen), 10, "the drill screen")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await _until(pilot, lambda: screen.state.held, 60, "the fault held")
        assert screen.check_action("recover", ()) and screen.check_action("top_up", ())
        await pilot.pause(0.3)
        assert "R Recover" in _text(app) and "HELD until R" in _text(app)
        # Held well past the drill's own duration (5s in the catalog).
        await pilot.pause(screen.drill.duration + 2)
        assert screen.state.reverted_at is None and not probe_engine(infra.endpoints.es_url)[0]
        events_before = len(screen.state.outbox_event_ids)
        await pilot.press("plus")
        await _until(pilot, lambda: len(screen.state.outbox_event_ids) > events_before, 20, "the top-up")
        await pilot.press("n")
        await pilot.press("R")
        await _until(pilot, lambda: screen.state.ended is not None, 60, "the verdict")
        ended = screen.state.ended
        assert ended is not None and ended.state == "passed", ended.why
        assert any(a.action == "top_up" for a in screen.state.actions)
        assert any(a.action == "recover" for a in screen.state.actions)
        assert screen.state.step == 1
        assert screen.state.reverted_at is not None and screen.state.armed_at is not None
        assert screen.state.reverted_at - screen.state.armed_at > screen.drill.duration
        assert probe_engine(infra.endpoints.es_url)[0]


