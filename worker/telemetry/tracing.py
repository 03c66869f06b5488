"""Tracer setup: OpenTelemetry SDK exporting over OTLP/HTTP, opt-in.

The provider is built here and injected, never installed globally, so tests can run several
workers (and an InMemorySpanExporter) in one process without sharing a tracer provider.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Final

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from worker.contract import ATTR_OBS_SCHEMA, OBS_SCHEMA
from worker.telemetry.logs import JsonLogger

# Drills look for a span seconds after it ends: export often rather than in 5 s batches.
_EXPORT_DELAY_MS = 300
EXPORT_FAILURE_SUMMARY_SECONDS: Final = 10.0


SHUTDOWN_FLUSH_SECONDS: Final = 3.0


@dataclass
class Tracing:
    tracer: trace.Tracer
    provider: TracerProvider | None
    enabled: bool
    target: str | None
    collector_reachable: bool | None
    exporter: SpanExporter | None = None

    def shutdown(self, flush_seconds: float = SHUTDOWN_FLUSH_SECONDS) -> bool:
        """Export the spans still queued for at most `flush_seconds`, then stop; False when some
        were given up. Bounded on purpose: the SDK's force_flush ignores its timeout, and the
        exporter retries a collector that does not speak OTLP/HTTP (the gRPC port) for up to its
        own timeout per batch, which would make a SIGTERM wait past the runner's patience."""
        if self.provider is None:
            return True
        flush = threading.Thread(target=self.provider.force_flush, name="tracing-flush", daemon=True)
        flush.start()
        flush.join(flush_seconds)
        flushed = not flush.is_alive()
        if not flushed and self.exporter is not None:
            self.exporter.shutdown()  # ends the exporter's waits between retries
        self.provider.shutdown()
        return flushed


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP signal URL from a base endpoint, as the SDK does for OTEL_EXPORTER_OTLP_ENDPOINT."""
    return endpoint.rstrip("/") + "/v1/traces"


def collector_reachable(endpoint: str, timeout: float = 0.5) -> bool:
    """Does an OTLP/HTTP receiver answer at `endpoint`? An empty export (a valid request of no
    spans, so nothing is stored) must be accepted. An open port is not enough: the OTLP gRPC port
    (4317) accepts the connection and then speaks HTTP/2, and a base URL that already ends in
    `/v1/traces` answers 404; the exporter's spans are lost in both cases (runbook 3.2.1)."""
    try:
        response = httpx.post(traces_url(endpoint), content=b"", headers={"Content-Type": "application/x-protobuf"},
                              timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.is_success


class ExportFailureLog(logging.Handler):
    """The SDK exporter's own warnings and errors (it logs through `logging`, to stderr by
    default) as JSON lines `tracing.export_failed`: one for the first failure, then at most one
    per summary interval saying how many followed, so a collector that is down for a whole
    training session does not flood the log (the exporter fails every few hundred ms)."""

    def __init__(self, log: JsonLogger, summary_seconds: float = EXPORT_FAILURE_SUMMARY_SECONDS) -> None:
        super().__init__(level=logging.WARNING)
        self.log = log
        self.summary_seconds = summary_seconds
        self._last = -summary_seconds
        self._since_last = 0
        self._lock_counts = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        with self._lock_counts:
            self._since_last += 1
            if now - self._last < self.summary_seconds:
                return
            self._last, count, self._since_last = now, self._since_last, 0
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        self.log.log(
            "error" if record.levelno >= logging.ERROR else "warning",
            "tracing.export_failed",
            f"span export failed: {message}" + (f" ({count} exporter messages since the last line)" if count > 1 else ""),
            error=message[:500],
            error_type=record.name,
            failures=count,
        )


def log_export_failures(log: JsonLogger) -> ExportFailureLog:
    """Route the OpenTelemetry SDK's log records into the worker's JSON log."""
    handler = ExportFailureLog(log)
    logger = logging.getLogger("opentelemetry")
    logger.addHandler(handler)
    return handler


def setup_tracing(
    *, enabled: bool, endpoint: str, service_name: str, worker_id: str, exporter: SpanExporter | None = None,
    obs_schema: str = OBS_SCHEMA,
) -> Tracing:
    if not enabled:
        return Tracing(trace.NoOpTracerProvider().get_tracer("worker"), None, False, None, None)
    resource = Resource.create(
        {"service.name": service_name, "service.instance.id": worker_id, ATTR_OBS_SCHEMA: obs_schema}
    )
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=_EXPORT_DELAY_MS))
    return Tracing(
        provider.get_tracer("worker"), provider, True, traces_url(endpoint), collector_reachable(endpoint), exporter
    )
