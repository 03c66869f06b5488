"""The Docker infrastructure: endpoints of `docker-compose.infra.yml` and its engine switch.

Why it exists: users who already run the runbook against Postgres, Elasticsearch and Jaeger in
Docker must be able to run the same drills there. Everything a drill does goes through the
servers' own APIs, except "engine down": there the engine must really be gone, as in the
runbook's `docker compose -f docker-compose.infra.yml stop es`. `DockerEngineSwitch` does exactly
that through the Docker Engine API (the `docker` SDK): it stops the compose service's container
and returns once the engine's published port refuses connections, and starts it again and
returns once the engine answers, with its data intact (the data lives in a named volume).

The container is found by the labels compose puts on it (`com.docker.compose.project`,
`com.docker.compose.service=es`), lazily on first use: a drill that never switches the engine
needs no Docker engine at all, and one that does gets a clear StackError when none answers.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Self
from urllib.parse import urlsplit

import docker  # type: ignore[import-untyped]
import httpx
import requests
from docker.errors import DockerException, NotFound  # type: ignore[import-untyped]

from drillui.errors import StackError
from drillui.stack.stack import (
    DATABASE_URL,
    ES_URL,
    JAEGER_URL,
    OTLP_ENDPOINT,
    PROMETHEUS_URL,
    Endpoints,
    _override,  # the stack's own validation of the override variables: one spelling of the rules
)

__all__ = [
    "COMPOSE_DEFAULTS",
    "COMPOSE_PROJECT",
    "COMPOSE_PROJECT_ENV",
    "ES_SERVICE",
    "ES_SERVICE_ENV",
    "DockerEngineSwitch",
    "compose_endpoints",
    "compose_project",
]

COMPOSE_PROJECT: Final = "drillui"
"""The `name:` of docker-compose.infra.yml, so containers carry a predictable project label."""
COMPOSE_PROJECT_ENV: Final = "DRILLUI_COMPOSE_PROJECT"
ES_SERVICE: Final = "es"
"""The runbook's service name for Elasticsearch (`docker compose ... stop es`)."""
ES_SERVICE_ENV: Final = "DRILLUI_ES_SERVICE"
ES_CONTAINER_ENV: Final = "DRILLUI_ES_CONTAINER"
"""A container name or id that overrides the label lookup (an engine started outside compose)."""

COMPOSE_DEFAULTS: Final[Mapping[str, str]] = {
    DATABASE_URL: "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
    ES_URL: "http://127.0.0.1:9200",
    OTLP_ENDPOINT: "http://127.0.0.1:4318",
    JAEGER_URL: "http://127.0.0.1:16686",
}
COMPOSE_PROMETHEUS_URL: Final = "http://127.0.0.1:9090"
"""The `monitoring` profile's Prometheus, published on loopback (override: PROMETHEUS_URL)."""

_LABEL_PROJECT: Final = "com.docker.compose.project"
_LABEL_SERVICE: Final = "com.docker.compose.service"
# Elasticsearch flushes and closes its shards on SIGTERM; 30 s is plenty on a small index and
# still bounded (docker kills it after that).
STOP_GRACE_S: Final = 30
# A JVM engine takes tens of seconds to come back (more on a cold laptop).
UP_TIMEOUT_S: Final = 180.0
DOWN_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.25
_PROBE_TIMEOUT_S: Final = 2.0
_NO_DOCKER_HINT: Final = (
    "start Docker (Docker Desktop, or `systemctl start docker`) or point DOCKER_HOST at it; "
    "the embedded stack needs no Docker: unset DRILLUI_INFRA"
)


def compose_project(env: Mapping[str, str] = os.environ) -> str:
    """The compose project the infrastructure runs under, as `docker compose` would name it."""
    for name in (COMPOSE_PROJECT_ENV, "COMPOSE_PROJECT_NAME"):
        value = env.get(name, "").strip()
        if value:
            return value
    return COMPOSE_PROJECT


def compose_endpoints(env: Mapping[str, str] = os.environ) -> Endpoints:
    """The compose file's published addresses, each overridable by its usual variable.

    Raises UsageError for a malformed override, with the same message as the embedded stack.
    """
    values = {name: _override(env, name) or default for name, default in COMPOSE_DEFAULTS.items()}
    return Endpoints(
        database_url=values[DATABASE_URL],
        es_url=values[ES_URL],
        otlp_endpoint=values[OTLP_ENDPOINT],
        jaeger_url=values[JAEGER_URL],
        # The monitoring profile's Prometheus (infra/prometheus/prometheus.yml): a run asks it
        # whether it answers before using it, since that profile is optional.
        prometheus_url=_override(env, PROMETHEUS_URL) or COMPOSE_PROMETHEUS_URL,
    )


