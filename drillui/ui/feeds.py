"""The blocking I/O behind the dashboard's panels, as plain functions its thread workers call.

Why a separate module: the screens decide *when* to fetch (timers, keys) and the functions here do
the fetching (scrape every worker, search traces, read the last verdicts and the final scrapes).
Keeping them free of Textual (never imported here) keeps them testable on their own and keeps
every network or disk access out of the widgets. Each function turns expected failures into values (an error string per source)
so one slow or dead source never hides the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import httpx

from drillui.errors import DrillError
from drillui.evidence.live import TraceQuery
from drillui.evidence.snapshot import Snapshot, latest_run
from drillui.scenarios import Drill
from drillui.sources.metrics import MetricsScraper, MetricsSnapshot
from drillui.sources.traces import Trace, TraceQueryResult
from worker.contract import DEFAULT_SERVICE_NAME

SCRAPE_TIMEOUT_SECONDS = 1.0
TRACE_LIMIT = 20
# The window searched for a run's traces: from a little before the run started (clocks of the
# worker and of this process are the same machine's, but spans are stamped at their start).
TRACE_LOOKBACK_SECONDS = 5.0


@dataclass(frozen=True)
class LastVerdict:
    run_id: str
    verdict: str
    """pass, fail, or "?" for a run without a result file (stopped or crashed)."""
    path: str


class TraceBackend(Protocol):
    """What the dashboard asks a trace store (JaegerClient, or a fake in tests)."""

    def find_traces(self, service: str, operation: str, attributes: Mapping[str, str], *,
                    start: datetime, end: datetime, limit: int = 20) -> TraceQueryResult: ...

    def get_trace(self, trace_id: str) -> TraceQueryResult: ...

    def close(self) -> None: ...


def scrape_workers(urls: Mapping[str, str], client: httpx.Client) -> tuple[float, dict[str, MetricsSnapshot], dict[str, str]]:
    """Scrape each worker once; a worker that does not answer gets an error line instead."""
    scrapes: dict[str, MetricsSnapshot] = {}
    errors: dict[str, str] = {}
    for worker, url in urls.items():
        try:
            scrapes[worker] = MetricsScraper(url, client=client, timeout=SCRAPE_TIMEOUT_SECONDS).scrape()
        except DrillError as exc:
            errors[worker] = exc.message
    return time.time(), scrapes, errors


def search_traces(backend: TraceBackend, queries: Sequence[TraceQuery], since: float | None) -> tuple[dict[TraceQuery, list[Trace]], list[str]]:
    """Run each query over the run's time window; the errors say which query failed and why."""
    start = datetime.fromtimestamp((since or time.time()) - TRACE_LOOKBACK_SECONDS, UTC)
    end = datetime.now(UTC) + timedelta(seconds=TRACE_LOOKBACK_SECONDS)
    results: dict[TraceQuery, list[Trace]] = {}
    errors: list[str] = []
    for q in queries:
        try:
            res = backend.find_traces(DEFAULT_SERVICE_NAME, q.operation, q.tags, start=start, end=end, limit=TRACE_LIMIT)
        except DrillError as exc:
            errors.append(exc.message)
            continue
        results[q] = list(res.traces)
    return results, errors


def final_scrapes(snapshot: Path, workers: Sequence[str]) -> tuple[float | None, dict[str, MetricsSnapshot]]:
    """The runner's last scrape of each worker (after recovery, else after the fault), from the
    snapshot folder: the panels then end on the numbers the verdict was computed from."""
    snap = Snapshot.open(snapshot)
    timeline = snap.read_json("_timeline.json", {})
    single = len(workers) == 1
    for phase in ("recovered", "after"):
        taken_at = timeline.get(f"scraped_{phase}_at")
        out: dict[str, MetricsSnapshot] = {}
        for w in workers:
            p = snap.metrics_path(phase, w, single)
            if p.exists():
                out[w] = MetricsSnapshot.parse(p.read_text(encoding="utf-8"), taken_at=taken_at)
        if out:
            return taken_at, out
    return None, {}


def load_last_verdicts(root: Path, drills: Sequence[Drill]) -> dict[str, LastVerdict]:
    """The latest run of each drill under the snapshots root, and its verdict if it has one."""
    out: dict[str, LastVerdict] = {}
    for d in drills:
        run = latest_run(root, d.id)
        if run is None:
            continue
        verdict = "?"
        result = run / "_result.json"
        if result.exists():
            try:
                verdict = str(json.loads(result.read_text(encoding="utf-8")).get("verdict", "?"))
            except (OSError, ValueError) as exc:
                verdict = f"unreadable ({type(exc).__name__})"
        out[d.id] = LastVerdict(run.name, verdict, str(run))
    return out
