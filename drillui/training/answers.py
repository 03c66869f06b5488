"""Answers from outside the trainee's screen: `drillui answer`, the trainer's view.

Why through files: the run belongs to another process (the dashboard, `drillui train`, `drillui
run`). A live run reads requests from its `_inbox.jsonl` (appended, one JSON object a line) and
grades them itself, on its own state, recording an `answer_given` event like one given on the
trainee's screen; the asker waits for the event carrying its request id. A run that has ended
cannot write its event log any more, so an answer to it is graded here, on the run's record
folded again, and appended to `_answers.jsonl`, which every reader of the run reads after the
event log. Nothing already recorded is ever rewritten.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from drillui.errors import UsageError
from drillui.evidence.state import RunState
from drillui.record.eventlog import EventLogWriter, follow_events, iter_events
from drillui.record.events import AnswerGiven, RunEnded, RunStarted
from drillui.record.reader import RecordedRun, read_run
from drillui.record.snapshot import ANSWERS, EVENTS, INBOX, RESULT
from drillui.scenarios import Drill, Question, parse_drill
from drillui.training.grading import CLASS_CHOICES, FACTS, PROPERTIES, grade

ANSWER_TIMEOUT_SECONDS: Final = 15.0
# A run in progress appends to its event log at least every half second (metrics samples).
HEARTBEAT_SECONDS: Final = 15.0
MAX_VALUE_CHARS: Final = 200


def expects(q: Question) -> str:
    """The kind of answer a question expects, in words (never the answer)."""
    if q.kind == "failure_class":
        return "one of: " + ", ".join(CLASS_CHOICES)
    if q.kind == "yes_no":
        return "yes or no"
    prop = PROPERTIES.get(q.property or "")
    return f"an id ({prop.what}; 6 characters or more of it)" if prop else "an id"


def send(folder: Path, action: str, **fields: Any) -> str:
    """Append one request to a live run's inbox; returns its request id."""
    request = uuid.uuid4().hex[:12]
    line = json.dumps({"action": action, "request": request, "wall": time.time(), **fields}, ensure_ascii=False) + "\n"
    # One small O_APPEND write: lines of concurrent senders never interleave.
    fd = os.open(folder / INBOX, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return request


def is_live(folder: Path, *, heartbeat: float = HEARTBEAT_SECONDS) -> bool:
    """The run's runner is still at it: no result yet, and its event log grew lately."""
    if (folder / RESULT).exists():
        return False
    path = folder / EVENTS
    try:
        if time.time() - path.stat().st_mtime > heartbeat:
            return False
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            tail = fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    except FileNotFoundError:
        return False
    return b'"type":"run_ended"' not in tail and b'"type": "run_ended"' not in tail


@dataclass
class RunTraining:
    """A run's drill and its state folded from the whole record (answers after the end too)."""

    folder: Path
    drill: Drill
    state: RunState
    ended: bool


def fold(folder: Path) -> RunTraining:
    return fold_run(read_run(folder))


def fold_run(run: RecordedRun) -> RunTraining:
    state = RunState(None)
    for ev in run.iter_events():
        state.apply(ev)
    started = state.drill
    if started is None:
        raise UsageError(f"{run.snapshot.path}: the run recorded no drill (not a run of this drillui version)")
    return RunTraining(run.snapshot.path, started, state, state.ended is not None)


def recorded_drill(folder: Path) -> Drill:
    for ev in iter_events(folder / EVENTS):
        if isinstance(ev, RunStarted):
            return parse_drill(dict(ev.drill), source=f"{folder.name}: the recorded drill")
        break
    raise UsageError(f"{folder}: no run_started event: not a run recorded with an event log")


def question_of(drill: Drill, question: str) -> Question:
    q = next((q for q in drill.questions if q.id == question), None)
    if q is None:
        known = ", ".join(q.id for q in drill.questions) or "none"
        raise UsageError(f"this run's drill has no question {question!r} (its questions: {known})",
                         hint="drillui answer RUN lists them")
    return q


def check_value(q: Question, value: str) -> str:
    text = value.strip()
    if not text:
        raise UsageError(f"question {q.id}: give an answer ({expects(q)})")
    if len(text) > MAX_VALUE_CHARS:
        raise UsageError(f"question {q.id}: an answer of {len(text)} characters is not one ({expects(q)})")
    if q.kind == "yes_no" and text.lower() not in ("yes", "no", "y", "n", "true", "false"):
        raise UsageError(f"question {q.id}: answer yes or no, not {text!r}")
    if q.kind == "yes_no" and (q.property or "") not in FACTS:
        raise UsageError(f"question {q.id}: its property {q.property!r} is unknown to this drillui")
    return text


def answer_live(folder: Path, q: Question, value: str, *, by: str, timeout: float = ANSWER_TIMEOUT_SECONDS) -> AnswerGiven | None:
    """Ask the live run to grade; its `answer_given` event, or None if it ended without one."""
    events = folder / EVENTS
    start = events.stat().st_size
    request = send(folder, "answer", question=q.id, value=value, by=by, via="answer")
    deadline = time.monotonic() + timeout
    # Its answer may be written before we start reading: read from where the log stood.
    for batch in follow_events(events, stopped=lambda: time.monotonic() > deadline, start=_line_start(events, start)):
        for ev in batch:
            if isinstance(ev, AnswerGiven) and ev.request == request:
                return ev
        if any(isinstance(e, RunEnded) for e in batch):
            return None
    raise TimeoutError(f"the run in {folder} did not grade the answer within {timeout:g}s: is its runner still alive?")


def _line_start(path: Path, offset: int) -> int:
    """The start of the line `offset` falls in (a writer may be mid-line)."""
    if offset == 0:
        return 0
    with open(path, "rb") as fh:
        back = min(offset, 1 << 16)
        fh.seek(offset - back)
        chunk = fh.read(back)
    cut = chunk.rfind(b"\n")
    return offset - back + cut + 1 if cut >= 0 else max(0, offset - back)


def answer_after_end(folder: Path, q: Question, value: str, *, by: str, via: str = "answer") -> AnswerGiven:
    """Grade on the run's whole record and append the answer to `_answers.jsonl`."""
    run = fold(folder)
    g = grade(q, value, run.state)
    last = _last_event(run.state)
    now = time.time()
    ev = AnswerGiven(seq=last + 1, t=round(now - (run.state.started_wall or now), 3), wall=now, question=q.id,
                     value=value[:MAX_VALUE_CHARS], right=g.right, evidence=g.evidence, by=by or run.state.trainee or "",
                     via=via, after_end=True, counted=g.counted)
    if not g.counted:
        return ev  # not an answer: said so, nothing recorded
    writer = EventLogWriter(folder / ANSWERS)
    try:
        writer.append(ev)
    finally:
        writer.close()
    return ev


def _last_event(state: RunState) -> int:
    return state.last_seq


def answer(folder: Path, question: str, value: str, *, by: str = "") -> AnswerGiven:
    """`drillui answer RUN QUESTION VALUE`: graded by the live run, or on its record once ended."""
    drill = recorded_drill(folder)
    q = question_of(drill, question)
    text = check_value(q, value)
    if is_live(folder):
        got = answer_live(folder, q, text, by=by)
        if got is not None:
            return got
    return answer_after_end(folder, q, text, by=by)


