"""Replay, watch and serve: read-only views of a run, drawn from its events by the run screen.

Replays run on recorded data with no stack; `watch` follows a real run of the runner in another
thread through its `_events.jsonl`; `serve` is exercised with a real headless Chromium and a
websocket client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from textual.pilot import Pilot

from drillui.evidence.checks import Check
from drillui.record.eventlog import EventLogWriter
from drillui.record.events import ChecksChanged, FaultArmed, FaultReverted, RunEnded
from drillui.record.player import Player, parse_seek
from drillui.record.reader import read_run
from drillui.record.snapshot import Snapshot
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DrillRunner, RunOptions
from drillui.scenarios import load_catalog
from drillui.settings import DrillSettings
from drillui.ui import demo
from drillui.ui.viewer import FollowScreen, ReplayScreen, ViewerApp, WaitingScreen, live_runs
from drillui.ui.widgets.timeline import TimelineBar
from tests.screen import screen_text as _text

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")


def _recorded(tmp_path: Path) -> Path:
    """The demo's drill A run, written as a run folder (its event log and result)."""
    snap = Snapshot(tmp_path / "snapshots", "es_down_connect", demo.RUN_ID)
    snap.path.mkdir(parents=True)
    writer = EventLogWriter(snap.events_path)
    for ev in demo.events():
        writer.append(ev)
    writer.close()
    end = demo.events()[-1]
    assert isinstance(end, RunEnded)
    snap.write_json("_result.json", dict(end.verdict or {}))
    return snap.path




async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


# ---- the player ---------------------------------------------------------------------------------


def test_the_player_plays_steps_and_seeks_over_the_recorded_events() -> None:
    events = demo.events()
    p = Player(events)
    assert p.duration == events[-1].t
    first = p.advance(0.0)
    assert first and all(e.t == 0.0 for e in first)
    got = p.advance(1.0)
    assert all(0 < e.t <= 1.0 for e in got) and p.t == 1.0
    back, again = p.seek(0.5)
    assert back and again == [e for e in events if e.t <= 0.5]
    back, ahead = p.step(1)
    assert not back and ahead and not p.playing
    armed = next(e for e in events if isinstance(e, FaultArmed))
    while p.t < armed.t:
        p.step(1)
    assert p.t == armed.t
    back, _ = p.step(-1)
    assert back and p.t < armed.t
    assert p.faster(1) == 2.0 and p.faster(5) == 4.0 and p.faster(-9) == 0.5
    kinds = {m.kind for m in p.marks()}
    assert {"armed", "reverted", "seen", "passed"} <= kinds


@pytest.mark.parametrize(("text", "now", "t"), [("12.5", 3.0, 12.5), ("+5s", 3.0, 8.0), ("-2", 3.0, 1.0), ("1m30s", 0, 90.0)])
def test_seek_takes_times_as_people_type_them(text: str, now: float, t: float) -> None:
    assert parse_seek(text, now) == t


def test_a_bad_seek_is_explained() -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_seek("soon", 0)


