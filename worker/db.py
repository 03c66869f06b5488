"""Postgres access for the worker: the SQL of `sql/*.sql`, loaded once, behind small functions.

Every write after the claim is ownership-checked in SQL (see the header of queries.sql), so the
functions here return which ids were really changed; the caller counts the rest as
owner-mismatch skips. The connection runs in autocommit: each statement is its own
transaction, so a claim's row locks last exactly as long as the claim statement.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# Two workers starting at once would race on CREATE ... IF NOT EXISTS (a unique violation in
# pg_type); one advisory lock serialises schema creation across every process.
_SCHEMA_LOCK_KEY = 0x0DB0_0B0C
# First key of the two-key advisory locks (the second is a hash of the projection / entry):
# the gauge reader's and chronicle's entry locks. Two-key locks never collide with one-key ones.
GAUGE_LOCK_KEY = 0x0DB0_0B0D
CHRONICLE_ENTRY_LOCK_KEY = 0x0DB0_0B0E
GAUGE_COUNT_CAP = 2_000
"""`outbox_lag_events` and `outbox_stuck_processing_events` are exact up to this many rows and
saturate at it beyond ("2,000 or more"): counting further would make the gauge query grow with
the backlog (2,000 entries keep a reading under 2 ms at a million pending rows; 5,000 did
not). The drills' checks read the stuck gauge, which stays far below it."""


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
    conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=5)
    # No server-side prepared statements: after a few runs Postgres would switch a prepared
    # settle to a generic plan, which cannot see the size of the id arrays and, at 500 ids,
    # chose a plan five times slower per row than the one planned for the actual arrays.
    # Planning each batch statement costs a fraction of a millisecond. (It also keeps the
    # worker usable behind a transaction-pooling pgbouncer.)
    conn.prepare_threshold = None
    return conn


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables and indexes if they are missing; safe to run from many processes."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute(schema_sql())  # type: ignore[arg-type]


@dataclass(slots=True)
class OutboxRow:
    """One claimed outbox row, as this worker saw it at claim time (treated as read-only).

    Not `frozen`: a frozen dataclass sets each field through object.__setattr__, and a claim
    builds hundreds of these per batch. The first fields are the claim's columns, in order.
    """

    id: uuid.UUID
    seq: int
    op: str
    entity_id: uuid.UUID
    raw_payload: str | None
    """The payload's JSON text as Postgres wrote it (sent to the engine as it is)."""
    correlation_id: str | None
    attempts: int
    prev_owner: str | None
    prev_lease_until: datetime | None
    prev_claim_batch_id: uuid.UUID | None
    exhausted: bool = False
    """The claim failed this row: it had used every attempt and its last claim was never settled."""
    superseded: bool = False
    """A newer delete of the same entity is already done (decided by the claim, in SQL)."""
    payload_error: str | None = None
    """Why the payload cannot be decoded (nested too deeply), else None."""
    id_text: str = ""
    entity_text: str = ""
    """The two ids as text, formatted once: every log line and `_bulk` action needs them."""

    @property
    def payload(self) -> Any:
        """The decoded payload (None when there is none or it cannot be decoded)."""
        if self.raw_payload is None or self.payload_error is not None:
            return None
        return json.loads(self.raw_payload)

    @property
    def payload_is_object(self) -> bool:
        # jsonb's text form of an object always starts with "{" (no leading blank).
        return self.raw_payload is not None and self.raw_payload.startswith("{")

    @property
    def reclaimed(self) -> bool:
        return self.prev_owner is not None


@dataclass(frozen=True, slots=True)
class Claim:
    claim_batch_id: uuid.UUID
    rows: tuple[OutboxRow, ...]
    """The rows this worker now holds under a lease, in seq order."""
    started: float = 0.0
    """time.monotonic() just before the claim statement. The lease ends `lease_seconds` after
    the statement ran in Postgres, so deadlines counted from here err on the safe side without
    any clock sync between this host and the database."""
    lease_seconds: float = 0.0
    exhausted: tuple[OutboxRow, ...] = ()
    """Rows the claim moved to `failed` instead of claiming them (see claim_batch)."""

    @property
    def reclaimed(self) -> tuple[OutboxRow, ...]:
        return tuple(r for r in (*self.rows, *self.exhausted) if r.reclaimed)


@dataclass(frozen=True, slots=True)
class Gauges:
    lag: int
    oldest_age: float
    stuck: int


# Python's json gives up near 1,000 levels of nesting; fewer brackets than this in all cannot
# nest that deep, so most payloads are never decoded here at all.
_DECODE_CHECK_BRACKETS = 500


