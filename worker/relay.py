"""The relay loop: claim a batch, apply it, settle every row, repeat until told to stop.

Lifecycle (built on one stop event, like procrastinate's worker):
- SIGTERM / SIGINT set the stop event. No new claim is made; the one request in flight is
  finished (it is bounded by the request timeout) and its rows are settled; every row claimed
  but not sent (the rest of a single-document batch, a prefetched claim, a batch waiting in the
  slow-processing knob) is released, so a clean stop never leaves rows `processing` and ends
  within the request timeout plus the time of a settle.
- Settling is ownership-checked in SQL: a row this worker no longer owns (its lease ended, and
  maybe another worker reclaimed it) is skipped and counted, never completed.

Pipeline (bulk mode, `run()`): the `_bulk` request of batch N runs in a sender thread while this
thread settles batch N-1 and claims batch N+1, so the database work overlaps the round trip to
the engine instead of adding to it. Requests stay sequential per worker (batch N+1 is sent only
after N's answer), every settle is still ownership-checked, and a row is settled only after its
own request answered: the guarantees are those of the serial loop. `process()` is the serial
form of the same steps, for tests and single-document mode.

Latest effect per entity. External versions make the engine reject an older write while it
holds a newer document or the tombstone of a newer delete; but the engine forgets a delete
`index.gc_deletes` (OUTBOX_ES_TOMBSTONE_SECONDS, G) after it was applied, and an older upsert
landing later would bring the document back. Three rules close that, with lease L:
1. the claim marks a row `superseded` when a newer delete of its entity is already done; it is
   settled as a noop without calling the engine (decided in Postgres, queries.sql);
2. a settle only counts while its lease holds (queries.sql), so the delivery of a delete that
   got settled landed at most L before its settle;
3. a write is sent only if it can land within W = min(L, G - L) (minus a margin) of its claim
   (`write_window`, enforced per request by the projection through `deadline`).
If an older upsert U is not superseded at its claim (time c), the newer delete D settles after
c, so by rule 2 its settled delivery landed after c - L; by rule 3 U lands before c + W; so U
lands less than W + L <= G after that delivery, while the engine still holds its tombstone (and
re-deliveries of a delete renew it, see projections/search.py): U is rejected (409). If U lands
first, D's delivery deletes it. Either way the index ends with D's effect. What no client-side
rule can bound is a worker process frozen in the middle of writing one request body for more
than the margin; the margin covers scheduling hiccups, not a SIGSTOP inside a syscall.

Telemetry follows CONTRACT.md: `outbox.claim_batch` per claim, `projection.process_batch` per
batch with the aggregated result written once, `outbox.process` per event in single-document
mode, `outbox.reclaim` when expired leases are taken back; one JSON log line per event, written
while the span it describes is current (in bulk mode buffered and written once per batch).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from worker.classify import Outcome, classify_exception, failure_class, superseded
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
from worker.outage import DB_SUMMARY_SECONDS, DbOutage
from worker.projections.base import Projection
from worker.retry import RetryPolicy
from worker.settings import DEFAULT_TOMBSTONE_SECONDS
from worker.telemetry.logs import JsonLogger
from worker.telemetry.metrics import WorkerMetrics
from worker.telemetry.schema import CURRENT, SpanSchema

GAUGE_REFRESH_SECONDS: Final = 1.0
WINDOW_MARGIN_SECONDS: Final = 1.0
"""Taken off the write window for scheduling hiccups; at most a tenth of the lease."""


def write_window(lease_seconds: float, tombstone_seconds: float) -> float:
    """Seconds after its claim within which a row's write must land (rule 3 above)."""
    margin = min(WINDOW_MARGIN_SECONDS, 0.1 * lease_seconds)
    return max(0.0, min(lease_seconds, tombstone_seconds - lease_seconds) - margin)


@dataclass(frozen=True, slots=True)
class Settled:
    """What finally happened to one row in this attempt."""

    row: OutboxRow
    outcome: Outcome
    final: str  # ok | noop | retry | failed | owner_mismatch | released
    delay: float = 0.0


