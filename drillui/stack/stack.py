"""The embedded infrastructure as one unit: Postgres, the search engine and the trace store.

Why one unit: a drill needs the three endpoints together, started in order and stopped in
reverse; two terminals must not run two Postgres servers on the same data folder; and a drill
run in another process must find a running stack and switch the engine off and on. So:

- `Stack.start` starts whatever the environment does not override (`DATABASE_URL`, `ES_URL`,
  `JAEGER_URL` / `OTEL_EXPORTER_OTLP_ENDPOINT`), under an exclusive `flock` on
  `<state_dir>/stack.lock` held for the stack's life, and publishes `<state_dir>/stack.json`
  (endpoints with passwords redacted, pid, start time, control URL) for other processes.
- Secrets stay private (see private.py): the state folder is 0700 and every file in it 0600; the
  real endpoints, passwords included, are only in `stack.secrets.json` (for programs:
  `Stack.attach` reads it) and `stack.env` (for shells: `set -a; . <state>/stack.env; set +a`).
  Nothing the stack prints shows a password.
- A small control HTTP server on 127.0.0.1 lets another process make the engine unreachable and
  reachable again (`POST /engine/down`, `POST /engine/up`, `GET /engine`), slow it down
  (`POST /engine/latency` with `{"seconds": 2.5}`), do the same to Postgres (`POST /postgres/down`,
  `/postgres/up`, `GET /postgres`), restart Postgres (`POST /postgres/restart`), and tells the
  truth about every part (`GET /health`, 503 when one is broken). State changes need a JSON body or
  the `X-Drillui-Control` header (see httpguard).
- Postgres, like the engine, is reached through a loopback relay (relay.py) that the stack can
  close, so "Postgres stops accepting connections" is a real refusal: `database_url` is the relay
  (for workers and drills), `database_direct_url` the server itself (for drillui's own probes,
  which must keep working while a drill has Postgres "down").
- `Stack.attach` gives that other process the endpoints and a remote `EngineSwitch`.

Everything listens on 127.0.0.1 only and ends with the owning process (see postgres.py and
engine.py for how each server follows its owner; the trace and control servers are threads).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import platformdirs

from drillui.errors import StackAlreadyRunning, StackError, UsageError
from drillui.stack.engine import EmbeddedEngine
from drillui.stack.httpguard import (
    CONTROL_HEADER,
    BadRequest,
    LoopbackHTTPServer,
    check_browser_headers,
    check_deliberate,
    content_length,
    set_nodelay,
)
from drillui.stack.postgres import HOST, EmbeddedPostgres, describe_exit, pid_alive, system_user
from drillui.stack.private import open_private, private_folder, redact_url, write_private
from drillui.stack.prometheus import FOLDER_NAME as PROMETHEUS_DIR_NAME
from drillui.stack.prometheus import URL_ENV as PROMETHEUS_URL
from drillui.stack.prometheus import EmbeddedPrometheus, find_binary
from drillui.stack.relay import TcpRelay
from drillui.stack.tracestore import TraceStoreServer

LOCK_NAME: Final = "stack.lock"
INFO_NAME: Final = "stack.json"
SECRETS_NAME: Final = "stack.secrets.json"
ENV_NAME: Final = "stack.env"
PG_DIR_NAME: Final = "pg"
STATE_DIR_ENV: Final = "DRILLUI_STATE_DIR"

DATABASE_URL: Final = "DATABASE_URL"
ES_URL: Final = "ES_URL"
JAEGER_URL: Final = "JAEGER_URL"
OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"

# When only one of the two trace variables is set the user points at a real Jaeger, so the other
# one gets that Jaeger's usual address (the same default as the worker's settings).
DEFAULT_OTLP_ENDPOINT: Final = "http://127.0.0.1:4318"
DEFAULT_JAEGER_URL: Final = "http://127.0.0.1:16686"

_EXAMPLES: Final[Mapping[str, str]] = {
    DATABASE_URL: "postgresql://postgres@127.0.0.1:5432/postgres",
    ES_URL: "http://127.0.0.1:9200",
    JAEGER_URL: DEFAULT_JAEGER_URL,
    OTLP_ENDPOINT: DEFAULT_OTLP_ENDPOINT,
    PROMETHEUS_URL: "http://127.0.0.1:9090",
}
_SCHEMES: Final[Mapping[str, tuple[str, ...]]] = {
    DATABASE_URL: ("postgresql", "postgres"),
    ES_URL: ("http", "https"),
    JAEGER_URL: ("http", "https"),
    OTLP_ENDPOINT: ("http", "https"),
    PROMETHEUS_URL: ("http", "https"),
}
_CONTROL_TIMEOUT_S: Final = 10.0


MAX_SPANS_ENV = "DRILLUI_TRACE_MAX_SPANS"
DEFAULT_MAX_SPANS = 50_000
MAX_BYTES_ENV = "DRILLUI_TRACE_MAX_BYTES"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_MIN_MAX_BYTES: Final = 1024 * 1024
_BYTE_UNITS: Final[Mapping[str, int]] = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}
_BYTES_RE: Final = re.compile(r"(\d{1,15})\s*([a-z]*)")


def max_spans_setting(env: Mapping[str, str] = os.environ) -> int:
    raw = env.get(MAX_SPANS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_SPANS
    if not raw.isdigit() or int(raw) < 100 or len(raw) > 12:
        raise UsageError(f"{MAX_SPANS_ENV}={raw!r}: give a whole number of spans >= 100, e.g. {MAX_SPANS_ENV}=200000")
    return int(raw)


def max_bytes_setting(env: Mapping[str, str] = os.environ) -> int:
    """`DRILLUI_TRACE_MAX_BYTES`: bytes (`268435456`) or with a binary unit (`256MiB`, `1G`)."""
    raw = env.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    match = _BYTES_RE.fullmatch(raw.lower())
    unit = _BYTE_UNITS.get(match[2]) if match else None
    if match is None or unit is None or int(match[1]) * unit < _MIN_MAX_BYTES:
        raise UsageError(
            f"{MAX_BYTES_ENV}={raw!r}: give a size of at least 1MiB, in bytes or with a unit, e.g. {MAX_BYTES_ENV}=512MiB"
        )
    return int(match[1]) * unit


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """`DRILLUI_STATE_DIR` if set, else the platform's per-user state folder for drillui."""
    chosen = env.get(STATE_DIR_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_state_dir("drillui"))


