"""The blocking reads behind the dashboard's menu, as plain functions its thread workers call.

Why a separate module: the screens decide *when* to read (mount, resume) and the functions here do
the reading, free of Textual (never imported here), so they stay testable on their own and no
disk access happens in a widget. The run screens read nothing themselves: they fold the run's
events (`drillui.evidence.state.RunState`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drillui.record.snapshot import end_state_of, latest_run
from drillui.scenarios import Drill


@dataclass(frozen=True)
class LastVerdict:
    run_id: str
    state: str
    """passed, failed, stopped, error, running (no end recorded yet), unreadable, unknown."""
    word: str
    """How the list shows it: PASS, FAIL, STOPPED, ERROR, ..."""
    path: str


def load_last_verdicts(root: Path, drills: Sequence[Drill]) -> dict[str, LastVerdict]:
    """The latest run of each drill under the snapshots root, and how it ended."""
    out: dict[str, LastVerdict] = {}
    if not root.is_dir():
        return out
    for d in drills:
        run = latest_run(root, d.id)
        if run is None:
            continue
        state, word = end_state_of(run)
        out[d.id] = LastVerdict(run.name, state, word, str(run))
    return out
