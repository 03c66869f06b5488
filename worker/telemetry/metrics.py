"""The worker's Prometheus metrics, exactly as CONTRACT.md names them.

On an injected CollectorRegistry (tests build a fresh one each), with `component="worker"` and
`env` on every series. Label values known up front are set to 0 at start so that a "before"
scrape already has the series and a rate over a fresh series is defined. Labels are bounded:
projection, op, result, reason and failure_class are closed enums; no id ever becomes a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.contract import FAILURE_CLASSES, OPS, REASONS

_COMMON = ("component", "env")
# Retryable reasons are the ones a retry counter can carry; noops are the idempotent reasons.
RETRYABLE_REASONS = ("es_connect", "es_timeout", "es_429", "es_5xx", "db_error", "lease_lost")
NOOP_REASONS = ("es_404", "es_409", "superseded")
_CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_PROCESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class WorkerMetrics:
    """All series of one worker, bound to its `env` and projection."""

    registry: CollectorRegistry
    env: str
    projection: str
    # Labelled children by (metric name, label values): `labels()` costs a lock and a tuple
    # per call, and the relay counts every row of every batch.
    _children: dict[tuple[str, ...], Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        p = ("projection",)
        self.processed = Counter("outbox_processed", "Events finished (ok, noop).", [*_COMMON, *p, "op", "result"], registry=r)
        self.retry_scheduled = Counter(
            "outbox_retry_scheduled", "Attempts rescheduled with backoff.", [*_COMMON, *p, "op", "reason"], registry=r
        )
        self.failed = Counter(
            "outbox_failed", "Every failed attempt, retryable or not.", [*_COMMON, *p, "op", "reason"], registry=r
        )
        self.terminal_failed = Counter(
            "outbox_terminal_failed",
            "Events moved to status failed (no more automatic retries).",
            [*_COMMON, *p, "op", "reason"],
            registry=r,
        )
        self.idempotent_noop = Counter(
            "outbox_idempotent_noop", "Duplicates absorbed (es_404, es_409).", [*_COMMON, *p, "op", "reason"], registry=r
        )
        self.owner_mismatch_skips = Counter(
            "outbox_owner_mismatch_skips",
            "Completions skipped because another worker owns the row.",
            [*_COMMON, *p],
            registry=r,
        )
        self.reclaimed = Counter("outbox_reclaimed", "Expired leases taken back.", [*_COMMON, *p], registry=r)
        self.lag = Gauge("outbox_lag_events", "Rows pending.", [*_COMMON, *p], registry=r)
        self.oldest_age = Gauge("outbox_oldest_age_seconds", "Age of the oldest pending row.", [*_COMMON, *p], registry=r)
        self.stuck = Gauge(
            "outbox_stuck_processing_events", "Rows processing whose lease has expired.", [*_COMMON, *p], registry=r
        )
        self.inflight = Gauge("outbox_inflight_events", "Rows this worker holds now.", [*_COMMON, *p], registry=r)
        self.claim_duration = Histogram(
            "outbox_claim_duration_seconds", "Time of one claim statement.", [*_COMMON, *p], buckets=_CLAIM_BUCKETS, registry=r
        )
        self.process_duration = Histogram(
            "outbox_process_duration_seconds",
            "Time to process one claimed batch.",
            [*_COMMON, *p],
            buckets=_PROCESS_BUCKETS,
            registry=r,
        )
        self.bulk_duration = Histogram(
            "outbox_es_bulk_request_duration_seconds", "One _bulk round trip.", list(_COMMON), buckets=_PROCESS_BUCKETS, registry=r
        )
        self.bulk_requests = Counter("outbox_es_bulk_requests", "Bulk requests by result.", [*_COMMON, "result"], registry=r)
        self.bulk_item_failures = Counter(
            "outbox_es_bulk_item_failures", "Failed bulk items by class.", [*_COMMON, "failure_class"], registry=r
        )
        self._initialise()

    def _c(self) -> dict[str, str]:
        return {"component": "worker", "env": self.env}

    def _p(self) -> dict[str, str]:
        return {**self._c(), "projection": self.projection}

    def _initialise(self) -> None:
        p = self._p()
        for op in OPS:
            for result in ("ok", "noop"):
                self.processed.labels(**p, op=op, result=result)
            for reason in RETRYABLE_REASONS:
                self.retry_scheduled.labels(**p, op=op, reason=reason)
            for reason in REASONS:
                if reason not in NOOP_REASONS:
                    self.failed.labels(**p, op=op, reason=reason)
                    self.terminal_failed.labels(**p, op=op, reason=reason)
            for reason in NOOP_REASONS:
                self.idempotent_noop.labels(**p, op=op, reason=reason)
        for metric in (self.owner_mismatch_skips, self.reclaimed, self.lag, self.oldest_age, self.stuck, self.inflight):
            metric.labels(**p)
        self.claim_duration.labels(**p)
        self.process_duration.labels(**p)
        self.bulk_duration.labels(**self._c())
        for result in ("ok", "partial", "failed"):
            self.bulk_requests.labels(**self._c(), result=result)
        for cls in FAILURE_CLASSES:
            self.bulk_item_failures.labels(**self._c(), failure_class=cls)

    def _op_child(self, metric: Counter, op: str, key: str, value: str) -> Any:
        k = (metric._name, op, value)
        child = self._children.get(k)
        if child is None:
            child = self._children[k] = metric.labels(**self._p(), op=op, **{key: value})
        return child

    # Small verbs so the processing code reads as the contract does.
    def count_processed(self, op: str, result: str, n: int = 1) -> None:
        self._op_child(self.processed, op, "result", result).inc(n)

    def count_noop(self, op: str, reason: str, n: int = 1) -> None:
        self._op_child(self.idempotent_noop, op, "reason", reason).inc(n)

    def count_failed(self, op: str, reason: str, n: int = 1) -> None:
        self._op_child(self.failed, op, "reason", reason).inc(n)

    def count_retry(self, op: str, reason: str, n: int = 1) -> None:
        self._op_child(self.retry_scheduled, op, "reason", reason).inc(n)

    def count_terminal(self, op: str, reason: str, n: int = 1) -> None:
        self._op_child(self.terminal_failed, op, "reason", reason).inc(n)

    def count_owner_mismatch(self, n: int = 1) -> None:
        if n:
            self.owner_mismatch_skips.labels(**self._p()).inc(n)

    def count_reclaimed(self, n: int) -> None:
        if n:
            self.reclaimed.labels(**self._p()).inc(n)

    def set_gauges(self, lag: int, oldest_age: float, stuck: int) -> None:
        self.lag.labels(**self._p()).set(lag)
        self.oldest_age.labels(**self._p()).set(oldest_age)
        self.stuck.labels(**self._p()).set(stuck)

    def set_inflight(self, n: int) -> None:
        self.inflight.labels(**self._p()).set(n)

    def observe_claim(self, seconds: float) -> None:
        self.claim_duration.labels(**self._p()).observe(seconds)

    def observe_process(self, seconds: float) -> None:
        self.process_duration.labels(**self._p()).observe(seconds)

    def observe_bulk(self, seconds: float, result: str) -> None:
        self.bulk_duration.labels(**self._c()).observe(seconds)
        self.bulk_requests.labels(**self._c(), result=result).inc()

    def count_bulk_item_failure(self, failure_class: str) -> None:
        self.bulk_item_failures.labels(**self._c(), failure_class=failure_class).inc()
