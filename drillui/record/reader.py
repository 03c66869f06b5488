"""Reading a recorded run back as events, whatever drillui version recorded it.

After the event log come the events later commands recorded beside it (`_answers.jsonl`:
training answers given once the run had ended); the event log itself is never written again.

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
from drillui.record.snapshot import ANSWERS, Snapshot
from drillui.sources.logs import read_chunk


@dataclass
class RecordedRun:
    """A run's record, read on demand: `iter_events()` streams it (a long run's record is never
    held whole), `events` holds it as a list for the replay player."""

    snapshot: Snapshot
    legacy: bool = False
    missing: list[str] = field(default_factory=list)
    """What this record cannot show (for runs recorded before the event log)."""
    _events: list[Event] | None = field(default=None, repr=False)

    def iter_events(self) -> Iterator[Event]:
        if self._events is not None:
            yield from self._events
        elif self.legacy:
            from drillui.record.legacy import legacy_events

            yield from legacy_events(self.snapshot)[0]
        else:
            yield from resolve_references(self.snapshot, iter_events(self.snapshot.events_path))
            yield from self.later_events()

    def later_events(self) -> Iterator[Event]:
        """What later commands added beside the closed event log: answers given after the end."""
        path = self.snapshot.path / ANSWERS
        if path.exists():
            yield from iter_events(path)

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            self._events = list(self.iter_events())
        return self._events


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
        return RecordedRun(snap)
    from drillui.record.legacy import MISSING, legacy_events

    if snap.recipe() is None:
        legacy_events(snap)  # raises the clear error: not a run folder
    return RecordedRun(snap, legacy=True, missing=list(MISSING))
