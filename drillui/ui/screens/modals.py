"""The dashboard's modal screens: errors, a text page, a trace's span tree, and an id picker.

Why here and together: they are the one way the dashboard interrupts the user. Every error ends
in `ErrorModal` with a title; every piece of text that came from outside (an error message, a span
attribute, a log field) is shown as plain `Content`/`Text`, never parsed as markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode

from drillui.sources.traces import AttrValue, Span, Trace
from drillui.ui.format import duration_ns
from drillui.ui.widgets.lists import JKOptionList, JKTree


class ErrorModal(ModalScreen[str | None]):
    """A titled error: what went wrong, and how to fix it when we know.

    `actions` are (key, label, result): the fix offered as a key of the dialog itself (say,
    `c` to clean and run again); the dialog closes with that result.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, title: str, message: str, hint: str | None = None,
                 actions: Sequence[tuple[str, str, str]] = ()) -> None:
        super().__init__()
        self.title_text, self.message, self.hint = title, message, hint
        self.actions = list(actions)
        for key, label, result in self.actions:
            self._bindings.bind(key, f"act('{result}')", label)

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box", classes="error"):
            yield Static(Content.styled(self.title_text, "bold $text-error"), id="modal-title")
            with VerticalScroll():
                yield Static(Content(self.message), id="modal-body")
                if self.hint:
                    yield Static(Content.assemble(("How to fix: ", "bold"), self.hint), id="modal-hint")
            keys = "  ".join(f"{key}: {label}" for key, label, _ in self.actions)
            yield Static(Content.styled((keys + "  " if keys else "") + "Esc / Enter: close", "$foreground-muted"))

    def action_act(self, result: str) -> None:
        self.dismiss(result)

    def action_close(self) -> None:
        self.dismiss(None)


class LogLineModal(ModalScreen[str | None]):
    """One log line whole: every field, as the worker wrote it. Enter (or t) opens its trace."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("enter,t", "trace", "Its trace"),
    ]

    def __init__(self, record: Any) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        rec = self.record
        lines: list[Content] = []
        if rec.is_raw:
            lines.append(Content(rec.raw))
        else:
            width = max((len(k) for k in rec.fields), default=4)
            for key, value in rec.fields.items():
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                lines.append(Content.assemble((key.ljust(width), "$text-accent"), "  ", text))
        title = f"{rec.source} line {rec.line_no}" + (f" · {rec.event}" if rec.event else "")
        with Vertical(id="modal-box"):
            yield Static(Content.styled(title, "bold"), id="modal-title")
            with VerticalScroll():
                yield Static(Content("\n").join(lines), id="modal-body")
            hint = "Enter / t: open its trace  Esc: close" if rec.trace_id else "no trace_id on this line  Esc: close"
            yield Static(Content.styled(hint, "$foreground-muted"))

    def action_trace(self) -> None:
        self.dismiss(self.record.trace_id or None)

    def action_close(self) -> None:
        self.dismiss(None)


class TextModal(ModalScreen[None]):
    """A page of read-only text (a last verdict, the help)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, title: str, body: Content, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Static(Content.styled(self.title_text, "bold"), id="modal-title")
            with VerticalScroll():
                yield Static(self.body, id="modal-body")
            yield Static(Content.styled("Esc: close", "$foreground-muted"))


def _value(v: AttrValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def span_label(span: Span) -> Text:
    """Tree labels are Rich Text: a plain `str` label would be parsed as markup."""
    result = _value(span.attributes.get("result", ""))
    label = Text.assemble((span.operation, "bold"), "  ", (duration_ns(span.duration_ns), "dim"))
    if result:
        label.append(f"  result={result}", style="green" if result == "ok" else "yellow")
    if span.status == "ERROR":
        label.append("  ERROR", style="bold red")
    return label


def _pair(key: str, value: str, key_style: str = "cyan") -> Text:
    return Text.assemble((key, key_style), " = ", value)


class SpanTreeModal(ModalScreen[str | None]):
    """One trace as a tree of spans, every attribute and event under its span.

    Dismisses with the trace id when the user asks for its logs (`g`), else with None.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("g", "logs", "Logs of this trace"),
    ]

    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box", classes="wide"):
            yield Static(Content.assemble(("Trace ", "bold"), (self.trace.trace_id, "bold $text-accent"),
                                          (f"  {len(self.trace.spans)} span(s)", "$foreground-muted")), id="modal-title")
            tree: Tree[str] = JKTree(Text(f"trace {self.trace.trace_id}"), id="span-tree")
            tree.show_root = False
            yield tree
            yield Static(Content.styled("↑↓/jk move  ←→ fold  g: logs of this trace  Esc: close", "$foreground-muted"))

    def on_mount(self) -> None:
        tree = self.query_one(Tree)
        spans = sorted(self.trace.spans, key=lambda s: s.start_unix_nano)
        ids = {s.span_id for s in spans}
        children: dict[str | None, list[Span]] = {}
        for s in spans:
            parent = s.parent_span_id if s.parent_span_id in ids else None
            children.setdefault(parent, []).append(s)

        def add(node: TreeNode[str], span: Span) -> None:
            branch = node.add(span_label(span), expand=True)
            branch.add_leaf(_pair("span_id", span.span_id, "dim"))
            if span.parent_span_id and span.parent_span_id not in ids:
                branch.add_leaf(_pair("parent (not in this trace)", span.parent_span_id, "dim"))
            branch.add_leaf(_pair("service", span.service, "dim"))
            branch.add_leaf(_pair("status", span.status + (f" {span.status_message}" if span.status_message else ""), "dim"))
            branch.add_leaf(_pair("start", span.start.isoformat(), "dim"))
            for key in sorted(span.attributes):
                branch.add_leaf(_pair(key, _value(span.attributes[key])))
            if span.resource:
                res = branch.add(Text("resource", style="dim"), expand=False)
                for key in sorted(span.resource):
                    res.add_leaf(_pair(key, _value(span.resource[key]), "dim cyan"))
            for ev in span.events:
                ev_node = branch.add(Text.assemble(("event ", "dim"), (ev.name, "bold")), expand=True)
                for key in sorted(ev.attributes):
                    ev_node.add_leaf(_pair(key, _value(ev.attributes[key])))
            for child in children.get(span.span_id, []):
                add(branch, child)

        for root in children.get(None, []):
            add(tree.root, root)
        tree.root.expand()
        tree.focus()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_logs(self) -> None:
        self.dismiss(self.trace.trace_id)


class PickerModal(ModalScreen[str | None]):
    """Pick one value (e.g. an id of the drill's events); dismisses with it, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, options: Sequence[tuple[str, str]]) -> None:
        """`options`: (value, label) pairs."""
        super().__init__()
        self.title_text = title
        self.options = list(options)

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Static(Content.styled(self.title_text, "bold"), id="modal-title")
            if self.options:
                yield JKOptionList(*(Option(Content(label), id=value) for value, label in self.options), id="picker")
            else:
                yield Static(Content.styled("Nothing to pick yet: the ids appear once the drill wrote its events.", "$foreground-muted"))
            yield Static(Content.styled("Enter: choose  Esc: close", "$foreground-muted"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_close(self) -> None:
        self.dismiss(None)
