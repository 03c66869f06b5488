"""How runs end, on the real embedded servers: the record followed live, honest end states,
nothing left behind, and evidence that no later command rewrites.

Every way a run ends — the trainer's stop, Ctrl+C, SIGTERM, SIGHUP — must give the `stopped`
state (with how it was asked), the fault reverted, the workers stopped and none of the run's rows
left pending; `clean` must refuse a run in progress; `export` after a stack restart must leave
the run's verdict and files exactly as they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drillui.evidence.signals import SIGNALS, signal_view
from drillui.evidence.state import RunState
from drillui.faults.base import probe_engine
from drillui.record.eventlog import follow_events, read_events
from drillui.record.events import (
    Event,
    FaultArmed,
    FaultReverted,
    GaugesProbed,
    RowsSettled,
    RunEnded,
    StopRequested,
)
from drillui.runner.cleanup import DrillInProgress, clean
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DrillRunner, RunOptions, StopSignal
from drillui.scenarios import load_catalog
from worker.db import connect

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")


class Background:
    """A drill run in a thread, its events collected as they come."""

    def __init__(self, letter: str, infra: Infrastructure, snapshots: Path, **options: object) -> None:
        self.events: list[Event] = []
        self.stop = StopSignal()
        self.runner = DrillRunner(CATALOG.get(letter), infra, RunOptions(snapshots=snapshots, **options),  # type: ignore[arg-type]
                                  on_event=self.events.append, stop=self.stop)
        self.verdict = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.verdict = self.runner.run()  # type: ignore[assignment]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def wait_for(self, cls: type[Event], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(isinstance(e, cls) for e in list(self.events)):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"no {cls.__name__} within {timeout}s"
            time.sleep(0.05)

    def join(self, timeout: float = 90) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        assert self.error is None, self.error


def _unsettled(infra: Infrastructure) -> int:
    with connect(infra.endpoints.database_url) as conn:
        row = conn.execute("SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'processing')").fetchone()
    return int(row["n"]) if row else -1


def test_the_event_log_is_followed_by_a_second_reader_during_a_live_run(drill_infra: Infrastructure, tmp_path: Path) -> None:
    run = Background("A", drill_infra, tmp_path, duration=3)
    run.wait_for(FaultArmed)
    folder = Path(run.runner.recorder.state.snapshot or "")
    followed: list[Event] = []
    live_moments: list[bool] = []
    for batch in follow_events(folder / "_events.jsonl", stopped=lambda: False, poll=0.05):
        followed.extend(batch)
        live_moments.append(run.thread.is_alive())
    run.join()
    assert any(live_moments[:-1]), "the follower saw nothing before the run ended"
    assert isinstance(followed[-1], RunEnded) and followed[-1].state == "passed"
    assert followed == read_events(folder / "_events.jsonl")
    assert [e.seq for e in followed] == list(range(1, len(followed) + 1))
    # the gauges at the verdict are the final state: the event is done, nothing pending
    state = RunState(CATALOG.get("A")).apply_all(followed)
    assert any(isinstance(e, GaugesProbed) for e in followed)
    views = {s.key: signal_view(state, s) for s in SIGNALS}
    assert views["lag"].value == 0 and views["age"].value == 0 and views["stuck"].value == 0
    assert views["lag"].peak == 1  # while the engine was down, the event was pending


def test_a_stop_request_ends_stopped_with_the_fault_reverted_and_no_row_left(drill_infra: Infrastructure, tmp_path: Path) -> None:
    run = Background("A", drill_infra, tmp_path, duration=30)
    run.wait_for(FaultArmed)
    time.sleep(0.5)
    assert not probe_engine(drill_infra.endpoints.es_url)[0]
    run.stop.request("key s")
    run.join()
    assert run.verdict is not None and run.verdict.state == "stopped" and run.verdict.why == "stopped by key s"
    assert probe_engine(drill_infra.endpoints.es_url)[0], "the fault was left armed"
    assert _unsettled(drill_infra) == 0
    stops = [e for e in run.events if isinstance(e, StopRequested)]
    assert [s.how for s in stops] == ["key s"]
    assert any(isinstance(e, RowsSettled) and e.statuses.get("pending") == 1 for e in run.events)
    assert any(isinstance(e, FaultReverted) and not e.still_armed for e in run.events)
    assert all(not w.alive for w in run.runner.recorder.state.workers.values())
    result = json.loads((Path(run.verdict.snapshot) / "_result.json").read_text())
    assert result["state"] == "stopped" and result["verdict"] == "stopped" and result["passed"] is None


def test_clean_refuses_a_run_in_progress(drill_infra: Infrastructure, tmp_path: Path) -> None:
    run = Background("A", drill_infra, tmp_path, duration=4)
    run.wait_for(FaultArmed)
    with pytest.raises(DrillInProgress, match="a drill is running on this outbox .*es_down_connect"):
        clean(drill_infra)
    assert not probe_engine(drill_infra.endpoints.es_url)[0], "clean reopened the engine of the drill in progress"
    assert _unsettled(drill_infra) == 1, "clean touched the drill's row"
    with pytest.raises(DrillInProgress):
        DrillRunner(CATALOG.get("B"), drill_infra, RunOptions(snapshots=tmp_path)).run()
    run.join()
    assert run.verdict is not None and run.verdict.passed
    assert clean(drill_infra) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["es_down_connect"], "the refused run left a folder"


# ---- the command line ---------------------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "ES_URL", "JAEGER_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "DRILLUI_INFRA")}
    env["DRILLUI_STATE_DIR"] = str(tmp / "state")
    return env


def _drillui(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), *args],
                          env=_env(tmp), capture_output=True, text=True, timeout=timeout, cwd=tmp)


@pytest.mark.parametrize(("sig", "how"), [(signal.SIGINT, "Ctrl+C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")])
def test_a_signal_to_drillui_run_ends_the_drill_stopped_and_clean(tmp_path: Path, sig: int, how: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "run", "A",
                             "--duration", "30"], env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if "wrote delete event" in line:  # armed, and the trigger row is in the outbox
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    text = "".join(seen) + out
    assert proc.returncode == 3, text[-2000:]
    assert f"STOPPED: stopped by {how}" in text and "Traceback" not in text
    [folder] = list((tmp_path / "snapshots" / "es_down_connect").iterdir())
    events = read_events(folder / "_events.jsonl")
    assert [e.how for e in events if isinstance(e, StopRequested)] == [how]
    assert any(isinstance(e, FaultReverted) and not e.still_armed for e in events)
    assert any(isinstance(e, RowsSettled) for e in events)
    end = events[-1]
    assert isinstance(end, RunEnded) and end.state == "stopped"
    [clean_check] = [c for c in end.verdict["checks"] if c["id"] == "clean:reverted"]  # type: ignore[index]
    assert clean_check["state"] == "passed", clean_check
    listed = _drillui(tmp_path, "list")
    assert "STOPPED" in listed.stdout.splitlines()[0]


@dataclass
class RunningStack:
    path: Path
    restart: Callable[[], None]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningStack]:
    """`drillui stack up` in the background; `restart()` stops it and starts a new one on the same folder."""
    procs: list[subprocess.Popen[str]] = []

    def start() -> None:
        proc = subprocess.Popen([sys.executable, "-m", "drillui", "stack", "up", "--json"], env=_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        procs.append(proc)

    def restart() -> None:
        procs[-1].terminate()
        procs[-1].wait(30)
        start()

    start()
    yield RunningStack(tmp_path, restart)
    for p in procs:
        p.terminate()
        p.wait(30)
        if p.stdout:
            p.stdout.close()


def test_export_after_a_stack_restart_leaves_the_record_untouched(running: RunningStack) -> None:
    stack = running.path
    ran = _drillui(stack, "run", "B")
    assert ran.returncode == 0, ran.stdout[-2000:]
    [run] = list((stack / "snapshots" / "es_429").iterdir())
    recorded = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    running.restart()  # the embedded trace store forgets its spans
    exported = _drillui(stack, "export", "B")
    assert exported.returncode == 0, exported.stderr
    assert " 0 trace(s) found" in exported.stdout and "the run's own evidence is untouched" in exported.stdout
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k in recorded} == recorded, "export rewrote recorded evidence"
    added = sorted(str(k) for k in after.keys() - recorded.keys())
    assert added and all(a.startswith("_exports/") and a.count("/") == 2 for a in added), added

    verified = _drillui(stack, "verify", "B")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "recomputed from the record: the same verdict as recorded" in verified.stdout
    assert "every recorded file matches _manifest.json" in verified.stdout
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == after, "verify wrote something"
    listed = _drillui(stack, "list")
    assert [line for line in listed.stdout.splitlines() if line.startswith("B ")][0].count("PASS") == 1

    # and a file changed behind the run's back is named
    (run / "_logs" / f"worker-{run.name}.log").write_text("edited\n")
    tampered = _drillui(stack, "verify", "B")
    assert tampered.returncode == 1 and f"CHANGED since the run: _logs/worker-{run.name}.log" in tampered.stdout


def test_the_infrastructure_breaking_mid_run_ends_in_error_not_failed(pg: object, db_url: str, es_url: str,
                                                                         drill_infra: Infrastructure, tmp_path: Path) -> None:
    import psycopg

    from drillui.runner.runner import exit_code

    run = Background("A", drill_infra, tmp_path, duration=20)
    run.wait_for(FaultArmed)
    time.sleep(0.3)
    name = db_url.rsplit("/", 1)[-1].split("?")[0]
    with psycopg.connect(pg.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # Postgres is gone for this run
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE drillui_template')  # for the fixture's teardown
    run.join()
    assert run.verdict is not None and run.verdict.state == "error", run.verdict
    assert exit_code(run.verdict) == 5 and run.verdict.why
    assert probe_engine(es_url)[0], "the fault must be reverted whatever broke"
    result = json.loads((Path(run.verdict.snapshot) / "_result.json").read_text())
    assert result["state"] == "error" and result["passed"] is None
    assert (Path(run.verdict.snapshot) / "_manifest.json").is_file()


def test_clean_rows_removes_every_row_drills_wrote(drill_infra: Infrastructure, db_url: str) -> None:
    import uuid

    from worker.db import insert_event

    with connect(db_url) as conn:
        mine = insert_event(conn, projection="search_index_to_elastic", op="upsert", entity_id=uuid.uuid4(), correlation_id="drillui:r1")
        chron = uuid.uuid4()
        conn.execute("INSERT INTO chronicle_events (id, entity_id, kind, title, body) VALUES (%s, %s, 'note', 't', '{}')",
                     (chron, uuid.uuid4()))
        insert_event(conn, projection="chronicle", op="upsert", entity_id=chron, correlation_id="drillui:r2")
        theirs = insert_event(conn, projection="search_index_to_elastic", op="upsert", entity_id=uuid.uuid4(), correlation_id="app:1")
        conn.execute("UPDATE outbox SET status = 'done' WHERE id = ANY(%s)", ([mine, theirs],))
        conn.execute("UPDATE outbox SET status = 'failed' WHERE correlation_id = 'drillui:r2'")
    assert clean(drill_infra) == []  # done and failed rows are not dirt
    [line] = clean(drill_infra, rows=True)
    assert "removed 2 drill event(s)" in line and "1 chronicle event(s)" in line
    with connect(db_url) as conn:
        left = [r["id"] for r in conn.execute("SELECT id FROM outbox").fetchall()]
    assert left == [theirs], "only rows drills wrote may go"


def test_the_dashboard_losing_its_terminal_stops_the_run_honestly_and_exits(tmp_path: Path) -> None:
    """SIGHUP: the window closed, the ssh session dropped. No terminal to draw on, but the run
    still ends stopped (by SIGHUP), the fault reverted, the process gone."""
    import os
    import pty

    master, slave = pty.openpty()
    env = {**_env(tmp_path), "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "48"}
    proc = subprocess.Popen([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml")],
                            env=env, cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))

        def screen_has(text: bytes, timeout: float) -> bool:
            seen = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                import select

                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        seen += os.read(master, 65536)
                    except OSError:
                        return False
                    if text in seen:
                        return True
            return False

        assert screen_has(b"ready in", 60), "the dashboard did not get its stack ready"
        os.write(master, b"r")  # run drill A now, guided: the fault is held
        runs = tmp_path / "snapshots" / "es_down_connect"
        deadline = time.monotonic() + 60
        while not (runs.is_dir() and any(b'"fault_held"' in p.read_bytes() for p in runs.glob("*/_events.jsonl"))):
            assert time.monotonic() < deadline, "the fault was never held"
            screen_has(b"", 0.3)
        os.close(master)  # the terminal goes away
        master = -1
        os.killpg(proc.pid, signal.SIGHUP)
        proc.wait(120)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    [run] = list(runs.iterdir())
    events = read_events(run / "_events.jsonl")
    assert [e.how for e in events if isinstance(e, StopRequested)] == ["SIGHUP"]
    assert isinstance(events[-1], RunEnded) and events[-1].state == "stopped"
    assert any(isinstance(e, FaultReverted) and not e.still_armed for e in events)
    assert (run / "_manifest.json").is_file()
