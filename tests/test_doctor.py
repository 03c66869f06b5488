"""`drillui doctor`: each check is made to fail by the malfunction it diagnoses, then to pass.

The servers are the real embedded ones (Postgres, the engine behind its relay, the trace store
speaking Jaeger's API); small fake HTTP servers stand in only where the machine has no such
server: a gRPC port answering an OTLP/HTTP request, a newer Jaeger without the `/api/traces`
search, a Prometheus, and a worker's `/metrics`. Worker log lines are written by the worker's own
logger and startup code, so the checks read exactly what a worker writes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, generate_latest

from drillui.doctor import (
    CHECKS,
    DoctorCheck,
    DoctorInputs,
    add_doctor_arguments,
    cmd_doctor,
    expand_log_paths,
    metrics_url,
    resolve_inputs,
    run_doctor,
)
from drillui.errors import UsageError
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.stack import Endpoints
from drillui.stack.tracestore import TraceStoreServer
from tests.test_docker_switch import FakeContainer, FakeDocker, compose_labels
from worker.__main__ import _startup_lines
from worker.contract import ATTR_OBS_SCHEMA, ATTR_WORKER_ID, OBS_SCHEMA, SPAN_BATCH, SPAN_CLAIM
from worker.settings import WorkerSettings
from worker.telemetry.logs import JsonLogger
from worker.telemetry.metrics import WorkerMetrics
from worker.telemetry.tracing import traces_url

# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nowhere() -> Endpoints:
    """Endpoints where nothing listens: each test points only what it checks at a real server."""
    port = free_port()
    return Endpoints(
        database_url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        es_url=f"http://127.0.0.1:{port}",
        otlp_endpoint=f"http://127.0.0.1:{port}",
        jaeger_url=f"http://127.0.0.1:{port}",
    )


def inputs(**changes: Any) -> DoctorInputs:
    base = DoctorInputs(endpoints=nowhere(), source="test", timeout=2.0, service=f"svc-{uuid.uuid4().hex[:8]}")
    return replace(base, **changes)


def one(given: DoctorInputs, name: str) -> DoctorCheck:
    [result] = run_doctor(given, only=[name])
    assert result.name == name
    return result


def failed(result: DoctorCheck) -> bool:
    return result.status == "fail" and not result.ok and bool(result.fix)


Route = Callable[[str, str, Mapping[str, list[str]]], tuple[int, Any, str]]


@contextmanager
def http_server(route: Route) -> Iterator[str]:
    """A small HTTP server on 127.0.0.1:<free port>; `route(method, path, query)` answers."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            url = urlsplit(self.path)
            status, body, content_type = route(method, url.path, parse_qs(url.query))
            data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            """Silenced: test output is for failures."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def grpc_port() -> Iterator[str]:
    """What an HTTP/1.1 client meets on an OTLP gRPC port: HTTP/2 SETTINGS, then GOAWAY and close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00")
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                except OSError:
                    continue  # the client may hang up first
                conn.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def metrics_text(env: str = "local", projection: str = "search_index_to_elastic") -> bytes:
    registry = CollectorRegistry()
    WorkerMetrics(registry, env=env, projection=projection)
    return generate_latest(registry)


