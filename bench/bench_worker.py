"""Worker benchmarks on the real embedded servers, reported as ratios within one run.

    python bench/bench_worker.py [--events 2000] [--done-rows 100000]

- throughput: rows/s through the relay, one request per event vs `_bulk` (same events, same
  servers, same run): the ratio says what bulk buys on this machine.
- claim cost vs backlog: median time of one claim statement with an empty table vs with many
  `done` rows; a ratio near 1 shows the claim is index-backed and does not scan done rows.
Absolute numbers depend on the machine; the ratios are what to compare between changes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drillui.stack.engine import EmbeddedEngine  # noqa: E402
from drillui.stack.postgres import EmbeddedPostgres  # noqa: E402
from tests.worker_harness import make_relay  # noqa: E402
from worker.db import OutboxStore, connect, ensure_schema  # noqa: E402

P = "search_index_to_elastic"


def _fresh_db(pg: EmbeddedPostgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with connect(pg.url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    with connect(dsn) as conn:
        ensure_schema(conn)
    return dsn


def _fill(dsn: str, n: int) -> None:
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO outbox (id, projection, op, entity_id, payload) "
            "SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid(), jsonb_build_object('title', 'doc ' || g, 'n', g) "
            "FROM generate_series(1, %s) g",
            (P, n),
        )


def throughput(pg: EmbeddedPostgres, engine: EmbeddedEngine, events: int, bulk: bool) -> float:
    dsn = _fresh_db(pg)
    index = f"bench-{uuid.uuid4().hex[:8]}"
    httpx.put(f"{engine.url}/{index}", json={"mappings": {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}}).raise_for_status()
    _fill(dsn, events)
    h = make_relay(dsn, es_url=engine.url, index=index, bulk=bulk, batch_size=100)
    try:
        began = time.perf_counter()
        done = 0
        while done < events:
            claim = h.relay.claim()
            if not claim.rows:
                break
            done += len(h.relay.process(claim))
        return done / (time.perf_counter() - began)
    finally:
        h.close()
        httpx.delete(f"{engine.backend_url}/{index}")


def claim_median(pg: EmbeddedPostgres, done_rows: int, rounds: int = 50) -> float:
    dsn = _fresh_db(pg)
    with connect(dsn) as conn:
        if done_rows:
            conn.execute(
                "INSERT INTO outbox (id, projection, op, entity_id, status, processed_at) "
                "SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid(), 'done', now() FROM generate_series(1, %s)",
                (P, done_rows),
            )
        _fill(dsn, rounds * 10)
        conn.execute("ANALYZE outbox")
        store = OutboxStore(conn, projection=P, worker_id="bench")
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            store.claim(10, 60)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--done-rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedPostgres(Path(tmp) / "pg", settings={"fsync": "off"}) as pg, EmbeddedEngine() as engine:
        single = throughput(pg, engine, args.events, bulk=False)
        bulk = throughput(pg, engine, args.events, bulk=True)
        empty = claim_median(pg, 0)
        backlog = claim_median(pg, args.done_rows)
    results = {
        "events": args.events,
        "single_rows_per_s": round(single, 1),
        "bulk_rows_per_s": round(bulk, 1),
        "bulk_vs_single_ratio": round(bulk / single, 2),
        "claim_median_ms_empty": round(empty * 1000, 3),
        f"claim_median_ms_{args.done_rows}_done": round(backlog * 1000, 3),
        "claim_backlog_vs_empty_ratio": round(backlog / empty, 2),
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
