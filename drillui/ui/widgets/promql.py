"""The PromQL panel under the trainer's step: a query's answer by label set, with a sparkline over
the drill's time range, and the prompt a trainee types PromQL into.

Why here, beside the step: the step says "watch Retry first" and shows the runbook's PromQL; with
a Prometheus in the stack the answer belongs right under it, where the trainee reads the query.
A dumb widget: the screen gives it a recorded `promql_evaluated` event (live, watched or replayed:
the same event) and a note; the prompt only posts what was typed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input

from drillui.record.events import PromqlEvaluated
from drillui.sources.prometheus import Series
from drillui.ui.format import clock
from drillui.ui.messages import PromqlPromptClosed, PromqlSubmitted

BARS = "▁▂▃▄▅▆▇█"
GAP = "·"
VALUE_WIDTH = 9


def value_text(v: float | None) -> str:
    """Rates are small numbers: three significant digits, not the panels' one decimal."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}"


def time_columns(points: Sequence[tuple[float, float]], start: float, end: float, width: int,
                 step: float = 0.0) -> list[float | None]:
    """Each of `width` columns is one slice of [start, end]: the highest value in it; a column
    between two points at most 1.5 steps apart holds the earlier one (a series sampled every
    second is continuous, not dotted); None where there is no data."""
    cols: list[float | None] = [None] * max(0, width)
    if width <= 0:
        return cols
    span = max(end - start, 1e-9)
    last: tuple[int, float, float] | None = None
    for t, v in sorted(p for p in points if math.isfinite(p[1])):
        i = min(width - 1, max(0, int((t - start) / span * width)))
        if last is not None and step and t - last[1] <= 1.5 * step:
            for j in range(last[0] + 1, i):
                cols[j] = last[2]
        prev = cols[i]
        cols[i] = v if prev is None else max(prev, v)
        last = (i, t, v)
    return cols


def spark(cols: Sequence[float | None], top: float, low: float) -> Content:
    parts: list[tuple[str, str]] = []
    for v in cols:
        if v is None:
            parts.append((GAP, "$foreground-muted"))
        elif top <= low:
            parts.append((BARS[0] if v <= 0 else BARS[-1], "bold $warning" if v > 0 else "$foreground-muted"))
        else:
            level = int((v - low) / (top - low) * (len(BARS) - 1) + 0.5)
            parts.append((BARS[level], "bold $warning" if v > low else "$foreground-muted"))
    return Content.assemble(*parts)


