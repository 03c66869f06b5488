"""Checks of the span path, from the worker's exporter to Jaeger, and of the workers it shows.

Why it exists: most lost drill minutes were tracing ones: tracing left off (opt-in, or
`OTEL_SDK_DISABLED`), spans sent to the OTLP gRPC port from an OTLP/HTTP exporter, a Jaeger without
the service yet or without the `/api/traces` search, a worker still on the previous span schema,
or two workers writing the same spans and series. Each check names the one setting that fixes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from drillui.doctor.model import (
    DoctorCheck,
    DoctorContext,
    failed,
    http_error,
    json_or_none,
    passed,
    skipped,
    snippet,
)
from drillui.sources.logs import LogRecord
from drillui.sources.metrics import MetricsSnapshot
from drillui.sources.traces import Span, TraceQueryError
from worker.contract import (
    ATTR_OBS_SCHEMA,
    ATTR_OLD_ENTITY_ID,
    ATTR_OLD_OUTBOX_ID,
    ATTR_WORKER_ID,
    OBS_SCHEMA,
    SPAN_BATCH,
    SPAN_CLAIM,
    SPAN_EVENT,
    SPAN_RECLAIM,
)

OTLP_GRPC_PORT: Final = 4317
OTLP_HTTP_PORT: Final = 4318
_WORKER_SPANS: Final = frozenset({SPAN_CLAIM, SPAN_BATCH, SPAN_EVENT, SPAN_RECLAIM})
# Attribute keys of the schema before labs-009-v2 (runbook 3.1.3, manual-test/3).
_OLD_SPAN_KEYS: Final = (ATTR_OLD_OUTBOX_ID, ATTR_OLD_ENTITY_ID)
_SCHEMA_LINE: Final = re.compile(r"Observability schema: (?P<schema>\S+)")
_TRUE: Final = frozenset({"1", "true", "yes", "on", "t", "y"})


def check_tracing_enabled(ctx: DoctorContext) -> DoctorCheck:
    """Tracing is on: no `tracing.disabled` as a worker's latest startup line, no OTEL_SDK_DISABLED."""
    name = "tracing.enabled"
    fix = "start the worker with WORDLOOM_TRACING_ENABLED=1 and without OTEL_SDK_DISABLED; its log must say event=tracing.config"
    problems = []
    sdk_disabled = ctx.inputs.env.get("OTEL_SDK_DISABLED", "").strip()
    if sdk_disabled.lower() in _TRUE:
        problems.append(f"OTEL_SDK_DISABLED={sdk_disabled} in this environment: workers started by hand from it export no spans")
    latest: dict[tuple[str, str], LogRecord] = {}
    for record in ctx.records:
        if record.event in ("tracing.config", "tracing.disabled"):
            latest[(record.source, record.worker_id or "?")] = record
    for (source, worker), record in sorted(latest.items()):
        if record.event == "tracing.disabled":
            why = record.get("why") or record.msg or ""
            problems.append(f"worker {worker} logged tracing.disabled ({why}) in {source}:{record.line_no}")
    if problems:
        return failed(name, "; ".join(problems), fix)
    if latest:
        return passed(name, f"{len(latest)} worker start(s) logged tracing.config; OTEL_SDK_DISABLED not set")
    read = f"no tracing.config/tracing.disabled line in {len(ctx.inputs.log_files)} log file(s)" if ctx.inputs.log_files else "no worker log given (--logs)"
    return passed(name, f"OTEL_SDK_DISABLED not set; {read}")


