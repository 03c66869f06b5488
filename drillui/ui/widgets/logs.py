"""The logs panel: every worker's JSON lines, shared keys as columns, coloured by level and result.

Why: logs are the last link of the evidence chain; a trainee arrives here from a trace (filtered
on its `trace_id`) or narrows the lines with free text and `key=value` terms, and follows the
join key back to a trace. Built for floods: the view renders only the rows on screen from the
screen's bounded line buffer (nothing is appended to a widget per line), the screen repaints it
at most ten times a second, and a filter runs over the whole buffer in a thread worker, not only
over what was drawn. When lines arrive faster than anyone can read, the status line says so.

Columns follow the width: the trace id (the join key) stays, at least 8 characters, at every size
from 100x30; columns drop in the order of `COLUMNS`, last first (so the worker goes before the
trace id), and the message takes what is left.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from drillui.sources.logs import LineBuffer, LineSnapshot, LogFilter, LogRecord, parse_filter
from drillui.ui.format import LEVEL_STYLE, RESULT_STYLE, short_id
from drillui.ui.messages import LogFilterSubmitted, LogLineChosen
from drillui.ui.widgets.filter_input import FilterInput

MSG_CHARS = 400
MIN_MSG = 16
# (name, title, width): kept first to dropped first. The join key (trace) comes right after the
# time and the event; extra columns a drill declares (e.g. projection_version) come after it.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("time", "time", 10), ("event", "event", 26), ("trace", "trace", 8), ("result", "result", 7), ("reason", "reason", 14),
    ("att", "att", 3), ("worker", "worker", 9), ("op", "op", 6), ("event id", "event id", 8), ("batch", "batch", 8),
    ("level", "level", 7),
)
# Lines a person can read per second on a shared screen; past it the status line says what is skipped.
READABLE_PER_SECOND = 20.0
RATE_WINDOW_SECONDS = 2.0
MIN_RATE_SPAN_SECONDS = 1.0
# The screen repaints at most this often: the lines of one paint beyond a screenful are not seen.
PAINT_SECONDS = 0.1


def _cell(rec: LogRecord, name: str) -> tuple[str, str]:
    level = (rec.level or "").lower()
    result = rec.result or ""
    level_style = LEVEL_STYLE.get(level, "")
    if name == "time":
        ts = rec.ts or ""
        return (ts[11:21] if len(ts) >= 21 else ts), "dim"
    if name == "event":
        return rec.event or "", RESULT_STYLE.get(result, level_style)
    if name == "result":
        return result, RESULT_STYLE.get(result, "")
    if name == "reason":
        return rec.reason or "", ""
    if name == "att":
        return ("" if rec.attempt is None else str(rec.attempt)), ""
    if name == "op":
        return rec.op or "", ""
    if name == "trace":
        return rec.trace_id or "", "cyan"
    if name == "worker":
        return rec.source, ""
    if name == "level":
        return level, level_style
    if name == "event id":
        return short_id(rec.outbox_event_id), "dim"
    if name == "batch":
        return short_id(rec.claim_batch_id), "dim"
    if name == "msg":
        return (rec.msg or rec.raw)[:MSG_CHARS], level_style
    value = rec.field_text(name)
    return value or "", "magenta"


def layout(width: int, *, workers: int = 1, extra: tuple[str, ...] = (), event_width: int = 26,
           worker_width: int = 9) -> list[tuple[str, str, int]]:
    """The columns that fit `width`, in display order, the message last with the rest.

    time, event and the trace id always show (the event name squeezed if it must); the others
    follow in `COLUMNS` order while they fit.
    """
    specs = [(n, t, w) for n, t, w in COLUMNS if n != "worker" or workers > 1]
    specs = [(n, t, worker_width if n == "worker" else w) for n, t, w in specs]
    specs[3:3] = [(name, name, max(4, min(20, len(name)))) for name in extra]
    fixed = {"time": 10, "trace": 8}
    event = max(8, min(event_width, width - sum(fixed.values()) - 2))
    chosen = [("time", "time", 10), ("event", "event", event), ("trace", "trace", 8)]
    used = 10 + 1 + event + 1 + 8
    for spec in specs:
        if spec[0] in ("time", "event", "trace"):
            continue
        if used + 1 + spec[2] > width:
            break
        chosen.append(spec)
        used += 1 + spec[2]
    if width - used - 1 >= MIN_MSG:
        chosen.append(("msg", "msg", width - used - 1))
    return chosen


def row_text(rec: LogRecord, cols: list[tuple[str, str, int]]) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for i, (name, _, width) in enumerate(cols):
        value, style = _cell(rec, name)
        if name == "trace" and value:
            value = value[:width]
        cut = value if cell_len(value) <= width else value[: max(0, width - 1)] + "…"
        if i:
            text.append(" ")
        text.append(cut.ljust(width) if name != "msg" else cut, style=style or None)
    return text


def header_text(cols: list[tuple[str, str, int]]) -> Text:
    text = Text(no_wrap=True, overflow="crop", style="bold")
    for i, (_, title, width) in enumerate(cols):
        if i:
            text.append(" ")
        text.append(title[:width].ljust(width))
    return text


class LogView(ScrollView, can_focus=True):
    """The visible rows of the panel's lines (all, or those a filter kept), rendered on demand."""

    DEFAULT_CSS = """
    LogView { height: 1fr; overflow-x: hidden; overflow-y: auto; scrollbar-size-vertical: 1; }
    LogView:focus { background-tint: $foreground 4%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
        Binding("j", "move(1)", "Down", show=False),
        Binding("pageup", "move(-20)", "Page up", show=False),
        Binding("pagedown", "move(20)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last (follow)", show=False),
        Binding("enter", "choose", "Open line", show=False),
    ]

    def __init__(self, buffer: LineBuffer, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffer = buffer
        self.rows: list[int] | None = None
        """Arrival numbers shown when filtered; None: every kept line."""
        self.cursor = -1
        """Position in the shown rows of the highlighted line (-1: the last, following)."""
        self.cols: list[tuple[str, str, int]] = []

    # ---- the rows -------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.buffer)

    def number(self, pos: int) -> int:
        """Arrival number of the row at `pos`."""
        if self.rows is not None:
            return self.rows[pos]
        return self.buffer.first + pos

    @property
    def following(self) -> bool:
        return self.cursor < 0 or self.cursor >= self.count - 1

    def current(self) -> LogRecord | None:
        if not self.count:
            return None
        pos = self.count - 1 if self.following else self.cursor
        return self.buffer.record(self.number(pos))

    def sync(self) -> None:
        """The buffer or the rows changed: new size, the newest line in view when following."""
        if self.rows is not None:
            first = self.buffer.first
            if self.rows and self.rows[0] < first:
                # Lines evicted from the buffer leave the filtered view too.
                k = next((i for i, n in enumerate(self.rows) if n >= first), len(self.rows))
                del self.rows[:k]
                self.cursor = max(-1, self.cursor - k)
        width = max(1, self.size.width)
        self.virtual_size = Size(width, self.count)
        if self.following:
            self.cursor = -1
            self.scroll_to(y=max(0, self.count - self.size.height), animate=False, immediate=True)
        self.refresh()

    # ---- rendering ------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        _, scroll_y = self.scroll_offset
        pos = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if pos >= self.count or not self.cols:
            return Strip.blank(width, base)
        rec = self.buffer.record(self.number(pos))
        text = row_text(rec, self.cols)
        selected = pos == (self.count - 1 if self.following else self.cursor)
        if selected:
            text.stylize("reverse" if self.has_focus else "underline")
        segments = list(text.render(self.app.console))
        strip = Strip(segments, text.cell_len).crop_extend(0, width, base)
        return strip.apply_style(base) if not selected else strip

    # ---- keys -----------------------------------------------------------------------------------

    def _show_cursor(self) -> None:
        pos = self.count - 1 if self.following else self.cursor
        top = self.scroll_offset.y
        if pos < top:
            self.scroll_to(y=pos, animate=False, immediate=True)
        elif pos >= top + self.size.height:
            self.scroll_to(y=pos - self.size.height + 1, animate=False, immediate=True)
        self.refresh()

    def action_move(self, by: int) -> None:
        if not self.count:
            return
        pos = self.count - 1 if self.following else self.cursor
        self.cursor = max(0, min(self.count - 1, pos + by))
        if self.cursor == self.count - 1:
            self.cursor = -1
        self._show_cursor()

    def action_first(self) -> None:
        if self.count:
            self.cursor = 0
            self._show_cursor()

    def action_last(self) -> None:
        self.cursor = -1
        self.sync()

    def action_choose(self) -> None:
        rec = self.current()
        if rec is not None:
            self.post_message(LogLineChosen(rec.trace_id, rec))

    def on_click(self, event: events.Click) -> None:
        pos = self.scroll_offset.y + event.y
        if 0 <= pos < self.count:
            self.cursor = -1 if pos == self.count - 1 else pos
            self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_resize(self) -> None:
        self.sync()


@dataclass(frozen=True)
class _Filtered:
    """A filter's result over a snapshot of the buffer (posted back from the thread)."""

    flt: LogFilter
    rows: list[int]
    upto: int