@dataclass(frozen=True)
class Endpoints:
    """Where the drill's infrastructure answers; the names are the workers' variables' meaning."""

    database_url: str
    es_url: str
    otlp_endpoint: str
    """OTLP/HTTP base URL: spans go to `<otlp_endpoint>/v1/traces`."""
    jaeger_url: str
    """Base URL of the Jaeger query API (`/api/traces`, `/api/v3/traces`)."""
    database_direct_url: str = ""
    """Postgres itself, not through the stack's relay; the same as `database_url` when Postgres is
    not the stack's own (given empty, it is filled in so)."""
    prometheus_url: str = ""
    """Base URL of a Prometheus that scrapes the drill workers (`/api/v1/query`); empty: none
    runs, and metrics are scraped from each worker directly."""

    def __post_init__(self) -> None:
        if not self.database_direct_url:
            object.__setattr__(self, "database_direct_url", self.database_url)

    def to_json(self) -> dict[str, str]:
        """The URLs, ready for `json.dumps`. Holds passwords: see `redacted`."""
        return asdict(self)

    def redacted(self) -> Endpoints:
        """The same endpoints with every password replaced by `***`: fit for output and logs."""
        return Endpoints(**{key: redact_url(value) for key, value in asdict(self).items()})

    def __repr__(self) -> str:
        # A repr lands in tracebacks, assertion messages and logs: never with a password.
        shown = ", ".join(f"{key}={value!r}" for key, value in self.redacted().to_json().items())
        return f"Endpoints({shown})"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endpoints:
        return cls(
            database_url=str(data["database_url"]),
            es_url=str(data["es_url"]),
            otlp_endpoint=str(data["otlp_endpoint"]),
            jaeger_url=str(data["jaeger_url"]),
            database_direct_url=str(data.get("database_direct_url") or data["database_url"]),
            prometheus_url=str(data.get("prometheus_url") or ""),
        )


@dataclass(frozen=True)
class Part:
    """One piece of the stack: started here, or taken from an environment variable."""

    name: Literal["postgres", "engine", "traces", "prometheus"]
    started: bool
    source: str
    """`embedded` when started here, else the variable(s) it came from."""
    seconds: float
    """Time to start it (0 when taken from the environment)."""
    detail: str = ""


class EngineSwitch(Protocol):
    """Makes the search engine unreachable and reachable again, for the "engine down" drill.

    `set_reachable(False)` returns once the engine's address refuses connections (ECONNREFUSED,
    open keep-alive connections closed); `set_reachable(True)` once it accepts them again, with
    the engine's data intact. `managed` is True when this switch really controls the engine;
    the stack hands out no switch at all (None) for an engine it did not start (`ES_URL`), and
    callers then need another fault method (e.g. stopping the engine's container).
    """

    @property
    def managed(self) -> bool: ...

    def set_reachable(self, reachable: bool) -> None: ...

    def reachable(self) -> bool: ...


class PostgresSwitch(Protocol):
    """Makes Postgres refuse connections (and cuts the open ones) and accept them again.

    Same contract as EngineSwitch, for the "Postgres unavailable" drill: `set_reachable(False)`
    returns once `database_url` refuses connections; the server and its data are untouched, and
    `database_direct_url` keeps working (for drillui's own probes).
    """

    @property
    def managed(self) -> bool: ...

    def set_reachable(self, reachable: bool) -> None: ...

    def reachable(self) -> bool: ...


class LocalEngineSwitch:
    """The switch of an `EmbeddedEngine` running in this process; it also sets its latency."""

    managed: Final = True

    def __init__(self, engine: EmbeddedEngine) -> None:
        self._engine = engine

    def set_reachable(self, reachable: bool) -> None:
        self._engine.set_reachable(reachable)

    def reachable(self) -> bool:
        return self._engine.reachable

    def set_latency(self, seconds: float) -> None:
        """Hold every request `seconds` (0 to 3600) before the engine sees it; ValueError if out of range."""
        self._engine.set_latency(seconds)

    def latency(self) -> float:
        return self._engine.latency


