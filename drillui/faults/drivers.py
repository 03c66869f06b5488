"""The fault types of scenarios.yaml, each as a driver the runner arms and reverts.

Every driver proves its fault from the real system, never from its own intentions: the engine
refuses a connection, the write block reads back, the worker logged the injection mode, the
killed pid is gone while its rows are still `processing`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from drillui import http
from drillui.errors import UsageError
from drillui.faults.base import BaseDriver, DrillHost, FaultProof, probe_engine
from drillui.scenarios import (
    ClaimContention,
    DuplicateDelivery,
    EngineUnreachable,
    Es429,
    Fault,
    KillHolder,
    NoFault,
    PoisonDocument,
    ProjectionVersion,
    WriteBlock,
)
from drillui.stack.postgres import free_port, pid_alive

POISON_PAYLOAD: dict[str, Any] = {"title": "poison document", "n": "not-a-number"}
"""The drill index maps `n` as an integer: the engine's own mapping rejects this (a real 400)."""


class NoFaultDriver(BaseDriver):
    """Nothing is broken: the control drill, or a real drill run without its fault (its checks must then fail)."""

    name = "none"

    def arm(self, host: DrillHost) -> FaultProof:
        return FaultProof(True, "control run: no fault applied")

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "nothing to revert")


class EngineUnreachableDriver(BaseDriver):
    """Make the engine unreachable so every connection is really refused (no fake errors).

    A managed engine (the embedded relay, or the docker container) is closed and reopened. An
    engine drillui does not manage (ES_URL pointing at someone's cluster) is left alone: the
    runbook's other method is used instead, the workers are restarted pointing at a port where
    nothing listens, and restarted again with the real address on revert.
    """

    name = "engine_unreachable"

    def __init__(self) -> None:
        self.dead_url: str | None = None

    def arm(self, host: DrillHost) -> FaultProof:
        if host.engine is not None and host.engine.managed:
            host.engine.set_reachable(False)
            reachable, what = _settle_probe(host.es_url, want_reachable=False)
            return FaultProof(not reachable, what)
        self.dead_url = f"http://127.0.0.1:{free_port()}"
        host.say(f"the engine is not managed by drillui: pointing the workers at a dead port ({self.dead_url})")
        host.restart_workers({"ES_URL": self.dead_url})
        reachable, what = probe_engine(self.dead_url)
        return FaultProof(not reachable, f"workers restarted with ES_URL={self.dead_url}: {what}")

    def revert(self, host: DrillHost) -> FaultProof:
        if self.dead_url is not None:
            host.restart_workers({})
        elif host.engine is not None:
            host.engine.set_reachable(True)
        reachable, what = _settle_probe(host.es_url, want_reachable=True)
        return FaultProof(not reachable, what)


class Es429Driver(BaseDriver):
    """The runbook's own injection knobs; armed once every worker has logged its mode."""

    name = "es_429"

    def __init__(self, spec: Es429) -> None:
        self.spec = spec

    def worker_env(self, worker_index: int) -> dict[str, str]:
        env = {"OUTBOX_EXPERIMENT_ES_429_OPS": ",".join(self.spec.ops)}
        if self.spec.every_n is not None:
            env["OUTBOX_EXPERIMENT_ES_429_EVERY_N"] = str(self.spec.every_n)
        if self.spec.ratio is not None:
            env["OUTBOX_EXPERIMENT_ES_429_RATIO"] = str(self.spec.ratio)
        if self.spec.seed is not None:
            env["OUTBOX_EXPERIMENT_ES_429_SEED"] = str(self.spec.seed)
        return env

    def arm(self, host: DrillHost) -> FaultProof:
        lines = host.log_events("*", "faults.es_429")
        if not lines:
            return FaultProof(False, "no worker logged `faults.es_429`: the injection is not on")
        first = lines[0]
        return FaultProof(
            True,
            f"{len(lines)} worker(s) logged: {first.get('msg')}",
        )

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "injection lives only in the drill's worker processes, which are stopped at the end")


