"""The metrics panel: the runbook's four main signals as sparklines, with the fault window shaded.

Why: section 2.1 of the runbook tells a trainee to read Retry, then Failed (and terminal
failures), then Lag/Age, then Stuck. Each row shows one series: bars per scrape (for counters, the
increase since the previous scrape, so a bar means "it grew"), the current value, the change since
the drill started, and the `reason` labels that moved. Every row shares one time axis, so the
columns scraped while the fault was armed (armed → reverted) line up as one shaded band.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from drillui.evidence.signals import DrillSignalView, SignalView
from drillui.ui.format import number, signed

BARS = "▂▃▄▅▆▇█"
FLAT = "▁"
LABEL_WIDTH = 13
INLINE_REASONS_FROM = 70
# The runbook's four groups: the second series of a group hangs under the first.
ROW_LABELS = {"retry": "Retry", "failed": "Failed", "terminal": "└ terminal", "lag": "Lag", "age": "└ oldest age", "stuck": "Stuck"}
VALUE_WIDTH = 7
CHANGE_WIDTH = 8
PEAK_WIDTH = 6
FAULT_STYLE = "on $error-muted"


def columns(points: Sequence[tuple[float, float]], width: int, window: tuple[float | None, float | None],
            counter: bool) -> list[tuple[float, bool]]:
    """Fold the points into at most `width` columns: (value, scraped while the fault was armed).

    Points are folded by index, not by time: every signal gets one point per scrape, so equal
    indices are equal times on every row and the fault band lines up.
    """
    if width <= 0 or not points:
        return []
    armed, reverted = window

    def in_fault(t: float) -> bool:
        return armed is not None and t >= armed and (reverted is None or t <= reverted)

    n = len(points)
    if n <= width:
        # Few points: widen each one (up to 3 columns) so a short drill still reads as a chart.
        k = max(1, min(3, width // n))
        return [(v, in_fault(t)) for t, v in points for _ in range(k)]
    out: list[tuple[float, bool]] = []
    for c in range(width):
        chunk = points[c * n // width:(c + 1) * n // width]
        values = [v for _, v in chunk]
        out.append((sum(values) if counter else max(values), any(in_fault(t) for t, _ in chunk)))
    return out


def sparkline(cols: list[tuple[float, bool]], width: int) -> Content:
    top = max((v for v, _ in cols), default=0.0)
    parts: list[tuple[str, str]] = []
    for value, fault in cols:
        if value <= 0 or top <= 0:
            ch, style = FLAT, "$foreground-muted"
        else:
            ch, style = BARS[min(len(BARS) - 1, int(value / top * (len(BARS) - 1) + 0.5))], "bold $warning"
        parts.append((ch, f"{style} {FAULT_STYLE}" if fault else style))
    line = Content.assemble(*parts) if parts else Content("")
    return line.pad_right(max(0, width - len(cols)))


class SignalsPanel(Widget):
    """Rows of `SignalView`s, then the drill's own signals; the screen pushes new views."""

    DEFAULT_CSS = """
    SignalsPanel { height: auto; }
    """

    views: reactive[list[SignalView]] = reactive(list, always_update=True, layout=True)
    drill_views: reactive[list[DrillSignalView]] = reactive(list, always_update=True, layout=True)
    window: reactive[tuple[float | None, float | None]] = reactive((None, None))
    note: reactive[str] = reactive("", layout=True)
    highlight: reactive[str] = reactive("")
    """A signal key or drill signal label the current trainer step is about."""

    def render(self) -> Content:
        width = max(20, self.size.width)
        # Narrow panels keep the sparklines readable: the reasons move to one summary line.
        inline_reasons = width >= INLINE_REASONS_FROM
        reason_width = max(12, min(28, width // 4)) if inline_reasons else 0
        spark_width = max(4, width - LABEL_WIDTH - VALUE_WIDTH - CHANGE_WIDTH - PEAK_WIDTH - reason_width - 3)
        head = Content.assemble(
            ("signal".ljust(LABEL_WIDTH), "$foreground-muted"),
            ("per sample".ljust(spark_width), "$foreground-muted"),
            ("now".rjust(VALUE_WIDTH), "$foreground-muted"),
            ("Δ start".rjust(CHANGE_WIDTH), "$foreground-muted"),
            ("peak".rjust(PEAK_WIDTH), "$foreground-muted"),
            ("  by reason" if inline_reasons else "", "$foreground-muted"),
        )
        lines = [head.truncate(width)]
        if not self.views:
            lines.append(Content.styled("no sample yet: the workers' /metrics appear when the drill starts", "$foreground-muted"))
        summary: list[str] = []
        for view in self.views:
            sig = view.signal
            label = ROW_LABELS.get(sig.key, sig.label)
            cols = columns(view.points, spark_width, self.window, sig.kind == "counter")
            moved = view.change not in (None, 0)
            reasons = " ".join(f"{r} {signed(c)}" for r, c in view.by_reason)
            if reasons:
                summary.append(f"{sig.label} {reasons}")
            lit = self.highlight == sig.key
            row = Content.assemble(
                (label[:LABEL_WIDTH - 1].ljust(LABEL_WIDTH), "" if label.startswith("└") else "bold"),
                sparkline(cols, spark_width),
                (number(view.value, sig.unit).rjust(VALUE_WIDTH), "bold"),
                (signed(view.change, sig.unit).rjust(CHANGE_WIDTH), "bold $warning" if moved else "$foreground-muted"),
                (number(view.peak, sig.unit).rjust(PEAK_WIDTH) if view.peak is not None else "".rjust(PEAK_WIDTH), "$foreground-muted"),
                ("  " + reasons if inline_reasons else "", "$text-warning"),
            ).truncate(width, ellipsis=True)
            lines.append(row.stylize("reverse") if lit else row)
        if self.views and not inline_reasons:
            lines.append(Content.assemble(("by reason ", "$foreground-muted"),
                                          (" · ".join(summary) or "none moved", "$text-warning")).truncate(width, ellipsis=True))
        if self.drill_views:
            label_width = max(LABEL_WIDTH, min(26, max(len(v.key) for v in self.drill_views) + 1))
            drill_spark = max(4, width - label_width - VALUE_WIDTH - CHANGE_WIDTH - PEAK_WIDTH - 1)
            lines.append(Content.styled("this drill's signals", "$text-accent").truncate(width))
            for dv in self.drill_views:
                cols = columns(dv.points, drill_spark, self.window, counter=False)
                moved = dv.change not in (None, 0)
                lit = self.highlight in (dv.key, dv.signal.label)
                row = Content.assemble(
                    (dv.key[:label_width - 1].ljust(label_width), ""),
                    sparkline(cols, drill_spark),
                    (number(dv.value, dv.unit).rjust(VALUE_WIDTH), "bold"),
                    ((signed(dv.change, dv.unit) if dv.change is not None else "").rjust(CHANGE_WIDTH),
                     "bold $warning" if moved else "$foreground-muted"),
                    ((number(dv.peak, dv.unit) if dv.peak is not None else "").rjust(PEAK_WIDTH), "$foreground-muted"),
                ).truncate(width, ellipsis=True)
                lines.append(row.stylize("reverse") if lit else row)
        legend = Content.assemble((" ", FAULT_STYLE), (" fault armed→reverted  ", "$foreground-muted"),
                                  ("▁ flat █ grew  Δ start: since the drill started", "$foreground-muted"))
        lines.append(legend.truncate(width))
        if self.note:
            lines.append(Content.styled(self.note, "$text-error").truncate(width, ellipsis=True))
        return Content("\n").join(lines)
