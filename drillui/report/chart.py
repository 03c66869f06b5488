"""The chart of a run's main signals over time, drawn as inline SVG.

Why this module exists: a report is read after the drill, often printed, so it cannot use the
dashboard's terminal sparklines, and it must not fetch a charting library. This draws the six
signals of `drillui.evidence.signals` (retry, failed, terminal, lag, oldest age, stuck) as small
multiples on one time axis, with the fault window shaded and the moments checks ticked marked
by their number in the checklist.

Bounded: `Downsampler` keeps a fixed number of buckets over the whole run whatever its length
(neighbouring buckets merge when it fills up), each keeping its lowest and highest point, so a
spike survives and a chart never has more than `2 * MAX_BUCKETS` points per signal.

Pure: data in, markup out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from drillui.report.markup import Html, el, num, svg_el

MAX_BUCKETS: Final = 300

WIDTH: Final = 960
LABEL_W: Final = 190
RIGHT_PAD: Final = 14
TOP: Final = 44
PANEL_H: Final = 46
PANEL_GAP: Final = 8
AXIS_H: Final = 24

INK: Final = "#1b1b1b"
MUTED: Final = "#555"
LINE: Final = "#1f4e99"
BAND: Final = "#fce3c4"
SEEN: Final = "#1a7f37"
BROKEN: Final = "#b42318"
LABEL_CHAR_W: Final = 7.5
"""Width of one character of a tick label (11px bold), to keep labels apart."""


@dataclass
class _Bucket:
    start: float
    lo: tuple[float, float]
    hi: tuple[float, float]
    last: tuple[float, float]

    def add(self, t: float, v: float) -> None:
        if v < self.lo[1]:
            self.lo = (t, v)
        if v > self.hi[1]:
            self.hi = (t, v)
        self.last = (t, v)


class Downsampler:
    """At most `limit` buckets over all the points it was given, in time order."""

    def __init__(self, limit: int = MAX_BUCKETS) -> None:
        self.limit = max(2, limit)
        self.width = 0.0
        self.origin: float | None = None
        self.buckets: list[_Bucket] = []
        self.count = 0
        self.peak: float | None = None

    def add(self, t: float, v: float) -> None:
        if not (math.isfinite(t) and math.isfinite(v)):
            return
        self.count += 1
        self.peak = v if self.peak is None else max(self.peak, v)
        if self.origin is None:
            self.origin = t
        b = self.buckets[-1] if self.buckets else None
        if b is not None and (t < b.start or (self.width > 0 and t < b.start + self.width)):
            b.add(t, v)
        else:
            start = t if self.width == 0 else self.origin + math.floor((t - self.origin) / self.width) * self.width
            self.buckets.append(_Bucket(start, (t, v), (t, v), (t, v)))
        if len(self.buckets) > self.limit:
            self._coarsen()

    def _coarsen(self) -> None:
        assert self.origin is not None
        span = max(self.buckets[-1].last[0] - self.origin, 1e-9)
        self.width = max(self.width * 2, span / (self.limit / 2))
        merged: list[_Bucket] = []
        for b in self.buckets:
            start = self.origin + math.floor((b.start - self.origin) / self.width) * self.width
            if merged and merged[-1].start == start:
                m = merged[-1]
                for p in (b.lo, b.hi):
                    m.add(*p)
                m.last = b.last
            else:
                merged.append(_Bucket(start, b.lo, b.hi, b.last))
        self.buckets = merged

    def points(self) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for b in self.buckets:
            for p in sorted({b.lo, b.hi}):
                if not out or out[-1] != p:
                    out.append(p)
        if self.buckets and out[-1] != self.buckets[-1].last:
            out.append(self.buckets[-1].last)
        return out


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    kind: str
    """counter: the total since the run started; gauge: the value."""
    unit: str
    points: list[tuple[float, float]]
    """(seconds since the run started, value)."""
    summary: str = ""


@dataclass(frozen=True)
class Tick:
    t: float
    """Seconds since the run started."""
    number: int
    """The check's number in the checklist."""
    state: str