class WriteBlockDriver(BaseDriver):
    """`index.blocks.write=true` on the drill's index: every write becomes a 403 (deterministic)."""

    name = "write_block"

    def __init__(self, spec: WriteBlock) -> None:
        self.spec = spec

    def _set(self, host: DrillHost, on: bool) -> FaultProof:
        url = f"{host.es_url}/{host.index}/_settings"
        with http.client(timeout=5) as c:
            resp = c.put(url, json={"index": {"blocks": {"write": on}}})
        if resp.status_code >= 300:
            return FaultProof(not on, f"PUT {url} -> HTTP {resp.status_code}: {resp.text[:200]}")
        value = read_write_block(host.es_url, host.index)
        return FaultProof(value, f"GET {host.index}/_settings -> index.blocks.write={str(value).lower()}")

    def arm(self, host: DrillHost) -> FaultProof:
        return self._set(host, True)

    def revert(self, host: DrillHost) -> FaultProof:
        return self._set(host, False)

    def recover(self, host: DrillHost) -> None:
        if not self.spec.requeue_on_recover:
            return
        ids = host.trigger_ids
        n = host.db().execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL "
            "WHERE status = 'failed' AND id = ANY(%s)",
            (ids,),
        ).rowcount
        host.say(f"failure-management loop: requeued {n} failed row(s) now that the block is lifted")


def read_write_block(es_url: str, index: str) -> bool:
    with http.client(timeout=5) as c:
        resp = c.get(f"{es_url}/{index}/_settings")
    resp.raise_for_status()
    settings = resp.json().get(index, {}).get("settings", {}).get("index", {})
    value = settings.get("blocks", {}).get("write", settings.get("blocks.write", "false"))
    return str(value).lower() == "true"


class PoisonDocumentDriver(BaseDriver):
    """Bulk batch: the good trigger events plus documents the engine's mapping rejects."""

    name = "poison_document"

    def __init__(self, spec: PoisonDocument) -> None:
        self.spec = spec

    def arm(self, host: DrillHost) -> FaultProof:
        with http.client(timeout=5) as c:
            resp = c.get(f"{host.es_url}/{host.index}/_mapping")
        resp.raise_for_status()
        props = resp.json().get(host.index, {}).get("mappings", {}).get("properties", {})
        n_type = props.get("n", {}).get("type")
        armed = n_type in ("integer", "long", "short")
        return FaultProof(armed, f"index maps n as {n_type}; poison payload has n={POISON_PAYLOAD['n']!r}")

    def trigger(self, host: DrillHost) -> None:
        # One transaction for the good rows and the poison ones: a worker polling meanwhile must
        # claim them as one batch, or the "partial" batch this drill is about never forms.
        good = [(host.op, uuid.uuid4(), {"title": f"good document {n}", "n": n}) for n in range(host.trigger_count)]
        host.insert_many([*good, *(("upsert", uuid.uuid4(), POISON_PAYLOAD) for _ in range(self.spec.count))])

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "nothing to revert: the poison rows stay failed for the failure-management loop")


class ClaimContentionDriver(BaseDriver):
    """Every worker uses the deliberately non-atomic claim, so two workers take the same rows."""

    name = "claim_contention"

    def __init__(self, spec: ClaimContention) -> None:
        self.spec = spec

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {"OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP": str(self.spec.sleep)}

    def arm(self, host: DrillHost) -> FaultProof:
        lines = [r for r in host.log_events("*", "faults.knob") if r.get("knob") == "OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP"]
        if len(lines) < 2:
            return FaultProof(False, f"only {len(lines)} worker(s) run the non-atomic claim; contention needs two")
        return FaultProof(True, f"{len(lines)} workers logged OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP={lines[0].get('value')}")

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "the knob lives only in the drill's worker processes, which are stopped at the end")


