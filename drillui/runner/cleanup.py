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

from drillui.faults.base import probe_engine
from drillui.runner.infra import Infrastructure
from worker.db import connect, ensure_schema

DRILL_CORRELATION_PREFIX = "drillui:"
RUN_ENV_MARK = "DRILLUI_RUN_ID"
OWNER_ENV_MARK = "DRILLUI_OWNER_PID"
INDEX_PREFIX = "drillui-"


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
        resp = httpx.get(f"{es_url}/{INDEX_PREFIX}*/_settings", timeout=5)
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


def clean(infra: Infrastructure) -> list[str]:
    """Put right everything find_dirt reports; returns what was done, one line per action."""
    done: list[str] = []
    reachable, _ = probe_engine(infra.endpoints.es_url)
    if not reachable and infra.engine is not None and infra.engine.managed:
        infra.engine.set_reachable(True)
        done.append("made the search engine reachable again")
    for name in blocked_indices(infra.endpoints.es_url):
        httpx.put(f"{infra.endpoints.es_url}/{name}/_settings", json={"index": {"blocks": {"write": False}}}, timeout=5).raise_for_status()
        done.append(f"lifted the write block on {name}")
    for proc in leftover_workers():
        proc.terminate()
        try:
            proc.wait(5)
        except psutil.TimeoutExpired:
            proc.kill()
        done.append(f"stopped leftover worker pid {proc.pid}")
    with connect(infra.endpoints.database_url) as conn:
        ensure_schema(conn)
        n = conn.execute(
            "DELETE FROM outbox WHERE status IN ('pending', 'processing') AND correlation_id LIKE %s",
            (DRILL_CORRELATION_PREFIX + "%",),
        ).rowcount
        if n:
            done.append(f"removed {n} unfinished drill event(s) from the outbox")
    return done


def prune_snapshots(root: Path, scenario: str, keep_last: int) -> list[Path]:
    base = root / scenario
    if not base.is_dir():
        return []
    runs = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name)
    doomed = runs[: max(0, len(runs) - keep_last)]
    for p in doomed:
        shutil.rmtree(p)
    return doomed
