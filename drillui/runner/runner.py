"""The drill runner: the one place that knows the order of a drill.

prepare -> start workers -> scrape "before" -> arm the fault (and prove it) -> write the trigger
events -> run for the drill's bounded time -> scrape "after" -> revert the fault -> let the
trigger events settle -> scrape "recovered" -> stop the workers -> query traces by the run's ids
-> check the environment is clean -> write the evidence -> compute the verdict from the files.

The CLI and the dashboard drive this same class; the dashboard just listens to its progress
events from a worker thread. Whatever happens (an error, a stop request), the fault is
reverted and the workers are stopped before `run` returns or raises.
"""

from __future__ import annotations

import platform
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg

from drillui import __version__
from drillui.errors import DrillError, StackError
from drillui.evidence.snapshot import Snapshot, redact_env, redact_url
from drillui.evidence.verdict import Verdict, evaluate, trace_check_name
from drillui.faults.base import FaultContext, FaultProof
from drillui.faults.drivers import driver_for
from drillui.runner.infra import Infrastructure
from drillui.runner.workers import WorkerProcess
from drillui.scenarios import Drill
from drillui.sources.metrics import MetricsScraper
from drillui.sources.traces import JaegerClient, TraceQueryError
from worker.contract import DEFAULT_SERVICE_NAME
from worker.db import connect, ensure_schema, insert_event

Phase = Literal["preparing", "starting", "arming", "armed", "running", "recovering", "collecting", "verified", "failed"]

TRACE_WAIT_SECONDS = 6.0
MAX_PIVOTS = 5
DRILL_CORRELATION_PREFIX = "drillui:"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    message: str
    elapsed: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOptions:
    snapshots: Path = Path("snapshots")
    duration: float | None = None
    trigger_count: int | None = None
    op: Literal["upsert", "delete"] | None = None
    bulk_size: int | None = None
    scrape_delay: float = 0.0
    force_clean: bool = False


class DirtyState(DrillError):
    title = "Environment not clean"
    exit_code = 2


