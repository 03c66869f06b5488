"""What a Textual app's terminal shows, rendered as an SVG screenshot would be: for pilot tests
that read the screen the way a user reads it."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console


def screen_text(app: Any, *, styles: bool = False) -> str:
    """The whole screen as text; with `styles`, with its colours as escape codes."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor" if styles else None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens, simplify=True))
    return console.export_text(styles=styles)
