"""`drillui doctor`: the runbook's malfunction notes as checks, each with a one-line fix.

Why it exists: the runbook's drills failed, more than once, for reasons that had nothing to do
with the drill: tracing was off (opt-in; `event=tracing.disabled` in the worker's log, or
`OTEL_SDK_DISABLED`), spans went to the OTLP gRPC port (4317) from an OTLP/HTTP exporter (4318),
Jaeger had no such service yet, a newer Jaeger had dropped the `/api/traces` search, a second
worker on the same machine wrote the same metrics and spans, an old worker still ran the previous
span schema (`wordloom.obs_schema`), Prometheus could not scrape a worker, and the infrastructure
itself was down or left in a drill's state (a write block, rows stuck in `processing`). Each of
those costs a trainer minutes in front of a room; each is one small check here.

A check is a function of a `DoctorContext` returning a `DoctorCheck(name, ok, detail, fix)`.
Checks catch only the failures they diagnose (a refused connection, an HTTP error, a database
error) and turn them into a failed check with its detail; anything else is a bug and propagates.
A check whose input was not given (no `--prometheus`, no `--logs`) is reported as skipped, which
counts as passing. The same checks run on the embedded stack and on the Docker infrastructure.

Headless: never imports textual.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import errors as pg_errors

from drillui.errors import StackError, UsageError
from drillui.sources.logs import LogRecord, parse_line
from drillui.sources.metrics import MetricsSnapshot, parse_metrics
from drillui.sources.traces import JaegerClient, Span, TraceQueryError
from drillui.stack.stack import Endpoints, Stack, default_state_dir
from worker.contract import (
    ATTR_OBS_SCHEMA,
    ATTR_WORKER_ID,
    DEFAULT_SERVICE_NAME,
    OBS_SCHEMA,
    SPAN_BATCH,
    SPAN_CLAIM,
    SPAN_EVENT,
    SPAN_RECLAIM,
)

__all__ = [
    "CHECKS",
    "DoctorCheck",
    "DoctorContext",
    "DoctorInputs",
    "add_doctor_arguments",
    "cmd_doctor",
    "resolve_inputs",
    "run_doctor",
]

Infra = Literal["embedded", "docker"]
Check = Callable[["DoctorContext"], "DoctorCheck"]

DEFAULT_WINDOW_S: Final = 120.0
"""How far back "currently writing" looks: a running worker claims (and traces) every poll."""
DEFAULT_TIMEOUT_S: Final = 3.0
RUNBOOK_METRICS_PORTS: Final = frozenset({9108, 9109, 9110, 9125, 9126, 9127, 9128, 9129})
WORKER_JOB: Final = "outbox-worker"
"""The scrape job of infra/prometheus/prometheus.yml."""
OTLP_GRPC_PORT: Final = 4317
OTLP_HTTP_PORT: Final = 4318
_WORKER_SPANS: Final = frozenset({SPAN_CLAIM, SPAN_BATCH, SPAN_EVENT, SPAN_RECLAIM})
# Attribute keys of the schema before labs-009-v2 (runbook 3.1.3, manual-test/3).
_OLD_SPAN_KEYS: Final = ("wordloom.outbox.id", "wordloom.entity.id")
_SCHEMA_LINE: Final = re.compile(r"Observability schema: (?P<schema>\S+)")
_LOG_SUFFIXES: Final = (".log", ".jsonl", ".ndjson")
_TRUE: Final = frozenset({"1", "true", "yes", "on", "t", "y"})
_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
_COMPOSE: Final = "docker compose -f docker-compose.infra.yml"
# Elasticsearch/OpenSearch settings that refuse writes; the disk flood stage sets the last one.
_WRITE_BLOCKS: Final = ("index.blocks.write", "index.blocks.read_only", "index.blocks.read_only_allow_delete")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DoctorCheck:
    """One finding. `fix` is one line a person can act on; empty when there is nothing to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    """The check's input was not given or not reachable; counts as passing."""

    @property
    def status(self) -> Literal["pass", "fail", "skip"]:
        if self.skipped:
            return "skip"
        return "pass" if self.ok else "fail"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _pass(name: str, detail: str) -> DoctorCheck:
    return DoctorCheck(name, True, detail)


def _fail(name: str, detail: str, fix: str) -> DoctorCheck:
    return DoctorCheck(name, False, detail, fix)