def aggregate(settled: Sequence[Settled]) -> tuple[str, str | None, Counter[str]]:
    """The batch's one result, its dominant reason and the counts, from every row's fate."""
    counts: Counter[str] = Counter(s.final for s in settled)
    good = counts["ok"] + counts["noop"] + counts["owner_mismatch"] + counts["released"]
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


@dataclass
class _Batch:
    """One claimed batch on its way through the pipeline."""

    claim: Claim
    span: Span
    started: float
    deadline: float
    send: list[OutboxRow] = field(default_factory=list)
    decided: dict[uuid.UUID, Outcome] = field(default_factory=dict)
    """Rows settled without calling the projection (superseded)."""


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
        tombstone_seconds: float = DEFAULT_TOMBSTONE_SECONDS,
        break_claim_sleep: float | None = None,
        process_sleep: float | None = None,
        stop: threading.Event | None = None,
        reconnect: Callable[[], None] | None = None,
        pipeline: bool = True,
        schema: SpanSchema = CURRENT,
        batch_result_early: bool = False,
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
        self.window = write_window(lease_seconds, tombstone_seconds)
        self.break_claim_sleep = break_claim_sleep
        self.process_sleep = process_sleep
        self.stop = stop or threading.Event()
        self.reconnect = reconnect
        self.pipeline = pipeline
        self.schema = schema
        self.batch_result_early = batch_result_early
        self.outage = DbOutage(log, projection.name, poll_interval)
        self._gauges_at = 0.0
        self._gauge_error_at = -DB_SUMMARY_SECONDS
        self._held: dict[uuid.UUID, int] = {}

    # ---- loop -------------------------------------------------------------------------------

    def run(self, *, max_batches: int | None = None) -> int:
        """Claim and process until stopped; returns the number of non-empty batches."""
        try:
            if self.projection.batched and self.pipeline:
                return self._run_pipelined(max_batches)
            return self._run_serial(max_batches)
        finally:
            self.refresh_gauges(force=True)

    def _run_serial(self, max_batches: int | None) -> int:
        batches = 0
        while not self.stop.is_set():
            self.refresh_gauges()
            claim = self._try_claim()
            if claim is None or not claim.rows:
                self.stop.wait(self._idle_delay())
                continue
            self.process(claim)
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break
        return batches

    def _run_pipelined(self, max_batches: int | None) -> int:
        batches = 0
        sent: tuple[_Batch, list[Outcome | None]] | None = None  # answered, not yet settled
        nxt: Claim | None = None  # claimed while the previous request was in flight
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-send") as sender:
            while True:
                stopping = self.stop.is_set() or (max_batches is not None and batches >= max_batches)
                cur: _Batch | None = None
                fut: Future[list[Outcome | None]] | None = None
                if not stopping:
                    claim = nxt if nxt is not None else self._try_claim()
                    nxt = None
                    if claim is not None and claim.rows:
                        batches += 1
                        cur = self._begin(claim)
                        if self._slow_processing_knob(cur) is not None:
                            cur = None
                        elif cur.send:
                            fut = sender.submit(self._send, cur)
                elif nxt is not None:
                    self._release_claim(nxt, "stopping")
                    nxt = None
                # While `cur` is in flight: settle the previous batch, claim the next one.
                if sent is not None:
                    self._finish(*sent)
                    sent = None
                if cur is not None and not self.stop.is_set() and (max_batches is None or batches < max_batches):
                    nxt = self._try_claim()
                self.refresh_gauges()
                if cur is not None:
                    sent = (cur, fut.result() if fut is not None else [])
                    continue
                if stopping:
                    return batches
                self.stop.wait(self._idle_delay())

    def _idle_delay(self) -> float:
        return self.outage.delay() if self.outage.down else self.poll_interval

    def _try_claim(self) -> Claim | None:
        """A claim, or None when Postgres failed (recorded, and reconnected if it broke)."""
        try:
            claim = self.claim()
        except psycopg.Error as exc:
            self.outage.failed("claim", exc)
            self._reconnect_if_broken()
            return None
        self.outage.ok()
        return claim

    def _reconnect_if_broken(self) -> None:
        # A restarted or unreachable Postgres closes the connection for good: open a new one
        # rather than fail every claim until the worker is restarted.
        if self.reconnect is None or not self.store.conn.closed:
            return
        try:
            self.reconnect()
        except psycopg.Error as exc:
            self.outage.failed("reconnect", exc, attempt=False)

    def refresh_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._gauges_at < GAUGE_REFRESH_SECONDS:
            return
        self._gauges_at = now
        try:
            g = self.store.gauges(fresh_seconds=GAUGE_REFRESH_SECONDS)
        except psycopg.Error as exc:
            # Postgres being unreachable is told by DbOutage; another failure here is logged
            # once per summary interval so that it cannot flood the log either.
            if isinstance(exc, psycopg.OperationalError) or self.store.conn.closed:
                self.outage.failed("gauges", exc, attempt=False)
            elif now - self._gauge_error_at >= DB_SUMMARY_SECONDS:
                self._gauge_error_at = now
                self.log.warning("outbox.gauges_failed", f"could not read outbox gauges: {exc}", reason="db_error", error_type=type(exc).__name__)
            return
        if g is not None:
            self.metrics.set_gauges(g.lag, g.oldest_age, g.stuck)

    def _hold(self, batch: uuid.UUID, n: int) -> None:
        if n:
            self._held[batch] = n
        else:
            self._held.pop(batch, None)
        self.metrics.set_inflight(sum(self._held.values()))

    # ---- claim ------------------------------------------------------------------------------

    def claim(self) -> Claim:
        with self.tracer.start_as_current_span(SPAN_CLAIM) as span:
            span.set_attributes(
                self.schema.attributes({
                    "projection": self.projection.name,
                    "batch_size": self.batch_size,
                    ATTR_WORKER_ID: self.worker_id,
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                })
            )
            started = time.perf_counter()
            if self.break_claim_sleep is not None:
                claim = self._broken_claim(self.break_claim_sleep)
            else:
                claim = self.store.claim(self.batch_size, self.lease_seconds)
            self.metrics.observe_claim(time.perf_counter() - started)
            span.set_attributes(self.schema.attributes({ATTR_CLAIM_BATCH_ID: str(claim.claim_batch_id), "claimed_count": len(claim.rows)}))
            if claim.rows:
                self._hold(claim.claim_batch_id, len(claim.rows))
                self.log.info(
                    "outbox.claimed",
                    f"claimed {len(claim.rows)} event(s)",
                    projection=self.projection.name,
                    batch_size=self.batch_size,
                    claimed_count=len(claim.rows),
                    claim_batch_id=str(claim.claim_batch_id),
                    outbox_event_ids=[r.id_text for r in claim.rows],
                )
            if claim.reclaimed:
                self._record_reclaim(claim)
            if claim.exhausted:
                self._record_exhausted(claim)
            return claim

    def _broken_claim(self, sleep: float) -> Claim:
        # Deliberately racy (drill E): look without locking, wait, then write our name over
        # whatever claim happened in between.
        ids = self.store.select_due_unlocked(self.batch_size)
        if not ids:
            return Claim(uuid.uuid4(), (), time.monotonic(), self.lease_seconds)
        self.stop.wait(sleep)
        return self.store.claim_ids_unchecked(ids, self.lease_seconds)

    def _record_reclaim(self, claim: Claim) -> None:
        rows = claim.reclaimed
        with self.tracer.start_as_current_span(SPAN_RECLAIM) as span:
            span.set_attributes(
                self.schema.attributes({
                    "projection": self.projection.name,
                    "reclaimed_count": len(rows),
                    ATTR_WORKER_ID: self.worker_id,
                    ATTR_CLAIM_BATCH_ID: str(claim.claim_batch_id),
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                })
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
                    outbox_event_ids=[r.id_text for r in owned],
                )

    def _record_exhausted(self, claim: Claim) -> None:
        """Rows the claim failed: every attempt used, and the last claim never settled."""
        for row in claim.exhausted:
            self.metrics.count_failed(row.op, "lease_lost")
            self.metrics.count_terminal(row.op, "lease_lost")
            self.log.error(
                "outbox.failed",
                f"Outbox {row.op} failed terminally (lease_lost, max attempts reached): claimed {row.attempts} time(s) "
                "and no claim was settled; each worker died or stalled past its lease",
                result="failed",
                reason="lease_lost",
                projection=self.projection.name,
                op=row.op,
                attempt=row.attempts,
                outbox_event_id=row.id_text,
                entity_id=row.entity_text,
                claim_batch_id=str(claim.claim_batch_id),
                correlation_id=row.correlation_id,
                reclaimed_from=row.prev_owner,
            )

    # ---- process ----------------------------------------------------------------------------

    def process(self, claim: Claim) -> list[Settled]:
        """Apply and settle one claimed batch, serially (the pipeline's steps in a row)."""
        if not claim.rows:
            return []
        if not self.projection.batched:
            return self._process_singles(claim)
        batch = self._begin(claim)
        released = self._slow_processing_knob(batch)
        if released is not None:
            return released
        return self._finish(batch, self._send(batch) if batch.send else [])

    def _batch_span(self, claim: Claim) -> Span:
        rows = claim.rows
        ops = {r.op for r in rows}
        span = self.tracer.start_span(SPAN_BATCH)
        span.set_attributes(
            self.schema.attributes({
                ATTR_CLAIM_BATCH_ID: str(claim.claim_batch_id),
                "projection": self.projection.name,
                "op": ops.pop() if len(ops) == 1 else "mixed",
                "batch_size": len(rows),
                "attempt": max(r.attempts for r in rows),
                ATTR_WORKER_ID: self.worker_id,
                ATTR_OBS_SCHEMA: OBS_SCHEMA,
            })
        )
        if self.batch_result_early:
            # OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY, the bug of runbook manual-test/1 on purpose:
            # the result is decided before any row was sent, and `_end_span` leaves it alone.
            span.set_attributes({"result": "ok", "ok_count": len(rows), "retry_count": 0, "failed_count": 0, "noop_count": 0})
        return span

    def _begin(self, claim: Claim) -> _Batch:
        """Open the batch span and split the rows into decided (superseded) and to send."""
        batch = _Batch(claim, self._batch_span(claim), time.perf_counter(), claim.started + self.window)
        for row in claim.rows:
            if row.superseded:
                batch.decided[row.id] = superseded()
            else:
                batch.send.append(row)
        return batch

    def _slow_processing_knob(self, batch: _Batch) -> list[Settled] | None:
        """OUTBOX_EXPERIMENT_PROCESS_SLEEP: wait holding the lease; released if stopped meanwhile."""
        if not self.process_sleep or not self.stop.wait(self.process_sleep):
            return None
        with trace.use_span(batch.span, end_on_exit=False):
            settled = self._release(batch.claim.claim_batch_id, list(batch.claim.rows), "stopping")
            self._end_span(batch, settled)
        return settled

    def _send(self, batch: _Batch) -> list[Outcome | None]:
        """The projection's request(s) for a batch; in the sender thread when pipelined."""
        try:
            return self.projection.apply_batch(batch.send, deadline=batch.deadline, stop=self.stop)
        except Exception as exc:  # noqa: BLE001 - one broken batch must not end the worker
            # A bug or an unforeseen error in a projection: every row of the batch is retried
            # with the error's reason, and after the attempt limit fails like any other.
            outcome = classify_exception(exc)
            return [outcome] * len(batch.send)

    def _finish(self, batch: _Batch, sent: Sequence[Outcome | None]) -> list[Settled]:
        """Settle every row of an answered batch, account for it and close its span."""
        claim = batch.claim
        with trace.use_span(batch.span, end_on_exit=False), self.log.buffered():
            outcomes = dict(batch.decided)
            unsent: list[OutboxRow] = []
            for row, outcome in zip(batch.send, sent, strict=False):
                if outcome is None:
                    unsent.append(row)
                else:
                    outcomes[row.id] = outcome
            unsent.extend(batch.send[len(sent):])
            pairs = [(row, outcomes[row.id]) for row in claim.rows if row.id in outcomes]
            settled = self.settle(claim.claim_batch_id, pairs)
            if unsent:
                settled.extend(self._release(claim.claim_batch_id, unsent, "stopping" if self.stop.is_set() else "write_window"))
            self._end_span(batch, settled)
        return settled

    def _end_span(self, batch: _Batch, settled: list[Settled]) -> None:
        # Result, reason and counts are written once, here, from every row's fate; a failed
        # batch is an ERROR span (runbook manual-test/1).
        span, claim = batch.span, batch.claim
        result, reason, counts = aggregate(settled)
        if not self.batch_result_early:
            self._write_result(span, result, reason, counts)
        # else: the knob's bug, on purpose: the result written when the batch started stays.
        self.metrics.observe_process(time.perf_counter() - batch.started)
        self._hold(claim.claim_batch_id, 0)
        if self.projection.batched and settled:
            bad = [s for s in settled if s.final in ("failed", "retry")]
            with trace.use_span(span, end_on_exit=False):
                self.log.log(
                    "warning" if bad else "info",
                    "projection.batch_processed",
                    f"batch {result}: {counts['ok']} ok, {counts['noop']} noop, {counts['retry']} retry, "
                    f"{counts['failed']} failed",
                    projection=self.projection.name,
                    batch_size=len(claim.rows),
                    result=result,
                    reason=reason,
                    claim_batch_id=str(claim.claim_batch_id),
                    failed_outbox_event_ids=[s.row.id_text for s in bad] or None,
                    failed_entity_ids=[s.row.entity_text for s in bad] or None,
                )
        span.end()

    @staticmethod
    def _write_result(span: Span, result: str, reason: str | None, counts: Counter[str]) -> None:
        span.set_attributes(
            {
                "result": result,
                "ok_count": counts["ok"],
                "retry_count": counts["retry"],
                "failed_count": counts["failed"],
                "noop_count": counts["noop"] + counts["owner_mismatch"],
                "owner_mismatch_count": counts["owner_mismatch"],
                "released_count": counts["released"],
                "success_count": counts["ok"] + counts["noop"],
                "failure_count": counts["failed"] + counts["retry"],
            }
        )
        if reason:
            span.set_attribute("reason", reason)
        if result == "failed":
            span.set_status(Status(StatusCode.ERROR, f"batch failed: {reason}"))

    def _release(self, batch: uuid.UUID, rows: Sequence[OutboxRow], why: str) -> list[Settled]:
        """Give rows back unattempted; a row we no longer own counts as an owner mismatch."""
        if not rows:
            return []
        try:
            released = self.store.release(batch, [r.id for r in rows])
        except psycopg.Error as exc:
            # Still ours under the lease: another worker takes them back once it ends. Not an
            # owner mismatch, and not counted: the attempt simply never happened.
            self.log.error("outbox.release_failed", f"could not release {len(rows)} row(s): {exc}", reason="db_error", error_type=type(exc).__name__, claim_batch_id=str(batch))
            return [Settled(row, Outcome("noop", "lease_lost"), "released") for row in rows]
        text = "stopping" if why == "stopping" else "their lease would end before a write could land"
        self.log.info(
            "outbox.released",
            f"released {len(released)} claimed event(s) unsent ({text})",
            projection=self.projection.name,
            claim_batch_id=str(batch),
            why=why,
            released_count=len(released),
            outbox_event_ids=[r.id_text for r in rows if r.id in released],
        )
        out: list[Settled] = []
        for row in rows:
            if row.id in released:
                out.append(Settled(row, Outcome("noop", "lease_lost"), "released"))
            else:
                s = Settled(row, Outcome("noop", "lease_lost"), "owner_mismatch")
                self._account(batch, s)
                out.append(s)
        self._count(out)
        return out

    def _release_claim(self, claim: Claim, why: str) -> None:
        if claim.rows:
            self._release(claim.claim_batch_id, list(claim.rows), why)
        self._hold(claim.claim_batch_id, 0)

    def _process_singles(self, claim: Claim) -> list[Settled]:
        batch = claim.claim_batch_id
        settled: list[Settled] = []
        started = time.perf_counter()
        deadline = claim.started + self.window
        span = self._batch_span(claim)
        b = _Batch(claim, span, started, deadline)
        released = self._slow_processing_knob(b)
        if released is not None:
            return released
        with trace.use_span(span, end_on_exit=False):
            rows = list(claim.rows)
            for i, row in enumerate(rows):
                if self.stop.is_set():
                    settled.extend(self._release(batch, rows[i:], "stopping"))
                    break
                one = self._process_one(batch, row, deadline)
                if one is None:
                    # The window is over for this row, so for the rest of the batch too.
                    settled.extend(self._release(batch, rows[i:], "write_window"))
                    break
                settled.append(one)
            self._end_span(b, settled)
        return settled

    def _process_one(self, batch: uuid.UUID, row: OutboxRow, deadline: float) -> Settled | None:
        with self.tracer.start_as_current_span(SPAN_EVENT) as span:
            span.set_attributes(
                self.schema.attributes({
                    ATTR_OUTBOX_EVENT_ID: row.id_text,
                    ATTR_ENTITY_ID: row.entity_text,
                    ATTR_CLAIM_BATCH_ID: str(batch),
                    "projection": self.projection.name,
                    "op": row.op,
                    "attempt": row.attempts,
                    ATTR_OBS_SCHEMA: OBS_SCHEMA,
                    **self.projection.event_attributes(row),
                })
            )
            if row.correlation_id:
                span.set_attribute("correlation_id", row.correlation_id)
            if row.superseded:
                outcome = superseded()
            else:
                try:
                    applied = self.projection.apply_one(row, deadline=deadline)
                except Exception as exc:  # noqa: BLE001 - one broken row must not end the worker
                    applied = classify_exception(exc)
                if applied is None:
                    span.set_attribute("result", "noop")
                    span.set_attribute("noop", True)
                    span.set_attribute("reason", "lease_lost")
                    return None
                outcome = applied
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
            return s

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
        self._count(result)
        return result

    def _count(self, settled: Sequence[Settled]) -> None:
        """The metrics of settled rows, one increment per label set and batch (not per row)."""
        keys: Counter[tuple[str, str, str]] = Counter()
        for s in settled:
            if s.final in ("ok", "noop", "retry", "failed", "owner_mismatch"):
                keys[(s.final, s.row.op, s.outcome.reason or "unknown")] += 1
        m = self.metrics
        for (final, op, reason), n in keys.items():
            if final == "owner_mismatch":
                m.count_owner_mismatch(n)
            elif final in ("ok", "noop"):
                m.count_processed(op, final, n)
                if final == "noop" and reason in ("es_404", "es_409", "superseded"):
                    m.count_noop(op, reason, n)
            elif final == "retry":
                m.count_failed(op, reason, n)
                m.count_retry(op, reason, n)
            else:
                m.count_failed(op, reason, n)
                m.count_terminal(op, reason, n)

    def _account(self, batch: uuid.UUID, s: Settled) -> None:
        """The log line of one settled row (its metrics are counted by `_count`)."""
        row, outcome = s.row, s.outcome
        fields: dict[str, Any] = {
            "projection": self.projection.name,
            "op": row.op,
            "attempt": row.attempts,
            "outbox_event_id": row.id_text,
            "entity_id": row.entity_text,
            "claim_batch_id": str(batch),
            "correlation_id": row.correlation_id,
            "status_code": outcome.status_code,
        }
        extra = self.projection.event_attributes(row)
        if extra:
            fields.update(extra)
        if s.final == "owner_mismatch":
            self.log.warning(
                "outbox.owner_mismatch",
                f"skipped completing {row.id_text}: the lease ended or another worker owns it now (lease lost)",
                result="noop",
                reason="lease_lost",
                **fields,
            )
            return
        if s.final == "ok":
            self.log.info("outbox.processed", f"Outbox {row.op}: {row.entity_text} ok", result="ok", **fields)
        elif s.final == "noop":
            if outcome.reason == "es_404":
                what = "not found in ES (noop)"
            elif outcome.reason == "superseded":
                what = "superseded by a newer delete already applied (noop, engine not called)"
            else:
                what = "already applied (noop)"
            self.log.info(
                "outbox.idempotent_noop",
                f"Outbox {row.op}: doc {row.entity_text} {what}",
                result="noop",
                reason=outcome.reason,
                noop=True,
                error=outcome.error,
                **fields,
            )
        elif s.final == "retry":
            reason = outcome.reason or "unknown"
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