class DrillRunner:
    def __init__(
        self,
        drill: Drill,
        infra: Infrastructure,
        options: RunOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.drill = drill
        self.infra = infra
        self.options = options or RunOptions()
        self.on_progress = on_progress or (lambda p: None)
        self.stop_requested = stop or threading.Event()
        self.fault = driver_for(drill.fault)
        self.workers: list[WorkerProcess] = []
        self.snapshot: Snapshot | None = None
        self._t0 = time.monotonic()
        self._timeline: dict[str, Any] = {}
        self._fault_record: dict[str, Any] = {}
        self._armed = False
        self.trigger_ids: list[uuid.UUID] = []
        self.entity_ids: list[uuid.UUID] = []

    # ---- helpers ----------------------------------------------------------------------------

    def _say(self, phase: Phase, message: str, **data: Any) -> None:
        self.on_progress(Progress(phase, message, time.monotonic() - self._t0, data))

    def _mark(self, name: str) -> None:
        self._timeline[name] = time.time()

    @property
    def duration(self) -> float:
        return self.options.duration if self.options.duration is not None else self.drill.duration

    @property
    def trigger_count(self) -> int:
        return self.options.trigger_count or self.drill.workload.trigger_count

    @property
    def op(self) -> str:
        return self.options.op or self.drill.workload.op

    @property
    def index(self) -> str:
        assert self.snapshot is not None
        return f"drillui-{self.drill.id}-{self.snapshot.run_id}".lower().replace("_", "-")

    def _fault_ctx(self) -> FaultContext:
        return FaultContext(es_url=self.infra.endpoints.es_url, index=self.index, engine=self.infra.engine)

    # ---- the run ----------------------------------------------------------------------------

    def run(self) -> Verdict:
        self.snapshot = Snapshot.create(self.options.snapshots, self.drill.id)
        self._mark("started_at")
        self._say("preparing", f"run {self.snapshot.run_id}: evidence in {self.snapshot.path}", snapshot=str(self.snapshot.path))
        conn = connect(self.infra.endpoints.database_url)
        try:
            try:
                self._prepare(conn)
                self._start_workers()
                self._scrape("before")
                self._arm()
                if self._armed:
                    self._trigger(conn)
                    self._run_window(conn)
                    self._scrape("after")
            finally:
                self._revert()
            if self._armed:
                self._recover(conn)
                self._scrape("recovered")
            self._probe(conn)
        finally:
            self._stop_workers()
            conn.close()
        self._collect_traces()
        self._check_clean()
        return self._finish()

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        ensure_schema(conn)
        projection = self.drill.workload.projection
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
            "count(*) FILTER (WHERE status = 'processing') AS processing "
            "FROM outbox WHERE projection = %s AND status IN ('pending', 'processing')",
            (projection,),
        ).fetchone()
        assert row is not None
        if (row["pending"] or row["processing"]) and not self.options.force_clean:
            raise DirtyState(
                f"the outbox already has {row['pending']} pending and {row['processing']} processing "
                f"{projection} row(s) from an earlier run",
                hint=f"run `drillui clean {self.drill.id}` or pass --force-clean",
            )
        if self.options.force_clean:
            n = conn.execute(
                "DELETE FROM outbox WHERE projection = %s AND status IN ('pending', 'processing') "
                "AND correlation_id LIKE %s",
                (projection, DRILL_CORRELATION_PREFIX + "%"),
            ).rowcount
            if n:
                self._say("preparing", f"removed {n} leftover drill event(s)")
        if projection == "search_index_to_elastic":
            resp = httpx.put(
                f"{self.infra.endpoints.es_url}/{self.index}",
                json={"mappings": {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}},
                timeout=5,
            )
            if resp.status_code >= 300:
                raise StackError(f"cannot create index {self.index}: HTTP {resp.status_code} {resp.text[:200]}")
            self._say("preparing", f"index {self.index} created")

    def _worker_env(self, index: int, name: str) -> dict[str, str]:
        assert self.snapshot is not None
        e = self.infra.endpoints
        w = self.drill.workload
        env = {
            "DATABASE_URL": e.database_url,
            "ES_URL": e.es_url,
            "ES_INDEX": self.index,
            "OUTBOX_PROJECTION": w.projection,
            "OUTBOX_BATCH_SIZE": str(self.options.bulk_size or w.batch_size),
            "OUTBOX_USE_ES_BULK": "1" if w.bulk else "0",
            "OUTBOX_WORKER_ID": f"{name}@{self.snapshot.run_id}",
            "WORDLOOM_TRACING_ENABLED": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": e.otlp_endpoint,
            "OTEL_SERVICE_NAME": DEFAULT_SERVICE_NAME,
            "OTEL_SDK_DISABLED": "false",
            "ENV": "drill",
        }
        env.update(self.fault.worker_env(index))
        env.update(self.drill.workload.workers[index].env)
        return env

    def _start_workers(self) -> None:
        assert self.snapshot is not None
        specs = self.drill.workload.workers
        self._say("starting", f"starting {len(specs)} worker(s)")
        for i, spec in enumerate(specs):
            wp = WorkerProcess(spec.name, self._worker_env(i, spec.name), self.snapshot.log_path(spec.name))
            self.workers.append(wp)
            wp.start()
        for wp in self.workers:
            url = wp.wait_ready()
            self._say(
                "starting",
                f"worker {wp.name} up (pid {wp.pid}, metrics {url})",
                worker=wp.name,
                worker_id=wp.worker_id,
                pid=wp.pid,
                metrics_url=url,
                log_path=str(wp.log_path),
            )

    def _scrape(self, phase: str) -> None:
        assert self.snapshot is not None
        if self.options.scrape_delay and phase != "before":
            time.sleep(self.options.scrape_delay)
        single = len(self.drill.workload.workers) == 1
        for wp in self.workers:
            if not wp.alive() or wp.metrics_url is None:
                continue
            with MetricsScraper(wp.metrics_url) as scraper:
                snap = scraper.scrape()
            self.snapshot.metrics_path(phase, wp.name, single).write_text(snap.text, encoding="utf-8")
        self._mark(f"scraped_{phase}_at")

    def _arm(self) -> None:
        self._say("arming", f"arming fault {self.drill.fault.type}")
        proof = self.fault.arm(self._fault_ctx())
        self._fault_record["arm"] = proof.to_json()
        self._armed = proof.armed
        self._mark("armed_at")
        if proof.armed:
            self._say("armed", f"fault armed: {proof.evidence}", armed_at=self._timeline["armed_at"])
        else:
            self._say("failed", f"FAULT NOT ARMED: {proof.evidence}: the drill cannot show anything and fails")

    def _trigger(self, conn: psycopg.Connection[Any]) -> None:
        assert self.snapshot is not None
        corr = f"{DRILL_CORRELATION_PREFIX}{self.snapshot.run_id}"
        for n in range(self.trigger_count):
            entity = uuid.uuid4()
            payload = {"title": f"drill {self.drill.id} event {n}", "n": n}
            eid = insert_event(
                conn, projection=self.drill.workload.projection, op=self.op, entity_id=entity, payload=payload, correlation_id=corr
            )
            self.trigger_ids.append(eid)
            self.entity_ids.append(entity)
        self._mark("triggered_at")
        shown = ", ".join(str(i) for i in self.trigger_ids[:3]) + (" ..." if len(self.trigger_ids) > 3 else "")
        self._say("running", f"wrote {len(self.trigger_ids)} {self.op} event(s): {shown}", outbox_event_ids=[str(i) for i in self.trigger_ids])

    def _statuses(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        rows = conn.execute(
            "SELECT status, count(*) AS n FROM outbox WHERE id = ANY(%s) GROUP BY status", (self.trigger_ids,)
        ).fetchall()
        return {r["status"]: r["n"] for r in rows}

    def _run_window(self, conn: psycopg.Connection[Any]) -> None:
        end = time.monotonic() + self.duration
        self._say("running", f"workers run with the fault armed for {self.duration:g}s")
        while time.monotonic() < end:
            if self.stop_requested.wait(min(1.0, max(0.0, end - time.monotonic()))):
                self._say("failed", "stop requested: ending the drill early")
                return
            alive = sum(w.alive() for w in self.workers)
            counts = self._statuses(conn)
            self._say("running", f"{alive} worker(s) alive; trigger events {_fmt(counts)}", statuses=counts, alive=alive)

    def _revert(self) -> None:
        if "arm" not in self._fault_record:
            return
        self._say("recovering", f"reverting fault {self.drill.fault.type}")
        try:
            proof = self.fault.revert(self._fault_ctx())
        except Exception as exc:  # noqa: BLE001 - recorded as a failed revert, then re-raised below
            self._fault_record["revert"] = FaultProof(True, f"revert failed: {type(exc).__name__}: {exc}").to_json()
            self._say("failed", f"COULD NOT REVERT the fault: {exc}: the environment is dirty")
            raise
        self._fault_record["revert_proof"] = proof.to_json()
        self._mark("reverted_at")
        self._say("recovering", f"fault reverted: {proof.evidence}", reverted_at=self._timeline["reverted_at"])

    def _recover(self, conn: psycopg.Connection[Any]) -> None:
        deadline = time.monotonic() + self.drill.recovery_timeout
        while True:
            counts = self._statuses(conn)
            unsettled = counts.get("pending", 0) + counts.get("processing", 0)
            if not unsettled:
                self._say("recovering", f"all trigger events settled: {_fmt(counts)}", statuses=counts)
                break
            if time.monotonic() > deadline or self.stop_requested.is_set():
                self._say("recovering", f"{unsettled} trigger event(s) still unsettled after {self.drill.recovery_timeout:g}s: {_fmt(counts)}")
                break
            time.sleep(0.2)
        self._mark("recovered_at")

    def _probe(self, conn: psycopg.Connection[Any]) -> None:
        assert self.snapshot is not None
        probes: dict[str, Any] = {}
        if self.trigger_ids:
            rows = conn.execute(
                "SELECT id, status, attempts, last_reason, claim_batch_id FROM outbox WHERE id = ANY(%s) ORDER BY seq",
                (self.trigger_ids,),
            ).fetchall()
            probes["trigger_status"] = [r["status"] for r in rows]
            probes["trigger_rows"] = [
                {"outbox_event_id": str(r["id"]), "status": r["status"], "attempts": r["attempts"], "last_reason": r["last_reason"]}
                for r in rows
            ]
        self.snapshot.write_json("_probes.json", probes)

    def _stop_workers(self) -> None:
        for wp in self.workers:
            code = wp.stop()
            if code is not None:
                self._say("collecting", f"worker {wp.name} stopped (exit {code})")

    # ---- traces -----------------------------------------------------------------------------

    def _pivots(self) -> dict[str, list[str]]:
        """The ids to query by: the trigger events, and the claim batches that carried them."""
        assert self.snapshot is not None
        from drillui.evidence.verdict import load_logs

        wanted = {str(i) for i in self.trigger_ids}
        batches: list[str] = []
        for rec in load_logs(self.snapshot):
            if rec.fields.get("outbox_event_id") in wanted:
                b = rec.fields.get("claim_batch_id")
                if b and b not in batches:
                    batches.append(b)
        return {
            "outbox_event_id": [str(i) for i in self.trigger_ids][:MAX_PIVOTS],
            "entity_id": [str(i) for i in self.entity_ids][:MAX_PIVOTS],
            "claim_batch_id": batches[:MAX_PIVOTS],
        }

    def _collect_traces(self) -> None:
        assert self.snapshot is not None
        pivots = self._pivots()
        self.snapshot.write_json(
            "_ids.json",
            {
                "outbox_event_id": pivots["outbox_event_id"][0] if pivots["outbox_event_id"] else None,
                "claim_batch_id": pivots["claim_batch_id"][0] if pivots["claim_batch_id"] else None,
                "outbox_event_ids": [str(i) for i in self.trigger_ids],
                "entity_ids": [str(i) for i in self.entity_ids],
                "claim_batch_ids": pivots["claim_batch_id"],
                "worker_ids": [w.worker_id for w in self.workers],
                "index": self.index,
            },
        )
        if not self.drill.expect.traces:
            return
        self._say("collecting", "querying traces by the run's ids")
        export_traces(self.snapshot, self.drill, self.infra.endpoints.jaeger_url, pivots,
                      start=datetime.fromtimestamp(self._timeline["started_at"], UTC) - timedelta(seconds=5),
                      wait=TRACE_WAIT_SECONDS)

    # ---- end --------------------------------------------------------------------------------

    def _check_clean(self) -> None:
        problems: list[str] = []
        ok, what = _engine_ok(self.infra.endpoints.es_url)
        if not ok:
            problems.append(f"engine unreachable ({what})")
        left = [w.name for w in self.workers if w.alive()]
        if left:
            problems.append(f"worker process(es) still running: {', '.join(left)}")
        with connect(self.infra.endpoints.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM outbox WHERE status = 'processing' AND id = ANY(%s)", (self.trigger_ids,)
            ).fetchone()
            if row and row["n"]:
                problems.append(f"{row['n']} trigger row(s) left processing")
        revert = self._fault_record.get("revert_proof")
        if revert and revert.get("armed"):
            problems.append(f"fault still in force: {revert.get('evidence')}")
        if "revert" not in self._fault_record:
            self._fault_record["revert"] = FaultProof(bool(problems), "; ".join(problems) or f"clean: {what}; no worker left; no row processing").to_json()
        if problems:
            self._say("failed", "ENVIRONMENT NOT CLEAN: " + "; ".join(problems))

    def _finish(self) -> Verdict:
        assert self.snapshot is not None
        self._mark("finished_at")
        self._timeline["duration_seconds"] = round(self._timeline["finished_at"] - self._timeline["started_at"], 3)
        e = self.infra.endpoints
        self.snapshot.write_json(
            "_recipe.json",
            {
                "scenario": self.drill.id,
                "letter": self.drill.letter,
                "title": self.drill.title,
                "runbook": self.drill.runbook,
                "run_id": self.snapshot.run_id,
                "drill": self.drill.model_dump(mode="json"),
                "parameters": {
                    "duration": self.duration,
                    "trigger_count": self.trigger_count,
                    "op": self.op,
                    "bulk_size": self.options.bulk_size,
                    "scrape_delay": self.options.scrape_delay,
                },
                "workers": [
                    {"name": w.name, "worker_id": w.worker_id, "env": redact_env({k: v for k, v in w.env.items()})}
                    for w in self.workers
                ],
                "infrastructure": {
                    "mode": self.infra.mode,
                    "database": redact_url(e.database_url),
                    "es_url": redact_url(e.es_url),
                    "jaeger_url": redact_url(e.jaeger_url),
                    "otlp_endpoint": redact_url(e.otlp_endpoint),
                },
                "versions": {"drillui": __version__, "python": platform.python_version(), **self.infra.versions()},
            },
        )
        self.snapshot.write_json("_fault.json", self._fault_record)
        self.snapshot.write_json("_timeline.json", self._timeline)
        verdict = evaluate(self.snapshot, self.drill)
        self.snapshot.write_json("_result.json", verdict.to_json())
        self._say(
            "verified" if verdict.passed else "failed",
            f"verdict: {'PASS' if verdict.passed else 'FAIL'}",
            verdict=verdict.to_json(),
        )
        return verdict


def export_traces(
    snapshot: Snapshot,
    drill: Drill,
    jaeger_url: str,
    pivots: dict[str, list[str]],
    *,
    start: datetime,
    wait: float = 0.0,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Query the trace backend for each trace check by the run's ids; write `_exports/`."""
    index: list[dict[str, Any]] = []
    with JaegerClient(jaeger_url) as client:
        _export_with(client, snapshot, drill, pivots, start=start, wait=wait, limit=limit, index=index)
    snapshot.write_json("_exports/_queries.json", index)
    return index


def _export_with(
    client: JaegerClient,
    snapshot: Snapshot,
    drill: Drill,
    pivots: dict[str, list[str]],
    *,
    start: datetime,
    wait: float,
    limit: int,
    index: list[dict[str, Any]],
) -> None:
    for check in drill.expect.traces:
        name = trace_check_name(check)
        values = pivots.get(check.by) or []
        for n, value in enumerate(values):
            attr = "wordloom.obs_schema" if check.by == "obs_schema" else f"wordloom.{check.by}"
            deadline = time.monotonic() + wait
            while True:
                end = datetime.now(UTC) + timedelta(seconds=5)
                try:
                    res = client.find_traces(DEFAULT_SERVICE_NAME, check.operation, {attr: value}, start=start, end=end, limit=limit)
                    error = None
                except TraceQueryError as exc:
                    res, error = None, str(exc)
                if (res is not None and res.traces) or time.monotonic() >= deadline:
                    break
                time.sleep(0.3)
            file = f"{name}-{n + 1}.json"
            entry: dict[str, Any] = {"name": name, "file": file, "operation": check.operation, "attributes": {attr: value}}
            if res is not None:
                (snapshot.path / "_exports" / file).write_text(_dump(res.body), encoding="utf-8")
                entry.update(api=res.api, url=res.url, status_code=res.status_code, traces=len(res.traces))
            else:
                entry.update(api=None, error=error)
            index.append(entry)


def _dump(body: Any) -> str:
    import json

    return json.dumps(body, indent=1)


def _engine_ok(es_url: str) -> tuple[bool, str]:
    from drillui.faults.base import probe_engine

    return probe_engine(es_url)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
