"""The replay's timeline: where in the run we are, the fault window, the moments checks ticked.

Why: a retrospective asks "roll back time and see the actual data". One line maps the run's
duration onto the width: the fault window shaded, a mark where each piece of evidence appeared
(or broke), and the cursor at the replay's time; the line under it says how to move.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from drillui.record.player import Mark
from drillui.ui.format import clock

MARK_STYLE = {"seen": ("▲", "bold $success"), "passed": ("▲", "bold $success"), "broken": ("✗", "bold $error"),
              "failed": ("✗", "bold $error"), "armed": ("┃", "bold $error"), "reverted": ("┃", "bold $accent"),
              "held": ("┃", "bold $warning"), "not_armed": ("✗", "bold $error")}
PRIORITY = ("failed", "broken", "not_armed", "armed", "reverted", "held", "passed", "seen")


class TimelineBar(Widget):
    DEFAULT_CSS = """
    TimelineBar { height: 2; padding: 0 1; background: $panel; }
    """

    duration: reactive[float] = reactive(0.0)
    t: reactive[float] = reactive(0.0)
    speed: reactive[float] = reactive(1.0)
    playing: reactive[bool] = reactive(True)
    marks: reactive[list[Mark]] = reactive(list, always_update=True)
    note: reactive[str] = reactive("")

    def render(self) -> Content:
        width = max(10, self.size.width)
        duration = max(self.duration, 1e-6)
        cells: list[tuple[str, str]] = [("─", "$foreground-muted")] * width
        armed = next((m.t for m in self.marks if m.kind == "armed"), None)
        reverted = next((m.t for m in self.marks if m.kind == "reverted"), None)

        def col(t: float) -> int:
            return min(width - 1, max(0, int(t / duration * (width - 1) + 0.5)))

        if armed is not None:
            end = col(reverted if reverted is not None else duration)
            for c in range(col(armed), end + 1):
                cells[c] = ("━", "$error-muted")
        best: dict[int, Mark] = {}
        for m in self.marks:
            c = col(m.t)
            if c not in best or PRIORITY.index(m.kind) < PRIORITY.index(best[c].kind):
                best[c] = m
        for c, m in best.items():
            cells[c] = MARK_STYLE.get(m.kind, ("•", ""))
        cursor = col(self.t)
        ch, style = cells[cursor]
        cells[cursor] = (ch if ch not in "─━" else "●", f"reverse {style}" if style else "reverse")
        bar = Content.assemble(*cells)
        state = "▶ playing" if self.playing else "⏸ paused"
        speed = "½×" if self.speed == 0.5 else f"{self.speed:g}×"
        info = Content.assemble(
            ("REPLAY ", "bold $accent"), (f"{clock(self.t)} / {clock(self.duration)}", "bold"), f"  {state} {speed}  ",
            ("p pause/play · [ ] previous/next event · S seek · - + speed", "$foreground-muted"),
            (f"  {self.note}" if self.note else "", "$text-warning"),
        )
        return Content("\n").join([bar, info.truncate(width, ellipsis=True)])