@contextmanager
def worker_metrics(env: str = "local", projection: str = "search_index_to_elastic") -> Iterator[str]:
    text = metrics_text(env, projection)

    def route(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[int, Any, str]:
        return (200, text, "text/plain; version=0.0.4") if path == "/metrics" else (404, "not found", "text/plain")

    with http_server(route) as base:
        yield f"{base}/metrics"


def export_spans(endpoint: str, service: str, *, instances: list[str], schema: str | None = OBS_SCHEMA, attrs: Mapping[str, Any] | None = None) -> None:
    """Spans as the worker sends them: its resource (service, instance, schema) and a claim span."""
    for instance in instances:
        resource: dict[str, Any] = {"service.name": service, "service.instance.id": instance}
        if schema is not None:
            resource[ATTR_OBS_SCHEMA] = schema
        provider = TracerProvider(resource=Resource.create(resource))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        try:
            tracer = provider.get_tracer("worker")
            with tracer.start_as_current_span(SPAN_CLAIM, attributes={ATTR_WORKER_ID: instance, "claimed_count": 0}):
                pass
            with tracer.start_as_current_span(SPAN_BATCH, attributes=dict(attrs or {})):
                pass
        finally:
            provider.shutdown()


def worker_log(path: Path, *, worker_id: str, tracing: bool, sdk_disabled: bool = False, otlp: str = "http://127.0.0.1:4318") -> Path:
    """The startup lines the worker writes, by the worker's own code."""
    settings = WorkerSettings(
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        WORDLOOM_TRACING_ENABLED=tracing,
        OTEL_SDK_DISABLED=sdk_disabled,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
        OUTBOX_WORKER_ID=worker_id,
    )
    with path.open("a", encoding="utf-8") as stream:
        log = JsonLogger(service=settings.OTEL_SERVICE_NAME, worker_id=worker_id, env="local", stream=stream)
        target = traces_url(otlp) if settings.tracing_enabled else None
        _startup_lines(settings, log, target, True if target else None)
        log.info("worker.started", "worker started", projection="search_index_to_elastic")
    return path


# --------------------------------------------------------------------------- infrastructure


def test_postgres_unreachable_then_reachable(db_url: str) -> None:
    down = one(inputs(), "postgres.reachable")
    assert failed(down)
    assert "does not answer" in down.detail and "drillui stack up" in down.fix
    docker = one(inputs(infra="docker"), "postgres.reachable")
    assert "docker compose -f docker-compose.infra.yml up -d --wait postgres" in docker.fix

    up = one(inputs(endpoints=replace(nowhere(), database_url=db_url)), "postgres.reachable")
    assert up.status == "pass", up.detail
    assert up.detail.startswith("PostgreSQL ")


def test_engine_unreachable_then_reachable(engine: EmbeddedEngine, es_url: str) -> None:
    given = inputs(endpoints=replace(nowhere(), es_url=es_url), control_url="http://127.0.0.1:1")
    engine.set_reachable(False)  # what a drill interrupted mid-way leaves behind
    down = one(given, "engine.reachable")
    assert failed(down)
    assert "ConnectError" in down.detail
    assert "/engine/up" in down.fix
    docker = one(replace(given, infra="docker"), "engine.reachable")
    assert "docker compose -f docker-compose.infra.yml up -d --wait es" in docker.fix

    engine.set_reachable(True)
    up = one(given, "engine.reachable")
    assert up.status == "pass", up.detail
    assert "opensearch" in up.detail


def test_docker_es_container_missing_or_stopped_then_running() -> None:
    assert one(inputs(), "docker.es_container").status == "skip"  # the embedded stack switches itself
    es_port = free_port()
    closed = f"tcp://127.0.0.1:{free_port()}"
    no_docker = one(inputs(infra="docker", env={"DOCKER_HOST": closed}), "docker.es_container")
    assert failed(no_docker)
    assert "no Docker engine answers" in no_docker.detail and "start Docker" in no_docker.fix

    es = FakeContainer("e5", "drillui-es-1", compose_labels("drillui"), es_port, running=False)
    fake = FakeDocker(containers=[])
    fake.start()
    try:
        given = inputs(infra="docker", endpoints=replace(nowhere(), es_url=f"http://127.0.0.1:{es_port}"), env={"DOCKER_HOST": fake.url})
        missing = one(given, "docker.es_container")
        assert failed(missing)
        assert "no container of compose service 'es'" in missing.detail and "up -d" in missing.fix
        fake.containers.append(es)
        stopped = one(given, "docker.es_container")
        assert failed(stopped)
        assert stopped.detail == "container drillui-es-1 is exited"
        assert stopped.fix == "docker compose -f docker-compose.infra.yml start es"
        es.running = True
        running = one(given, "docker.es_container")
        assert running.status == "pass", running.detail
    finally:
        fake.stop()


def test_write_block_left_on_then_removed_with_the_fix(es_url: str, es_index: str) -> None:
    http = httpx.Client(trust_env=False, timeout=5)
    try:
        given = inputs(endpoints=replace(nowhere(), es_url=es_url), index=es_index)
        assert one(given, "engine.write_block").detail == f"no index {es_index} yet"
        assert http.put(f"{es_url}/{es_index}").status_code == 200
        assert http.put(f"{es_url}/{es_index}/_settings", json={"index": {"blocks": {"write": True}}}).status_code == 200

        blocked = one(given, "engine.write_block")
        assert failed(blocked)
        assert f"{es_index}: index.blocks.write" in blocked.detail
        assert blocked.fix.startswith(f"curl -X PUT '{es_url}/{es_index}/_settings'")
        body = json.loads(blocked.fix.split("-d '", 1)[1].rstrip("'"))
        assert http.put(f"{es_url}/{es_index}/_settings", json=body).status_code == 200

        assert one(given, "engine.write_block").status == "pass"
        # Skipped (not failed twice) when the engine itself does not answer.
        assert one(inputs(), "engine.write_block").status == "skip"
    finally:
        http.close()


def test_rows_stuck_in_processing_then_requeued_with_the_fix(db_url: str) -> None:
    given = inputs(endpoints=replace(nowhere(), database_url=db_url))
    assert one(given, "outbox.stuck").status == "pass"
    with psycopg.connect(db_url, autocommit=True) as conn:
        for lease in ("now() - interval '2 minutes'", "now() + interval '5 minutes'"):
            conn.execute(
                "INSERT INTO outbox (id, projection, op, entity_id, status, claimed_by, lease_until) "
                f"VALUES (%s, 'search_index_to_elastic', 'upsert', %s, 'processing', 'worker-killed', {lease})",
                (uuid.uuid4(), uuid.uuid4()),
            )

    stuck = one(given, "outbox.stuck")
    assert failed(stuck)
    # Only the row whose lease ended: the other one is still legitimately held.
    assert "search_index_to_elastic: 1 row(s)" in stuck.detail and "held by worker-killed" in stuck.detail
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(stuck.fix.split("requeue them: ", 1)[1])

    assert one(given, "outbox.stuck").status == "pass"
    assert one(inputs(), "outbox.stuck").status == "skip"


# --------------------------------------------------------------------------- tracing


def test_tracing_disabled_in_the_log_or_by_otel_sdk_disabled_then_enabled(tmp_path: Path) -> None:
    off = worker_log(tmp_path / "worker-off.log", worker_id="w-off", tracing=False)
    result = one(inputs(log_files=(off,)), "tracing.enabled")
    assert failed(result)
    assert "worker w-off logged tracing.disabled (WORDLOOM_TRACING_ENABLED is not 1)" in result.detail
    assert "WORDLOOM_TRACING_ENABLED=1" in result.fix

    sdk_off = worker_log(tmp_path / "worker-sdk.log", worker_id="w-sdk", tracing=True, sdk_disabled=True)
    assert "OTEL_SDK_DISABLED=true" in one(inputs(log_files=(sdk_off,)), "tracing.enabled").detail
    env_off = one(inputs(env={"OTEL_SDK_DISABLED": "true"}), "tracing.enabled")
    assert failed(env_off)
    assert "OTEL_SDK_DISABLED=true in this environment" in env_off.detail

    # The same worker restarted with tracing on: its latest startup line is what counts.
    worker_log(off, worker_id="w-off", tracing=True)
    on = one(inputs(log_files=(off,), env={"OTEL_SDK_DISABLED": "false"}), "tracing.enabled")
    assert on.status == "pass", on.detail
    assert "1 worker start(s) logged tracing.config" in on.detail


def test_otlp_endpoint_speaking_grpc_or_wrong_path_then_otlp_http(trace_store: TraceStoreServer, tmp_path: Path) -> None:
    store = trace_store.url.rstrip("/")
    with grpc_port() as grpc:
        result = one(inputs(endpoints=replace(nowhere(), otlp_endpoint=grpc)), "otlp.protocol")
        assert failed(result)
        assert "not HTTP/1.1" in result.detail and "OTLP gRPC" in result.detail
        assert "4318 is OTLP HTTP" in result.fix

        # A worker's own target is probed too, even when the stack's endpoint is right.
        log = worker_log(tmp_path / "w.log", worker_id="w-grpc", tracing=True, otlp=grpc)
        from_log = one(inputs(endpoints=replace(nowhere(), otlp_endpoint=store), log_files=(log,)), "otlp.protocol")
        assert failed(from_log)
        assert f"worker w-grpc's target {grpc}" in from_log.detail

        # The same worker restarted on the right endpoint: its latest start is what counts.
        worker_log(log, worker_id="w-grpc", tracing=True, otlp=store)
        fixed = one(inputs(endpoints=replace(nowhere(), otlp_endpoint=store), log_files=(log,)), "otlp.protocol")
        assert fixed.status == "pass", fixed.detail
        worker_log(log, worker_id="w-grpc", tracing=True, otlp=grpc)
        assert failed(one(inputs(endpoints=replace(nowhere(), otlp_endpoint=store), log_files=(log,)), "otlp.protocol"))

    on_4317 = one(inputs(endpoints=replace(nowhere(), otlp_endpoint="http://127.0.0.1:4317")), "otlp.protocol")
    assert failed(on_4317)
    assert "port 4317 is OTLP gRPC" in on_4317.detail
    twice = one(inputs(endpoints=replace(nowhere(), otlp_endpoint=f"{store}/v1/traces")), "otlp.protocol")
    assert failed(twice)
    assert "HTTP 404" in twice.detail

    ok = one(inputs(endpoints=replace(nowhere(), otlp_endpoint=store)), "otlp.protocol")
    assert ok.status == "pass", ok.detail


def test_newer_jaeger_without_the_search_api_then_one_with_it(trace_store: TraceStoreServer) -> None:
    def newer_jaeger(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[int, Any, str]:
        if path == "/api/v3/services":
            return 200, {"services": ["wordloom-search-outbox-worker"]}, "text/plain; charset=utf-8"
        return 404, "404 page not found\n", "text/plain; charset=utf-8"

    with http_server(newer_jaeger) as base:
        missing = one(inputs(endpoints=replace(nowhere(), jaeger_url=base)), "jaeger.search_api")
    assert failed(missing)
    assert "404 without JSON" in missing.detail and "newer than 2.20" in missing.detail
    assert "api_v3" in missing.fix and "jaegertracing/jaeger:2.20.0" in missing.fix

    present = one(inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url)), "jaeger.search_api")
    assert present.status == "pass", present.detail
    assert "api_v3 present" in present.detail


