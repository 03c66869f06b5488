"""Reading a recorded run back as events, whatever drillui version recorded it.

A run with `_events.jsonl` is read as recorded, with each log-lines event whose lines were
recorded by reference filled in from `_logs/` (the same bytes the runner read). A run recorded
before the event log existed is read from its files (`legacy.py`): the events those files allow,
and a list of what they cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from drillui.record.eventlog import iter_events
from drillui.record.events import Event, LogLinesSeen
from drillui.record.snapshot import Snapshot
from drillui.sources.logs import read_chunk


@dataclass
class RecordedRun:
    snapshot: Snapshot
    events: list[Event]
    legacy: bool = False
    missing: list[str] = field(default_factory=list)
    """What this record cannot show (for runs recorded before the event log)."""


def resolve_references(snap: Snapshot, events: Iterable[Event]) -> Iterator[Event]:
    for ev in events:
        if isinstance(ev, LogLinesSeen) and ev.omitted and not ev.lines:
            path = snap.path / ev.file
            try:
                lines = tuple(read_chunk(path, ev.start, ev.end))
            except OSError:
                yield ev  # the file is gone: the count stays, the lines cannot be shown
                continue
            yield replace(ev, lines=lines, omitted=0)
        else:
            yield ev


def read_run(path: Path) -> RecordedRun:
    snap = Snapshot.open(path)
    if snap.events_path.exists():
        return RecordedRun(snap, list(resolve_references(snap, iter_events(snap.events_path))))
    from drillui.record.legacy import legacy_events

    events, missing = legacy_events(snap)
    return RecordedRun(snap, events, legacy=True, missing=missing)
