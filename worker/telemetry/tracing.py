"""Tracer setup: OpenTelemetry SDK exporting over OTLP/HTTP, opt-in.

The provider is built here and injected, never installed globally, so tests can run several
workers (and an InMemorySpanExporter) in one process without sharing a tracer provider.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from worker.contract import ATTR_OBS_SCHEMA, OBS_SCHEMA

# Drills look for a span seconds after it ends: export often rather than in 5 s batches.
_EXPORT_DELAY_MS = 300


@dataclass
class Tracing:
    tracer: trace.Tracer
    provider: TracerProvider | None
    enabled: bool
    target: str | None
    collector_reachable: bool | None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_millis=3000)
            self.provider.shutdown()


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP signal URL from a base endpoint, as the SDK does for OTEL_EXPORTER_OTLP_ENDPOINT."""
    return endpoint.rstrip("/") + "/v1/traces"


def collector_reachable(endpoint: str, timeout: float = 0.5) -> bool:
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def setup_tracing(
    *, enabled: bool, endpoint: str, service_name: str, worker_id: str, exporter: SpanExporter | None = None
) -> Tracing:
    if not enabled:
        return Tracing(trace.NoOpTracerProvider().get_tracer("worker"), None, False, None, None)
    resource = Resource.create(
        {"service.name": service_name, "service.instance.id": worker_id, ATTR_OBS_SCHEMA: OBS_SCHEMA}
    )
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=_EXPORT_DELAY_MS))
    return Tracing(
        provider.get_tracer("worker"), provider, True, traces_url(endpoint), collector_reachable(endpoint)
    )
