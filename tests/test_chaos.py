"""Keep it proven: three workers under SIGKILLs, engine flaps and a Postgres restart lose nothing,
apply nothing twice in effect, leave nothing stuck, and the index ends with the latest effect of
every entity. Bounded (about a minute); `bench/chaos.py` runs the same for as long as asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from drillui.stack.engine import EmbeddedEngine
from drillui.stack.postgres import EmbeddedPostgres
from tests.chaos_harness import ChaosConfig, restart_postgres, run_chaos


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_chaos_loses_nothing_doubles_nothing_leaves_nothing_stuck(
    db_url: str, pg: EmbeddedPostgres, engine: EmbeddedEngine, es_url: str, tmp_path: Path
) -> None:
    def restart(down: float) -> None:
        # The session's server: every other test's DSN keeps working because the port does.
        restart_postgres(pg, down)

    try:
        report = run_chaos(ChaosConfig(seconds=35, events=10_000, entities=300, seed=13), dsn=db_url, engine=engine, restart_pg=restart, workdir=tmp_path)
    finally:
        if not pg.running:
            pg.start()
    print(report.table())
    assert report.events >= 10_000 and report.kills >= 5 and report.flaps >= 3 and report.pg_restarts == 1
    assert report.clean, report.table()
    assert report.failed == {"invalid_payload": 6}
