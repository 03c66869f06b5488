"""The fault types of scenarios.yaml, each as a driver the runner arms and reverts.

Every driver proves its fault from the real system, never from its own intentions: the engine
refuses a connection, the write block reads back, the worker logged the injection mode, the
killed pid is gone while its rows are still `processing`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from drillui import http
from drillui.errors import UsageError
from drillui.faults.base import BaseDriver, DrillHost, FaultProof, LatencySwitch, probe_engine
from drillui.faults.grpc_port import GrpcLikePort
from drillui.redact import redact_text, redact_url
from drillui.scenarios import (
    BatchResultEarly,
    ClaimContention,
    DuplicateDelivery,
    EngineSlow,
    EngineUnreachable,
    Es429,
    Fault,
    KillHolder,
    NoFault,
    OtlpMismatch,
    PoisonDocument,
    PostgresUnavailable,
    ProjectionVersion,
    StaleObsSchema,
    TracingDisabled,
    WriteBlock,
)
from drillui.stack.postgres import free_port, pid_alive
from worker.db import queries

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

    def __init__(self, spec: EngineUnreachable | None = None) -> None:
        self.spec = spec or EngineUnreachable(type="engine_unreachable")
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

    def recover(self, host: DrillHost) -> None:
        if self.spec.requeue_on_recover:
            requeue_failed(host, "now that the engine is back")


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
        if self.spec.requeue_on_recover:
            requeue_failed(host, "now that the block is lifted")


LIST_FAILED_LIMIT = 100_000


def requeue_failed(host: DrillHost, why: str) -> None:
    """The failure-management loop, with the statements of `drillui failed list` and `drillui
    failed requeue`: the run's failed rows must be among those listed, and are sent round again.
    Records `failed_listed`: every failed row of the run was listed (and there was one)."""
    q = queries()
    mine = set(host.trigger_ids)
    failed = {r["id"] for r in host.db().execute("SELECT id FROM outbox WHERE status = 'failed' AND id = ANY(%s)",
                                                   (host.trigger_ids,)).fetchall()}
    listed = [r["id"] for r in host.db().execute(q["list_failed"], {"projection": None, "limit": LIST_FAILED_LIMIT}).fetchall()  # type: ignore[arg-type]
              if r["id"] in mine]
    host.probe("failed_listed", bool(failed) and failed <= set(listed))
    requeued = host.db().execute(q["requeue_failed"], {"all": False, "ids": listed}).fetchall()  # type: ignore[arg-type]
    host.say(f"failure-management loop: `drillui failed list` shows {len(listed)} of the run's {len(failed)} failed row(s); "
             f"requeued {len(requeued)} {why}")


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


def _knob_lines(host: DrillHost, knob: str) -> list[dict[str, Any]]:
    return [r for r in host.log_events("*", "faults.knob") if r.get("knob") == knob]


def _live_workers(host: DrillHost) -> list[str]:
    out = []
    for name in host.worker_names:
        try:
            if host.worker(name).alive():
                out.append(name)
        except KeyError:
            continue  # not started (yet)
    return out


class TracingDisabledDriver(BaseDriver):
    """Tracing off in the drill's workers (runbook 3.2.1), while the engine is really down: the
    retries are in the metrics and logs, and nothing reaches the trace backend."""

    name = "tracing_disabled"

    def __init__(self, spec: TracingDisabled) -> None:
        self.spec = spec
        self.engine = EngineUnreachableDriver() if spec.engine_down else None

    def worker_env(self, worker_index: int) -> dict[str, str]:
        # The runner turns tracing on for every drill worker; this fault is that it is not.
        return {"WORDLOOM_TRACING_ENABLED": "0"}

    def arm(self, host: DrillHost) -> FaultProof:
        live = _live_workers(host)
        off = {r.get("worker_id") for r in host.log_events("*", "tracing.disabled")}
        on = [r for r in host.log_events("*", "tracing.config") if r.get("worker_id") not in off]
        if on or len(off) < len(live):
            return FaultProof(False, f"{len(off)} of {len(live)} worker(s) logged tracing.disabled: tracing is still on")
        first = host.log_events("*", "tracing.disabled")[0]
        evidence = f"{len(off)} worker(s) logged tracing.disabled: {first.get('msg')}"
        if self.engine is None:
            return FaultProof(True, evidence)
        engine = self.engine.arm(host)
        return FaultProof(engine.armed, f"{evidence}; engine: {engine.evidence}")

    def revert(self, host: DrillHost) -> FaultProof:
        if self.engine is None:
            return FaultProof(False, "tracing lives only in the drill's worker processes, which are stopped at the end")
        engine = self.engine.revert(host)
        return FaultProof(engine.armed, f"engine: {engine.evidence}; tracing is off only in the drill's workers, stopped at the end")


def doctor_otlp(host: DrillHost) -> tuple[bool, str]:
    """`drillui doctor`'s own otlp.protocol check, on the stack's endpoint and the workers' logs."""
    from drillui.doctor.checks_tracing import check_otlp_protocol
    from drillui.doctor.model import DoctorContext, DoctorInputs

    logs = []
    for name in host.worker_names:
        try:
            logs.append(host.worker(name).log_path)
        except KeyError:
            continue
    inputs = DoctorInputs(endpoints=host.endpoints, log_files=tuple(logs), timeout=2.0)
    with http.client(timeout=2.0) as client:
        result = check_otlp_protocol(DoctorContext(inputs, client))
    return result.ok, f"drillui doctor otlp.protocol: {result.status.upper()}: {result.detail}"


