"""The traces panel: the latest traces of the drill, found by the run's ids or by a typed filter.

Why: the runbook's second step is "go to tracing": a batch by `claim_batch_id` (the overview span
`projection.process_batch`), one event by `outbox_event_id` (`outbox.process`), never mixed. The
panel lists each trace's batch span with its event spans hanging under it, with operation,
result, reason, attempt and duration. Enter opens the span tree; `g` filters the logs to the
trace. The screen fetches; this widget only shows what it is given and reports choices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from drillui.sources.traces import Span, Trace
from drillui.ui.format import RESULT_STYLE, duration_ns, short_id, since
from drillui.ui.messages import TraceChosen, TraceFilterSubmitted
from drillui.ui.widgets.filter_input import FilterInput
from drillui.ui.widgets.lists import JKDataTable

# Spans shown as rows; the others (e.g. an empty claim) are in the span tree.
SHOWN_OPERATIONS = ("projection.process_batch", "outbox.process", "outbox.claim_batch", "outbox.reclaim")
MAX_ROWS = 200
# The runbook's two pivots, never mixed: one batch, or one event (plus the business entity).
PIVOTS: dict[str, tuple[str, str]] = {
    "claim_batch_id": ("projection.process_batch", "wordloom.claim_batch_id"),
    "outbox_event_id": ("outbox.process", "wordloom.outbox_event_id"),
}
ID_ATTRIBUTES = ("wordloom.outbox_event_id", "wordloom.claim_batch_id", "wordloom.entity_id")


@dataclass(frozen=True)
class TraceFilter:
    """What a trace must hold to be shown: ONE span carrying every term (Jaeger's rule).

    A term's value matches an id attribute (`*_id`) by prefix, as ids are shown shortened; any
    other attribute by its text. `any_id` is a bare id: any of the three ids, or the trace id.
    """

    terms: tuple[tuple[str, str], ...] = ()
    operation: str | None = None
    any_id: str | None = None
    text: str = ""

    def span_matches(self, span: Span) -> bool:
        if self.operation and span.operation != self.operation:
            return False
        if self.any_id is not None:
            v = self.any_id
            if not (span.trace_id.startswith(v) or any(_attr(span, a).startswith(v) for a in ID_ATTRIBUTES if _attr(span, a))):
                return False
        for key, value in self.terms:
            got = _attr(span, key) or _attr(span, f"wordloom.{key}")
            if not got:
                return False
            if key.endswith("_id") or key.endswith(".id"):
                if not got.startswith(value):
                    return False
            elif got != value:
                return False
        return True

    def traces(self, traces: Sequence[Trace]) -> list[Trace]:
        return [t for t in traces if any(self.span_matches(s) for s in t.spans)]

    def pivots(self) -> list[tuple[str, str]]:
        """(pivot, value) terms a trace store can be asked by (the run's two pivots)."""
        out = []
        for key, value in self.terms:
            k = key.removeprefix("wordloom.")
            if k in PIVOTS:
                out.append((k, value))
        return out

    def __str__(self) -> str:
        return self.text


def parse_trace_filter(text: str) -> TraceFilter:
    """`claim_batch_id=<id>` / `outbox_event_id=<id>` (prefixes of ids too), any `key=value`
    attribute, `operation=NAME`, a step's `tags={...}` JSON, or one bare id. Raises ValueError
    with a line the user can act on."""
    text = text.strip()
    if not text:
        raise ValueError("type an id, or claim_batch_id=<id> / outbox_event_id=<id>")
    terms: list[tuple[str, str]] = []
    operation: str | None = None
    tags = re.search(r"tags=(\{.*\})", text)
    rest = text
    if "tags=" in text and not tags:
        raise ValueError("tags= takes a JSON object, e.g. tags={\"wordloom.claim_batch_id\":\"…\"}")
    if tags:
        try:
            decoded = json.loads(tags.group(1))
        except ValueError:
            raise ValueError(f"tags={tags.group(1)} is not JSON") from None
        if not isinstance(decoded, dict):
            raise ValueError("tags= must be a JSON object")
        terms += [(str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in decoded.items()]
        rest = text[: tags.start()] + text[tags.end():]
    words = rest.split()
    if len(words) == 1 and "=" not in words[0] and not terms:
        return TraceFilter(any_id=words[0].strip('"'), text=text)
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"{word!r}: use key=value terms (claim_batch_id=…, result=retry) or one bare id")
        value = value.strip().strip('"')
        if not value:
            raise ValueError(f"{key}= needs a value (e: pick one of this drill's ids)")
        if key == "operation":
            operation = value
        else:
            terms.append((key.strip(), value))
    if any("<id>" in v for _, v in terms):
        raise ValueError("replace <id> with one of this drill's ids (e picks one)")
    return TraceFilter(tuple(terms), operation, None, text)


def _attr(span: Span, key: str) -> str:
    v = span.attributes.get(key)
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


SHORT_OPERATIONS = {"projection.process_batch": "process_batch", "outbox.process": "process",
                    "outbox.claim_batch": "claim_batch", "outbox.reclaim": "reclaim"}
# (name, width), kept first to dropped first: the trace id (the join key to the logs) right after
# the operation and its result; extra columns a drill declares (e.g. projection_version) follow.
TRACE_COLUMNS: tuple[tuple[str, int], ...] = (
    ("operation", 26), ("result", 8), ("trace", 8), ("id", 8), ("reason", 12), ("att", 3), ("+armed", 7), ("duration", 8),
)
FULL_NAMES_FROM = 95


def trace_layout(width: int, extra: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """The columns that fit `width` (DataTable pads each column by one cell on both sides):
    operation, result and the trace id always; then the rest in order while they fit."""
    specs = list(TRACE_COLUMNS)
    specs[3:3] = [(name, max(4, min(20, len(name)))) for name in extra]
    chosen: list[tuple[str, int]] = [("operation", 26 if width >= FULL_NAMES_FROM else 15)]
    used = chosen[0][1] + 2
    for name, w in specs[1:]:
        if name not in ("result", "trace") and used + w + 2 > width:
            continue
        chosen.append((name, w))
        used += w + 2
    return chosen


def span_rows(traces: Sequence[Trace], armed_at: float | None,
              columns: Sequence[tuple[str, int]] | None = None) -> list[tuple[str, str, list[Text]]]:
    """(trace_id, span_id, cells) per shown span: latest trace first, parents before children."""
    cols = list(columns or TRACE_COLUMNS)
    short = dict(cols).get("operation", 26) < 24
    ordered = sorted(traces, key=lambda t: min((s.start_unix_nano for s in t.spans), default=0), reverse=True)
    rows: list[tuple[str, str, list[Text]]] = []
    for trace in ordered:
        spans = sorted((s for s in trace.spans if s.operation in SHOWN_OPERATIONS), key=lambda s: (s.parent_span_id is not None, s.start_unix_nano))
        ids = {s.span_id for s in spans}
        for span in spans:
            child = span.parent_span_id is not None and span.parent_span_id in ids
            result = _attr(span, "result")
            t = span.start_unix_nano / 1e9
            pivot = _attr(span, "wordloom.outbox_event_id") if span.operation == "outbox.process" else _attr(span, "wordloom.claim_batch_id")
            status = " ✗" if span.status == "ERROR" else ""
            op = SHORT_OPERATIONS.get(span.operation, span.operation) if short else span.operation
            cell = {
                "operation": Text(("└ " if child else "") + op, style="" if child else "bold"),
                "result": Text(result + status, style=RESULT_STYLE.get(result, "") if not status else "bold red"),
                "reason": Text(_attr(span, "reason")),
                "att": Text(_attr(span, "attempt")),
                "+armed": Text(since(t - armed_at) if armed_at is not None else span.start.strftime("%H:%M:%S"), style="dim"),
                "duration": Text(duration_ns(span.duration_ns), justify="right"),
                "id": Text(short_id(pivot), style="dim"),
                "trace": Text(span.trace_id, style="cyan"),
            }
            cells = [cell[name] if name in cell else Text(_attr(span, name), style="magenta") for name, _ in cols]
            rows.append((span.trace_id, span.span_id, cells))
            if len(rows) >= MAX_ROWS:
                # Only what the table shows is built: 20,000 spans stored must not cost 20,000 rows.
                return rows
    return rows


class SpanTable(JKDataTable):
    """The spans' table, drawing its one-line text cells straight to segments.

    Under a span flood the newest traces replace the visible rows on every repaint, and
    DataTable renders each cell through Rich's general layout (padding, wrapping, cropping):
    ~7 cells a row, up to 150 ms of the event loop a repaint. A one-line `Text` cell needs none
    of it: crop or pad the text to the column, add the padding, apply the same styles. What
    comes out is what DataTable draws (the snapshot tests hold both to the same screen).
    """

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> list[list[Segment]]:
        fast = self._one_line_cell(row_index, column_index, base_style, width, cursor, hover)
        if fast is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        return fast

    def _one_line_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                       cursor: bool, hover: bool) -> list[list[Segment]] | None:
        if row_index < 0 or column_index < 0 or row_index < self.fixed_rows or column_index < self.fixed_columns:
            return None
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None or self.rows[row_key].height != 1:
            return None
        cell = self.get_cell(row_key, column_key)
        if not isinstance(cell, Text) or "\n" in cell.plain or cell.justify not in (None, "default", "left", "right"):
            return None
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        pad = self.cell_padding
        inner = max(0, width - 2 * pad)
        text = cell.copy()
        if cell.justify == "right":
            text.rstrip()
            text.truncate(inner, overflow=cell.overflow or "fold")
            text.pad_left(inner - text.cell_len)
        else:
            text.truncate(inner, overflow=cell.overflow or "fold")
        console = self.app.console
        blank = pre + post_style
        # As Rich draws a line of text: its own style under the text only, the fill is the row's.
        own = console.get_style(text.style, default=Style.null()) if isinstance(text.style, str) else text.style
        segments = text.render(console) if text.spans else [Segment(text.plain, own)]
        line = [Segment(" " * pad, blank)] if pad else []
        line += [Segment(seg.text, pre + seg.style + post_style if seg.style else blank) for seg in segments if seg.text]
        fill = inner - text.cell_len + pad
        if fill > 0:
            line.append(Segment(" " * fill, blank))
        return [line]


class TracesPanel(Vertical):
    """Filter line, table of spans, status line. Columns follow the panel's width."""

    DEFAULT_CSS = """
    TracesPanel > DataTable { height: 1fr; overflow-x: hidden; }
    TracesPanel > #traces-status { height: 1; color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("g", "logs_of_trace", "Logs of trace")]

    def __init__(self, *, extra: tuple[str, ...] = (), id: str | None = None) -> None:
        super().__init__(id=id)
        self.extra = extra
        self.columns: list[tuple[str, int]] = []
        self._shown: tuple[Sequence[Trace], float | None, str] = ((), None, "")

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder="claim_batch_id=… or outbox_event_id=…  (e: pick from this drill)", id="traces-filter")
        table: DataTable[Text] = SpanTable(id="traces-table", cursor_type="row", zebra_stripes=False)
        yield table
        yield Static("", id="traces-status", markup=False)

    def on_mount(self) -> None:
        self._relayout()

    def on_resize(self) -> None:
        self._relayout()

    def _relayout(self) -> None:
        cols = trace_layout(max(30, self.size.width - 2), self.extra)
        if cols == self.columns:
            return
        self.columns = cols
        table = self.table
        table.clear(columns=True)
        for name, width in cols:
            table.add_column(name, key=name, width=width)
        self.show(*self._shown)

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#traces-table", DataTable)

    def show(self, traces: Sequence[Trace], armed_at: float | None, status: str) -> None:
        self._shown = (traces, armed_at, status)
        table = self.table
        keep = self._cursor_key()
        rows = span_rows(traces, armed_at, self.columns)
        table.clear()
        for trace_id, span_id, cells in rows:
            table.add_row(*cells, key=f"{trace_id}:{span_id}")
        keys = [f"{t}:{s}" for t, s, _ in rows]
        if keep in keys:
            # Rows are rebuilt on every change: keep the user's place by key, not by position.
            table.move_cursor(row=keys.index(keep), animate=False)
        self.query_one("#traces-status", Static).update(status, layout=False)  # one line, always: no relayout

    def set_filter(self, text: str) -> None:
        self.query_one(Input).value = text

    def _cursor_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def current_trace_id(self) -> str | None:
        key = self._cursor_key()
        return key.split(":", 1)[0] if key else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        if key:
            self.post_message(TraceChosen(key.split(":", 1)[0], open_tree=True))

    def action_logs_of_trace(self) -> None:
        trace_id = self.current_trace_id()
        if trace_id:
            self.post_message(TraceChosen(trace_id, open_tree=False))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(TraceFilterSubmitted(event.value.strip()))
        self.table.focus()
