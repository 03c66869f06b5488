"""`python -m worker` as a process: startup lines, /metrics, and a clean stop that loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from worker.db import connect, ensure_schema, insert_event


def _start(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "worker.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed by the test through the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env={**os.environ, "OUTBOX_METRICS_PORT": "0", "OUTBOX_POLL_INTERVAL": "0.1", **env},
        stdout=fh, stderr=subprocess.STDOUT,
    )
    fh.close()
    return proc, log


def _lines(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "raw", "msg": line})
    return out


def _wait(log: Path, event: str, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in _lines(log):
            if rec.get("event") == event:
                return rec
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {log.read_text()[-2000:]}")


def test_sigterm_releases_a_claimed_batch_so_nothing_is_lost(db_url: str, es_url: str, tmp_path: Path) -> None:
    with connect(db_url) as conn:
        ensure_schema(conn)
        eid = insert_event(conn, projection="search_index_to_elastic", op="upsert", entity_id=uuid.uuid4(), payload={"title": "x"})
    proc, log = _start(tmp_path, {"DATABASE_URL": db_url, "ES_URL": es_url, "OUTBOX_EXPERIMENT_PROCESS_SLEEP": "30", "OUTBOX_WORKER_ID": "w-term"})
    try:
        _wait(log, "outbox.claimed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [r.get("event") for r in _lines(log)]
    assert "outbox.released" in events and events[-1] == "worker.stopped"
    with connect(db_url) as conn:
        row = conn.execute("SELECT status, attempts, lease_until FROM outbox WHERE id = %s", (eid,)).fetchone()
    assert row is not None and (row["status"], row["attempts"], row["lease_until"]) == ("pending", 0, None)


def test_startup_lines_metrics_endpoint_and_trace_ids_in_logs(db_url: str, es_url: str, trace_store: object, tmp_path: Path) -> None:
    otlp = trace_store.url.rstrip("/")  # type: ignore[attr-defined]
    with connect(db_url) as conn:
        ensure_schema(conn)
        insert_event(conn, projection="search_index_to_elastic", op="delete", entity_id=uuid.uuid4())
    proc, log = _start(
        tmp_path,
        {"DATABASE_URL": db_url, "ES_URL": es_url, "WORDLOOM_TRACING_ENABLED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "ENV": "ci"},
    )
    try:
        port = _wait(log, "metrics.listening")["metrics_port"]
        noop = _wait(log, "outbox.idempotent_noop")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    lines = _lines(log)
    events = [r.get("event") for r in lines]
    assert events[:3] == ["obs.schema", "tracing.config", "tracing.startup"]
    assert lines[0]["msg"].startswith("Observability schema: labs-009-v2")  # type: ignore[union-attr]
    assert lines[2]["collector_reachable"] is True and lines[2]["otlp_target"] == otlp + "/v1/traces"
    assert len(str(noop["trace_id"])) == 32 and noop["reason"] == "es_404" and noop["obs_schema"] == "labs-009-v2"
    assert all(None not in r.values() for r in lines), "absent values must be omitted, not null"
    assert 'outbox_retry_scheduled_total{component="worker",env="ci",op="delete",projection="search_index_to_elastic",reason="es_connect"} 0.0' in text
    assert 'outbox_idempotent_noop_total{component="worker",env="ci",op="delete",projection="search_index_to_elastic",reason="es_404"} 1.0' in text


def test_tracing_disabled_is_said_at_start(db_url: str, tmp_path: Path) -> None:
    proc, log = _start(tmp_path, {"DATABASE_URL": db_url, "OTEL_SDK_DISABLED": "true", "WORDLOOM_TRACING_ENABLED": "1"})
    try:
        rec = _wait(log, "tracing.disabled")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert "OTEL_SDK_DISABLED" in str(rec["msg"])
    assert all("trace_id" not in r for r in _lines(log))


def test_sigterm_with_a_black_holed_engine_stops_after_the_request_in_flight(db_url: str, tmp_path: Path) -> None:
    """Single-request mode used to send (and wait for) every row of the batch after SIGTERM."""
    import socket

    with connect(db_url) as conn:
        ensure_schema(conn)
        ids = [insert_event(conn, projection="search_index_to_elastic", op="delete", entity_id=uuid.uuid4()) for _ in range(8)]
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # accepts (in the kernel), never answers
    env = {"DATABASE_URL": db_url, "ES_URL": f"http://127.0.0.1:{hole.getsockname()[1]}", "ES_TIMEOUT": "1", "OUTBOX_BATCH_SIZE": "8"}
    proc, log = _start(tmp_path, env)
    try:
        _wait(log, "outbox.claimed")
        time.sleep(0.2)  # the first request is in flight
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        hole.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with connect(db_url) as conn:
        rows = conn.execute("SELECT status, attempts, last_reason FROM outbox WHERE id = ANY(%s)", (ids,)).fetchall()
    assert sorted((r["status"], r["attempts"], r["last_reason"]) for r in rows) == [("pending", 0, None)] * 7 + [("pending", 1, "es_timeout")]
    [released] = [r for r in _lines(log) if r.get("event") == "outbox.released"]
    assert released["released_count"] == 7 and released["why"] == "stopping"
    assert _lines(log)[-1]["event"] == "worker.stopped"