def _skip(name: str, detail: str, fix: str = "") -> DoctorCheck:
    return DoctorCheck(name, True, detail, fix, skipped=True)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DoctorInputs:
    """What the checks look at. Built by `resolve_inputs` from the CLI, or directly by tests."""

    endpoints: Endpoints
    infra: Infra = "embedded"
    source: str = ""
    """Where the endpoints came from, for the report."""
    control_url: str | None = None
    """The embedded stack's control server, when one runs (to switch its engine back on)."""
    log_files: tuple[Path, ...] = ()
    metrics_urls: tuple[str, ...] = ()
    prometheus_url: str | None = None
    service: str = DEFAULT_SERVICE_NAME
    index: str = "_all"
    """Index (or pattern) whose write blocks are checked."""
    window: float = DEFAULT_WINDOW_S
    timeout: float = DEFAULT_TIMEOUT_S
    env: Mapping[str, str] = field(default_factory=dict)
    """The environment the workers are started from (OTEL_SDK_DISABLED is read here)."""


@dataclass(frozen=True)
class _Spans:
    """Recent spans of the service, or why they could not be read."""

    spans: tuple[Span, ...]
    error: str | None = None


class DoctorContext:
    """The inputs plus what several checks share, each fetched once (logs, spans, reachability)."""

    def __init__(self, inputs: DoctorInputs, http: httpx.Client) -> None:
        self.inputs = inputs
        self.http = http
        self.jaeger = JaegerClient(inputs.endpoints.jaeger_url, client=http, timeout=inputs.timeout)
        self._results: dict[str, DoctorCheck] = {}

    def result(self, name: str, check: Check) -> DoctorCheck:
        """The result of a check, run once: later checks depend on reachability found earlier."""
        if name not in self._results:
            self._results[name] = check(self)
        return self._results[name]

    @cached_property
    def records(self) -> tuple[LogRecord, ...]:
        records: list[LogRecord] = []
        for path in self.inputs.log_files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise UsageError(f"cannot read log file {path}: {exc.strerror}") from exc
            # `source` is the whole path: two runs' files of the same worker name stay apart.
            records.extend(parse_line(line, source=str(path), line_no=n) for n, line in enumerate(text.splitlines(), 1) if line.strip())
        return tuple(records)

    @cached_property
    def recent_spans(self) -> _Spans:
        end = datetime.now(UTC) + timedelta(seconds=5)
        start = end - timedelta(seconds=self.inputs.window + 5)
        try:
            result = self.jaeger.find_traces(self.inputs.service, "", {}, start=start, end=end, limit=100)
        except TraceQueryError as exc:
            return _Spans((), str(exc))
        spans = (span for trace in result.traces for span in trace.spans)
        return _Spans(tuple(span for span in spans if span.service == self.inputs.service))

    @cached_property
    def metrics(self) -> dict[str, MetricsSnapshot | str]:
        """Each `--metrics` URL's scrape, or the error text of why it could not be read."""
        out: dict[str, MetricsSnapshot | str] = {}
        for url in self.inputs.metrics_urls:
            try:
                response = self.http.get(url, headers={"Accept": "text/plain; version=0.0.4"})
            except httpx.HTTPError as exc:
                out[url] = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                out[url] = f"HTTP {response.status_code}"
                continue
            try:
                out[url] = parse_metrics(response.text)
            except ValueError as exc:
                out[url] = str(exc)
        return out

    def fix_start(self, part: Literal["postgres", "es", "jaeger"]) -> str:
        """How to bring a server back, for the stack in use."""
        if self.inputs.infra == "docker":
            return f"{_COMPOSE} up -d --wait {part}   (then `{_COMPOSE} ps` shows it healthy)"
        names = {"postgres": "DATABASE_URL", "es": "ES_URL", "jaeger": "JAEGER_URL"}
        return f"start the embedded stack with `drillui stack up` (or fix {names[part]}), or use --infra docker"


# --------------------------------------------------------------------------- infrastructure


def check_postgres(ctx: DoctorContext) -> DoctorCheck:
    """Postgres answers a query on DATABASE_URL."""
    name = "postgres.reachable"
    url = ctx.inputs.endpoints.database_url
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(ctx.inputs.timeout)), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return _fail(name, f"Postgres at {_redact(url)} does not answer: {_first_line(exc)}", ctx.fix_start("postgres"))
    return _pass(name, f"PostgreSQL {row[0] if row else '?'} at {_redact(url)}")