class PromqlView(Widget):
    """The answer: one line about the query, then a row per series (labels, sparkline, now, max)."""

    DEFAULT_CSS = """
    PromqlView { height: auto; }
    """

    result: reactive[PromqlEvaluated | None] = reactive(None, layout=True)
    note: reactive[str] = reactive("", layout=True)
    max_rows: reactive[int] = reactive(4, layout=True)

    def render(self) -> Content:
        width = max(20, self.size.width)
        ev = self.result
        if ev is None:
            return Content.styled(self.note or "PromQL: m types a query; a on a PromQL step runs it", "$foreground-muted")
        what = {"step": f"step {ev.step_index + 1 if ev.step_index is not None else '?'}", "prompt": "typed",
                "check": f"check ({ev.phase or 'run'})"}.get(ev.purpose, ev.purpose)
        start_t, end_t = ev.start, ev.end
        head = Content.assemble(("PromQL ", "bold $accent"), (ev.query, "$text-accent"),
                                (f"  · {what} · over {clock(max(0.0, end_t - start_t))} of the drill", "$foreground-muted"))
        lines = [head.truncate(width, ellipsis=True)]
        if not ev.available:
            lines.append(Content.styled(ev.error or "no Prometheus in this stack", "$text-warning").truncate(width, ellipsis=True))
        elif ev.error:
            lines.append(Content.assemble(("Prometheus: ", "bold $error"), (ev.error, "$text-error")).truncate(width, ellipsis=True))
        else:
            series = [Series.from_json(d) for d in ev.series]
            lines += self._rows(series, ev, width)
        if self.note:
            lines.append(Content.styled(self.note, "$foreground-muted").truncate(width, ellipsis=True))
        return Content("\n").join(lines)

    def _rows(self, series: list[Series], ev: PromqlEvaluated, width: int) -> list[Content]:
        if not series:
            return [Content.styled("no series: nothing matched over the drill's time range", "$text-warning")]
        # Labels every series shares say nothing about the difference between them: shown once.
        common = {k for k in series[0].labels if all(s.labels.get(k) == series[0].labels[k] for s in series)} if len(series) > 1 else set()
        label_width = max(12, min(44, max(len(s.label_text(skip=tuple(common))) for s in series) + 1, width // 3))
        spark_width = max(8, width - label_width - 2 * VALUE_WIDTH - 2)
        values = [v for s in series for _, v in s.points if math.isfinite(v)]
        top, low = (max(values), min(0.0, min(values))) if values else (0.0, 0.0)
        out = [Content.assemble(
            ("series".ljust(label_width), "$foreground-muted"),
            (f"0:00 → {clock(max(0.0, ev.end - ev.start))}".ljust(spark_width), "$foreground-muted"),
            ("now".rjust(VALUE_WIDTH), "$foreground-muted"), ("max".rjust(VALUE_WIDTH), "$foreground-muted"),
        ).truncate(width)]
        shown = series[: max(1, self.max_rows)]
        for s in shown:
            finite = [v for _, v in s.points if math.isfinite(v)]
            cols = time_columns(s.points, ev.start, ev.end, spark_width, ev.step) if ev.step else [s.last] * min(spark_width, 1)
            label = s.label_text(skip=tuple(common)) or "{}"
            out.append(Content.assemble(
                (label[: label_width - 1].ljust(label_width), ""),
                spark(cols, top, low).pad_right(max(0, spark_width - len(cols))),
                value_text(s.last).rjust(VALUE_WIDTH),
                value_text(max(finite) if finite else None).rjust(VALUE_WIDTH),
            ).truncate(width, ellipsis=True))
        more = len(series) - len(shown) + ev.omitted
        if more or common:
            tail = []
            if common:
                tail.append("all series: " + " ".join(f"{k}={series[0].labels[k]}" for k in sorted(common)))
            if more:
                tail.append(f"{more} more series")
            out.append(Content.styled(" · ".join(tail), "$foreground-muted").truncate(width, ellipsis=True))
        return out


class PromqlInput(Input):
    """The prompt: Enter runs the query over the drill's time range; Escape hands the keys back."""

    DEFAULT_CSS = """
    PromqlInput, PromqlInput:focus { height: 1; border: none; padding: 0 1; background: $boost; }
    PromqlInput:focus { background: $primary 25%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Back", tooltip="Back to the dashboard (the answer stays)")]

    def action_leave(self) -> None:
        self.post_message(PromqlPromptClosed())


class PromqlPanel(Vertical):
    """The prompt (shown once asked for) over the answer; hidden while it has neither."""

    DEFAULT_CSS = """
    PromqlPanel { height: auto; max-height: 12; padding: 0 1; background: $panel; display: none; }
    PromqlPanel.-shown { display: block; }
    PromqlPanel > PromqlInput { display: none; }
    PromqlPanel.-prompt > PromqlInput { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield PromqlInput(placeholder="PromQL over the drill's time range, e.g. sum by (reason) (rate(outbox_retry_scheduled_total[1m]))  "
                          "Enter: run  Esc: back", id="promql-input")
        yield PromqlView(id="promql-view")

    @property
    def view(self) -> PromqlView:
        return self.query_one(PromqlView)

    @property
    def input(self) -> PromqlInput:
        return self.query_one(PromqlInput)

    def show(self, result: PromqlEvaluated | None, note: str = "") -> None:
        view = self.view
        view.result, view.note = result, note
        self.set_class(result is not None or bool(note) or self.has_class("-prompt"), "-shown")

    def open_prompt(self, text: str | None = None) -> None:
        self.add_class("-prompt", "-shown")
        if text is not None:
            self.input.value = text
        self.input.focus()

    def close_prompt(self) -> None:
        self.remove_class("-prompt")
        view = self.view
        self.set_class(view.result is not None or bool(view.note), "-shown")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(PromqlSubmitted(event.value.strip()))