def test_jaeger_without_the_service_then_with_it(trace_store: TraceStoreServer) -> None:
    given = inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url))
    absent = one(given, "jaeger.service")
    assert failed(absent)
    assert f"no service {given.service!r} yet" in absent.detail

    export_spans(trace_store.url, given.service, instances=["w-1"])
    present = one(given, "jaeger.service")
    assert present.status == "pass", present.detail
    assert "(api_v3)" in present.detail and "outbox.claim_batch" in present.detail


# --------------------------------------------------------------------------- workers


def test_worker_on_an_old_schema_then_on_the_current_one(trace_store: TraceStoreServer, tmp_path: Path) -> None:
    old_log = tmp_path / "old.log"
    old_log.write_text(
        json.dumps({"ts": "2026-02-08T22:50:03Z", "level": "info", "event": "outbox.retry_scheduled", "worker_id": "w-old"}) + "\n"
        + "Observability schema: labs-008-v1 (file=worker.py)\n",
        encoding="utf-8",
    )
    from_log = one(inputs(log_files=(old_log,)), "workers.obs_schema")
    assert failed(from_log)
    assert "worker w-old" in from_log.detail and "obs_schema=none" in from_log.detail
    assert "obs_schema=labs-008-v1" in from_log.detail
    assert OBS_SCHEMA in from_log.fix

    stale = inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url))
    export_spans(trace_store.url, stale.service, instances=["w-stale"], schema=None, attrs={"wordloom.outbox.id": "x"})
    from_spans = one(stale, "workers.obs_schema")
    assert failed(from_spans)
    assert "worker w-stale sends spans" in from_spans.detail and "old keys wordloom.outbox.id" in from_spans.detail

    current = inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url))
    new_log = worker_log(tmp_path / "new.log", worker_id="w-new", tracing=True)
    export_spans(trace_store.url, current.service, instances=["w-new"])
    ok = one(replace(current, log_files=(new_log,)), "workers.obs_schema")
    assert ok.status == "pass", ok.detail
    assert "1 worker(s)" in ok.detail


