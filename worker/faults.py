"""Fault knobs from the runbook, off unless set: here, the injected 429 of drill B.

Two modes, as the runbook's manual-test/2 asks to state plainly at start:
- `every_n`: deterministic, the n-th, 2n-th, ... engine call of a listed op gets a 429
  (effective ratio 1/n);
- `ratio`: each call of a listed op gets a 429 with probability `ratio` (seeded if a seed is set).
`every_n` wins when both are set.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.contract import ATTR_429_PREFIX


@dataclass
class Es429Injector:
    every_n: int | None
    ratio: float | None
    ops: frozenset[str]
    seed: int | None
    _calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def mode(self) -> Literal["every_n", "ratio", "off"]:
        if self.every_n:
            return "every_n"
        if self.ratio:
            return "ratio"
        return "off"

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def effective_ratio(self) -> float:
        if self.mode == "every_n":
            assert self.every_n
            return 1.0 / self.every_n
        return self.ratio or 0.0

    def should_inject(self, op: str) -> bool:
        if not self.enabled or op not in self.ops:
            return False
        with self._lock:
            self._calls += 1
            if self.mode == "every_n":
                assert self.every_n
                return self._calls % self.every_n == 0
            return self._rng.random() < (self.ratio or 0.0)

    def span_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            ATTR_429_PREFIX + "mode": self.mode,
            ATTR_429_PREFIX + "ratio": float(self.ratio or 0.0),
            ATTR_429_PREFIX + "every_n": int(self.every_n or 0),
            ATTR_429_PREFIX + "ops": ",".join(sorted(self.ops)),
        }
        if self.seed is not None:
            attrs[ATTR_429_PREFIX + "seed"] = self.seed
        return attrs

    def describe(self) -> str:
        return (
            f"ES 429 fault injection enabled: mode={self.mode} effective_ratio={self.effective_ratio:.3f} "
            f"ratio={self.ratio or 0.0:.2f} every_n={self.every_n or 0} ops={','.join(sorted(self.ops))} seed={self.seed}"
        )
