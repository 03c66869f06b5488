"""The embedded stack against the real servers: loopback only, gone with its owner, a real refusal
when the engine is switched off, one stack per folder, and `drillui stack up` as a subprocess."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from drillui.errors import StackAlreadyRunning, StackError, UsageError
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.postgres import EmbeddedPostgres
from drillui.stack.stack import (
    DATABASE_URL,
    DEFAULT_OTLP_ENDPOINT,
    ES_URL,
    INFO_NAME,
    JAEGER_URL,
    LOCK_NAME,
    OTLP_ENDPOINT,
    PROMETHEUS_URL,
    Endpoints,
    Stack,
    default_state_dir,
)
from tests.stack_fixtures import pg_tmp  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE_VARS = (DATABASE_URL, ES_URL, JAEGER_URL, OTLP_ENDPOINT, PROMETHEUS_URL, "DRILLUI_STATE_DIR")
# Overrides that point nowhere in particular: a stack started with them starts no server at all.
ALL_OVERRIDES: Mapping[str, str] = {
    DATABASE_URL: "postgresql://postgres@127.0.0.1:5999/postgres",
    ES_URL: "http://127.0.0.1:9999",
    JAEGER_URL: "http://127.0.0.1:16699",
    OTLP_ENDPOINT: "http://127.0.0.1:4399",
    PROMETHEUS_URL: "http://127.0.0.1:9399",
}
STACK_UP = (
    "import sys; from pathlib import Path; from drillui.stack.cli import stack_up; "
    "sys.exit(stack_up(Path(sys.argv[1]), json_out=True))"
)


StartStackUp = Callable[[Mapping[str, str]], tuple["subprocess.Popen[str]", dict[str, str]]]


def _alive(pid: int) -> bool:
    # Orphans are not always reaped here (pid 1 is no init), so a zombie counts as gone.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _still_alive(pids: list[int], within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def _refused(exc: BaseException) -> bool:
    """Whether a ConnectionRefusedError is somewhere in the exception's chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDE_VARS}
    env.update(extra)
    return env