def _docker_error(exc: BaseException) -> str:
    """One line out of the SDK's often multi-line, nested error text."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


class DockerEngineSwitch:
    """Stops and starts the engine's container: the EngineSwitch of the Docker infrastructure.

    `set_reachable(False)` stops the container and returns once `es_url`'s port refuses
    connections; `set_reachable(True)` starts it and returns once the engine answers HTTP with a
    cluster health of yellow or green. Either raises StackError (naming the container and what
    was seen) when that does not happen within its timeout, or when Docker does not answer.

    `client` is an already built `docker.DockerClient` (tests give one aimed at a fake Engine
    API); otherwise one is built on first use from `docker_host` or, by default, the environment
    (`DOCKER_HOST`, then the Docker CLI's current context), as the `docker` command does.
    """

    managed: Final = True

    def __init__(
        self,
        es_url: str,
        *,
        client: Any = None,
        docker_host: str | None = None,
        project: str | None = None,
        service: str = ES_SERVICE,
        container: str | None = None,
        env: Mapping[str, str] | None = None,
        stop_grace: int = STOP_GRACE_S,
        down_timeout: float = DOWN_TIMEOUT_S,
        up_timeout: float = UP_TIMEOUT_S,
        api_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.es_url = es_url.rstrip("/")
        parts = urlsplit(self.es_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._client = client
        self._owns_client = client is None
        self._docker_host = docker_host
        self._env = dict(os.environ if env is None else env)
        self.project = project or compose_project(self._env)
        # Whether the project came from the user: then only that project is searched.
        self._project_given = project is not None or any(
            self._env.get(name, "").strip() for name in (COMPOSE_PROJECT_ENV, "COMPOSE_PROJECT_NAME")
        )
        self.service = service
        self._container_ref = container or self._env.get(ES_CONTAINER_ENV, "").strip() or None
        self.stop_grace = stop_grace
        self.down_timeout = down_timeout
        self.up_timeout = up_timeout
        self.api_timeout = api_timeout
        self._sleep = sleep
        self._container: Any = None

    @classmethod
    def from_env(cls, es_url: str, env: Mapping[str, str] = os.environ) -> DockerEngineSwitch:
        """The switch for the compose service named by `DRILLUI_ES_SERVICE` (default `es`)."""
        service = env.get(ES_SERVICE_ENV, "").strip() or ES_SERVICE
        return cls(es_url, service=service, env=env)

    # ---- the EngineSwitch protocol

    def set_reachable(self, reachable: bool) -> None:
        container = self.container()
        name = self.container_name
        try:
            if reachable:
                container.start()
            else:
                container.stop(timeout=self.stop_grace)
        except (DockerException, requests.RequestException) as exc:
            verb = "start" if reachable else "stop"
            raise StackError(f"docker could not {verb} the engine container {name}: {_docker_error(exc)}") from exc
        if reachable:
            self._wait_until_answers()
        else:
            self._wait_until_refused()

    def reachable(self) -> bool:
        """True when the container runs and the engine's port accepts a connection."""
        return self.status() == "running" and self._port_accepts()

    def status(self) -> str:
        """The container's state as Docker reports it now: `running`, `exited`, `paused`..."""
        container = self.container()
        try:
            container.reload()
        except (DockerException, requests.RequestException) as exc:
            raise StackError(f"docker could not inspect the engine container {self.container_name}: {_docker_error(exc)}") from exc
        return str((container.attrs.get("State") or {}).get("Status") or "unknown")

    # ---- the container

    @property
    def container_name(self) -> str:
        if self._container is None:
            return self._container_ref or f"{self.project}-{self.service}"
        return str(self._container.name)

    def container(self) -> Any:
        """The engine's container (a `docker.models.containers.Container`), found once."""
        if self._container is None:
            self._container = self._find_container()
        return self._container

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
        self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _docker(self) -> Any:
        if self._client is not None:
            return self._client
        where = self._docker_host or self._env.get("DOCKER_HOST") or "the Docker CLI context (default unix:///var/run/docker.sock)"
        try:
            if self._docker_host is not None:
                client = docker.DockerClient(base_url=self._docker_host, timeout=int(self.api_timeout))
            else:
                client = docker.from_env(environment=self._env, timeout=int(self.api_timeout))
        except (DockerException, requests.RequestException) as exc:
            raise StackError(f"no Docker engine answers at {where}: {_docker_error(exc)}", hint=_NO_DOCKER_HINT) from exc
        try:
            client.ping()
        except (DockerException, requests.RequestException) as exc:
            client.close()
            raise StackError(f"the Docker engine at {where} does not answer /_ping: {_docker_error(exc)}", hint=_NO_DOCKER_HINT) from exc
        self._client = client
        return client

    def _find_container(self) -> Any:
        client = self._docker()
        try:
            if self._container_ref is not None:
                try:
                    return client.containers.get(self._container_ref)
                except NotFound as exc:
                    raise StackError(
                        f"no container {self._container_ref!r} (from {ES_CONTAINER_ENV})",
                        hint="`docker ps -a` lists the containers",
                    ) from exc
            service_label = f"{_LABEL_SERVICE}={self.service}"
            found = client.containers.list(all=True, filters={"label": [service_label, f"{_LABEL_PROJECT}={self.project}"]})
            if not found and not self._project_given:
                # Started with `docker compose -p other ...`: any project's `es` will do, if it is
                # the one that publishes ES_URL's port (checked below).
                found = client.containers.list(all=True, filters={"label": [service_label]})
        except (DockerException, requests.RequestException) as exc:
            raise StackError(f"docker could not list containers: {_docker_error(exc)}") from exc
        if len(found) > 1:
            # Several projects run an `es`: the right one publishes the port ES_URL names.
            found = [c for c in found if self._port in _published_ports(c.attrs)]
        if not found:
            raise StackError(
                f"no container of compose service {self.service!r} publishing port {self._port} "
                f"(compose project {self.project!r})",
                hint="start it with `docker compose -f docker-compose.infra.yml up -d`, "
                f"or name the container with {ES_CONTAINER_ENV}",
            )
        if len(found) > 1:
            names = ", ".join(sorted(str(c.name) for c in found))
            raise StackError(
                f"several containers of compose service {self.service!r} publish port {self._port}: {names}",
                hint=f"set {COMPOSE_PROJECT_ENV} to the right project or {ES_CONTAINER_ENV} to the container",
            )
        return found[0]

    # ---- waiting for the engine

    def _port_accepts(self) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=_PROBE_TIMEOUT_S):
                return True
        except OSError:
            # Refused, reset, unreachable or timed out: no engine answers on this address.
            return False

    def _wait_until_refused(self) -> None:
        deadline = time.monotonic() + self.down_timeout
        while self._port_accepts():
            if time.monotonic() > deadline:
                raise StackError(
                    f"the engine container {self.container_name} was stopped but {self._host}:{self._port} "
                    f"still accepts connections after {self.down_timeout:g}s",
                    hint="is another engine publishing the same port?",
                )
            self._sleep(_POLL_S)

    def _wait_until_answers(self) -> None:
        deadline = time.monotonic() + self.up_timeout
        seen = "no answer yet"
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        with httpx.Client(trust_env=False, timeout=_PROBE_TIMEOUT_S) as http:
            while True:
                ready, seen = _engine_ready(http, self.es_url)
                if ready:
                    return
                if time.monotonic() > deadline:
                    raise StackError(
                        f"the engine container {self.container_name} was started but {self.es_url} "
                        f"is not ready after {self.up_timeout:g}s ({seen})",
                        hint=f"`docker logs {self.container_name}` shows why",
                    )
                self._sleep(_POLL_S)


def _engine_ready(http: httpx.Client, es_url: str) -> tuple[bool, str]:
    """(ready, what was seen): the HTTP layer answers and the cluster is yellow or green.

    The root answers before the shards are recovered; a write then gets a 503, so the drill's
    "engine is back" must mean the cluster health, not just an open port.
    """
    try:
        response = http.get(f"{es_url}/_cluster/health")
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}"
    if response.status_code != 200:
        return False, f"/_cluster/health HTTP {response.status_code}"
    try:
        status = response.json().get("status")
    except (ValueError, AttributeError):
        return False, "/_cluster/health is not a JSON object"
    return status in ("green", "yellow"), f"cluster health {status}"


def _published_ports(attrs: Mapping[str, Any]) -> set[int]:
    """Host ports a container publishes (from its config, so a stopped one counts too)."""
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).values()
    ports: set[int] = set()
    for binding in bindings:
        for entry in binding or []:
            text = str((entry or {}).get("HostPort") or "")
            if text.isdigit():
                ports.add(int(text))
    return ports
