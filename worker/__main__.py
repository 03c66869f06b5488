"""`python -m worker`: run one outbox relay with the environment of CONTRACT.md.

Exit codes: 0 after a clean stop (SIGTERM / SIGINT), 2 for a bad setting (one line on stderr
naming the variable), 1 when the database cannot be reached at start.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import psycopg
from prometheus_client import CollectorRegistry, start_http_server

from worker.contract import OBS_SCHEMA
from worker.db import OutboxStore, connect, ensure_schema
from worker.faults import Es429Injector
from worker.projections.base import Projection
from worker.projections.chronicle import ChronicleProjection
from worker.projections.search import SearchProjection
from worker.redact import redact
from worker.relay import Relay, bulk_recorder
from worker.retry import RetryPolicy
from worker.settings import SettingsError, WorkerSettings, load_settings
from worker.telemetry.logs import JsonLogger
from worker.telemetry.metrics import WorkerMetrics
from worker.telemetry.schema import SpanSchema
from worker.telemetry.tracing import log_export_failures, setup_tracing


def _startup_lines(s: WorkerSettings, log: JsonLogger, tracing_target: str | None, reachable: bool | None) -> None:
    log.info("obs.schema", f"Observability schema: {log.obs_schema} (file={__file__})", obs_schema=log.obs_schema)
    if s.tracing_enabled:
        log.info("tracing.config", f"tracing enabled: OTLP/HTTP -> {tracing_target}", otlp_target=tracing_target, service_name=s.OTEL_SERVICE_NAME)
    else:
        why = "OTEL_SDK_DISABLED=true" if s.OTEL_SDK_DISABLED else "WORDLOOM_TRACING_ENABLED is not 1"
        log.info("tracing.disabled", f"tracing disabled ({why}): no spans will be exported", why=why)
    log.info(
        "tracing.startup",
        f"tracing.startup enabled={s.tracing_enabled} target={tracing_target} collector_reachable={reachable}",
        enabled=s.tracing_enabled,
        otlp_target=tracing_target,
        collector_reachable=reachable,
        exporter_configured=s.tracing_enabled,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(redact(f"worker: {exc}"), file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    s = settings
    schema = SpanSchema(s.OUTBOX_EXPERIMENT_OBS_SCHEMA or OBS_SCHEMA)
    log = JsonLogger(service=s.OTEL_SERVICE_NAME, worker_id=s.OUTBOX_WORKER_ID, env=s.ENV, obs_schema=schema.name)
    if s.tracing_enabled:
        log_export_failures(log)
    tracing = setup_tracing(
        enabled=s.tracing_enabled, endpoint=s.OTEL_EXPORTER_OTLP_ENDPOINT, service_name=s.OTEL_SERVICE_NAME, worker_id=s.OUTBOX_WORKER_ID,
        obs_schema=schema.name,
    )
    _startup_lines(s, log, tracing.target, tracing.collector_reachable)

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, env=s.ENV, projection=s.OUTBOX_PROJECTION)
    try:
        server, _thread = start_http_server(s.OUTBOX_METRICS_PORT, addr=s.OUTBOX_METRICS_HOST, registry=registry)
    except OSError as exc:
        print(f"worker: OUTBOX_METRICS_PORT={s.OUTBOX_METRICS_PORT}: cannot listen ({exc.strerror}); pick a free port or 0", file=sys.stderr)
        return 2
    port = server.server_address[1]
    log.info("metrics.listening", f"metrics on http://{s.OUTBOX_METRICS_HOST}:{port}/metrics", metrics_port=port)

    try:
        conn = connect(s.DATABASE_URL)
        ensure_schema(conn)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(redact(f"worker: DATABASE_URL: cannot connect or create tables ({first})"), file=sys.stderr)
        server.shutdown()
        return 1

    injector = Es429Injector(
        every_n=s.OUTBOX_EXPERIMENT_ES_429_EVERY_N,
        ratio=s.OUTBOX_EXPERIMENT_ES_429_RATIO,
        ops=s.es_429_ops,
        seed=s.OUTBOX_EXPERIMENT_ES_429_SEED,
    )
    if injector.enabled:
        log.warning(
            "faults.es_429",
            injector.describe(),
            mode=injector.mode,
            effective_ratio=round(injector.effective_ratio, 3),
            ratio=injector.ratio or 0.0,
            every_n=injector.every_n or 0,
            ops=",".join(sorted(injector.ops)),
            seed=injector.seed,
        )
    knobs: tuple[tuple[str, object], ...] = (
        ("OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP", s.OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP),
        ("OUTBOX_EXPERIMENT_PROCESS_SLEEP", s.OUTBOX_EXPERIMENT_PROCESS_SLEEP),
        ("OUTBOX_EXPERIMENT_OBS_SCHEMA", s.OUTBOX_EXPERIMENT_OBS_SCHEMA),
        ("OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY", s.OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY or None),
    )
    for knob, value in knobs:
        if value is not None:
            log.warning("faults.knob", f"fault knob {knob}={value} is on", knob=knob, value=value)

    projection: Projection
    if s.OUTBOX_PROJECTION == "chronicle":
        projection = ChronicleProjection(conn, version=s.CHRONICLE_PROJECTION_VERSION)
    else:
        projection = SearchProjection(
            es_url=s.ES_URL,
            index=s.ES_INDEX,
            timeout=s.ES_TIMEOUT,
            bulk=s.OUTBOX_USE_ES_BULK,
            injector=injector,
            on_bulk=bulk_recorder(metrics),
            max_bulk_bytes=s.OUTBOX_BULK_MAX_BYTES,
        )
    store = OutboxStore(conn, projection=s.OUTBOX_PROJECTION, worker_id=s.OUTBOX_WORKER_ID, max_attempts=s.OUTBOX_MAX_ATTEMPTS)

    def reconnect() -> None:
        fresh = connect(s.DATABASE_URL)
        store.conn = fresh
        if isinstance(projection, ChronicleProjection):
            projection.conn = fresh

    relay = Relay(
        store=store,
        projection=projection,
        metrics=metrics,
        tracer=tracing.tracer,
        log=log,
        policy=RetryPolicy(s.OUTBOX_BACKOFF_BASE, s.OUTBOX_BACKOFF_CAP, s.OUTBOX_MAX_ATTEMPTS),
        worker_id=s.OUTBOX_WORKER_ID,
        batch_size=s.OUTBOX_BATCH_SIZE,
        lease_seconds=s.OUTBOX_LEASE_SECONDS,
        poll_interval=s.OUTBOX_POLL_INTERVAL,
        tombstone_seconds=s.OUTBOX_ES_TOMBSTONE_SECONDS,
        break_claim_sleep=s.OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP,
        process_sleep=s.OUTBOX_EXPERIMENT_PROCESS_SLEEP,
        stop=stop,
        reconnect=reconnect,
        schema=schema,
        batch_result_early=s.OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY,
    )
    log.info(
        "worker.started",
        f"worker {s.OUTBOX_WORKER_ID} relaying {s.OUTBOX_PROJECTION} (batch {s.OUTBOX_BATCH_SIZE}, bulk={s.OUTBOX_USE_ES_BULK})",
        projection=s.OUTBOX_PROJECTION,
        batch_size=s.OUTBOX_BATCH_SIZE,
        bulk=s.OUTBOX_USE_ES_BULK,
        es_index=s.ES_INDEX if s.OUTBOX_PROJECTION != "chronicle" else None,
        projection_version=s.CHRONICLE_PROJECTION_VERSION if s.OUTBOX_PROJECTION == "chronicle" else None,
    )
    try:
        batches = relay.run()
    finally:
        projection.close()
        tracing.shutdown()
        store.conn.close()
        server.shutdown()
    log.info("worker.stopped", f"worker {s.OUTBOX_WORKER_ID} stopped cleanly after {batches} batch(es)", batches=batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