def check_otlp_protocol(ctx: DoctorContext) -> DoctorCheck:
    """The OTLP endpoint speaks OTLP/HTTP (the worker's exporter), not gRPC, at `/v1/traces`."""
    name = "otlp.protocol"
    targets = {ctx.inputs.endpoints.otlp_endpoint.rstrip("/"): "the stack's OTLP endpoint"}
    # A worker restarted with a fixed endpoint appends to the same log: its latest start counts.
    latest: dict[tuple[str, str], str] = {}
    for record in ctx.records:
        key = (record.source, record.worker_id or "?")
        target = record.get("otlp_target")
        if record.event == "tracing.disabled":
            latest.pop(key, None)
        elif record.event in ("tracing.config", "tracing.startup") and isinstance(target, str) and target:
            latest[key] = target
    for (_, worker), target in latest.items():
        # Workers log the signal URL (<endpoint>/v1/traces): probe the endpoint they used.
        targets.setdefault(target.rstrip("/").removesuffix("/v1/traces"), f"worker {worker}'s target")
    problems = []
    fine = []
    wrong_protocol = False
    for endpoint, who in targets.items():
        problem = _otlp_problem(ctx.http, endpoint)
        if problem is None:
            fine.append(endpoint)
            continue
        text, unreachable = problem
        wrong_protocol = wrong_protocol or not unreachable
        problems.append(f"{who} {endpoint}: {text}")
    if problems:
        parts = urlsplit(next(iter(targets)))
        example = f"{parts.scheme or 'http'}://{parts.hostname or '127.0.0.1'}:{OTLP_HTTP_PORT}"
        fix = (
            f"point OTEL_EXPORTER_OTLP_ENDPOINT at the OTLP/HTTP port, as a base URL without /v1/traces "
            f"(e.g. {example}); {OTLP_GRPC_PORT} is OTLP gRPC, {OTLP_HTTP_PORT} is OTLP HTTP"
        )
        return failed(name, "; ".join(problems), fix if wrong_protocol else ctx.fix_start("jaeger"))
    return passed(name, f"OTLP/HTTP receiver answers at {', '.join(f'{e}/v1/traces' for e in fine)}")


def _otlp_problem(http: httpx.Client, endpoint: str) -> tuple[str, bool] | None:
    """(why `endpoint` is not an OTLP/HTTP receiver, whether nothing answers at all), or None
    when an empty export is accepted."""
    parts = urlsplit(endpoint)
    if parts.port == OTLP_GRPC_PORT:
        return f"port {OTLP_GRPC_PORT} is OTLP gRPC, but the worker's exporter speaks OTLP/HTTP ({OTLP_HTTP_PORT})", False
    url = f"{endpoint}/v1/traces"
    try:
        # An empty ExportTraceServiceRequest: a valid export of no spans, so nothing is stored.
        response = http.post(url, content=b"", headers={"Content-Type": "application/x-protobuf"})
    except httpx.RemoteProtocolError as exc:
        # What an HTTP/1.1 request gets from a gRPC server: HTTP/2 frames, or a closed connection.
        return f"answers POST /v1/traces with something that is not HTTP/1.1 ({exc}): an OTLP gRPC (HTTP/2) port", False
    except httpx.HTTPError as exc:
        return f"nothing answers POST {url} ({http_error(exc)})", True
    if response.is_success:
        return None
    if response.status_code in (404, 405):
        return f"POST {url} answers HTTP {response.status_code}: not an OTLP/HTTP receiver (a query port, or /v1/traces twice?)", False
    return f"POST {url} answers HTTP {response.status_code}: {snippet(response.text)}", False


def check_jaeger_search_api(ctx: DoctorContext) -> DoctorCheck:
    """Jaeger still serves the `/api/traces` search the runbook's curl commands use."""
    name = "jaeger.search_api"
    base = ctx.inputs.endpoints.jaeger_url
    try:
        legacy = ctx.http.get(f"{base}/api/traces", params={"service": ctx.inputs.service, "limit": "1", "lookback": "1m"})
        v3 = ctx.http.get(f"{base}/api/v3/services")
    except httpx.HTTPError as exc:
        return failed(name, f"the Jaeger query API at {base} does not answer: {http_error(exc)}", ctx.fix_start("jaeger"))
    legacy_body = json_or_none(legacy)
    has_legacy = isinstance(legacy_body, dict) and "data" in legacy_body
    v3_body = json_or_none(v3)
    has_v3 = v3.status_code == 200 and isinstance(v3_body, dict) and "services" in v3_body
    if has_legacy:
        return passed(name, f"{base}: /api/traces search present; api_v3 {'present' if has_v3 else 'absent'}")
    if legacy.status_code == 404 and has_v3:
        return failed(
            name,
            f"{base}/api/traces answers 404 without JSON: a Jaeger newer than 2.20, which serves only api_v3",
            f"drillui uses api_v3 by itself; for the runbook's curl commands query {base}/api/v3/traces"
            "?query.service_name=...&query.start_time_min=...&query.start_time_max=..., "
            "or pin jaegertracing/jaeger:2.20.0 (docker-compose.infra.yml does)",
        )
    return failed(
        name,
        f"{base} answers neither /api/traces (HTTP {legacy.status_code}) nor /api/v3/services (HTTP {v3.status_code}) as Jaeger does",
        "set JAEGER_URL to the Jaeger query service (UI port, 16686), not the collector",
    )