class OtlpMismatchDriver(BaseDriver):
    """The workers export OTLP/HTTP where nothing speaks it (runbook 3.2.1: 4317 is gRPC, 4318 is
    HTTP). Proved by the workers' own startup line and by `drillui doctor`'s check, which must
    fail now and pass once the workers are restarted on the stack's endpoint (the revert)."""

    name = "otlp_mismatch"

    def __init__(self, spec: OtlpMismatch) -> None:
        self.spec = spec
        self.port: GrpcLikePort | None = None
        self.endpoint = ""
        self.doctor: list[str] = []

    def prepare(self, host: DrillHost) -> None:
        if self.spec.mode == "grpc_port":
            self.port = GrpcLikePort()
            self.endpoint = self.port.url
            host.say(f"an OTLP gRPC-like port listens on {self.endpoint}: it answers HTTP/1.1 with HTTP/2 frames")
        else:
            self.endpoint = host.endpoints.otlp_endpoint.rstrip("/") + "/v1/traces"
            host.say(f"the workers get the receiver's full URL as their base endpoint: {redact_url(self.endpoint)}")

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint}

    def arm(self, host: DrillHost) -> FaultProof:
        lines = host.log_events("*", "tracing.startup")
        bad = [r for r in lines if r.get("collector_reachable") is False]
        ok, detail = doctor_otlp(host)
        self.doctor.append("pass" if ok else "fail")
        armed = bool(lines) and len(bad) == len(lines) and not ok
        said = ", ".join(sorted({str(r.get("otlp_target")) for r in bad})) or "none"
        return FaultProof(armed, f"{len(bad)} of {len(lines)} worker(s) logged tracing.startup collector_reachable=false "
                                 f"(target {redact_url(said)}); {redact_text(detail)}")

    def revert(self, host: DrillHost) -> FaultProof:
        live = _live_workers(host)
        if live:
            host.say("restarting the workers on the stack's OTLP/HTTP endpoint, as the fix is")
            host.restart_workers({"OTEL_EXPORTER_OTLP_ENDPOINT": host.endpoints.otlp_endpoint})
        self.release()
        if not live:
            host.probe("doctor_otlp_protocol", self.doctor)
            return FaultProof(False, "no worker runs with the wrong endpoint any more; the gRPC-like port is closed")
        ok, detail = doctor_otlp(host)
        self.doctor.append("pass" if ok else "fail")
        host.probe("doctor_otlp_protocol", self.doctor)
        return FaultProof(not ok, redact_text(detail))

    def release(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None


class StaleObsSchemaDriver(BaseDriver):
    """Workers that speak the previous observability schema, as old code does (runbook 3.1.3)."""

    name = "stale_obs_schema"

    def __init__(self, spec: StaleObsSchema) -> None:
        self.spec = spec

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {"OUTBOX_EXPERIMENT_OBS_SCHEMA": self.spec.emits}

    def arm(self, host: DrillHost) -> FaultProof:
        live = _live_workers(host)
        said = [r for r in host.log_events("*", "obs.schema") if r.get("obs_schema") == self.spec.emits]
        knobs = _knob_lines(host, "OUTBOX_EXPERIMENT_OBS_SCHEMA")
        armed = len(said) >= len(live) and len(knobs) >= len(live) and bool(live)
        first = str(said[0].get("msg")) if said else "no startup line says so"
        return FaultProof(armed, f"{len(said)} of {len(live)} worker(s) started on the stale schema: {first}")

    def revert(self, host: DrillHost) -> FaultProof:
        return FaultProof(False, "the schema lives only in the drill's worker processes, which are stopped at the end")


class BatchResultEarlyDriver(PoisonDocumentDriver):
    """The knob of runbook manual-test/1 on every worker, and a batch where a document fails."""

    name = "batch_result_early"

    def __init__(self, spec: BatchResultEarly) -> None:
        super().__init__(PoisonDocument(type="poison_document", count=spec.poison))

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {"OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY": "1"}

    def arm(self, host: DrillHost) -> FaultProof:
        live = _live_workers(host)
        knobs = _knob_lines(host, "OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY")
        poison = super().arm(host)
        armed = bool(live) and len(knobs) >= len(live) and poison.armed
        return FaultProof(armed, f"{len(knobs)} of {len(live)} worker(s) logged OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY=true; {poison.evidence}")


class PostgresUnavailableDriver(BaseDriver):
    """The stack closes the relay in front of Postgres: the workers' connections are cut and new
    ones refused, while drillui's own direct connection (its probes, its trigger rows) goes on."""

    name = "postgres_unavailable"

    def unsupported(self, host: DrillHost) -> str | None:
        if host.postgres is None or not host.postgres.managed:
            return ("this drill closes the relay the embedded stack puts in front of Postgres, and this infrastructure has "
                    "none (--infra docker, or DATABASE_URL given): run it on the embedded stack")
        return None

    def _refused(self, host: DrillHost) -> tuple[bool, str]:
        url = host.endpoints.database_url
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return True, f"connect {redact_url(url)} -> {type(exc).__name__}: {redact_text(first)}"
        return False, f"connect {redact_url(url)} -> accepted"

    def arm(self, host: DrillHost) -> FaultProof:
        assert host.postgres is not None
        host.postgres.set_reachable(False)
        refused, what = self._refused(host)
        direct = host.db().execute("SELECT 1 AS ok").fetchone()
        return FaultProof(refused and bool(direct), f"{what}; drillui's direct connection answers")

    def revert(self, host: DrillHost) -> FaultProof:
        assert host.postgres is not None
        host.postgres.set_reachable(True)
        refused, what = self._refused(host)
        return FaultProof(refused, what)


class EngineSlowDriver(BaseDriver):
    """The engine's relay holds every request longer than the workers wait for an answer."""

    name = "engine_slow"

    def __init__(self, spec: EngineSlow) -> None:
        self.spec = spec

    def unsupported(self, host: DrillHost) -> str | None:
        if not isinstance(host.engine, LatencySwitch):
            return ("this drill slows the engine down through the embedded stack's relay, and this infrastructure's engine "
                    "has none (--infra docker, or ES_URL given): run it on the embedded stack")
        return None

    def worker_env(self, worker_index: int) -> dict[str, str]:
        return {"ES_TIMEOUT": str(self.spec.timeout)}

    def _timed(self, host: DrillHost) -> tuple[float, str]:
        began = time.monotonic()
        _, what = probe_engine(host.es_url, timeout=self.spec.latency + 5)
        took = time.monotonic() - began
        return took, f"{what} in {took:.2f}s"

    def arm(self, host: DrillHost) -> FaultProof:
        switch = host.engine
        assert isinstance(switch, LatencySwitch)
        switch.set_latency(self.spec.latency)
        took, what = self._timed(host)
        return FaultProof(took >= self.spec.timeout, f"latency {self.spec.latency:g}s set on the engine's relay: {what}; "
                                                     f"the workers give up after ES_TIMEOUT={self.spec.timeout:g}s")

    def revert(self, host: DrillHost) -> FaultProof:
        switch = host.engine
        assert isinstance(switch, LatencySwitch)
        switch.set_latency(0)
        took, what = self._timed(host)
        return FaultProof(took >= self.spec.timeout, f"latency back to 0: {what}")


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
            return EngineUnreachableDriver(fault)
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
        case TracingDisabled():
            return TracingDisabledDriver(fault)
        case OtlpMismatch():
            return OtlpMismatchDriver(fault)
        case StaleObsSchema():
            return StaleObsSchemaDriver(fault)
        case BatchResultEarly():
            return BatchResultEarlyDriver(fault)
        case PostgresUnavailable():
            return PostgresUnavailableDriver()
        case EngineSlow():
            return EngineSlowDriver(fault)
    raise UsageError(f"fault type {fault.type!r} has no driver")
