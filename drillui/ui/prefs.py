"""The dashboard's remembered run options, per drill, in `<state folder>/dashboard.json`.

Plain functions, no Textual: the app calls them from thread workers. A missing or unreadable file
is an empty set of preferences (the catalog's defaults), never an error the trainer must fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drillui.runner.runner import RunOptions

FILE = "dashboard.json"


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


def load_prefs(folder: Path) -> dict[str, DrillChoices]:
    try:
        data = json.loads((folder / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    runs = data.get("run_options") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {str(k): DrillChoices.from_json(v) for k, v in runs.items()}


def save_prefs(folder: Path, prefs: dict[str, DrillChoices]) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"run_options": {k: v.to_json() for k, v in prefs.items()}}, indent=2), encoding="utf-8")
    os.replace(tmp, folder / FILE)
