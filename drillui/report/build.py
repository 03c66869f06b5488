"""`drillui report`: pick the runs, write the page, say where it is.

The runs are read one at a time and each run's section is written to a scratch file as soon as
it is rendered, so a report of many long runs holds one run in memory, never all of them; the
session summary (which needs every run's end state) is written first when the page is put
together. The page appears at its final path only when it is complete (written beside it, then
renamed), private to its owner like the run folders it is made from.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

from drillui.errors import UsageError
from drillui.report.load import load_run
from drillui.report.page import SummaryRow, page_end, page_start, run_section
from drillui.report.select import MAX_RUNS, DrillLookup, parse_since, select, started_since, today

OUTPUT_STAMP: Final = "%Y%m%dT%H%M%SZ"
PRIVATE_FILE: Final = 0o600


@dataclass(frozen=True)
class Written:
    path: Path
    runs: int
    left_out: int
    """Runs that matched but were not included (past `MAX_RUNS`)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drillui")
    except PackageNotFoundError:  # a checkout that is not installed: the report still gets written
        return "(development)"


def default_output(folder: Path, now: datetime) -> Path:
    base = f"drillui-report-{now.astimezone(UTC).strftime(OUTPUT_STAMP)}"
    path, n = folder / f"{base}.html", 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}.html"
    return path


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder", hint="name the HTML file to write, e.g. -o session.html")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: the folder {path.parent} does not exist")


def write_report(paths: Sequence[Path], output: Path, *, selection: str, root: Path, now: datetime) -> int:
    """Write the report of `paths` to `output`; returns the number of runs in it."""
    version = _version()
    rows: list[SummaryRow] = []
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with tempfile.TemporaryFile("w+", encoding="utf-8") as body:
            for n, path in enumerate(paths, 1):
                rep = load_run(path)
                body.write(run_section(rep, n))
                rows.append(SummaryRow.of(rep, n))
            body.seek(0)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
            out: IO[str]
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(page_start(rows, generated=now, selection=selection, root=str(root), version=version))
                shutil.copyfileobj(body, out)
                out.write(page_end(version))
        os.replace(tmp, output)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(rows)


def report(runs: Sequence[str], *, since: str | None, output: Path | None, root: Path, lookup: DrillLookup,
           now: datetime | None = None) -> Written:
    """The command: select the runs, write the page, return where it went."""
    now = now or datetime.now(UTC)
    if runs and since is not None:
        raise UsageError("give runs or --since, not both")
    if output is not None:
        _check_output(output)
    if runs:
        paths = select(runs, root, lookup)
        selection = "named on the command line"
    else:
        start = parse_since(since, now) if since is not None else today(now)
        paths = started_since(root, start)
        selection = f"runs started since {start:%Y-%m-%d %H:%M} UTC"
        if not paths:
            raise UsageError(f"no run started since {start:%Y-%m-%d %H:%M} UTC under {root}",
                             hint="name runs (a folder, a drill, DRILL/RUN_ID) or go further back, e.g. --since 7d")
    left_out = max(0, len(paths) - MAX_RUNS)
    if left_out:
        paths = paths[-MAX_RUNS:]
        selection += f"; the newest {MAX_RUNS}, {left_out} older left out"
    target = output if output is not None else default_output(Path.cwd(), now)
    n = write_report(paths, target, selection=selection, root=root, now=now)
    return Written(target, n, left_out)


def main(runs: Sequence[str], *, since: str | None, output: Path | None, root: Path, lookup: DrillLookup) -> int:
    written = report(runs, since=since, output=output, root=root, lookup=lookup)
    if written.left_out:
        print(f"drillui: {written.left_out} older run(s) left out: a report holds at most {MAX_RUNS}", file=sys.stderr)
    print(written.path)
    return 0
