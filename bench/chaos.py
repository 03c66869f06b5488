"""Chaos for as long as asked: worker processes SIGKILLed at random, engine flaps, Postgres restarts.

    python bench/chaos.py --seconds 300 [--events N] [--entities 300] [--workers 3] [--seed 1] [--json]

The same code as the bounded test in the suite (tests/chaos_harness.py, tests/test_chaos.py),
on servers of its own (an embedded Postgres and engine in a temporary folder). Prints a report:
events, kills, flaps, restarts, lost, doubled, stuck, drain time; exit code 0 when the run is
clean, 1 when anything was lost, doubled, stuck or failed unexpectedly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drillui.stack.engine import EmbeddedEngine  # noqa: E402
from drillui.stack.postgres import EmbeddedPostgres  # noqa: E402
from tests.chaos_harness import ChaosConfig, restart_postgres, run_chaos  # noqa: E402
from worker.db import connect  # noqa: E402

EVENTS_PER_SECOND = 300
"""Default load: enough that kills and flaps land on busy workers, far below their limit."""


def _positive(kind: type[int] | type[float]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < 10**7:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and below 10,000,000")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=_positive(float), default=60.0, help="how long the faults go on (default 60)")
    ap.add_argument("--events", type=_positive(int), help=f"events to write (default {EVENTS_PER_SECOND}/s of chaos, at least 10,000)")
    ap.add_argument("--entities", type=_positive(int), default=300)
    ap.add_argument("--workers", type=_positive(int), default=3)
    ap.add_argument("--pg-restarts", type=int, help="Postgres restarts (default one per minute, at least one)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    events = args.events or max(10_000, int(EVENTS_PER_SECOND * args.seconds))
    restarts = args.pg_restarts if args.pg_restarts is not None else max(1, int(args.seconds // 60))
    cfg = ChaosConfig(
        seconds=args.seconds,
        events=events,
        entities=args.entities,
        workers=args.workers,
        pg_restarts=restarts,
        drain_timeout=max(30.0, args.seconds / 2),
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="drillui-chaos-") as tmp:
        with EmbeddedPostgres(Path(tmp) / "pg", settings={"fsync": "off", "synchronous_commit": "off"}) as pg, EmbeddedEngine() as engine:
            with connect(pg.url) as conn:
                conn.execute("CREATE DATABASE chaos")
            report = run_chaos(
                cfg,
                dsn=pg.dsn("chaos"),
                engine=engine,
                restart_pg=lambda down: restart_postgres(pg, down),
                workdir=Path(tmp),
                on_tick=None if args.json else _ticker(),
            )
    if args.json:
        data = dataclasses.asdict(report)
        data["clean"] = report.clean
        print(json.dumps(data, indent=2, default=dict))
    else:
        print(file=sys.stderr)
        print(report.table())
    return 0 if report.clean else 1


def _ticker():  # type: ignore[no-untyped-def]
    last = [0.0]

    def tick(text: str) -> None:
        seconds = float(text.split("s", 1)[0])
        if seconds - last[0] >= 1.0:
            last[0] = seconds
            print(f"\r{text}", end="", file=sys.stderr, flush=True)

    return tick


if __name__ == "__main__":
    sys.exit(main())