def payload_problem(text: str | None) -> str | None:
    """Why the payload text cannot be decoded, or None when it can."""
    if text is None or text.count("{") + text.count("[") < _DECODE_CHECK_BRACKETS:
        return None
    try:
        json.loads(text)
    except RecursionError:
        # The engine's own mapping limit is far lower (`index.mapping.depth.limit`, 20); before
        # this check the claim itself raised (psycopg decoded the jsonb), killing every worker
        # that took the row and stranding its batch-mates.
        return f"payload is nested too deeply to decode ({len(text)} bytes of JSON)"
    except ValueError as exc:  # jsonb is always valid JSON; this is defence in depth
        return f"payload is not valid JSON: {exc}"
    return None


def _rows(cur: psycopg.Cursor[tuple[Any, ...]]) -> tuple[list[OutboxRow], list[OutboxRow]]:
    """(claimed rows, rows the claim failed), each in seq order."""
    claimed: list[OutboxRow] = []
    exhausted: list[OutboxRow] = []
    for r in cur.fetchall():
        row = OutboxRow(*r)
        row.payload_error = payload_problem(row.raw_payload)
        row.id_text, row.entity_text = str(row.id), str(row.entity_id)
        (exhausted if row.exhausted else claimed).append(row)
    claimed.sort(key=lambda r: r.seq)
    exhausted.sort(key=lambda r: r.seq)
    return claimed, exhausted


class OutboxStore:
    """The worker's view of the outbox table for one projection and one worker id."""

    def __init__(
        self, conn: psycopg.Connection[dict[str, Any]], *, projection: str, worker_id: str, max_attempts: int = 10
    ) -> None:
        self.conn = conn
        self.projection = projection
        self.worker_id = worker_id
        self.max_attempts = max_attempts

    def claim(self, limit: int, lease_seconds: float) -> Claim:
        batch = uuid.uuid4()
        started = time.monotonic()
        cur = self.conn.cursor(row_factory=tuple_row).execute(
            queries()["claim_batch"],  # type: ignore[arg-type]
            {
                "projection": self.projection,
                "limit": limit,
                "worker_id": self.worker_id,
                "claim_batch_id": batch,
                "lease_seconds": lease_seconds,
                "max_attempts": self.max_attempts,
            },
        )
        claimed, exhausted = _rows(cur)
        return Claim(batch, tuple(claimed), started, lease_seconds, tuple(exhausted))

    def select_due_unlocked(self, limit: int) -> list[uuid.UUID]:
        cur = self.conn.execute(
            queries()["select_due_unlocked"],  # type: ignore[arg-type]
            {"projection": self.projection, "limit": limit},
        )
        return [r["id"] for r in cur.fetchall()]

    def claim_ids_unchecked(self, ids: Sequence[uuid.UUID], lease_seconds: float) -> Claim:
        batch = uuid.uuid4()
        started = time.monotonic()
        cur = self.conn.cursor(row_factory=tuple_row).execute(
            queries()["claim_ids_unchecked"],  # type: ignore[arg-type]
            {"ids": list(ids), "worker_id": self.worker_id, "claim_batch_id": batch, "lease_seconds": lease_seconds},
        )
        claimed, _ = _rows(cur)
        return Claim(batch, tuple(claimed), started, lease_seconds)

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

    def gauges(self, fresh_seconds: float = 1.0, cap: int = GAUGE_COUNT_CAP) -> Gauges | None:
        """The outbox gauges, read by at most one worker per projection at a time.

        Returns the shared reading when another worker made one less than `fresh_seconds` ago,
        otherwise tries to read the outbox itself (advisory lock, never waited for). None when
        another worker is reading right now and no reading exists yet: keep the last values.
        """
        q = queries()
        params = {"projection": self.projection}
        cached = self.conn.execute(q["gauges_cached"], params).fetchone()  # type: ignore[arg-type]
        if cached is not None and float(cached["staleness"]) < fresh_seconds:
            return Gauges(int(cached["lag"]), float(cached["oldest_age"]), int(cached["stuck"]))
        row = self.conn.execute(
            q["gauges_read"],  # type: ignore[arg-type]
            {**params, "lock_key": GAUGE_LOCK_KEY, "cap": cap, "fresh": fresh_seconds, "worker_id": self.worker_id},
        ).fetchone()
        if row is None:
            row = cached
        if row is None:
            return None
        return Gauges(int(row["lag"]), float(row["oldest_age"]), int(row["stuck"]))


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
