"""`drillui scores`: the scoreboard of a session's training runs, per run and per trainee.

Read from each run's events (the same `summarize` the trainee's screen, `_training.json` and the
report use), answers given after a run ended included. Only the events a score depends on are
decoded: a long run's record costs a scan of its lines, not a fold of its spans and logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from drillui.evidence.state import RunState
from drillui.record.eventlog import _decode
from drillui.record.events import Event
from drillui.record.snapshot import ANSWERS, EVENTS
from drillui.report.select import parse_since, started_since, today
from drillui.training.score import TrainingSummary, summarize

# The only event types a score reads (matched on the raw line before it is decoded).
TAGS: Final = (b'"run_started"', b'"fault_armed"', b'"fault_reverted"', b'"answer_given"', b'"hint_given"', b'"run_ended"')


def _score_events(path: Path) -> Iterator[Event]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, a generator's with would outlive a failed open
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            if raw.endswith(b"\n") and any(tag in raw for tag in TAGS):
                yield _decode(raw.rstrip(b"\n"))


def run_summary(folder: Path) -> tuple[TrainingSummary, RunState] | None:
    """The training summary of one run, or None for a run that was not a training run."""
    state = RunState(None)
    for path in (folder / EVENTS, folder / ANSWERS):
        for ev in _score_events(path):
            state.apply(ev)
    if state.drill is None or not state.drill.questions or not (state.trainee or state.answers):
        return None
    return summarize(state.drill, state), state


@dataclass
class RunScore:
    folder: str
    started: str
    end_state: str
    summary: dict[str, Any]


@dataclass
class TraineeScore:
    trainee: str
    runs: int = 0
    score: int = 0
    max_score: int = 0
    causes_right: int = 0
    hints: int = 0
    mean_to_cause: float | None = None
    _times: list[float] = field(default_factory=list, repr=False)


@dataclass
class Board:
    since: str
    runs: list[RunScore]
    trainees: list[TraineeScore]

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "runs": [asdict(r) for r in self.runs],
                "trainees": [{k: v for k, v in asdict(t).items() if not k.startswith("_")} for t in self.trainees]}


def scoreboard(root: Path, since: str | None, *, now: datetime | None = None) -> Board:
    now = now or datetime.now(UTC)
    start = parse_since(since, now) if since else today(now)
    runs: list[RunScore] = []
    people: dict[str, TraineeScore] = {}
    for folder in started_since(root, start):
        got = run_summary(folder)
        if got is None:
            continue
        summary, state = got
        runs.append(RunScore(str(folder), folder.name, state.end_state or ("in progress" if state.ended is None else "?"),
                             summary.to_json()))
        who = people.setdefault(summary.trainee or "(no name)", TraineeScore(summary.trainee or "(no name)"))
        who.runs += 1
        who.score += summary.score
        who.max_score += summary.max_score
        who.hints += summary.hints_used
        if summary.to_right_cause is not None:
            who.causes_right += 1
            who._times.append(summary.to_right_cause)
    for who in people.values():
        who.mean_to_cause = round(sum(who._times) / len(who._times), 1) if who._times else None
    ranked = sorted(people.values(), key=lambda t: (-(t.score / t.max_score if t.max_score else 0), t.mean_to_cause or 1e9))
    return Board(start.isoformat(timespec="minutes"), runs, ranked)


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def print_scoreboard(board: Board, out: IO[str]) -> None:
    if not board.runs:
        print(f"no training run since {board.since} (start one with `drillui train`)", file=out)
        return
    print(f"training runs since {board.since}", file=out)
    print(f"  {'run':<16} {'drill':<24} {'trainee':<14} {'score':>9} {'hints':>5} {'symptom':>8} {'cause':>8} "
          f"{'recovery':>8}  ended", file=out)
    for r in board.runs:
        s = r.summary
        print(f"  {r.started:<16} {s['scenario']:<24} {(s['trainee'] or '-')[:14]:<14} {s['score']:>4}/{s['max_score']:<4} "
              f"{s['hints_used']:>5} {_secs(s['to_first_symptom']):>8} {_secs(s['to_right_cause']):>8} "
              f"{_secs(s['to_recovery']):>8}  {r.end_state}", file=out)
    print(file=out)
    print(f"  {'trainee':<16} {'runs':>4} {'score':>11} {'right causes':>12} {'hints':>5} {'mean to cause':>13}", file=out)
    for t in board.trainees:
        pct = f"{100 * t.score / t.max_score:.0f}%" if t.max_score else "-"
        print(f"  {t.trainee[:16]:<16} {t.runs:>4} {t.score:>5}/{t.max_score:<5} {t.causes_right:>12} {t.hints:>5} "
              f"{_secs(t.mean_to_cause):>13}  {pct}", file=out)
