"""The relay against the real embedded Postgres and engine: claims, leases, retries, bulk."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.worker_harness import make_relay
from worker.db import OutboxStore, connect, ensure_schema, insert_event, queries
from worker.retry import RetryPolicy

P = "search_index_to_elastic"


def _insert(db_url: str, n: int, op: str = "upsert", payload: Any = None) -> list[uuid.UUID]:
    with connect(db_url) as conn:
        ensure_schema(conn)
        return [
            insert_event(conn, projection=P, op=op, entity_id=uuid.uuid4(), payload=payload if payload is not None else {"title": f"t{i}", "n": i})
            for i in range(n)
        ]


def _status(db_url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    with connect(db_url) as conn:
        rows = conn.execute("SELECT * FROM outbox WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r["id"]: r for r in rows}


def _create_index(es_url: str, index: str) -> None:
    r = httpx.put(f"{es_url}/{index}", json={"mappings": {"dynamic": "strict", "properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}})
    assert r.status_code == 200, r.text


def test_two_workers_never_hold_the_same_row(db_url: str) -> None:
    ids = set(_insert(db_url, 300))
    held: dict[str, list[uuid.UUID]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        with connect(db_url) as conn:
            store = OutboxStore(conn, projection=P, worker_id=name)
            barrier.wait()
            while True:
                claim = store.claim(7, 60)
                if not claim.rows:
                    return
                held[name].extend(r.id for r in claim.rows)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    a, b = set(held["a"]), set(held["b"])
    assert len(held["a"]) == len(a) and len(held["b"]) == len(b), "a worker claimed a row twice"
    assert not (a & b), f"{len(a & b)} rows held by both workers"
    assert a | b == ids
    assert a and b, "both workers should have claimed something"


@pytest.mark.parametrize(("limit", "pending"), [(10, 5), (500, 5_000)])
def test_claim_is_index_backed_not_a_scan_over_done_rows(db_url: str, limit: int, pending: int) -> None:
    # With hundreds of rows to claim, the planner used to hash-join them against a sequential
    # scan of the whole table: the claim's cost grew with the table.
    with connect(db_url) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO outbox (id, projection, op, entity_id, status, processed_at) "
            "SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid(), 'done', now() FROM generate_series(1, 20000)",
            (P,),
        )
        conn.execute(
            "INSERT INTO outbox (id, projection, op, entity_id) SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid() "
            "FROM generate_series(1, %s)",
            (P, pending),
        )
        conn.execute("ANALYZE outbox")
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(
                "EXPLAIN " + queries()["claim_batch"],  # type: ignore[operator]
                {"projection": P, "limit": limit, "worker_id": "w", "claim_batch_id": uuid.uuid4(), "lease_seconds": 30, "max_attempts": 10},
            ).fetchall()
        )
    assert "outbox_due_idx" in plan and "outbox_lease_idx" in plan, plan
    assert "Seq Scan on outbox" not in plan, plan


def test_batch_statements_are_planned_for_their_arrays_not_prepared(db_url: str) -> None:
    # A prepared settle went to a generic plan after five runs (5x slower per row at 500 ids).
    with connect(db_url) as conn:
        assert conn.prepare_threshold is None


def test_expired_lease_is_reclaimed_processed_once_and_the_loser_cannot_complete(
    db_url: str, es_url: str, es_index: str
) -> None:
    _create_index(es_url, es_index)
    [eid] = _insert(db_url, 1)
    a = make_relay(db_url, es_url=es_url, index=es_index, worker_id="worker-a", lease_seconds=0.3)
    b = make_relay(db_url, es_url=es_url, index=es_index, worker_id="worker-b")
    try:
        claim_a = a.relay.claim()
        assert [r.id for r in claim_a.rows] == [eid]
        time.sleep(0.5)  # A stalls past its lease
        claim_b = b.relay.claim()
        assert [r.id for r in claim_b.rows] == [eid]
        assert claim_b.rows[0].prev_owner == "worker-a"
        settled_b = b.relay.process(claim_b)
        assert [s.final for s in settled_b] == ["ok"]
        assert b.metric("outbox_reclaimed_total") == 1
        audit = [line for line in b.logs() if line["event"] == "outbox.reclaimed"]
        assert len(audit) == 1
        assert audit[0]["reclaimed_from"] == "worker-a" and audit[0]["reclaimed_by"] == "worker-b"
        assert audit[0]["why"] == "lease_expired" and "lease_ended_at" in audit[0]
        assert any(s.name == "outbox.reclaim" for s in b.finished_spans())

        # A wakes up and tries to finish: the row is not its own any more.
        settled_a = a.relay.process(claim_a)
        assert [s.final for s in settled_a] == ["owner_mismatch"]
        assert a.metric("outbox_owner_mismatch_skips_total") == 1
        assert a.metric("outbox_processed_total") == 0
        row = _status(db_url, [eid])[eid]
        assert row["status"] == "done" and row["claimed_by"] == "worker-b"
        # A's late write hit the engine with the same external version: rejected, not applied twice.
        doc = httpx.get(f"{es_url}/{es_index}/_doc/{row['entity_id']}").json()
        assert doc["_version"] == row["seq"]
    finally:
        a.close()
        b.close()


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base=0.5, cap=8.0, max_attempts=100)
    rng = random.Random(7)
    floors = [policy.step(n) / 2 for n in range(1, 12)]
    assert floors == sorted(floors) and floors[0] == 0.25 and floors[-1] == 4.0
    for n in range(1, 12):
        for _ in range(50):
            d = policy.backoff(n, rng)
            assert policy.step(n) / 2 <= d <= policy.step(n) <= 8.0
    assert policy.step(60) == 8.0  # far past the cap, no overflow


def test_retries_back_off_then_fail_terminally_at_max_attempts(db_url: str) -> None:
    [eid] = _insert(db_url, 1, op="delete")
    # Nothing listens on port 9: a real connection refusal.
    h = make_relay(db_url, es_url="http://127.0.0.1:9", policy=RetryPolicy(0.05, 0.2, 3))
    try:
        delays = []
        for _attempt in range(3):
            deadline = time.monotonic() + 5
            while True:
                claim = h.relay.claim()
                if claim.rows:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
            [s] = h.relay.process(claim)
            delays.append(s.delay)
        row = _status(db_url, [eid])[eid]
        assert row["status"] == "failed" and row["last_reason"] == "es_connect" and row["attempts"] == 3
        assert [s for s in delays[:2]] and 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1
        assert h.metric("outbox_retry_scheduled_total", reason="es_connect", op="delete") == 2
        assert h.metric("outbox_failed_total", reason="es_connect") == 3
        assert h.metric("outbox_terminal_failed_total", reason="es_connect") == 1
        retry_logs = [line for line in h.logs() if line["event"] == "outbox.retry_scheduled"]
        assert [line["attempt"] for line in retry_logs] == [1, 2]
        assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in retry_logs)
        batch_spans = [s for s in h.finished_spans() if s.name == "projection.process_batch"]
        assert [s.attributes["result"] for s in batch_spans] == ["retry", "retry", "failed"]
        assert batch_spans[-1].status.status_code.name == "ERROR"
        assert batch_spans[0].attributes["retry_count"] == 1 and batch_spans[0].attributes["reason"] == "es_connect"
        assert "wordloom.outbox_event_id" not in batch_spans[0].attributes
    finally:
        h.close()


def test_bulk_batch_with_a_poison_document_is_partial(db_url: str, es_url: str, es_index: str) -> None:
    _create_index(es_url, es_index)
    good = _insert(db_url, 3)
    [poison] = _insert(db_url, 1, payload={"title": "poison", "n": "not-a-number"})
    h = make_relay(db_url, es_url=es_url, index=es_index, bulk=True)
    try:
        claim = h.relay.claim()
        settled = {s.row.id: s for s in h.relay.process(claim)}
        assert {i: settled[i].final for i in good} == dict.fromkeys(good, "ok")
        assert settled[poison].final == "failed" and settled[poison].outcome.reason == "es_4xx"
        rows = _status(db_url, [*good, poison])
        assert [rows[i]["status"] for i in good] == ["done"] * 3 and rows[poison]["status"] == "failed"
        assert h.metric("outbox_es_bulk_requests_total", result="partial") == 1
        assert h.metric("outbox_es_bulk_item_failures_total", failure_class="4xx") == 1
        assert h.metric("outbox_terminal_failed_total", reason="es_4xx") == 1
        [batch] = [s for s in h.finished_spans() if s.name == "projection.process_batch"]
        assert batch.attributes["result"] == "partial"
        assert (batch.attributes["ok_count"], batch.attributes["failed_count"]) == (3, 1)
        assert not [s for s in h.finished_spans() if s.name == "outbox.process"]  # bulk: no per-event spans
        [summary] = [line for line in h.logs() if line["event"] == "projection.batch_processed"]
        assert summary["failed_outbox_event_ids"] == [str(poison)]
    finally:
        h.close()


def test_duplicate_delete_and_stale_writes_are_idempotent_noops(db_url: str, es_url: str, es_index: str) -> None:
    _create_index(es_url, es_index)
    entity, other = uuid.uuid4(), uuid.uuid4()
    with connect(db_url) as conn:
        ensure_schema(conn)
        up = insert_event(conn, projection=P, op="upsert", entity_id=entity, payload={"title": "v", "n": 1})
        d1 = insert_event(conn, projection=P, op="delete", entity_id=entity)
        d2 = insert_event(conn, projection=P, op="delete", entity_id=entity)
        old = insert_event(conn, projection=P, op="upsert", entity_id=other, payload={"title": "old", "n": 1})
        new = insert_event(conn, projection=P, op="upsert", entity_id=other, payload={"title": "new", "n": 2})
    h = make_relay(db_url, es_url=es_url, index=es_index)
    try:
        h.relay.process(h.relay.claim())
        # Both older upserts are delivered again. The one behind a newer delete is superseded in
        # Postgres (the engine may have forgotten the delete); the one behind a newer upsert is
        # rejected by the engine's external version.
        with connect(db_url) as conn:
            conn.execute("UPDATE outbox SET status = 'pending', next_attempt_at = now() WHERE id = ANY(%s)", ([up, old],))
        again = {s.row.id: s for s in h.relay.process(h.relay.claim())}
        assert (again[up].final, again[up].outcome.reason) == ("noop", "superseded")
        assert (again[old].final, again[old].outcome.reason) == ("noop", "es_409")
        rows = _status(db_url, [up, d1, d2, old, new])
        assert rows[d1]["last_reason"] is None and rows[d2]["last_reason"] == "es_404"
        assert rows[up]["last_reason"] == "superseded" and rows[up]["status"] == "done"
        assert h.metric("outbox_idempotent_noop_total", op="delete", reason="es_404") == 1
        assert h.metric("outbox_idempotent_noop_total", op="upsert", reason="es_409") == 1
        assert h.metric("outbox_idempotent_noop_total", op="upsert", reason="superseded") == 1
        assert httpx.get(f"{es_url}/{es_index}/_doc/{entity}").status_code == 404
        assert httpx.get(f"{es_url}/{es_index}/_doc/{other}").json()["_source"]["title"] == "new"
        noop_spans = [s for s in h.finished_spans() if s.name == "outbox.process" and s.attributes.get("noop")]
        assert {s.attributes["reason"] for s in noop_spans} == {"es_404", "es_409", "superseded"}
        [line] = [x for x in h.logs() if x["event"] == "outbox.idempotent_noop" and x["reason"] == "superseded"]
        assert line["outbox_event_id"] == str(up) and "engine not called" in line["msg"]
    finally:
        h.close()


def test_chronicle_entries_carry_the_projection_version(db_url: str) -> None:
    event_id, entity = uuid.uuid4(), uuid.uuid4()
    with connect(db_url) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO chronicle_events (id, entity_id, kind, title, body) VALUES (%s, %s, 'note', 'hello', '{\"a\": 1}')",
            (event_id, entity),
        )
        insert_event(conn, projection="chronicle", op="upsert", entity_id=event_id)
    v1 = make_relay(db_url, projection="chronicle", chronicle_version=1, worker_id="v1")
    try:
        [s] = v1.relay.process(v1.relay.claim())
        assert s.final == "ok"
        with connect(db_url) as conn:
            first = conn.execute("SELECT * FROM chronicle_entries WHERE event_id = %s", (event_id,)).fetchone()
            insert_event(conn, projection="chronicle", op="upsert", entity_id=event_id)
    finally:
        v1.close()
    v2 = make_relay(db_url, projection="chronicle", chronicle_version=2, worker_id="v2")
    try:
        [s] = v2.relay.process(v2.relay.claim())
        assert s.final == "ok"
        with connect(db_url) as conn:
            second = conn.execute("SELECT * FROM chronicle_entries WHERE event_id = %s", (event_id,)).fetchone()
        [span] = [x for x in v2.finished_spans() if x.name == "outbox.process"]
        assert span.attributes["projection_version"] == 2
        assert [line["projection_version"] for line in v2.logs() if line["event"] == "outbox.processed"] == [2]
        from prometheus_client import generate_latest

        assert b"projection_version" not in generate_latest(v2.registry)
    finally:
        v2.close()
    assert first is not None and second is not None
    assert (first["projection_version"], second["projection_version"]) == (1, 2)
    assert first["summary"] == "hello" and second["summary"] == "note: hello"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: must be a postgresql:// URL"),
        ({"DATABASE_URL": "postgresql://h/db", "OUTBOX_BATCH_SIZE": "lots"}, "OUTBOX_BATCH_SIZE"),
        ({"DATABASE_URL": "postgresql://h/db", "OUTBOX_EXPERIMENT_ES_429_EVERY_N": "0"}, "OUTBOX_EXPERIMENT_ES_429_EVERY_N"),
        ({"DATABASE_URL": "postgresql://h/db", "ES_URL": "localhost:9200"}, "ES_URL"),
        ({"DATABASE_URL": "postgresql://h/db", "CHRONICLE_PROJECTION_VERSION": "3"}, "CHRONICLE_PROJECTION_VERSION"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable_and_exit_2(env: dict[str, str], fragment: str) -> None:
    import subprocess
    import sys

    base = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "worker"], env={**base, **env}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr


def test_a_broken_database_connection_is_reopened(db_url: str) -> None:
    [eid] = _insert(db_url, 1, op="delete")
    h = make_relay(db_url, es_url="http://127.0.0.1:9")
    reopened: list[bool] = []

    def reconnect() -> None:
        h.relay.store.conn = connect(db_url)
        reopened.append(True)

    h.relay.reconnect = reconnect
    with connect(db_url) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    # Run the loop until it is back: the first statement fails on the dead connection, then
    # the connection is reopened and the event is attempted.
    runner = threading.Thread(target=h.relay.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 15
    while not any(line["event"] == "db.recovered" for line in h.logs()) and time.monotonic() < deadline:
        time.sleep(0.02)
    h.relay.stop.set()
    runner.join(15)
    try:
        assert reopened
        assert [line["event"] for line in h.logs() if line["event"].startswith("db.")] == ["db.unavailable", "db.recovered"]
        assert _status(db_url, [eid])[eid]["status"] == "pending"  # retried, nothing lost
    finally:
        h.relay.store.conn.close()
        h.close()
