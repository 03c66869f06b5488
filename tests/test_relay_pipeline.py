"""The pipelined relay (bulk mode): the next claim and the previous settle overlap the request in
flight, with the guarantees of the serial loop, and the outbox gauges cost the same whatever the
backlog, read by one worker per projection at a time."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.worker_harness import make_relay
from worker.db import GAUGE_LOCK_KEY, OutboxStore, connect, ensure_schema, insert_event

P = "search_index_to_elastic"


def _index(es_url: str, index: str) -> None:
    httpx.put(f"{es_url}/{index}", json={"mappings": {"properties": {"title": {"type": "keyword"}, "n": {"type": "integer"}}}}).raise_for_status()


def _run_until_drained(h: Any, db_url: str, timeout: float = 30) -> None:
    runner = threading.Thread(target=h.relay.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + timeout
    with connect(db_url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'processing')").fetchone()
            assert row is not None
            if row["n"] == 0:
                break
            time.sleep(0.05)
    h.relay.stop.set()
    runner.join(15)
    assert not runner.is_alive()


def test_the_pipeline_applies_the_latest_effect_of_each_entity_once(db_url: str, es_url: str, es_index: str) -> None:
    _index(es_url, es_index)
    entities = [uuid.uuid4() for _ in range(7)]
    latest: dict[uuid.UUID, tuple[str, int]] = {}
    with connect(db_url) as conn:
        ensure_schema(conn)
        for n in range(120):
            entity = entities[n % len(entities)]
            op = "delete" if n % 5 == 3 else "upsert"
            eid = insert_event(conn, projection=P, op=op, entity_id=entity, payload={"title": f"v{n}", "n": n} if op == "upsert" else None)
            seq = conn.execute("SELECT seq FROM outbox WHERE id = %s", (eid,)).fetchone()["seq"]  # type: ignore[index]
            latest[entity] = (op, seq)
    # Batches of 4: consecutive batches hold events of the same entities, claimed while the
    # previous batch's request is in flight and settled while the next one's is.
    h = make_relay(db_url, es_url=es_url, index=es_index, bulk=True, batch_size=4)
    try:
        _run_until_drained(h, db_url)
        logs = h.logs()
        spans = {s.attributes["wordloom.claim_batch_id"]: s for s in h.finished_spans() if s.name == "projection.process_batch"}  # type: ignore[index]
    finally:
        h.close()
    with connect(db_url) as conn:
        rows = conn.execute("SELECT status, count(*) AS n FROM outbox GROUP BY status").fetchall()
    assert {r["status"]: r["n"] for r in rows} == {"done": 120}
    for entity, (op, seq) in latest.items():
        doc = httpx.get(f"{es_url}/{es_index}/_doc/{entity}")
        if op == "delete":
            assert doc.status_code == 404
        else:
            assert doc.json()["_version"] == seq
    settled = Counter(x["outbox_event_id"] for x in logs if x["event"] in ("outbox.processed", "outbox.idempotent_noop"))
    assert len(settled) == 120 and set(settled.values()) == {1}
    # Each event's line carries the trace of its own batch's span, though the batches overlap.
    for line in logs:
        if line["event"] in ("outbox.processed", "outbox.idempotent_noop"):
            span = spans[line["claim_batch_id"]]
            assert line["trace_id"] == format(span.context.trace_id, "032x")  # type: ignore[union-attr]
    assert len(spans) == 30 and all(s.attributes["result"] in ("ok", "partial", "noop") for s in spans.values())  # type: ignore[index,operator]


@pytest.fixture
def black_hole() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_stop_releases_the_claim_made_while_a_request_was_in_flight(db_url: str, black_hole: str) -> None:
    with connect(db_url) as conn:
        ensure_schema(conn)
        ids = [insert_event(conn, projection=P, op="delete", entity_id=uuid.uuid4()) for _ in range(16)]
    h = make_relay(db_url, es_url=black_hole, bulk=True, batch_size=8, es_timeout=1.0)
    threading.Timer(0.4, h.relay.stop.set).start()
    try:
        h.relay.run()
        claimed = [x for x in h.logs() if x["event"] == "outbox.claimed"]
        released = [x for x in h.logs() if x["event"] == "outbox.released"]
    finally:
        h.close()
    with connect(db_url) as conn:
        rows = conn.execute("SELECT status, attempts, last_reason FROM outbox WHERE id = ANY(%s)", (ids,)).fetchall()
    assert len(claimed) == 2, "the second batch is claimed while the first request hangs"
    assert [x["released_count"] for x in released] == [8] and released[0]["why"] == "stopping"
    assert sorted((r["status"], r["attempts"], r["last_reason"]) for r in rows) == [("pending", 0, None)] * 8 + [("pending", 1, "es_timeout")] * 8


def test_the_serial_loop_is_still_there_and_equivalent(db_url: str, es_url: str, es_index: str) -> None:
    _index(es_url, es_index)
    with connect(db_url) as conn:
        ensure_schema(conn)
        for n in range(30):
            insert_event(conn, projection=P, op="upsert", entity_id=uuid.uuid4(), payload={"title": "t", "n": n})
    h = make_relay(db_url, es_url=es_url, index=es_index, bulk=True, batch_size=7, pipeline=False)
    try:
        _run_until_drained(h, db_url)
        assert h.metric("outbox_processed_total", result="ok") == 30
        assert h.metric("outbox_es_bulk_requests_total", result="ok") == 5
    finally:
        h.close()


# ---- gauges ----------------------------------------------------------------------------------


def _pending(db_url: str, n: int) -> None:
    with connect(db_url) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO outbox (id, projection, op, entity_id) SELECT gen_random_uuid(), %s, 'upsert', gen_random_uuid() FROM generate_series(1, %s)",
            (P, n),
        )


def test_lag_and_stuck_are_exact_up_to_the_cap_and_saturate_beyond(db_url: str) -> None:
    _pending(db_url, 12)
    with connect(db_url) as conn:
        conn.execute(
            "UPDATE outbox SET status = 'processing', lease_until = now() - interval '1 s', claimed_by = 'dead' "
            "WHERE id IN (SELECT id FROM outbox ORDER BY seq LIMIT 4)"
        )
        conn.execute("UPDATE outbox SET created_at = now() - interval '90 s' WHERE seq = (SELECT max(seq) FROM outbox)")
        store = OutboxStore(conn, projection=P, worker_id="w")
        exact = store.gauges(fresh_seconds=0, cap=100)
        capped = store.gauges(fresh_seconds=0, cap=5)
    assert exact is not None and (exact.lag, exact.stuck) == (8, 4) and 89 < exact.oldest_age < 120
    assert capped is not None and (capped.lag, capped.stuck) == (5, 4)


def test_gauges_are_read_by_one_worker_at_a_time_and_shared(db_url: str) -> None:
    _pending(db_url, 3)
    with connect(db_url) as a_conn, connect(db_url) as b_conn, connect(db_url) as other:
        a = OutboxStore(a_conn, projection=P, worker_id="a")
        b = OutboxStore(b_conn, projection=P, worker_id="b")
        assert a.gauges(fresh_seconds=5) is not None
        read_by = lambda: other.execute("SELECT read_by, read_at FROM outbox_gauges").fetchone()  # noqa: E731
        first = read_by()
        assert first is not None and first["read_by"] == "a"
        g = b.gauges(fresh_seconds=5)  # a fresh reading exists: b exports it without reading
        assert g is not None and g.lag == 3 and read_by() == first
        # While a reading is in progress elsewhere (the lock is held), b never waits for it:
        # it keeps the last reading.
        _pending(db_url, 2)
        with other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (GAUGE_LOCK_KEY, P))
            began = time.monotonic()
            g = b.gauges(fresh_seconds=0)
            assert time.monotonic() - began < 5  # not blocked on the lock
        assert g is not None and g.lag == 3 and read_by() == first
        g = b.gauges(fresh_seconds=0)
        assert g is not None and g.lag == 5
        now = read_by()
        assert now is not None and now["read_by"] == "b"


def test_every_worker_exports_the_shared_reading(db_url: str) -> None:
    _pending(db_url, 4)
    a = make_relay(db_url, worker_id="a")
    b = make_relay(db_url, worker_id="b")
    try:
        a.relay.refresh_gauges(force=True)
        b.relay.refresh_gauges(force=True)
        assert a.metric("outbox_lag_events") == b.metric("outbox_lag_events") == 4
    finally:
        a.close()
        b.close()


def test_a_missing_gauge_table_is_logged_once_not_per_second(db_url: str) -> None:
    h = make_relay(db_url)
    try:
        with connect(db_url) as conn:
            conn.execute("ALTER TABLE outbox_gauges RENAME TO outbox_gauges_gone")
        for _ in range(5):
            h.relay.refresh_gauges(force=True)
        assert [x["event"] for x in h.logs()].count("outbox.gauges_failed") == 1
    finally:
        h.close()