@dataclass(frozen=True)
class ChartData:
    duration: float
    series: list[Series]
    armed: float | None = None
    reverted: float | None = None
    ticks: list[Tick] = field(default_factory=list)

    @property
    def has_points(self) -> bool:
        return any(len(s.points) >= 2 for s in self.series)


_STEPS: Final = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def axis_step(duration: float, max_ticks: int = 10) -> float:
    for s in _STEPS:
        if duration / s <= max_ticks:
            return float(s)
    return float(math.ceil(duration / max_ticks / 86400) * 86400)


def seconds_label(t: float) -> str:
    if t < 60:
        return f"{num(t)}s"
    m, s = divmod(round(t), 60)
    if m < 60:
        return f"{m}m" + (f"{s:02d}s" if s else "")
    h, m = divmod(m, 60)
    return f"{h}h" + (f"{m:02d}m" if m else "")


def value_label(v: float, unit: str = "") -> str:
    if abs(v) >= 10_000:
        text = f"{v / 1000:.0f}k"
    elif abs(v) >= 100 or v == int(v):
        text = f"{v:.0f}"
    else:
        text = f"{v:.2g}" if abs(v) < 1 else f"{v:.1f}"
    return text + unit


def _label(group: list[Tick]) -> str:
    mark = "✗" if any(t.state == "broken" for t in group) else "✓"
    return mark + ",".join(str(t.number) for t in group)


def _labels(ticks: list[Tick], x: Callable[[float], float]) -> list[tuple[float, list[Tick]]]:
    """Ticks grouped so that their labels do not overlap: neighbouring labels that would touch
    become one (centred between its ticks), however close the checks ticked."""
    groups: list[list[Tick]] = []
    for tick in sorted(ticks, key=lambda k: (k.t, k.number)):
        if groups and round(x(groups[-1][-1].t)) == round(x(tick.t)):
            groups[-1].append(tick)
        else:
            groups.append([tick])

    def centre(group: list[Tick]) -> float:
        return (x(group[0].t) + x(group[-1].t)) / 2

    merged = True
    while merged:
        merged = False
        for i in range(len(groups) - 1):
            a, b = groups[i], groups[i + 1]
            if centre(b) - centre(a) < (len(_label(a)) + len(_label(b))) * LABEL_CHAR_W / 2 + 6:
                groups[i : i + 2] = [a + b]
                merged = True
                break
    return [(centre(g), g) for g in groups]


def render_chart(data: ChartData, *, chart_id: str, title: str) -> Html:
    """The chart as an `<svg>` (`chart_id` is its element id in the page)."""
    duration = max(data.duration, 1e-6)
    plot_w = WIDTH - LABEL_W - RIGHT_PAD
    height = TOP + len(data.series) * (PANEL_H + PANEL_GAP) + AXIS_H

    def x(t: float) -> float:
        return LABEL_W + max(0.0, min(t, duration)) / duration * plot_w

    bottom = TOP + len(data.series) * (PANEL_H + PANEL_GAP) - PANEL_GAP
    parts: list[Html] = [svg_el("title", title)]

    # The fault window, across every panel, labelled once above them.
    if data.armed is not None:
        end = data.reverted if data.reverted is not None else duration
        x0, x1 = x(data.armed), x(end)
        parts.append(svg_el("rect", class_="band", x=x0, y=TOP - 4, width=max(x1 - x0, 1.5), height=bottom - TOP + 8, fill=BAND))
        label = "fault armed" if data.reverted is not None else "fault armed (not reverted)"
        parts.append(svg_el("text", label, x=x0 + 3, y=TOP - 9, font_size=11, fill="#7a4a00"))

    for i, s in enumerate(data.series):
        top = TOP + i * (PANEL_H + PANEL_GAP)
        parts.append(_panel(s, top, x, plot_w))

    # Check ticks: a line through the panels at each moment, the check numbers on top.
    for px in sorted({round(x(t.t), 1) for t in data.ticks}):
        broken = any(t.state == "broken" and round(x(t.t), 1) == px for t in data.ticks)
        parts.append(svg_el("line", class_="tick", x1=px, y1=TOP - 2, x2=px, y2=bottom, stroke=BROKEN if broken else SEEN,
                            stroke_width=1.2, stroke_dasharray="3 3"))
    for px, group in _labels(data.ticks, x):
        colour = BROKEN if any(t.state == "broken" for t in group) else SEEN
        parts.append(svg_el("text", _label(group), class_="tick-label", x=px, y=13, font_size=11, text_anchor="middle",
                            fill=colour, font_weight="bold"))

    # The time axis.
    step = axis_step(duration)
    t = 0.0
    while t <= duration + 1e-9:
        px = x(t)
        parts.append(svg_el("line", x1=px, y1=bottom, x2=px, y2=bottom + 4, stroke=MUTED))
        parts.append(svg_el("text", seconds_label(t), x=px, y=bottom + 16, font_size=11, text_anchor="middle", fill=MUTED))
        t += step
    parts.append(svg_el("text", "time since the run started", x=LABEL_W - 18, y=bottom + 16, font_size=11, text_anchor="end",
                        fill=MUTED))
    return svg_el("svg", *parts, class_="chart", id=chart_id, viewBox=f"0 0 {WIDTH} {height}", role="img",
                  aria_label=title, preserveAspectRatio="xMinYMin meet", font_family="system-ui, sans-serif")


