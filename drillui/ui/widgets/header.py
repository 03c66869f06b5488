"""The two lines at the top of a running drill, and the trainer's step bar under them.

Why: from across a room the first thing to read is where the drill is (arming, armed, running,
recovering, verified or failed), for how long, and whether its workers are alive; then what the
trainer says next and the query to type. Both widgets only render what their reactives hold.
"""

from __future__ import annotations

import time

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from drillui.scenarios import Step
from drillui.ui.format import PHASE_STYLE, clock


class RunHeader(Widget):
    """Drill title, phase badge, elapsed time, workers alive, and the runner's last message."""

    DEFAULT_CSS = """
    RunHeader { height: 2; background: $boost; padding: 0 1; }
    """

    drill_line: reactive[str] = reactive("")
    phase: reactive[str] = reactive("idle")
    elapsed: reactive[float] = reactive(0.0)
    alive: reactive[int | None] = reactive(None)
    worker_count: reactive[int] = reactive(0)
    message: reactive[str] = reactive("")
    stack: reactive[str] = reactive("")
    verdict: reactive[str] = reactive("")
    held: reactive[bool] = reactive(False)
    hold_until: reactive[float | None] = reactive(None)
    controls: reactive[bool] = reactive(True)
    """The trainer's screen (R recovers); a watcher or a replay only shows the hold."""

    def render(self) -> Content:
        badge = f" {self.phase.upper()} "
        style = PHASE_STYLE.get(self.phase, "$foreground")
        alive = "–" if self.alive is None else str(self.alive)
        first = Content.assemble(
            (self.drill_line, "bold"),
            "   ",
            (badge, f"reverse {style}"),
            "  ",
            (clock(self.elapsed), "bold"),
            "  ",
            (f"workers {alive}/{self.worker_count} alive", "$success" if self.alive else "$foreground-muted"),
        )
        if self.held:
            key = " · R recovers" if self.controls else " by the trainer"
            if self.hold_until is not None:
                left = max(0.0, self.hold_until - time.time())
                hold = f"  HELD · {int(left) // 60}:{int(left) % 60:02d} left{key}"
            else:
                hold = "  HELD until R (recover)" if self.controls else "  HELD by the trainer"
            first = Content.assemble(first, (hold, "bold $warning"))
        if self.stack:
            first = Content.assemble(first, ("  · " + self.stack, "$foreground-muted"))
        if self.verdict:
            second = Content.assemble(
                (self.verdict, "bold $success" if self.verdict.startswith("PASS") else "bold $error"),
            )
        else:
            second = Content.assemble(("› ", "$accent"), (self.message, "$foreground-muted"))
        width = max(1, self.size.width)
        return Content("\n").join([first.truncate(width, ellipsis=True), second.truncate(width, ellipsis=True)])


class StepBar(Widget):
    """The trainer's current step: what to say, and the PromQL or trace query to type."""

    DEFAULT_CSS = """
    StepBar { height: 2; padding: 0 1; background: $panel; }
    """

    index: reactive[int] = reactive(0)
    ids: reactive[dict[str, str]] = reactive(dict, always_update=True)
    """The run's first id per pivot (`claim_batch_id`, `outbox_event_id`, ...): a trace query's
    `<id>` placeholder shows the real one, ready to type into Jaeger."""

    def __init__(self, steps: list[Step], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.steps = steps

    def fill(self, query: str) -> str:
        for key, value in self.ids.items():
            if f"wordloom.{key}" in query:
                return query.replace('"<id>"', f'"{value}"')
        return query

    def render(self) -> Content:
        width = max(1, self.size.width)
        if not self.steps:
            return Content.styled("This drill has no trainer steps.", "$foreground-muted")
        step = self.steps[self.index % len(self.steps)]
        head = Content.assemble((f"Step {self.index % len(self.steps) + 1}/{len(self.steps)} ", "bold $accent"),
                                ("(n/p) ", "$foreground-muted"), step.say)
        if step.promql:
            query = Content.assemble(("  PromQL ", "$foreground-muted"), (step.promql, "$text-accent"))
        elif step.trace_query:
            query = Content.assemble(("  Trace  ", "$foreground-muted"), (self.fill(step.trace_query), "$text-accent"))
        else:
            query = Content("")
        if self.size.height < 2:
            # A short terminal: one line, the query after the words.
            return Content.assemble(head, query).truncate(width, ellipsis=True)
        return Content("\n").join([head.truncate(width, ellipsis=True), query.truncate(width, ellipsis=True)])

    def advance(self, by: int) -> None:
        if self.steps:
            self.index = (self.index + by) % len(self.steps)