class KillHolderDriver(BaseDriver):
    """Worker 1 claims, sleeps holding its lease, and is SIGKILLed: a real crash mid-batch."""

    name = "kill_holder"

    def __init__(self, spec: KillHolder) -> None:
        self.spec = spec
        self.victim_id = ""

    def worker_env(self, worker_index: int) -> dict[str, str]:
        if worker_index == 0:
            return {"OUTBOX_EXPERIMENT_PROCESS_SLEEP": str(self.spec.process_sleep), "OUTBOX_LEASE_SECONDS": str(self.spec.lease_seconds)}
        return {}

    def initial_workers(self, names: list[str]) -> list[str]:
        if len(names) < 2:
            raise UsageError("kill_holder needs two workers: one to kill, one to take the rows back")
        return names[:1]

    def arm(self, host: DrillHost) -> FaultProof:
        victim = host.worker(host.worker_names[0])
        self.victim_id = victim.worker_id
        host.trigger()
        holding = host.wait_for(
            f"worker {victim.name} to claim the trigger events",
            lambda: bool(host.log_events(victim.name, "outbox.claimed")),
            timeout=10,
        )
        if not holding:
            return FaultProof(False, f"worker {victim.name} never claimed the trigger events")
        # The claim span is exported on a short timer: give it time to leave the process,
        # so the trace shows a claim without a processed batch, as a real crash does.
        time.sleep(0.8)
        pid = victim.pid
        victim.kill()
        gone = pid is not None and not pid_alive(pid)
        row = host.db().execute(
            "SELECT count(*) AS n FROM outbox WHERE status = 'processing' AND claimed_by = %s", (self.victim_id,)
        ).fetchone()
        held = int(row["n"]) if row else 0
        return FaultProof(
            gone and held > 0,
            f"SIGKILL sent to {victim.name} (pid {pid}): process {'gone' if gone else 'STILL ALIVE'}; "
            f"{held} row(s) left processing under {self.victim_id}",
        )

    def during(self, host: DrillHost, deadline: float) -> None:
        def stuck() -> bool:
            row = host.db().execute(
                "SELECT count(*) AS n FROM outbox WHERE status = 'processing' AND lease_until < now() AND claimed_by = %s",
                (self.victim_id,),
            ).fetchone()
            return bool(row and row["n"])

        host.wait_for("the dead worker's lease to expire", stuck, timeout=self.spec.lease_seconds + 5)
        rescuer = host.worker_names[1]
        host.start_worker(rescuer)

    def revert(self, host: DrillHost) -> FaultProof:
        victim = host.worker(host.worker_names[0])
        return FaultProof(victim.alive(), f"worker {victim.name} {'is still alive' if victim.alive() else 'stays dead'}; nothing else to revert")


class DuplicateDeliveryDriver(BaseDriver):
    """At-least-once delivery made visible: a delete delivered twice and a stale upsert late."""

    name = "duplicate_delivery"

    def __init__(self, spec: DuplicateDelivery) -> None:
        self.spec = spec
        self.pairs: list[tuple[uuid.UUID, uuid.UUID]] = []

    def arm(self, host: DrillHost) -> FaultProof:
        self.trigger(host)
        host.triggered = True
        rows = host.db().execute(
            "SELECT entity_id, op, count(*) AS n FROM outbox WHERE id = ANY(%s) GROUP BY 1, 2 HAVING count(*) > 1",
            (host.trigger_ids,),
        ).fetchall()
        dup = [r for r in rows if r["op"] == "delete"]
        stale = [r for r in rows if r["op"] == "upsert"]
        armed = bool(dup) and (bool(stale) or not self.spec.stale_upsert)
        return FaultProof(
            armed,
            f"outbox holds {len(dup)} entity(ies) with a repeated delete and {len(stale)} with two upserts, the older one delivered late",
        )

    def trigger(self, host: DrillHost) -> None:
        for n in range(host.trigger_count):
            entity = uuid.uuid4()
            host.insert("upsert", entity, {"title": f"to be deleted {n}", "n": n})
            host.insert("delete", entity)
            host.insert("delete", entity)  # the duplicate delivery
        if self.spec.stale_upsert:
            entity = uuid.uuid4()
            # The older event is held back (as a retry would be) and arrives after the newer one.
            host.insert("upsert", entity, {"title": "old", "n": 1}, delay=1.5)
            host.insert("upsert", entity, {"title": "new", "n": 2})

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "nothing to revert: duplicates are absorbed, not undone")