def check_jaeger_service(ctx: DoctorContext) -> DoctorCheck:
    """Jaeger knows the worker's service, with the worker's operations."""
    name = "jaeger.service"
    service = ctx.inputs.service
    try:
        services = ctx.jaeger.services()
        api = ctx.jaeger.api
    except TraceQueryError as exc:
        return failed(name, f"cannot list Jaeger's services: {exc}", ctx.fix_start("jaeger"))
    if service not in services:
        known = ", ".join(sorted(services)) or "none"
        return failed(
            name,
            f"Jaeger ({api}) has no service {service!r} yet; services: {known}",
            "enable tracing (WORDLOOM_TRACING_ENABLED=1), check OTEL_SERVICE_NAME and OTEL_EXPORTER_OTLP_ENDPOINT, "
            "then run one drill: a service appears with its first span",
        )
    try:
        operations = ctx.jaeger.operations(service)
    except TraceQueryError as exc:
        return failed(name, f"cannot list the operations of {service!r}: {exc}", ctx.fix_start("jaeger"))
    ours = sorted(_WORKER_SPANS.intersection(operations))
    if not ours:
        return failed(
            name,
            f"service {service!r} has operations {', '.join(sorted(operations)) or 'none'} but none of the worker's",
            "another program reports under this service name: give the worker its own OTEL_SERVICE_NAME",
        )
    return passed(name, f"Jaeger ({api}) knows {service!r}; worker operations: {', '.join(ours)}")


# --------------------------------------------------------------------------- workers


def _span_worker(span: Span) -> str:
    value = span.resource.get("service.instance.id") or span.attributes.get(ATTR_WORKER_ID)
    return str(value) if value not in (None, "") else "?"


def _span_schema(span: Span) -> str | None:
    value = span.resource.get(ATTR_OBS_SCHEMA, span.attributes.get(ATTR_OBS_SCHEMA))
    return None if value is None else str(value)


def check_obs_schema(ctx: DoctorContext) -> DoctorCheck:
    """Every worker seen (logs, recent spans) runs the current schema `wordloom.obs_schema`."""
    name = "workers.obs_schema"
    old: list[str] = []
    seen: set[str] = set()
    latest: dict[tuple[str, str], str | None] = {}
    for record in ctx.records:
        if record.is_raw:
            match = _SCHEMA_LINE.search(record.raw)
            if match:
                latest[(record.source, "?")] = match.group("schema")
            continue
        if record.event is None:
            continue  # JSON from something else than a worker
        key = (record.source, record.worker_id or "?")
        # The latest marker wins; a worker that never writes one predates the marker (None).
        if record.obs_schema is not None or key not in latest:
            latest[key] = record.obs_schema
    for (source, worker), schema in sorted(latest.items()):
        seen.add(worker)
        if schema != OBS_SCHEMA:
            old.append(f"worker {worker} in {source} logs obs_schema={schema or 'none'}")
    spans = ctx.recent_spans
    by_worker: dict[str, set[str]] = {}
    for span in spans.spans:
        schema = _span_schema(span)
        if any(key in span.attributes for key in _OLD_SPAN_KEYS):
            schema = f"{schema or 'none'} with old keys {', '.join(k for k in _OLD_SPAN_KEYS if k in span.attributes)}"
        by_worker.setdefault(_span_worker(span), set()).add(schema or "none")
    for worker, schemas in sorted(by_worker.items()):
        seen.add(worker)
        wrong = sorted(s for s in schemas if s != OBS_SCHEMA)
        if wrong:
            old.append(f"worker {worker} sends spans with {ATTR_OBS_SCHEMA}={', '.join(wrong)}")
    if old:
        return failed(
            name,
            f"a worker runs an old schema (current {OBS_SCHEMA}): " + "; ".join(old),
            "stop that worker and start it again from the current code; meanwhile add "
            f'{{"{ATTR_OBS_SCHEMA}":"{OBS_SCHEMA}"}} to Jaeger tag searches',
        )
    if not seen:
        why = spans.error or f"no span of {ctx.inputs.service!r} in the last {ctx.inputs.window:g}s"
        return skipped(name, f"no worker to look at: no worker log given (--logs); {why}")
    return passed(name, f"{len(seen)} worker(s) seen in logs and spans, all on {OBS_SCHEMA}: {', '.join(sorted(seen))}")


