"""The drill menu: every drill of the catalog with its last verdict, and the selected one explained.

Why: the trainer picks the failure to rehearse here and reads out its goal, the fault, the signals
the trainee must find, and the steps with the exact PromQL and trace queries to type. The screen
renders any drill of `scenarios.yaml` generically, from the catalog models alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from drillui.errors import DrillError
from drillui.record.snapshot import RESULT, Snapshot
from drillui.scenarios import Catalog, Drill
from drillui.ui.feeds import LastVerdict, load_last_verdicts
from drillui.ui.messages import LastVerdictsLoaded
from drillui.ui.screens.modals import TextModal
from drillui.ui.widgets.filter_input import FilterInput
from drillui.ui.widgets.lists import JKOptionList
from drillui.ui.widgets.stack import StackStatus

if TYPE_CHECKING:
    from drillui.ui.app import DrillApp


def verdict_badge(v: LastVerdict | None) -> tuple[str, str]:
    if v is None:
        return "never run", "$foreground-muted"
    style = {"passed": "bold $success", "failed": "bold $error", "stopped": "$warning", "error": "bold $error"}.get(v.state, "$warning")
    return f"{v.word} {v.run_id}", style


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'true' if v is True else 'false' if v is False else v}" for k, v in d.items())


BADGE_RICH = {"bold $success": "bold green", "bold $error": "bold red", "$warning": "yellow", "$foreground-muted": "dim"}


def drill_detail(drill: Drill, last: LastVerdict | None) -> RenderableType:
    """The selected drill explained, from its catalog entry alone (any drill, any fault).

    A Rich grid, not plain text: long selectors and PromQL wrap inside their column and keep the
    label column clear, which is what makes them readable aloud from a shared screen.
    """
    parts: list[RenderableType] = []
    grid: Table | None = None

    def head(text: str) -> None:
        nonlocal grid
        parts.append(Text(""))
        parts.append(Text(text, style="bold"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=9, style="dim", no_wrap=True)
        grid.add_column(ratio=1, overflow="fold")
        parts.append(grid)

    def para(text: str) -> None:
        parts.append(Text(text))

    def line(label: str, text: str, style: str = "") -> None:
        assert grid is not None
        grid.add_row(label, Text(text, style=style))

    badge, badge_style = verdict_badge(last)
    parts.append(Text.assemble((f"{drill.letter}  {drill.title}", "bold"), (f"   {drill.id} · runbook {drill.runbook}", "dim")))
    parts.append(Text.assemble(("last verdict ", "dim"), (badge, BADGE_RICH.get(badge_style, ""))))
    head("Goal")
    para(drill.goal)
    head("Fault")
    # What the catalog says of the fault: a parameter a drill leaves at its default is not shown.
    params = {k: v for k, v in drill.fault.model_dump(exclude_unset=True).items() if k != "type"}
    line("type", drill.fault.type + (f"  ({_kv(params)})" if params else ""), "bold")
    w = drill.workload
    line("workload", f"{w.trigger_count} {w.op} event(s) on {w.projection}" + (" via _bulk" if w.bulk else "") + f", batch {w.batch_size}")
    for x in w.workers:
        line("worker", x.name + (f" ({_kv(x.env)})" if x.env else ""))
    line("armed", f"{drill.duration:g}s, then up to {drill.recovery_timeout:g}s to recover")
    head("Expected signals")
    e = drill.expect
    for m in e.metrics:
        over = " (peak while running)" if getattr(m, "over", "delta") == "peak" else " (after recovery)" if m.at == "recovered" else ""
        if m.quantile is not None:
            line("metric", f"p{m.quantile * 100:g} of {m.selector} during the drill {m.change} s")
        else:
            line("metric", f"{m.selector} changes {m.change}{over}")
        if m.promql:
            line("", m.promql, "cyan")
    for pq in e.promql:
        every = "every point" if pq.over == "all" else "some point"
        line("PromQL", f"{pq.query} {pq.condition} at {every} of the drill" + (" (after recovery)" if pq.at == "recovered" else ""),
             "cyan")
    for label in getattr(e, "forbidden_labels", []):
        line("metric", f"no series carries a {label} label")
    for t in e.traces:
        attrs = _kv(dict(t.attributes))
        count = f" ({t.min_spans}..{t.max_spans} spans)" if t.max_spans is not None else ""
        child = ""
        if t.child is not None:
            wanted = ", ".join(filter(None, [_kv(dict(t.child.attributes)), f"status {t.child.status}" if t.child.status else ""]))
            child = f", over a child {t.child.operation}" + (f" with {wanted}" if wanted else "")
        line("trace", f"{t.operation} by {t.by}" + (f" with {attrs}" if attrs else "") + (f", status {t.status}" if t.status else "")
             + child + count)
    for lg in e.logs:
        fields = _kv(dict(lg.fields))
        count = f" ({lg.min_count}..{lg.max_count} lines)" if lg.max_count is not None else ""
        extra = f", carrying {', '.join(lg.require)}" if lg.require else ""
        extra += f", without {', '.join(lg.absent)}" if lg.absent else ""
        join = ", joined on trace_id" if lg.joined_on_trace else ""
        line("log", f"{lg.event}" + (f" {fields}" if fields else "") + extra + join + count)
    for db in e.db:
        line("db", f"{db.probe} = {json.dumps(db.expect)}")
    if drill.steps:
        head("Trainer's steps")
        for i, step in enumerate(drill.steps, 1):
            line(f"{i}.", step.say)
            if step.promql:
                line("PromQL", step.promql, "cyan")
            if step.trace_query:
                line("Trace", step.trace_query, "cyan")
    if drill.recover:
        head("Recover")
        para(drill.recover)
    return Group(*parts)


class MenuScreen(Screen[None]):
    """Drill list on the left, the highlighted drill explained on the right."""

    # The list, not the `/` filter field (which would take every letter key).
    AUTO_FOCUS = "#drill-list"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_now", "Run drill", tooltip="Run the highlighted drill now, with its remembered run options"),
        Binding("o", "run", "Options", tooltip="Run the highlighted drill, setting its run options first (as Enter does)"),
        Binding("v", "last_verdict", "Last verdict"),
        Binding("l", "reopen", "Last run", tooltip="Reopen the screen of the drill's last run in this dashboard"),
        Binding("t", "train", "Train", tooltip="Training mode: a blind drill (or a surprise) for a trainee, with questions"),
        Binding("slash", "filter", "Filter", tooltip="Filter the drill list: letter, id, title, fault or goal words"),
    ]

    def __init__(self, catalog: Catalog, snapshots: Path) -> None:
        super().__init__()
        self.catalog = catalog
        self.snapshots = snapshots
        self.last: dict[str, LastVerdict] = {}
        self.filter_text = ""

    @property
    def dashboard(self) -> DrillApp:
        return cast("DrillApp", self.app)

    def compose(self) -> ComposeResult:
        tagline = "  guided observability failure drills · pick a drill, Enter to run it"
        yield Static(id="too-small")
        yield Static(Content.assemble(("drillui", "bold $accent"), (tagline, "$foreground-muted")), id="menu-title")
        yield StackStatus(id="stack-status")
        yield DrillFilter(placeholder="filter drills: a letter, an id, words of the title, fault or goal  (Enter: list  Esc: back)",
                          id="drill-filter")
        with Horizontal(id="menu-body"):
            yield JKOptionList(*self._options(), id="drill-list")
            with VerticalScroll(id="drill-detail"):
                yield Static(id="detail")
        yield Footer(compact=True)

    def shown_drills(self) -> list[Drill]:
        """The drills the filter keeps (all of them when it is empty), in catalog order."""
        words = self.filter_text.lower().split()
        if not words:
            return list(self.catalog.drills)

        def text(d: Drill) -> str:
            return " ".join([d.letter, d.id, d.title, d.fault.type, d.goal, d.runbook]).lower()

        return [d for d in self.catalog.drills if all(w in text(d) or w == d.letter.lower() for w in words)]

    def _options(self) -> list[Option]:
        options = []
        for d in self.shown_drills():
            badge, style = verdict_badge(self.last.get(d.id))
            options.append(Option(Content.assemble((f"{d.letter} ", "bold $accent"), d.title, "\n  ", (badge, style)), id=d.id))
        return options

    def on_mount(self) -> None:
        self.query_one("#drill-list", OptionList).border_title = "Drills"
        self.query_one("#drill-detail").border_title = "Selected drill"
        self._show(self.catalog.drills[0])
        self.load_verdicts()

    def on_screen_resume(self) -> None:
        self.load_verdicts()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.dashboard.worker_failed(event.worker)

    @work(thread=True, exclusive=True, group="menu-verdicts", exit_on_error=False)
    def load_verdicts(self) -> None:
        self.post_message(LastVerdictsLoaded(load_last_verdicts(self.snapshots, self.catalog.drills)))

    def on_last_verdicts_loaded(self, message: LastVerdictsLoaded) -> None:
        self.last = dict(message.verdicts)
        self._refill()

    def _refill(self) -> None:
        """Rebuild the list (new verdicts, a new filter), keeping the highlighted drill if shown."""
        lst = self.query_one("#drill-list", OptionList)
        keep = self.selected.id if lst.option_count else None
        lst.clear_options()
        lst.add_options(self._options())
        ids = [d.id for d in self.shown_drills()]
        if ids:
            lst.highlighted = ids.index(keep) if keep in ids else 0
        lst.border_title = "Drills" if not self.filter_text else f"Drills · {len(ids)} of {len(self.catalog.drills)} · /{self.filter_text}"
        if ids:
            self._show(self.selected)
        else:
            self.query_one("#detail", Static).update(Content.styled(f"No drill matches {self.filter_text!r}: / to change the filter",
                                                                    "$foreground-muted"))

    @property
    def selected(self) -> Drill:
        lst = self.query_one("#drill-list", OptionList)
        index = lst.highlighted
        if index is None or not lst.option_count:
            shown = self.shown_drills()
            return shown[0] if shown else self.catalog.drills[0]
        option_id = lst.get_option_at_index(index).id
        return next((d for d in self.catalog.drills if d.id == option_id), self.catalog.drills[0])

    def _show(self, drill: Drill) -> None:
        self.query_one("#detail", Static).update(drill_detail(drill, self.last.get(drill.id)))

    def _drill(self, option_id: str | None) -> Drill:
        return next((d for d in self.catalog.drills if d.id == option_id), self.catalog.drills[0])

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(self._drill(event.option.id))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dashboard.open_drill(self._drill(event.option.id))

    def action_filter(self) -> None:
        field = self.query_one("#drill-filter", Input)
        field.add_class("-shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "drill-filter":
            self.filter_text = event.value.strip()
            self._refill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "drill-filter":
            event.stop()
            self.query_one("#drill-list", OptionList).focus()

    def action_run(self) -> None:
        self.dashboard.open_drill(self.selected)

    def action_run_now(self) -> None:
        self.dashboard.open_drill(self.selected, ask=False)

    def action_reopen(self) -> None:
        if not self.dashboard.reopen_run(self.selected):
            self.notify(f"{self.selected.letter} has not been run in this dashboard yet.", title="No run to reopen", markup=False)

    def on_key(self, event: events.Key) -> None:
        """A drill's letter jumps to it (shifted always; lowercase when it is no other key)."""
        char = event.character or ""
        if len(char) != 1 or not char.isalpha() or isinstance(self.focused, Input):
            return
        taken = {b.key for b in self.BINDINGS if isinstance(b, Binding)} | {"q", "j", "k"}  # j/k move in the list
        if char.islower() and char in taken:
            return
        for i, d in enumerate(self.shown_drills()):
            if d.letter == char.upper():
                self.query_one("#drill-list", OptionList).highlighted = i
                event.stop()
                return

    def action_train(self) -> None:
        self.dashboard.open_training()

    def action_last_verdict(self) -> None:
        drill = self.selected
        last = self.last.get(drill.id)
        if last is None:
            self.notify(f"{drill.letter} {drill.title} has not been run yet.", title="No verdict", markup=False)
            return
        self.read_verdict(drill, last)

    @work(thread=True, exclusive=True, group="menu-read", exit_on_error=False)
    def read_verdict(self, drill: Drill, last: LastVerdict) -> None:
        try:
            data = Snapshot.open(Path(last.path)).read_json(RESULT)
        except DrillError as exc:
            self.app.call_from_thread(self.notify, exc.message, title="No verdict", severity="error", markup=False)
            return
        if not isinstance(data, dict):
            self.app.call_from_thread(self.notify, f"run {last.run_id} recorded no verdict ({last.word})", title="No verdict",
                                      markup=False)
            return
        self.app.call_from_thread(self.app.push_screen, TextModal(f"{drill.letter} {drill.title}: last verdict", verdict_text(data)))