@pytest.fixture
def stack_up_process(pg_tmp: Path) -> Iterator[StartStackUp]:  # noqa: F811
    """Start `stack_up(json_out=True)` in a subprocess; always reaped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(env: Mapping[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
        proc = subprocess.Popen(
            [sys.executable, "-c", STACK_UP, str(pg_tmp)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=ROOT,
        )
        started.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        assert ready, "stack up printed nothing within 30 s"
        line = proc.stdout.readline()
        assert line.endswith("\n"), f"no JSON line; stderr: {proc.stderr.read() if proc.stderr else ''}"
        return proc, json.loads(line)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# -- Postgres ------------------------------------------------------------------------------------


def test_postgres_answers_on_loopback_and_nowhere_else(pg: EmbeddedPostgres) -> None:
    listening = [
        conn.laddr
        for conn in psutil.Process(pg.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert [(addr.ip, addr.port) for addr in listening] == [("127.0.0.1", pg.port)]
    password = pg.password_file.read_text().strip()
    assert pg.url == f"postgresql://postgres:{password}@127.0.0.1:{pg.port}/postgres"
    # Loopback is shared by every user of the machine: without the password there is no way in.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/postgres", connect_timeout=5).close()
    with psycopg.connect(pg.url) as conn:
        row = conn.execute("SELECT host(inet_server_addr()), current_setting('listen_addresses')").fetchone()
    assert row == ("127.0.0.1", "127.0.0.1")
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection((address.address, pg.port), timeout=2).close()


def test_postgres_stops_when_its_owner_is_killed(pg_tmp: Path) -> None:  # noqa: F811
    tmp_path = pg_tmp
    owner_code = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from drillui.stack.postgres import EmbeddedPostgres
        pg = EmbeddedPostgres(Path(sys.argv[1]))
        pg.start()
        print(pg.pid, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code, str(tmp_path / "pg")], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    server_pids: list[int] = []
    try:
        assert owner.stdout is not None
        postmaster = int(owner.stdout.readline())
        server_pids = [postmaster, *(child.pid for child in psutil.Process(postmaster).children())]
        assert _alive(postmaster)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _still_alive(server_pids) == []
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.communicate()
        for pid in server_pids:  # only reached with a failed assertion: do not leak a server
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_postgres_initdb_failure_is_one_line_stack_error(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    data.mkdir()
    (data / "unrelated.txt").write_text("not a database folder")
    with pytest.raises(StackError) as info:
        EmbeddedPostgres(data).start()
    message = str(info.value)
    assert "initdb failed" in message
    assert "not empty" in message
    assert "\n" not in message


# -- engine --------------------------------------------------------------------------------------


def test_engine_down_refuses_even_a_kept_alive_connection_and_keeps_data(
    engine: EmbeddedEngine, es_url: str, es_index: str
) -> None:
    port = int(es_url.rsplit(":", 1)[1])
    with httpx.Client(base_url=es_url, trust_env=False, timeout=5.0) as client:
        created = client.put(f"/{es_index}/_doc/1", params={"refresh": "true"}, json={"title": "kept"})
        assert created.status_code == 201, created.text
        # This leaves an idle keep-alive connection to the relay in the client's pool.
        assert client.get(f"/{es_index}/_doc/1").json()["found"] is True

        engine.set_reachable(False)
        assert engine.reachable is False
        with pytest.raises(httpx.ConnectError) as info:
            client.get(f"/{es_index}/_doc/1")
        assert _refused(info.value)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

        engine.set_reachable(True)
        assert engine.reachable is True
        assert engine.url == es_url
        again = client.get(f"/{es_index}/_doc/1")
    assert again.json()["_source"] == {"title": "kept"}


def test_engine_relays_large_bodies_both_ways(engine: EmbeddedEngine, es_url: str, es_index: str) -> None:
    lines = []
    for i in range(2000):
        lines.append(json.dumps({"index": {"_index": es_index, "_id": str(i)}}))
        lines.append(json.dumps({"text": "x" * 200}))
    body = "\n".join(lines) + "\n"
    with httpx.Client(base_url=es_url, trust_env=False, timeout=30.0) as client:
        response = client.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert response.status_code == 200
        assert response.json()["errors"] is False
        assert len(response.json()["items"]) == 2000


# -- stack ---------------------------------------------------------------------------------------


def test_env_overrides_start_nothing(tmp_path: Path) -> None:
    before = {child.pid for child in psutil.Process().children()}
    stack = Stack.start(tmp_path, env=ALL_OVERRIDES)
    try:
        assert stack.endpoints == Endpoints(
            database_url=ALL_OVERRIDES[DATABASE_URL],
            es_url=ALL_OVERRIDES[ES_URL],
            otlp_endpoint=ALL_OVERRIDES[OTLP_ENDPOINT],
            jaeger_url=ALL_OVERRIDES[JAEGER_URL],
            prometheus_url=ALL_OVERRIDES[PROMETHEUS_URL],
        )
        assert (stack.postgres, stack.engine, stack.trace_store, stack.engine_switch, stack.prometheus) == (None,) * 5
        assert [part.started for part in stack.parts] == [False, False, False, False]
        assert {child.pid for child in psutil.Process().children()} == before
        assert not (tmp_path / "pg").exists()

        info = json.loads((tmp_path / INFO_NAME).read_text())
        assert info["pid"] == os.getpid()
        assert info["endpoints"] == stack.endpoints.to_json()
        assert info["control_url"] == stack.control_url
        with httpx.Client(base_url=stack.control_url, trust_env=False) as control:
            assert control.get("/health").json()["ok"] is True
            assert control.get("/engine").json() == {"reachable": True, "managed": False}
            assert control.post("/engine/down", json={}).status_code == 409
    finally:
        stack.stop()
    assert not (tmp_path / INFO_NAME).exists()
    stack.stop()  # idempotent


def test_one_trace_variable_starts_no_store_and_is_not_reused_for_the_other(tmp_path: Path) -> None:
    env = {DATABASE_URL: ALL_OVERRIDES[DATABASE_URL], ES_URL: ALL_OVERRIDES[ES_URL], JAEGER_URL: "http://127.0.0.1:16686/"}
    with Stack.start(tmp_path, env=env) as stack:
        assert stack.trace_store is None
        assert stack.endpoints.jaeger_url == "http://127.0.0.1:16686"
        assert stack.endpoints.otlp_endpoint == DEFAULT_OTLP_ENDPOINT


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (DATABASE_URL, "mysql://root:hunter2@127.0.0.1:3306/app"),
        (DATABASE_URL, "postgresql://postgres@127.0.0.1:0/postgres"),
        (ES_URL, "127.0.0.1:9200"),
        (ES_URL, "http://127.0.0.1:99999"),
        (ES_URL, "http://:9200"),
        (JAEGER_URL, "ftp://127.0.0.1:16686"),
        (OTLP_ENDPOINT, "http://127.0.0.1:port"),
    ],
)
def test_bad_override_url_is_a_usage_error(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(UsageError) as info:
        Stack.start(tmp_path, env={name: value})
    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert f"e.g. {name}=" in message
    assert "hunter2" not in message
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_start_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first = Stack.start(tmp_path, env=ALL_OVERRIDES)
    try:
        with pytest.raises(StackAlreadyRunning) as info:
            Stack.start(tmp_path, env=ALL_OVERRIDES)
        message = str(info.value)
        assert message.startswith(f"a stack is already running on {tmp_path} (pid {os.getpid()}, started at ")
        assert f"kill {os.getpid()}" in message
        assert (tmp_path / INFO_NAME).exists()  # the refused start must not touch the first's file
    finally:
        first.stop()
    Stack.start(tmp_path, env=ALL_OVERRIDES).stop()


def test_a_failed_start_releases_the_folder(tmp_path: Path) -> None:
    broken = tmp_path / "pg"
    broken.mkdir()
    (broken / "junk").write_text("x")
    env = {k: v for k, v in ALL_OVERRIDES.items() if k != DATABASE_URL}
    with pytest.raises(StackError, match="initdb failed"):
        Stack.start(tmp_path, env=env)
    assert not (tmp_path / INFO_NAME).exists()
    Stack.start(tmp_path, env=ALL_OVERRIDES).stop()


def test_attach_ignores_and_removes_a_stale_stack_file(tmp_path: Path) -> None:
    assert Stack.attach(tmp_path) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}\n")
    stale = {
        "pid": dead.pid,
        "started_at": "2026-01-01T00:00:00+00:00",
        "control_url": "http://127.0.0.1:9",
        "endpoints": Endpoints("postgresql://postgres@127.0.0.1:1/postgres", "http://127.0.0.1:2", "http://127.0.0.1:3", "http://127.0.0.1:3").to_json(),
        "engine_managed": True,
    }
    (tmp_path / INFO_NAME).write_text(json.dumps(stale))
    assert Stack.attach(tmp_path) is None
    assert not (tmp_path / INFO_NAME).exists()


def test_default_state_dir() -> None:
    assert default_state_dir({"DRILLUI_STATE_DIR": "/srv/drills"}) == Path("/srv/drills")
    assert default_state_dir({}).name == "drillui"


def test_attach_and_remote_switch_work_across_processes(pg_tmp: Path, stack_up_process: StartStackUp) -> None:  # noqa: F811
    tmp_path = pg_tmp
    env = _clean_env(**{k: v for k, v in ALL_OVERRIDES.items() if k != ES_URL})  # only the engine
    proc, endpoints = stack_up_process(env)

    running = Stack.attach(tmp_path)
    assert running is not None
    assert running.pid == proc.pid
    assert running.endpoints.redacted().to_json() == {k: endpoints[k] for k in Endpoints.__dataclass_fields__}
    switch = running.engine_switch
    assert switch is not None and switch.managed and switch.reachable()
    with pytest.raises(StackAlreadyRunning, match=f"pid {proc.pid}"):
        Stack.start(tmp_path, env=ALL_OVERRIDES)

    index = f"test-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=endpoints["es_url"], trust_env=False, timeout=5.0) as client:
        assert client.put(f"/{index}/_doc/a", params={"refresh": "true"}, json={"n": 1}).status_code == 201
        switch.set_reachable(False)
        assert switch.reachable() is False
        with pytest.raises(httpx.ConnectError) as info:
            client.get(f"/{index}/_doc/a")
        assert _refused(info.value)
        switch.set_reachable(True)
        assert switch.reachable() is True
        assert client.get(f"/{index}/_doc/a").json()["_source"] == {"n": 1}

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert Stack.attach(tmp_path) is None
    with pytest.raises(StackError, match="did not answer"):
        switch.reachable()


def test_stack_up_prints_one_json_line_and_stops_every_server_on_sigterm(
    pg_tmp: Path, stack_up_process: StartStackUp  # noqa: F811
) -> None:
    tmp_path = pg_tmp
    proc, endpoints = stack_up_process(_clean_env())
    assert set(endpoints) == {"database_url", "database_direct_url", "es_url", "otlp_endpoint", "jaeger_url", "prometheus_url",
                              "secrets_file", "env_file"}
    assert ":***@" in endpoints["database_url"]
    real = json.loads(Path(endpoints["secrets_file"]).read_text())["endpoints"]
    with psycopg.connect(real["database_url"], connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert httpx.get(endpoints["es_url"], trust_env=False).status_code == 200
    assert httpx.get(f"{endpoints['jaeger_url']}/api/services", trust_env=False).status_code == 200

    names = {"postgres", "osmem-server", "prometheus"}
    servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() in names]
    # Prometheus is part of the stack only where its binary is installed.
    with_prometheus = shutil.which("prometheus") is not None
    assert {p.name() for p in servers} == (names if with_prometheus else names - {"prometheus"})
    assert bool(endpoints["prometheus_url"]) is with_prometheus

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == ""  # the JSON line was the only stdout output
    assert _still_alive([p.pid for p in servers]) == []
    assert not (tmp_path / INFO_NAME).exists()


def test_trace_store_limit_is_a_setting(tmp_path: Path) -> None:
    from drillui.errors import UsageError
    from drillui.stack.stack import max_spans_setting

    assert max_spans_setting({}) == 50_000
    assert max_spans_setting({"DRILLUI_TRACE_MAX_SPANS": "1000"}) == 1000
    with pytest.raises(UsageError, match="DRILLUI_TRACE_MAX_SPANS='lots'"):
        max_spans_setting({"DRILLUI_TRACE_MAX_SPANS": "lots"})
    env = {"DRILLUI_TRACE_MAX_SPANS": "1000", "DATABASE_URL": "postgresql://u@127.0.0.1:5/db", "ES_URL": "http://127.0.0.1:9"}
    with Stack.start(tmp_path / "state", env=env) as stack:
        assert stack.trace_store is not None and stack.trace_store.store.max_spans == 1000


# -- a dead server is reaped, restarts, and health says so ------------------------------------

ONLY_POSTGRES: Mapping[str, str] = {k: v for k, v in ALL_OVERRIDES.items() if k != DATABASE_URL}
ONLY_ENGINE: Mapping[str, str] = {k: v for k, v in ALL_OVERRIDES.items() if k != ES_URL}


def _gone_or_reaped(pid: int, within: float = 3.0) -> bool:
    """True once `pid` is no process at all: not even a zombie waiting for its parent."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            return True
        time.sleep(0.02)
    return False


