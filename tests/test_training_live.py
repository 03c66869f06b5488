"""Training runs on the embedded stack: a real runner grading answers from its screen and its
inbox, the red herrings really running, and a whole blind drill driven with keys on the
trainee's screen while the trainer's view follows it as a second app.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from drillui import cli
from drillui.record.eventlog import read_events
from drillui.record.events import AnswerGiven, Event, FaultHeld, HintGiven, LogLinesSeen, RunEnded, RunStarted
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DrillRunner, RunOptions
from drillui.scenarios import load_catalog
from drillui.settings import DrillSettings
from drillui.ui.app import DrillApp
from drillui.ui.screens.modals import PickerModal
from drillui.ui.screens.training import TextInputModal, TraineeScreen, training_options
from drillui.ui.viewer import TrainerFollowScreen, ViewerApp
from tests.screen import screen_text as _text
from worker.db import connect

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")


class Live:
    """A runner in a thread, and what it emitted so far."""

    def __init__(self, drill_id: str, infra: Infrastructure, snapshots: Path, hold: float) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.runner = DrillRunner(CATALOG.get(drill_id), infra, RunOptions(snapshots=snapshots, guided=True, hold=hold,
                                                                            trainee="Ana"), on_event=self._seen)
        self.verdict: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _seen(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)

    def _run(self) -> None:
        self.verdict = self.runner.run()

    def of(self, kind: type[Event]) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert self.thread.is_alive() or cond(), f"the run ended before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    @property
    def folder(self) -> Path:
        return Path(self.of(RunStarted)[0].snapshot)


def test_control_drill_graded_live_from_the_screen_and_the_inbox(drill_infra: Infrastructure, tmp_path: Path,
                                                                 db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    live = Live("control_nothing_wrong", drill_infra, tmp_path / "snapshots", hold=60)
    live.wait(lambda: bool(live.of(FaultHeld)), 60, "the fault held")
    # The noisy metric: harmless background events processed beside the drill's own.
    live.wait(lambda: live.runner.recorder.state.statuses.get("done") == 5 and len(live.runner._background) >= 3, 30,
              "the drill's events done and background noise written")
    live.runner.answer("cause", "es_connect")
    live.runner.hint()
    live.runner.answer("cause", "nothing_wrong")
    live.wait(lambda: len(live.of(AnswerGiven)) == 2, 20, "two answers graded")

    # `drillui answer` while the run is live: graded by the runner, from its inbox.
    code = cli.main(["answer", live.folder.name, "lost", "yes", "--snapshots", str(tmp_path / "snapshots"),
                     "--scenarios", str(ROOT / "scenarios.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("WRONG") and "(_answers.jsonl" not in out, out
    code = cli.main(["answer", live.folder.name, "lost", "no", "--snapshots", str(tmp_path / "snapshots"),
                     "--scenarios", str(ROOT / "scenarios.yaml")])
    assert code == 0, capsys.readouterr()
    live.runner.recover_now()
    live.thread.join(90)
    assert live.verdict is not None and live.verdict.state == "passed", live.verdict and live.verdict.why

    recorded = read_events(live.folder / "_events.jsonl")
    answers = [e for e in recorded if isinstance(e, AnswerGiven)]
    assert [(a.question, a.value, a.right, a.via) for a in answers] == [
        ("cause", "es_connect", False, "screen"), ("cause", "nothing_wrong", True, "screen"),
        ("lost", "yes", False, "answer"), ("lost", "no", True, "answer")]
    assert all(a.by == "Ana" and not a.after_end for a in answers)
    assert answers[2].request and "all 5 event(s) are in the outbox" in answers[3].evidence
    assert [h.index for h in recorded if isinstance(h, HintGiven)] == [0]
    training = json.loads((live.folder / "_training.json").read_text())
    assert training["trainee"] == "Ana" and training["hints_used"] == 1
    assert training["score"] == (50 - 5) + (50 - 5) - 10
    assert 0 < training["to_right_cause"] < training["to_recovery"]
    # The decoy's rows are gone, whatever became of them; the drill's own stay for the record.
    with connect(db_url) as conn:
        left = conn.execute("SELECT count(*) AS n FROM outbox WHERE correlation_id LIKE %s", ("%:background",)).fetchone()
    assert left is not None and left["n"] == 0


def test_a_warning_from_a_sidecar_is_a_red_herring_and_a_long_hold_stays_transient(drill_infra: Infrastructure,
                                                                                   tmp_path: Path) -> None:
    """Drill A held past what 10 attempts would last (the default max): still retries only."""
    live = Live("es_down_connect", drill_infra, tmp_path / "snapshots", hold=14)
    live.wait(lambda: any(isinstance(e, LogLinesSeen) and e.worker == "sidecar" and e.lines for e in live.of(LogLinesSeen)),
              40, "the sidecar's warnings in the record")
    live.runner.answer("cause", "es_connect")
    live.thread.join(90)
    assert live.verdict is not None and live.verdict.state == "passed", live.verdict.why
    checks = {c.id: c for c in live.verdict.checks}
    terminal = next(c for c in checks.values() if "outbox_terminal_failed_total" in c.description)
    assert terminal.state == "passed", terminal.observed
    (a,) = live.of(AnswerGiven)
    assert a.right, a.evidence
    lines = [json.loads(line) for e in live.of(LogLinesSeen) if e.worker == "sidecar" for line in e.lines]
    assert lines and all(x["level"] == "warning" and x["event"] == "cache.refresh_slow" for x in lines)


# ---- the blind drill, and the trainer's view as a second app -------------------------------------




async def _until(pilots: list[Pilot[Any]], cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(_text(p.app) for p in pilots)
        for p in pilots:
            await p.pause(0.05)


class TrainerView(threading.Thread):
    """`drillui watch --trainer` as a second app, in its own thread and event loop (Textual keeps
    the running app in a context variable: two apps cannot share one loop's context)."""

    def __init__(self, snapshots: Path, state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.app = ViewerApp(CATALOG, watch_root=snapshots, trainer=True, settings=DrillSettings.build({}, state_dir=state_dir))
        self.texts: dict[str, str] = {}
        self.steps: dict[str, threading.Event] = {k: threading.Event() for k in ("following", "answers", "hinted", "ended")}
        self.answers: list[str] = []
        self.hint_by = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._script())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            for step in self.steps.values():
                step.set()

    async def _script(self) -> None:
        app = self.app
        async with app.run_test(size=(160, 48)) as pilot:
            await _until([pilot], lambda: isinstance(app.screen, TrainerFollowScreen) and app.screen.state.held, 60,
                         "the trainer's view following the run")
            view = app.screen
            assert isinstance(view, TrainerFollowScreen)
            self.texts["held"] = _text(app)
            self.steps["following"].set()
            await _until([pilot], lambda: len(view.state.answers) >= 2, 60, "two answers on the trainer's view")
            await pilot.pause(0.2)
            self.texts["answers"] = _text(app)
            self.steps["answers"].set()
            await pilot.press("h")  # the next hint, sent through the run's inbox
            self.steps["hinted"].set()
            await _until([pilot], lambda: view.state.ended is not None, 120, "the end on the trainer's view")
            await pilot.pause(0.3)
            self.texts["ended"] = _text(app)
            self.answers = [a.value for a in view.state.answers]
            self.hint_by = view.state.hints[0].by if view.state.hints else ""
            self.steps["ended"].set()


@pytest.mark.anyio
async def test_a_blind_drill_with_the_trainers_view_as_a_second_app(drill_infra: Infrastructure, tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    drill = CATALOG.get("es_429")
    trainee_app = DrillApp(CATALOG, infra=drill_infra, snapshots=snapshots,
                           settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    trainer = TrainerView(snapshots, tmp_path / "state2")
    trainer.start()

    async def step(name: str, timeout: float) -> None:
        await _until([pilot], lambda: trainer.steps[name].is_set(), timeout, f"the trainer's view: {name}")
        assert trainer.error is None, trainer.error

    async with trainee_app.run_test(size=(160, 48)) as pilot:
        screen = TraineeScreen(drill, options=training_options(trainee_app.run_options, "Ana", 120))
        await trainee_app.push_screen(screen)
        await _until([pilot], lambda: screen.state.held, 60, "the fault held")
        await step("following", 30)

        # Blind: nothing on the trainee's screen names the drill, its fault, steps, checks or verdict.
        seen = _text(trainee_app)
        assert "Training · Ana" in seen and "Questions" in seen
        for secret in (drill.title, drill.steps[0].say[:30], "Evidence checklist", "fault es_429 armed", "this drill's signals"):
            assert secret not in seen, secret
        shown = trainer.texts["held"]
        assert drill.title in shown and "Evidence checklist" in shown and drill.steps[0].say[:30] in shown

        # The class, picked from the choices (wrong first, then right).
        for value in ("es_5xx", "es_429"):
            await pilot.press("1")
            await _until([pilot], lambda: isinstance(trainee_app.screen, PickerModal), 5, "the choices")
            options = trainee_app.screen.query_one(OptionList)
            options.highlighted = next(i for i in range(options.option_count) if options.get_option_at_index(i).id == value)
            await pilot.press("enter")
            await _until([pilot], lambda v=value: any(a.value == v for a in screen.state.answers), 15, f"{value} graded")
        assert [a.right for a in screen.state.answers] == [False, True]

        # The trainer sees them arrive, and sends a hint.
        await step("answers", 30)
        assert "right es_429" in trainer.texts["answers"] and "wrong es_5xx" in trainer.texts["answers"]
        await step("hinted", 10)
        await _until([pilot], lambda: len(screen.state.hints) == 1, 15, "the hint on the trainee's screen")
        await pilot.pause(0.2)
        assert drill.hints[0][:40] in _text(trainee_app)

        # An id typed from what the panels show: a retried batch's trace, its first 8 characters.
        retried = next(s.trace_id for s in screen.state.spans.spans.values()
                       if s.operation == "outbox.process" and s.attributes.get("result") == "retry")
        await pilot.press("2")
        await _until([pilot], lambda: isinstance(trainee_app.screen, TextInputModal), 5, "the id field")
        trainee_app.screen.query_one(Input).value = retried[:8]
        await pilot.press("enter")
        await _until([pilot], lambda: len(screen.state.answers) == 3, 15, "the id graded")
        assert screen.state.answers[-1].right, screen.state.answers[-1].evidence

        # The trainee recovers; the run ends; the trainer's view has the verdict, the trainee's a score.
        await pilot.press("R")
        await _until([pilot], lambda: screen.state.ended is not None, 90, "the end")
        await step("ended", 30)
        assert screen.state.ended is not None and screen.state.ended.state == "passed"
        await pilot.pause(0.3)
        seen = _text(trainee_app)
        assert "ENDED · score" in seen and "PASS" not in seen
        assert "PASS" in trainer.texts["ended"]
        assert trainer.answers == ["es_5xx", "es_429", retried[:8]]
        assert trainer.hint_by == "trainer"
    trainer.join(10)
    folder = Path(screen.state.snapshot or "")
    training = json.loads((folder / "_training.json").read_text())
    assert training["trainee"] == "Ana" and training["score"] == (40 - 5) + 30 - 10
    assert training["to_recovery"] is not None
    assert any(isinstance(e, RunEnded) for e in read_events(folder / "_events.jsonl"))
