"""The drill runner: the one place that knows the order of a drill.

take the run lock, refuse a dirty environment (no folder is left) -> create the run folder ->
start workers -> scrape "before" -> arm the fault (and prove it) -> write the trigger events -> run
while the fault is armed -> scrape "after" -> revert the fault -> let the trigger events settle ->
scrape "recovered" -> probe -> stop the workers -> settle the run's own rows -> read the final
gauges from the database -> query traces by the run's ids -> check the environment is clean ->
judge -> write the derived files and the manifest.

Everything the runner does and sees is a typed event (`drillui.record.events`) emitted through
one `Recorder`: it goes to `_events.jsonl`, to the run's state, and to whoever listens (the CLI
prints it, the dashboard draws it). While the workers run, `Observers` sample their /metrics,
read their logs and query their spans, as events too.

Whatever happens (an error, a stop request, SIGTERM), the fault is reverted, the workers are
stopped and the run's own unsettled rows are removed before `run` returns, and the run ends in one
honest state: passed, failed, stopped (by the trainer) or error (the infrastructure broke). A run
that cannot start (another drill running, a dirty environment) raises `RunRefused` and leaves no
folder. Fault drivers fill in the steps their fault needs through the `DrillHost` methods below.
"""

from __future__ import annotations

import os
import platform
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import psycopg
from psycopg.types.json import Jsonb

from drillui import __version__, http
from drillui.errors import DrillError, StackError, UsageError
from drillui.evidence.checks import Verdict, end_state, evaluate, key_figure, report_notes, trace_check_id
from drillui.evidence.summary import write_summary
from drillui.faults.base import EngineSwitch, LatencySwitch, PostgresSwitch, probe_engine
from drillui.faults.drivers import driver_for
from drillui.record.eventlog import EventLogWriter
from drillui.record.events import (
    AnswerGiven,
    CleanChecked,
    Event,
    FaultArmed,
    FaultHeld,
    FaultNotArmed,
    FaultReverted,
    GaugesProbed,
    HintGiven,
    PhaseChanged,
    ProbeRecorded,
    PromqlEvaluated,
    RowsSettled,
    RunStarted,
    Said,
    SpansSeen,
    StatusesPolled,
    StepChanged,
    StopRequested,
    TracesExported,
    TrainerActed,
    TriggersWritten,
    WorkerStarted,
    WorkerStopped,
)
from drillui.record.snapshot import (
    FAULT,
    IDS,
    INBOX,
    PROBES,
    RECIPE,
    RESULT,
    TIMELINE,
    TRAINING,
    FaultRecord,
    Ids,
    Proof,
    Recipe,
    Snapshot,
    Timeline,
)
from drillui.redact import redact_env, redact_text, redact_url
from drillui.runner.cleanup import (
    APP_NAME_PREFIX,
    DRILL_CORRELATION_PREFIX,
    OWNER_ENV_MARK,
    RUN_ENV_MARK,
    RunRefused,
    acquire_run_lock,
    clean,
    find_dirt,
)
from drillui.runner.export import export_traces
from drillui.runner.infra import Infrastructure
from drillui.runner.observers import Observers, Target
from drillui.runner.promql import RunPrometheus
from drillui.runner.recorder import Listener, Recorder
from drillui.runner.workers import WorkerProcess, WorkerStartError
from drillui.scenarios import Drill
from drillui.sources.errors import SourceError
from drillui.sources.metrics import MetricsScraper
from drillui.sources.traces import span_to_json
from drillui.stack.stack import Endpoints
from worker.contract import DEFAULT_SERVICE_NAME
from worker.db import OutboxStore, connect, ensure_schema

TRACE_WAIT_SECONDS: Final = 6.0
STATUS_POLL_SECONDS: Final = 0.2
TRIGGER_BATCH: Final = 1000
INBOX_POLL_SECONDS: Final = 0.25
DECOY_WORKER: Final = "sidecar"
MAX_WORKERS: Final = 8
GUIDED_MAX_ATTEMPTS: Final = 1000
MGET_BATCH: Final = 500
INDEX_MAPPING: Final[dict[str, Any]] = {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}

EXIT_CODES: Final[dict[str, int]] = {"passed": 0, "failed": 1, "usage": 2, "stopped": 3, "refused": 4, "error": 5}
"""The exit code of `drillui run` for each way a run can end (documented in the README)."""

# What "the infrastructure broke" looks like from here: the run ends in state `error`.
INFRA_ERRORS: Final = (psycopg.Error, httpx.HTTPError, StackError, SourceError, WorkerStartError, OSError)


class DirtyState(RunRefused):
    title = "Environment not clean"


class NotPossibleHere(RunRefused):
    """The drill's fault needs what this infrastructure cannot do (e.g. the embedded stack's relays)."""

    title = "Drill not possible on this infrastructure"


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
    guided: bool = False
    """The trainer's pace (the dashboard's default): the fault stays armed until `recover_now`
    (or `hold` seconds); bounded (headless `run`): it stays for the drill's duration, or until
    every trigger event has settled."""
    hold: float | None = None
    """Guided mode's hold limit in seconds; None: until the trainer recovers."""
    workers: int | None = None
    """Identical workers to run, for drills the catalog marks `scalable`."""
    trainee: str | None = None
    """Training mode: who answers the drill's questions (recorded with every answer)."""


class StopSignal:
    """A stop request and how it was made (`key s`, `SIGTERM`, ...).

    Safe to set from a signal handler: setting takes no lock (a handler runs between two
    bytecodes of the main thread, which may hold any lock at that moment); waiting polls.
    """

    POLL_SECONDS: Final = 0.05

    def __init__(self) -> None:
        self._set = False
        self.how = ""
        self.at: float | None = None

    def request(self, how: str) -> None:
        if not self._set:
            self.how, self.at = how, time.time()
            self._set = True

    def set(self) -> None:
        self.request("requested")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(self.POLL_SECONDS if left is None else min(self.POLL_SECONDS, left))
        return True


