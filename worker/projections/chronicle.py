"""`chronicle`: outbox rows -> `chronicle_entries` rows, under a projection rule version.

The two rule versions write different things on purpose, so a database probe can tell which
one produced an entry (drill H):
- v1: `summary` is the event's title; `details` holds the kind.
- v2: `summary` is "<kind>: <title>"; `details` also holds the body's keys and the occurrence
  time. An entry written by v2 therefore always differs from one written by v1.
The entry carries the outbox sequence of the event that wrote it, and an older sequence never
overwrites a newer one, so redelivery is a noop in effect. A delete leaves a tombstone with its
sequence (`chronicle_tombstones`), so an older upsert arriving after it (a retry, a stalled
worker) cannot bring the entry back; each write holds a per-entry advisory lock, so the check and
the write are one step. All of it is in Postgres, so no timing window applies here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from worker.classify import Outcome, classify_exception
from worker.db import CHRONICLE_ENTRY_LOCK_KEY, OutboxRow, queries


def render_entry(version: int, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if version == 1:
        return event["title"], {"kind": event["kind"], "rule": "v1"}
    body = event["body"] if isinstance(event["body"], dict) else {}
    return f"{event['kind']}: {event['title']}", {
        "kind": event["kind"],
        "rule": "v2",
        "body_keys": sorted(body),
        "occurred_at": event["occurred_at"].isoformat(),
    }


class ChronicleProjection:
    name = "chronicle"

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], *, version: int) -> None:
        self.conn = conn
        self.version = version

    @property
    def batched(self) -> bool:
        return False

    def event_attributes(self, row: OutboxRow) -> dict[str, Any]:
        return {"projection_version": self.version}

    def apply_one(self, row: OutboxRow, *, deadline: float | None = None) -> Outcome | None:
        try:
            with self.conn.transaction():
                self.conn.execute(queries()["chronicle_lock_entry"], {"lock_key": CHRONICLE_ENTRY_LOCK_KEY, "event_id": row.entity_id})  # type: ignore[arg-type]
                return self._apply(row)
        except psycopg.Error as exc:
            return classify_exception(exc)

    def _apply(self, row: OutboxRow) -> Outcome:
        q = queries()
        if row.op == "delete":
            self.conn.execute(q["chronicle_delete_entry"], {"event_id": row.entity_id, "source_seq": row.seq}).fetchone()  # type: ignore[arg-type]
            return Outcome("ok", None)
        event = self.conn.execute(q["chronicle_source"], {"id": row.entity_id}).fetchone()  # type: ignore[arg-type]
        if event is None:
            return Outcome("failed", "invalid_payload", error=f"chronicle event {row.entity_id} does not exist", error_type="MissingSource")
        summary, details = render_entry(self.version, event)
        written = self.conn.execute(
            q["chronicle_upsert_entry"],  # type: ignore[arg-type]
            {
                "event_id": event["id"],
                "entity_id": event["entity_id"],
                "projection_version": self.version,
                "summary": summary,
                "details": Jsonb(details),
                "source_seq": row.seq,
            },
        ).fetchone()
        if written is None:
            # A newer event already wrote this entry: nothing to do, and nothing lost.
            return Outcome("ok", None)
        return Outcome("ok", None)

    def apply_batch(
        self, rows: Sequence[OutboxRow], *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> list[Outcome | None]:
        return [None if stop is not None and stop.is_set() else self.apply_one(r) for r in rows]

    def close(self) -> None:
        """The connection belongs to the relay."""
