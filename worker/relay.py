"""The relay loop: claim a batch, apply it, settle every row, repeat until told to stop.

Lifecycle (built on one stop event, like procrastinate's worker):
- SIGTERM / SIGINT set the stop event. A batch that is being applied is finished and settled;
  a batch claimed but not started (e.g. during the slow-processing knob) is released, so a
  clean stop never leaves rows `processing`.
- Settling is ownership-checked in SQL: a row this worker no longer owns (its lease expired and
  another worker reclaimed it) is skipped and counted, never completed.

Telemetry follows CONTRACT.md: `outbox.claim_batch` per claim, `projection.process_batch` per
batch with the aggregated result written once in `finally`, `outbox.process` per event in
single-document mode, `outbox.reclaim` when expired leases are taken back; one JSON log line
per event, written while the span it describes is current.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from worker.classify import Outcome, classify_exception, failure_class
from worker.contract import (
    ATTR_429_PREFIX,
    ATTR_CLAIM_BATCH_ID,
    ATTR_ENTITY_ID,
    ATTR_OBS_SCHEMA,
    ATTR_OUTBOX_EVENT_ID,
    ATTR_WORKER_ID,
    OBS_SCHEMA,
    SPAN_BATCH,
    SPAN_CLAIM,
    SPAN_EVENT,
    SPAN_RECLAIM,
)
from worker.db import Claim, OutboxRow, OutboxStore
from worker.projections.base import Projection
from worker.retry import RetryPolicy
from worker.telemetry.logs import JsonLogger
from worker.telemetry.metrics import WorkerMetrics

GAUGE_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Settled:
    """What finally happened to one row in this attempt."""

    row: OutboxRow
    outcome: Outcome
    final: str  # ok | noop | retry | failed | owner_mismatch
    delay: float = 0.0


def aggregate(settled: Sequence[Settled]) -> tuple[str, str | None, Counter[str]]:
    """The batch's one result, its dominant reason and the counts, from every row's fate."""
    counts: Counter[str] = Counter(s.final for s in settled)
    good = counts["ok"] + counts["noop"] + counts["owner_mismatch"]
    bad = counts["retry"] + counts["failed"]
    if not settled:
        result = "ok"
    elif bad == 0:
        result = "noop" if counts["ok"] == 0 else "ok"
    elif good > 0:
        result = "partial"
    elif counts["failed"] > 0:
        result = "failed"
    else:
        result = "retry"
    reasons = Counter(
        s.outcome.reason for s in settled if s.final in ("retry", "failed", "noop") and s.outcome.reason
    )
    if counts["owner_mismatch"]:
        reasons["lease_lost"] += counts["owner_mismatch"]
    reason = reasons.most_common(1)[0][0] if reasons and result != "ok" else None
    return result, reason, counts


class Relay:
    def __init__(
        self,
        *,
        store: OutboxStore,
        projection: Projection,
        metrics: WorkerMetrics,
        tracer: trace.Tracer,
        log: JsonLogger,
        policy: RetryPolicy,
        worker_id: str,
        batch_size: int,
        lease_seconds: float,
        poll_interval: float,
        break_claim_sleep: float | None = None,
        process_sleep: float | None = None,
        stop: threading.Event | None = None,
        reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.projection = projection
        self.metrics = metrics
        self.tracer = tracer
        self.log = log
        self.policy = policy
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.break_claim_sleep = break_claim_sleep
        self.process_sleep = process_sleep
        self.stop = stop or threading.Event()
        self.reconnect = reconnect
        self._gauges_at = 0.0

    # ---- loop -------------------------------------------------------------------------------

    def run(self, *, max_batches: int | None = None) -> int:
        """Claim and process until stopped; returns the number of non-empty batches."""
        batches = 0
        while not self.stop.is_set():
            self.refresh_gauges()
            try:
                claim = self.claim()
            except psycopg.Error as exc:
                self.log.error("outbox.claim_failed", f"claim failed: {exc}", reason="db_error", error=str(exc)[:300], error_type=type(exc).__name__, projection=self.projection.name)
                self.stop.wait(self.poll_interval)
                self._reconnect_if_broken()
                continue
            if not claim.rows:
                self.stop.wait(self.poll_interval)
                continue
            self.process(claim)
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break
        self.refresh_gauges(force=True)
        return batches

    def _reconnect_if_broken(self) -> None:
        # A restarted or unreachable Postgres closes the connection for good: open a new one
        # rather than fail every claim until the worker is restarted.
        if self.reconnect is None or not self.store.conn.closed:
            return
        try:
            self.reconnect()
            self.log.info("db.reconnected", "reconnected to Postgres", projection=self.projection.name)
        except psycopg.Error as exc:
            self.log.warning("db.reconnect_failed", f"cannot reconnect to Postgres yet: {exc}", reason="db_error", error_type=type(exc).__name__)

    def refresh_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._gauges_at < GAUGE_REFRESH_SECONDS:
            return
        self._gauges_at = now
        try:
            g = self.store.gauges()
        except psycopg.Error as exc:
            self.log.warning("outbox.gauges_failed", f"could not read outbox gauges: {exc}", reason="db_error", error_type=type(exc).__name__)
            return
        self.metrics.set_gauges(g.lag, g.oldest_age, g.stuck)

    # ---- claim ------------------------------------------------------------------------------

    def claim(self) -> Claim:
        with self.tracer.start_as_current_span(SPAN_CLAIM) as span:
            span.set_attributes(
                {
                    "projection": self.projection.name,
                    "batch_size": self.batch_size,
                    ATTR_WORKER_ID: self.worker_id,
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                }
            )
            started = time.perf_counter()
            if self.break_claim_sleep is not None:
                claim = self._broken_claim(self.break_claim_sleep)
            else:
                claim = self.store.claim(self.batch_size, self.lease_seconds)
            self.metrics.observe_claim(time.perf_counter() - started)
            span.set_attribute(ATTR_CLAIM_BATCH_ID, str(claim.claim_batch_id))
            span.set_attribute("claimed_count", len(claim.rows))
            if claim.rows:
                self.metrics.set_inflight(len(claim.rows))
                self.log.info(
                    "outbox.claimed",
                    f"claimed {len(claim.rows)} event(s)",
                    projection=self.projection.name,
                    batch_size=self.batch_size,
                    claimed_count=len(claim.rows),
                    claim_batch_id=str(claim.claim_batch_id),
                    outbox_event_ids=[str(r.id) for r in claim.rows],
                )
            if claim.reclaimed:
                self._record_reclaim(claim)
            return claim

    def _broken_claim(self, sleep: float) -> Claim:
        # Deliberately racy (drill E): look without locking, wait, then write our name over
        # whatever claim happened in between.
        ids = self.store.select_due_unlocked(self.batch_size)
        if not ids:
            return Claim(uuid.uuid4(), ())
        self.stop.wait(sleep)
        return self.store.claim_ids_unchecked(ids, self.lease_seconds)

    def _record_reclaim(self, claim: Claim) -> None:
        rows = claim.reclaimed
        with self.tracer.start_as_current_span(SPAN_RECLAIM) as span:
            span.set_attributes(
                {
                    "projection": self.projection.name,
                    "reclaimed_count": len(rows),
                    ATTR_WORKER_ID: self.worker_id,
                    ATTR_CLAIM_BATCH_ID: str(claim.claim_batch_id),
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                }
            )
            self.metrics.count_reclaimed(len(rows))
            by_owner: dict[str, list[OutboxRow]] = {}
            for row in rows:
                by_owner.setdefault(row.prev_owner or "?", []).append(row)
            for owner, owned in by_owner.items():
                ended = min(r.prev_lease_until for r in owned if r.prev_lease_until is not None)
                self.log.warning(
                    "outbox.reclaimed",
                    f"Reclaimed {len(owned)} stuck outbox event(s) from {owner}: lease ended at "
                    f"{ended.isoformat()} and the rows were still processing",
                    projection=self.projection.name,
                    reclaimed_count=len(owned),
                    reclaimed_by=self.worker_id,
                    reclaimed_from=owner,
                    lease_ended_at=ended.isoformat(),
                    why="lease_expired",
                    previous_claim_batch_id=str(owned[0].prev_claim_batch_id),
                    claim_batch_id=str(claim.claim_batch_id),
                    outbox_event_ids=[str(r.id) for r in owned],
                )

    # ---- process ----------------------------------------------------------------------------

    def process(self, claim: Claim) -> list[Settled]:
        rows = claim.rows
        ops = {r.op for r in rows}
        settled: list[Settled] = []
        started = time.perf_counter()
        with self.tracer.start_as_current_span(SPAN_BATCH) as span:
            span.set_attributes(
                {
                    ATTR_CLAIM_BATCH_ID: str(claim.claim_batch_id),
                    "projection": self.projection.name,
                    "op": ops.pop() if len(ops) == 1 else "mixed",
                    "batch_size": len(rows),
                    "attempt": max(r.attempts for r in rows),
                    ATTR_WORKER_ID: self.worker_id,
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                }
            )
            try:
                if self.process_sleep and self.stop.wait(self.process_sleep):
                    released = self.store.release(claim.claim_batch_id, [r.id for r in rows])
                    self.log.info(
                        "outbox.released",
                        f"stopping: released {len(released)} claimed event(s) unprocessed",
                        projection=self.projection.name,
                        claim_batch_id=str(claim.claim_batch_id),
                    )
                    return settled
                if self.projection.batched:
                    outcomes = self.projection.apply_batch(rows)
                    settled = self.settle(claim.claim_batch_id, list(zip(rows, outcomes, strict=True)))
                else:
                    for row in rows:
                        settled.extend(self._process_one(claim.claim_batch_id, row))
            finally:
                # Result, reason and counts are written once, here, from every row's fate; a
                # failed batch is an ERROR span (runbook manual-test/1).
                result, reason, counts = aggregate(settled)
                span.set_attributes(
                    {
                        "result": result,
                        "ok_count": counts["ok"],
                        "retry_count": counts["retry"],
                        "failed_count": counts["failed"],
                        "noop_count": counts["noop"] + counts["owner_mismatch"],
                        "owner_mismatch_count": counts["owner_mismatch"],
                        "success_count": counts["ok"] + counts["noop"],
                        "failure_count": counts["failed"] + counts["retry"],
                    }
                )
                if reason:
                    span.set_attribute("reason", reason)
                if result == "failed":
                    span.set_status(Status(StatusCode.ERROR, f"batch failed: {reason}"))
                self.metrics.observe_process(time.perf_counter() - started)
                self.metrics.set_inflight(0)
                if self.projection.batched and settled:
                    failed_ids = [str(s.row.id) for s in settled if s.final in ("failed", "retry")]
                    self.log.log(
                        "warning" if failed_ids else "info",
                        "projection.batch_processed",
                        f"batch {result}: {counts['ok']} ok, {counts['noop']} noop, {counts['retry']} retry, "
                        f"{counts['failed']} failed",
                        projection=self.projection.name,
                        batch_size=len(rows),
                        result=result,
                        reason=reason,
                        claim_batch_id=str(claim.claim_batch_id),
                        failed_outbox_event_ids=failed_ids or None,
                        failed_entity_ids=[str(s.row.entity_id) for s in settled if s.final in ("failed", "retry")] or None,
                    )
        return settled

    def _process_one(self, batch: uuid.UUID, row: OutboxRow) -> list[Settled]:
        with self.tracer.start_as_current_span(SPAN_EVENT) as span:
            span.set_attributes(
                {
                    ATTR_OUTBOX_EVENT_ID: str(row.id),
                    ATTR_ENTITY_ID: str(row.entity_id),
                    ATTR_CLAIM_BATCH_ID: str(batch),
                    "projection": self.projection.name,
                    "op": row.op,
                    "attempt": row.attempts,
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                    **self.projection.event_attributes(row),
                }
            )
            if row.correlation_id:
                span.set_attribute("correlation_id", row.correlation_id)
            outcome = self.projection.apply_one(row)
            if getattr(self.projection, "last_injected", False):
                span.set_attribute(ATTR_429_PREFIX + "injected", True)
            [s] = self.settle(batch, [(row, outcome)])
            span.set_attribute("result", "noop" if s.final == "owner_mismatch" else s.final)
            span.set_attribute("noop", s.final in ("noop", "owner_mismatch"))
            reason = "lease_lost" if s.final == "owner_mismatch" else outcome.reason
            if reason:
                span.set_attribute("reason", reason)
            if s.final in ("retry", "failed"):
                span.add_event(
                    "exception",
                    {"exception.type": outcome.error_type or "unknown", "exception.message": outcome.error or ""},
                )
                span.set_attribute("error.type", outcome.error_type or "unknown")
            if s.final == "failed":
                span.set_status(Status(StatusCode.ERROR, outcome.error or reason or "failed"))
            return [s]

    # ---- settle -----------------------------------------------------------------------------

    def settle(self, batch: uuid.UUID, pairs: Sequence[tuple[OutboxRow, Outcome]]) -> list[Settled]:
        """Write each row's fate (ownership-checked), then count and log what really happened."""
        done: list[tuple[uuid.UUID, str | None]] = []
        retries: list[tuple[uuid.UUID, float, str, str | None]] = []
        failures: list[tuple[uuid.UUID, str, str | None]] = []
        planned: dict[uuid.UUID, Settled] = {}
        for row, outcome in pairs:
            if outcome.result in ("ok", "noop"):
                done.append((row.id, outcome.reason))
                planned[row.id] = Settled(row, outcome, outcome.result)
                continue
            decision = self.policy.decide(outcome, row.attempts)
            reason = outcome.reason or "unknown"
            if decision.action == "retry":
                retries.append((row.id, decision.delay, reason, outcome.error))
                planned[row.id] = Settled(row, outcome, "retry", decision.delay)
            else:
                failures.append((row.id, reason, outcome.error))
                planned[row.id] = Settled(row, outcome, "failed")
        try:
            changed = self.store.complete(batch, done) | self.store.reschedule(batch, retries) | self.store.fail(batch, failures)
        except psycopg.Error as exc:
            # The rows stay `processing` under our lease; when it expires another claim takes
            # them back. Nothing is lost, the attempt is just not recorded.
            db = classify_exception(exc)
            self.log.error("outbox.settle_failed", f"could not record outcomes: {exc}", reason=db.reason, error=str(exc)[:300], error_type=type(exc).__name__, claim_batch_id=str(batch))
            return [Settled(p.row, db, "retry") for p in planned.values()]
        result: list[Settled] = []
        for row, _ in pairs:
            s = planned[row.id]
            if row.id not in changed:
                s = Settled(row, s.outcome, "owner_mismatch")
            self._account(batch, s)
            result.append(s)
        return result

    def _account(self, batch: uuid.UUID, s: Settled) -> None:
        row, outcome, m = s.row, s.outcome, self.metrics
        fields: dict[str, Any] = {
            "projection": self.projection.name,
            "op": row.op,
            "attempt": row.attempts,
            "outbox_event_id": str(row.id),
            "entity_id": str(row.entity_id),
            "claim_batch_id": str(batch),
            "correlation_id": row.correlation_id,
            "status_code": outcome.status_code,
            **self.projection.event_attributes(row),
        }
        if s.final == "owner_mismatch":
            m.count_owner_mismatch()
            self.log.warning(
                "outbox.owner_mismatch",
                f"skipped completing {row.id}: another worker owns it now (lease lost)",
                result="noop",
                reason="lease_lost",
                **fields,
            )
            return
        if s.final == "ok":
            m.count_processed(row.op, "ok")
            self.log.info("outbox.processed", f"Outbox {row.op}: {row.entity_id} ok", result="ok", **fields)
        elif s.final == "noop":
            m.count_processed(row.op, "noop")
            if outcome.reason in ("es_404", "es_409"):
                m.count_noop(row.op, outcome.reason)
            what = "not found in ES (noop)" if outcome.reason == "es_404" else "already applied (noop)"
            self.log.info(
                "outbox.idempotent_noop",
                f"Outbox {row.op}: doc {row.entity_id} {what}",
                result="noop",
                reason=outcome.reason,
                noop=True,
                error=outcome.error,
                **fields,
            )
        elif s.final == "retry":
            reason = outcome.reason or "unknown"
            m.count_failed(row.op, reason)
            m.count_retry(row.op, reason)
            self.log.warning(
                "outbox.retry_scheduled",
                f"Outbox {row.op} attempt {row.attempts} failed ({reason}); retry in {s.delay:.2f}s",
                result="retry",
                reason=reason,
                retry_in_seconds=round(s.delay, 3),
                error=outcome.error,
                error_type=outcome.error_type,
                **fields,
            )
        else:
            reason = outcome.reason or "unknown"
            m.count_failed(row.op, reason)
            m.count_terminal(row.op, reason)
            why = "deterministic failure" if not outcome.retryable else "max attempts reached"
            self.log.error(
                "outbox.failed",
                f"Outbox {row.op} failed terminally ({reason}, {why}): {outcome.error or ''}",
                result="failed",
                reason=reason,
                error=outcome.error,
                error_type=outcome.error_type,
                **fields,
            )


def bulk_recorder(metrics: WorkerMetrics) -> Any:
    """Callback for the search projection: one _bulk round trip's metrics."""

    def record(seconds: float, result: str, failed: list[Outcome]) -> None:
        metrics.observe_bulk(seconds, result)
        for o in failed:
            cls = failure_class(o.status_code) if o.status_code is not None else None
            if cls:
                metrics.count_bulk_item_failure(cls)

    return record

