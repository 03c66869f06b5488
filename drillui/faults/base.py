"""The fault boundary: each fault is armed on entry, reverted on exit, and proves both.

`arm` returns evidence read back from the real system (the engine refuses a connection, the
setting reads back true): a fault that cannot prove it is armed makes the drill fail loudly
before its clock starts, instead of producing a quiet, meaningless pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx


@dataclass(frozen=True)
class FaultProof:
    """What was observed to show the fault is (or is not) in force."""

    armed: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"armed": self.armed, "evidence": self.evidence}


class EngineSwitch(Protocol):
    """Makes the search engine unreachable and reachable again (embedded relay, docker, ...)."""

    managed: bool

    def set_reachable(self, reachable: bool) -> None: ...

    def reachable(self) -> bool: ...


@dataclass
class FaultContext:
    es_url: str
    index: str
    engine: EngineSwitch | None


class FaultDriver(Protocol):
    name: str

    def worker_env(self, worker_index: int) -> dict[str, str]:
        """Knobs the fault sets on the worker with this index (0 = first)."""
        ...

    def arm(self, ctx: FaultContext) -> FaultProof: ...

    def revert(self, ctx: FaultContext) -> FaultProof:
        """Undo the fault; the proof says whether the system is back (armed=False when clean)."""
        ...


def probe_engine(es_url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(reachable, what happened) for one real request to the engine's root."""
    try:
        resp = httpx.get(es_url.rstrip("/") + "/", timeout=timeout)
    except httpx.ConnectError as exc:
        return False, f"GET {es_url}/ -> ConnectError: {exc}"
    except httpx.TimeoutException as exc:
        return False, f"GET {es_url}/ -> {type(exc).__name__}: {exc}"
    return True, f"GET {es_url}/ -> HTTP {resp.status_code}"
