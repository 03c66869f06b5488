"""`?`: every key of the dashboard, read from the bindings themselves so it never goes stale.

Why: the footer only shows the keys that apply right now; a trainer preparing a rehearsal wants
the whole map, including the pivots (trace → logs, log → trace) that live on the panels.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

PIVOTS_TEXT = (
    "The evidence chain: metrics → traces → logs, on the same shared keys.\n"
    "Traces: Enter on a row opens its span tree with every attribute, and filters the logs to its trace_id; "
    "g filters the logs without opening the tree. Type claim_batch_id=<id> or outbox_event_id=<id> in the "
    "trace filter (f), or pick one of the drill's ids (e).\n"
    "Logs: Enter on a line opens the trace it was logged under. The log filter (/) takes free text and "
    "key=value terms, e.g. reason=es_connect attempt=2; Esc in a filter returns to its table."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def _key(self, binding: Binding) -> str:
        keys = binding.key.split(",")
        return " / ".join(self.app.get_key_display(Binding(k.strip(), binding.action)) for k in keys)

    def compose(self) -> ComposeResult:
        lines: list[Content] = []
        for title, bindings in self.sections:
            lines.append(Content.styled(title, "bold $accent"))
            for b in bindings:
                if not isinstance(b, Binding):
                    b = Binding(*b)
                lines.append(Content.assemble((f"  {self._key(b):<16}", "bold"), b.tooltip or b.description or b.action))
            lines.append(Content(""))
        lines.append(Content.styled("Pivots", "bold $accent"))
        lines.append(Content(PIVOTS_TEXT))
        with Vertical(id="modal-box", classes="wide"):
            yield Static(Content.styled("Keys", "bold"), id="modal-title")
            with VerticalScroll():
                yield Static(Content("\n").join(lines), id="modal-body")
            yield Static(Content.styled("Esc / ?: close", "$foreground-muted"))