class LocalPostgresSwitch:
    """The switch of the stack's own Postgres relay, in this process."""

    managed: Final = True

    def __init__(self, relay: TcpRelay) -> None:
        self._relay = relay

    def set_reachable(self, reachable: bool) -> None:
        self._relay.set_reachable(reachable)

    def reachable(self) -> bool:
        return self._relay.reachable


class ControlClient:
    """Calls the control server of a stack, possibly in another process.

    Every state change is sent as a JSON body with the `X-Drillui-Control` header: the server
    refuses anything a browser could send cross-site (see httpguard).
    """

    def __init__(self, control_url: str, *, timeout: float = _CONTROL_TIMEOUT_S) -> None:
        self.control_url = control_url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, *, ok_statuses: tuple[int, ...] = (HTTPStatus.OK,)) -> dict[str, Any]:
        return self.call("GET", path, ok_statuses=ok_statuses)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", path, dict(body or {}))

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        ok_statuses: tuple[int, ...] = (HTTPStatus.OK,),
    ) -> dict[str, Any]:
        url = f"{self.control_url}{path}"
        payload = body if body is not None or method == "GET" else {}
        try:
            # trust_env=False: a proxy from the environment must never see loopback traffic.
            with httpx.Client(trust_env=False, timeout=self.timeout) as client:
                response = client.request(method, url, json=payload, headers={CONTROL_HEADER: "1"})
        except httpx.HTTPError as exc:
            raise StackError(
                f"the stack's control server did not answer {method} {url}: {exc}",
                hint="is `drillui stack up` still running?",
            ) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {"error": response.text[:200]}
        if response.status_code not in ok_statuses:
            raise StackError(f"the stack's control server refused {method} {path}: {answer.get('error', response.status_code)}")
        return answer


class RemoteEngineSwitch:
    """The switch of a stack running in another process, through its control server."""

    managed: Final = True

    def __init__(self, control_url: str, *, timeout: float = _CONTROL_TIMEOUT_S) -> None:
        self.control_url = control_url.rstrip("/")
        self.timeout = timeout
        self._client = ControlClient(control_url, timeout=timeout)

    def set_reachable(self, reachable: bool) -> None:
        self._client.post("/engine/up" if reachable else "/engine/down")

    def reachable(self) -> bool:
        return bool(self._client.get("/engine")["reachable"])

    def set_latency(self, seconds: float) -> None:
        """Hold every request `seconds` (0 to 3600) before the engine sees it."""
        self._client.post("/engine/latency", {"seconds": seconds})

    def latency(self) -> float:
        return float(self._client.get("/engine")["latency_s"])


class RemotePostgresSwitch:
    """The Postgres switch of a stack running in another process, through its control server."""

    managed: Final = True

    def __init__(self, control_url: str, *, timeout: float = _CONTROL_TIMEOUT_S) -> None:
        self._client = ControlClient(control_url, timeout=timeout)

    def set_reachable(self, reachable: bool) -> None:
        self._client.post("/postgres/up" if reachable else "/postgres/down")

    def reachable(self) -> bool:
        return bool(self._client.get("/postgres")["reachable"])


@dataclass(frozen=True)
class RunningStack:
    """A live stack found on a state folder, possibly owned by another process."""

    state_dir: Path
    pid: int
    started_at: str
    control_url: str
    endpoints: Endpoints
    engine_switch: EngineSwitch | None
    """None when the engine is not the stack's own (`ES_URL` was set)."""
    postgres_switch: PostgresSwitch | None = None
    """None when Postgres is not the stack's own (`DATABASE_URL` was set)."""
    prometheus_targets: Path | None = None
    """Where a runner lists its workers for the stack's own Prometheus (file_sd); None: the
    stack runs no Prometheus of its own."""
    prometheus_note: str = ""
    """Why the stack has no Prometheus, and how to get one (empty when it has)."""

    def __repr__(self) -> str:
        return f"RunningStack({str(self.state_dir)!r}, pid {self.pid}, {self.endpoints!r})"

    @property
    def control(self) -> ControlClient:
        return ControlClient(self.control_url)

    def health(self) -> dict[str, Any]:
        """`GET /health`: `{"ok": bool, "pid": int, "parts": {name: {"managed", "ok", "detail"}}}`."""
        return self.control.get("/health", ok_statuses=(HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE))

    def restart_postgres(self) -> dict[str, Any]:
        """Restart the stack's own Postgres (same address, data kept); its health afterwards."""
        return self.control.post("/postgres/restart")


