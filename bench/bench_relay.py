"""The relay against its own limits, and the gauges against the backlog, in one run on the same servers.

    python bench/bench_relay.py [--quick] [--json]

Measured here, each figure the median of `rounds` runs (3; 1 with --quick):
- claim+done limit: rows/s of the worker's own claim statement and completion on one connection,
  nothing else (what Postgres allows one worker);
- sink limit: docs/s of `_bulk` requests of the same shape the worker sends (external versions),
  bodies built in advance, one connection, into a keyword-only mapping (what the engine allows);
- one and two worker processes (`python -m worker`, bulk mode, logs to a file), rows/s from the
  commit of the backlog to its last row done;
- the ratio of each worker figure to min(claim+done, sink) at batch 100 and 500;
- the gauge query (lag, oldest age, stuck) in ms at a backlog of 10k / 100k / 1M pending rows
  (--quick: 10k / 100k), beside the query it replaced, and the claim at the same backlog.

`run(quick)` returns the table rows (for a future bench/run.py); speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drillui.stack.engine import EmbeddedEngine  # noqa: E402
from drillui.stack.postgres import EmbeddedPostgres  # noqa: E402
from worker.db import GAUGE_COUNT_CAP, OutboxStore, connect, ensure_schema  # noqa: E402

P = "search_index_to_elastic"
KEYWORD_MAPPING: dict[str, Any] = {"properties": {"title": {"type": "keyword"}, "n": {"type": "integer"}}}
# The gauge query before this change, kept as the baseline: two counts and a min over the pending
# rows, a scan that grows with the backlog.
OLD_GAUGES = """
SELECT
    (SELECT count(*) FROM outbox WHERE projection = %(projection)s AND status = 'pending') AS lag,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox
      WHERE projection = %(projection)s AND status = 'pending') AS oldest_age,
    (SELECT count(*) FROM outbox
      WHERE projection = %(projection)s AND status = 'processing' AND lease_until < now()) AS stuck
