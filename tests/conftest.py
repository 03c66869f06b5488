"""Shared fixtures: the real embedded servers, started once per session, cleaned per test.

Tests run against the same servers the tool uses (a real PostgreSQL, osmem behind its relay, the
embedded trace store): one of each per session, since starting them is the slow part, and each
test gets fresh state cheaply: a database cloned from a per-session template (with the worker's
schema already in it), a unique index name, and the engine made reachable again after it.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from drillui.stack.engine import EmbeddedEngine
from drillui.stack.postgres import EmbeddedPostgres
from drillui.stack.relay import TcpRelay
from drillui.stack.tracestore import TraceStoreServer

TEMPLATE_DB = "drillui_template"

# Test data is disposable: durability settings off make every CREATE DATABASE and commit cheap.
_FAST_PG_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL for the session, on 127.0.0.1.

    Its data lives outside pytest's basetemp on purpose: pytest prunes old basetemp folders when
    a newer session starts, and Postgres shuts itself down when its postmaster.pid vanishes, so
    two test sessions on one machine would otherwise kill each other's server.
    """
    folder = Path(tempfile.mkdtemp(prefix="drillui-test-pg-"))
    server = EmbeddedPostgres(folder / "data", settings=_FAST_PG_SETTINGS)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _schema_hook() -> Callable[[psycopg.Connection[Any]], None] | None:
    """`worker.db.ensure_schema` if the worker has it yet (it is written in parallel)."""
    if importlib.util.find_spec("worker.db") is None:
        return None
    module = importlib.import_module("worker.db")
    hook = getattr(module, "ensure_schema", None)
    return hook if callable(hook) else None


@pytest.fixture(scope="session")
def template_db(pg: EmbeddedPostgres) -> str:
    """Name of the session's template database, with the worker's schema when available."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    ensure_schema = _schema_hook()
    if ensure_schema is not None:
        with psycopg.connect(pg.dsn(TEMPLATE_DB), autocommit=True) as conn:
            ensure_schema(conn)
    # Closed by now: CREATE DATABASE ... TEMPLATE refuses a template with open connections.
    return TEMPLATE_DB


@pytest.fixture
def db_url(pg: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """DSN of a fresh database for this test, cloned from the template; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield pg.dsn(name)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        # FORCE: a worker the test started may still hold a connection.
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine() -> Iterator[EmbeddedEngine]:
    """One embedded search engine (osmem behind its relay) for the session."""
    server = EmbeddedEngine()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def es_url(engine: EmbeddedEngine) -> Iterator[str]:
    """The engine's URL (the relay); reachable at the start, made reachable again at the end."""
    assert engine.reachable, "a previous test left the engine unreachable"
    yield engine.url
    if not engine.reachable:
        engine.set_reachable(True)


@pytest.fixture
def es_index(engine: EmbeddedEngine) -> Iterator[str]:
    """A unique index name for this test; the index is deleted afterwards if it was created."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    # Straight to osmem (not through the relay, which a test may have left down): memory is
    # the session's, so indices must not pile up.
    response = httpx.delete(f"{engine.backend_url}/{name}", trust_env=False, timeout=10.0)
    assert response.status_code in (200, 404), response.text


@pytest.fixture(scope="session")
def trace_store() -> Iterator[TraceStoreServer]:
    """One embedded trace store (OTLP in, Jaeger API out) for the session."""
    server = TraceStoreServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_relay(pg: EmbeddedPostgres) -> Iterator[TcpRelay]:
    """A loopback relay in front of the session's Postgres, as the stack puts one (drills close it)."""
    relay = TcpRelay(("127.0.0.1", pg.port), name="postgres")
    relay.bind_first()
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture
def drill_infra(db_url: str, es_url: str, engine: EmbeddedEngine, trace_store: TraceStoreServer, pg: EmbeddedPostgres,
                pg_relay: TcpRelay) -> Iterator[Any]:
    """An Infrastructure for the drill runner on the session's servers and a fresh database: the
    workers reach Postgres through the relay, the runner directly, as on the embedded stack."""
    from drillui.runner.infra import Infrastructure
    from drillui.stack.stack import Endpoints, LocalEngineSwitch, LocalPostgresSwitch

    assert pg_relay.reachable, "a previous test left the Postgres relay closed"
    url = trace_store.url.rstrip("/")
    workers_db = pg.dsn(urlsplit(db_url).path.lstrip("/"), port=pg_relay.port)
    yield Infrastructure(Endpoints(workers_db, es_url, url, url, db_url), LocalEngineSwitch(engine), "test",
                         postgres=LocalPostgresSwitch(pg_relay))
    if not pg_relay.reachable:
        pg_relay.set_reachable(True)
    if engine.latency:
        engine.set_latency(0)