def _panel(s: Series, top: float, x: Callable[[float], float], plot_w: float) -> Html:
    values = [v for _, v in s.points]
    vmax = max([*values, 0.0])
    vmin = min([*values, 0.0])
    scale_top = vmax if vmax > vmin else vmin + 1.0

    def y(v: float) -> float:
        return top + PANEL_H - (v - vmin) / (scale_top - vmin) * (PANEL_H - 4)

    items: list[Html] = [
        svg_el("rect", class_="panel", x=LABEL_W, y=top, width=plot_w, height=PANEL_H, fill="none", stroke="#9a9a9a",
               stroke_width=0.8),
        svg_el("text", s.label, x=8, y=top + 16, font_size=13, font_weight="bold", fill=INK),
        svg_el("text", s.summary, x=8, y=top + 33, font_size=11, fill=MUTED),
        svg_el("text", value_label(scale_top, s.unit), x=LABEL_W + 3, y=top + 11, font_size=10, fill=MUTED),
    ]
    if len(s.points) >= 1:
        coords: list[tuple[float, float]] = []
        for j, (t, v) in enumerate(s.points):
            px, py = x(t), y(v)
            if s.kind == "counter" and j:
                coords.append((px, coords[-1][1]))  # a counter holds its total until the next sample
            coords.append((px, py))
        line = " ".join(f"{num(a)},{num(b)}" for a, b in coords)
        base = y(vmin)
        area = f"M{num(coords[0][0])},{num(base)} L" + line.replace(" ", " L") + f" L{num(coords[-1][0])},{num(base)} Z"
        items.append(svg_el("path", class_="area", d=area, fill=LINE, fill_opacity=0.10, stroke="none"))
        items.append(svg_el("polyline", class_="series", points=line, fill="none", stroke=LINE, stroke_width=1.8,
                            stroke_linejoin="round", data_signal=s.key))
    return el("g", *items, class_="signal", data_signal=s.key)


def legend_text(data: ChartData) -> str:
    parts = ["Counters (retry, failed, terminal) show the total since the run started; gauges (lag, oldest age, stuck) "
             "their value, the highest of the workers."]
    if data.armed is not None:
        end = f"+{data.reverted:.1f}s" if data.reverted is not None else "the end (never reverted)"
        parts.append(f"Shaded: the fault was armed, +{data.armed:.1f}s to {end}.")
    if data.ticks:
        parts.append("Dashed lines: the moment a check ticked on the trainer's screen (✓ seen, ✗ broken), "
                     "numbered as in the checklist.")
    return " ".join(parts)