"""


@dataclass(frozen=True)
class Row:
    figure: str
    value: float
    unit: str
    note: str = ""


class Bench:
    def __init__(self, pg: EmbeddedPostgres, engine: EmbeddedEngine, workdir: Path) -> None:
        self.pg = pg
        self.engine = engine
        self.workdir = workdir
        self.diagnostics: dict[tuple[int, int], list[dict[str, float]]] = {}
        """Per (batch, workers): where the time went in each worker run (see workers_rate)."""

    # ---- fixtures ---------------------------------------------------------------------------

    def fresh_db(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with connect(self.pg.url) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dsn = self.pg.dsn(name)
        with connect(dsn) as conn:
            ensure_schema(conn)
        return dsn

    def drop_db(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1]
        with connect(self.pg.url) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def fresh_index(self) -> str:
        index = f"bench-{uuid.uuid4().hex[:8]}"
        httpx.put(f"{self.engine.backend_url}/{index}", json={"mappings": KEYWORD_MAPPING}, timeout=30).raise_for_status()
        return index

    def drop_index(self, index: str) -> None:
        httpx.delete(f"{self.engine.backend_url}/{index}", timeout=30)

    @staticmethod
    def fill(dsn: str, n: int, status: str = "pending") -> None:
        with connect(dsn) as conn:
            conn.execute(
                "INSERT INTO outbox (id, projection, op, entity_id, payload, status) "
                "SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid(), jsonb_build_object('title', 'doc ' || g, 'n', g), %s "
                "FROM generate_series(1, %s) g",
                (P, status, n),
            )

    # ---- limits -----------------------------------------------------------------------------

    def claim_done_limit(self, batch: int, rows: int) -> float:
        dsn = self.fresh_db()
        try:
            self.fill(dsn, rows)
            with connect(dsn) as conn:
                conn.execute("VACUUM ANALYZE outbox")
                store = OutboxStore(conn, projection=P, worker_id="bench")
                began = time.perf_counter()
                done = 0
                while True:
                    claim = store.claim(batch, 60)
                    if not claim.rows:
                        break
                    done += len(store.complete(claim.claim_batch_id, [(r.id, None) for r in claim.rows]))
                return done / (time.perf_counter() - began)
        finally:
            self.drop_db(dsn)

    def sink_limit(self, batch: int, docs: int) -> float:
        index = self.fresh_index()
        try:
            bodies: list[bytes] = []
            for start in range(0, docs, batch):
                lines = []
                for n in range(start, min(docs, start + batch)):
                    lines.append(f'{{"index":{{"_index":"{index}","_id":"{uuid.uuid4()}","version":{n + 1},"version_type":"external"}}}}')
                    lines.append(f'{{"n": {n}, "title": "doc {n}"}}')
                bodies.append(("\n".join(lines) + "\n").encode())
            with httpx.Client(base_url=self.engine.backend_url, timeout=60) as client:
                began = time.perf_counter()
                for body in bodies:
                    resp = client.post("/_bulk", content=body, headers={"content-type": "application/x-ndjson"})
                    resp.raise_for_status()
                    resp.json()  # a client reads the answer; the worker classifies every item
                return docs / (time.perf_counter() - began)
        finally:
            self.drop_index(index)

    # ---- workers ----------------------------------------------------------------------------

    def workers_rate(self, batch: int, workers: int, events: int) -> float:
        dsn = self.fresh_db()
        index = self.fresh_index()
        procs: list[subprocess.Popen[bytes]] = []
        logs: list[Path] = []
        try:
            for i in range(workers):
                log = self.workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
                logs.append(log)
                env = {
                    **os.environ,
                    "DATABASE_URL": dsn,
                    "ES_URL": self.engine.backend_url,
                    "ES_INDEX": index,
                    "OUTBOX_USE_ES_BULK": "1",
                    "OUTBOX_BATCH_SIZE": str(batch),
                    "OUTBOX_POLL_INTERVAL": "0.01",
                    "OUTBOX_METRICS_PORT": "0",
                    "OUTBOX_WORKER_ID": f"bench-{i}",
                }
                with open(log, "wb") as out:
                    procs.append(subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT))
            for log in logs:
                _wait_for(lambda log=log: b'"worker.started"' in log.read_bytes(), 30)  # type: ignore[misc]
            cpu_before = self._cpu(procs, dsn)
            self.fill(dsn, events)
            # Timed by Postgres' clock from the commit of the backlog to the last row done, and
            # polled seldom and through the partial indexes: a poll that counted the table
            # every few ms took CPU from the engine and the workers being measured.
            with connect(dsn) as conn:
                began = _scalar(conn, "SELECT now() AS v")
                deadline = time.monotonic() + 300
                while _scalar(conn, OPEN_ROWS):
                    if time.monotonic() > deadline:
                        raise RuntimeError("workers did not drain the backlog in 300 s")
                    time.sleep(0.1)
                ended = _scalar(conn, "SELECT max(processed_at) AS v FROM outbox")
            seconds = (ended - began).total_seconds()
            cpu_after = self._cpu(procs, dsn)
            in_flight = sum(_bulk_seconds(log) for log in logs)
            self.diagnostics.setdefault((batch, workers), []).append(
                {
                    # Share of the wall time a `_bulk` request of each worker was in flight: near
                    # 1 means the pipeline never leaves the engine waiting for the worker.
                    "in_flight": in_flight / (seconds * workers),
                    **{f"{k}_us_per_row": (cpu_after[k] - cpu_before[k]) / events * 1e6 for k in cpu_after},
                }
            )
            return events / seconds
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            self.drop_index(index)
            self.drop_db(dsn)

    def _cpu(self, procs: list[subprocess.Popen[bytes]], dsn: str) -> dict[str, float]:
        """CPU seconds so far of the worker processes, the engine and the workers' backends."""
        database = dsn.rsplit("/", 1)[1]

        def cpu(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
            except psutil.Error:
                return 0.0
            return float(t.user + t.system)

        backends = [c for c in psutil.Process(self.pg.pid).children() if _cmdline_has(c, database)]
        return {
            "worker": sum(cpu(psutil.Process(p.pid)) for p in procs),
            "engine": cpu(psutil.Process(self.engine.pid)),
            "postgres": sum(cpu(c) for c in backends),
        }

    # ---- gauges -----------------------------------------------------------------------------

    def gauges_ms(self, backlogs: list[int], rounds: int = 15) -> list[Row]:
        rows: list[Row] = []
        dsn = self.fresh_db()
        try:
            have = 0
            for backlog in backlogs:
                self.fill(dsn, backlog - have)
                have = backlog
                new, cached, old, claim = _gauge_figures(dsn, rounds)
                label = f"{backlog:,}" if backlog < 10_000 else f"{backlog // 1000}k" if backlog < 1_000_000 else f"{backlog // 1_000_000}M"
                rows += [
                    Row(f"gauges ms at {label} pending (reading)", new, "ms", f"one worker; counts capped at {GAUGE_COUNT_CAP:,}"),
                    Row(f"gauges ms at {label} pending (shared reading)", cached, "ms", "the other workers"),
                    Row(f"gauges ms at {label} pending (before)", old, "ms", "full count + min, per worker"),
                    Row(f"claim ms at {label} pending (batch 100)", claim, "ms"),
                ]
        finally:
            self.drop_db(dsn)
        return rows


OPEN_ROWS = (
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE projection = 'search_index_to_elastic' AND status = 'pending') "
    "OR EXISTS (SELECT 1 FROM outbox WHERE projection = 'search_index_to_elastic' AND status = 'processing') AS v"
)


def _cmdline_has(p: psutil.Process, text: str) -> bool:
    try:
        return any(text in part for part in p.cmdline())
    except psutil.Error:
        return False


def _bulk_seconds(log: Path) -> float:
    """Seconds a worker spent in `_bulk` round trips, from its /metrics."""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"metrics.listening"' in line:
            port = json.loads(line)["metrics_port"]
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("outbox_es_bulk_request_duration_seconds_sum"))
    return 0.0