class _Worker:
    """A worker as the fault drivers hold it: stopping or killing it is recorded."""

    def __init__(self, runner: DrillRunner, process: WorkerProcess) -> None:
        self._runner = runner
        self.process = process
        self.name = process.name
        self.worker_id = process.worker_id
        self.log_path = process.log_path

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.alive()

    def kill(self) -> None:
        was = self.process.alive()
        self.process.kill()
        if was:
            self._runner._worker_ended(self.process, "killed")

    def stop(self, timeout: float = 10.0) -> int | None:
        was = self.process.alive()
        code = self.process.stop(timeout)
        if was:
            self._runner._worker_ended(self.process, "stopped")
        return code


class DrillRunner:
    def __init__(
        self,
        drill: Drill,
        infra: Infrastructure,
        options: RunOptions | None = None,
        *,
        on_event: Listener | None = None,
        stop: StopSignal | None = None,
    ) -> None:
        self.options = options or RunOptions()
        self.drill = scaled(drill, self.options.workers)
        self.infra = infra
        self.listeners = [on_event] if on_event is not None else []
        self.stop_requested = stop or StopSignal()
        self.fault = driver_for(self.drill.fault)
        self.worker_names = [w.name for w in self.drill.workload.workers]
        self.workers: list[_Worker] = []
        self.snapshot: Snapshot | None = None
        self.triggered = False
        self.trigger_ids: list[uuid.UUID] = []
        self._trigger_set: set[uuid.UUID] = set()
        self.entity_ids: list[uuid.UUID] = []
        self._entity_set: set[uuid.UUID] = set()
        self._conn: psycopg.Connection[Any] | None = None
        self._recorder: Recorder | None = None
        self._observers: Observers | None = None
        self._env_overrides: dict[str, str] = {}
        self._armed = False
        self._in_window = False
        self._recover_asked = False
        self._arm_tried = False
        self._stop_noted = False
        self._statuses: dict[str, int] = {}
        self._recovered_at: float | None = None
        self._http = http.client(timeout=5.0)
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inbox_done = threading.Event()
        self._background: list[uuid.UUID] = []
        self._side_threads: list[threading.Thread] = []
        self.prometheus = RunPrometheus(infra, self.drill, self.emit, self.say)

    # ---- what the trainer may do while the run goes on (any thread) ------------------------

    def recover_now(self) -> None:
        """Guided mode: end the hold, revert the fault, let the events settle, judge."""
        self._commands.put(("recover", None))

    def top_up(self, count: int | None = None) -> None:
        """Write more of the drill's trigger events while the fault is armed."""
        self._commands.put(("top_up", count))

    def step(self, index: int, say: str = "") -> None:
        """The trainer's current step, recorded with the run."""
        self._commands.put(("step", (index, say)))

    def answer(self, question: str, value: str, *, by: str = "", via: str = "screen", request: str = "") -> None:
        """Training: grade an answer against the run's evidence as it stands, and record it."""
        self._commands.put(("answer", (question, value, by, via, request)))

    def hint(self, by: str = "") -> None:
        """Training: show the next hint of the drill's ladder (it costs points)."""
        self._commands.put(("hint", by))

    def _grade_answer(self, question: str, value: str, by: str, via: str, request: str) -> None:
        from drillui.training.grading import grade

        q = next((q for q in self.drill.questions if q.id == question), None)
        if q is None:
            self.say(f"answer ignored: this drill has no question {question!r}")
            return
        with self.recorder._lock:  # the state is folded under this lock: grade on a consistent one
            result = grade(q, value, self.recorder.state)
        self.emit(AnswerGiven(question=q.id, value=value[:200], right=result.right, evidence=result.evidence,
                              by=by or self.options.trainee or "", via=via, request=request, counted=result.counted))

    def _give_hint(self, by: str) -> None:
        used = len(self.recorder.state.hints)
        if used >= len(self.drill.hints):
            self.say("no hint left in this drill's ladder")
            return
        self.emit(HintGiven(index=used, text=self.drill.hints[used], by=by))

    def _follow_inbox(self) -> None:
        """Training: what other processes ask of this run (`drillui answer`, the trainer's view)
        arrives as lines of `_inbox.jsonl`; each becomes a command of the runner's own thread."""
        import json

        assert self.snapshot is not None
        path = self.snapshot.path / INBOX
        offset = 0
        while not self._inbox_done.wait(INBOX_POLL_SECONDS):
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            offset += end
            for raw in data[:end].splitlines():
                try:
                    cmd = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(cmd, dict):
                    continue
                action = cmd.get("action")
                if action == "answer":
                    self.answer(str(cmd.get("question", "")), str(cmd.get("value", "")), by=str(cmd.get("by", "")),
                                via=str(cmd.get("via", "answer")), request=str(cmd.get("request", "")))
                elif action == "hint":
                    self.hint(str(cmd.get("by", "trainer")))
                elif action == "recover":
                    self.recover_now()
                elif action == "stop":
                    self._commands.put(("stop", str(cmd.get("how", "the trainer's view"))))

    def _red_herring(self) -> None:
        """Training decoys: a sidecar's harmless warnings in the logs, or harmless background
        events that make the metrics move. They carry no reason: grading never counts them."""
        import json

        assert self.snapshot is not None
        spec = self.drill.red_herring
        if spec is None or not self.options.trainee:
            return  # decoys are for trainees: a bounded or guided run shows the drill as it is
        if spec.kind == "warning_log":
            path = self.snapshot.log_path(DECOY_WORKER)
            if self._observers is not None:
                self._observers.follow_log(DECOY_WORKER, path)
            n = 0
            with open(path, "a", encoding="utf-8") as fh:
                while not self._inbox_done.wait(spec.every):
                    n += 1
                    fh.write(json.dumps({"ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "level": "warning",
                                         "event": "cache.refresh_slow", "service": "search-cache-warmer",
                                         "msg": f"cache refresh took {1.5 + (n % 5) * 0.3:.1f}s (budget 1.0s)",
                                         "worker_id": DECOY_WORKER, "env": "drill"}) + "\n")
                    fh.flush()
        else:
            # Its own connection: the runner's is busy with the drill's own statements.
            with connect(self.infra.endpoints.database_direct_url) as conn:
                while not self._inbox_done.wait(spec.every):
                    if self._armed and self._in_window:
                        self._background.append(self._quiet_insert(conn))

    def _quiet_insert(self, conn: psycopg.Connection[Any]) -> uuid.UUID:
        """One harmless upsert on an entity of its own, not one of the drill's trigger events."""
        assert self.snapshot is not None
        eid = uuid.uuid4()
        conn.execute(
            "INSERT INTO outbox (id, projection, op, entity_id, payload, correlation_id) VALUES (%s, %s, 'upsert', %s, %s, %s)",
            (eid, self.drill.workload.projection, uuid.uuid4(), Jsonb({"title": "background", "n": 0}),
             f"{DRILL_CORRELATION_PREFIX}{self.snapshot.run_id}:background"),
        )
        return eid

    def record_promql(self, event: PromqlEvaluated) -> bool:
        """Record a PromQL answer the dashboard fetched (any thread): a step applied, a typed
        query. False once the run has ended (its record is closed): nothing is appended to it."""
        recorder = self._recorder
        return recorder is not None and recorder.emit_if_open(event) is not None

    def _drain(self) -> bool:
        """Carry out the trainer's commands (in the runner's thread); True once asked to recover."""
        while True:
            try:
                what, arg = self._commands.get_nowait()
            except queue.Empty:
                return self._recover_asked
            if what == "step":
                index, say = arg
                self.emit(StepChanged(index=index, say=say))
            elif what == "recover":
                self._recover_asked = True
            elif what == "stop":
                self.request_stop(str(arg or "trainer"))
            elif what == "answer":
                self._grade_answer(*arg)
            elif what == "hint":
                self._give_hint(str(arg or ""))
            elif what == "top_up" and self._armed and self._in_window:
                before = len(self.trigger_ids)
                if arg:
                    rows = [(self.op, uuid.uuid4(), {"title": f"drill {self.drill.id} top-up {n}", "n": n}) for n in range(arg)]
                    self._insert_many(rows)
                else:
                    self.fault.trigger(self)
                added = len(self.trigger_ids) - before
                self.emit(TrainerActed(action="top_up", detail=f"{added} more trigger event(s)"))
            elif what == "top_up":
                self.say("top-up ignored: the fault is not armed")

    # ---- DrillHost: what fault drivers may use -------------------------------------------

    @property
    def es_url(self) -> str:
        return self.infra.endpoints.es_url

    @property
    def engine(self) -> EngineSwitch | None:
        return self.infra.engine

    @property
    def postgres(self) -> PostgresSwitch | None:
        return self.infra.postgres

    @property
    def endpoints(self) -> Endpoints:
        return self.infra.endpoints

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

    @property
    def recorder(self) -> Recorder:
        assert self._recorder is not None, "the run has not started"
        return self._recorder

    def db(self) -> psycopg.Connection[Any]:
        assert self._conn is not None
        return self._conn

    def emit(self, event: Event) -> Event:
        return self.recorder.emit(event)

    def say(self, message: str) -> None:
        self.emit(Said(message=redact_text(message)))

    def _phase(self, phase: str, message: str = "") -> None:
        self.emit(PhaseChanged(phase=phase, message=redact_text(message)))  # type: ignore[arg-type]

    def trigger(self) -> None:
        """The drill's default trigger events, written in batches."""
        rows = [(self.op, uuid.uuid4(), {"title": f"drill {self.drill.id} event {n}", "n": n}) for n in range(self.trigger_count)]
        for start in range(0, len(rows), TRIGGER_BATCH):
            self._insert_many(rows[start:start + TRIGGER_BATCH])
        self.triggered = True

    def insert(
        self, op: str, entity_id: uuid.UUID, payload: Any = None, *, delay: float = 0.0, projection: str | None = None
    ) -> uuid.UUID:
        [eid] = self._insert_many([(op, entity_id, payload)], delay=delay, projection=projection)
        return eid

    def insert_many(self, rows: list[tuple[str, uuid.UUID, Any]]) -> list[uuid.UUID]:
        return self._insert_many(rows)

    def _insert_many(self, rows: list[tuple[str, uuid.UUID, Any]], *, delay: float = 0.0,
                     projection: str | None = None) -> list[uuid.UUID]:
        assert self.snapshot is not None
        proj = projection or self.drill.workload.projection
        correlation = f"{DRILL_CORRELATION_PREFIX}{self.snapshot.run_id}"
        ids = [uuid.uuid4() for _ in rows]
        conn = self.db()
        with conn.transaction(), conn.cursor() as cur:
            # Only the producer's columns, like an application writes an event; the rest default.
            # COPY: thousands of rows in one round trip (an INSERT each would be one each).
            with cur.copy("COPY outbox (id, projection, op, entity_id, payload, correlation_id) FROM STDIN") as copy:
                for eid, (op, entity, payload) in zip(ids, rows, strict=True):
                    copy.write_row((eid, proj, op, entity, Jsonb(payload if payload is not None else {}), correlation))
            if delay:
                cur.execute("UPDATE outbox SET next_attempt_at = now() + make_interval(secs => %s) WHERE id = ANY(%s)", (delay, ids))
        for eid, (_, entity, _) in zip(ids, rows, strict=True):
            self.trigger_ids.append(eid)
            self._trigger_set.add(eid)
            if entity not in self._entity_set:
                self._entity_set.add(entity)
                self.entity_ids.append(entity)
        self.triggered = True
        self.emit(TriggersWritten(events=tuple(
            {"outbox_event_id": str(eid), "entity_id": str(entity), "op": op, "projection": proj, "delay": delay}
            for eid, (op, entity, _) in zip(ids, rows, strict=True))))
        if len(rows) == 1:
            op, entity, _ = rows[0]
            self.say(f"wrote {op} event {ids[0]} (entity {entity})" + (f", due in {delay:g}s" if delay else ""))
        else:
            self.say(f"wrote {len(rows)} {rows[0][0]} event(s)")
        return ids

    def worker(self, name: str) -> _Worker:
        for w in self.workers:
            if w.name == name:
                return w
        raise KeyError(f"worker {name} has not been started")

    def start_worker(self, name: str) -> _Worker:
        [handle] = self.start_workers([name])
        return handle

    def start_workers(self, names: list[str]) -> list[_Worker]:
        """Start the workers together and wait until each is ready: a worker's start is mostly
        Python importing its modules, and several of them import at the same time."""
        assert self.snapshot is not None
        handles: list[_Worker] = []
        for name in names:
            index = self.worker_names.index(name)
            wp = WorkerProcess(name, self._worker_env(index, name), self.snapshot.log_path(name), self.infra.base_environment())
            handle = _Worker(self, wp)
            # A restarted worker takes its predecessor's place (same name, same log file).
            self.workers = [w for w in self.workers if w.name != name] + [handle]
            wp.start()
            handles.append(handle)
        for handle in handles:
            wp = handle.process
            url = wp.wait_ready()
            handle.worker_id = wp.worker_id
            if self._observers is not None:
                self._observers.forget_worker(wp.name)
            self.emit(WorkerStarted(name=wp.name, worker_id=wp.worker_id, pid=wp.pid, metrics_url=url,
                                    log_file=self.snapshot.relative(wp.log_path)))
            self.say(f"worker {wp.name} up (pid {wp.pid}, metrics {url})")
        self.prometheus.publish(self._scrape_targets())
        return handles

    def _worker_ended(self, wp: WorkerProcess, how: str) -> None:
        code = wp.proc.returncode if wp.proc is not None else None
        self.emit(WorkerStopped(name=wp.name, worker_id=wp.worker_id, pid=wp.pid, exit_code=code, how=how))  # type: ignore[arg-type]
        self.say(f"worker {wp.name} {'killed (SIGKILL)' if how == 'killed' else 'stopped'} (exit {code})")
        self.prometheus.publish(self._scrape_targets())

    def restart_workers(self, env: dict[str, str]) -> None:
        """Stop every live worker cleanly and start it again with `env` on top of its own."""
        self._env_overrides = dict(env)
        for w in [w for w in self.workers if w.alive()]:
            w.stop()
            self.start_worker(w.name)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        self.say(f"waiting for {what} (at most {timeout:g}s)")
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self._stopping():
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
        counts = {r["status"]: r["n"] for r in rows}
        if counts != self._statuses:
            self._statuses = counts
            self.emit(StatusesPolled(statuses=counts))
        return counts

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            counts = self.statuses()
            if counts and not counts.get("pending") and not counts.get("processing"):
                return True
            if time.monotonic() > deadline or self._stopping():
                return False
            time.sleep(STATUS_POLL_SECONDS)

    def probe(self, name: str, value: Any) -> None:
        self.emit(ProbeRecorded(name=name, value=value))

    def log_events(self, worker: str, event: str) -> list[dict[str, Any]]:
        import json

        out: list[dict[str, Any]] = []
        for w in self.workers:
            if worker not in ("*", w.name):
                continue
            try:
                with open(w.log_path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        if f'"{event}"' not in line:
                            continue
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(rec, dict) and rec.get("event") == event:
                            out.append(rec)
            except FileNotFoundError:
                continue
        return out

    # ---- stopping ---------------------------------------------------------------------------

    def request_stop(self, how: str) -> None:
        """Ask the run to end now (any thread): it reverts, stops and records how it was asked."""
        self.stop_requested.request(how)

    def _stopping(self) -> bool:
        if not self.stop_requested.is_set():
            return False
        if not self._stop_noted and self._recorder is not None:
            self._stop_noted = True
            self.emit(StopRequested(how=self.stop_requested.how or "requested"))
            self.say(f"stop requested ({self.stop_requested.how or 'requested'}): reverting the fault and stopping the workers")
        return True

    # ---- the run ----------------------------------------------------------------------------

    def run(self) -> Verdict:
        """Run the drill; returns its verdict (its `state` says how it ended). Raises
        `RunRefused` (no folder left) when it must not start, `StackError` when the database
        cannot be reached at all."""
        why = self.fault.unsupported(self)
        if why is not None:
            raise NotPossibleHere(f"drill {self.drill.id} cannot run on {self.infra.mode}: {why}")
        try:
            # drillui's own probes go to the server itself: a drill may close the relay the workers use.
            self._conn = connect(self.infra.endpoints.database_direct_url)
        except psycopg.Error as exc:
            raise StackError(f"cannot connect to Postgres at {redact_url(self.infra.endpoints.database_url)}: "
                             f"{redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)}",
                             hint="is the stack running? `drillui doctor` checks each part") from None
        try:
            try:
                self._refuse_if_dirty()
            except psycopg.Error as exc:
                raise StackError(f"Postgres failed while preparing the drill: {redact_text(str(exc).strip())}") from None
            self.snapshot = Snapshot.create(Path(self.options.snapshots), self.drill.id)
            self.prometheus.probe(self.snapshot.run_id)
            self._recorder = Recorder(self.drill, writer=EventLogWriter(self.snapshot.events_path),
                                      progress=self.snapshot.progress_path, listeners=self.listeners)
            self._conn.execute("SELECT set_config('application_name', %s, false)",
                               (f"{APP_NAME_PREFIX}{self.drill.id} {self.snapshot.run_id} pid {os.getpid()}"[:63],))
            self.emit(RunStarted(
                run_id=self.snapshot.run_id, scenario=self.drill.id, letter=self.drill.letter, title=self.drill.title,
                snapshot=str(self.snapshot.path), drill=self.drill.model_dump(mode="json"), parameters=self._parameters(),
                mode="training" if self.options.trainee else "guided" if self.options.guided else "bounded",
                infrastructure=self._infra_record(),
            ))
            self.recorder.initial_checks()
            self.prometheus.announce_missing(self.recorder.state.started_wall or time.time())
            self._phase("preparing", f"run {self.snapshot.run_id}: evidence in {self.snapshot.path}")
            return self._run_recorded()
        finally:
            self._http.close()
            if self._conn is not None:
                self._conn.close()  # releases the run lock

    def _refuse_if_dirty(self) -> None:
        conn = self.db()
        acquire_run_lock(conn, f"{APP_NAME_PREFIX}{self.drill.id} (starting) pid {os.getpid()}", doing=f"run {self.drill.id}")
        ensure_schema(conn)
        if self.options.force_clean:
            clean(self.infra, locked=True)
        dirt = find_dirt(self.infra, conn)
        if dirt:
            raise DirtyState("; ".join(d.what for d in dirt), hint=f"run `drillui clean {self.drill.id}` or pass --force-clean")

    def _run_recorded(self) -> Verdict:
        assert self.snapshot is not None
        error: str | None = None
        unexpected: BaseException | None = None
        self._observers = Observers(self.recorder, self._targets, self.infra.endpoints.jaeger_url,
                                    since=time.time(), snapshot_path=self.snapshot.path)
        try:
            try:
                self._prepare()
                self.fault.prepare(self)
                first = self.fault.initial_workers(self.worker_names)
                self._phase("starting", f"starting worker(s) {', '.join(first)}")
                self.start_workers(first)
                self._observers.start()
                for target in (self._follow_inbox, self._red_herring):
                    t = threading.Thread(target=target, name=f"drill-{target.__name__.strip('_')}", daemon=True)
                    t.start()
                    self._side_threads.append(t)
                self.prometheus.wait_scraped(self._scrape_targets(), self._stopping, needed=self.options.guided)
                self._scrape("before")
                self._arm()
                if self._armed and not self._stopping():
                    self._window()
                    self._scrape("after")
                    self.prometheus.judge("after", self.recorder.state.started_wall or time.time())
                    self.probe("trigger_status_after", self._trigger_statuses())
            finally:
                if self.stop_requested.is_set():
                    # A stopped drill goes no further: its workers stop before the fault is
                    # lifted, so nothing is processed after the trainer said stop.
                    self._guarded(self._stop_workers)
                self._revert()
            if self._armed and not self._stopping():
                self.fault.recover(self)
                self._recover()
                self._scrape("recovered")
                self.prometheus.judge("recovered", self.recorder.state.started_wall or time.time())
            self._probe_final()
        except DrillError as exc:
            error = redact_text(exc.message)
        except psycopg.Error as exc:
            error = redact_text(f"Postgres: {type(exc).__name__}: {str(exc).strip() or 'no detail'}")
        except INFRA_ERRORS as exc:
            error = redact_text(f"{type(exc).__name__}: {str(exc).strip() or 'no detail'}")
        except BaseException as exc:
            # A bug or an interrupt: record it, clean up, then let it go on.
            error = f"{type(exc).__name__}: {exc}"
            unexpected = exc
        if error is not None:
            self.say(f"ERROR: {error}")
        for step in (self._stop_workers, self._stop_side_threads, self.prometheus.remove, self._observers.stop,
                     self._settle_rows, self._probe_gauges, self._collect_traces, self._check_clean, self.fault.release):
            problem = self._guarded(step)
            error = error or problem
        self._observers.close()
        verdict = self._finish(error)
        if unexpected is not None:
            raise unexpected
        return verdict

    def _guarded(self, step: Callable[[], None]) -> str | None:
        """Run one step of the run's end; an infrastructure failure is recorded, never skips the rest."""
        try:
            step()
        except (DrillError, *INFRA_ERRORS) as exc:
            text = redact_text(exc.message if isinstance(exc, DrillError) else f"{type(exc).__name__}: {exc}")
            self.say(f"ERROR while ending the run ({step.__name__.strip('_').replace('_', ' ')}): {text}")
            return text
        return None

    def _stop_side_threads(self) -> None:
        self._inbox_done.set()
        for t in self._side_threads:
            t.join(5)

    def _scrape_targets(self) -> list[tuple[str, str | None]]:
        return [(w.name, w.process.metrics_url) for w in self.workers if w.alive()]

    def _targets(self) -> list[Target]:
        return [Target(w.name, w.process.metrics_url, w.log_path) for w in self.workers if w.alive()]

    def _parameters(self) -> dict[str, Any]:
        return {"duration": self.duration, "trigger_count": self.trigger_count, "op": self.op,
                "bulk_size": self.options.bulk_size, "scrape_delay": self.options.scrape_delay,
                "guided": self.options.guided, "hold": self.options.hold, "workers": len(self.worker_names),
                **({"trainee": self.options.trainee} if self.options.trainee else {})}

    def _infra_record(self) -> dict[str, Any]:
        e = self.infra.endpoints
        return {"mode": self.infra.mode, "database": redact_url(e.database_url), "es_url": redact_url(e.es_url),
                "jaeger_url": redact_url(e.jaeger_url), "otlp_endpoint": redact_url(e.otlp_endpoint), **self.prometheus.record()}

    def _prepare(self) -> None:
        if self.drill.workload.projection != "search_index_to_elastic":
            return
        url = f"{self.es_url}/{self.index}"
        try:
            resp = self._http.put(url, json={"mappings": INDEX_MAPPING})
        except httpx.HTTPError as exc:
            raise StackError(f"cannot reach the search engine at {redact_url(self.es_url)}: {exc}") from None
        if resp.status_code >= 300:
            raise StackError(f"cannot create index {self.index}: HTTP {resp.status_code} {resp.text[:200]}")
        self.say(f"index {self.index} created")

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
        if self.options.guided:
            # The trainer holds the fault for minutes: a transient fault must stay transient, not
            # exhaust the default 10 attempts and turn into the terminal failure it is not.
            env["OUTBOX_MAX_ATTEMPTS"] = str(GUIDED_MAX_ATTEMPTS)
        env.update(self.fault.worker_env(index))
        env.update(w.workers[index].env)
        env.update(self._env_overrides)
        return env

    def _scrape(self, phase: str) -> None:
        """A phase scrape of every live worker: the raw text to `_metrics/`, the samples recorded."""
        assert self.snapshot is not None and self._observers is not None
        if self.options.scrape_delay and phase != "before":
            time.sleep(self.options.scrape_delay)
        single = len(self.worker_names) == 1
        for w in self.workers:
            url = w.process.metrics_url
            if not w.alive() or url is None:
                continue
            try:
                with MetricsScraper(url, client=self._http) as scraper:
                    snap = scraper.scrape()
            except SourceError as exc:
                if phase == "before":
                    raise
                self.say(f"no {phase} scrape of {w.name}: {exc.message}")
                continue
            path = self.snapshot.metrics_path(phase, w.name, single)
            path.write_text(snap.text, encoding="utf-8")
            self._observers.record_sample(w.name, snap, phase, file=self.snapshot.relative(path))

    def _arm(self) -> None:
        self._phase("arming", f"arming fault {self.drill.fault.type}")
        self._arm_tried = True
        proof = self.fault.arm(self)
        self._armed = proof.armed
        if proof.armed:
            self.emit(FaultArmed(fault=self.drill.fault.type, evidence=redact_text(proof.evidence)))
            self.say(f"fault armed: {proof.evidence}")
        else:
            self.emit(FaultNotArmed(fault=self.drill.fault.type, evidence=redact_text(proof.evidence)))
            self.say(f"FAULT NOT ARMED: {proof.evidence}: the drill cannot show anything and fails")

    def _window(self) -> None:
        """The fault armed: for the drill's duration (bounded), or until the trainer recovers
        (guided). The fault's own steps (`during`) get the catalog duration either way."""
        guided = self.options.guided
        deadline = time.monotonic() + self.duration
        hold = self.options.hold
        hold_end = time.monotonic() + hold if guided and hold else None
        if guided:
            until = time.time() + hold if hold else None
            self.emit(FaultHeld(until=until))
            self._phase("running", "the fault is held until the trainer recovers it (R)"
                        + (f", at most {hold:g}s" if hold else ""))
        else:
            self._phase("running", f"workers run with the fault armed for {self.duration:g}s")
        self._in_window = True
        try:
            if not self.triggered:
                self.fault.trigger(self)
            self.fault.during(self, deadline)
            while True:
                if self._stopping():
                    return
                if self._drain():
                    self.emit(TrainerActed(action="recover", detail="the trainer recovered the fault"))
                    self.say("the trainer recovers the fault")
                    return
                counts = self.statuses()
                if guided:
                    if hold_end is not None and time.monotonic() >= hold_end:
                        self.say(f"hold limit of {hold:g}s reached: recovering")
                        return
                else:
                    if counts and not counts.get("pending") and not counts.get("processing"):
                        # Every trigger event is done or failed: the evidence is in, end the window early.
                        self.say(f"all trigger events settled: {_fmt(counts)}")
                        return
                    if time.monotonic() >= deadline:
                        return
                left = (hold_end if guided else deadline)
                wait = STATUS_POLL_SECONDS if left is None else min(STATUS_POLL_SECONDS, max(0.0, left - time.monotonic()))
                self.stop_requested.wait(wait)
        finally:
            self._in_window = False

    def _revert(self) -> None:
        if not self._arm_tried:
            return
        self._phase("recovering", f"reverting fault {self.drill.fault.type}")
        try:
            proof = self.fault.revert(self)
        except Exception as exc:
            # Recorded for the verdict and the next run's refusal: a fault that cannot be
            # reverted must never pass quietly.
            text = redact_text(f"revert failed: {type(exc).__name__}: {exc}")
            self.emit(FaultReverted(fault=self.drill.fault.type, evidence=text, still_armed=True))
            self.say(f"COULD NOT REVERT the fault: {text}: the environment is dirty")
            raise
        self.emit(FaultReverted(fault=self.drill.fault.type, evidence=redact_text(proof.evidence), still_armed=proof.armed))
        self.say(f"fault reverted: {proof.evidence}")

    def _recover(self) -> None:
        """Wait for every trigger event to settle, as long as they keep settling: the recovery
        timeout is the time allowed without progress, so a run with 5,000 events is judged like
        a run with one, not failed for being big."""
        timeout = self.drill.recovery_timeout

        def settled_count() -> int:
            return sum(n for status, n in self.statuses().items() if status not in ("pending", "processing"))

        last = settled_count()
        while True:
            settled = self.wait_settled(timeout)
            counts = self.statuses()
            done = settled_count()
            if settled or self._stopping() or done <= last:
                break
            last = done
        if settled:
            self.say(f"all trigger events settled: {_fmt(counts)}")
        elif not self._stopping():
            self.say(f"trigger events still unsettled after {timeout:g}s without progress: {_fmt(counts)}")
        self._recovered_at = time.time()

    def _trigger_statuses(self) -> list[str]:
        if not self.trigger_ids:
            return []
        rows = self.db().execute("SELECT status FROM outbox WHERE id = ANY(%s) ORDER BY seq", (self.trigger_ids,)).fetchall()
        return [r["status"] for r in rows]

    def _probe_final(self) -> None:
        if not self.trigger_ids:
            return
        rows = self.db().execute(
            "SELECT id, entity_id, op, seq, status, attempts, last_reason FROM outbox WHERE id = ANY(%s) ORDER BY seq",
            (self.trigger_ids,),
        ).fetchall()
        self.probe("trigger_status", [r["status"] for r in rows])
        self.probe("trigger_rows", [
            {"outbox_event_id": str(r["id"]), "entity_id": str(r["entity_id"]), "op": r["op"], "seq": r["seq"],
             "status": r["status"], "attempts": r["attempts"], "last_reason": r["last_reason"]}
            for r in rows
        ])
        if self.drill.workload.projection == "search_index_to_elastic":
            ok, report = self._documents_latest(rows)
            self.probe("documents", report)
            self.probe("documents_latest", ok)

    def _documents_latest(self, rows: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
        """For each entity: does the engine hold exactly the effect of its latest applied event?
        Asked with `_mget`, a few hundred documents per request."""
        latest: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r["status"] == "done" and (r["entity_id"] not in latest or r["seq"] > latest[r["entity_id"]]["seq"]):
                latest[r["entity_id"]] = r
        report: list[dict[str, Any]] = []
        ok = bool(latest)
        entities = list(latest)
        for start in range(0, len(entities), MGET_BATCH):
            chunk = entities[start:start + MGET_BATCH]
            try:
                resp = self._http.post(f"{self.es_url}/{self.index}/_mget", json={"ids": [str(e) for e in chunk]})
                resp.raise_for_status()
                docs = {str(d.get("_id")): d for d in resp.json().get("docs", [])}
            except (httpx.HTTPError, ValueError) as exc:
                report += [{"entity_id": str(e), "error": str(exc)} for e in chunk]
                ok = False
                continue
            for entity in chunk:
                r = latest[entity]
                doc = docs.get(str(entity), {})
                found = bool(doc.get("found")) and not is_tombstone(doc)
                version = doc.get("_version") if doc.get("found") else None
                good = (not found) if r["op"] == "delete" else (found and version == r["seq"])
                ok = ok and good
                report.append({"entity_id": str(entity), "latest_op": r["op"], "latest_seq": r["seq"], "doc_found": found,
                               "doc_version": version, "ok": good})
        return ok, report

    def _stop_workers(self) -> None:
        live = [w for w in self.workers if w.alive()]
        if live:
            self._phase("collecting" if not self.stop_requested.is_set() else self.recorder.state.phase,  # type: ignore[arg-type]
                        "stopping the workers")
        # SIGTERM to all first, then wait for each: the workers finish their batches together.
        for w in live:
            w.process.terminate()
        for w in live:
            w.stop()

    def _settle_rows(self) -> None:
        """Every way a run ends leaves none of its own rows pending or processing."""
        if self._background:
            # The decoy traffic of a red herring: removed whatever became of it, never reported.
            self.db().execute("DELETE FROM outbox WHERE id = ANY(%s)", (self._background,))
        if not self.trigger_ids:
            return
        rows = self.db().execute(
            "DELETE FROM outbox WHERE id = ANY(%s) AND status IN ('pending', 'processing') RETURNING id, status",
            (self.trigger_ids,),
        ).fetchall()
        if rows:
            counts: dict[str, int] = {}
            for r in rows:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            self.emit(RowsSettled(removed=tuple(str(r["id"]) for r in rows), statuses=counts))
            self.say(f"removed the run's {len(rows)} unsettled trigger row(s) ({_fmt(counts)}) so the next run starts clean")

    def _probe_gauges(self) -> None:
        projection = self.drill.workload.projection
        store = OutboxStore(self.db(), projection=projection, worker_id="drillui-runner")
        # Read now, from the outbox itself (fresh 0): the workers are stopped, nobody holds the lock long.
        g = store.gauges(fresh_seconds=0.0)
        for _ in range(20):
            if g is not None:
                break
            time.sleep(0.05)
            g = store.gauges(fresh_seconds=0.0)
        if g is None:
            self.say("could not read the outbox gauges (another reader held them): the workers' last readings stand")
            return
        self.emit(GaugesProbed(projection=projection, lag=g.lag, oldest_age=round(g.oldest_age, 3), stuck=g.stuck))

    def _collect_traces(self) -> None:
        assert self.snapshot is not None
        state = self.recorder.state
        if not self.drill.expect.traces:
            return
        self.say("querying traces by the run's ids")
        started = state.started_wall or time.time()
        start = datetime.fromtimestamp(started, UTC) - timedelta(seconds=5)
        pivots = {by: state.pivots(by) for by in ("outbox_event_id", "claim_batch_id", "entity_id", "obs_schema")}
        evaluations = {ev.id: ev for ev in evaluate(self.drill, state, final=False)}

        def wait(i: int) -> float:
            # A stopped run records what the backend has, without waiting; a check already
            # satisfied by the spans seen live does not wait either.
            if self.stop_requested.is_set():
                return 0.0
            ev = evaluations.get(trace_check_id(self.drill.expect.traces[i]))
            return 0.0 if ev is not None and ev.ok else TRACE_WAIT_SECONDS

        exported = export_traces(self.snapshot.exports_dir(), self.drill, self.infra.endpoints.jaeger_url, pivots,
                                 start=start, wait=wait)
        new = [span_to_json(s) for s in exported.spans if (s.trace_id, s.span_id) not in state.spans.spans]
        if new:
            self.emit(SpansSeen(spans=tuple(new)))
        self.emit(TracesExported(folder=self.snapshot.relative(exported.folder), queries=tuple(exported.queries)))

    def _check_clean(self) -> None:
        problems: list[str] = []
        ok, what = probe_engine(self.es_url)
        if not ok:
            problems.append(f"engine unreachable ({what})")
        engine = self.infra.engine
        if isinstance(engine, LatencySwitch) and engine.latency() > 0:
            problems.append(f"the engine's relay still holds requests {engine.latency():g}s")
        if self.infra.postgres is not None and not self.infra.postgres.reachable():
            problems.append("the relay in front of Postgres still refuses the workers' connections")
        left = [w.name for w in self.workers if w.alive()]
        if left:
            problems.append(f"worker process(es) still running: {', '.join(left)}")
        with connect(self.infra.endpoints.database_direct_url) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'processing') AND id = ANY(%s)", (self.trigger_ids,)
            ).fetchone()
            if row and row["n"]:
                problems.append(f"{row['n']} trigger row(s) left unsettled")
        if self.drill.fault.type == "write_block" and self.drill.workload.projection == "search_index_to_elastic":
            from drillui.faults.drivers import read_write_block

            try:
                if read_write_block(self.es_url, self.index):
                    problems.append(f"index.blocks.write still true on {self.index}")
            except httpx.HTTPError as exc:
                problems.append(f"cannot read the write block back: {exc}")
        state = self.recorder.state
        if state.still_armed:
            problems.append(f"fault still in force: {state.revert_evidence}")
        summary = "; ".join(problems) or f"clean: {what}; no worker left; no trigger row unsettled"
        self.emit(CleanChecked(clean=not problems, summary=redact_text(summary), problems=tuple(problems)))
        if problems:
            self.say("ENVIRONMENT NOT CLEAN: " + "; ".join(problems))

    # ---- end --------------------------------------------------------------------------------

    def _finish(self, error: str | None) -> Verdict:
        assert self.snapshot is not None
        recorder = self.recorder
        state = recorder.state
        self._stopping()
        self._drain()
        checks = recorder.final_checks()
        end, why = end_state(checks, stopped=self.stop_requested.is_set(), error=error)
        if end == "stopped":
            why = f"stopped by {self.stop_requested.how or 'request'}"
        finished = time.time()
        duration = round(finished - (state.started_wall or finished), 3)
        verdict = Verdict(
            scenario=self.drill.id, run_id=self.snapshot.run_id, state=end, checks=checks, snapshot=str(self.snapshot.path),
            key_figure=key_figure(checks), duration_seconds=duration, notes=report_notes(self.drill, state), why=why,
        )
        for write in (lambda: self._write_files(verdict, finished), lambda: write_summary(self.snapshot, verdict, state)):  # type: ignore[arg-type]
            try:
                write()
            except OSError as exc:
                self.say(f"ERROR: could not write the run's files: {exc}")
        word = {"passed": "PASS", "failed": "FAIL"}.get(end, end.upper())
        self._phase("ended", f"{word}: {why}")
        recorder.end(verdict)
        recorder.close()
        try:
            self.snapshot.write_manifest()
        except OSError as exc:
            raise StackError(f"cannot write {self.snapshot.path}/_manifest.json: {exc}") from None
        return verdict

    def _write_files(self, verdict: Verdict, finished: float) -> None:
        """The derived files of the run folder, written once from the run's state."""
        assert self.snapshot is not None
        snap, state = self.snapshot, self.recorder.state
        phases = {p: min((s.taken_at for s in state.metrics.phase(p).values()), default=None)
                  for p in ("before", "after", "recovered")}
        snap.write_json(RECIPE, Recipe(
            scenario=self.drill.id, letter=self.drill.letter, title=self.drill.title, runbook=self.drill.runbook,
            run_id=snap.run_id, drill=self.drill.model_dump(mode="json"), parameters=self._parameters(),
            workers=[{"name": w.name, "worker_id": w.worker_id, "env": redact_env(dict(w.process.env))} for w in self.workers],
            infrastructure=self._infra_record(),
            versions={"drillui": __version__, "python": platform.python_version(), **self.infra.versions()},
        ))
        snap.write_json(TIMELINE, Timeline(
            started_at=state.started_wall, armed_at=state.armed_at, triggered_at=state.triggered_at,
            reverted_at=state.reverted_at, recovered_at=self._recovered_at,
            stopped_at=state.stop.wall if state.stop is not None else None, finished_at=finished,
            duration_seconds=verdict.duration_seconds,
            **{f"scraped_{p}_at": t for p, t in phases.items() if t is not None},
        ))
        arm = (Proof(armed=True, evidence=state.fault_evidence or "") if state.armed_at is not None else
               Proof(armed=False, evidence=state.fault_not_armed) if state.fault_not_armed is not None else None)
        snap.write_json(FAULT, FaultRecord(
            arm=arm,
            revert_proof=Proof(armed=state.still_armed, evidence=state.revert_evidence or "") if state.reverted_at else None,
            revert=Proof(armed=not state.clean.clean, evidence=state.clean.summary) if state.clean is not None else None,
        ))
        events, entities, batches = state.outbox_event_ids.list(), state.entity_ids.list(), state.claim_batch_ids.list()
        snap.write_json(IDS, Ids(
            outbox_event_id=events[0] if events else None, claim_batch_id=batches[0] if batches else None,
            entity_id=entities[0] if entities else None, outbox_event_ids=events, entity_ids=entities,
            claim_batch_ids=batches, worker_ids=[w.worker_id for w in self.workers],
            index=self.index if self.drill.workload.projection == "search_index_to_elastic" else None,
        ))
        snap.write_json(PROBES, state.probes)
        snap.write_json(RESULT, verdict.to_json())
        if self.options.trainee:
            from drillui.training.score import summarize

            snap.write_json(TRAINING, summarize(self.drill, state).to_json())


def is_tombstone(doc: dict[str, Any]) -> bool:
    """A delete kept as a versioned document (the worker's fence against stale upserts)."""
    source = doc.get("_source")
    return isinstance(source, dict) and bool(source.get("_deleted") or source.get("deleted"))


def scaled(drill: Drill, workers: int | None) -> Drill:
    """The drill with `workers` identical copies of its first worker (scalable drills only)."""
    if workers is None or workers == len(drill.workload.workers):
        return drill
    if not drill.scalable:
        raise UsageError(f"drill {drill.id} runs a fixed set of workers ({len(drill.workload.workers)}): "
                         "its fault needs exactly those", hint="leave the number of workers as it is")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"{workers} workers: give 1 to {MAX_WORKERS}")
    first = drill.workload.workers[0]
    specs = [first.model_copy(update={"name": first.name if i == 0 else f"{first.name}{i + 1}"}) for i in range(workers)]
    return drill.model_copy(update={"workload": drill.workload.model_copy(update={"workers": specs})})


def exit_code(verdict: Verdict) -> int:
    return EXIT_CODES.get(verdict.state, 1)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

