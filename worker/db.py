"""Postgres access for the worker: the SQL of `sql/*.sql`, loaded once, behind small functions.

Every write after the claim is ownership-checked in SQL (see the header of queries.sql), so the
functions here return which ids were really changed; the caller counts the rest as
owner-mismatch skips. The connection runs in autocommit: each statement is its own
transaction, so a claim's row locks last exactly as long as the claim statement.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# Two workers starting at once would race on CREATE ... IF NOT EXISTS (a unique violation in
# pg_type); one advisory lock serialises schema creation across every process.
_SCHEMA_LOCK_KEY = 0x0DB0_0B0C


@cache
def queries() -> dict[str, str]:
    """The named blocks of queries.sql."""
    text = resources.files("worker.sql").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def schema_sql() -> str:
    return resources.files("worker.sql").joinpath("schema.sql").read_text(encoding="utf-8")


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=5)


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables and indexes if they are missing; safe to run from many processes."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute(schema_sql())  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed outbox row, as this worker saw it at claim time."""

    id: uuid.UUID
    seq: int
    projection: str
    op: str
    entity_id: uuid.UUID
    payload: Any
    correlation_id: str | None
    attempts: int
    created_at: datetime
    lease_until: datetime
    prev_owner: str | None
    prev_lease_until: datetime | None
    prev_claim_batch_id: uuid.UUID | None

    @property
    def reclaimed(self) -> bool:
        return self.prev_owner is not None


@dataclass(frozen=True, slots=True)
class Claim:
    claim_batch_id: uuid.UUID
    rows: tuple[OutboxRow, ...]

    @property
    def reclaimed(self) -> tuple[OutboxRow, ...]:
        return tuple(r for r in self.rows if r.reclaimed)


@dataclass(frozen=True, slots=True)
class Gauges:
    lag: int
    oldest_age: float
    stuck: int


def _rows(cur: psycopg.Cursor[dict[str, Any]]) -> tuple[OutboxRow, ...]:
    rows = [OutboxRow(**r) for r in cur.fetchall()]
    rows.sort(key=lambda r: r.seq)
    return tuple(rows)


class OutboxStore:
    """The worker's view of the outbox table for one projection and one worker id."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], *, projection: str, worker_id: str) -> None:
        self.conn = conn
        self.projection = projection
        self.worker_id = worker_id

    def claim(self, limit: int, lease_seconds: float) -> Claim:
        batch = uuid.uuid4()
        cur = self.conn.execute(
            queries()["claim_batch"],  # type: ignore[arg-type]
            {
                "projection": self.projection,
                "limit": limit,
                "worker_id": self.worker_id,
                "claim_batch_id": batch,
                "lease_seconds": lease_seconds,
            },
        )
        return Claim(batch, _rows(cur))

    def select_due_unlocked(self, limit: int) -> list[uuid.UUID]:
        cur = self.conn.execute(
            queries()["select_due_unlocked"],  # type: ignore[arg-type]
            {"projection": self.projection, "limit": limit},
        )
        return [r["id"] for r in cur.fetchall()]

    def claim_ids_unchecked(self, ids: Sequence[uuid.UUID], lease_seconds: float) -> Claim:
        batch = uuid.uuid4()
        cur = self.conn.execute(
            queries()["claim_ids_unchecked"],  # type: ignore[arg-type]
            {"ids": list(ids), "worker_id": self.worker_id, "claim_batch_id": batch, "lease_seconds": lease_seconds},
        )
        return Claim(batch, _rows(cur))

    def _owned(self, name: str, batch: uuid.UUID, **arrays: Any) -> set[uuid.UUID]:
        params = {"worker_id": self.worker_id, "claim_batch_id": batch, **arrays}
        cur = self.conn.execute(queries()[name], params)  # type: ignore[arg-type]
        return {r["id"] for r in cur.fetchall()}

    def complete(self, batch: uuid.UUID, done: Iterable[tuple[uuid.UUID, str | None]]) -> set[uuid.UUID]:
        """Mark rows done (reason: the noop reason, else None); returns the ids really changed."""
        items = list(done)
        if not items:
            return set()
        return self._owned("complete_owned", batch, ids=[i for i, _ in items], reasons=[r for _, r in items])

    def reschedule(self, batch: uuid.UUID, retries: Iterable[tuple[uuid.UUID, float, str, str | None]]) -> set[uuid.UUID]:
        items = list(retries)
        if not items:
            return set()
        return self._owned(
            "reschedule_owned",
            batch,
            ids=[i[0] for i in items],
            delays=[i[1] for i in items],
            reasons=[i[2] for i in items],
            errors=[i[3] for i in items],
        )

    def fail(self, batch: uuid.UUID, failures: Iterable[tuple[uuid.UUID, str, str | None]]) -> set[uuid.UUID]:
        items = list(failures)
        if not items:
            return set()
        return self._owned(
            "fail_owned", batch, ids=[i[0] for i in items], reasons=[i[1] for i in items], errors=[i[2] for i in items]
        )

    def release(self, batch: uuid.UUID, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        return self._owned("release_owned", batch, ids=list(ids))

    def gauges(self) -> Gauges:
        row = self.conn.execute(queries()["gauges"], {"projection": self.projection}).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return Gauges(lag=int(row["lag"]), oldest_age=float(row["oldest_age"]), stuck=int(row["stuck"]))


def insert_event(
    conn: psycopg.Connection[Any],
    *,
    projection: str,
    op: str,
    entity_id: uuid.UUID,
    payload: Any = None,
    correlation_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write one event the way a producer does: only the producer's columns, the rest default."""
    eid = event_id or uuid.uuid4()
    conn.execute(
        "INSERT INTO outbox (id, projection, op, entity_id, payload, correlation_id) VALUES (%s, %s, %s, %s, %s, %s)",
        (eid, projection, op, entity_id, Jsonb(payload if payload is not None else {}), correlation_id),
    )
    return eid
