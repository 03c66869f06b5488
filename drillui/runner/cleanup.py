"""What a drill may leave behind, how to see it, and how to put it right.

A run reverts its own fault, but a run can be killed halfway (Ctrl-C twice, SIGKILL, a laptop
lid). The next run then checks for dirt first and refuses to start on it, naming each problem;
`drillui clean` (or `run --force-clean`) puts every one of them right. Only what drills made is
touched: rows whose correlation_id starts with `drillui:`, indices named `drillui-*`, worker
processes started with DRILLUI_RUN_ID in their environment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from drillui import http
from drillui.errors import DrillError
from drillui.faults.base import LatencySwitch, probe_engine
from drillui.runner.infra import Infrastructure
from worker.db import connect, ensure_schema

DRILL_CORRELATION_PREFIX = "drillui:"
RUN_ENV_MARK = "DRILLUI_RUN_ID"
OWNER_ENV_MARK = "DRILLUI_OWNER_PID"
INDEX_PREFIX = "drillui-"
# One advisory lock, per database, held by a running drill for its whole run (and by `clean`
# while it cleans): a second drill, or a clean, on the same outbox is refused instead of
# deleting the rows and reopening the engine of the drill in progress. Session-level, so a
# runner that dies releases it with its connection.
RUN_LOCK_KEY = 0x6472696C6C7569  # "drillui"
APP_NAME_PREFIX = "drillui run "


class RunRefused(DrillError):
    """A run that must not start (another drill running, a dirty environment): no folder is left."""

    title = "Drill refused"
    exit_code = 4


class DrillInProgress(RunRefused):
    title = "A drill is running"


def run_lock_holders(conn: psycopg.Connection[Any]) -> list[str]:
    """What holds the run lock on this database, as the holders named themselves."""
    rows = conn.execute(
        "SELECT a.application_name AS name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        (RUN_LOCK_KEY >> 32, RUN_LOCK_KEY & 0xFFFFFFFF),
    ).fetchall()
    return [str(r["name"] or f"backend pid {r['pid']}") for r in rows]


def acquire_run_lock(conn: psycopg.Connection[Any], who: str, *, doing: str) -> None:
    """Take the run lock on `conn` (released when it closes), or refuse naming who holds it."""
    conn.execute("SELECT set_config('application_name', %s, false)", (who[:63],))
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (RUN_LOCK_KEY,)).fetchone()
    if row and row["ok"]:
        return
    holders = "; ".join(h.removeprefix(APP_NAME_PREFIX) for h in run_lock_holders(conn)) or "another drillui process"
    raise DrillInProgress(f"cannot {doing}: a drill is running on this outbox ({holders})",
                          hint="stop it first (s in its dashboard, Ctrl+C in its terminal), or wait for it to end")


@dataclass(frozen=True)
class Dirt:
    what: str
    fix: str


def leftover_workers() -> list[psutil.Process]:
    """Worker processes a drill started whose drill process is gone.

    Another drill running at the same time (a second terminal, the dashboard) owns live workers:
    those are not dirt. Only workers whose owning drillui process has died are.
    """
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "-m" not in cmd or "worker" not in cmd:
            continue
        try:
            env = proc.environ()
            # Without the owner mark (an older drillui), the parent is the owner; an orphan is
            # re-parented to init.
            owner = env.get(OWNER_ENV_MARK) or str(proc.ppid())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        alive = owner.isdigit() and int(owner) > 1 and psutil.pid_exists(int(owner))
        if RUN_ENV_MARK in env and not alive:
            found.append(proc)
    return found


def blocked_indices(es_url: str) -> list[str]:
    try:
        with http.client(timeout=5) as c:
            resp = c.get(f"{es_url}/{INDEX_PREFIX}*/_settings")
    except httpx.HTTPError:
        return []
    if resp.status_code != 200:
        return []
    out: list[str] = []
    for name, body in resp.json().items():
        idx = body.get("settings", {}).get("index", {})
        value = idx.get("blocks", {}).get("write", idx.get("blocks.write", "false"))
        if str(value).lower() == "true":
            out.append(name)
    return sorted(out)


def find_dirt(infra: Infrastructure, conn: psycopg.Connection[Any]) -> list[Dirt]:
    dirt: list[Dirt] = []
    reachable, what = probe_engine(infra.endpoints.es_url)
    if not reachable:
        dirt.append(Dirt(f"the search engine is unreachable ({what})", "drillui clean brings a managed engine back"))
    else:
        for name in blocked_indices(infra.endpoints.es_url):
            dirt.append(Dirt(f"index.blocks.write is still true on {name}", "drillui clean lifts it"))
    engine = infra.engine
    if isinstance(engine, LatencySwitch) and engine.latency() > 0:
        dirt.append(Dirt(f"the engine's relay still holds every request {engine.latency():g}s", "drillui clean sets it back to 0"))
    if infra.postgres is not None and not infra.postgres.reachable():
        dirt.append(Dirt("the relay in front of Postgres refuses the workers' connections", "drillui clean opens it again"))
    procs = leftover_workers()
    if procs:
        pids = ", ".join(str(p.pid) for p in procs)
        dirt.append(Dirt(f"{len(procs)} worker process(es) of an earlier drill still run (pid {pids})", "drillui clean stops them"))
    ensure_schema(conn)
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = 'processing') AS processing "
        "FROM outbox WHERE status IN ('pending', 'processing')"
    ).fetchone()
    if row and (row["pending"] or row["processing"]):
        dirt.append(
            Dirt(
                f"the outbox has {row['pending']} pending and {row['processing']} processing row(s) left by an earlier run",
                "drillui clean removes the ones drills wrote",
            )
        )
    return dirt


def clean(infra: Infrastructure, *, rows: bool = False, locked: bool = False) -> list[str]:
    """Put right everything find_dirt reports; returns what was done, one line per action.

    Refused while a drill is running (unless `locked`: the caller is that drill, holding the run
    lock). With `rows`, every outbox row a drill ever wrote goes too (done and failed ones, and
    the chronicle rows behind them), not only the unfinished ones.
    """
    with connect(infra.endpoints.database_direct_url) as conn:
        if not locked:
            acquire_run_lock(conn, "drillui clean", doing="clean")
        return _clean(infra, conn, rows=rows)


def _clean(infra: Infrastructure, conn: psycopg.Connection[Any], *, rows: bool) -> list[str]:
    done: list[str] = []
    reachable, _ = probe_engine(infra.endpoints.es_url)
    if not reachable and infra.engine is not None and infra.engine.managed:
        infra.engine.set_reachable(True)
        done.append("made the search engine reachable again")
    if isinstance(infra.engine, LatencySwitch) and infra.engine.latency() > 0:
        infra.engine.set_latency(0)
        done.append("set the engine's relay latency back to 0")
    if infra.postgres is not None and not infra.postgres.reachable():
        infra.postgres.set_reachable(True)
        done.append("opened the relay in front of Postgres again")
    for name in blocked_indices(infra.endpoints.es_url):
        with http.client(timeout=5) as c:
            c.put(f"{infra.endpoints.es_url}/{name}/_settings", json={"index": {"blocks": {"write": False}}}).raise_for_status()
        done.append(f"lifted the write block on {name}")
    for proc in leftover_workers():
        proc.terminate()
        try:
            proc.wait(5)
        except psutil.TimeoutExpired:
            proc.kill()
        done.append(f"stopped leftover worker pid {proc.pid}")
    ensure_schema(conn)
    like = DRILL_CORRELATION_PREFIX + "%"
    if rows:
        with conn.transaction():
            conn.execute(
                "DELETE FROM chronicle_entries WHERE event_id IN (SELECT entity_id FROM outbox "
                "WHERE projection = 'chronicle' AND correlation_id LIKE %s)", (like,))
            m = conn.execute(
                "DELETE FROM chronicle_events WHERE id IN (SELECT entity_id FROM outbox "
                "WHERE projection = 'chronicle' AND correlation_id LIKE %s)", (like,)).rowcount
            n = conn.execute("DELETE FROM outbox WHERE correlation_id LIKE %s", (like,)).rowcount
        if n or m:
            done.append(f"removed {n} drill event(s) from the outbox (every status) and {m} chronicle event(s)")
        return done
    n = conn.execute(
        "DELETE FROM outbox WHERE status IN ('pending', 'processing') AND correlation_id LIKE %s", (like,)
    ).rowcount
    if n:
        done.append(f"removed {n} unfinished drill event(s) from the outbox")
    return done


def prune_snapshots(root: Path, scenario: str, keep_last: int) -> tuple[list[Path], list[Path]]:
    """Remove all but the newest `keep_last` run folders of a scenario, on request.

    A run that has not ended (an event log without a result: running now, or interrupted) is left
    alone: its record may still be growing. Returns (removed, left alone).
    """
    from drillui.record.snapshot import end_state_of, runs

    found = runs(root, scenario)
    doomed = found[: max(0, len(found) - keep_last)]
    removed: list[Path] = []
    kept: list[Path] = []
    for p in doomed:
        if end_state_of(p)[0] == "running":
            kept.append(p)
            continue
        shutil.rmtree(p)
        removed.append(p)
    return removed, kept
