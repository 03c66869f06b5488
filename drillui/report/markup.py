"""A tiny HTML/SVG builder that escapes by default.

Why this module exists: everything a report shows comes from files a run wrote — worker logs,
error strings, fault evidence, screenshot text — and none of it is trusted. Building markup by
string formatting makes one forgotten `escape()` an injection. Here a plain `str` is always
escaped; only an `Html` value (made by `el`, `raw` or `join`) goes in as it is, so escaping is
the default and skipping it has to be spelled out.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Union

Node = Union["Html", str, int, float, None, Iterable["Node"]]
AttrValue = str | int | float | bool | None


class Html(str):
    """Markup that is already safe: it is written out as it is."""

    __slots__ = ()


def esc(text: object) -> Html:
    return Html(html.escape(str(text), quote=True))


def raw(markup: str) -> Html:
    """Trust `markup` as it is: only for text this package generated itself."""
    return Html(markup)


def _render(node: Node, out: list[str]) -> None:
    if node is None:
        return
    if isinstance(node, Html):
        out.append(node)
    elif isinstance(node, str):
        out.append(html.escape(node, quote=True))
    elif isinstance(node, float):
        out.append(num(node))
    elif isinstance(node, int):
        out.append(str(node))
    else:
        for child in node:
            _render(child, out)


def join(*nodes: Node) -> Html:
    out: list[str] = []
    for n in nodes:
        _render(n, out)
    return Html("".join(out))


def num(v: float) -> str:
    """A coordinate or a value without float noise (`12.5`, `3`, never `3.0000000004`)."""
    if v != v:  # NaN
        return "0"
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _attrs(attrs: dict[str, AttrValue]) -> str:
    parts: list[str] = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        # Python names: class_ -> class, aria_label -> aria-label, xml__space stays out of scope.
        name = key.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(f" {name}")
        else:
            text = num(value) if isinstance(value, float) else str(value)
            parts.append(f' {name}="{html.escape(text, quote=True)}"')
    return "".join(parts)


VOID = frozenset({"meta", "br", "hr", "img", "link", "col", "wbr"})


def el(tag: str, *children: Node, **attrs: AttrValue) -> Html:
    """`<tag attrs>children</tag>`; `tag` and the attribute names are code, never data."""
    if tag in VOID:
        return Html(f"<{tag}{_attrs(attrs)}>")
    return Html(f"<{tag}{_attrs(attrs)}>{join(*children)}</{tag}>")


def svg_el(tag: str, *children: Node, **attrs: AttrValue) -> Html:
    """Like `el`, but an SVG element without children closes itself."""
    body = join(*children)
    if not body:
        return Html(f"<{tag}{_attrs(attrs)}/>")
    return Html(f"<{tag}{_attrs(attrs)}>{body}</{tag}>")
