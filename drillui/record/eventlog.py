"""`_events.jsonl`: the run's events, one JSON object per line, appended as they happen.

The writer flushes every line, so another process (`drillui watch`, a test) can follow the file
while the run goes on; a reader only takes a line once its newline is written. The file is opened
in append mode and never rewritten: what a run recorded stays as it was.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from drillui.record.events import Event, UnknownEvent, dumps, loads

FOLLOW_POLL_SECONDS = 0.1


class EventLogWriter:
    """Appends events to one file, one line each, flushed at once. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh: IO[str] | None = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0
        self.bytes = 0

    def append(self, event: Event) -> None:
        line = dumps(event) + "\n"
        with self._lock:
            if self._fh is None:
                return  # closed: the run has ended, late observers are not part of it
            self._fh.write(line)
            self._fh.flush()
            self.lines += 1
            self.bytes += len(line)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _decode(raw: bytes) -> Event:
    try:
        return loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return UnknownEvent(raw={"type": "unreadable", "error": str(exc), "line": raw[:200].decode("utf-8", "replace")})


def read_events(path: Path) -> list[Event]:
    """Every complete line of the file as an event (an unreadable line as `UnknownEvent`)."""
    out: list[Event] = []
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n") and raw.strip():
                out.append(_decode(raw.rstrip(b"\n")))
    return out


def iter_events(path: Path) -> Iterator[Event]:
    """Like `read_events`, one at a time: a long run's record is never held in memory whole."""
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n") and raw.strip():
                yield _decode(raw.rstrip(b"\n"))


def follow_events(
    path: Path,
    *,
    stopped: Callable[[], bool],
    poll: float = FOLLOW_POLL_SECONDS,
    until_end: bool = True,
    start: int = 0,
) -> Iterator[list[Event]]:
    """Follow a file another process is writing: yields the new complete events of each poll
    (an empty list when nothing is new, so a caller can look at its own clock).

    Waits for the file to appear. Stops when `stopped()` is true, or (with `until_end`) after the
    run's `run_ended` event. `start`: a byte offset at a line boundary to begin from.
    """
    from drillui.record.events import RunEnded

    offset = start
    partial = b""
    while not stopped():
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(8 << 20)
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        data = partial + chunk
        lines = data.split(b"\n")
        partial = lines.pop()
        events = [_decode(raw) for raw in lines if raw.strip()]
        yield events
        if until_end and any(isinstance(e, RunEnded) for e in events):
            return
        if not chunk:
            time.sleep(poll)