def _scalar(conn: Any, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row["v"]


def _gauge_figures(dsn: str, rounds: int) -> tuple[float, float, float, float]:
    """(reading, shared reading, the query before, claim) in ms, medians."""
    with connect(dsn) as conn:
        conn.execute("ANALYZE outbox")
        store = OutboxStore(conn, projection=P, worker_id="bench")
        return (
            _median_ms(lambda: store.gauges(fresh_seconds=0.0), rounds),
            _median_ms(lambda: store.gauges(fresh_seconds=3600.0), rounds),
            _median_ms(lambda: conn.execute(OLD_GAUGES, {"projection": P}).fetchone(), rounds),
            _claim_ms(store, rounds),
        )


def _claim_ms(store: OutboxStore, rounds: int) -> float:
    """Median time of one claim statement (batch 100); each claim is given back, untimed."""
    times = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        claim = store.claim(100, 60)
        times.append((time.perf_counter() - t) * 1000)
        store.release(claim.claim_batch_id, [r.id for r in claim.rows])
    return statistics.median(times[1:])


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm: plan cache, buffers
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _wait_for(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("a worker did not start")
        time.sleep(0.05)


def run(
    quick: bool = False,
    pg: EmbeddedPostgres | None = None,
    engine: EmbeddedEngine | None = None,
    *,
    events: int | None = None,
    backlogs: list[int] | None = None,
    rounds: int | None = None,
) -> list[Row]:
    """Every figure of this benchmark, measured in one run on the same servers.

    Servers are started for the run unless given; `events`, `backlogs` and `rounds` override
    the sizes of the mode (the smoke test uses tiny ones).
    """
    rounds = rounds or (1 if quick else 3)
    events = events or (10_000 if quick else 40_000)
    backlogs = backlogs or ([10_000, 100_000] if quick else [10_000, 100_000, 1_000_000])
    with tempfile.TemporaryDirectory(prefix="drillui-bench-") as tmp:
        own_pg = pg is None
        own_engine = engine is None
        pg = pg or EmbeddedPostgres(Path(tmp) / "pg", settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        engine = engine or EmbeddedEngine()
        try:
            if own_pg:
                pg.start()
            if own_engine:
                engine.start()
            b = Bench(pg, engine, Path(tmp))
            rows: list[Row] = []
            load = os.getloadavg()
            rows.append(Row("load average at start (1, 5, 15 min)", load[0], "", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
            # Rounds outermost, so that every figure of a batch size sees the same moments of a
            # machine shared with others: the ratios compare like with like.
            seen: dict[tuple[str, int], list[float]] = {}
            for _ in range(rounds):
                for batch in (100, 500):
                    for name, fn in (
                        ("claim", lambda: b.claim_done_limit(batch, events)),  # noqa: B023
                        ("sink", lambda: b.sink_limit(batch, events)),  # noqa: B023
                        ("one", lambda: b.workers_rate(batch, 1, events)),  # noqa: B023
                        ("two", lambda: b.workers_rate(batch, 2, events)),  # noqa: B023
                    ):
                        seen.setdefault((name, batch), []).append(fn())
            for batch in (100, 500):
                claim, sink, one, two = (statistics.median(seen[(n, batch)]) for n in ("claim", "sink", "one", "two"))
                limit = min(claim, sink)
                diag = {k: statistics.median(d[k] for d in b.diagnostics[(batch, 1)]) for k in b.diagnostics[(batch, 1)][0]}
                rows += [
                    Row(f"claim+done limit, batch {batch}", claim, "rows/s", "1 connection"),
                    Row(f"sink limit (_bulk, keyword-only), batch {batch}", sink, "docs/s", "1 connection"),
                    Row(f"one worker, batch {batch}", one, "rows/s"),
                    Row(f"two workers, batch {batch}", two, "rows/s"),
                    Row(f"one worker / min(claim, sink), batch {batch}", one / limit, "ratio", "goal >= 0.9"),
                    Row(f"two workers / one worker, batch {batch}", two / one, "ratio", "goal >= 1.0"),
                    Row(f"one worker: _bulk in flight, batch {batch}", diag["in_flight"], "share", "of the wall time"),
                    Row(
                        f"one worker: CPU per row, batch {batch}",
                        diag["worker_us_per_row"],
                        "us",
                        f"engine {diag['engine_us_per_row']:.0f} us, its Postgres backend {diag['postgres_us_per_row']:.0f} us",
                    ),
                ]
            rows += b.gauges_ms(backlogs)
            load = os.getloadavg()
            rows.append(Row("load average at end (1, 5, 15 min)", load[0], "", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
            return rows
        finally:
            if own_engine:
                engine.stop()
            if own_pg:
                pg.stop()


def table(rows: list[Row]) -> str:
    width = max(len(r.figure) for r in rows)
    out = [f"| {'figure':<{width}} | {'value':>10} | unit   | note |", f"|{'-' * (width + 2)}|{'-' * 12}|--------|------|"]
    for r in rows:
        value = f"{r.value:,.0f}" if r.unit in ("rows/s", "docs/s", "us") else f"{r.value:.3f}" if r.unit in ("ms", "ratio", "share") else ""
        out.append(f"| {r.figure:<{width}} | {value:>10} | {r.unit:<6} | {r.note} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, smaller backlogs (a couple of minutes)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = run(args.quick)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
