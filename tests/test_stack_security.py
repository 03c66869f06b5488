"""The stack's servers against hostile requests: what a web page, a rebinding name or a broken
client can send to a loopback port, tried on the real control server and the real trace store."""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drillui.errors import UsageError
from drillui.stack.postgres import SYSTEM_USER
from drillui.stack.private import redact_url
from drillui.stack.stack import (
    DATABASE_URL,
    ENV_NAME,
    ES_URL,
    INFO_NAME,
    JAEGER_URL,
    LOCK_NAME,
    OTLP_ENDPOINT,
    PG_DIR_NAME,
    SECRETS_NAME,
    Endpoints,
    Stack,
)
from drillui.stack.tracestore import TraceStoreServer
from tests.stack_fixtures import pg_tmp  # noqa: F401 - a fixture

# Everything but the engine comes from the environment: the control server then really switches it.
ENGINE_ONLY = {
    DATABASE_URL: "postgresql://postgres@127.0.0.1:5999/postgres",
    JAEGER_URL: "http://127.0.0.1:16699",
    OTLP_ENDPOINT: "http://127.0.0.1:4399",
}
ALL_OVERRIDES = {**ENGINE_ONLY, ES_URL: "http://127.0.0.1:9999"}


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send bytes as they are and read the answer: (status, body). A hang fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no complete answer within {timeout} s; got {data[:200]!r}")
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    assert data, "the server closed the connection without an answer"
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def request(method: str, path: str, port: int, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *headers]
    if body and not any(h.lower().startswith("content-length") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.start(tmp_path_factory.mktemp("state"), env=ENGINE_ONLY) as running:
        yield running


@pytest.fixture
def control_port(stack: Stack) -> Iterator[int]:
    assert stack.engine is not None and stack.engine.reachable
    yield int(stack.control_url.rsplit(":", 1)[1])
    if not stack.engine.reachable:
        stack.engine.set_reachable(True)


@pytest.fixture(scope="module")
def traces() -> Iterator[TraceStoreServer]:
    with TraceStoreServer() as server:
        yield server


# -- control server --------------------------------------------------------------------------


def test_a_cross_site_form_post_cannot_take_the_engine_down(stack: Stack, control_port: int) -> None:
    host = f"Host: 127.0.0.1:{control_port}"
    form = ("Content-Type: application/x-www-form-urlencoded",)
    status, body = raw_http(
        control_port, request("POST", "/engine/down", control_port, host, "Origin: http://evil.example", *form, body=b"a=b")
    )
    assert status == 403, body
    assert stack.engine is not None and stack.engine.reachable
    # Without an Origin (curl, a script) a form body is still not deliberate enough.
    status, body = raw_http(control_port, request("POST", "/engine/down", control_port, host, *form, body=b"a=b"))
    assert (status, stack.engine.reachable) == (403, True)
    assert b"application/json" in body and b"X-Drillui-Control" in body


@pytest.mark.parametrize(
    "headers",
    [
        ("Content-Type: application/json",),
        ("Content-Type: application/json; charset=utf-8",),
        ("X-Drillui-Control: 1",),
    ],
)
def test_a_deliberate_request_switches_the_engine(stack: Stack, control_port: int, headers: tuple[str, ...]) -> None:
    host = f"Host: 127.0.0.1:{control_port}"
    status, body = raw_http(control_port, request("POST", "/engine/down", control_port, host, *headers, body=b"{}"))
    assert (status, stack.engine is not None and stack.engine.reachable) == (200, False), body
    status, _ = raw_http(control_port, request("POST", "/engine/up", control_port, host, *headers))
    assert (status, stack.engine is not None and stack.engine.reachable) == (200, True)


def test_the_own_origin_is_accepted_and_a_foreign_one_refused_even_with_json(stack: Stack, control_port: int) -> None:
    json_ct = "Content-Type: application/json"
    own = f"Origin: http://localhost:{control_port}"
    host = f"Host: localhost:{control_port}"
    assert raw_http(control_port, request("POST", "/engine/up", control_port, host, own, json_ct, body=b"{}"))[0] == 200
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{control_port + 1}", f"https://127.0.0.1:{control_port}"):
        status, _ = raw_http(control_port, request("POST", "/engine/down", control_port, host, f"Origin: {origin}", json_ct, body=b"{}"))
        assert status == 403, origin
    assert stack.engine is not None and stack.engine.reachable


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("127.0.0.1", 200),
        ("evil.example:{port}", 403),
        ("evil.example", 403),
        ("127.0.0.1.evil.example:{port}", 403),
        ("127.0.0.1:{other}", 403),
        ("10.0.0.5:{port}", 403),
    ],
)
def test_only_loopback_host_names_are_served(control_port: int, host: str, status: int) -> None:
    header = "Host: " + host.format(port=control_port, other=control_port + 1)
    assert raw_http(control_port, request("GET", "/engine", control_port, header))[0] == status


