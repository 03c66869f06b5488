"""Hostile and unlucky input to `python -m worker`: one line naming what is wrong, exit 2, no
traceback, and never a password in anything the worker prints or logs."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.worker_harness import make_relay
from worker.__main__ import main
from worker.db import connect, ensure_schema, insert_event
from worker.redact import redact
from worker.settings import WorkerSettings
from worker.telemetry.logs import JsonLogger

BASE = {"DATABASE_URL": "postgresql://h/db", "OUTBOX_METRICS_PORT": "0"}

BAD = [
    # ES_INDEX: the engines refuse these names, or (../x) resolve them to another index
    ({"ES_INDEX": "Bad Index"}, "ES_INDEX", "cannot contain ' '"),
    ({"ES_INDEX": "../x"}, "ES_INDEX", "cannot contain '/'"),
    ({"ES_INDEX": ".."}, "ES_INDEX", "index name"),
    ({"ES_INDEX": "Wordloom"}, "ES_INDEX", "lowercase"),
    ({"ES_INDEX": "_all"}, "ES_INDEX", "cannot start with '_'"),
    ({"ES_INDEX": "a" * 256}, "ES_INDEX", "255 bytes"),
    ({"ES_INDEX": "a,b"}, "ES_INDEX", "cannot contain ','"),
    # DATABASE_URL: libpq would only refuse these when connecting ("cannot connect", exit 1)
    ({"DATABASE_URL": "postgresql://u@h:99999/db"}, "DATABASE_URL", "port '99999'"),
    ({"DATABASE_URL": "postgresql://u@h:abc/db"}, "DATABASE_URL", "port 'abc'"),
    ({"DATABASE_URL": "postgresql://h/db?sslmode=bogus"}, "DATABASE_URL", "sslmode='bogus'"),
    ({"DATABASE_URL": "postgresql://h/db?target_session_attrs=rw"}, "DATABASE_URL", "target_session_attrs"),
    ({"DATABASE_URL": "postgresql://h/db?connect_timeout=soon"}, "DATABASE_URL", "connect_timeout"),
    ({"DATABASE_URL": "postgresql://h/db?colour=blue"}, "DATABASE_URL", "colour"),
    ({"DATABASE_URL": "mysql://h/db"}, "DATABASE_URL", "postgresql://"),
    # sizes and durations
    ({"OUTBOX_BULK_MAX_BYTES": "0"}, "OUTBOX_BULK_MAX_BYTES", "greater than or equal"),
    ({"OUTBOX_BULK_MAX_BYTES": "10MB"}, "OUTBOX_BULK_MAX_BYTES", "integer"),
    ({"OUTBOX_ES_TOMBSTONE_SECONDS": "-1"}, "OUTBOX_ES_TOMBSTONE_SECONDS", "greater than 0"),
    ({"OUTBOX_LEASE_SECONDS": "90"}, "OUTBOX_ES_TOMBSTONE_SECONDS", "shorten the lease"),
    ({"OUTBOX_LEASE_SECONDS": "nan"}, "OUTBOX_LEASE_SECONDS", ""),
    ({"OUTBOX_BATCH_SIZE": "1e9"}, "OUTBOX_BATCH_SIZE", ""),
]


@pytest.mark.parametrize(("env", "variable", "fragment"), BAD, ids=[f"{next(iter(e))}={next(iter(e.values()))[:20]}" for e, _, _ in BAD])
def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2(
    env: dict[str, str], variable: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    assert main() == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and fragment in lines[0], out.err
    assert "Traceback" not in out.err and out.out == ""


def test_a_bad_setting_as_a_process_exits_2_without_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://h:99999/db", "ES_INDEX": "ok"}
    proc = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "DATABASE_URL" in proc.stderr


# ---- passwords ------------------------------------------------------------------------------

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "text",
    [
        f"https://elastic:{SECRET}@es.example:9200/_bulk",
        f"postgresql://app:{SECRET}@db:5432/x?sslmode=require",
        f"host=db password={SECRET} dbname=x",
        f"http://h/x?user=a&password={SECRET}",
        f"ES_URL: bad port (got 'http://e:{SECRET}@h:99999')",
    ],
)
def test_redact_masks_every_url_password(text: str) -> None:
    assert SECRET not in redact(text) and "***" in redact(text)


def test_the_settings_error_does_not_echo_an_es_url_password(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@h/db")
    monkeypatch.setenv("ES_URL", f"http://elastic:{SECRET}@127.0.0.1:99999")
    assert main() == 2
    err = capsys.readouterr().err
    assert "ES_URL" in err and SECRET not in err and "elastic:***@" in err


def test_cannot_connect_names_the_variable_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:{port}/x", "OUTBOX_METRICS_PORT": "0"}
    proc = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "DATABASE_URL" in proc.stderr.splitlines()[-1]
    assert SECRET not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_logged_errors_never_carry_an_engine_password(db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with connect(db_url) as conn:
        ensure_schema(conn)
        insert_event(conn, projection="search_index_to_elastic", op="delete", entity_id=uuid.uuid4())
    h = make_relay(db_url, es_url=f"http://elastic:{SECRET}@127.0.0.1:{port}")
    try:
        [settled] = h.relay.process(h.relay.claim())
        assert settled.final == "retry"
        h.relay.log.error("test.echo", f"engine at http://elastic:{SECRET}@127.0.0.1:{port} said no", url=f"http://elastic:{SECRET}@x", nested={"dsn": f"password={SECRET}"})
        text = h.out.getvalue()
        spans = json.dumps([dict(sp.attributes or {}) | {"events": [dict(e.attributes or {}) for e in sp.events]} for sp in h.finished_spans()])
    finally:
        h.close()
    assert SECRET not in text and SECRET not in spans
    assert "elastic:***@" in text


def test_buffered_lines_are_written_in_order_once() -> None:
    stream = io.StringIO()
    log = JsonLogger(service="s", worker_id="w", env="e", stream=stream)
    with log.buffered():
        log.info("a", "one")
        with log.buffered():
            log.info("b", "two")
        assert stream.getvalue() == ""
    log.info("c", "three")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["a", "b", "c"]
