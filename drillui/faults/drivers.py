"""The fault types of scenarios.yaml, each as a driver the runner arms and reverts."""

from __future__ import annotations

import time

from drillui.errors import UsageError
from drillui.faults.base import FaultContext, FaultDriver, FaultProof, probe_engine
from drillui.scenarios import EngineUnreachable, Fault, NoFault


class NoFaultDriver:
    name = "none"

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {}

    def arm(self, ctx: FaultContext) -> FaultProof:
        return FaultProof(True, "control run: no fault applied")

    def revert(self, ctx: FaultContext) -> FaultProof:
        return FaultProof(False, "nothing to revert")


class EngineUnreachableDriver:
    """Close the engine to clients so every connection is really refused (no fake errors)."""

    name = "engine_unreachable"

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {}

    def arm(self, ctx: FaultContext) -> FaultProof:
        if ctx.engine is None or not ctx.engine.managed:
            raise UsageError(
                "drill needs to stop the search engine, but ES_URL points at an engine drillui does not manage",
                hint="unset ES_URL to use the embedded engine, or use the docker stack",
            )
        ctx.engine.set_reachable(False)
        reachable, what = _settle_probe(ctx.es_url, want_reachable=False)
        return FaultProof(not reachable, what)

    def revert(self, ctx: FaultContext) -> FaultProof:
        assert ctx.engine is not None
        ctx.engine.set_reachable(True)
        reachable, what = _settle_probe(ctx.es_url, want_reachable=True)
        return FaultProof(not reachable, what)


def _settle_probe(es_url: str, *, want_reachable: bool, timeout: float = 5.0) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while True:
        reachable, what = probe_engine(es_url)
        if reachable == want_reachable or time.monotonic() > deadline:
            return reachable, what
        time.sleep(0.1)


def driver_for(fault: Fault) -> FaultDriver:
    if isinstance(fault, NoFault):
        return NoFaultDriver()
    if isinstance(fault, EngineUnreachable):
        return EngineUnreachableDriver()
    raise UsageError(f"fault type {fault.type!r} is not supported by this version of drillui yet")
