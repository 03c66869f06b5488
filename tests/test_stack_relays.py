"""What later drills need from the stack, on the real servers: Postgres behind a relay the stack
can close ("Postgres stops accepting connections") while drillui's own direct address keeps
working, and an engine the stack can slow down past a client's timeout."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from drillui.errors import StackError
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.stack import (
    DATABASE_URL,
    ES_URL,
    INFO_NAME,
    JAEGER_URL,
    OTLP_ENDPOINT,
    SECRETS_NAME,
    ControlClient,
    RemoteEngineSwitch,
    RemotePostgresSwitch,
    Stack,
)
from tests.stack_fixtures import pg_tmp, private_tmp_folder  # noqa: F401 - pg_tmp is a fixture

ROOT = Path(__file__).resolve().parents[1]
TRACES = {JAEGER_URL: "http://127.0.0.1:16699", OTLP_ENDPOINT: "http://127.0.0.1:4399"}
ONLY_POSTGRES = {ES_URL: "http://127.0.0.1:9999", **TRACES}
ONLY_ENGINE = {DATABASE_URL: "postgresql://postgres@127.0.0.1:5999/postgres", **TRACES}


def _refused(exc: BaseException) -> bool:
    return "refused" in str(exc).lower()


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Stack]:
    with private_tmp_folder() as folder, Stack.start(folder / "state", env=ONLY_POSTGRES) as stack:
        yield stack


@pytest.fixture
def pg_switch(pg_stack: Stack) -> Iterator[Stack]:
    assert pg_stack.postgres_switch is not None and pg_stack.postgres_switch.reachable()
    yield pg_stack
    if not pg_stack.postgres_switch.reachable():
        pg_stack.postgres_switch.set_reachable(True)


def test_workers_get_the_relay_and_drillui_the_direct_address(pg_stack: Stack) -> None:
    endpoints = pg_stack.endpoints
    assert pg_stack.postgres is not None
    assert endpoints.database_direct_url == pg_stack.postgres.url
    assert endpoints.database_url != endpoints.database_direct_url
    for url in (endpoints.database_url, endpoints.database_direct_url):
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    published = json.loads((pg_stack.state_dir / SECRETS_NAME).read_text())["endpoints"]
    assert published["database_direct_url"] == endpoints.database_direct_url
    assert ":***@" in json.loads((pg_stack.state_dir / INFO_NAME).read_text())["endpoints"]["database_direct_url"]


def test_postgres_down_refuses_new_connections_cuts_open_ones_and_keeps_the_data(pg_switch: Stack) -> None:
    stack = pg_switch
    assert stack.postgres_switch is not None
    url, direct = stack.endpoints.database_url, stack.endpoints.database_direct_url
    table = f"kept_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (1)")
    open_conn = psycopg.connect(url, autocommit=True)
    try:
        assert open_conn.execute("SELECT 1").fetchone() == (1,)
        stack.postgres_switch.set_reachable(False)
        assert stack.postgres_switch.reachable() is False

        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(url, connect_timeout=5).close()
        assert _refused(refused.value)
        with pytest.raises(psycopg.OperationalError):
            open_conn.execute("SELECT 1")  # the open connection was cut, as by a dying server
        with psycopg.connect(direct, connect_timeout=5) as probe:  # drillui's own probes still work
            assert probe.execute(f"SELECT n FROM {table}").fetchone() == (1,)
        postgres = stack.health()["parts"]["postgres"]
        assert postgres["ok"] is True and "closed on purpose" in postgres["detail"]

        stack.postgres_switch.set_reachable(True)
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute(f"SELECT n FROM {table}").fetchone() == (1,)
    finally:
        open_conn.close()


def test_a_restarted_postgres_is_reached_through_the_same_relay(pg_switch: Stack) -> None:
    url = pg_switch.endpoints.database_url
    assert pg_switch.restart_postgres() == url
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_is_switched_through_the_control_server_of_another_process(pg_tmp: Path) -> None:  # noqa: F811
    tmp_path = pg_tmp
    code = "import sys; from pathlib import Path; from drillui.stack.cli import stack_up; sys.exit(stack_up(Path(sys.argv[1]), json_out=True))"
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL, ES_URL, JAEGER_URL, OTLP_ENDPOINT, "DRILLUI_STATE_DIR")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, **ONLY_POSTGRES},
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 30)[0], "stack up printed nothing within 30 s"
        line = json.loads(proc.stdout.readline())
        assert ":***@" in line["database_url"] and ":***@" in line["database_direct_url"]
        running = Stack.attach(tmp_path)
        assert running is not None
        switch = running.postgres_switch
        assert isinstance(switch, RemotePostgresSwitch) and switch.reachable()
        switch.set_reachable(False)
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(running.endpoints.database_url, connect_timeout=5).close()
        assert _refused(refused.value)
        with psycopg.connect(running.endpoints.database_direct_url, connect_timeout=5) as probe:
            assert probe.execute("SELECT 1").fetchone() == (1,)
        switch.set_reachable(True)
        with psycopg.connect(running.endpoints.database_url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert running.restart_postgres()["ok"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


# -- a slow engine ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.start(tmp_path_factory.mktemp("state"), env=ONLY_ENGINE) as stack:
        yield stack


def _timed_get(url: str, timeout: float = 10.0) -> float:
    began = time.monotonic()
    httpx.get(url, timeout=timeout, trust_env=False).raise_for_status()
    return time.monotonic() - began


def test_the_engine_can_be_slowed_past_a_clients_timeout_and_back(engine_stack: Stack) -> None:
    switch = RemoteEngineSwitch(engine_stack.control_url)
    es_url = engine_stack.endpoints.es_url
    assert switch.latency() == 0.0 and _timed_get(es_url) < 0.4
    switch.set_latency(0.5)
    try:
        assert switch.latency() == 0.5
        assert _timed_get(es_url) >= 0.5
        # What the es_slow_timeout drill is for: the worker's own timeout fires, for real.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(es_url, timeout=0.2, trust_env=False)
        assert switch.reachable() is True  # slow is not down
    finally:
        switch.set_latency(0)
    assert _timed_get(es_url) < 0.4


@pytest.mark.parametrize("body", [{"seconds": -1}, {"seconds": "fast"}, {"seconds": 1e9}, {"seconds": True}, {}, {"seconds": None}])
def test_a_bad_latency_is_a_400_and_changes_nothing(engine_stack: Stack, body: dict[str, object]) -> None:
    with httpx.Client(base_url=engine_stack.control_url, trust_env=False) as client:
        response = client.post("/engine/latency", json=body)
        assert response.status_code == 400, response.text
        assert client.get("/engine").json()["latency_s"] == 0.0


def test_latency_without_a_managed_engine_is_a_409(tmp_path: Path) -> None:
    env = {**ONLY_ENGINE, ES_URL: "http://127.0.0.1:9999"}
    with Stack.start(tmp_path, env=env) as stack:
        with pytest.raises(StackError, match="not managed"):
            ControlClient(stack.control_url).post("/engine/latency", {"seconds": 1})
        with pytest.raises(StackError, match="not managed"):
            ControlClient(stack.control_url).post("/postgres/down")


def test_a_delayed_relay_keeps_large_bodies_whole_and_in_order(engine: EmbeddedEngine, es_url: str, es_index: str) -> None:
    lines = []
    for i in range(2000):
        lines.append(json.dumps({"index": {"_index": es_index, "_id": str(i)}}))
        lines.append(json.dumps({"text": f"{i:05d}" * 40}))
    body = "\n".join(lines) + "\n"  # ~450 KB: more than the relay's buffer, sent in many chunks
    engine.set_latency(0.2)
    try:
        began = time.monotonic()
        with httpx.Client(base_url=es_url, trust_env=False, timeout=30.0) as client:
            response = client.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
            assert response.status_code == 200 and response.json()["errors"] is False
            assert [item["index"]["_id"] for item in response.json()["items"]] == [str(i) for i in range(2000)]
            assert client.get(f"/{es_index}/_doc/1999").json()["_source"]["text"] == "01999" * 40
        assert time.monotonic() - began >= 0.2
    finally:
        engine.set_latency(0)
    with pytest.raises(ValueError, match="between 0 and 3600"):
        engine.set_latency(-0.5)
    with pytest.raises(ValueError):
        engine.set_latency(float("nan"))
