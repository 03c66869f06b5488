"""drillui's own actions in Textual's command palette (Ctrl+P), beside Textual's (theme, keys, quit).

Why: a trainer who does not remember a key types a few letters of what they want: "run 429",
"recover", "filter 3f2a", "promql", "replay". Each command is the screen's or the app's own
action, offered only where it applies right now (recover while the fault is held, the run's ids
once it has some), so the palette never offers what would be refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

if TYPE_CHECKING:
    from drillui.ui.app import DrillApp

Command = tuple[str, str, Callable[[], Any]]
MAX_IDS = 10


def commands(app: DrillApp, screen: Screen[Any]) -> Iterator[Command]:
    """(name, help, callback) of every drillui action that applies on `screen` now."""
    from drillui.ui.screens.drill import DrillScreen
    from drillui.ui.screens.menu import MenuScreen
    from drillui.ui.widgets.promql import PromqlPanel

    drill_screen = screen if isinstance(screen, DrillScreen) else None
    running = drill_screen is not None and drill_screen.runner is not None
    live = drill_screen is not None and not drill_screen.read_only
    if drill_screen is not None:
        s = drill_screen

        def can(action: str) -> bool:
            # The screen's own rules (a blind trainee's screen refuses the trainer's steps).
            return bool(s.check_action(action, ()))

        if live and s.check_action("recover", ()):
            yield "Recover the fault now", "Guided mode: revert the fault; the events settle and the drill is judged", s.action_recover
        if live and s.check_action("stop", ()):
            yield "Stop the drill", "It ends as stopped: the fault reverted, the workers stopped", s.action_stop
        if s.drill.steps and can("apply_step") and not getattr(s, "blind", False):
            yield "Apply the current step", "Its trace or log query becomes the filter; its PromQL runs", s.action_apply_step
        if can("promql") and s.query(PromqlPanel):
            yield "PromQL prompt", "Type any PromQL: it runs over the drill's time range", s.action_promql
        if can("pick_event"):
            yield "Filter traces by an id…", "Pick one of this drill's event or batch ids", s.action_pick_event
        for value in s.state.outbox_event_ids.list()[:MAX_IDS]:
            yield (f"Filter traces by outbox_event_id={value}", "One event: outbox.process spans",
                   partial(s.apply_trace_filter, f"outbox_event_id={value}"))
        for value in list(reversed(s.state.claim_batch_ids.list()))[:MAX_IDS]:
            yield (f"Filter traces by claim_batch_id={value}", "One batch: projection.process_batch spans",
                   partial(s.apply_trace_filter, f"claim_batch_id={value}"))
        yield "Filter logs…", "Free text and key=value terms", s.action_filter_logs
        if live and s.check_action("screenshot", ()):
            yield "Screenshot of the dashboard", "A numbered SVG in the run's folder", s.action_screenshot
    if not running:
        for d in app.catalog.drills:
            yield f"Run drill {d.letter}: {d.title}", f"{d.id} · runbook {d.runbook}", partial(app.open_drill, d)
    current = drill_screen.drill if drill_screen is not None else screen.selected if isinstance(screen, MenuScreen) else None
    if current is not None and not running:
        yield (f"Replay the last run of {current.letter}", f"The recorded run of {current.id}, on the run screen (pause, step, seek)",
               partial(app.replay_last, current.id))
    if not running:
        yield "Replay the last run", "The newest recorded run of any drill", partial(app.replay_last, None)


class DrillCommands(Provider):
    """The palette's source of drillui's own commands (see `commands`)."""

    def _commands(self) -> list[Command]:
        from drillui.ui.app import DrillApp

        app = self.app
        return list(commands(app, self.screen)) if isinstance(app, DrillApp) else []

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
