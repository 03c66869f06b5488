"""Chaos for the outbox relay, shared by the bounded test (tests/test_chaos.py) and the open-ended
script (bench/chaos.py): real worker processes, random SIGKILLs, engine flaps, Postgres restarts.

While a producer writes events for a few hundred entities, `python -m worker` processes (some in
bulk mode, one a request per event) are SIGKILLed at random and started again, the engine's relay
is closed and reopened (a real connection refusal), and Postgres is stopped and started on the same
port. Then the faults stop, the backlog drains, and the outcome is checked against the ground
truth, the outbox table itself:
- stuck: rows still pending or processing once the drain ended (or timed out);
- lost: entities whose latest done event is an upsert the index does not hold (no document, an
  older version, other content);
- doubled: rows settled twice according to the workers' logs, and documents the index should not
  hold (an entity whose latest done event is a delete, or one with no done event): an effect
  applied again after a newer one;
- failed rows: only the poison rows written on purpose (invalid_payload) may end failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

import drillui.stack.postgres as pgmod
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.postgres import EmbeddedPostgres
from worker.db import connect, ensure_schema

P = "search_index_to_elastic"
MAPPING: dict[str, Any] = {"properties": {"title": {"type": "keyword"}, "n": {"type": "integer"}}}
POISON_PAYLOADS = (
    "(repeat('{\"a\":', 1200) || '1' || repeat('}', 1200))::jsonb",  # nested too deeply
    "'[1, 2, 3]'::jsonb",  # not an object
)
SETTLE_EVENTS = frozenset({"outbox.processed", "outbox.idempotent_noop", "outbox.failed"})


@dataclass(frozen=True)
class ChaosConfig:
    seconds: float = 35.0
    """How long the faults go on (the drain comes after)."""
    events: int = 10_000
    entities: int = 300
    workers: int = 3
    single_workers: int = 1
    """How many of the workers send one request per event instead of `_bulk`."""
    batch_size: int = 100
    lease_seconds: float = 2.0
    kill_every: tuple[float, float] = (1.0, 3.0)
    flap_every: tuple[float, float] = (2.0, 5.0)
    flap_down: tuple[float, float] = (0.2, 1.5)
    pg_restarts: int = 1
    pg_down: tuple[float, float] = (0.5, 2.0)
    poison: int = 6
    drain_timeout: float = 30.0
    seed: int | None = None


@dataclass
class ChaosReport:
    events: int = 0
    kills: int = 0
    flaps: int = 0
    pg_restarts: int = 0
    worker_starts: int = 0
    done: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    unexpected_failures: int = 0
    lost: int = 0
    doubled: int = 0
    stuck: int = 0
    reclaimed: int = 0
    """Rows taken back from a dead worker's expired lease (from the workers' logs)."""
    retries: Counter[str] = field(default_factory=Counter)
    noops: Counter[str] = field(default_factory=Counter)
    drain_seconds: float = 0.0
    drained: bool = False
    chaos_seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.drained and not (self.lost or self.doubled or self.stuck or self.unexpected_failures)

    def table(self) -> str:
        rows = [
            ("events", self.events),
            ("kills (SIGKILL)", self.kills),
            ("engine flaps", self.flaps),
            ("postgres restarts", self.pg_restarts),
            ("worker starts", self.worker_starts),
            ("done", self.done),
            ("reclaimed rows", self.reclaimed),
            ("retries by reason", dict(self.retries) or 0),
            ("noops by reason", dict(self.noops) or 0),
            ("failed (expected: poison)", dict(self.failed) or 0),
            ("failed unexpectedly", self.unexpected_failures),
            ("lost", self.lost),
            ("doubled", self.doubled),
            ("stuck", self.stuck),
            ("chaos seconds", round(self.chaos_seconds, 1)),
            ("drain seconds", round(self.drain_seconds, 2) if self.drained else f"> {self.drain_seconds:.0f} (not drained)"),
            ("verdict", "clean" if self.clean else "BROKEN"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"  e.g. {e}" for e in self.examples[:10]]
        return "\n".join(lines)


@contextlib.contextmanager
def _fixed_port(port: int) -> Iterator[None]:
    """EmbeddedPostgres.start() picks a fresh free port; a restart must keep the old one."""
    original = pgmod.free_port
    pgmod.free_port = lambda host=pgmod.HOST: port  # type: ignore[assignment]
    try:
        yield
    finally:
        pgmod.free_port = original


def restart_postgres(pg: EmbeddedPostgres, down_seconds: float) -> None:
    """Stop Postgres (fast shutdown: every connection is cut) and start it again on the same port."""
    port = pg.port
    pg.stop()
    time.sleep(down_seconds)
    with _fixed_port(port):
        pg.start()


class _Workers:
    def __init__(self, cfg: ChaosConfig, env: dict[str, str], logs: Path, report: ChaosReport) -> None:
        self.cfg = cfg
        self.env = env
        self.logs = logs
        self.report = report
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * cfg.workers
        self.generation = [0] * cfg.workers

    def start(self, slot: int) -> None:
        self.generation[slot] += 1
        name = f"chaos-{slot}-{self.generation[slot]}"
        env = {
            **os.environ,
            **self.env,
            "OUTBOX_WORKER_ID": name,
            "OUTBOX_USE_ES_BULK": "0" if slot < self.cfg.single_workers else "1",
        }
        with open(self.logs / f"{name}.log", "wb") as out:
            self.procs[slot] = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.report.worker_starts += 1

    def keep_alive(self) -> None:
        # A worker started while Postgres is down exits 1 ("cannot connect"): start it again.
        for slot, proc in enumerate(self.procs):
            if proc is None or proc.poll() is not None:
                self.start(slot)

    def kill(self, rng: random.Random) -> None:
        alive = [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]
        if not alive:
            return
        slot = rng.choice(alive)
        proc = self.procs[slot]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.report.kills += 1
        self.start(slot)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _produce(dsn: str, cfg: ChaosConfig, entities: list[uuid.UUID], rng: random.Random, until: float, stop: threading.Event) -> None:
    """Write the events in bursts over the first two thirds of the chaos, surviving restarts."""
    bursts = max(1, int((until - time.monotonic()) / 1.5))
    per = -(-cfg.events // bursts)
    written = 0
    poison_left = cfg.poison
    conn: psycopg.Connection[Any] | None = None
    while written < cfg.events and not stop.is_set():
        n = min(per, cfg.events - written)
        ids = [uuid.uuid4() for _ in range(n)]
        ents = [rng.choice(entities) for _ in range(n)]
        ops = ["delete" if rng.random() < 0.25 else "upsert" for _ in range(n)]
        try:
            if conn is None or conn.closed:
                conn = connect(dsn)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO outbox (id, projection, op, entity_id, payload) "
                    "SELECT i, %s, o, e, CASE WHEN o = 'upsert' THEN jsonb_build_object('title', 'e' || e::text || '-' || x, 'n', x) ELSE '{}'::jsonb END "
                    "FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::int[]) AS u(i, o, e, x)",
                    (P, ids, ops, ents, [written + k for k in range(n)]),
                )
                if poison_left:
                    expr = POISON_PAYLOADS[poison_left % len(POISON_PAYLOADS)]
                    # Poison rows get entities of their own: they must fail, and alone.
                    conn.execute(f"INSERT INTO outbox (id, projection, op, entity_id, payload) VALUES (%s, %s, 'upsert', %s, {expr})", (uuid.uuid4(), P, uuid.uuid4()))
                    poison_left -= 1
            written += n
        except psycopg.Error:
            # Postgres is restarting: the burst either committed or not; the check reads the
            # table, so retrying a burst that did commit only adds events.
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(0.3)
            continue
        stop.wait(max(0.0, min(1.5, (until - time.monotonic()) / max(1, -(-(cfg.events - written) // per)))))
    if conn is not None:
        conn.close()


def _open_rows(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'processing')").fetchone()
    assert row is not None
    return int(row["n"])


def _read_logs(logs: Path, report: ChaosReport) -> list[str]:
    """Count reclaims, retries and noops; return the ids of rows settled more than once."""
    seen: Counter[str] = Counter()
    for path in logs.glob("*.log"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the last line of a SIGKILLed worker may be cut
            event = rec.get("event")
            if event in SETTLE_EVENTS and "outbox_event_id" in rec:
                seen[rec["outbox_event_id"]] += 1
            if event == "outbox.reclaimed":
                report.reclaimed += int(rec.get("reclaimed_count", 0))
            elif event == "outbox.retry_scheduled":
                report.retries[rec.get("reason", "?")] += 1
            elif event == "outbox.idempotent_noop":
                report.noops[rec.get("reason", "?")] += 1
    return [eid for eid, n in seen.items() if n > 1]


def _check(dsn: str, es_url: str, index: str, report: ChaosReport, logs: Path) -> None:
    with connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, seq, op, entity_id, status, last_reason, payload::text AS payload FROM outbox WHERE projection = %s", (P,)
        ).fetchall()
    report.events = len(rows)
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] == "done":
            report.done += 1
            key = str(r["entity_id"])
            if key not in latest or r["seq"] > latest[key]["seq"]:
                latest[key] = r
        elif r["status"] == "failed":
            report.failed[r["last_reason"] or "?"] += 1
            payload_is_poison = r["payload"].startswith("[") or r["payload"].count("{") > 100
            if r["last_reason"] != "invalid_payload" or not payload_is_poison:
                report.unexpected_failures += 1
                report.examples.append(f"row {r['id']} failed with {r['last_reason']}")
        else:
            report.stuck += 1
            report.examples.append(f"row {r['id']} still {r['status']}")
        if r["status"] == "done" and r["payload"].count("{") > 100:
            report.unexpected_failures += 1
            report.examples.append(f"poison row {r['id']} was done")
    httpx.post(f"{es_url}/{index}/_refresh", timeout=30)
    hits = httpx.post(f"{es_url}/{index}/_search", params={"version": "true"}, json={"size": 10_000, "query": {"match_all": {}}}, timeout=60).json()
    docs = {h["_id"]: h for h in hits["hits"]["hits"]}
    for entity, r in latest.items():
        doc = docs.pop(entity, None)
        if r["op"] == "upsert":
            want = json.loads(r["payload"])
            if doc is None or doc["_version"] != r["seq"] or doc["_source"] != want:
                report.lost += 1
                got = "no document" if doc is None else f"version {doc['_version']}"
                report.examples.append(f"entity {entity}: latest upsert seq {r['seq']} but {got}")
        elif doc is not None:
            report.doubled += 1
            report.examples.append(f"entity {entity}: deleted at seq {r['seq']} but holds version {doc['_version']}")
    for entity, doc in docs.items():
        report.doubled += 1
        report.examples.append(f"entity {entity}: document version {doc['_version']} without a done event")
    twice = _read_logs(logs, report)
    report.doubled += len(twice)
    report.examples += [f"row {eid} settled twice" for eid in twice[:5]]


def run_chaos(
    cfg: ChaosConfig,
    *,
    dsn: str,
    engine: EmbeddedEngine,
    restart_pg: Callable[[float], None],
    workdir: Path,
    on_tick: Callable[[str], None] | None = None,
) -> ChaosReport:
    """Run the chaos on `dsn` (a database of its own) and return the checked report."""
    rng = random.Random(cfg.seed)
    report = ChaosReport()
    index = f"chaos-{uuid.uuid4().hex[:10]}"
    httpx.put(f"{engine.backend_url}/{index}", json={"mappings": MAPPING}, timeout=30).raise_for_status()
    with connect(dsn) as conn:
        ensure_schema(conn)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        "DATABASE_URL": dsn,
        "ES_URL": engine.url,
        "ES_INDEX": index,
        "OUTBOX_BATCH_SIZE": str(cfg.batch_size),
        "OUTBOX_LEASE_SECONDS": str(cfg.lease_seconds),
        "OUTBOX_MAX_ATTEMPTS": "1000",  # flaps and kills must delay rows, never fail them
        "OUTBOX_BACKOFF_BASE": "0.05",
        "OUTBOX_BACKOFF_CAP": "1.0",
        "OUTBOX_POLL_INTERVAL": "0.05",
        "ES_TIMEOUT": "2",
        "OUTBOX_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    workers = _Workers(cfg, env, logs, report)
    entities = [uuid.uuid4() for _ in range(cfg.entities)]
    stop = threading.Event()
    began = time.monotonic()
    end = began + cfg.seconds
    producer = threading.Thread(target=_produce, args=(dsn, cfg, entities, random.Random(rng.random()), began + cfg.seconds * 2 / 3, stop), daemon=True)
    restarts_at = sorted(began + cfg.seconds * (k + 1) / (cfg.pg_restarts + 1) for k in range(cfg.pg_restarts))
    try:
        workers.keep_alive()
        producer.start()
        next_kill = began + rng.uniform(*cfg.kill_every)
        next_flap = began + rng.uniform(*cfg.flap_every)
        while (now := time.monotonic()) < end:
            if restarts_at and now >= restarts_at[0]:
                restarts_at.pop(0)
                restart_pg(rng.uniform(*cfg.pg_down))
                report.pg_restarts += 1
            if now >= next_kill:
                workers.kill(rng)
                next_kill = time.monotonic() + rng.uniform(*cfg.kill_every)
            if now >= next_flap:
                engine.set_reachable(False)
                report.flaps += 1
                time.sleep(rng.uniform(*cfg.flap_down))
                engine.set_reachable(True)
                next_flap = time.monotonic() + rng.uniform(*cfg.flap_every)
            workers.keep_alive()
            if on_tick is not None:
                on_tick(f"{now - began:5.1f}s kills={report.kills} flaps={report.flaps} pg_restarts={report.pg_restarts}")
            time.sleep(0.1)
        report.chaos_seconds = time.monotonic() - began
        if not engine.reachable:
            engine.set_reachable(True)
        producer.join(60)
        drain_began = time.monotonic()
        while time.monotonic() - drain_began < cfg.drain_timeout:
            workers.keep_alive()
            if _open_rows(dsn) == 0:
                report.drained = True
                break
            time.sleep(0.1)
        report.drain_seconds = time.monotonic() - drain_began
    finally:
        stop.set()
        if not engine.reachable:
            engine.set_reachable(True)
        workers.stop()
    try:
        _check(dsn, engine.backend_url, index, report, logs)
    finally:
        httpx.delete(f"{engine.backend_url}/{index}", timeout=30)
    return report
