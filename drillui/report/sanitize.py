"""Dashboard screenshots (Textual SVG exports) made safe to embed in a report.

Why this module exists: a screenshot is a file in a run folder, and a report is opened in a
browser, so a screenshot must not be able to run script, fetch anything or restyle the page.
Textual's exports are plain SVG (rects, text, clip paths, a stylesheet) but they reference web
fonts by URL, and a file can be swapped for anything. So the SVG is parsed and written out again
from an allowlist: only drawing elements and attributes survive, links only to the document's
own `#ids`, CSS without `@import`, `@font-face` or any `url()` but `url(#id)`. A file that is not
well-formed SVG (or declares a DTD) is refused, not repaired.

Pure: text in, text out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Final
from xml.sax.saxutils import escape, quoteattr

SVG_NS: Final = "http://www.w3.org/2000/svg"
XLINK_NS: Final = "http://www.w3.org/1999/xlink"
XML_NS: Final = "http://www.w3.org/XML/1998/namespace"

ELEMENTS: Final = frozenset({
    "svg", "g", "defs", "style", "title", "desc", "rect", "circle", "ellipse", "line", "polyline", "polygon", "path",
    "text", "tspan", "clipPath", "symbol", "use", "linearGradient", "radialGradient", "stop", "mask", "pattern", "marker",
})
"""Drawing elements only: no script, foreignObject, image, a, animate/set (which can rewrite a
link), iframe, ... — an element outside the list is dropped with everything inside it."""

ATTRIBUTES: Final = frozenset({
    "id", "class", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "width", "height", "viewBox", "d",
    "points", "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity", "stroke-dasharray",
    "stroke-linecap", "stroke-linejoin", "opacity", "transform", "clip-path", "clip-rule", "clipPathUnits", "mask",
    "maskUnits", "font-family", "font-size", "font-weight", "font-style", "text-anchor", "dominant-baseline",
    "textLength", "lengthAdjust", "dx", "dy", "rotate", "preserveAspectRatio", "offset", "stop-color", "stop-opacity",
    "gradientUnits", "gradientTransform", "patternUnits", "style", "href", "version", "role", "aria-label",
    "text-decoration", "letter-spacing", "word-spacing", "visibility", "display", "shape-rendering", "vector-effect",
    "markerWidth", "markerHeight", "refX", "refY", "orient", "space",
})

_URL: Final = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_COMMENT: Final = re.compile(r"/\*.*?\*/", re.DOTALL)
_AT_BLOCK: Final = re.compile(r"@font-face\s*\{[^}]*\}", re.IGNORECASE)
_AT_IMPORT: Final = re.compile(r"@import[^;]*;?", re.IGNORECASE)
_DANGEROUS: Final = re.compile(r"javascript:|vbscript:|data:|expression\s*\(|-moz-binding|behavior\s*:|@import|image-set\(",
                               re.IGNORECASE)


class UnsafeSvg(ValueError):
    """The file cannot be embedded (not SVG, not well-formed, declares a DTD)."""


def _local(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


def _internal_urls(value: str) -> str:
    """Keep `url(#id)`; any other url() becomes `none` (nothing is fetched)."""
    return _URL.sub(lambda m: f"url(#{m.group(2).strip()[1:]})" if m.group(2).strip().startswith("#") else "none", value)


def clean_css(css: str) -> str:
    # A backslash is a CSS escape, the one way to spell `url(` or `@import` that no regex here
    # sees: Textual never writes one, so a stylesheet with one is dropped whole.
    if "\\" in css:
        return ""
    css = _COMMENT.sub("", css)
    css = _AT_BLOCK.sub("", css)
    css = _AT_IMPORT.sub("", css)
    css = _internal_urls(css)
    return "" if _DANGEROUS.search(css) else css


def _clean_attr(name: str, value: str) -> str | None:
    if name == "href":
        return value if value.startswith("#") and not _DANGEROUS.search(value) else None
    if name == "style":
        return clean_css(value) or None
    value = _internal_urls(value)
    return None if _DANGEROUS.search(value) else value


def _write(node: ET.Element, out: list[str], root: bool = False) -> None:
    ns, tag = _local(node.tag)
    if ns not in ("", SVG_NS) or tag not in ELEMENTS:
        return
    attrs: list[str] = [f' xmlns="{SVG_NS}"'] if root else []
    for key, value in node.attrib.items():
        ans, name = _local(key)
        if name.lower().startswith("on") or name not in ATTRIBUTES:
            continue
        if (ans == XLINK_NS and name != "href") or (ans == XML_NS and name != "space") or ans not in ("", XLINK_NS, XML_NS):
            continue
        cleaned = _clean_attr(name, value)
        if cleaned is not None:
            attr = "xml:space" if ans == XML_NS else name
            attrs.append(f" {attr}={quoteattr(cleaned)}")
    out.append(f"<{tag}{''.join(attrs)}>")
    if tag == "style":
        out.append(escape(clean_css("".join(node.itertext()))))
    else:
        if node.text:
            out.append(escape(node.text))
        for child in node:
            _write(child, out)
            if child.tail:
                out.append(escape(child.tail))
    out.append(f"</{tag}>")


def sanitize_svg(text: str) -> str:
    """The SVG written again from the allowlist; raises `UnsafeSvg` if it cannot be."""
    head = text[:4096].lower()
    if "<!doctype" in head or "<!entity" in text.lower():
        raise UnsafeSvg("declares a DTD (a Textual export never does)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UnsafeSvg(f"not well-formed XML ({exc})") from None
    if _local(root.tag) != (SVG_NS, "svg") and _local(root.tag) != ("", "svg"):
        raise UnsafeSvg(f"the root element is {_local(root.tag)[1]!r}, not svg")
    out: list[str] = []
    _write(root, out, root=True)
    return "".join(out)
