"""A training run's summary: answers, hints, times from the arming, and the score.

All of it is read from the run's events (answers and hints are events too), so the trainee's
screen, the trainer's view, `_training.json`, replays and the report agree. The times count from
the moment the fault was armed:

- to the first right symptom: the first right answer to an `id` or `yes_no` question (a piece
  of evidence found);
- to the right cause: the first right `failure_class` answer;
- to recovery: the fault's revert (the trainee or the trainer ended it).

Score: each question's points when it was answered right (whenever), minus `WRONG_COST` per
wrong answer before that, minus the drill's `hint_cost` per hint taken; never below zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from drillui.evidence.state import RunState
from drillui.scenarios import Drill

WRONG_COST: Final = 5


@dataclass
class QuestionResult:
    id: str
    ask: str
    kind: str
    points: int
    answers: list[dict[str, Any]] = field(default_factory=list)
    right: bool = False
    earned: int = 0


@dataclass
class TrainingSummary:
    trainee: str
    scenario: str
    run_id: str
    questions: list[QuestionResult]
    hints_used: int
    hints_available: int
    score: int
    max_score: int
    to_first_symptom: float | None
    to_right_cause: float | None
    to_recovery: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(drill: Drill, state: RunState) -> TrainingSummary:
    by_id = {q.id: QuestionResult(q.id, q.ask, q.kind, q.points) for q in drill.questions}
    symptom: float | None = None
    cause: float | None = None
    for a in state.answers:
        res = by_id.get(a.question)
        if res is None or not a.counted:
            continue
        since = state.since_armed(a.wall)
        res.answers.append({"value": a.value, "right": a.right, "evidence": a.evidence, "by": a.by, "via": a.via,
                            "seconds_after_armed": None if since is None else round(since, 1), "after_end": a.after_end})
        if res.right:
            continue
        if a.right:
            res.right = True
            wrong_before = sum(1 for x in res.answers if not x["right"])
            res.earned = max(0, res.points - WRONG_COST * wrong_before)
            if res.kind == "failure_class":
                cause = since if cause is None else cause
            elif symptom is None:
                symptom = since
    hints = len(state.hints)
    score = max(0, sum(r.earned for r in by_id.values()) - drill.hint_cost * hints)
    recovery = state.since_armed(state.reverted_at)
    return TrainingSummary(
        trainee=state.trainee or next((a.by for a in state.answers if a.by), ""), scenario=drill.id, run_id=state.run_id or "", questions=list(by_id.values()),
        hints_used=hints, hints_available=len(drill.hints), score=score, max_score=sum(q.points for q in drill.questions),
        to_first_symptom=None if symptom is None else round(symptom, 1),
        to_right_cause=None if cause is None else round(cause, 1),
        to_recovery=None if recovery is None else round(recovery, 1),
    )


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s after the fault was armed"


def summary_items(s: TrainingSummary) -> list[tuple[str, str]]:
    """The summary as (label, text) rows: the report's table, `drillui scores --run`."""
    rows = [("trainee", s.trainee or "(no name given)"), ("score", f"{s.score} of {s.max_score}"),
            ("hints used", f"{s.hints_used} of {s.hints_available}"),
            ("to the first right symptom", _seconds(s.to_first_symptom)), ("to the right cause", _seconds(s.to_right_cause)),
            ("to recovery", _seconds(s.to_recovery))]
    for q in s.questions:
        tried = "; ".join(f"{a['value']} {'right' if a['right'] else 'wrong'}"
                          + (f" at {a['seconds_after_armed']:.1f} s" if a.get("seconds_after_armed") is not None else "")
                          + (" (after the end)" if a.get("after_end") else "")
                          for a in q.answers[:10])
        state = f"right, {q.earned} of {q.points}" if q.right else ("wrong" if q.answers else "not answered")
        rows.append((f"{q.id}: {q.ask}", f"{state}" + (f" · {tried}" if tried else "")))
        right = next((a for a in q.answers if a["right"]), None)
        if right is not None:
            rows.append((f"{q.id}: what decided it", str(right["evidence"])))
    return rows
