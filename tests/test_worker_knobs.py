"""The fault knobs of the observability drills, in the relay and as a process: a stale build's
span schema, the batch result written early (runbook manual-test/1), and what a worker says when
its spans cannot reach a collector (runbook 3.2.1)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import StatusCode

from tests.worker_harness import make_relay
from worker.contract import OBS_SCHEMA, PREVIOUS_OBS_SCHEMA
from worker.db import connect, ensure_schema, insert_event
from worker.telemetry.logs import JsonLogger
from worker.telemetry.schema import SpanSchema
from worker.telemetry.tracing import ExportFailureLog, collector_reachable, log_export_failures, setup_tracing

P = "search_index_to_elastic"


def _index(es_url: str, index: str) -> None:
    r = httpx.put(f"{es_url}/{index}", json={"mappings": {"properties": {"title": {"type": "text"}, "n": {"type": "integer"}}}})
    assert r.status_code == 200, r.text


def _insert(db_url: str, payloads: list[dict[str, Any]]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    out = []
    with connect(db_url) as conn:
        ensure_schema(conn)
        for payload in payloads:
            entity = uuid.uuid4()
            out.append((insert_event(conn, projection=P, op="upsert", entity_id=entity, payload=payload), entity))
    return out


# ---- the previous schema ------------------------------------------------------------------------


def test_a_stale_schema_worker_puts_the_entity_id_under_the_old_key(db_url: str, es_url: str, es_index: str) -> None:
    _index(es_url, es_index)
    [(event, entity)] = _insert(db_url, [{"title": "a", "n": 1}])
    h = make_relay(db_url, es_url=es_url, index=es_index, schema=SpanSchema(PREVIOUS_OBS_SCHEMA))
    try:
        h.relay.process(h.relay.claim())
        spans = {s.name: s for s in h.finished_spans()}
        one = spans["outbox.process"].attributes
        assert one["wordloom.outbox.id"] == str(entity) == one["wordloom.entity.id"], "the old bug: the entity id under the event's key"
        assert "wordloom.outbox_event_id" not in one and "wordloom.claim_batch_id" not in one
        assert one["wordloom.obs_schema"] == PREVIOUS_OBS_SCHEMA and one["result"] == "ok"
        for name in ("outbox.claim_batch", "projection.process_batch"):
            assert "wordloom.claim_batch_id" not in spans[name].attributes
            assert spans[name].attributes["wordloom.obs_schema"] == PREVIOUS_OBS_SCHEMA
        assert spans["outbox.process"].resource.attributes["wordloom.obs_schema"] == PREVIOUS_OBS_SCHEMA
        # The logs keep their fields (the runbook's stale build differed in its spans) and say the schema.
        [done] = [line for line in h.logs() if line["event"] == "outbox.processed"]
        assert done["outbox_event_id"] == str(event) and done["obs_schema"] == PREVIOUS_OBS_SCHEMA
    finally:
        h.close()


def test_the_current_schema_is_unchanged() -> None:
    attrs = {"wordloom.outbox_event_id": "e", "wordloom.entity_id": "x", "wordloom.claim_batch_id": "b", "wordloom.obs_schema": OBS_SCHEMA}
    assert SpanSchema().attributes(attrs) == attrs
    with pytest.raises(ValueError, match="unknown observability schema"):
        SpanSchema("labs-008")


# ---- the batch result written early ---------------------------------------------------------------


@pytest.mark.parametrize("early", [False, True], ids=["fixed", "knob"])
def test_the_batch_result_written_early_says_ok_over_an_error_child(db_url: str, es_url: str, es_index: str, early: bool) -> None:
    _index(es_url, es_index)
    rows = _insert(db_url, [{"title": "good", "n": 1}, {"title": "poison", "n": "not-a-number"}])
    h = make_relay(db_url, es_url=es_url, index=es_index, batch_result_early=early)
    try:
        h.relay.process(h.relay.claim())
        spans = h.finished_spans()
        [batch] = [s for s in spans if s.name == "projection.process_batch"]
        children = {s.attributes["wordloom.outbox_event_id"]: s for s in spans if s.name == "outbox.process"}
        poison = children[str(rows[1][0])]
        assert poison.status.status_code == StatusCode.ERROR and poison.parent is not None
        assert poison.parent.span_id == batch.context.span_id, "the failed event span is a child of the batch span"
        if early:
            assert batch.attributes["result"] == "ok" and batch.attributes["failed_count"] == 0
            assert "reason" not in batch.attributes and batch.status.status_code != StatusCode.ERROR
        else:
            assert batch.attributes["result"] == "partial" and batch.attributes["reason"] == "es_4xx"
            assert batch.attributes["failed_count"] == 1
        assert h.metric("outbox_terminal_failed_total", reason="es_4xx") == 1, "metrics tell the truth either way"
    finally:
        h.close()


# ---- a collector that is not one --------------------------------------------------------------------


@pytest.fixture
def grpc_like_port() -> Iterator[int]:
    """A port that accepts connections and answers an HTTP/1.1 request with HTTP/2 bytes, as an
    OTLP gRPC receiver does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(4096)
                    # An empty SETTINGS frame, then GOAWAY with PROTOCOL_ERROR.
                    conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(7) + b"\x01")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield server.getsockname()[1]
    done.set()
    t.join(2)
    server.close()


