"""The evidence checklist: one line per expected signal, ticking as each one is first seen.

Why: it is what a trainee is graded on. Each line says whether the evidence is there (✓), not yet
(·), holding so far for "must stay flat" expectations (=), or broken (✗), how long after the fault
was armed it appeared, and (for the highlighted line, or on every line when the panel is wide)
the query that found it, so the trainee can type the same query. At the end of the run the
screen replaces the live lines with the verdict's checks.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from drillui.evidence.checks import Check
from drillui.ui.format import since

MARKS: dict[str, tuple[str, str]] = {
    "waiting": ("·", "$foreground-muted"),
    "seen": ("✓", "bold $success"),
    "holding": ("=", "$success"),
    "broken": ("✗", "bold $error"),
    "at_end": ("◷", "$foreground-muted"),
    "passed": ("✓", "bold $success"),
    "failed": ("✗", "bold $error"),
    "skipped": ("–", "$foreground-muted"),
}
WHEN_WIDTH = 8
# From this width on, each line also shows its query; below it only the highlighted one does.
WIDE = 110
DETAIL_LINES = 2


def when_text(check: Check) -> str:
    if check.state == "waiting":
        return "waiting"
    if check.state == "at_end":
        return "at end"
    if check.state == "holding":
        return "holds"
    if check.state == "skipped":
        return "n/a"
    return since(check.first_seen_seconds) or ("pass" if check.state == "passed" else "fail" if check.state == "failed" else "seen")


class Checklist(Widget, can_focus=True):
    """Lines of `Check`s with a cursor; the highlighted one is detailed under the list."""

    DEFAULT_CSS = """
    Checklist { height: auto; }
    Checklist:focus { background: $boost; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Previous check", show=False),
        Binding("down", "move(1)", "Next check", show=False),
        Binding("k", "move(-1)", "Previous check", show=False),
        Binding("j", "move(1)", "Next check", show=False),
    ]

    checks: reactive[list[Check]] = reactive(list, always_update=True, layout=True)
    cursor: reactive[int] = reactive(0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # One line per check, plus the detail of the highlighted one when rows have no room for it.
        return max(1, len(self.checks)) + (0 if width >= WIDE or not self.checks else DETAIL_LINES)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def action_move(self, by: int) -> None:
        if self.checks:
            self.cursor = max(0, min(len(self.checks) - 1, self.cursor + by))

    @property
    def summary(self) -> str:
        done = sum(c.done for c in self.checks)
        broken = sum(c.state in ("broken", "failed") for c in self.checks)
        skipped = sum(c.state == "skipped" for c in self.checks)
        text = f"{done}/{len(self.checks) - skipped} seen"
        return text + (f", {broken} broken" if broken else "") + (f", {skipped} n/a" if skipped else "")

    def render(self) -> Content:
        width = max(20, self.size.width)
        height = max(3, self.size.height)
        if not self.checks:
            return Content.styled("The drill's expected signals appear here when it starts.", "$foreground-muted")
        wide = width >= WIDE
        detail_lines = 0 if wide else DETAIL_LINES
        room = max(1, height - detail_lines)
        cursor = min(self.cursor, len(self.checks) - 1)
        first = max(0, min(cursor - room + 1, len(self.checks) - room)) if len(self.checks) > room else 0
        lines: list[Content] = []
        desc_width = width - WHEN_WIDTH - 3
        query_width = 0
        if wide:
            query_width = max(20, desc_width * 2 // 5)
            desc_width -= query_width + 2
        for i, check in enumerate(self.checks[first:first + room], start=first):
            mark, style = MARKS[check.state]
            row = Content.assemble(
                (mark, style), " ",
                (when_text(check).rjust(WHEN_WIDTH), style if check.state != "waiting" else "$foreground-muted"), "  ",
                (check.description[:desc_width].ljust(desc_width) if wide else check.description, "" if check.done else "$foreground-muted" if check.state == "waiting" else ""),
            )
            if wide:
                row = Content.assemble(row, "  ", (check.query[:query_width], "$text-accent"))
            row = row.truncate(width, ellipsis=True, pad=True)
            if i == cursor and self.has_focus:
                row = row.stylize("reverse")
            elif i == cursor:
                row = row.stylize("underline")
            lines.append(row)
        if not wide:
            current = self.checks[cursor]
            lines += [Content("")] * max(0, room - len(lines))
            lines.append(Content.assemble(("observed ", "$foreground-muted"), current.observed,
                                          ("  expected ", "$foreground-muted"), current.expected).truncate(width, ellipsis=True))
            lines.append(Content.assemble(("query ", "$foreground-muted"), (current.query or "–", "$text-accent")).truncate(width, ellipsis=True))
        return Content("\n").join(lines)
