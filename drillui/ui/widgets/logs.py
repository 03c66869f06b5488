"""The logs panel: every worker's JSON lines, shared keys as columns, coloured by level and result.

Why: logs are the last link of the evidence chain; a trainee arrives here from a trace (filtered
on its `trace_id`) or narrows the lines with free text and `key=value` terms. Enter on a line
opens the trace it was logged under. The screen owns the bounded buffer the tailer fills; this
panel shows the last `MAX_ROWS` lines that pass the filter and follows the newest while the
cursor is on the last line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from drillui.sources.logs import LogBuffer, LogFilter, LogRecord, parse_filter
from drillui.ui.format import LEVEL_STYLE, RESULT_STYLE, short_id
from drillui.ui.messages import LogFilterSubmitted, LogLineChosen
from drillui.ui.widgets.filter_input import FilterInput

MAX_ROWS = 1000
MSG_CHARS = 400
# Most telling first (a narrow panel scrolls sideways for the rest); the shared keys as columns.
# With several workers, which one logged a line is part of the story: its column moves up front.
COLUMNS: tuple[str, ...] = ("time", "event", "result", "reason", "att", "op", "trace", "worker", "level",
                            "event id", "batch", "msg")
MULTI_WORKER_COLUMNS: tuple[str, ...] = ("time", "worker", *(c for c in COLUMNS if c not in ("time", "worker")))
WIDTHS: dict[str, int] = {"time": 10, "event": 22, "result": 6, "reason": 10, "att": 3, "op": 6, "trace": 8, "worker": 8,
                          "level": 7, "event id": 8, "batch": 8, "msg": 80}


def log_cells(rec: LogRecord, columns: tuple[str, ...] = COLUMNS) -> list[Text]:
    level = (rec.level or "").lower()
    result = rec.result or ""
    level_style = LEVEL_STYLE.get(level, "")
    ts = rec.ts or ""
    time_text = ts[11:21] if len(ts) >= 21 else ts
    event_style = RESULT_STYLE.get(result, level_style)
    cells = {
        "time": Text(time_text, style="dim"),
        "event": Text(rec.event or "", style=event_style),
        "result": Text(result, style=RESULT_STYLE.get(result, "")),
        "reason": Text(rec.reason or ""),
        "att": Text("" if rec.attempt is None else str(rec.attempt)),
        "op": Text(rec.op or ""),
        "trace": Text(short_id(rec.trace_id), style="dim"),
        "worker": Text(rec.source),
        "level": Text(level, style=level_style),
        "event id": Text(short_id(rec.outbox_event_id), style="dim"),
        "batch": Text(short_id(rec.claim_batch_id), style="dim"),
        "msg": Text((rec.msg or rec.raw)[:MSG_CHARS], style=level_style),
    }
    return [cells[c] for c in columns]


class LogsPanel(Vertical):
    """Filter line, table of log lines, status line."""

    DEFAULT_CSS = """
    LogsPanel > DataTable { height: 1fr; }
    LogsPanel > #logs-status { height: 1; color: $text-muted; }
    """

    def __init__(self, buffer: LogBuffer, *, workers: int = 1, id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffer = buffer
        self.columns = MULTI_WORKER_COLUMNS if workers > 1 else COLUMNS
        self.filter: LogFilter = LogFilter()
        self._keys: deque[str] = deque()
        self._seq = 0

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder="filter: free text, key=value (reason=es_connect attempt=2), trace_id=…", id="logs-filter")
        yield DataTable(id="logs-table", cursor_type="row")
        yield Static("", id="logs-status", markup=False)

    def on_mount(self) -> None:
        table = self.table
        for name in self.columns:
            table.add_column(name, width=WIDTHS[name], key=name)
        self._status()

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#logs-table", DataTable)

    def append(self, records: Iterable[LogRecord]) -> None:
        """Show the new records that pass the filter (they are already in the buffer)."""
        table = self.table
        follow = not table.row_count or table.cursor_row >= table.row_count - 1
        added = False
        for rec in records:
            if self.filter.empty or self.filter.matches(rec):
                self._add(rec)
                added = True
        if added and follow:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._status()

    def _add(self, rec: LogRecord) -> None:
        table = self.table
        self._seq += 1
        # The key carries the trace id: Enter needs it, and rows are never edited.
        key = f"{self._seq}:{rec.trace_id or ''}"
        table.add_row(*log_cells(rec, self.columns), key=key)
        self._keys.append(key)
        if len(self._keys) > MAX_ROWS:
            table.remove_row(self._keys.popleft())

    def set_buffer(self, buffer: LogBuffer) -> None:
        """A new run: a new buffer, an empty table."""
        self.buffer = buffer
        self.table.clear()
        self._keys.clear()
        self._status()

    def set_filter(self, text: str) -> None:
        """Apply a filter (free text and key=value terms) and show the lines that pass it."""
        self.query_one(Input).value = text
        self.filter = parse_filter(text)
        table = self.table
        table.clear()
        self._keys.clear()
        for rec in self.buffer.filter(self.filter)[-MAX_ROWS:]:
            self._add(rec)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._status()

    def _status(self) -> None:
        shown = self.table.row_count
        text = f"{shown} line(s) shown of {len(self.buffer)} kept"
        if self.buffer.dropped:
            text += f" ({self.buffer.dropped} older dropped)"
        if not self.filter.empty:
            text += f" · filter: {self.filter}"
        self.query_one("#logs-status", Static).update(text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value or ""
        trace_id = key.split(":", 1)[1] if ":" in key else ""
        self.post_message(LogLineChosen(trace_id or None))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(LogFilterSubmitted(event.value.strip()))
        self.table.focus()
