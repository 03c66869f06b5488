"""What to do after a failed attempt: a decision object returned by a policy.

Backoff for attempt n (1 = first try), with base b and cap c (seconds):

    d(n)   = min(c, b * 2 ** (n - 1))
    delay  = d(n) / 2 + uniform(0, d(n) / 2)        ("equal jitter")

Equal jitter keeps half of the exponential step, so the delay of attempt n is never below
d(n)/2 and grows with n until the cap, while the random half spreads retries of many events
that failed together (an engine outage fails a whole backlog at once) so they do not return
as one thundering herd.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from worker.classify import Outcome

DEFAULT_BASE_SECONDS = 0.5
DEFAULT_CAP_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class RetryDecision:
    action: Literal["retry", "fail"]
    delay: float
    """Seconds until the next attempt; 0 when action is fail."""
    terminal_because: Literal["deterministic", "max_attempts"] | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = DEFAULT_BASE_SECONDS
    cap: float = DEFAULT_CAP_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def step(self, attempt: int) -> float:
        """d(n): the un-jittered delay after attempt n."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**63 overflows float math long after the cap
        return min(self.cap, self.base * (2.0**exponent))

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        d = self.step(attempt)
        return d / 2 + (rng or random).uniform(0, d / 2)

    def decide(self, outcome: Outcome, attempt: int, rng: random.Random | None = None) -> RetryDecision:
        if not outcome.retryable:
            return RetryDecision("fail", 0.0, "deterministic")
        if attempt >= self.max_attempts:
            return RetryDecision("fail", 0.0, "max_attempts")
        return RetryDecision("retry", self.backoff(attempt, rng))