def check_engine(ctx: DoctorContext) -> DoctorCheck:
    """The search engine's root answers with its version."""
    name = "engine.reachable"
    url = ctx.inputs.endpoints.es_url
    try:
        response = ctx.http.get(f"{url}/")
    except httpx.HTTPError as exc:
        fix = ctx.fix_start("es")
        if ctx.inputs.control_url and ctx.inputs.infra == "embedded":
            # The usual cause on the embedded stack: a drill was interrupted with the engine off.
            fix = f"a drill may have left the engine switched off: curl -X POST {ctx.inputs.control_url}/engine/up; else {fix}"
        return _fail(name, f"the engine at {url} does not answer: {_http_error(exc)}", fix)
    if response.status_code != 200:
        return _fail(name, f"the engine at {url} answers HTTP {response.status_code}: {_snippet(response.text)}", ctx.fix_start("es"))
    version = _json_dict(response).get("version") or {}
    return _pass(name, f"{version.get('distribution', 'elasticsearch')} {version.get('number', '?')} at {url}")


def check_docker_engine_switch(ctx: DoctorContext) -> DoctorCheck:
    """On the docker stack: the Docker engine answers and the `es` container can be found, so
    drill A can stop and start it."""
    name = "docker.es_container"
    if ctx.inputs.infra != "docker":
        return _skip(name, "embedded stack: the engine is switched by the stack itself")
    # Imported here: the docker SDK is only needed on the docker stack.
    from drillui.stack.docker import DockerEngineSwitch

    with DockerEngineSwitch.from_env(ctx.inputs.endpoints.es_url, ctx.inputs.env) as switch:
        try:
            state = switch.status()
        except StackError as exc:
            return _fail(name, exc.message, exc.hint or f"{_COMPOSE} ps shows what runs")
    if state != "running":
        return _fail(name, f"container {switch.container_name} is {state}", f"{_COMPOSE} start {switch.service}")
    return _pass(name, f"container {switch.container_name} is running; drill A can stop and start it")


def check_write_block(ctx: DoctorContext) -> DoctorCheck:
    """No index is left with a write block (drill C's fault, or the disk flood stage)."""
    name = "engine.write_block"
    if not ctx.result("engine.reachable", check_engine).ok:
        return _skip(name, "the engine does not answer (see engine.reachable)")
    url = ctx.inputs.endpoints.es_url
    index = ctx.inputs.index
    try:
        response = ctx.http.get(f"{url}/{index}/_settings/index.blocks.*", params={"flat_settings": "true"})
    except httpx.HTTPError as exc:
        return _fail(name, f"GET {url}/{index}/_settings: {_http_error(exc)}", ctx.fix_start("es"))
    if response.status_code == 404:
        return _pass(name, f"no index {index} yet")
    if response.status_code != 200:
        return _fail(
            name,
            f"GET {url}/{index}/_settings answers HTTP {response.status_code}: {_snippet(response.text)}",
            "check that ES_URL is the Elasticsearch/OpenSearch the workers write to, and --index a valid index or pattern",
        )
    blocked: dict[str, list[str]] = {}
    for idx, body in sorted(_json_dict(response).items()):
        settings = (body or {}).get("settings") or {}
        on = [key for key in _WRITE_BLOCKS if str(settings.get(key, "")).lower() == "true"]
        if on:
            blocked[idx] = on
    if not blocked:
        return _pass(name, f"no write block on {index}")
    shown = "; ".join(f"{idx}: {', '.join(keys)}" for idx, keys in blocked.items())
    first, keys = next(iter(blocked.items()))
    body = json.dumps({key: False for key in keys})
    fix = f"curl -X PUT '{url}/{first}/_settings' -H 'Content-Type: application/json' -d '{body}'"
    if len(blocked) > 1:
        fix += f"   (and the same for the {len(blocked) - 1} other(s))"
    return _fail(name, f"writes are refused (403) on {len(blocked)} index(es): {shown}", fix)