def test_a_request_without_host_is_refused(control_port: int) -> None:
    assert raw_http(control_port, request("GET", "/health", control_port))[0] == 400
    assert raw_http(control_port, b"GET /health HTTP/1.0\r\n\r\n")[0] == 200  # HTTP/1.0 has no Host


@pytest.mark.parametrize("length", ["abc", "-1", "99999999999", "1_0", "+5", "5, 6"])
def test_a_bad_content_length_is_a_quiet_400(
    stack: Stack, control_port: int, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, length: str
) -> None:
    headers = (f"Host: 127.0.0.1:{control_port}", "Content-Type: application/json", f"Content-Length: {length}")
    status, _ = raw_http(control_port, request("POST", "/engine/down", control_port, *headers) + b"{}")
    assert status in (400, 413)
    assert stack.engine is not None and stack.engine.reachable
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_an_unknown_path_and_method(control_port: int) -> None:
    host = f"Host: 127.0.0.1:{control_port}"
    assert raw_http(control_port, request("GET", "/nothing", control_port, host))[0] == 404
    assert raw_http(control_port, request("GET", "/engine/down", control_port, host))[0] == 405
    assert raw_http(control_port, request("DELETE", "/engine", control_port, host))[0] == 405


# -- trace store -----------------------------------------------------------------------------


def test_trace_store_serves_only_loopback_host_names(traces: TraceStoreServer) -> None:
    port = traces.port
    assert raw_http(port, request("GET", "/api/services", port, f"Host: 127.0.0.1:{port}"))[0] == 200
    assert raw_http(port, request("GET", "/api/services", port, f"Host: localhost:{port}"))[0] == 200
    status, body = raw_http(port, request("GET", "/api/services", port, f"Host: rebound.example:{port}"))
    assert status == 403 and b"rebound.example" in body


def test_trace_store_refuses_spans_from_a_foreign_origin(traces: TraceStoreServer) -> None:
    port = traces.port
    before = traces.store.span_count
    body = Path(__file__).with_name("fixtures").joinpath("wire", "otlp_trace_request.json").read_bytes()
    headers = (f"Host: 127.0.0.1:{port}", "Content-Type: application/json", "Origin: http://evil.example")
    assert raw_http(port, request("POST", "/v1/traces", port, *headers, body=body))[0] == 403
    assert traces.store.span_count == before
    # A simple (form-like) content type is no OTLP request at all.
    headers = (f"Host: 127.0.0.1:{port}", "Content-Type: text/plain")
    assert raw_http(port, request("POST", "/v1/traces", port, *headers, body=body))[0] == 415
    assert traces.store.span_count == before


@pytest.mark.parametrize(("length", "status"), [("abc", 400), ("-1", 400), ("1_0", 400), ("99999999999", 413)])
def test_trace_store_bad_content_length_is_a_quiet_error(
    traces: TraceStoreServer, capfd: pytest.CaptureFixture[str], length: str, status: int
) -> None:
    port = traces.port
    headers = (f"Host: 127.0.0.1:{port}", "Content-Type: application/x-protobuf", f"Content-Length: {length}")
    assert raw_http(port, request("POST", "/v1/traces", port, *headers))[0] == status
    assert "Traceback" not in capfd.readouterr().err


def test_trace_store_refuses_two_framings_at_once(traces: TraceStoreServer) -> None:
    port = traces.port
    headers = (f"Host: 127.0.0.1:{port}", "Content-Type: application/x-protobuf", "Content-Length: 5", "Transfer-Encoding: chunked")
    assert raw_http(port, request("POST", "/v1/traces", port, *headers) + b"0\r\n\r\n")[0] == 400


def test_deeply_nested_json_is_a_400(traces: TraceStoreServer, capfd: pytest.CaptureFixture[str]) -> None:
    port = traces.port
    body = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    headers = (f"Host: 127.0.0.1:{port}", "Content-Type: application/json")
    status, answer = raw_http(port, request("POST", "/v1/traces", port, *headers, body=body))
    assert status == 400, answer[:200]
    assert "Traceback" not in capfd.readouterr().err


# -- secrets ---------------------------------------------------------------------------------

STACK_UP = (
    "import sys; from pathlib import Path; from drillui.stack.cli import stack_up; "
    "sys.exit(stack_up(Path(sys.argv[1]), json_out=sys.argv[2] == 'json'))"
)
ROOT = Path(__file__).resolve().parents[1]
# Passwords in override URLs: none of them may appear in anything the stack prints or publishes.
WITH_PASSWORDS = {
    DATABASE_URL: "postgresql://app:hunter2@127.0.0.1:5999/app?sslmode=disable",
    ES_URL: "http://elastic:s3cr%40t@127.0.0.1:9999",
}


