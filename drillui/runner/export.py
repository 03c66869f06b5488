"""Trace queries by a run's ids, written as the backend returned them (`_exports/`).

The runner calls this once at the end of a run, into the run's own `_exports/`; `drillui export`
calls it later into a new `_exports/<UTC time>/` beside it, so a backend that has forgotten the
spans (the embedded store keeps them in memory) never replaces what the run recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drillui import http
from drillui.evidence.rules import PIVOT_ATTRIBUTES, pivot_values, trace_check_name
from drillui.record.snapshot import PRIVATE_FILE, QUERIES
from drillui.scenarios import Drill
from drillui.sources.traces import JaegerClient, Span, TraceQueryError, TraceQueryResult
from worker.contract import DEFAULT_SERVICE_NAME

POLL_SECONDS = 0.3


@dataclass
class Export:
    folder: Path
    queries: list[dict[str, Any]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)

    @property
    def traces_found(self) -> int:
        return sum(int(q.get("traces") or 0) for q in self.queries)

    @property
    def apis(self) -> list[str]:
        return sorted({str(q["api"]) for q in self.queries if q.get("api")})


def _write(path: Path, data: Any) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=1) + "\n")


def export_traces(
    folder: Path,
    drill: Drill,
    jaeger_url: str,
    pivots: Mapping[str, Sequence[str]],
    *,
    start: datetime,
    wait: Callable[[int], float] | float = 0.0,
    limit: int = 20,
    service: str = DEFAULT_SERVICE_NAME,
) -> Export:
    """Query each trace check by its pivot values; write each body and `_queries.json` to `folder`.

    `wait`: seconds to keep asking while a query finds nothing (spans are exported in batches, the
    last ones late), per check index or for all.
    """
    out = Export(folder)
    done: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    with http.client(timeout=5.0) as raw, JaegerClient(jaeger_url, client=raw) as client:
        for i, check in enumerate(drill.expect.traces):
            name = trace_check_name(check)
            attr = PIVOT_ATTRIBUTES[check.by]
            for value in pivot_values(list(pivots.get(check.by) or []), check.which):
                if (name, value) in done:
                    # Two checks on the same pivot share one query and its export file.
                    out.queries.append({**done[(name, value)], "check": i})
                    continue
                budget = wait(i) if callable(wait) else wait
                res, error = _query_until_found(client, service, check.operation, attr, value, start=start,
                                                wait=budget if check.min_spans else min(budget, 1.0), limit=limit)
                file = f"{name}-{value}.json"
                entry: dict[str, Any] = {"check": i, "name": name, "file": file, "operation": check.operation,
                                         "attributes": {attr: value}}
                if res is not None:
                    _write(folder / file, res.body)
                    entry.update(api=res.api, url=res.url, status_code=res.status_code, traces=len(res.traces))
                    for trace in res.traces:
                        for span in trace.spans:
                            if (span.trace_id, span.span_id) not in seen:
                                seen.add((span.trace_id, span.span_id))
                                out.spans.append(span)
                else:
                    entry.update(api=None, error=error)
                done[(name, value)] = entry
                out.queries.append(entry)
    _write(folder / QUERIES, out.queries)
    return out


def _query_until_found(
    client: JaegerClient, service: str, operation: str, attr: str, value: str, *, start: datetime, wait: float, limit: int
) -> tuple[TraceQueryResult | None, str | None]:
    deadline = time.monotonic() + wait
    while True:
        end = datetime.now(UTC) + timedelta(seconds=5)
        try:
            res: TraceQueryResult | None = client.find_traces(service, operation, {attr: value}, start=start, end=end, limit=limit)
            error = None
        except TraceQueryError as exc:
            res, error = None, str(exc)
        if (res is not None and res.traces) or time.monotonic() >= deadline:
            return res, error
        time.sleep(POLL_SECONDS)
