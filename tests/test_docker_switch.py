"""The Docker engine switch against a fake Docker Engine API, with no Docker engine on the machine.

The fake is a small HTTP server on 127.0.0.1 that speaks the endpoints the `docker` SDK calls
(`/version`, `/_ping`, `/containers/json`, `/containers/{id}/json`, `/containers/{id}/stop`,
`/containers/{id}/start`), with the SDK's real client aimed at it. Its containers are backed by
a fake search engine on a real port: stopping the `es` container closes that port (after a
delay, as a real engine takes a moment to go), and starting it opens the port again with a
cluster that is red before it turns yellow, so the switch's waiting is exercised for real.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import docker  # type: ignore[import-untyped]
import httpx
import pytest

from drillui.errors import StackError, UsageError
from drillui.faults.base import DrillHost
from drillui.faults.drivers import EngineUnreachableDriver
from drillui.runner.infra import open_infrastructure
from drillui.settings import DrillSettings
from drillui.stack.docker import DockerEngineSwitch

API_VERSION = "1.45"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Silenced: test output is for failures."""

    def reply(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeEngine:
    """A search engine on a fixed port that can go away and come back (red first, then yellow)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._red_answers = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, red_answers: int = 0) -> None:
        engine = self
        self._red_answers = red_answers

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.startswith("/_cluster/health"):
                    red = engine._red_answers > 0
                    engine._red_answers -= 1
                    self.reply(200, {"cluster_name": "fake", "status": "red" if red else "yellow"})
                else:
                    self.reply(200, {"version": {"number": "8.15.3"}, "tagline": "You Know, for Search"})

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    host_port: int
    engine: FakeEngine | None = None
    running: bool = True
    comes_back: bool = True
    """False: start succeeds but the engine never answers again."""
    stop_error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Labels": self.labels,
            "State": "running" if self.running else "exited",
            "Ports": [{"IP": "127.0.0.1", "PrivatePort": 9200, "PublicPort": self.host_port, "Type": "tcp"}] if self.running else [],
        }

    def inspect(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "State": {"Status": "running" if self.running else "exited", "Running": self.running},
            "Config": {"Labels": self.labels, "Image": "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"},
            "HostConfig": {"PortBindings": {"9200/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(self.host_port)}]}},
        }


@dataclass
class FakeDocker:
    """The Docker Engine API subset the SDK uses to find, inspect, stop and start a container."""

    containers: list[FakeContainer] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    delay: float = 0.3
    """Seconds between the API call and the engine port closing/opening, as with a real container."""
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _timers: list[threading.Timer] = field(default_factory=list)

    def find(self, ref: str) -> FakeContainer | None:
        return next((c for c in self.containers if ref in (c.id, c.name)), None)

    def handle(self, method: str, path: str) -> tuple[int, Any, str]:
        url = urlsplit(path)
        route = re.sub(r"^/v\d+\.\d+", "", url.path)
        self.calls.append(f"{method} {route}{'?' + url.query if url.query else ''}")
        query = parse_qs(url.query)
        if method == "GET" and route == "/version":
            return 200, {"ApiVersion": API_VERSION, "MinAPIVersion": "1.24", "Version": "27.3.1", "Os": "linux"}, "application/json"
        if method in ("GET", "HEAD") and route == "/_ping":
            return 200, b"OK", "text/plain"
        if method == "GET" and route == "/containers/json":
            filters = json.loads(query.get("filters", ["{}"])[0])
            wanted = filters.get("label", [])
            if isinstance(wanted, dict):  # the API's older map form
                wanted = [k for k, v in wanted.items() if v]
            found = [c for c in self.containers if all(_label_matches(c.labels, w) for w in wanted)]
            if query.get("all", ["0"])[0] in ("0", "false"):
                found = [c for c in found if c.running]
            return 200, [c.summary() for c in found], "application/json"
        match = re.fullmatch(r"/containers/([^/]+)/(json|stop|start)", route)
        if match is None:
            return 404, {"message": f"page not found: {route}"}, "application/json"
        container = self.find(match.group(1))
        if container is None:
            return 404, {"message": f"No such container: {match.group(1)}"}, "application/json"
        action = match.group(2)
        if action == "json" and method == "GET":
            return 200, container.inspect(), "application/json"
        if action == "stop" and method == "POST":
            if container.stop_error:
                return 500, {"message": container.stop_error}, "application/json"
            if not container.running:
                return 304, None, "application/json"
            container.running = False
            if container.engine is not None:
                self._later(container.engine.stop)
            return 204, None, "application/json"
        if action == "start" and method == "POST":
            if container.running:
                return 304, None, "application/json"
            container.running = True
            engine = container.engine
            if engine is not None and container.comes_back:
                self._later(lambda: engine.start(red_answers=2))
            return 204, None, "application/json"
        return 405, {"message": "method not allowed"}, "application/json"

    def _later(self, action: Any) -> None:
        timer = threading.Timer(self.delay, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def start(self) -> None:
        fake = self

        class Handler(_Quiet):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body, content_type = fake.handle(method, self.path)
                self.reply(status, body, content_type)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("HEAD")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("POST")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"tcp://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class _Host:
    es_url: str
    index: str
    engine: DockerEngineSwitch


def _label_matches(labels: dict[str, str], wanted: str) -> bool:
    key, _, value = wanted.partition("=")
    return key in labels and (not value or labels[key] == value)


def compose_labels(project: str, service: str = "es") -> dict[str, str]:
    return {"com.docker.compose.project": project, "com.docker.compose.service": service}


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    fake = FakeEngine(free_port())
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_docker(fake_engine: FakeEngine) -> Iterator[FakeDocker]:
    fake = FakeDocker(
        containers=[
            FakeContainer("c0ffee01", "drillui-postgres-1", compose_labels("drillui", "postgres"), 5432),
            FakeContainer("c0ffee02", "drillui-es-1", compose_labels("drillui"), fake_engine.port, fake_engine),
        ]
    )
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def client(fake_docker: FakeDocker) -> Iterator[Any]:
    sdk = docker.DockerClient(base_url=fake_docker.url, timeout=10)
    yield sdk
    sdk.close()


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# --------------------------------------------------------------------------- the switch


def test_stop_waits_for_a_refusal_and_start_for_a_ready_engine(fake_engine: FakeEngine, fake_docker: FakeDocker, client: Any) -> None:
    switch = DockerEngineSwitch(fake_engine.url, client=client, env={}, down_timeout=10, up_timeout=10)
    assert switch.managed is True
    assert switch.reachable() is True

    switch.set_reachable(False)
    # Returned only once the port refuses, although the fake closes it 0.3 s after the API call.
    assert refuses(fake_engine.port)
    assert switch.reachable() is False
    assert f"POST /containers/c0ffee02/stop?t={switch.stop_grace}" in fake_docker.calls

    switch.set_reachable(True)
    # Returned only once the cluster health is yellow (the fake answers red twice first).
    health = httpx.get(f"{fake_engine.url}/_cluster/health", trust_env=False, timeout=2).json()
    assert health["status"] == "yellow"
    assert switch.reachable() is True
    assert "POST /containers/c0ffee02/start" in fake_docker.calls
    assert switch.container_name == "drillui-es-1"
    # The container was looked up once, by both compose labels, then addressed by id.
    lists = [c for c in fake_docker.calls if c.startswith("GET /containers/json")]
    assert len(lists) == 1
    assert "com.docker.compose.service%3Des" in lists[0] and "com.docker.compose.project%3Ddrillui" in lists[0]


def test_the_engine_unreachable_fault_runs_through_the_docker_switch(fake_engine: FakeEngine, fake_docker: FakeDocker, client: Any) -> None:
    """Drill A's own fault driver, unchanged, on the docker stack."""
    switch = DockerEngineSwitch(fake_engine.url, client=client, env={}, down_timeout=10, up_timeout=10)
    # The driver only reads the engine's URL and switch from the run it acts on.
    host = cast(DrillHost, _Host(es_url=fake_engine.url, index="drill-a", engine=switch))
    driver = EngineUnreachableDriver()
    armed = driver.arm(host)
    assert armed.armed, armed.evidence
    assert "ConnectError" in armed.evidence
    reverted = driver.revert(host)
    assert not reverted.armed, reverted.evidence
    assert "HTTP 200" in reverted.evidence


def test_the_sdk_talks_version_ping_and_container_endpoints(fake_engine: FakeEngine, fake_docker: FakeDocker) -> None:
    """Built from DOCKER_HOST as the `docker` command would be: version negotiation, then a ping."""
    with DockerEngineSwitch(fake_engine.url, env={"DOCKER_HOST": fake_docker.url}, down_timeout=10, up_timeout=10) as switch:
        assert switch.reachable() is True
    assert fake_docker.calls[0] == "GET /version"
    assert fake_docker.calls[1] == "GET /_ping"
    assert fake_docker.calls[2].startswith("GET /containers/json?")
    assert "GET /containers/c0ffee02/json" in fake_docker.calls


def test_the_right_es_is_chosen_by_project_then_by_published_port(fake_engine: FakeEngine, fake_docker: FakeDocker, client: Any) -> None:
    other = FakeContainer("beef0001", "shop-es-1", compose_labels("shop"), free_port())
    fake_docker.containers = [other, FakeContainer("beef0002", "lab-es-1", compose_labels("lab"), fake_engine.port)]
    # No `drillui` project: among the projects' `es` containers, the one publishing ES_URL's port.
    switch = DockerEngineSwitch(fake_engine.url, client=client, env={})
    assert switch.container_name == "drillui-es"  # nothing looked up yet
    assert switch.container().name == "lab-es-1"
    # A project given explicitly is the only one searched.
    explicit = DockerEngineSwitch(fake_engine.url, client=client, env={"COMPOSE_PROJECT_NAME": "shop"})
    assert explicit.container().name == "shop-es-1"
    by_name = DockerEngineSwitch(fake_engine.url, client=client, env={"DRILLUI_ES_CONTAINER": "beef0002"})
    assert by_name.container().name == "lab-es-1"


def test_no_container_and_ambiguous_containers_are_clear_errors(fake_engine: FakeEngine, fake_docker: FakeDocker, client: Any) -> None:
    fake_docker.containers = []
    with pytest.raises(StackError, match=r"no container of compose service 'es' publishing port \d+ \(compose project 'drillui'\)") as info:
        DockerEngineSwitch(fake_engine.url, client=client, env={}).set_reachable(False)
    assert "docker compose -f docker-compose.infra.yml up -d" in str(info.value)
    fake_docker.containers = [
        FakeContainer("a1", "one-es-1", compose_labels("one"), fake_engine.port),
        FakeContainer("a2", "two-es-1", compose_labels("two"), fake_engine.port),
    ]
    with pytest.raises(StackError, match="several containers of compose service 'es' publish port .*: one-es-1, two-es-1"):
        DockerEngineSwitch(fake_engine.url, client=client, env={}).container()
    with pytest.raises(StackError, match="no container 'nope' \\(from DRILLUI_ES_CONTAINER\\)"):
        DockerEngineSwitch(fake_engine.url, client=client, env={"DRILLUI_ES_CONTAINER": "nope"}).container()


def test_no_docker_engine_is_a_clear_error() -> None:
    closed = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(StackError, match="no Docker engine answers at tcp://127.0.0.1:") as info:
        DockerEngineSwitch("http://127.0.0.1:9200", env={"DOCKER_HOST": closed}).set_reachable(False)
    assert "start Docker" in str(info.value) and "unset DRILLUI_INFRA" in str(info.value)
    with pytest.raises(StackError, match="no Docker engine answers at tcp://127.0.0.1:"):
        DockerEngineSwitch("http://127.0.0.1:9200", docker_host=closed, env={}).reachable()


def test_a_refused_stop_and_an_engine_that_never_comes_back_are_errors(fake_engine: FakeEngine, fake_docker: FakeDocker, client: Any) -> None:
    es = fake_docker.find("c0ffee02")
    assert es is not None
    es.stop_error = "cannot stop container: permission denied"
    switch = DockerEngineSwitch(fake_engine.url, client=client, env={}, down_timeout=5, up_timeout=1)
    with pytest.raises(StackError, match="docker could not stop the engine container drillui-es-1: .*permission denied"):
        switch.set_reachable(False)
    es.stop_error = None
    es.comes_back = False
    switch.set_reachable(False)
    began = time.monotonic()
    with pytest.raises(StackError, match=r"drillui-es-1 was started but http://127.0.0.1:\d+ is not ready after 1s") as info:
        switch.set_reachable(True)
    assert time.monotonic() - began < 5
    assert "docker logs drillui-es-1" in str(info.value)


# --------------------------------------------------------------------------- the infra choice


def test_drillui_infra_docker_gives_the_compose_endpoints_and_the_docker_switch(fake_engine: FakeEngine, fake_docker: FakeDocker) -> None:
    env = {"DRILLUI_INFRA": "docker", "DOCKER_HOST": fake_docker.url, "ES_URL": fake_engine.url}
    said: list[str] = []
    with open_infrastructure(DrillSettings.build(env), on_status=said.append) as infra:
        assert isinstance(infra.engine, DockerEngineSwitch)
        assert infra.mode == "docker (compose project drillui)"
        assert infra.endpoints.es_url == fake_engine.url
        assert infra.endpoints.database_url == "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
        assert infra.endpoints.jaeger_url == "http://127.0.0.1:16686"
        assert infra.endpoints.otlp_endpoint == "http://127.0.0.1:4318"
        # Nothing is asked of Docker until a drill switches the engine.
        assert fake_docker.calls == []
        infra.engine.set_reachable(False)
        assert refuses(fake_engine.port)
        infra.engine.set_reachable(True)
    assert any("docker infrastructure" in line for line in said)


def test_an_unknown_infra_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="DRILLUI_INFRA='kubernetes' is not valid"):
        DrillSettings.build({"DRILLUI_INFRA": "kubernetes"})
