"""Playing a recorded run back: a clock over its events, with pause, step, seek and speed.

Why a separate, headless piece: `drillui replay` draws a run with the same screen a live run uses,
fed with the same events; what differs is only where they come from and when. The player decides
which events are due at the replay's time; the screen folds them. Going back in time means
folding again from the start (a fold is cheap: a run has thousands of events, not millions).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from drillui.record.events import (
    ChecksChanged,
    Event,
    FaultArmed,
    FaultHeld,
    FaultNotArmed,
    FaultReverted,
    LogLinesSeen,
    MetricsSampled,
    MetricsUnreachable,
    SpansSeen,
    StatusesPolled,
)

SPEEDS: Final = (0.5, 1.0, 2.0, 4.0)
# Stepping goes from one moment worth telling to the next: the observations that arrive many
# times a second (samples, log lines, spans, status polls) are skipped over, not stopped at.
QUIET: Final = (MetricsSampled, MetricsUnreachable, LogLinesSeen, SpansSeen, StatusesPolled)


@dataclass(frozen=True)
class Mark:
    """A moment on the timeline: the fault, a check that ticked."""

    t: float
    kind: str
    """armed, reverted, held, not_armed, seen, broken, passed, failed."""
    label: str


class Player:
    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)
        self._times = [e.t for e in self.events]
        self.duration = self._times[-1] if self._times else 0.0
        self.applied = 0
        """How many of the events the screen has folded (events[:applied])."""
        self.t = 0.0
        self.speed = 1.0
        self.playing = True

    # ---- where we are ---------------------------------------------------------------------------

    @property
    def at_end(self) -> bool:
        return self.applied >= len(self.events)

    def due(self) -> list[Event]:
        """The events up to the current time not folded yet; marks them folded."""
        end = bisect.bisect_right(self._times, self.t)
        out = self.events[self.applied:end]
        self.applied = max(self.applied, end)
        return out

    def advance(self, seconds: float) -> list[Event]:
        """Wall seconds passed: move the clock (if playing) and return what became due."""
        if self.playing and not self.at_end:
            self.t = min(self.duration, self.t + seconds * self.speed)
            if self.t >= self.duration:
                self.t = self.duration
        return self.due()

    def seek(self, t: float) -> tuple[bool, list[Event]]:
        """(fold again from the start?, the events to fold) to stand at run time `t`."""
        t = max(0.0, min(self.duration, t))
        back = t < self.t or bisect.bisect_right(self._times, t) < self.applied
        self.t = t
        if back:
            self.applied = 0
        return back, self.due()

    def step(self, by: int) -> tuple[bool, list[Event]]:
        """To the next (+1) or previous (-1) event worth stopping at, paused there."""
        self.playing = False
        i = self.applied - 1
        while True:
            i += 1 if by > 0 else -1
            if i < 0:
                return self.seek(0.0)
            if i >= len(self.events):
                return self.seek(self.duration)
            if not isinstance(self.events[i], QUIET):
                # Everything up to and including that event, whatever else shares its moment.
                back = i + 1 < self.applied
                if back:
                    self.applied = 0
                self.t = self.events[i].t
                end = i + 1
                out = self.events[self.applied:end]
                self.applied = end
                return back, out

    def faster(self, by: int) -> float:
        i = SPEEDS.index(self.speed) if self.speed in SPEEDS else 1
        self.speed = SPEEDS[max(0, min(len(SPEEDS) - 1, i + by))]
        return self.speed

    def toggle(self) -> bool:
        if self.at_end and not self.playing:
            self.seek(0.0)
        self.playing = not self.playing
        return self.playing

    # ---- the timeline ---------------------------------------------------------------------------

    def marks(self) -> list[Mark]:
        out: list[Mark] = []
        for e in self.events:
            if isinstance(e, FaultArmed):
                out.append(Mark(e.t, "armed", "fault armed"))
            elif isinstance(e, FaultNotArmed):
                out.append(Mark(e.t, "not_armed", "fault NOT armed"))
            elif isinstance(e, FaultHeld):
                out.append(Mark(e.t, "held", "fault held"))
            elif isinstance(e, FaultReverted):
                out.append(Mark(e.t, "reverted", "fault reverted"))
            elif isinstance(e, ChecksChanged):
                for c in e.checks:
                    state = str(c.get("state"))
                    if state in ("seen", "broken", "passed", "failed"):
                        out.append(Mark(e.t, state, str(c.get("id"))))
        return out


def parse_seek(text: str, now: float) -> float:
    """`12.5` (seconds from the start), `+5s` / `-5s` (from now), `1m30s`."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("type a time: 12.5, +5s, -10s, 1m30s")
    sign = 0
    if raw[0] in "+-":
        sign = 1 if raw[0] == "+" else -1
        raw = raw[1:].strip()
    seconds = 0.0
    number = ""
    try:
        for ch in raw:
            if ch.isdigit() or ch == ".":
                number += ch
            elif ch == "m":
                seconds += float(number) * 60
                number = ""
            elif ch == "s":
                seconds += float(number)
                number = ""
            else:
                raise ValueError
        if number:
            seconds += float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use 12.5, +5s, -10s or 1m30s") from None
    return now + sign * seconds if sign else seconds