class Stack:
    """The running embedded stack of one state folder. Build it with `Stack.start`."""

    def __init__(
        self,
        *,
        state_dir: Path,
        endpoints: Endpoints,
        parts: tuple[Part, ...],
        postgres: EmbeddedPostgres | None,
        engine: EmbeddedEngine | None,
        trace_store: TraceStoreServer | None,
        prometheus: EmbeddedPrometheus | None = None,
        control: _ControlServer,
        started_at: str,
        stops: list[Callable[[], None]],
    ) -> None:
        self.state_dir = state_dir
        self.endpoints = endpoints
        self.parts = parts
        self.postgres = postgres
        self.engine = engine
        self.trace_store = trace_store
        self.prometheus = prometheus
        self.started_at = started_at
        self.pid = os.getpid()
        self.engine_switch: EngineSwitch | None = control.switch
        self.postgres_switch: PostgresSwitch | None = (
            LocalPostgresSwitch(control.managed.postgres_relay) if control.managed.postgres_relay is not None else None
        )
        self._control = control
        self._stops = stops

    @property
    def control_url(self) -> str:
        return self._control.url

    def health(self) -> dict[str, Any]:
        """What `GET /health` answers: each part checked for real (see `_Managed.health`)."""
        return self._control.managed.health()

    def restart_postgres(self) -> str:
        """Restart the embedded Postgres (reaping a dead one first); `database_url` is unchanged."""
        self._control.managed.restart_postgres()
        return self.endpoints.database_url

    def _postgres_moved(self, direct_url: str) -> None:
        """Postgres came back on another port: the relay follows it; publish the new direct URL."""
        self.endpoints = replace(self.endpoints, database_direct_url=direct_url)
        self._write_info()

    @property
    def info_path(self) -> Path:
        return self.state_dir / INFO_NAME

    @property
    def secrets_path(self) -> Path:
        """The 0600 file with the real endpoints (passwords included), for programs."""
        return self.state_dir / SECRETS_NAME

    @property
    def env_path(self) -> Path:
        """The 0600 shell file exporting the real endpoints: `set -a; . <it>; set +a`."""
        return self.state_dir / ENV_NAME

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        env: Mapping[str, str] = os.environ,
        max_spans: int | None = None,
        max_bytes: int | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> Stack:
        """Start what `env` does not override; raise UsageError, StackAlreadyRunning, StackError.

        `max_spans` and `max_bytes` bound the trace store's memory (oldest spans dropped first);
        defaults `DRILLUI_TRACE_MAX_SPANS` or 50,000 and `DRILLUI_TRACE_MAX_BYTES` or 256 MiB. `on_event` hears, in one line, of a server that
        died (called from a watcher thread). On any failure, what was already started is
        stopped again before the error propagates.
        """
        if max_spans is None:
            max_spans = max_spans_setting(env)
        if max_bytes is None:
            max_bytes = max_bytes_setting(env)
        database_url = _override(env, DATABASE_URL)
        es_url = _override(env, ES_URL)
        jaeger_url = _override(env, JAEGER_URL)
        otlp_endpoint = _override(env, OTLP_ENDPOINT)

        state_dir = Path(state_dir).expanduser().absolute()
        # As root, postgres runs as its own system user, which must traverse to its data folder:
        # that user's group gets traversal (not listing) of the state folder, nobody else anything.
        owner = system_user() if database_url is None else None
        private_folder(state_dir, traverse_gid=owner[1] if owner is not None else None)
        lock = _acquire_lock(state_dir)
        # Undo steps, run newest first by stop(); each is added once its part has started (a
        # part that fails to start cleans up after itself). The last step releases the lock.
        stops: list[Callable[[], None]] = [lock.close]
        try:
            parts: list[Part] = []
            postgres: EmbeddedPostgres | None = None
            postgres_relay: TcpRelay | None = None
            database_direct_url = database_url
            if database_url is None:
                postgres = EmbeddedPostgres(state_dir / PG_DIR_NAME)
                began = time.monotonic()
                database_direct_url = postgres.start()
                stops.append(postgres.stop)
                postgres_relay = _start_relay(postgres.port, "postgres")
                stops.append(postgres_relay.stop)  # before the server: no client outlives it
                database_url = postgres.dsn(port=postgres_relay.port)
                detail = f"data {postgres.data_dir}, behind a relay (direct: {redact_url(database_direct_url)})"
                parts.append(Part("postgres", True, "embedded", time.monotonic() - began, detail))
            else:
                parts.append(Part("postgres", False, DATABASE_URL, 0.0))

            engine: EmbeddedEngine | None = None
            if es_url is None:
                engine = EmbeddedEngine()
                began = time.monotonic()
                es_url = engine.start()
                stops.append(engine.stop)
                detail = f"osmem {engine.version}, OpenSearch API {engine.api_version}, behind a relay"
                parts.append(Part("engine", True, "embedded", time.monotonic() - began, detail))
            else:
                parts.append(Part("engine", False, ES_URL, 0.0))

            trace_store: TraceStoreServer | None = None
            if jaeger_url is None and otlp_endpoint is None:
                trace_store = TraceStoreServer(host=HOST, port=0, max_spans=max_spans, max_bytes=max_bytes)
                began = time.monotonic()
                trace_store.start()
                stops.append(trace_store.stop)
                jaeger_url = otlp_endpoint = trace_store.url.rstrip("/")
                detail = f"keeps {max_spans} spans, at most {max_bytes // (1024 * 1024)} MiB"
                parts.append(Part("traces", True, "embedded", time.monotonic() - began, detail))
            else:
                given = [name for name, value in ((JAEGER_URL, jaeger_url), (OTLP_ENDPOINT, otlp_endpoint)) if value]
                missing = [name for name, value in ((JAEGER_URL, jaeger_url), (OTLP_ENDPOINT, otlp_endpoint)) if not value]
                jaeger_url = jaeger_url or DEFAULT_JAEGER_URL
                otlp_endpoint = otlp_endpoint or DEFAULT_OTLP_ENDPOINT
                detail = f"{missing[0]} not set: using a real Jaeger's usual address" if missing else ""
                parts.append(Part("traces", False, " + ".join(given), 0.0, detail))

            prometheus, prometheus_url, prometheus_part = _start_prometheus(state_dir, env)
            if prometheus is not None:
                stops.append(prometheus.stop)
            parts.append(prometheus_part)

            switch: EngineSwitch | None = LocalEngineSwitch(engine) if engine is not None else None
            managed = _Managed(postgres, postgres_relay, engine, trace_store, prometheus=prometheus,
                               prometheus_note="" if prometheus is not None else prometheus_part.detail)
            control = _ControlServer(switch, managed)
            stops.append(control.stop)
            watcher = _Watcher(managed, on_event)
            stops.append(watcher.stop)
            started_at = datetime.now(UTC).isoformat(timespec="seconds")
            assert database_direct_url is not None
            endpoints = Endpoints(database_url, es_url, otlp_endpoint, jaeger_url, database_direct_url, prometheus_url or "")
            stack = cls(
                state_dir=state_dir,
                endpoints=endpoints,
                parts=tuple(parts),
                postgres=postgres,
                engine=engine,
                trace_store=trace_store,
                prometheus=prometheus,
                control=control,
                started_at=started_at,
                stops=stops,
            )
            stops.append(stack._remove_info)
            managed.on_postgres_moved = stack._postgres_moved
            stack._write_info()
        except BaseException as exc:
            _run_stops(stops, "undoing a failed start", cause=exc)
            raise
        return stack

    @staticmethod
    def attach(state_dir: Path) -> RunningStack | None:
        """The live stack on `state_dir`, or None. A stale stack.json (dead owner) is removed."""
        state_dir = Path(state_dir).expanduser().absolute()
        info_path = state_dir / INFO_NAME
        if not info_path.exists():
            return None
        if not _lock_is_held(state_dir):
            # Nobody holds the lock, so nobody can be writing stack.json: it is a leftover of a
            # stack whose owner was killed. (_lock_is_held held the lock while it looked.)
            return None
        info = _read_info(info_path)
        if info is None or not pid_alive(int(info["pid"])):
            return None
        secrets = _read_info(state_dir / SECRETS_NAME)
        if secrets is None or secrets.get("pid") != info["pid"]:
            raise StackError(
                f"the stack on {state_dir} (pid {info['pid']}) has no {SECRETS_NAME} of its own",
                hint="it was started by an older drillui: restart it",
            )
        control_url = str(info["control_url"])
        return RunningStack(
            state_dir=state_dir,
            pid=int(info["pid"]),
            started_at=str(info["started_at"]),
            control_url=control_url,
            endpoints=Endpoints.from_json(secrets["endpoints"]),
            engine_switch=RemoteEngineSwitch(control_url) if info.get("engine_managed") else None,
            postgres_switch=RemotePostgresSwitch(control_url) if info.get("postgres_managed") else None,
            prometheus_targets=Path(info["prometheus_targets"]) if info.get("prometheus_targets") else None,
            prometheus_note=str(info.get("prometheus_note") or ""),
        )

    def stop(self) -> None:
        """Stop everything this stack started, newest first; release the lock. Idempotent."""
        stops, self._stops = self._stops, []
        _run_stops(stops, "stopping the stack")

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Stack({str(self.state_dir)!r}, pid {self.pid}, {self.endpoints!r})"

    def summary(self) -> dict[str, Any]:
        """What `stack up --json` prints: redacted endpoints and where the real ones are."""
        return {**self.endpoints.redacted().to_json(), "secrets_file": str(self.secrets_path), "env_file": str(self.env_path)}

    def _write_info(self) -> None:
        # The secrets first: a reader that finds stack.json must find the secrets file too.
        secrets = {"pid": self.pid, "endpoints": self.endpoints.to_json()}
        write_private(self.secrets_path, json.dumps(secrets, indent=2) + "\n")
        write_private(self.env_path, _env_file(self.endpoints))
        info = {
            "pid": self.pid,
            "started_at": self.started_at,
            "state_dir": str(self.state_dir),
            "control_url": self.control_url,
            "endpoints": self.endpoints.redacted().to_json(),
            "secrets_file": str(self.secrets_path),
            "env_file": str(self.env_path),
            "engine_managed": self.engine is not None,
            "postgres_managed": self.postgres is not None,
            "prometheus_targets": str(self.prometheus.targets_dir) if self.prometheus is not None else None,
            "prometheus_note": self._control.managed.prometheus_note,
            "parts": [asdict(part) for part in self.parts],
        }
        write_private(self.info_path, json.dumps(info, indent=2) + "\n")

    def _remove_info(self) -> None:
        self.info_path.unlink(missing_ok=True)
        self.secrets_path.unlink(missing_ok=True)
        self.env_path.unlink(missing_ok=True)


