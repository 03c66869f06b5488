"""The fault boundary: each fault is armed on entry, reverted on exit, and proves both.

`arm` returns evidence read back from the real system (the engine refuses a connection, the
setting reads back true, the killed worker's pid is gone): a fault that cannot prove it is armed
makes the drill fail loudly before its clock starts, instead of producing a quiet pass.

A driver acts on the run through `DrillHost` (the runner): it may write its own trigger events,
start or kill workers, and record database probes. The runner owns the order; a driver only
fills in the steps its fault needs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx
import psycopg

from drillui import http

if TYPE_CHECKING:
    from drillui.stack.stack import Endpoints


@dataclass(frozen=True)
class FaultProof:
    """What was observed to show the fault is (or is not) in force."""

    armed: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"armed": self.armed, "evidence": self.evidence}


class EngineSwitch(Protocol):
    """Makes the search engine unreachable and reachable again (embedded relay, docker, ...)."""

    @property
    def managed(self) -> bool: ...

    def set_reachable(self, reachable: bool) -> None: ...

    def reachable(self) -> bool: ...


@runtime_checkable
class LatencySwitch(Protocol):
    """An engine switch that can also slow the engine down (the embedded stack's relay)."""

    def set_latency(self, seconds: float) -> None: ...

    def latency(self) -> float: ...


class PostgresSwitch(Protocol):
    """Makes the workers' Postgres refuse connections and accept them again (the stack's relay);
    drillui's own direct connection is never cut."""

    @property
    def managed(self) -> bool: ...

    def set_reachable(self, reachable: bool) -> None: ...

    def reachable(self) -> bool: ...


class WorkerHandle(Protocol):
    name: str
    worker_id: str
    log_path: Any

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def kill(self) -> None: ...

    def stop(self, timeout: float = ...) -> int | None: ...


class StopFlag(Protocol):
    """A run's stop request, as a driver waits on it."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = ...) -> bool: ...


class DrillHost(Protocol):
    """What a fault driver may do to the run in progress."""

    @property
    def stop_requested(self) -> StopFlag: ...
    triggered: bool
    trigger_ids: list[uuid.UUID]
    worker_names: list[str]

    @property
    def trigger_count(self) -> int: ...

    @property
    def es_url(self) -> str: ...

    @property
    def index(self) -> str: ...

    @property
    def engine(self) -> EngineSwitch | None: ...

    @property
    def postgres(self) -> PostgresSwitch | None: ...

    @property
    def endpoints(self) -> Endpoints:
        """Where the infrastructure answers: the workers' addresses, and drillui's direct one."""
        ...

    def db(self) -> psycopg.Connection[Any]: ...

    def say(self, message: str) -> None: ...

    def trigger(self) -> None:
        """Write the drill's default trigger events (workload.trigger_count of workload.op)."""
        ...

    def insert(
        self, op: str, entity_id: uuid.UUID, payload: Any = None, *, delay: float = 0.0, projection: str | None = None
    ) -> uuid.UUID:
        """Write one trigger event (tracked as part of the run); `delay` postpones its first attempt."""
        ...

    def insert_many(self, rows: list[tuple[str, uuid.UUID, Any]]) -> list[uuid.UUID]:
        """Write (op, entity id, payload) trigger events in one transaction."""
        ...

    @property
    def op(self) -> str: ...

    def worker(self, name: str) -> WorkerHandle: ...

    def start_worker(self, name: str) -> WorkerHandle: ...

    def restart_workers(self, env: dict[str, str]) -> None:
        """Stop every live worker cleanly and start it again with `env` on top of its own."""
        ...

    def wait_for(self, what: str, predicate: Any, timeout: float) -> bool:
        """Poll `predicate()` until true, the timeout, or a stop request; says what it waits for."""
        ...

    def wait_settled(self, timeout: float) -> bool: ...

    def probe(self, name: str, value: Any) -> None: ...

    def log_events(self, worker: str, event: str) -> list[dict[str, Any]]: ...


class BaseDriver:
    """Defaults: every worker starts at once, the default trigger, nothing during the window."""

    name = "base"

    def unsupported(self, host: DrillHost) -> str | None:
        """Why this fault cannot be made on this infrastructure (one line), or None. Asked
        before anything of the run is recorded: such a run is refused, not failed."""
        return None

    def prepare(self, host: DrillHost) -> None:
        """Before the workers start (what their environment needs must exist by then)."""

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {}

    def initial_workers(self, names: list[str]) -> list[str]:
        return names

    def arm(self, host: DrillHost) -> FaultProof:
        raise NotImplementedError

    def trigger(self, host: DrillHost) -> None:
        host.trigger()

    def during(self, host: DrillHost, deadline: float) -> None:
        """Act while the fault is armed; the runner then waits for the rest of the window."""

    def revert(self, host: DrillHost) -> FaultProof:
        raise NotImplementedError

    def recover(self, host: DrillHost) -> None:
        """After the revert, before the trigger events are waited on."""

    def release(self) -> None:
        """Free what `prepare` took (a listener, a thread), however the run ended: called once,
        last, also when the fault was never armed."""


def probe_engine(es_url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(reachable, what happened) for one real request to the engine's root."""
    try:
        with http.client(timeout=timeout) as c:
            resp = c.get(es_url.rstrip("/") + "/")
    except httpx.ConnectError as exc:
        return False, f"GET {es_url}/ -> ConnectError: {exc}"
    except httpx.TimeoutException as exc:
        return False, f"GET {es_url}/ -> {type(exc).__name__}: {exc}"
    return True, f"GET {es_url}/ -> HTTP {resp.status_code}"