def check_stuck_rows(ctx: DoctorContext) -> DoctorCheck:
    """No outbox row is `processing` under a lease that has ended (nobody is working on it)."""
    name = "outbox.stuck"
    if not ctx.result("postgres.reachable", check_postgres).ok:
        return _skip(name, "Postgres does not answer (see postgres.reachable)")
    url = ctx.inputs.endpoints.database_url
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(ctx.inputs.timeout)), autocommit=True) as conn:
            rows = conn.execute(
                # The same rule as the worker's gauge outbox_stuck_processing_events; a row with
                # no lease at all can never be reclaimed, so it counts too.
                "SELECT projection, count(*) AS n, min(lease_until) AS lease_ended, "
                "count(*) FILTER (WHERE lease_until IS NULL) AS no_lease, "
                "string_agg(DISTINCT coalesce(claimed_by, '?'), ', ') AS owners "
                "FROM outbox WHERE status = 'processing' AND (lease_until < now() OR lease_until IS NULL) "
                "GROUP BY projection ORDER BY projection"
            ).fetchall()
    except pg_errors.UndefinedTable:
        return _pass(name, "no outbox table yet (no worker has run on this database)")
    except psycopg.Error as exc:
        return _fail(name, f"cannot read the outbox: {_first_line(exc)}", "check that DATABASE_URL is the workers' database and its user may read the outbox")
    if not rows:
        return _pass(name, "no row is stuck in processing with an expired lease")
    parts = []
    for projection, n, lease_ended, no_lease, owners in rows:
        since = f", lease ended {lease_ended:%Y-%m-%d %H:%M:%S %Z}" if lease_ended is not None else ""
        extra = f", {no_lease} without a lease" if no_lease else ""
        parts.append(f"{projection}: {n} row(s){since}{extra}, held by {owners}")
    fix = (
        "start a worker for that projection (it takes expired leases back first, outbox.reclaim), or requeue them: "
        "UPDATE outbox SET status='pending', claimed_by=NULL, lease_until=NULL, next_attempt_at=now() "
        "WHERE status='processing' AND (lease_until < now() OR lease_until IS NULL);"
    )
    return _fail(name, "rows stuck in processing: " + "; ".join(parts), fix)


# --------------------------------------------------------------------------- tracing


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
        return _fail(name, "; ".join(problems), fix)
    if latest:
        return _pass(name, f"{len(latest)} worker start(s) logged tracing.config; OTEL_SDK_DISABLED not set")
    read = f"no tracing.config/tracing.disabled line in {len(ctx.inputs.log_files)} log file(s)" if ctx.inputs.log_files else "no worker log given (--logs)"
    return _pass(name, f"OTEL_SDK_DISABLED not set; {read}")


def check_otlp_protocol(ctx: DoctorContext) -> DoctorCheck:
    """The OTLP endpoint speaks OTLP/HTTP (the worker's exporter), not gRPC, at `/v1/traces`."""
    name = "otlp.protocol"
    targets = {ctx.inputs.endpoints.otlp_endpoint.rstrip("/"): "the stack's OTLP endpoint"}
    for record in ctx.records:
        target = record.get("otlp_target")
        if record.event in ("tracing.config", "tracing.startup") and isinstance(target, str) and target:
            # Workers log the signal URL (<endpoint>/v1/traces): probe the endpoint they used.
            targets.setdefault(target.rstrip("/").removesuffix("/v1/traces"), f"worker {record.worker_id or '?'}'s target")
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
        return _fail(name, "; ".join(problems), fix if wrong_protocol else ctx.fix_start("jaeger"))
    return _pass(name, f"OTLP/HTTP receiver answers at {', '.join(f'{e}/v1/traces' for e in fine)}")


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
        return f"nothing answers POST {url} ({_http_error(exc)})", True
    if response.is_success:
        return None
    if response.status_code in (404, 405):
        return f"POST {url} answers HTTP {response.status_code}: not an OTLP/HTTP receiver (a query port, or /v1/traces twice?)", False
    return f"POST {url} answers HTTP {response.status_code}: {_snippet(response.text)}", False


