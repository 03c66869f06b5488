"""The lists of the dashboard with the field's habit of j/k (down/up) beside the arrow keys.

Why subclasses: a binding on the widget that has focus wins over the screen's one-letter keys,
and only while that list has focus; in a text field j and k stay letters.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable, OptionList, Tree

JK: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
]


class JKOptionList(OptionList):
    BINDINGS: ClassVar[list[BindingType]] = [*OptionList.BINDINGS, *JK]


class JKDataTable(DataTable):  # type: ignore[type-arg]
    BINDINGS: ClassVar[list[BindingType]] = [*DataTable.BINDINGS, *JK]


class JKTree(Tree):  # type: ignore[type-arg]
    BINDINGS: ClassVar[list[BindingType]] = [*Tree.BINDINGS, *JK]