class LogsPanel(Vertical):
    """Filter line, column titles, the rows, status line."""

    DEFAULT_CSS = """
    LogsPanel > #logs-header { height: 1; color: $text-muted; }
    LogsPanel > #logs-status { height: 1; color: $text-muted; }
    """

    def __init__(self, buffer: LineBuffer, *, workers: int = 1, extra: tuple[str, ...] = (),
                 worker_names: tuple[str, ...] = (), id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffer = buffer
        self.worker_count = workers
        self.extra = extra
        self.worker_width = max([6, *(len(n) for n in worker_names)])
        self.filter: LogFilter = LogFilter()
        self._seen_total = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)

        self._filter_pending: LogFilter | None = None
        self._event_width = 12

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder="filter: free text, key=value (reason=es_connect attempt=2), trace_id=…", id="logs-filter")
        yield Static("", id="logs-header", markup=False)
        yield LogView(self.buffer, id="logs-table")
        yield Static("", id="logs-status", markup=False)

    def on_mount(self) -> None:
        self._relayout()
        self._status()

    @property
    def table(self) -> LogView:
        return self.query_one(LogView)

    @property
    def shown(self) -> int:
        return self.table.count

    def on_resize(self) -> None:
        self._relayout()

    def _relayout(self) -> None:
        view = self.table
        width = max(20, self.size.width - 1)
        view.cols = layout(width, workers=self.worker_count, extra=self.extra, event_width=self._event_width,
                           worker_width=self.worker_width)
        self.query_one("#logs-header", Static).update(header_text(view.cols))
        view.refresh()

    def set_buffer(self, buffer: LineBuffer) -> None:
        """A new run: a new buffer, nothing shown."""
        self.buffer = buffer
        self.table.buffer = buffer
        self.table.rows = None if self.filter.empty else []
        self._seen_total = 0
        self._rate.clear()
        self.table.sync()
        self._status()

    def append(self) -> None:
        """New lines are in the buffer (called at most once per paint)."""
        now = time.monotonic()
        total = self.buffer.total
        new = total - self._seen_total

        self._rate.append((now, total))
        longest = self._event_width
        for n in range(max(self.buffer.first, total - min(new, 200)), total):
            longest = max(longest, min(26, len(self.buffer.record(n).event or "")))
        if longest != self._event_width:
            self._event_width = longest
            self._relayout()
        view = self.table
        if view.rows is not None and new:
            if self._filter_pending is None:
                view.rows.extend(self.buffer.matching(self.filter, start=self._seen_total))
        self._seen_total = total
        view.sync()
        self._status()

    def set_filter(self, text: str) -> None:
        """Apply a filter (free text and key=value terms) to every kept line, in a thread."""
        self.query_one(Input).value = text
        flt = parse_filter(text)
        self.filter = flt
        view = self.table
        if flt.empty:
            self._filter_pending = None
            view.rows = None
            view.cursor = -1
            view.sync()
            self._status()
            return
        self._filter_pending = flt
        self._status()
        self._run_filter(flt, self.buffer.snapshot(), self.buffer.total)

    @work(thread=True, exclusive=True, group="logs-filter", exit_on_error=False)
    def _run_filter(self, flt: LogFilter, snap: LineSnapshot, upto: int) -> None:
        rows = snap.matching(flt)
        self.app.call_from_thread(self._filtered, _Filtered(flt, rows, upto))

    def _filtered(self, result: _Filtered) -> None:
        if result.flt is not self._filter_pending:
            return  # a newer filter was typed meanwhile
        self._filter_pending = None
        rows = result.rows
        # Lines that arrived while the thread worked are judged here.
        rows.extend(self.buffer.matching(result.flt, start=result.upto))
        view = self.table
        view.rows = rows
        view.cursor = -1
        view.sync()
        self._status()

    def rate(self) -> float:
        """Lines per second over the last seconds; 0 until a second of arrivals has been seen
        (a burst, a replay's seek, is not a flood)."""
        now = time.monotonic()
        recent = [(t, n) for t, n in self._rate if now - t <= RATE_WINDOW_SECONDS]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < MIN_RATE_SPAN_SECONDS:
            return 0.0
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])

    def _status(self) -> None:
        view = self.table
        if self._filter_pending is not None:
            text = f"filtering {len(self.buffer):,} line(s)… · filter: {self._filter_pending}"
        else:
            text = f"{view.count:,} line(s) shown of {len(self.buffer):,} kept"
            if self.buffer.dropped:
                text += f" ({self.buffer.dropped:,} older dropped)"
            if not self.filter.empty:
                text += f" · filter: {self.filter}"
        per_second = self.rate()
        rows = max(1, view.size.height)
        one_in = round(per_second * PAINT_SECONDS / rows)
        if per_second > READABLE_PER_SECOND and one_in > 1:
            text = f"showing 1 in {one_in:,}, {per_second:,.0f} lines/s · " + text + " · / filters every kept line"
        self.query_one("#logs-status", Static).update(text, layout=False)  # one line, always: no relayout

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(LogFilterSubmitted(event.value.strip()))
        self.table.focus()