def _env_file(endpoints: Endpoints) -> str:
    """A shell file setting the four variables (quoted: a password may hold any character)."""
    values = {
        DATABASE_URL: endpoints.database_url,
        ES_URL: endpoints.es_url,
        OTLP_ENDPOINT: endpoints.otlp_endpoint,
        JAEGER_URL: endpoints.jaeger_url,
    }
    lines = ["# Written by `drillui stack up`; gone when the stack stops. Use: set -a; . <this file>; set +a"]
    if endpoints.prometheus_url:
        values[PROMETHEUS_URL] = endpoints.prometheus_url
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    lines.append("# Postgres itself, not through the relay a drill can close:")
    lines.append(f"DRILLUI_DATABASE_DIRECT_URL={shlex.quote(endpoints.database_direct_url)}")
    return "\n".join(lines) + "\n"


def _start_prometheus(state_dir: Path, env: Mapping[str, str]) -> tuple[EmbeddedPrometheus | None, str | None, Part]:
    """The stack's Prometheus, when a binary is installed and `PROMETHEUS_URL` names none.

    Optional by design: without a binary, or when it fails to start, the stack runs without it
    (the part says why and how to get it) and the drills scrape each worker's /metrics directly.
    """
    given = _override(env, PROMETHEUS_URL)
    if given is not None:
        return None, given, Part("prometheus", False, PROMETHEUS_URL, 0.0,
                                 "your Prometheus: it must scrape the drill workers itself")
    binary, why = find_binary(env)
    fallback = "drills scrape each worker's /metrics directly"
    if binary is None:
        return None, None, Part("prometheus", False, "absent", 0.0, f"not running: {why}; {fallback}")
    server = EmbeddedPrometheus(state_dir / PROMETHEUS_DIR_NAME, binary)
    began = time.monotonic()
    try:
        url = server.start()
    except StackError as exc:
        return None, None, Part("prometheus", False, "failed", 0.0, f"not running: {binary} did not start: {exc}; {fallback}")
    detail = f"prometheus {server.version or '?'} ({binary}), scrapes the drill workers every second, data in {server.folder}"
    return server, url, Part("prometheus", True, "embedded", time.monotonic() - began, detail)