# ---- replay on screen ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_replay_shows_each_moment_of_a_recorded_run(tmp_path: Path) -> None:
    run = read_run(_recorded(tmp_path))
    screen = ReplayScreen(demo.catalog().drills[0], run, playing=False)
    app = ViewerApp(demo.catalog(), first=screen, settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        armed = next(e.t for e in run.events if isinstance(e, FaultArmed))
        reverted = next(e.t for e in run.events if isinstance(e, FaultReverted))
        # just after the fault was armed: running, nothing recovered yet
        screen.show_at(armed + 0.5)
        await pilot.pause(0.2)
        shown = _text(app)
        assert "REPLAY" in shown and "paused" in shown and "RUNNING" in shown
        checks = {c["id"]: Check.from_json(c) for c in screen.state.checks.values()}
        assert checks['metric:outbox_processed_total{op="delete"}'].state == "waiting"
        assert screen.state.reverted_at is None
        # after the revert: recovered, and the retry count of that moment
        screen.show_at(reverted + 1.0)
        await pilot.pause(0.2)
        assert screen.state.reverted_at is not None
        # back in time again: the fold starts over, the later evidence is gone
        screen.show_at(armed + 0.5)
        await pilot.pause(0.2)
        assert screen.state.reverted_at is None and not screen.state.finished
        # the keys: next/previous event, seek by typing, the end
        t = screen.player.t
        await pilot.press("right_square_bracket")
        assert screen.player.t > t and not screen.player.playing
        await pilot.press("left_square_bracket")
        assert screen.player.t <= t
        await pilot.press("S")
        await pilot.pause(0.1)
        await pilot.press(*"+1s", "enter")
        await pilot.pause(0.1)
        assert abs(screen.player.t - (t + 1.0)) < 0.3 or screen.player.t == screen.player.duration
        await pilot.press("end")
        await pilot.pause(0.2)
        assert screen.state.end_state == "passed" and "PASS" in _text(app)
        bar = screen.query_one(TimelineBar)
        assert bar.t == screen.player.duration and any(m.kind == "armed" for m in bar.marks)
        # read-only: it never acts on a run
        for action in ("stop", "recover", "top_up", "run_again", "clean_run", "screenshot"):
            assert screen.check_action(action, ()) is False
        # the pivots work on the recorded spans: trace -> span tree
        await pilot.press("t", "enter")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "SpanTreeModal"


@pytest.mark.anyio
async def test_replay_plays_by_itself_at_the_chosen_speed(tmp_path: Path) -> None:
    run = read_run(_recorded(tmp_path))
    screen = ReplayScreen(demo.catalog().drills[0], run, playing=True)
    app = ViewerApp(demo.catalog(), first=screen, settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("plus", "plus")  # 4x
        assert screen.player.speed == 4.0
        await _until(pilot, lambda: screen.state.finished, timeout=10)
        await pilot.pause(0.2)
        assert not screen.player.playing and "paused" in _text(app)


@pytest.mark.anyio
async def test_a_run_recorded_before_the_event_log_replays_what_its_files_allow(tmp_path: Path) -> None:
    folder = _recorded(tmp_path)
    snap = Snapshot.open(folder)
    from drillui.record.snapshot import Recipe

    snap.write_json("_recipe.json", Recipe(scenario="es_down_connect", letter="A", run_id=snap.run_id,
                                           drill=demo.catalog().drills[0].model_dump(mode="json"),
                                           workers=[{"name": "worker", "worker_id": demo.WORKER_ID}]))
    snap.events_path.unlink()  # as the first version of drillui left it
    run = read_run(folder)
    assert run.legacy and run.missing
    screen = ReplayScreen(demo.catalog().drills[0], run, playing=False)
    app = ViewerApp(demo.catalog(), first=screen, settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("end")
        await pilot.pause(0.2)
        assert any("recorded before the event log" in str(n.message) for n in app._notifications)
        assert "some moments are missing" in _text(app)


# ---- watch --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_watch_waits_for_a_run_and_says_so(tmp_path: Path) -> None:
    app = ViewerApp(CATALOG, watch_root=tmp_path / "snapshots", settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: "no run in progress" in _text(app))
        assert isinstance(app.screen, WaitingScreen)
        # a finished run is not "in progress"
        _recorded(tmp_path)
        assert live_runs(tmp_path / "snapshots", None) == []


@pytest.mark.slow
@pytest.mark.anyio
async def test_watch_follows_a_live_run_and_shows_the_same_checks_ticking(drill_infra: Infrastructure, tmp_path: Path) -> None:
    runner = DrillRunner(CATALOG.get("A"), drill_infra, RunOptions(snapshots=tmp_path / "snapshots", duration=4))
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
    app = ViewerApp(CATALOG, watch_root=tmp_path / "snapshots", settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: isinstance(app.screen, WaitingScreen))
        thread.start()
        await _until(pilot, lambda: isinstance(app.screen, FollowScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, FollowScreen)
        await _until(pilot, lambda: screen.state.armed_at is not None and not screen.state.finished, timeout=30)
        live_seen = {cid: c["state"] for cid, c in screen.state.checks.items()}
        assert screen.check_action("stop", ()) is False and screen.check_action("recover", ()) is False
        await _until(pilot, lambda: screen.state.finished, timeout=60)
        await pilot.pause(0.3)
        thread.join(30)
        verdict = result[0]
        assert [Check.from_json(c) for c in screen.state.checks.values()] == verdict.checks
        assert screen.state.end_state == verdict.state == "passed"
        recorded = [(c["id"], c["state"]) for e in read_run(Path(verdict.snapshot)).events
                    if isinstance(e, ChecksChanged) for c in e.checks]
        assert [(c["id"], c["state"]) for c in (screen.state.checks.values())] == [(c.id, c.state) for c in verdict.checks]
        assert recorded and set(live_seen) <= {cid for cid, _ in recorded}
        assert "PASS" in _text(app)  # it stays on the verdict


# ---- serve --------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int, str]:
    port = _free_port()
    env = {**os.environ, "DRILLUI_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "serve", "--port",
                             str(port), "--snapshots", str(tmp_path / "snapshots"), *args],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "drillui serve:" in first, first
    import socket

    deadline = time.monotonic() + 30
    while True:  # the address is printed before the server listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "drillui serve did not listen"
            time.sleep(0.1)
    return proc, port, first


async def _terminal_text(url: str, seconds: float = 20.0) -> str:
    """What the served app writes to a browser's terminal, as text (the escape codes dropped)."""
    import re

    out = b""
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "?width=120&height=40") as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = await ws.receive(timeout=1.0)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                out += msg.data
                text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", out).decode("utf-8", "replace")
                if "waiting for one" in text or "PASS" in text:
                    return text
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", out).decode("utf-8", "replace")


@pytest.mark.slow
def test_serve_answers_a_real_browser_with_the_watch_screen(tmp_path: Path) -> None:
    from tests.browser import CHROMIUM, Browser

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    (tmp_path / "snapshots").mkdir()
    _recorded(tmp_path)
    proc, port, _ = _serve(tmp_path, "--replay", f"A/{demo.RUN_ID}")
    try:
        text = asyncio.run(_terminal_text(f"ws://127.0.0.1:{port}/ws"))
        assert "drillui watch" in text and "waiting for one" in text
        replay = asyncio.run(_terminal_text(f"ws://127.0.0.1:{port}/ws/replay/es_down_connect/{demo.RUN_ID}"))
        assert "REPLAY" in replay
        shot = tmp_path / "served.png"
        with Browser() as browser:
            classes = browser.visit(f"http://127.0.0.1:{port}/", until="document.body.classList.contains('-first-byte')",
                                    evaluate="document.body.className", timeout=60)
            time.sleep(2)  # let the terminal draw before looking at it
            browser.visit(f"http://127.0.0.1:{port}/", until="document.body.classList.contains('-first-byte')",
                          screenshot=shot, evaluate="1", timeout=60)
        assert "-first-byte" in classes and shot.stat().st_size > 5000
        shutil.copy(shot, ROOT / "snapshots" / "serve-test.png") if os.environ.get("DRILLUI_KEEP_SHOTS") else None
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "evil.example"}).status_code == 403
        assert httpx.get(f"http://127.0.0.1:{port}/replay/es_down_connect/20990101T000000").status_code == 404
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_serve_on_another_address_needs_its_token(tmp_path: Path) -> None:
    import httpx

    (tmp_path / "snapshots").mkdir()
    proc, port, first = _serve(tmp_path, "--host", "0.0.0.0")
    try:
        assert "?token=" in first
        token = first.strip().rsplit("?token=", 1)[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/").status_code == 403
            assert c.get("/ws").status_code == 403
            assert c.get("/?token=wrong").status_code == 403
            granted = c.get(f"/?token={token}")
            assert granted.status_code == 302 and "token" not in granted.headers["location"]
            assert c.get("/").status_code == 200  # the cookie carries it now
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
