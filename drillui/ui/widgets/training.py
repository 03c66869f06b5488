"""The training panel: the drill's questions, the answers given, the hints shown, the score.

Drawn from the run's events (`summarize` over the folded state), so the trainee's screen, the
trainer's view and a replay show the same thing. The trainee's version never shows what decided
an answer that was wrong (it could name the right one), and no part of the drill it hides; the
trainer's shows who answered what, when, and the evidence that decided it.
"""

from __future__ import annotations

from typing import Literal

from textual.content import Content
from textual.widget import Widget

from drillui.evidence.state import RunState
from drillui.scenarios import Drill
from drillui.training.score import TrainingSummary, summarize

Audience = Literal["trainee", "trainer"]
MAX_HINT_LINES = 3


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}s"


class TrainingPanel(Widget):
    DEFAULT_CSS = """
    TrainingPanel { height: auto; }
    """

    def __init__(self, drill: Drill, audience: Audience, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.drill = drill
        self.audience = audience
        self.summary: TrainingSummary | None = None
        self.hints: list[str] = []
        self.ended = False

    def show(self, state: RunState) -> None:
        self.summary = summarize(self.drill, state)
        self.hints = [h.text for h in state.hints]
        self.ended = state.ended is not None
        self.refresh(layout=True)

    def render(self) -> Content:
        s = self.summary
        if s is None:
            return Content("")
        lines: list[Content] = []
        width = max(20, self.size.width)
        for n, q in enumerate(s.questions, 1):
            tries = len(q.answers)
            if q.right:
                right = next(a for a in q.answers if a["right"])
                mark = Content.styled(f"✓ {right['value'][:24]} +{q.earned}", "bold $success")
            elif tries:
                mark = Content.styled(f"✗ wrong ×{tries}" + ("" if self.ended else " · answer again"), "bold $error")
            else:
                mark = Content.styled("not answered", "$foreground-muted")
            head = Content.assemble((f"{n} ", "bold $accent"), q.ask)
            room = width - len(mark) - 2
            lines.append(Content.assemble(head.truncate(max(10, room), ellipsis=True), "  ", mark))
            if self.audience == "trainer":
                for a in q.answers[-2:]:
                    at = "" if a["seconds_after_armed"] is None else f" at {a['seconds_after_armed']:.0f}s"
                    word = ("right", "$success") if a["right"] else ("wrong", "$error")
                    detail = Content.assemble("   ", word, f" {a['value'][:40]}{at} ({a['via']}): ",
                                              (str(a["evidence"]), "$foreground-muted"))
                    lines.append(detail.truncate(width, ellipsis=True))
        for i, text in enumerate(self.hints[-MAX_HINT_LINES:], max(1, len(self.hints) - MAX_HINT_LINES + 1)):
            lines.append(Content.assemble((f"hint {i}: ", "bold $warning"), text).truncate(width, ellipsis=True))
        tail = [f"score {s.score} of {s.max_score}", f"hints {s.hints_used} of {s.hints_available}"
                + (f" (−{self.drill.hint_cost} each)" if self.drill.hint_cost else "")]
        if self.audience == "trainer" or self.ended:
            tail.append(f"symptom {_secs(s.to_first_symptom)} · cause {_secs(s.to_right_cause)} · "
                        f"recovery {_secs(s.to_recovery)} after arming")
        who = f"{s.trainee} · " if s.trainee else ""
        lines.append(Content.styled(who + " · ".join(tail), "$text-primary"))
        return Content("\n").join(lines)
