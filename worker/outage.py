"""Postgres reachability as the relay loop sees it: back off, and say so by state change.

A worker whose database is gone used to log two lines per poll for as long as the outage lasted
(2 MB in three minutes). Now it logs the change of state, a summary now and then, and the return,
and waits longer and longer (up to a cap) between claims.
"""

from __future__ import annotations

import time
from typing import Final

from worker.retry import RetryPolicy
from worker.telemetry.logs import JsonLogger

DB_BACKOFF_CAP_SECONDS: Final = 5.0
"""Longest wait between two claims while Postgres is unreachable."""
DB_SUMMARY_SECONDS: Final = 30.0
"""While Postgres stays unreachable, one summary line this often (not one line per poll)."""


class DbOutage:
    """Postgres reachability as the loop sees it, logged by state change instead of per poll.

    One line when statements start failing (`db.unavailable`), one summary every
    DB_SUMMARY_SECONDS while they keep failing (`db.unavailable_summary`), one line when a
    statement works again (`db.recovered`). Meanwhile the loop waits `delay()` between claims:
    the poll interval doubled per failure up to DB_BACKOFF_CAP_SECONDS, with equal jitter so
    that workers which lost Postgres together do not come back in step.
    """

    def __init__(self, log: JsonLogger, projection: str, base: float, cap: float | None = None) -> None:
        self.log = log
        self.projection = projection
        cap = DB_BACKOFF_CAP_SECONDS if cap is None else cap
        self.policy = RetryPolicy(base=base, cap=max(cap, base), max_attempts=1)
        self.failures = 0
        self.since = 0.0
        self._summary_at = 0.0
        self._last_error = ""

    @property
    def down(self) -> bool:
        return self.failures > 0

    def failed(self, what: str, exc: BaseException, *, attempt: bool = True) -> None:
        """A statement failed. `attempt`: it was a claim, one step of the backoff; a reconnect or
        a gauge reading failing in the same round is not another step (it used to triple the
        backoff's pace, so a worker came back up to 5 s after a 3 s outage ended)."""
        now = time.monotonic()
        error = " ".join(str(exc).split())[:300]
        self._last_error = error
        was_down = self.failures > 0
        if attempt or not was_down:
            self.failures += 1
        if not was_down:
            self.since = self._summary_at = now
            self.log.error(
                "db.unavailable",
                f"Postgres unavailable ({what} failed: {error}); retrying with backoff up to {self.policy.cap:g}s",
                projection=self.projection,
                reason="db_error",
                error=error,
                error_type=type(exc).__name__,
            )
        elif now - self._summary_at >= DB_SUMMARY_SECONDS:
            self._summary_at = now
            self.log.warning(
                "db.unavailable_summary",
                f"Postgres still unavailable after {now - self.since:.0f}s ({self.failures} failed attempts; last: {error})",
                projection=self.projection,
                reason="db_error",
                failures=self.failures,
                down_seconds=round(now - self.since, 1),
                error=error,
                error_type=type(exc).__name__,
            )

    def ok(self) -> None:
        if not self.failures:
            return
        down = time.monotonic() - self.since
        self.log.info(
            "db.recovered",
            f"Postgres reachable again after {down:.1f}s ({self.failures} failed attempts)",
            projection=self.projection,
            failures=self.failures,
            down_seconds=round(down, 1),
        )
        self.failures = 0

    def delay(self) -> float:
        return self.policy.backoff(self.failures)
