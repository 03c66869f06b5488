"""The infrastructure status line: what is starting, how long it took, or what failed and the fix.

Why: the dashboard starts (or attaches to) the embedded stack itself, in about a second; until
then no drill can run, and if it fails the user must read why without leaving the screen. The
widget follows the app's `stack_state` / `stack_lines` reactives; it never does any I/O.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

STATE_STYLE = {"starting": ("◌", "bold $warning"), "ready": ("●", "bold $success"), "failed": ("✗", "bold $error"),
               "stopping": ("◌", "bold $warning"), "none": ("○", "$foreground-muted")}


class StackStatus(Widget):
    DEFAULT_CSS = """
    StackStatus { height: 2; padding: 0 1; background: $boost; }
    """

    state: reactive[str] = reactive("none")
    summary: reactive[str] = reactive("")
    detail: reactive[str] = reactive("")

    def on_mount(self) -> None:
        # Data binding: the app owns the stack; every screen's status line follows it.
        self.watch(self.app, "stack_state", self._sync, init=True)
        self.watch(self.app, "stack_summary", self._sync, init=False)
        self.watch(self.app, "stack_detail", self._sync, init=False)

    def _sync(self, _: object = None) -> None:
        self.state = str(getattr(self.app, "stack_state", "none"))
        self.summary = str(getattr(self.app, "stack_summary", ""))
        self.detail = str(getattr(self.app, "stack_detail", ""))

    def render(self) -> Content:
        mark, style = STATE_STYLE.get(self.state, STATE_STYLE["none"])
        width = max(1, self.size.width)
        first = Content.assemble(("Stack ", "bold"), (mark + " ", style), (self.summary, style if self.state == "failed" else ""))
        second = Content.styled(self.detail, "$foreground-muted")
        return Content("\n").join([first.truncate(width, ellipsis=True), second.truncate(width, ellipsis=True)])
