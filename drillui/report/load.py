"""Reading one run folder for a report: its record, its screenshots, its training scores.

The record is read once, and folded as it is read: a run's `_events.jsonl` is streamed line by
line (`iter_events`), never held whole, so a long run costs the report its fold's bounded state,
not the size of its record (`read_run` would make a list of every event first). A run recorded
before the event log is read by `read_run`, which synthesizes its events from its files and
says what they cannot tell. What else a report shows of the folder is read here, each file
within a size limit, and a file that cannot be used becomes a sentence in the report rather than
a failed report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from typing import Any, Final

from drillui.errors import DrillError
from drillui.evidence.state import RunState
from drillui.record.eventlog import iter_events
from drillui.record.events import Event
from drillui.record.reader import RecordedRun, read_run
from drillui.record.snapshot import RESULT, TRAINING, Snapshot
from drillui.report.model import RunReport, Screenshot, Training, build, clip, fold, unreadable
from drillui.report.sanitize import UnsafeSvg, sanitize_svg
from drillui.training.score import summarize, summary_items

SCREENSHOT_GLOB: Final = "dashboard-*.svg"
MAX_SCREENSHOTS: Final = 12
MAX_SCREENSHOT_BYTES: Final = 4 << 20
MAX_TRAINING_BYTES: Final = 1 << 20
MAX_TRAINING_ITEMS: Final = 200


def load_run(path: Path) -> RunReport:
    """The report of the run in `path`; never raises for what is inside the folder."""
    snap = Snapshot.open(path)
    where = str(snap.path)
    legacy, missing = False, []
    try:
        events: Iterable[Event]
        if snap.events_path.exists():
            events = chain(iter_events(snap.events_path), RecordedRun(snap).later_events())
        else:
            run = read_run(snap.path)
            events, legacy, missing = run.events, run.legacy, run.missing
        folded = fold(events)
    except (DrillError, OSError, UnicodeDecodeError, ValueError) as exc:
        return unreadable(where, snap.scenario, snap.run_id, f"the run could not be read: {exc}")
    result: dict[str, Any] | None = None
    if folded.state.ended is None:
        result = _result(snap)
    shots, left_out = screenshots(snap.path)
    return build(folded, folder=where, scenario=snap.scenario, run_id=snap.run_id, legacy=legacy, missing=missing,
                 result=result, screenshots=shots, screenshots_left_out=left_out, training=training_of(folded.state) or training(snap.path))


def _result(snap: Snapshot) -> dict[str, Any] | None:
    try:
        data = snap.read_json(RESULT)
    except DrillError:
        return None
    return data if isinstance(data, dict) else None


def screenshots(folder: Path) -> tuple[list[Screenshot], int]:
    """The first `MAX_SCREENSHOTS` screenshots, sanitized, and how many more were left out."""
    paths = sorted(folder.glob(SCREENSHOT_GLOB))
    out: list[Screenshot] = []
    for p in paths[:MAX_SCREENSHOTS]:
        try:
            size = p.stat().st_size
            if size > MAX_SCREENSHOT_BYTES:
                out.append(Screenshot(p.name, None, f"not embedded: {size:,} bytes, more than {MAX_SCREENSHOT_BYTES:,}"))
                continue
            out.append(Screenshot(p.name, sanitize_svg(p.read_text(encoding="utf-8"))))
        except UnsafeSvg as exc:
            out.append(Screenshot(p.name, None, f"not embedded: {exc}"))
        except (OSError, UnicodeDecodeError) as exc:
            out.append(Screenshot(p.name, None, f"not embedded: cannot be read ({type(exc).__name__})"))
    return out, max(0, len(paths) - MAX_SCREENSHOTS)


def training_of(state: RunState) -> Training | None:
    """A training run's scores, from its events (answers given after the end included)."""
    drill = state.drill
    if drill is None or not drill.questions or not (state.trainee or state.answers or state.hints):
        return None
    return Training(items=tuple(summary_items(summarize(drill, state))))


def training(folder: Path) -> Training | None:
    """The `_training.json` a run wrote, for a record the fold cannot summarize."""
    p = folder / TRAINING
    if not p.exists():
        return None
    try:
        if p.stat().st_size > MAX_TRAINING_BYTES:
            return Training(problem=f"{TRAINING} is larger than {MAX_TRAINING_BYTES:,} bytes: not shown")
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Training(problem=f"{TRAINING} cannot be read: {clip(exc, 300)}")
    if not isinstance(data, dict):
        return Training(items=(("scores", data),))
    return Training(items=tuple(list(data.items())[:MAX_TRAINING_ITEMS]))