def test_two_workers_writing_the_same_spans_or_series_then_one(trace_store: TraceStoreServer) -> None:
    twice = inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url))
    export_spans(trace_store.url, twice.service, instances=["w-a", "w-b"])
    spans = one(twice, "workers.single_writer")
    assert failed(spans)
    assert f"2 workers sent spans as {twice.service!r}" in spans.detail and "w-a, w-b" in spans.detail

    with worker_metrics() as first, worker_metrics() as second, worker_metrics(projection="chronicle") as other:
        series = one(inputs(metrics_urls=(first, second)), "workers.single_writer")
        assert failed(series)
        assert "2 workers export env=local projection=search_index_to_elastic" in series.detail

        once = inputs(endpoints=replace(nowhere(), jaeger_url=trace_store.url), metrics_urls=(first, other))
        export_spans(trace_store.url, once.service, instances=["w-a"])
        ok = one(once, "workers.single_writer")
        assert ok.status == "pass", ok.detail

    def prometheus(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[int, Any, str]:
        vector = [
            {"metric": {"__name__": "outbox_lag_events", "env": "local", "projection": "chronicle", "instance": f"host.docker.internal:{port}"}, "value": [0, "0"]}
            for port in (9108, 9109)
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": vector}}, "application/json"

    with http_server(prometheus) as prom:
        from_prometheus = one(inputs(prometheus_url=prom), "workers.single_writer")
    assert failed(from_prometheus)
    assert "host.docker.internal:9108, Prometheus target host.docker.internal:9109" in from_prometheus.detail


def test_worker_metrics_not_answering_or_not_a_worker_then_a_worker(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/metrics"
    down = one(inputs(metrics_urls=(closed,)), "worker.metrics")
    assert failed(down)
    assert "ConnectError" in down.detail

    def stranger(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[int, Any, str]:
        return 200, "# TYPE up gauge\nup 1\n", "text/plain; version=0.0.4"

    with http_server(stranger) as base:
        other = one(inputs(metrics_urls=(f"{base}/metrics",)), "worker.metrics")
    assert failed(other)
    assert "without the worker's outbox_* series" in other.detail

    with worker_metrics() as url:
        ok = one(inputs(metrics_urls=(url,)), "worker.metrics")
    assert ok.status == "pass", ok.detail
    assert one(inputs(), "worker.metrics").status == "skip"


def _target(port: int, health: str, job: str = "outbox-worker", error: str = "") -> dict[str, Any]:
    instance = f"host.docker.internal:{port}" if job == "outbox-worker" else f"localhost:{port}"
    return {
        "labels": {"job": job, "instance": instance},
        "scrapeUrl": f"http://{instance}/metrics",
        "health": health,
        "lastError": error,
    }


def test_prometheus_target_down_then_up() -> None:
    refused = 'Get "http://host.docker.internal:9108/metrics": dial tcp 172.17.0.1:9108: connect: connection refused'
    scenes: dict[str, list[dict[str, Any]]] = {
        "all_down": [_target(9090, "up", "prometheus"), *(_target(p, "down", error=refused) for p in (9108, 9109))],
        "self_down": [_target(9090, "down", "prometheus", "context deadline exceeded"), _target(9108, "up")],
        "one_up": [_target(9090, "up", "prometheus"), _target(9108, "up"), _target(9109, "down", error=refused)],
    }
    scene = {"now": "all_down"}

    def prometheus(method: str, path: str, query: Mapping[str, list[str]]) -> tuple[int, Any, str]:
        if path != "/api/v1/targets":
            return 404, "404 page not found", "text/plain"
        data = {"activeTargets": scenes[scene["now"]], "droppedTargets": []}
        return 200, {"status": "success", "data": data}, "application/json"

    with http_server(prometheus) as prom:
        given = inputs(prometheus_url=prom)
        down = one(given, "prometheus.targets")
        assert failed(down)
        assert "none of the 2 worker targets is up" in down.detail and "connection refused" in down.detail
        assert "OUTBOX_METRICS_HOST=0.0.0.0" in down.fix

        scene["now"] = "self_down"
        assert "localhost:9090 (prometheus) is down" in one(given, "prometheus.targets").detail

        scene["now"] = "one_up"
        up = one(given, "prometheus.targets")
        assert up.status == "pass", up.detail
        assert "1 worker target(s) up (host.docker.internal:9108); 1 idle port(s)" in up.detail

        # ...unless a worker is known to run (its /metrics answers here) on a port whose target is down.
        with worker_metrics() as url:
            port = int(urlsplit(url).port or 0)
            scenes["one_up"].append(_target(port, "down", error=refused))
            unseen = one(replace(given, metrics_urls=(url,)), "prometheus.targets")
        assert failed(unseen)
        assert f"a worker answers on port {port} here, but Prometheus' target host.docker.internal:{port} is down" in unseen.detail

    assert one(inputs(), "prometheus.targets").status == "skip"


# --------------------------------------------------------------------------- the command


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="drillui doctor")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--infra")
    add_doctor_arguments(parser)
    return parser.parse_args(argv)


def test_cmd_doctor_json_and_exit_code_on_the_embedded_servers(
    db_url: str, es_url: str, trace_store: TraceStoreServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    export_spans(trace_store.url, service, instances=["w-1"])
    (tmp_path / "logs").mkdir()
    worker_log(tmp_path / "logs" / "worker.log", worker_id="w-1", tracing=True, otlp=trace_store.url)
    for name, value in {
        "DATABASE_URL": db_url,
        "ES_URL": es_url,
        "JAEGER_URL": trace_store.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": trace_store.url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("DRILLUI_INFRA", raising=False)
    with worker_metrics() as url:
        argv = ["--state-dir", str(tmp_path / "no-stack"), "--json", "--service", service, "--logs", str(tmp_path / "logs"), "--metrics", url]
        out = io.StringIO()
        with redirect_stdout(out):
            code = cmd_doctor(_args(argv), os.environ)
    report = json.loads(out.getvalue())
    assert code == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert report["ok"] is True and report["infra"] == "embedded"
    assert [c["name"] for c in report["checks"]] == [name for name, _ in CHECKS]
    assert {c["status"] for c in report["checks"]} <= {"pass", "skip"}

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/postgres")
    out = io.StringIO()
    with redirect_stdout(out):
        code = cmd_doctor(_args(["--state-dir", str(tmp_path / "no-stack"), "--json", "--check", "postgres.reachable"]), os.environ)
    assert code == 1
    assert "s3cret" not in out.getvalue()
    report = json.loads(out.getvalue())
    assert [(c["name"], c["status"]) for c in report["checks"]] == [("postgres.reachable", "fail")]

    out = io.StringIO()
    with redirect_stdout(out):
        cmd_doctor(_args(["--state-dir", str(tmp_path / "no-stack"), "--check", "postgres.reachable"]), os.environ)
    assert "[FAIL] postgres.reachable" in out.getvalue() and "fix: " in out.getvalue()
    assert "1 checks: 0 passed, 1 failed, 0 skipped" in out.getvalue()


def test_inputs_docker_infra_and_argument_forms(tmp_path: Path) -> None:
    docker = resolve_inputs(_args(["--infra", "docker"]), {})
    assert docker.infra == "docker"
    assert docker.endpoints.database_url == "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    assert docker.endpoints.jaeger_url == "http://127.0.0.1:16686"
    from_env = resolve_inputs(_args([]), {"DRILLUI_INFRA": "docker", "OTEL_SERVICE_NAME": "mine"})
    assert (from_env.infra, from_env.service) == ("docker", "mine")

    assert metrics_url("9108") == "http://127.0.0.1:9108/metrics"
    assert metrics_url("localhost:9125") == "http://localhost:9125/metrics"
    assert metrics_url("http://127.0.0.1:9109/metrics") == "http://127.0.0.1:9109/metrics"
    with pytest.raises(UsageError, match="--metrics 70000"):
        metrics_url("70000")

    (tmp_path / "run" / "_logs").mkdir(parents=True)
    (tmp_path / "run" / "_logs" / "worker-1.log").write_text("{}\n", encoding="utf-8")
    (tmp_path / "run" / "_result.json").write_text("{}", encoding="utf-8")
    assert expand_log_paths([tmp_path / "run"]) == (tmp_path / "run" / "_logs" / "worker-1.log",)
    with pytest.raises(UsageError, match="no such file or folder"):
        expand_log_paths([tmp_path / "missing"])
    with pytest.raises(UsageError, match="no such doctor check: nope"):
        run_doctor(inputs(), only=["nope"])
    with pytest.raises(UsageError, match="--prometheus ftp://x: not an http"):
        resolve_inputs(_args(["--infra", "docker", "--prometheus", "ftp://x"]), {})