def check_jaeger_search_api(ctx: DoctorContext) -> DoctorCheck:
    """Jaeger still serves the `/api/traces` search the runbook's curl commands use."""
    name = "jaeger.search_api"
    base = ctx.inputs.endpoints.jaeger_url
    try:
        legacy = ctx.http.get(f"{base}/api/traces", params={"service": ctx.inputs.service, "limit": "1", "lookback": "1m"})
        v3 = ctx.http.get(f"{base}/api/v3/services")
    except httpx.HTTPError as exc:
        return _fail(name, f"the Jaeger query API at {base} does not answer: {_http_error(exc)}", ctx.fix_start("jaeger"))
    legacy_body = _json_or_none(legacy)
    has_legacy = isinstance(legacy_body, dict) and "data" in legacy_body
    v3_body = _json_or_none(v3)
    has_v3 = v3.status_code == 200 and isinstance(v3_body, dict) and "services" in v3_body
    if has_legacy:
        return _pass(name, f"{base}: /api/traces search present; api_v3 {'present' if has_v3 else 'absent'}")
    if legacy.status_code == 404 and has_v3:
        return _fail(
            name,
            f"{base}/api/traces answers 404 without JSON: a Jaeger newer than 2.20, which serves only api_v3",
            f"drillui uses api_v3 by itself; for the runbook's curl commands query {base}/api/v3/traces"
            "?query.service_name=...&query.start_time_min=...&query.start_time_max=..., "
            "or pin jaegertracing/jaeger:2.20.0 (docker-compose.infra.yml does)",
        )
    return _fail(
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
        return _fail(name, f"cannot list Jaeger's services: {exc}", ctx.fix_start("jaeger"))
    if service not in services:
        known = ", ".join(sorted(services)) or "none"
        return _fail(
            name,
            f"Jaeger ({api}) has no service {service!r} yet; services: {known}",
            "enable tracing (WORDLOOM_TRACING_ENABLED=1), check OTEL_SERVICE_NAME and OTEL_EXPORTER_OTLP_ENDPOINT, "
            "then run one drill: a service appears with its first span",
        )
    try:
        operations = ctx.jaeger.operations(service)
    except TraceQueryError as exc:
        return _fail(name, f"cannot list the operations of {service!r}: {exc}", ctx.fix_start("jaeger"))
    ours = sorted(_WORKER_SPANS.intersection(operations))
    if not ours:
        return _fail(
            name,
            f"service {service!r} has operations {', '.join(sorted(operations)) or 'none'} but none of the worker's",
            "another program reports under this service name: give the worker its own OTEL_SERVICE_NAME",
        )
    return _pass(name, f"Jaeger ({api}) knows {service!r}; worker operations: {', '.join(ours)}")


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
        return _fail(
            name,
            f"a worker runs an old schema (current {OBS_SCHEMA}): " + "; ".join(old),
            "stop that worker and start it again from the current code; meanwhile add "
            f'{{"{ATTR_OBS_SCHEMA}":"{OBS_SCHEMA}"}} to Jaeger tag searches',
        )
    if not seen:
        why = spans.error or f"no span of {ctx.inputs.service!r} in the last {ctx.inputs.window:g}s"
        return _skip(name, f"no worker to look at: no worker log given (--logs); {why}")
    return _pass(name, f"{len(seen)} worker(s) seen in logs and spans, all on {OBS_SCHEMA}: {', '.join(sorted(seen))}")


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
        return _fail(
            name,
            "; ".join(duplicates),
            "run one worker per drill: stop the others (`pgrep -af \"python -m worker\"` lists them), "
            "or tell them apart by wordloom.worker_id in Jaeger and by instance in Prometheus",
        )
    if not looked:
        return _skip(name, f"nothing to look at: Jaeger not read ({spans.error}); no --metrics or --prometheus given")
    return _pass(name, "one writer each: " + "; ".join(looked))


def _series_keys(samples: Iterable[Any]) -> set[tuple[str, str]]:
    return {(str(s.labels.get("env", "")), str(s.labels.get("projection", ""))) for s in samples}


def check_worker_metrics(ctx: DoctorContext) -> DoctorCheck:
    """Each `--metrics` endpoint answers with the worker's series."""
    name = "worker.metrics"
    if not ctx.inputs.metrics_urls:
        return _skip(name, "no worker /metrics given (--metrics URL or port)")
    problems = []
    for url, scrape in ctx.metrics.items():
        if isinstance(scrape, str):
            problems.append(f"{url}: {scrape}")
        elif not scrape.has("outbox_processed_total"):
            problems.append(f"{url}: answers, but without the worker's outbox_* series (another program on this port?)")
    if problems:
        return _fail(
            name,
            "; ".join(problems),
            "start the worker with OUTBOX_METRICS_PORT set to that port; its log line metrics.listening says where it listens",
        )
    return _pass(name, f"{len(ctx.inputs.metrics_urls)} worker /metrics endpoint(s) answer")


# --------------------------------------------------------------------------- Prometheus


def check_prometheus_targets(ctx: DoctorContext) -> DoctorCheck:
    """Prometheus scrapes the workers: no non-worker target down, at least one worker target up,
    and every worker known to run (`--metrics`) up in Prometheus too.

    The worker job lists the runbook's usual ports (9108-9110, 9125-9129); a port with no worker
    behind it is down by design, so such targets are only reported, not failed.
    """
    name = "prometheus.targets"
    base = ctx.inputs.prometheus_url
    if not base:
        return _skip(name, "no Prometheus given (--prometheus URL)")
    base = base.rstrip("/")
    try:
        response = ctx.http.get(f"{base}/api/v1/targets", params={"state": "active"})
    except httpx.HTTPError as exc:
        return _fail(name, f"Prometheus at {base} does not answer: {_http_error(exc)}", f"{_COMPOSE} --profile monitoring up -d --wait prometheus")
    body = _json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return _fail(name, f"{base}/api/v1/targets answers HTTP {response.status_code}: {_snippet(response.text)}", "check the Prometheus URL (port 9090)")
    targets = [t for t in (body.get("data") or {}).get("activeTargets") or [] if isinstance(t, dict)]
    workers = [t for t in targets if _is_worker_target(t)]
    others = [t for t in targets if not _is_worker_target(t)]
    # Ports where a worker is known to run: its /metrics answered here with the worker's series.
    known_ports = {
        _port_of(url) for url, scrape in ctx.metrics.items() if isinstance(scrape, MetricsSnapshot) and scrape.has("outbox_processed_total")
    }
    problems = [f"{_target_name(t)} ({_labels(t).get('job', '?')}) is {t.get('health', '?')}: {t.get('lastError') or 'no error'}" for t in others if t.get("health") != "up"]
    up = [t for t in workers if t.get("health") == "up"]
    down = [t for t in workers if t.get("health") != "up"]
    for target in down:
        port = _port_of(str(target.get("scrapeUrl", "")))
        if port in known_ports:
            problems.append(
                f"a worker answers on port {port} here, but Prometheus' target {_target_name(target)} is "
                f"{target.get('health', '?')}: {target.get('lastError') or 'not scraped yet'}"
            )
    if not workers:
        problems.append(f"Prometheus scrapes no worker (no job {WORKER_JOB!r}, no target on the runbook's ports)")
    elif not up:
        first = down[0]
        problems.append(f"none of the {len(workers)} worker targets is up (e.g. {_target_name(first)}: {first.get('lastError') or first.get('health')})")
    bind_fix = (
        "run the worker with OUTBOX_METRICS_PORT=9108 (or another scraped port) and, on Linux, OUTBOX_METRICS_HOST=0.0.0.0 "
        "(a container cannot reach 127.0.0.1 on the host); see http://localhost:9090/targets"
    )
    if problems:
        return _fail(name, "; ".join(problems), bind_fix if workers or not targets else f"use infra/prometheus/prometheus.yml ({_COMPOSE} --profile monitoring up -d)")
    idle = f"; {len(down)} idle port(s) without a worker" if down else ""
    return _pass(name, f"{len(up)} worker target(s) up ({', '.join(_target_name(t) for t in up)}){idle}; {len(others)} other target(s) up")


def _labels(target: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = target.get("labels")
    return labels if isinstance(labels, dict) else {}


def _is_worker_target(target: Mapping[str, Any]) -> bool:
    return _labels(target).get("job") == WORKER_JOB or _port_of(str(target.get("scrapeUrl", ""))) in RUNBOOK_METRICS_PORTS


def _target_name(target: Mapping[str, Any]) -> str:
    return str(_labels(target).get("instance") or target.get("scrapeUrl") or "?")


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _prometheus_query(ctx: DoctorContext, query: str) -> list[dict[str, Any]] | str:
    """An instant query's result vector, or the reason it could not be had."""
    assert ctx.inputs.prometheus_url
    url = f"{ctx.inputs.prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = ctx.http.get(url, params={"query": query})
    except httpx.HTTPError as exc:
        return _http_error(exc)
    body = _json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return f"HTTP {response.status_code}"
    result = (body.get("data") or {}).get("result") or []
    return [item for item in result if isinstance(item, dict)]


# --------------------------------------------------------------------------- running


CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("postgres.reachable", check_postgres),
    ("engine.reachable", check_engine),
    ("docker.es_container", check_docker_engine_switch),
    ("engine.write_block", check_write_block),
    ("outbox.stuck", check_stuck_rows),
    ("tracing.enabled", check_tracing_enabled),
    ("otlp.protocol", check_otlp_protocol),
    ("jaeger.search_api", check_jaeger_search_api),
    ("jaeger.service", check_jaeger_service),
    ("workers.obs_schema", check_obs_schema),
    ("workers.single_writer", check_single_writer),
    ("worker.metrics", check_worker_metrics),
    ("prometheus.targets", check_prometheus_targets),
)


def run_doctor(inputs: DoctorInputs, *, only: Sequence[str] | None = None) -> list[DoctorCheck]:
    """Run the checks (all, or those named in `only`, in CHECKS order) and return their results."""
    unknown = sorted(set(only or ()) - {name for name, _ in CHECKS})
    if unknown:
        raise UsageError(f"no such doctor check: {', '.join(unknown)}", hint=f"checks: {', '.join(n for n, _ in CHECKS)}")
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    with httpx.Client(trust_env=False, timeout=inputs.timeout) as http:
        ctx = DoctorContext(inputs, http)
        return [ctx.result(name, check) for name, check in CHECKS if only is None or name in only]


# --------------------------------------------------------------------------- CLI


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drillui doctor` (see `cmd_doctor`)."""
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument(
        "--logs",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR_OR_FILE",
        help="worker log files (JSON lines); a folder means every *.log/*.jsonl/*.ndjson file under it",
    )
    parser.add_argument("--prometheus", metavar="URL", help="Prometheus to check, e.g. http://127.0.0.1:9090")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        metavar="URL_OR_PORT",
        help="worker /metrics endpoints, e.g. 9108 or http://127.0.0.1:9108/metrics",
    )
    parser.add_argument("--service", help=f"Jaeger service of the worker (default $OTEL_SERVICE_NAME or {DEFAULT_SERVICE_NAME})")
    parser.add_argument("--index", default="_all", help="index or pattern checked for write blocks (default _all)")
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_S,
        metavar="SECONDS",
        help=f"how far back spans count as 'a worker is writing now' (default {DEFAULT_WINDOW_S:g})",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS", help="per request (default 3)")
    parser.add_argument("--check", action="append", metavar="NAME", help="run only this check (repeatable)")


def cmd_doctor(args: argparse.Namespace) -> int:
    """`drillui doctor [--json] [--logs DIR_OR_FILE...] [--prometheus URL] [--metrics URL_OR_PORT...]
    [--service NAME] [--index PATTERN] [--window SECONDS] [--timeout SECONDS] [--check NAME]...`

    Reads from `args` (the options of `add_doctor_arguments`, plus the global ones):
    - `state_dir` (global `--state-dir`): the embedded stack to attach to, when one runs;
    - `infra` (global `--infra`, else `$DRILLUI_INFRA`): `docker` checks the compose file's
      addresses (each overridable by DATABASE_URL, ES_URL, JAEGER_URL, OTEL_EXPORTER_OTLP_ENDPOINT);
      `embedded` (default) the running embedded stack, else those variables or the same defaults;
    - `json`: one JSON document on stdout instead of the table;
    - `logs`: worker log files or folders, for `tracing.disabled`, the OTLP target and the schema;
    - `prometheus`: a Prometheus base URL, for its targets and duplicated series;
    - `metrics`: worker `/metrics` URLs or bare ports (`9108` = http://127.0.0.1:9108/metrics);
    - `service`, `index`, `window`, `timeout`, `check`: see `add_doctor_arguments`.

    Returns 1 when any check fails, else 0; bad usage raises UsageError (exit 2 in the CLI).
    """
    inputs = resolve_inputs(args, os.environ)
    only = getattr(args, "check", None)
    began = time.monotonic()
    results = run_doctor(inputs, only=only)
    failed = [r for r in results if r.status == "fail"]
    if getattr(args, "json", False):
        report = {
            "ok": not failed,
            "infra": inputs.infra,
            "source": inputs.source,
            "endpoints": {key: _redact(value) for key, value in inputs.endpoints.to_json().items()},
            "seconds": round(time.monotonic() - began, 3),
            "checks": [r.to_json() for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        _print_table(inputs, results, sys.stdout)
    return 1 if failed else 0


def _print_table(inputs: DoctorInputs, results: Sequence[DoctorCheck], out: Any) -> None:
    print(f"drillui doctor: {inputs.infra} infrastructure ({inputs.source})", file=out)
    width = max((len(r.name) for r in results), default=0)
    for r in results:
        print(f"  [{r.status.upper()}] {r.name:<{width}}  {r.detail}", file=out)
        if r.fix and r.status == "fail":
            print(f"         {'':<{width}}  fix: {r.fix}", file=out)
    counts = {status: sum(1 for r in results if r.status == status) for status in ("pass", "fail", "skip")}
    print(f"{len(results)} checks: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped", file=out)


def resolve_inputs(args: argparse.Namespace, env: Mapping[str, str]) -> DoctorInputs:
    """The endpoints to check and the files/URLs given, validated (UsageError on a bad one)."""
    from drillui.runner.infra import INFRA_ENV, infra_choice
    from drillui.stack.docker import compose_endpoints

    chosen = getattr(args, "infra", None)
    infra: Infra = "docker" if infra_choice({INFRA_ENV: chosen} if chosen else env) == "docker" else "embedded"
    control_url = None
    if infra == "docker":
        endpoints = compose_endpoints(env)
        source = "docker-compose.infra.yml addresses and environment overrides"
    else:
        state_dir = getattr(args, "state_dir", None)
        folder = Path(state_dir) if state_dir else default_state_dir(env)
        running = Stack.attach(folder)
        if running is not None:
            endpoints, control_url = running.endpoints, running.control_url
            source = f"embedded stack pid {running.pid} on {running.state_dir}"
        else:
            # No stack: check what a worker would use (the variables, else the usual ports).
            endpoints = compose_endpoints(env)
            source = f"no embedded stack running on {folder}: environment overrides and default ports"
    timeout = float(getattr(args, "timeout", DEFAULT_TIMEOUT_S))
    window = float(getattr(args, "window", DEFAULT_WINDOW_S))
    if timeout <= 0 or window <= 0:
        raise UsageError("--timeout and --window must be positive numbers of seconds")
    return DoctorInputs(
        endpoints=endpoints,
        infra=infra,
        source=source,
        control_url=control_url,
        log_files=expand_log_paths(getattr(args, "logs", None) or []),
        metrics_urls=tuple(metrics_url(text) for text in getattr(args, "metrics", None) or []),
        prometheus_url=_http_url(getattr(args, "prometheus", None), "--prometheus"),
        service=getattr(args, "service", None) or env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
        index=getattr(args, "index", None) or "_all",
        window=window,
        timeout=timeout,
        env=dict(env),
    )


def expand_log_paths(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Files as given; folders as their log files (recursively, sorted). A missing path is a UsageError."""
    files: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_LOG_SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"--logs {path}: no such file or folder")
    return tuple(dict.fromkeys(files))


def metrics_url(text: str) -> str:
    """`9108` → http://127.0.0.1:9108/metrics; `host:9108` → http://host:9108/metrics; a URL as is."""
    value = text.strip()
    if value.isdigit():
        port = int(value)
        if not 1 <= port <= 65535:
            raise UsageError(f"--metrics {text}: port outside 1..65535")
        return f"http://127.0.0.1:{port}/metrics"
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--metrics {text}: not a port, host:port or http(s) URL")
    return value if parts.path not in ("", "/") else f"{value.rstrip('/')}/metrics"


def _http_url(text: str | None, flag: str) -> str | None:
    if not text:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} {text}: not an http(s) URL", hint=f"e.g. {flag} http://127.0.0.1:9090")
    return text.strip().rstrip("/")


# --------------------------------------------------------------------------- small helpers


def _redact(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _redact(lines[0]) if lines else type(exc).__name__


def _http_error(exc: httpx.HTTPError) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _snippet(text: str, size: int = 160) -> str:
    return " ".join(text.split())[:size]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _json_dict(response: httpx.Response) -> dict[str, Any]:
    body = _json_or_none(response)
    return body if isinstance(body, dict) else {}