def verdict_text(data: dict[str, Any]) -> Content:
    state = str(data.get("state") or {"pass": "passed", "fail": "failed"}.get(str(data.get("verdict")), data.get("verdict", "?")))
    style = {"passed": "bold $success", "stopped": "bold $warning"}.get(state, "bold $error")
    lines = [Content.assemble(("ended ", "$foreground-muted"), (state.upper(), style),
                              ("   run ", "$foreground-muted"), str(data.get("run_id", "?"))),
             Content.assemble(("why ", "$foreground-muted"), str(data.get("why") or "-")),
             Content.assemble(("evidence ", "$foreground-muted"), str(data.get("snapshot", "")))]
    for c in data.get("checks", []):
        passed = c.get("state") == "passed" if "state" in c else c.get("passed")
        mark = ("✓", "bold $success") if passed else ("✗", "bold $error")
        lines.append(Content.assemble(mark, " ", str(c.get("description", ""))))
        lines.append(Content.assemble(("    expected ", "$foreground-muted"), str(c.get("expected", "")),
                                      ("; observed ", "$foreground-muted"), str(c.get("observed", ""))))
    for note in data.get("notes", []):
        lines.append(Content.assemble(("note ", "$foreground-muted"), str(note)))
    return Content("\n").join(lines)


class DrillFilter(FilterInput):
    """The menu's `/` filter: hidden until asked for, or while it holds a filter."""

    DEFAULT_CSS = """
    DrillFilter { display: none; }
    DrillFilter.-shown { display: block; }
    """

    def action_leave(self) -> None:
        if not self.value:
            self.remove_class("-shown")
        self.screen.query_one("#drill-list").focus()
