"""Build in-process relays on real servers, with a fresh registry, tracer and log per relay."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from worker.db import OutboxStore, connect, ensure_schema
from worker.faults import Es429Injector
from worker.projections.chronicle import ChronicleProjection
from worker.projections.search import SearchProjection
from worker.relay import Relay, bulk_recorder
from worker.retry import RetryPolicy
from worker.telemetry.logs import JsonLogger
from worker.telemetry.metrics import WorkerMetrics
from worker.telemetry.schema import CURRENT, SpanSchema
from worker.telemetry.tracing import Tracing, setup_tracing


@dataclass
class Harness:
    relay: Relay
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    tracing: Tracing
    out: io.StringIO
    conn: psycopg.Connection[dict[str, Any]]

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for fam in self.registry.collect():
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines() if line]

    def finished_spans(self) -> list[ReadableSpan]:
        self.tracing.provider.force_flush()  # type: ignore[union-attr]
        return list(self.spans.get_finished_spans())

    def close(self) -> None:
        self.relay.projection.close()
        self.tracing.shutdown()
        self.conn.close()


def make_relay(
    db_url: str,
    *,
    es_url: str = "http://127.0.0.1:9",
    index: str = "idx",
    worker_id: str = "w1",
    projection: str = "search_index_to_elastic",
    bulk: bool = False,
    batch_size: int = 10,
    lease_seconds: float = 30.0,
    policy: RetryPolicy | None = None,
    injector: Es429Injector | None = None,
    break_claim_sleep: float | None = None,
    chronicle_version: int = 1,
    es_timeout: float = 2.0,
    tombstone_seconds: float = 60.0,
    bulk_max_bytes: int = 10 * 1024 * 1024,
    process_sleep: float | None = None,
    pipeline: bool = True,
    schema: SpanSchema = CURRENT,
    batch_result_early: bool = False,
) -> Harness:
    conn = connect(db_url)
    ensure_schema(conn)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, env="test", projection=projection)
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(enabled=True, endpoint="http://127.0.0.1:9", service_name="test", worker_id=worker_id, exporter=exporter,
                            obs_schema=schema.name)
    out = io.StringIO()
    log = JsonLogger(service="test", worker_id=worker_id, env="test", stream=out, obs_schema=schema.name)
    inj = injector or Es429Injector(None, None, frozenset({"upsert", "delete"}), None)
    proj: Any
    if projection == "chronicle":
        proj = ChronicleProjection(conn, version=chronicle_version)
    else:
        proj = SearchProjection(
            es_url=es_url, index=index, timeout=es_timeout, bulk=bulk, injector=inj, on_bulk=bulk_recorder(metrics), max_bulk_bytes=bulk_max_bytes
        )
    pol = policy or RetryPolicy(0.05, 0.2, 5)
    relay = Relay(
        store=OutboxStore(conn, projection=projection, worker_id=worker_id, max_attempts=pol.max_attempts),
        projection=proj,
        metrics=metrics,
        tracer=tracing.tracer,
        log=log,
        policy=pol,
        worker_id=worker_id,
        batch_size=batch_size,
        lease_seconds=lease_seconds,
        poll_interval=0.05,
        tombstone_seconds=tombstone_seconds,
        break_claim_sleep=break_claim_sleep,
        process_sleep=process_sleep,
        pipeline=pipeline,
        schema=schema,
        batch_result_early=batch_result_early,
    )
    return Harness(relay, registry, exporter, tracing, out, conn)
