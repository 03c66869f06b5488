"""The dashboard's remembered choices in `<state folder>/dashboard.json`: the run options of each
drill (`run_options`) and the theme (`theme`).

Plain functions, no Textual: the app calls them from thread workers. A missing or unreadable file
is an empty set of preferences (the catalog's defaults), never an error the trainer must fix.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drillui.runner.runner import RunOptions

FILE = "dashboard.json"
# Run options and the theme are saved from different thread workers: one read-modify-write at a time.
_WRITE_LOCK = threading.Lock()


@dataclass(frozen=True)
class DrillChoices:
    """What the form asks, for one drill; `None` fields mean "the catalog's"."""

    guided: bool = True
    hold: float | None = None
    trigger_count: int | None = None
    op: str | None = None
    batch_size: int | None = None
    workers: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: Any) -> DrillChoices:
        if not isinstance(d, dict):
            return cls()
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            return cls(**known)
        except TypeError:
            return cls()

    def apply(self, options: RunOptions) -> RunOptions:
        """Guided: `hold` is the hold limit; bounded: it replaces the drill's duration."""
        return replace(options, guided=self.guided, hold=self.hold if self.guided else None,
                       duration=self.hold if not self.guided and self.hold is not None else options.duration,
                       trigger_count=self.trigger_count if self.trigger_count is not None else options.trigger_count,
                       op=self.op or options.op, bulk_size=self.batch_size or options.bulk_size,  # type: ignore[arg-type]
                       workers=self.workers if self.workers is not None else options.workers)


def _read(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update(folder: Path, key: str, value: Any) -> None:
    """Set one key of the file, keeping the others (atomically: a reader never sees half a file)."""
    with _WRITE_LOCK:
        data = _read(folder)
        data[key] = value
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = folder / f".{FILE}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, folder / FILE)


def load_theme(folder: Path) -> str | None:
    """The theme chosen last (Textual's theme picker), or None."""
    theme = _read(folder).get("theme")
    return theme if isinstance(theme, str) and theme else None


def save_theme(folder: Path, theme: str) -> None:
    _update(folder, "theme", theme)


def load_prefs(folder: Path) -> dict[str, DrillChoices]:
    data = _read(folder)
    runs = data.get("run_options")
    if not isinstance(runs, dict):
        return {}
    return {str(k): DrillChoices.from_json(v) for k, v in runs.items()}


def save_prefs(folder: Path, prefs: dict[str, DrillChoices]) -> None:
    _update(folder, "run_options", {k: v.to_json() for k, v in prefs.items()})