def test_collector_reachable_means_an_otlp_http_receiver_answers(trace_store: Any, grpc_like_port: int) -> None:
    base = trace_store.url.rstrip("/")
    assert collector_reachable(base)
    assert not collector_reachable(base + "/v1/traces"), "the path twice: 404"
    assert not collector_reachable(f"http://127.0.0.1:{grpc_like_port}"), "an open port that speaks HTTP/2"
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    assert not collector_reachable(f"http://127.0.0.1:{port}")


def test_export_failures_become_json_lines_once_per_summary_interval(trace_store: Any) -> None:
    out = io.StringIO()
    log = JsonLogger(service="test", worker_id="w1", env="test", stream=out)
    handler = log_export_failures(log)
    tracing = setup_tracing(enabled=True, endpoint=trace_store.url.rstrip("/") + "/v1/traces", service_name="test", worker_id="w1")
    try:
        assert tracing.collector_reachable is False
        for _ in range(3):
            with tracing.tracer.start_as_current_span("outbox.claim_batch"):
                pass
            assert tracing.provider is not None
            tracing.provider.force_flush(3000)
    finally:
        tracing.shutdown()
        logging.getLogger("opentelemetry").removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [line for line in lines if line["event"] == "tracing.export_failed"]
    assert len(failed) == 1, "later failures within the summary interval are counted, not written"
    assert "404" in failed[0]["error"] and failed[0]["level"] == "error" and "trace_id" not in failed[0]
    # The next line after the interval says how many were held back.
    handler2 = ExportFailureLog(log, summary_seconds=0.0)
    for _ in range(2):
        handler2.handle(logging.LogRecord("opentelemetry.x", logging.WARNING, __file__, 1, "boom %s", ("x",), None))
    last = json.loads(out.getvalue().splitlines()[-1])
    assert last["msg"] == "span export failed: boom x" and last["failures"] == 1


def test_a_worker_stops_promptly_when_its_collector_speaks_grpc(grpc_like_port: int) -> None:
    """The exporter retries a gRPC port until its own timeout; stopping must not wait for that."""
    tracing = setup_tracing(enabled=True, endpoint=f"http://127.0.0.1:{grpc_like_port}", service_name="test", worker_id="w1")
    assert tracing.collector_reachable is False
    for _ in range(3):
        with tracing.tracer.start_as_current_span("outbox.claim_batch"):
            pass
    time.sleep(0.5)  # the first export is under way, retrying
    began = time.monotonic()
    flushed = tracing.shutdown(flush_seconds=1.0)
    assert not flushed and time.monotonic() - began < 4.0


# ---- as a process: the startup lines say what is on -------------------------------------------------


def test_the_knobs_and_an_unreachable_collector_are_said_at_start(db_url: str, trace_store: Any, tmp_path: Path) -> None:
    bad = trace_store.url.rstrip("/") + "/v1/traces"
    log = tmp_path / "worker.log"
    env = {**os.environ, "DATABASE_URL": db_url, "OUTBOX_METRICS_PORT": "0", "OUTBOX_POLL_INTERVAL": "0.1",
           "WORDLOOM_TRACING_ENABLED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": bad,
           "OUTBOX_EXPERIMENT_OBS_SCHEMA": PREVIOUS_OBS_SCHEMA, "OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text()
            if '"tracing.export_failed"' in text:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["msg"].startswith(f"Observability schema: {PREVIOUS_OBS_SCHEMA}") and lines[0]["obs_schema"] == PREVIOUS_OBS_SCHEMA
    [startup] = [r for r in lines if r["event"] == "tracing.startup"]
    assert startup["collector_reachable"] is False and startup["otlp_target"] == bad + "/v1/traces"
    knobs = {r["knob"]: r["value"] for r in lines if r["event"] == "faults.knob"}
    assert knobs == {"OUTBOX_EXPERIMENT_OBS_SCHEMA": PREVIOUS_OBS_SCHEMA, "OUTBOX_EXPERIMENT_BATCH_RESULT_EARLY": True}
    assert any(r["event"] == "tracing.export_failed" and "404" in r["error"] for r in lines)
    assert all(r.get("obs_schema") == PREVIOUS_OBS_SCHEMA for r in lines)