def check_single_writer(ctx: DoctorContext) -> DoctorCheck:
    """At most one worker writes the same spans (service) and the same metric series (env, projection)."""
    name = "workers.single_writer"
    duplicates: list[str] = []
    looked: list[str] = []
    spans = ctx.recent_spans
    if spans.error is None:
        workers = sorted({_span_worker(span) for span in spans.spans})
        looked.append(f"spans of {ctx.inputs.service!r} in the last {ctx.inputs.window:g}s from {len(workers)} worker(s)")
        if len(workers) > 1:
            duplicates.append(f"{len(workers)} workers sent spans as {ctx.inputs.service!r} in the last {ctx.inputs.window:g}s: {', '.join(workers)}")
    series: dict[tuple[str, str], list[str]] = {}
    for url, scrape in ctx.metrics.items():
        if isinstance(scrape, MetricsSnapshot):
            for key in _series_keys(scrape.series('outbox_lag_events{component="worker"}')):
                series.setdefault(key, []).append(url)
    if ctx.inputs.metrics_urls:
        looked.append(f"{len(ctx.inputs.metrics_urls)} /metrics endpoint(s)")
    prometheus = ctx.inputs.prometheus_url
    if prometheus:
        found = _prometheus_query(ctx, 'outbox_lag_events{component="worker"}')
        if isinstance(found, str):
            looked.append(f"Prometheus not read ({found})")
        else:
            looked.append("Prometheus")
            for item in found:
                labels = item.get("metric") or {}
                key = (str(labels.get("env", "")), str(labels.get("projection", "")))
                where = f"Prometheus target {labels.get('instance', '?')}"
                series.setdefault(key, []).append(where)
    for (env, projection), writers in sorted(series.items()):
        if len(writers) > 1:
            duplicates.append(f"{len(writers)} workers export env={env} projection={projection}: {', '.join(writers)}")
    if duplicates:
        return failed(
            name,
            "; ".join(duplicates),
            "run one worker per drill: stop the others (`pgrep -af \"python -m worker\"` lists them), "
            "or tell them apart by wordloom.worker_id in Jaeger and by instance in Prometheus",
        )
    if not looked:
        return skipped(name, f"nothing to look at: Jaeger not read ({spans.error}); no --metrics or --prometheus given")
    return passed(name, "one writer each: " + "; ".join(looked))


def _series_keys(samples: Iterable[Any]) -> set[tuple[str, str]]:
    return {(str(s.labels.get("env", "")), str(s.labels.get("projection", ""))) for s in samples}


def _prometheus_query(ctx: DoctorContext, query: str) -> list[dict[str, Any]] | str:
    """An instant query's result vector, or the reason it could not be had."""
    assert ctx.inputs.prometheus_url
    url = f"{ctx.inputs.prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = ctx.http.get(url, params={"query": query})
    except httpx.HTTPError as exc:
        return http_error(exc)
    body = json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return f"HTTP {response.status_code}"
    result = (body.get("data") or {}).get("result") or []
    return [item for item in result if isinstance(item, dict)]
