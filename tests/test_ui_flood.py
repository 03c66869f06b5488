"""A log flood must not freeze the screen: the logs panel draws only the visible rows of its
bounded buffer, says when lines come faster than anyone can read, and filters the whole buffer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot

from drillui.record.events import LogLinesSeen, RunStarted
from drillui.settings import DrillSettings
from drillui.ui import demo
from drillui.ui.app import DrillApp
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.widgets.logs import LogsPanel
from tests.screen import screen_text as _text

pytestmark = pytest.mark.anyio
LINES = 50_000
CHUNK = 1000




async def _until(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


def _line(n: int) -> str:
    return json.dumps({"ts": f"2027-01-15T08:00:{n % 60:02d}.000000Z", "level": "info", "event": "outbox.processed",
                       "msg": f"processed {n}", "result": "ok", "op": "upsert", "outbox_event_id": f"event-{n:06d}",
                       "trace_id": f"{n:032x}", "attempt": 1, "flood_mark": "every1000" if n % 1000 == 0 else "no"},
                      separators=(",", ":"))


async def test_fifty_thousand_lines_are_kept_shown_on_demand_filtered_whole_and_said_to_be_too_fast(tmp_path: Path) -> None:
    app = DrillApp(demo.catalog(), snapshots=tmp_path / "snapshots", start_stack=False,
                   settings=DrillSettings.build({}, state_dir=tmp_path / "state"))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = DrillScreen(app.catalog.drills[0], autostart=False)
        await app.push_screen(screen)
        screen.apply(RunStarted(run_id="r", scenario="es_down_connect", letter="A", title="t", snapshot="s", drill={}))
        began = time.monotonic()
        for start in range(0, LINES, CHUNK):
            screen.apply(LogLinesSeen(worker="worker", file="_logs/w.log", start=0, end=0, first_line=start + 1,
                                      lines=tuple(_line(n) for n in range(start, start + CHUNK))))
            if start % (10 * CHUNK) == 0:
                await pilot.pause(0.11)  # a paint or two while the flood goes on
        panel = screen.query_one(LogsPanel)
        await _until(pilot, lambda: panel.shown == LINES)
        fed = time.monotonic() - began
        await pilot.pause(0.2)
        shown = _text(app)
        # the newest line is on screen (the view follows), every line is kept
        assert "processed 49999" in shown or f"{49999:032x}"[:8] in shown
        assert panel.table.number(panel.table.count - 1) == LINES - 1
        status = str(panel.query_one("#logs-status").render())
        assert f"{LINES:,} line(s) shown of {LINES:,} kept" in status, status
        assert "showing 1 in" in status and "lines/s" in status, (status, fed)
        # the filter runs over the whole buffer, not over what was drawn
        panel.set_filter("flood_mark=every1000")
        await _until(pilot, lambda: panel.shown == LINES // 1000)
        panel.set_filter('"processed 12345"')
        await _until(pilot, lambda: panel.shown == 1)
        assert panel.table.current() is not None and panel.table.current().outbox_event_id == "event-012345"
        panel.set_filter("")
        await _until(pilot, lambda: panel.shown == LINES)


async def test_span_cells_drawn_straight_look_exactly_as_datatable_draws_them() -> None:
    """The traces table draws one-line cells itself (fast under a span flood): every styled
    character must be what DataTable's own rendering gives, cursor row, cropping, wide
    characters, right justification and mixed styles included."""
    from textual.app import App
    from textual.widgets import DataTable

    from drillui.ui.widgets import traces

    class Table(App[None]):
        def compose(self) -> Any:
            yield traces.SpanTable(id="t", cursor_type="row")

        def on_mount(self) -> None:
            t = self.query_one(DataTable)
            for name, width in [("a", 6), ("b", 3), ("c", 8), ("d", 1)]:
                t.add_column(name, key=name, width=width)
            rows = [
                [Text("└ projection.process_batch", style="bold"), Text("✗ error", style="bold red"),
                 Text("12.3ms", justify="right"), Text("x")],
                [Text("日本語テキスト", style="magenta"), Text(""), Text("1234567890123", justify="right", style="dim"), Text("yy")],
                [Text.assemble(("ab", "red"), ("cdefgh", "blue")), Text("ok", style="green"), Text("  5 ", justify="right"), Text("")],
            ]
            for i, row in enumerate(rows):
                t.add_row(*row, key=str(i))

    async def shot() -> str:
        app = Table()
        async with app.run_test(size=(40, 6)) as pilot:
            await pilot.press("down")
            await pilot.pause(0.05)
            return _text(app, styles=True)

    fast = await shot()
    own = traces.SpanTable._render_cell
    try:
        traces.SpanTable._render_cell = DataTable._render_cell  # type: ignore[method-assign]
        reference = await shot()
    finally:
        traces.SpanTable._render_cell = own  # type: ignore[method-assign]
    assert "└" in fast and "日本語" in fast
    assert fast == reference
