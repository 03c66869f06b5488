"""`drillui verify`: judge a recorded run again, from its own record, and say what differs.

The run's events are folded into a fresh `RunState` and the checks evaluated after each
observation exactly as the runner did (same evaluator, same order), then judged at the end. The
result is compared with the verdict the run recorded, and every file is compared with the
run's `_manifest.json`. Nothing is written: a recorded verdict is never replaced.

The drill judged by is the one the run recorded (its catalog entry as it was then); a catalog
that changed since is reported, never silently used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from drillui.evidence.checks import Check, CheckTracker, Verdict, end_state, evaluate, key_figure, report_notes
from drillui.evidence.state import RunState
from drillui.record.events import OBSERVATIONS, Event, RunStarted
from drillui.record.reader import RecordedRun
from drillui.record.snapshot import ManifestCheck, Result
from drillui.scenarios import Drill, parse_drill

VERIFY_LOG_LINES = 100


@dataclass
class Verification:
    run: RecordedRun
    drill: Drill
    state: RunState
    recomputed: Verdict
    recorded: Result | None
    manifest: ManifestCheck
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """The record recomputes to the verdict it recorded, and no file changed since."""
        return not self.differences and (self.manifest.intact or self.run.legacy)


def replay(drill: Drill, events: Iterable[Event]) -> tuple[RunState, CheckTracker]:
    """Fold `events` and evaluate the live checks after each observation, as the recorder did.
    Streams: the checks need tallies, not the lines themselves (a few are kept)."""
    state = RunState(drill, log_lines=VERIFY_LOG_LINES)
    tracker = CheckTracker()
    for ev in events:
        state.apply(ev)
        if isinstance(ev, RunStarted):
            tracker.update(evaluate(drill, state, final=False), state, None)
        elif isinstance(ev, OBSERVATIONS):
            tracker.update(evaluate(drill, state, final=False), state, ev.wall)
    return state, tracker


def recorded_drill(run: RecordedRun, catalog_drill: Drill | None) -> tuple[Drill, list[str]]:
    notes: list[str] = []
    started = next((e for e in run.iter_events() if isinstance(e, RunStarted)), None)
    drill: Drill | None = None
    if started is not None and started.drill:
        drill = parse_drill(dict(started.drill), source=f"{run.snapshot.path.name}: the recorded drill")
    if drill is None:
        if catalog_drill is None:
            raise ValueError("the run recorded no drill definition and none was given")
        notes.append("the run recorded no drill definition: judged by the catalog's")
        return catalog_drill, notes
    if catalog_drill is not None and catalog_drill.model_dump(mode="json") != drill.model_dump(mode="json"):
        notes.append(f"the catalog's {drill.id} changed since this run: judged by the definition the run recorded")
    return drill, notes


def verify(run: RecordedRun, catalog_drill: Drill | None = None) -> Verification:
    drill, notes = recorded_drill(run, catalog_drill)
    state, tracker = replay(drill, run.iter_events())
    checks = tracker.final(evaluate(drill, state, final=True), state)
    ended = state.ended
    error = ended.why if ended is not None and ended.state == "error" else None
    state_word, why = end_state(checks, stopped=state.stop is not None, error=error)
    if state_word == "stopped" and state.stop is not None:
        why = f"stopped by {state.stop.how}"
    if ended is None:
        notes.append("the record has no end: the run was interrupted (its process died) or is still running")
    recomputed = Verdict(
        scenario=drill.id, run_id=run.snapshot.run_id, state=state_word, checks=checks, snapshot=str(run.snapshot.path),
        key_figure=key_figure(checks), duration_seconds=ended.duration if ended else None,
        notes=report_notes(drill, state), why=why,
    )
    recorded = run.snapshot.result()
    manifest = run.snapshot.check_manifest()
    v = Verification(run, drill, state, recomputed, recorded, manifest, notes=notes)
    v.differences = differences(recorded, recomputed, legacy=run.legacy)
    if run.legacy:
        v.notes.append("recorded before the event log: judged from its files; missing: " + "; ".join(run.missing))
    return v


def differences(recorded: Result | None, recomputed: Verdict, *, legacy: bool) -> list[str]:
    if recorded is None:
        return ["the run recorded no verdict (_result.json is missing)"]
    out: list[str] = []
    if recorded.end_state != recomputed.state:
        out.append(f"end state: recorded {recorded.end_state}, recomputed {recomputed.state}")
    was = {str(c.get("id")): Check.from_json(c) for c in recorded.checks}
    now = {c.id: c for c in recomputed.checks}
    for cid, c in now.items():
        old = was.get(cid)
        if old is None:
            out.append(f"{cid}: not in the recorded verdict")
            continue
        if old.passed != c.passed:
            out.append(f"{cid}: recorded {'pass' if old.passed else 'fail'}, recomputed {'pass' if c.passed else 'fail'} "
                       f"(observed {c.observed})")
        elif old.observed != c.observed and not legacy:
            out.append(f"{cid}: recorded observed {old.observed!r}, recomputed {c.observed!r}")
    for cid in was.keys() - now.keys():
        out.append(f"{cid}: in the recorded verdict, not recomputed")
    return out