def _stack_up(state: Path, env: dict[str, str], mode: str) -> tuple[str, str]:
    """Run `stack up` until it is ready, stop it with SIGTERM; return (stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL, ES_URL, JAEGER_URL, OTLP_ENDPOINT, "DRILLUI_STATE_DIR")}
    proc = subprocess.Popen(
        [sys.executable, "-c", STACK_UP, str(state), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state / ENV_NAME).exists() or not (state / INFO_NAME).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stack did not come up within 30 s"
            time.sleep(0.05)
        time.sleep(0.3)  # the summary is printed right after the files are written
        check_published_files(state)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return out, err


def check_published_files(state: Path) -> None:
    """The state folder is private, every file in it 0600, and only the secret files hold secrets."""
    mode = stat.S_IMODE(state.stat().st_mode)
    assert mode in (0o700, 0o710), oct(mode)
    if mode == 0o710:  # as root: traversal for the postgres system user's group only
        assert os.geteuid() == 0 and grp.getgrgid(state.stat().st_gid).gr_name == SYSTEM_USER
    for path in state.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    info = (state / INFO_NAME).read_text()
    real = json.loads((state / SECRETS_NAME).read_text())["endpoints"]
    for url in real.values():
        if "@" in url:
            assert url not in info
    assert json.loads(info)["secrets_file"] == str(state / SECRETS_NAME)
    running = Stack.attach(state)
    assert running is not None and running.endpoints.to_json() == real
    sourced = subprocess.run(
        ["bash", "-c", f'set -a; . "{state / ENV_NAME}"; set +a; printf %s "$DATABASE_URL"'], capture_output=True, text=True, check=True
    )
    assert sourced.stdout == real["database_url"]


@pytest.mark.parametrize("mode", ["json", "human"])
def test_stack_up_shows_no_password_of_an_override(tmp_path: Path, mode: str) -> None:
    state = tmp_path / "state"
    out, err = _stack_up(state, WITH_PASSWORDS, mode)
    for secret in ("hunter2", "s3cr%40t", "s3cr@t"):
        assert secret not in out + err
    if mode == "json":
        line = json.loads(out.splitlines()[0])
        assert line["database_url"] == "postgresql://app:***@127.0.0.1:5999/app?sslmode=disable"
        assert line["es_url"] == "http://elastic:***@127.0.0.1:9999"
        assert line["secrets_file"] == str(state / SECRETS_NAME)
    else:
        assert "postgresql://app:***@127.0.0.1:5999/app" in out
        assert f"set -a; . {state / ENV_NAME}; set +a" in out
    assert not (state / SECRETS_NAME).exists() and not (state / ENV_NAME).exists()


def test_the_embedded_postgres_password_is_private_and_never_shown(pg_tmp: Path) -> None:  # noqa: F811
    tmp_path = pg_tmp
    state = tmp_path / "state"
    out, err = _stack_up(state, {ES_URL: "http://127.0.0.1:9999", JAEGER_URL: "http://127.0.0.1:16699", OTLP_ENDPOINT: "http://127.0.0.1:4399"}, "human")
    password_file = state / f"{PG_DIR_NAME}.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24 and password not in out + err
    assert "postgresql://postgres:***@127.0.0.1:" in out


def test_an_older_state_folder_is_made_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / LOCK_NAME).write_text("")
    os.chmod(state / LOCK_NAME, 0o644)
    with Stack.start(state, env={**WITH_PASSWORDS, JAEGER_URL: "http://127.0.0.1:16699", OTLP_ENDPOINT: "http://127.0.0.1:4399"}):
        check_published_files(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_state_folder_everyone_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(UsageError, match="writable by every user"):
        Stack.start(shared, env=ALL_OVERRIDES)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and not list(shared.iterdir())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app:p@ss:w@rd@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app@db/app?password=hunter2&sslmode=require", "postgresql://app@db/app?password=***&sslmode=require"),
        ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
        ("http://user@127.0.0.1:9200/x?y=1", "http://user@127.0.0.1:9200/x?y=1"),
        ("http://u:pw@[::1:9200/", "http://u:***@[::1:9200/"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_endpoints_never_show_a_password_in_their_repr() -> None:
    endpoints = Endpoints(WITH_PASSWORDS[DATABASE_URL], WITH_PASSWORDS[ES_URL], "http://127.0.0.1:1", "http://127.0.0.1:1")
    assert "hunter2" not in repr(endpoints) and "s3cr" not in repr(endpoints)
    assert endpoints.to_json()[DATABASE_URL.lower()] == WITH_PASSWORDS[DATABASE_URL]  # the real one stays available
