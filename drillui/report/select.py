"""Which runs a report covers: named on the command line, or every run started since a moment.

A run is named by its folder's path, by a drill (its latest run) or by `DRILL/RUN_ID`; a drill
is an id or a letter of the catalog, or the name of a folder under the snapshots root. Names are
checked against the id and run-id patterns before they touch a path, so a name can never reach
outside the snapshots root (a path given as a path is the user's own choice). Every mistake is
one `UsageError` (exit 2) naming the argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from drillui.errors import UsageError
from drillui.record.snapshot import EVENTS, RECIPE, RUN_ID_PATTERN, SnapshotError, run_folder, runs
from drillui.report.model import run_id_time

MAX_RUNS: Final = 100
"""Runs in one report at most (the newest are kept): a page for a session, not an archive."""

DRILL_ID: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_RELATIVE: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

DrillLookup = Callable[[str], str]
"""A drill id or letter -> the drill's id (raises `UsageError` for an unknown one)."""


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an ISO date or date-time (UTC unless it says otherwise), or `30m`/`2h`/`3d`/`1w` ago."""
    value = text.strip()
    m = _RELATIVE.match(value.lower())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO date/time nor a duration",
                         hint="e.g. --since 2026-12-01, --since 2026-12-01T09:30, --since 2h, --since 3d") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def today(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / EVENTS).exists() or (path / RECIPE).exists())


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise UsageError(f"--snapshots {root} is a file, not a folder")


def _scenario(name: str, root: Path, lookup: DrillLookup) -> str:
    # A folder of runs is a drill too, even one the catalog no longer lists.
    if DRILL_ID.match(name) and (root / name).is_dir():
        return name
    return lookup(name)


def resolve(arg: str, root: Path, lookup: DrillLookup) -> Path:
    """The run folder one RUN argument names."""
    if not arg.strip():
        raise UsageError("an empty RUN argument", hint="give a run folder, a drill id or letter, or DRILL/RUN_ID")
    path = Path(arg)
    if is_run_folder(path):
        return path
    looks_like_drill = "/" not in arg and (DRILL_ID.match(arg) is not None or len(arg) == 1)
    if path.is_dir() and not looks_like_drill:
        raise UsageError(f"{arg} is not a run folder (it has neither {EVENTS} nor {RECIPE})",
                         hint="a run folder is snapshots/<drill>/<run id>")
    parts = arg.split("/")
    try:
        if len(parts) == 2 and RUN_ID_PATTERN.match(parts[1]) and parts[0] and "\\" not in parts[0]:
            return run_folder(root, _scenario(parts[0], root, lookup), parts[1])
        if len(parts) == 1 and "\\" not in arg and arg not in (".", ".."):
            return run_folder(root, _scenario(arg, root, lookup), None)
    except SnapshotError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"{arg!r} names no run folder", hint="give a run folder's path, a drill id or letter, or DRILL/RUN_ID")


def select(args: Sequence[str], root: Path, lookup: DrillLookup) -> list[Path]:
    """The run folders the RUN arguments name, in their order, each once."""
    _check_root(root)
    out: dict[Path, None] = {}
    for arg in args:
        out.setdefault(resolve(arg, root, lookup).resolve(), None)
    return list(out)


def started_since(root: Path, since: datetime) -> list[Path]:
    """Every run under `root` whose run id says it started at or after `since`, oldest first.

    The start is read from the run id (the UTC start time, by the snapshot layout), so finding
    the runs of a session opens no file."""
    _check_root(root)
    if not root.is_dir():
        return []
    found: list[tuple[datetime, str, Path]] = []
    for scenario in sorted(p.name for p in root.iterdir() if p.is_dir() and DRILL_ID.match(p.name)):
        for path in runs(root, scenario):
            started = run_id_time(path.name)
            if started is not None and started >= since:
                found.append((started, path.name, path.resolve()))
    return [p for _, _, p in sorted(found)]
