"""The run options a trainer sets before starting a drill, with the catalog's defaults.

Why a form: a rehearsal is paced by the trainer. Guided mode (the default) holds the fault until
the trainer recovers it, optionally with a hold limit; bounded mode runs for the drill's duration
like `drillui run`. The trigger count, op, batch size and (for drills that allow it) the number of
workers start from the catalog and are remembered per drill (`RunPreferences`, read and written
by the app in a thread worker, never here).
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from drillui.runner.runner import MAX_WORKERS
from drillui.scenarios import Drill
from drillui.ui.prefs import DrillChoices


def _number(text: str, kind: type, what: str, low: float, high: float) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{what}: give {low:g} to {high:g}")
    return value


class RunOptionsModal(ModalScreen[DrillChoices | None]):
    """The form; dismisses with the choices to run with, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    RunOptionsModal Grid { grid-size: 2; grid-columns: 18 1fr; grid-rows: 1; grid-gutter: 1 0; height: auto; }
    RunOptionsModal #options-buttons { height: 1; align-horizontal: right; margin-top: 1; }
    RunOptionsModal #options-buttons Button { margin-left: 2; }
    RunOptionsModal #options-error { color: $text-error; height: auto; }
    """

    def __init__(self, drill: Drill, choices: DrillChoices) -> None:
        super().__init__()
        self.drill = drill
        self.choices = choices

    def compose(self) -> ComposeResult:
        d, c, w = self.drill, self.choices, self.drill.workload
        with Vertical(id="modal-box"):
            yield Static(Content.styled(f"Run {d.letter} · {d.title}", "bold"), id="modal-title")
            with Grid():
                yield Label("mode")
                yield Select([("guided: the fault holds until R", "guided"), ("bounded: like drillui run", "bounded")],
                             value="guided" if c.guided else "bounded", allow_blank=False, compact=True, id="opt-mode")
                yield Label("hold limit (s)")
                yield Input("" if c.hold is None else f"{c.hold:g}", placeholder=f"none (guided) · {d.duration:g}s (bounded)",
                            compact=True, id="opt-hold")
                yield Label("trigger events")
                yield Input("" if c.trigger_count is None else str(c.trigger_count), placeholder=str(w.trigger_count),
                            compact=True, id="opt-count")
                yield Label("op")
                yield Select([("upsert", "upsert"), ("delete", "delete")], value=c.op or w.op, allow_blank=False, compact=True, id="opt-op")
                yield Label("batch size")
                yield Input("" if c.batch_size is None else str(c.batch_size), placeholder=str(w.batch_size), compact=True, id="opt-batch")
                if d.scalable:
                    yield Label("workers")
                    yield Input("" if c.workers is None else str(c.workers), placeholder=str(len(w.workers)), compact=True, id="opt-workers")
            yield Static("", id="options-error")
            with Horizontal(id="options-buttons"):
                yield Button("Cancel", compact=True, id="opt-cancel")
                yield Button("Start", variant="primary", compact=True, id="opt-start")
            yield Static(Content.styled("Enter on Start runs · blank fields take the catalog's value · Esc cancels",
                                        "$foreground-muted"))

    def on_mount(self) -> None:
        self.query_one("#opt-start", Button).focus()

    def read(self) -> DrillChoices:
        mode = self.query_one("#opt-mode", Select).value
        guided = mode == "guided"
        hold = _number(self.query_one("#opt-hold", Input).value, float, "hold limit", 1, 3600)
        count = _number(self.query_one("#opt-count", Input).value, int, "trigger events", 1, 100_000)
        op = str(self.query_one("#opt-op", Select).value)
        batch = _number(self.query_one("#opt-batch", Input).value, int, "batch size", 1, 10_000)
        workers = None
        if self.drill.scalable:
            workers = _number(self.query_one("#opt-workers", Input).value, int, "workers", 1, MAX_WORKERS)
        return DrillChoices(guided, hold, count, None if op == self.drill.workload.op else op, batch, workers)

    @on(Button.Pressed, "#opt-start")
    def start(self) -> None:
        try:
            choices = self.read()
        except ValueError as exc:
            self.query_one("#options-error", Static).update(Content(str(exc)))
            return
        self.dismiss(choices)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.start()

    @on(Button.Pressed, "#opt-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