def _start_relay(backend_port: int, name: str) -> TcpRelay:
    relay = TcpRelay((HOST, backend_port), name=name)
    try:
        relay.bind_first()
    except BaseException:
        relay.discard()
        raise
    relay.start()
    return relay


def _run_stops(stops: list[Callable[[], None]], doing: str, cause: BaseException | None = None) -> None:
    """Run undo steps newest first; each runs even if an earlier one failed."""
    errors: list[Exception] = []
    for stop in reversed(stops):
        try:
            stop()
        except Exception as exc:  # collected and reported below, after the other steps ran
            errors.append(exc)
    if not errors:
        return
    message = f"{doing}: " + "; ".join(str(error) for error in errors)
    if cause is not None:
        # The original failure is what the user must see; the cleanup trouble rides along.
        cause.add_note(message)
        return
    raise StackError(message) from errors[0]


# -- environment overrides ---------------------------------------------------------------------


def _override(env: Mapping[str, str], name: str) -> str | None:
    """The validated value of an override variable, or None when it is unset or empty."""
    value = env.get(name, "").strip()
    if not value:
        return None
    schemes = _SCHEMES[name]
    shown = _redact(value)
    example = f"{name}={_EXAMPLES[name]}"
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise UsageError(f"{name}={shown} is not a {schemes[0]}:// URL", hint=f"e.g. {example}")
    if not parts.hostname:
        raise UsageError(f"{name}={shown} has no host", hint=f"e.g. {example}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    else:
        if port is None:
            return value.rstrip("/")
    if not 1 <= port <= 65535:
        raise UsageError(f"{name}={shown} has a bad port (not in 1..65535)", hint=f"e.g. {example}")
    return value.rstrip("/")


def _redact(url: str) -> str:
    """The URL with its password hidden, fit for an error message."""
    return redact_url(url)


# -- single instance and stack.json ----------------------------------------------------------


def _acquire_lock(state_dir: Path) -> IO[str]:
    """Take `stack.lock` for this process's life (released when the file is closed or we die)."""
    path = state_dir / LOCK_NAME
    lock = os.fdopen(open_private(path), "a+", encoding="utf-8")  # held open for the stack's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise StackAlreadyRunning(_already_running(state_dir, holder)) from None
    # The pid goes in the lock file too: stack.json does not exist yet while we start up.
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _already_running(state_dir: Path, lock_pid: str) -> str:
    info = _read_info(state_dir / INFO_NAME)
    pid = str(info["pid"]) if info else (lock_pid or "?")
    since = f", started at {info['started_at']}" if info else ", starting up"
    return (
        f"a stack is already running on {state_dir} (pid {pid}{since}): use it, "
        f"or stop it with Ctrl-C in its terminal / kill {pid}"
    )


def _lock_is_held(state_dir: Path) -> bool:
    """Whether a live process holds stack.lock; when none does, clean its stale stack.json."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return False
    with open(path, encoding="utf-8") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        # We hold the lock for a moment: no stack can be starting, so the cleanup is race-free.
        for name in (INFO_NAME, SECRETS_NAME, ENV_NAME):
            (state_dir / name).unlink(missing_ok=True)
        fcntl.flock(probe, fcntl.LOCK_UN)
    return False


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{path} is not valid JSON ({exc})", hint="remove it if no stack runs") from exc
    return data if isinstance(data, dict) else None


# -- control server ----------------------------------------------------------------------------

_CONTROL_BODY_LIMIT: Final = 64 * 1024
"""Control requests carry at most a small JSON object."""


class _ControlServer:
    """`/engine`, `/engine/down`, `/engine/up`, `/health` on 127.0.0.1:<free port>, in a thread.

    Only this machine's own, deliberate requests are served (see httpguard): a loopback Host, no
    foreign Origin, and for a state change a JSON body or the `X-Drillui-Control` header.
    """

    def __init__(self, switch: EngineSwitch | None, managed: _Managed) -> None:
        self.switch = switch
        self.managed = managed
        # One request at a time changes reachability: down/up from two clients must not interleave.
        self.switch_lock = threading.Lock()
        self._server = _ControlHTTPServer((HOST, 0), _ControlHandler, self)
        # A short poll interval: shutdown() waits up to one interval, and stop must be quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stack-control", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def engine_state(self) -> dict[str, Any]:
        if self.switch is None:
            # Not ours to switch; as far as this stack knows, it is up.
            return {"reachable": True, "managed": False}
        engine = self.managed.engine
        latency = engine.latency if engine is not None else 0.0
        return {"reachable": self.switch.reachable(), "managed": self.switch.managed, "latency_s": latency}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


class _ControlHTTPServer(LoopbackHTTPServer):
    max_connections = 16

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        control: _ControlServer,
    ) -> None:
        self.control = control
        super().__init__(address, handler, name="stack control server")


class _ControlHandler(BaseHTTPRequestHandler):
    server: _ControlHTTPServer
    # A client that connects and sends nothing must not hold a thread for ever.
    timeout = 10

    def setup(self) -> None:
        super().setup()
        set_nodelay(self.connection)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            check_browser_headers(self.headers, self.server.server_port, self.request_version)
            if self.headers.get("Transfer-Encoding"):
                raise BadRequest(411, "send the body with a Content-Length")
            length = content_length(self.headers, _CONTROL_BODY_LIMIT) or 0
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            routes = _CONTROL_ROUTES.get(path)
            if routes is None:
                raise BadRequest(404, f"no such path {path[:100]}")
            action = routes.get(method)
            if action is None:
                raise BadRequest(405, f"{method} is not allowed on {path} (use {', '.join(routes)})")
            args: dict[str, Any] = {}
            if method != "GET":
                check_deliberate(self.headers)
                args = _json_object(self.headers, body)
            status, answer = action(self.server.control, args)
        except BadRequest as exc:
            self.close_connection = True
            self._reply(exc.status, {"error": exc.reason})
            return
        self._reply(status, answer)

    def _reply(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Silenced: the default writes every request to stderr, the `stack up` terminal."""


def _json_object(headers: Message, body: bytes) -> dict[str, Any]:
    """The request's JSON object (an empty body counts as `{}`); BadRequest when it is not one."""
    media_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if not body.strip() or media_type != "application/json":
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(400, "the body must be a JSON object")
    return value


_Answer = tuple[int, Mapping[str, Any]]
_Action = Callable[[_ControlServer, Mapping[str, Any]], _Answer]
_NOT_MANAGED: Final[Mapping[str, str]] = {
    "engine": "the engine comes from ES_URL and is not managed by this stack",
    "postgres": "Postgres comes from DATABASE_URL and is not managed by this stack",
}


def _health(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
    report = control.managed.health()
    return (HTTPStatus.OK if report["ok"] else HTTPStatus.SERVICE_UNAVAILABLE), report


def _engine(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
    return HTTPStatus.OK, control.engine_state()


def _engine_switch(reachable: bool) -> _Action:
    def act(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
        if control.switch is None:
            return HTTPStatus.CONFLICT, {"error": _NOT_MANAGED["engine"]}
        try:
            with control.switch_lock:
                control.switch.set_reachable(reachable)
        except StackError as exc:
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        return HTTPStatus.OK, control.engine_state()

    return act


def _engine_latency(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
    engine = control.managed.engine
    if engine is None:
        return HTTPStatus.CONFLICT, {"error": _NOT_MANAGED["engine"]}
    seconds = args.get("seconds")
    try:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f'give {{"seconds": <a number from 0 to 3600>}}, not {json.dumps(seconds)[:60]}')
        with control.switch_lock:
            engine.set_latency(float(seconds))
    except ValueError as exc:
        return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
    except StackError as exc:
        return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
    return HTTPStatus.OK, control.engine_state()


def _postgres(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
    return HTTPStatus.OK, control.managed.postgres_state()


def _postgres_switch(reachable: bool) -> _Action:
    def act(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
        relay = control.managed.postgres_relay
        if relay is None:
            return HTTPStatus.CONFLICT, {"error": _NOT_MANAGED["postgres"]}
        try:
            with control.switch_lock:
                relay.set_reachable(reachable)
        except StackError as exc:
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        return HTTPStatus.OK, control.managed.postgres_state()

    return act


def _postgres_restart(control: _ControlServer, args: Mapping[str, Any]) -> _Answer:
    if control.managed.postgres is None:
        return HTTPStatus.CONFLICT, {"error": _NOT_MANAGED["postgres"]}
    try:
        with control.switch_lock:
            control.managed.restart_postgres()
    except StackError as exc:
        return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
    return HTTPStatus.OK, control.managed.postgres_state()


_CONTROL_ROUTES: Final[Mapping[str, Mapping[str, _Action]]] = {
    "/health": {"GET": _health},
    "/engine": {"GET": _engine},
    "/engine/down": {"POST": _engine_switch(False)},
    "/engine/up": {"POST": _engine_switch(True)},
    "/engine/latency": {"POST": _engine_latency},
    "/postgres": {"GET": _postgres},
    "/postgres/down": {"POST": _postgres_switch(False)},
    "/postgres/up": {"POST": _postgres_switch(True)},
    "/postgres/restart": {"POST": _postgres_restart},
}


# -- the parts' health, and a watcher that notices deaths ----------------------------------------

_PART_VARIABLES: Final[Mapping[str, str]] = {"postgres": DATABASE_URL, "engine": ES_URL, "traces": JAEGER_URL,
                                             "prometheus": PROMETHEUS_URL}
_WATCH_INTERVAL_S: Final = 0.5


@dataclass
class _Managed:
    """The servers this stack started; None for a part taken from the environment."""

    postgres: EmbeddedPostgres | None
    postgres_relay: TcpRelay | None
    engine: EmbeddedEngine | None
    trace_store: TraceStoreServer | None
    on_postgres_moved: Callable[[str], None] | None = None
    prometheus: EmbeddedPrometheus | None = None
    prometheus_note: str = ""
    """Why the stack runs no Prometheus of its own (absent, turned off, PROMETHEUS_URL given)."""
    """Told the new direct URL when a restarted Postgres had to take another port."""

    def restart_postgres(self) -> None:
        """Restart Postgres (reaping a dead one first); the relay follows it to its port."""
        if self.postgres is None:
            raise StackError(_NOT_MANAGED["postgres"])
        before = self.postgres.port if self.postgres.running else None
        direct = self.postgres.restart()
        port = self.postgres.port
        if self.postgres_relay is not None:
            self.postgres_relay.set_backend((HOST, port))
        if before != port and self.on_postgres_moved is not None:
            self.on_postgres_moved(direct)

    def postgres_state(self) -> dict[str, Any]:
        state = self.part_health("postgres")
        if self.postgres_relay is not None:
            state["reachable"] = self.postgres_relay.reachable
        else:
            state["reachable"] = True  # not ours to switch; as far as this stack knows, it is up
        return state

    def _server(self, name: str) -> EmbeddedPostgres | EmbeddedEngine | TraceStoreServer | EmbeddedPrometheus | None:
        return {"postgres": self.postgres, "engine": self.engine, "traces": self.trace_store, "prometheus": self.prometheus}[name]

    def part_health(self, name: str) -> dict[str, Any]:
        server = self._server(name)
        if server is None and name == "prometheus":
            # Optional: no Prometheus is no fault of the stack (drills scrape /metrics directly).
            return {"managed": False, "ok": None, "detail": self.prometheus_note or "not running"}
        if server is None:
            # Someone else's server: the doctor checks it; the stack claims nothing about it.
            return {"managed": False, "ok": None, "detail": f"from {_PART_VARIABLES[name]}, not checked by the stack"}
        ok, detail = server.health()
        if name == "postgres" and self.postgres_relay is not None:
            relay = self.postgres_relay
            state = "open" if relay.reachable else "closed on purpose (switched off by a drill)"
            detail += f"; the relay at {HOST}:{relay.port} is {state}"
        return {"managed": True, "ok": ok, "detail": detail}

    def health(self) -> dict[str, Any]:
        """Every managed part checked for real (a query, an HTTP answer), not just "this process lives"."""
        parts = {name: self.part_health(name) for name in _PART_VARIABLES}
        return {"ok": all(part["ok"] is not False for part in parts.values()), "pid": os.getpid(), "parts": parts}


class _Watcher:
    """Reaps a managed server that died, within half a second, and says so once.

    Without it a killed postmaster stays a zombie: its pid still answers signals, so a new
    postgres refuses to start ("postmaster.pid already exists"), and nobody is told.
    """

    def __init__(self, managed: _Managed, on_event: Callable[[str], None] | None) -> None:
        self._managed = managed
        self._on_event = on_event
        self._stop = threading.Event()
        self._engine_reported = False
        self._prometheus_reported = False
        self._thread = threading.Thread(target=self._run, name="stack-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _say(self, message: str) -> None:
        if self._on_event is not None:
            self._on_event(message)

    def _run(self) -> None:
        while not self._stop.wait(_WATCH_INTERVAL_S):
            postgres, engine = self._managed.postgres, self._managed.engine
            if postgres is not None:
                code = postgres.reap()
                if code is not None:
                    self._say(
                        f"postgres (pid {postgres.last_pid}) exited: {describe_exit(code)}; restart it with "
                        f"POST /postgres/restart on the control server, or restart the stack"
                    )
            prometheus = self._managed.prometheus
            if prometheus is not None and not self._prometheus_reported:
                code = prometheus.reap()
                if code is not None:
                    self._prometheus_reported = True
                    self._say(f"prometheus exited: {describe_exit(code)}; PromQL is unavailable until the stack restarts "
                              f"(log: {prometheus.log_path})")
            if engine is not None and not self._engine_reported:
                code = engine.reap()
                if code is not None:
                    self._engine_reported = True
                    self._say(f"osmem exited: {describe_exit(code)}; its data is gone, restart the stack")
