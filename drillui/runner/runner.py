"""The drill runner: the one place that knows the order of a drill.

prepare -> start workers -> scrape "before" -> arm the fault (and prove it) -> write the trigger
events -> run for the drill's bounded time -> scrape "after" -> revert the fault -> let the
trigger events settle -> scrape "recovered" -> stop the workers -> query traces by the run's ids
-> check the environment is clean -> write the evidence -> compute the verdict from the files.

The CLI and the dashboard drive this same class; the dashboard listens to its progress events
from a worker thread. Whatever happens (an error, a stop request), the fault is reverted and the
workers are stopped before `run` returns or raises. Fault drivers fill in the steps their fault
needs through the `DrillHost` methods below (write triggers, start or kill a worker, probe).
"""

from __future__ import annotations

import json
import os
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
from drillui.evidence.summary import write_summary
from drillui.evidence.verdict import Verdict, evaluate, load_logs, trace_check_name
from drillui.faults.base import EngineSwitch, FaultProof, probe_engine
from drillui.faults.drivers import driver_for
from drillui.runner.cleanup import DRILL_CORRELATION_PREFIX, OWNER_ENV_MARK, RUN_ENV_MARK, clean, find_dirt
from drillui.runner.infra import Infrastructure
from drillui.runner.workers import WorkerProcess
from drillui.scenarios import Drill
from drillui.sources.errors import SourceError
from drillui.sources.metrics import MetricsScraper
from drillui.sources.traces import JaegerClient, TraceQueryError
from worker.contract import DEFAULT_SERVICE_NAME
from worker.db import connect, ensure_schema, insert_event

Phase = Literal["preparing", "starting", "arming", "armed", "running", "recovering", "collecting", "verified", "failed"]

TRACE_WAIT_SECONDS = 6.0
MAX_PIVOTS = 5
SAMPLE_INTERVAL_SECONDS = 0.25
INDEX_MAPPING: dict[str, Any] = {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}


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
    metrics_port: int | None = None
    """First worker's /metrics port (e.g. one Prometheus scrapes); None picks free ports."""


class DirtyState(DrillError):
    title = "Environment not clean"
    exit_code = 2