class ProjectionVersionDriver(BaseDriver):
    """The same chronicle event projected by a v1 worker, then again by a v2 worker."""

    name = "projection_version"

    def __init__(self, spec: ProjectionVersion) -> None:
        self.spec = spec
        self.event_id = uuid.uuid4()
        self.seen: list[int] = []

    def worker_env(self, worker_index: int) -> dict[str, str]:
        versions = self.spec.versions
        return {"CHRONICLE_PROJECTION_VERSION": str(versions[min(worker_index, len(versions) - 1)])}

    def initial_workers(self, names: list[str]) -> list[str]:
        if len(names) < len(self.spec.versions):
            raise UsageError(f"projection_version needs one worker per version ({len(self.spec.versions)})")
        return names[:1]

    def _entry_version(self, host: DrillHost) -> int | None:
        row = host.db().execute("SELECT projection_version FROM chronicle_entries WHERE event_id = %s", (self.event_id,)).fetchone()
        return int(row["projection_version"]) if row else None

    def arm(self, host: DrillHost) -> FaultProof:
        host.db().execute(
            "INSERT INTO chronicle_events (id, entity_id, kind, title, body) VALUES (%s, %s, 'note', %s, %s)",
            (self.event_id, uuid.uuid4(), "drill H chronicle event", '{"source": "drillui"}'),
        )
        lines = host.log_events("*", "worker.started")
        versions = [line.get("projection_version") for line in lines]
        armed = versions[:1] == [self.spec.versions[0]]
        return FaultProof(armed, f"chronicle event {self.event_id} written; first worker runs projection_version={versions[:1]}")

    def trigger(self, host: DrillHost) -> None:
        host.insert("upsert", self.event_id, {}, projection="chronicle")

    def during(self, host: DrillHost, deadline: float) -> None:
        names = host.worker_names
        for i, version in enumerate(self.spec.versions):
            if i > 0:
                host.worker(names[i - 1]).stop()
                host.insert("upsert", self.event_id, {}, projection="chronicle")
                host.start_worker(names[i])
            host.wait_settled(max(1.0, deadline - time.monotonic()))
            got = self._entry_version(host)
            self.seen.append(got if got is not None else -1)
            host.say(f"probe: chronicle_entries.projection_version = {got} after the v{version} worker")
        host.probe("chronicle_versions", self.seen)

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "nothing to revert: each worker ran with its own version")


def _settle_probe(es_url: str, *, want_reachable: bool, timeout: float = 5.0) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while True:
        reachable, what = probe_engine(es_url)
        if reachable == want_reachable or time.monotonic() > deadline:
            return reachable, what
        time.sleep(0.1)


def driver_for(fault: Fault) -> BaseDriver:
    match fault:
        case NoFault():
            return NoFaultDriver()
        case EngineUnreachable():
            return EngineUnreachableDriver()
        case Es429():
            return Es429Driver(fault)
        case WriteBlock():
            return WriteBlockDriver(fault)
        case PoisonDocument():
            return PoisonDocumentDriver(fault)
        case ClaimContention():
            return ClaimContentionDriver(fault)
        case KillHolder():
            return KillHolderDriver(fault)
        case DuplicateDelivery():
            return DuplicateDeliveryDriver(fault)
        case ProjectionVersion():
            return ProjectionVersionDriver(fault)
    raise UsageError(f"fault type {fault.type!r} has no driver")
