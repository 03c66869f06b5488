"""Where a drill runs: a stack already up on the state folder, or one started for the run.

`drillui run` prefers a stack that `drillui stack up` (or the dashboard) already runs on the same
state folder, and drives its engine through that stack's control endpoint; otherwise it starts
the embedded stack for the duration of the run and stops it afterwards. Environment overrides
(DATABASE_URL, ES_URL, JAEGER_URL, OTEL_EXPORTER_OTLP_ENDPOINT) point at real servers instead.

`DRILLUI_INFRA=docker` (the `--infra docker` flag) uses `docker-compose.infra.yml` instead: its
published addresses (each overridable by the same variables), and "engine down" stops and starts
the engine's container through the Docker Engine API. Nothing is started or stopped here: the
user runs `docker compose` and the drills are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from drillui import http
from drillui.errors import UsageError
from drillui.faults.base import EngineSwitch, PostgresSwitch
from drillui.settings import DrillSettings
from drillui.stack.stack import Endpoints, Stack, default_state_dir

INFRA_ENV = "DRILLUI_INFRA"
INFRA_CHOICES = ("embedded", "docker")


@dataclass
class Infrastructure:
    endpoints: Endpoints
    engine: EngineSwitch | None
    mode: str
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    """The environment drillui was started with (workers inherit what is not a worker setting);
    None: this process's, read once by `DrillSettings`."""
    prometheus_targets: Path | None = None
    """The stack's own Prometheus reads its targets here (file_sd): the runner lists its workers
    in it. None: no Prometheus of the stack's (none at all, yours, or the compose one)."""
    prometheus_note: str = ""
    """Why there is no Prometheus (`endpoints.prometheus_url` empty), and how to get one."""
    postgres: PostgresSwitch | None = None
    """The relay in front of the stack's own Postgres (None: Postgres is not the stack's)."""

    def base_environment(self) -> Mapping[str, str]:
        return self.environ if self.environ is not None else DrillSettings.build().environ

    def versions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            with http.client(timeout=2) as c:
                info = c.get(self.endpoints.es_url + "/").json()
            v = info.get("version", {})
            out["engine"] = f"{v.get('distribution', 'elasticsearch')} {v.get('number', '?')}"
            if info.get("cluster_name") == "osmem":
                out["engine"] += " (osmem)"
        except (httpx.HTTPError, ValueError) as exc:
            out["engine"] = f"unknown ({type(exc).__name__})"
        try:
            with psycopg.connect(self.endpoints.database_direct_url, connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                out["postgres"] = row[0] if row else "?"
        except psycopg.Error as exc:
            out["postgres"] = f"unknown ({type(exc).__name__})"
        return out


@contextmanager
def open_infrastructure(
    settings: DrillSettings | None = None,
    *,
    on_status: Callable[[str], None] | None = None,
) -> Iterator[Infrastructure]:
    settings = settings or DrillSettings.build()
    env = settings.environ
    state_dir = settings.state_dir
    say = on_status or (lambda m: None)
    if settings.infra == "docker":
        infra = docker_infrastructure(env, say)
        try:
            yield infra
        finally:
            # The switch holds a connection pool to the Docker engine once it has been used.
            close = getattr(infra.engine, "close", None)
            if close is not None:
                close()
        return
    folder = state_dir or default_state_dir(env)
    running = Stack.attach(folder)
    if running is not None:
        say(f"using the stack already running on {folder} (pid {running.pid})")
        yield Infrastructure(running.endpoints, running.engine_switch, f"embedded stack pid {running.pid}", env,
                             running.prometheus_targets, running.prometheus_note, running.postgres_switch)
        return
    began = time.monotonic()
    say(f"starting the embedded stack in {folder}")
    stack = Stack.start(folder, env=env)
    try:
        for part in stack.parts:
            if part.source in ("absent", "failed"):
                say(f"{part.name}: {part.detail}")  # an optional part (Prometheus) that does not run, and why
                continue
            how = f"started in {part.seconds:.1f}s" if part.started else f"from {part.source}"
            say(f"{part.name}: {how}{' (' + part.detail + ')' if part.detail else ''}")
        say(f"stack ready in {time.monotonic() - began:.1f}s")
        # Prometheus is optional: without it the stack is still the embedded one.
        mode = ("embedded (started for this run)" if all(p.started for p in stack.parts if p.name != "prometheus")
                else "mixed (environment overrides)")
        note = next((p.detail for p in stack.parts if p.name == "prometheus" and not stack.endpoints.prometheus_url), "")
        yield Infrastructure(stack.endpoints, stack.engine_switch, mode, env,
                             stack.prometheus.targets_dir if stack.prometheus is not None else None, note,
                             stack.postgres_switch)
    finally:
        stack.stop()
        say("stack stopped")


def infra_choice(env: Mapping[str, str]) -> str:
    """`embedded` (the default) or `docker`, from `DRILLUI_INFRA`; anything else is a UsageError."""
    value = env.get(INFRA_ENV, "").strip().lower() or "embedded"
    if value not in INFRA_CHOICES:
        raise UsageError(f"{INFRA_ENV}={value} is not one of {', '.join(INFRA_CHOICES)}", hint=f"e.g. {INFRA_ENV}=docker")
    return value


def docker_infrastructure(env: Mapping[str, str], say: Callable[[str], None]) -> Infrastructure:
    """The compose file's servers; the engine switch finds its container on first use."""
    # Imported here: the docker SDK is only needed by those who choose the docker stack.
    from drillui.stack.docker import DockerEngineSwitch, compose_endpoints, compose_project

    endpoints = compose_endpoints(env)
    switch = DockerEngineSwitch.from_env(endpoints.es_url, env)
    project = compose_project(env)
    say(f"using the docker infrastructure (compose project {project}): engine {endpoints.es_url}, Jaeger {endpoints.jaeger_url}")
    return Infrastructure(endpoints, switch, f"docker (compose project {project})", env)
