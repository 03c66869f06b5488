"""A one-line filter field whose Escape hands the keyboard back to the table it filters.

Why: while a filter field has focus it takes every printable key, so the screen's one-letter keys
(s to stop, q to quit) stop working; Escape must always be the way out.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input


class FilterInput(Input):
    DEFAULT_CSS = """
    FilterInput, FilterInput:focus { height: 1; border: none; padding: 0 1; background: $boost; }
    FilterInput:focus { background: $primary 25%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Back to table", tooltip="Back to the table (the filter stays)")]

    def action_leave(self) -> None:
        parent = self.parent
        if parent is not None:
            for table in parent.query(DataTable):
                table.focus()
                return
        self.screen.focus_next()