class _Sampler:
    """Scrapes every live worker a few times a second for the drill's peak checks."""

    def __init__(self, runner: DrillRunner, selectors: list[str]) -> None:
        self.runner = runner
        self.selectors = selectors
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drill-sampler", daemon=True)

    def start(self) -> None:
        if self.selectors:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
            for wp in list(self.runner.workers):
                if not wp.alive() or wp.metrics_url is None:
                    continue
                try:
                    with MetricsScraper(wp.metrics_url, timeout=1.0) as s:
                        snap = s.scrape()
                except SourceError:
                    continue  # the worker is stopping or was killed: its absence is the evidence
                self.rows.append({"t": snap.taken_at, "worker": wp.name, "values": {sel: snap.value(sel) for sel in self.selectors}})

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


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
        self.worker_names = [w.name for w in drill.workload.workers]
        self.workers: list[WorkerProcess] = []
        self.snapshot: Snapshot | None = None
        self.triggered = False
        self.trigger_ids: list[uuid.UUID] = []
        self.entity_ids: list[uuid.UUID] = []
        self._conn: psycopg.Connection[Any] | None = None
        self._t0 = time.monotonic()
        self._timeline: dict[str, Any] = {}
        self._fault_record: dict[str, Any] = {}
        self._probes: dict[str, Any] = {}
        self._env_overrides: dict[str, str] = {}
        self._armed = False
        self._sampler = _Sampler(self, [m.selector for m in drill.expect.metrics if m.over == "peak"])

    # ---- DrillHost: what fault drivers may use -------------------------------------------

    @property
    def es_url(self) -> str:
        return self.infra.endpoints.es_url

    @property
    def engine(self) -> EngineSwitch | None:
        return self.infra.engine

    @property
    def index(self) -> str:
        assert self.snapshot is not None
        return f"drillui-{self.drill.id}-{self.snapshot.run_id}".lower().replace("_", "-")

    @property
    def trigger_count(self) -> int:
        return self.options.trigger_count or self.drill.workload.trigger_count

    @property
    def op(self) -> str:
        return self.options.op or self.drill.workload.op

    @property
    def duration(self) -> float:
        return self.options.duration if self.options.duration is not None else self.drill.duration

    def db(self) -> psycopg.Connection[Any]:
        assert self._conn is not None
        return self._conn

    def say(self, message: str) -> None:
        self._say(self._phase, message)

    def trigger(self) -> None:
        for n in range(self.trigger_count):
            payload = {"title": f"drill {self.drill.id} event {n}", "n": n}
            self.insert(self.op, uuid.uuid4(), payload)
        self.triggered = True

    def insert(
        self, op: str, entity_id: uuid.UUID, payload: Any = None, *, delay: float = 0.0, projection: str | None = None
    ) -> uuid.UUID:
        assert self.snapshot is not None
        eid = insert_event(
            self.db(),
            projection=projection or self.drill.workload.projection,
            op=op,
            entity_id=entity_id,
            payload=payload,
            correlation_id=f"{DRILL_CORRELATION_PREFIX}{self.snapshot.run_id}",
        )
        if delay:
            self.db().execute("UPDATE outbox SET next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s", (delay, eid))
        self.trigger_ids.append(eid)
        if entity_id not in self.entity_ids:
            self.entity_ids.append(entity_id)
        self.triggered = True
        self._timeline.setdefault("triggered_at", time.time())
        self._say(self._phase, f"wrote {op} event {eid} (entity {entity_id})" + (f", due in {delay:g}s" if delay else ""),
                  outbox_event_ids=[str(i) for i in self.trigger_ids])
        return eid

    def worker(self, name: str) -> WorkerProcess:
        for wp in self.workers:
            if wp.name == name:
                return wp
        raise KeyError(f"worker {name} has not been started")

    def start_worker(self, name: str) -> WorkerProcess:
        assert self.snapshot is not None
        index = self.worker_names.index(name)
        wp = WorkerProcess(name, self._worker_env(index, name), self.snapshot.log_path(name))
        # A restarted worker takes its predecessor's place (same name, same log file).
        self.workers = [w for w in self.workers if w.name != name] + [wp]
        wp.start()
        url = wp.wait_ready()
        self._say(
            self._phase,
            f"worker {wp.name} up (pid {wp.pid}, metrics {url})",
            worker=wp.name,
            worker_id=wp.worker_id,
            pid=wp.pid,
            metrics_url=url,
            log_path=str(wp.log_path),
        )
        return wp

    def restart_workers(self, env: dict[str, str]) -> None:
        """Stop every live worker cleanly and start it again with `env` on top of its own."""
        self._env_overrides = dict(env)
        for wp in [w for w in self.workers if w.alive()]:
            wp.stop()
            self.start_worker(wp.name)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        self.say(f"waiting for {what} (at most {timeout:g}s)")
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.stop_requested.is_set():
                self.say(f"gave up waiting for {what}")
                return False
            time.sleep(0.1)
        return True

    def statuses(self) -> dict[str, int]:
        if not self.trigger_ids:
            return {}
        rows = self.db().execute(
            "SELECT status, count(*) AS n FROM outbox WHERE id = ANY(%s) GROUP BY status", (self.trigger_ids,)
        ).fetchall()
        return {r["status"]: r["n"] for r in rows}

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.statuses()
            if counts and not counts.get("pending") and not counts.get("processing"):
                return True
            if time.monotonic() > deadline or self.stop_requested.is_set():
                return False
            time.sleep(0.1)

    def probe(self, name: str, value: Any) -> None:
        self._probes[name] = value

    def log_events(self, worker: str, event: str) -> list[dict[str, Any]]:
        assert self.snapshot is not None
        out: list[dict[str, Any]] = []
        for wp in self.workers:
            if worker not in ("*", wp.name):
                continue
            try:
                text = wp.log_path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == event:
                    out.append(rec)
        return out

    # ---- helpers ----------------------------------------------------------------------------

    _phase: Phase = "preparing"

    def _say(self, phase: Phase, message: str, **data: Any) -> None:
        self._phase = phase
        if self.workers:
            # Every event says how many workers are alive: a live view must see a kill at once.
            data.setdefault("alive", sum(w.alive() for w in self.workers))
        progress = Progress(phase, message, time.monotonic() - self._t0, data)
        if self.snapshot is not None:
            # The narration is evidence too: the folder must tell the story without a terminal.
            with open(self.snapshot.path / "_progress.log", "a", encoding="utf-8") as fh:
                fh.write(f"[{progress.elapsed:6.1f}s] {phase:<10} {message}\n")
        self.on_progress(progress)

    def _mark(self, name: str) -> None:
        self._timeline[name] = time.time()

    # ---- the run ----------------------------------------------------------------------------

    def run(self) -> Verdict:
        self.snapshot = Snapshot.create(self.options.snapshots, self.drill.id)
        self._mark("started_at")
        self._say("preparing", f"run {self.snapshot.run_id}: evidence in {self.snapshot.path}", snapshot=str(self.snapshot.path))
        self._conn = connect(self.infra.endpoints.database_url)
        try:
            try:
                self._prepare()
                self._say("starting", f"starting worker(s) {', '.join(self.fault.initial_workers(self.worker_names))}")
                for name in self.fault.initial_workers(self.worker_names):
                    self.start_worker(name)
                self._scrape("before")
                self._sampler.start()
                self._arm()
                if self._armed:
                    self._window()
                    self._scrape("after")
                    self._probes["trigger_status_after"] = self._trigger_statuses()
            finally:
                self._revert()
            if self._armed and not self.stop_requested.is_set():
                self.fault.recover(self)
                self._recover()
                self._scrape("recovered")
            self._probe_final()
        finally:
            self._sampler.stop()
            self._stop_workers()
            self._conn.close()
        self._collect_traces()
        self._check_clean()
        return self._finish()

    def _prepare(self) -> None:
        conn = self.db()
        ensure_schema(conn)
        projection = self.drill.workload.projection
        if self.options.force_clean:
            for line in clean(self.infra):
                self._say("preparing", f"clean: {line}")
        dirt = find_dirt(self.infra, conn)
        if dirt:
            raise DirtyState(
                "; ".join(d.what for d in dirt),
                hint=f"run `drillui clean {self.drill.id}` or pass --force-clean",
            )
        if projection == "search_index_to_elastic":
            url = f"{self.es_url}/{self.index}"
            try:
                resp = httpx.put(url, json={"mappings": INDEX_MAPPING}, timeout=5)
            except httpx.HTTPError as exc:
                raise StackError(f"cannot reach the search engine at {self.es_url}: {exc}") from None
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
            "OUTBOX_POLL_INTERVAL": "0.2",
            "WORDLOOM_TRACING_ENABLED": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": e.otlp_endpoint,
            "OTEL_SERVICE_NAME": DEFAULT_SERVICE_NAME,
            "OTEL_SDK_DISABLED": "false",
            "ENV": "drill",
            RUN_ENV_MARK: self.snapshot.run_id,
            OWNER_ENV_MARK: str(os.getpid()),
        }
        if self.options.metrics_port:
            env["OUTBOX_METRICS_PORT"] = str(self.options.metrics_port + index)
        env.update(self.fault.worker_env(index))
        env.update(w.workers[index].env)
        env.update(self._env_overrides)
        return env

    def _scrape(self, phase: str) -> None:
        assert self.snapshot is not None
        if self.options.scrape_delay and phase != "before":
            time.sleep(self.options.scrape_delay)
        single = len(self.worker_names) == 1
        for wp in self.workers:
            if not wp.alive() or wp.metrics_url is None:
                continue
            with MetricsScraper(wp.metrics_url) as scraper:
                snap = scraper.scrape()
            self.snapshot.metrics_path(phase, wp.name, single).write_text(snap.text, encoding="utf-8")
        self._mark(f"scraped_{phase}_at")

    def _arm(self) -> None:
        self._say("arming", f"arming fault {self.drill.fault.type}")
        proof = self.fault.arm(self)
        self._fault_record["arm"] = proof.to_json()
        self._armed = proof.armed
        self._mark("armed_at")
        if proof.armed:
            self._say("armed", f"fault armed: {proof.evidence}", armed_at=self._timeline["armed_at"])
        else:
            self._say("failed", f"FAULT NOT ARMED: {proof.evidence}: the drill cannot show anything and fails")

    def _window(self) -> None:
        deadline = time.monotonic() + self.duration
        self._say("running", f"workers run with the fault armed for {self.duration:g}s")
        if not self.triggered:
            self.fault.trigger(self)
        self.fault.during(self, deadline)
        while time.monotonic() < deadline:
            if self.trigger_ids and self.wait_settled(0):
                # Every trigger event is done or failed: the evidence is in, end the window early.
                self._say("running", f"all trigger events settled: {_fmt(self.statuses())}")
                return
            if self.stop_requested.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                self._say("failed", "stop requested: ending the drill early")
                return
            alive = sum(w.alive() for w in self.workers)
            counts = self.statuses()
            self._say("running", f"{alive} worker(s) alive; trigger events {_fmt(counts)}", statuses=counts, alive=alive)

    def _revert(self) -> None:
        if "arm" not in self._fault_record:
            return
        self._say("recovering", f"reverting fault {self.drill.fault.type}")
        try:
            proof = self.fault.revert(self)
        except Exception as exc:
            # Recorded for the verdict and the next run's refusal, then raised: a fault that
            # cannot be reverted must never pass quietly.
            self._fault_record["revert_proof"] = FaultProof(True, f"revert failed: {type(exc).__name__}: {exc}").to_json()
            self._say("failed", f"COULD NOT REVERT the fault: {exc}: the environment is dirty")
            raise
        self._fault_record["revert_proof"] = proof.to_json()
        self._mark("reverted_at")
        self._say("recovering", f"fault reverted: {proof.evidence}", reverted_at=self._timeline["reverted_at"])

    def _recover(self) -> None:
        settled = self.wait_settled(self.drill.recovery_timeout)
        counts = self.statuses()
        if settled:
            self._say("recovering", f"all trigger events settled: {_fmt(counts)}", statuses=counts)
        else:
            self._say("recovering", f"trigger events still unsettled after {self.drill.recovery_timeout:g}s: {_fmt(counts)}", statuses=counts)
        self._mark("recovered_at")

    def _trigger_statuses(self) -> list[str]:
        if not self.trigger_ids:
            return []
        rows = self.db().execute("SELECT status FROM outbox WHERE id = ANY(%s) ORDER BY seq", (self.trigger_ids,)).fetchall()
        return [r["status"] for r in rows]

    def _probe_final(self) -> None:
        assert self.snapshot is not None
        if self.trigger_ids:
            rows = self.db().execute(
                "SELECT id, entity_id, op, seq, status, attempts, last_reason FROM outbox WHERE id = ANY(%s) ORDER BY seq",
                (self.trigger_ids,),
            ).fetchall()
            self._probes["trigger_status"] = [r["status"] for r in rows]
            self._probes["trigger_rows"] = [
                {"outbox_event_id": str(r["id"]), "entity_id": str(r["entity_id"]), "op": r["op"], "seq": r["seq"],
                 "status": r["status"], "attempts": r["attempts"], "last_reason": r["last_reason"]}
                for r in rows
            ]
            if self.drill.workload.projection == "search_index_to_elastic":
                self._probes["documents_latest"], self._probes["documents"] = self._documents_latest(rows)
        self.snapshot.write_json("_probes.json", self._probes)

    def _documents_latest(self, rows: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
        """For each entity: does the engine hold exactly the effect of its latest applied event?"""
        latest: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r["status"] == "done" and (r["entity_id"] not in latest or r["seq"] > latest[r["entity_id"]]["seq"]):
                latest[r["entity_id"]] = r
        report: list[dict[str, Any]] = []
        ok = bool(latest)
        for entity, r in latest.items():
            try:
                resp = httpx.get(f"{self.es_url}/{self.index}/_doc/{entity}", timeout=5)
            except httpx.HTTPError as exc:
                report.append({"entity_id": str(entity), "error": str(exc)})
                ok = False
                continue
            found = resp.status_code == 200
            version = resp.json().get("_version") if found else None
            good = (not found) if r["op"] == "delete" else (found and version == r["seq"])
            ok = ok and good
            report.append({"entity_id": str(entity), "latest_op": r["op"], "latest_seq": r["seq"], "doc_found": found, "doc_version": version, "ok": good})
        return ok, report

    def _stop_workers(self) -> None:
        for wp in self.workers:
            was_alive = wp.alive()
            code = wp.stop()
            if was_alive:
                self._say("collecting", f"worker {wp.name} stopped (exit {code})")

    # ---- traces -----------------------------------------------------------------------------

    def _pivots(self) -> dict[str, list[str]]:
        """The ids to query by: the trigger events, and the claim batches that carried them."""
        assert self.snapshot is not None
        wanted = {str(i) for i in self.trigger_ids}
        batches: list[str] = []
        for rec in sorted(load_logs(self.snapshot), key=lambda r: r.ts or ""):
            carried = rec.fields.get("outbox_event_ids") or []
            if rec.fields.get("outbox_event_id") in wanted or (isinstance(carried, list) and wanted.intersection(carried)):
                b = rec.fields.get("claim_batch_id")
                if b and b not in batches:
                    batches.append(b)
        return {
            "outbox_event_id": [str(i) for i in self.trigger_ids],
            "entity_id": [str(i) for i in self.entity_ids],
            "claim_batch_id": batches,
            "obs_schema": ["labs-009-v2"],
        }

    def _collect_traces(self) -> None:
        assert self.snapshot is not None
        pivots = self._pivots()
        self.snapshot.write_json(
            "_ids.json",
            {
                "outbox_event_id": pivots["outbox_event_id"][0] if pivots["outbox_event_id"] else None,
                "claim_batch_id": pivots["claim_batch_id"][0] if pivots["claim_batch_id"] else None,
                "entity_id": pivots["entity_id"][0] if pivots["entity_id"] else None,
                "outbox_event_ids": pivots["outbox_event_id"],
                "entity_ids": pivots["entity_id"],
                "claim_batch_ids": pivots["claim_batch_id"],
                "worker_ids": [w.worker_id for w in self.workers],
                "index": self.index if self.drill.workload.projection == "search_index_to_elastic" else None,
            },
        )
        if not self.drill.expect.traces:
            return
        self._say("collecting", "querying traces by the run's ids")
        start = datetime.fromtimestamp(self._timeline["started_at"], UTC) - timedelta(seconds=5)
        # A stopped drill still records what the backend has, but does not wait for more.
        wait = 0.0 if self.stop_requested.is_set() else TRACE_WAIT_SECONDS
        export_traces(self.snapshot, self.drill, self.infra.endpoints.jaeger_url, pivots, start=start, wait=wait)

    # ---- end --------------------------------------------------------------------------------

    def _check_clean(self) -> None:
        problems: list[str] = []
        ok, what = probe_engine(self.es_url)
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
        if self.drill.fault.type == "write_block" and self.drill.workload.projection == "search_index_to_elastic":
            from drillui.faults.drivers import read_write_block

            try:
                if read_write_block(self.es_url, self.index):
                    problems.append(f"index.blocks.write still true on {self.index}")
            except httpx.HTTPError as exc:
                problems.append(f"cannot read the write block back: {exc}")
        revert = self._fault_record.get("revert_proof")
        if revert and revert.get("armed"):
            problems.append(f"fault still in force: {revert.get('evidence')}")
        summary = "; ".join(problems) or f"clean: {what}; no worker left; no trigger row processing"
        self._fault_record["revert"] = FaultProof(bool(problems), summary).to_json()
        if problems:
            self._say("failed", "ENVIRONMENT NOT CLEAN: " + "; ".join(problems))

    def _finish(self) -> Verdict:
        assert self.snapshot is not None
        self._mark("finished_at")
        self._timeline["duration_seconds"] = round(self._timeline["finished_at"] - self._timeline["started_at"], 3)
        e = self.infra.endpoints
        if self._sampler.rows:
            with open(self.snapshot.path / "_metrics" / "samples.jsonl", "w", encoding="utf-8") as fh:
                for row in self._sampler.rows:
                    fh.write(json.dumps(row) + "\n")
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
                    {"name": w.name, "worker_id": w.worker_id, "env": redact_env(dict(w.env))} for w in self.workers
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
        write_summary(self.snapshot, verdict)
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
        done: dict[tuple[str, str], dict[str, Any]] = {}
        for i, check in enumerate(drill.expect.traces):
            name = trace_check_name(check)
            values = pivots.get(check.by) or []
            if check.which == "first":
                values = values[:1]
            elif check.which == "last":
                values = values[-1:]
            for value in values[:MAX_PIVOTS]:
                if (name, value) in done:
                    # Two checks on the same pivot share one query and its export file.
                    index.append({**done[(name, value)], "check": i})
                    continue
                attr = f"wordloom.{check.by}"
                res, error = _query_until_found(
                    client, check.operation, attr, value, start=start, wait=wait if check.min_spans else min(wait, 1.0), limit=limit
                )
                file = f"{name}-{value}.json"
                entry: dict[str, Any] = {"check": i, "name": name, "file": file, "operation": check.operation, "attributes": {attr: value}}
                if res is not None:
                    (snapshot.path / "_exports" / file).write_text(json.dumps(res.body, indent=1), encoding="utf-8")
                    entry.update(api=res.api, url=res.url, status_code=res.status_code, traces=len(res.traces))
                else:
                    entry.update(api=None, error=error)
                done[(name, value)] = entry
                index.append(entry)
    snapshot.write_json("_exports/_queries.json", index)
    return index


def _query_until_found(
    client: JaegerClient, operation: str, attr: str, value: str, *, start: datetime, wait: float, limit: int
) -> tuple[Any, str | None]:
    deadline = time.monotonic() + wait
    while True:
        end = datetime.now(UTC) + timedelta(seconds=5)
        try:
            res = client.find_traces(DEFAULT_SERVICE_NAME, operation, {attr: value}, start=start, end=end, limit=limit)
            error = None
        except TraceQueryError as exc:
            res, error = None, str(exc)
        if (res is not None and res.traces) or time.monotonic() >= deadline:
            return res, error
        time.sleep(0.3)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
