"""Checks of the infrastructure itself: Postgres, the search engine, and a drill's leftovers.

Why it exists: a drill proves nothing when a server is down or still in a previous drill's state
(the engine switched off, an index write-blocked, outbox rows stuck in `processing`); these checks
run first, and the checks that need a server skip when it does not answer.
"""

from __future__ import annotations

import json
from typing import Final

import httpx
import psycopg
from psycopg import errors as pg_errors

from drillui.doctor.model import (
    COMPOSE,
    DoctorCheck,
    DoctorContext,
    failed,
    first_line,
    http_error,
    json_dict,
    passed,
    redact,
    skipped,
    snippet,
)
from drillui.errors import StackError

# Elasticsearch/OpenSearch settings that refuse writes; the disk flood stage sets the last one.
_WRITE_BLOCKS: Final = ("index.blocks.write", "index.blocks.read_only", "index.blocks.read_only_allow_delete")


def check_postgres(ctx: DoctorContext) -> DoctorCheck:
    """Postgres answers a query on DATABASE_URL."""
    name = "postgres.reachable"
    url = ctx.inputs.endpoints.database_url
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(ctx.inputs.timeout)), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return failed(name, f"Postgres at {redact(url)} does not answer: {first_line(exc)}", ctx.fix_start("postgres"))
    return passed(name, f"PostgreSQL {row[0] if row else '?'} at {redact(url)}")


def check_engine(ctx: DoctorContext) -> DoctorCheck:
    """The search engine's root answers with its version."""
    name = "engine.reachable"
    url = ctx.inputs.endpoints.es_url
    try:
        response = ctx.http.get(f"{url}/")
    except httpx.HTTPError as exc:
        fix = ctx.fix_start("es")
        if ctx.inputs.control_url and ctx.inputs.infra == "embedded":
            # The usual cause on the embedded stack: a drill was interrupted with the engine off.
            fix = f"a drill may have left the engine switched off: curl -X POST -H 'X-Drillui-Control: 1' {ctx.inputs.control_url}/engine/up; else {fix}"
        return failed(name, f"the engine at {url} does not answer: {http_error(exc)}", fix)
    if response.status_code != 200:
        return failed(name, f"the engine at {url} answers HTTP {response.status_code}: {snippet(response.text)}", ctx.fix_start("es"))
    version = json_dict(response).get("version") or {}
    return passed(name, f"{version.get('distribution', 'elasticsearch')} {version.get('number', '?')} at {url}")


def check_docker_engine_switch(ctx: DoctorContext) -> DoctorCheck:
    """On the docker stack: the Docker engine answers and the `es` container can be found, so
    drill A can stop and start it."""
    name = "docker.es_container"
    if ctx.inputs.infra != "docker":
        return skipped(name, "embedded stack: the engine is switched by the stack itself")
    # Imported here: the docker SDK is only needed on the docker stack.
    from drillui.stack.docker import DockerEngineSwitch

    with DockerEngineSwitch.from_env(ctx.inputs.endpoints.es_url, ctx.inputs.env) as switch:
        try:
            state = switch.status()
        except StackError as exc:
            return failed(name, exc.message, exc.hint or f"{COMPOSE} ps shows what runs")
    if state != "running":
        return failed(name, f"container {switch.container_name} is {state}", f"{COMPOSE} start {switch.service}")
    return passed(name, f"container {switch.container_name} is running; drill A can stop and start it")


def check_write_block(ctx: DoctorContext) -> DoctorCheck:
    """No index is left with a write block (drill C's fault, or the disk flood stage)."""
    name = "engine.write_block"
    if not ctx.result("engine.reachable", check_engine).ok:
        return skipped(name, "the engine does not answer (see engine.reachable)")
    url = ctx.inputs.endpoints.es_url
    index = ctx.inputs.index
    try:
        response = ctx.http.get(f"{url}/{index}/_settings/index.blocks.*", params={"flat_settings": "true"})
    except httpx.HTTPError as exc:
        return failed(name, f"GET {url}/{index}/_settings: {http_error(exc)}", ctx.fix_start("es"))
    if response.status_code == 404:
        return passed(name, f"no index {index} yet")
    if response.status_code != 200:
        return failed(
            name,
            f"GET {url}/{index}/_settings answers HTTP {response.status_code}: {snippet(response.text)}",
            "check that ES_URL is the Elasticsearch/OpenSearch the workers write to, and --index a valid index or pattern",
        )
    blocked: dict[str, list[str]] = {}
    for idx, body in sorted(json_dict(response).items()):
        settings = (body or {}).get("settings") or {}
        on = [key for key in _WRITE_BLOCKS if str(settings.get(key, "")).lower() == "true"]
        if on:
            blocked[idx] = on
    if not blocked:
        return passed(name, f"no write block on {index}")
    shown = "; ".join(f"{idx}: {', '.join(keys)}" for idx, keys in blocked.items())
    first, keys = next(iter(blocked.items()))
    body = json.dumps({key: False for key in keys})
    fix = f"curl -X PUT '{url}/{first}/_settings' -H 'Content-Type: application/json' -d '{body}'"
    if len(blocked) > 1:
        fix += f"   (and the same for the {len(blocked) - 1} other(s))"
    return failed(name, f"writes are refused (403) on {len(blocked)} index(es): {shown}", fix)


def check_stuck_rows(ctx: DoctorContext) -> DoctorCheck:
    """No outbox row is `processing` under a lease that has ended (nobody is working on it)."""
    name = "outbox.stuck"
    if not ctx.result("postgres.reachable", check_postgres).ok:
        return skipped(name, "Postgres does not answer (see postgres.reachable)")
    url = ctx.inputs.endpoints.database_url
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(ctx.inputs.timeout)), autocommit=True) as conn:
            rows = conn.execute(
                # The same rule as the worker's gauge outbox_stuck_processing_events; a row with
                # no lease at all can never be reclaimed, so it counts too.
                "SELECT projection, count(*) AS n, min(lease_until) AS lease_ended, "
                "count(*) FILTER (WHERE lease_until IS NULL) AS no_lease, "
                "string_agg(DISTINCT coalesce(claimed_by, '?'), ', ') AS owners "
                "FROM outbox WHERE status = 'processing' AND (lease_until < now() OR lease_until IS NULL) "
                "GROUP BY projection ORDER BY projection"
            ).fetchall()
    except pg_errors.UndefinedTable:
        return passed(name, "no outbox table yet (no worker has run on this database)")
    except psycopg.Error as exc:
        return failed(name, f"cannot read the outbox: {first_line(exc)}", "check that DATABASE_URL is the workers' database and its user may read the outbox")
    if not rows:
        return passed(name, "no row is stuck in processing with an expired lease")
    parts = []
    for projection, n, lease_ended, no_lease, owners in rows:
        since = f", lease ended {lease_ended:%Y-%m-%d %H:%M:%S %Z}" if lease_ended is not None else ""
        extra = f", {no_lease} without a lease" if no_lease else ""
        parts.append(f"{projection}: {n} row(s){since}{extra}, held by {owners}")
    fix = (
        "start a worker for that projection (it takes expired leases back first, outbox.reclaim), or requeue them: "
        "UPDATE outbox SET status='pending', claimed_by=NULL, lease_until=NULL, next_attempt_at=now() "
        "WHERE status='processing' AND (lease_until < now() OR lease_until IS NULL);"
    )
    return failed(name, "rows stuck in processing: " + "; ".join(parts), fix)