def test_a_killed_postmaster_restarts_on_the_same_address_with_its_data(pg_tmp: Path) -> None:  # noqa: F811
    tmp_path = pg_tmp
    # Default durability settings: a committed row must survive the crash.
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    idle = psycopg.connect(url, autocommit=True)  # its backend outlives the postmaster for a moment
    try:
        idle.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        pid = pg.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pg.running:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ok, detail = pg.health()
        assert not ok and detail == f"the postmaster (pid {pid}) exited: killed by SIGKILL"
        assert pg.start() == url  # same port, same password: clients keep their DSN
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (7,)
        assert pg.health()[0] is True
        assert pg.restart() == url
        assert pg.health()[0] is True
    finally:
        idle.close()
        pg.stop()


def test_the_stack_reaps_a_dead_postmaster_tells_in_health_and_restarts_it(pg_tmp: Path) -> None:  # noqa: F811
    tmp_path = pg_tmp
    events: list[str] = []
    with Stack.start(tmp_path / "state", env=ONLY_POSTGRES, on_event=events.append) as stack:
        running = Stack.attach(tmp_path / "state")
        assert running is not None
        report = running.health()
        assert report["ok"] is True
        assert report["parts"]["postgres"]["ok"] is True and report["parts"]["postgres"]["managed"] is True
        assert report["parts"]["engine"] == {"managed": False, "ok": None, "detail": "from ES_URL, not checked by the stack"}

        assert stack.postgres is not None
        pid = stack.postgres.pid
        os.kill(pid, signal.SIGKILL)
        assert _gone_or_reaped(pid), "the stack left the dead postmaster a zombie"
        with httpx.Client(base_url=stack.control_url, trust_env=False) as control:
            health = control.get("/health")
        assert health.status_code == 503
        assert health.json()["ok"] is False
        postgres = health.json()["parts"]["postgres"]
        assert (postgres["managed"], postgres["ok"]) == (True, False)
        assert postgres["detail"].startswith(f"the postmaster (pid {pid}) exited: killed by SIGKILL; the relay at 127.0.0.1:")
        assert any(event.startswith(f"postgres (pid {pid}) exited: killed by SIGKILL") for event in events)

        assert running.restart_postgres()["ok"] is True
        with psycopg.connect(stack.endpoints.database_url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert running.health()["ok"] is True


def test_health_tells_when_the_engine_died(tmp_path: Path) -> None:
    with Stack.start(tmp_path / "state", env=ONLY_ENGINE) as stack:
        assert stack.engine is not None
        assert stack.health()["parts"]["engine"]["ok"] is True
        stack.engine.set_reachable(False)  # switched off by a drill: still a healthy part
        engine = stack.health()["parts"]["engine"]
        assert engine["ok"] is True and "switched off" in engine["detail"]
        stack.engine.set_reachable(True)
        os.kill(stack.engine.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while stack.health()["ok"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "killed by SIGKILL" in stack.health()["parts"]["engine"]["detail"]
