"""A PromQL client: `/api/v1/query` and `/api/v1/query_range` of a Prometheus, parsed.

Why its own client: the trainer's steps and some checks are the runbook's PromQL, and where the
stack runs a Prometheus they run for real. A query is an expected thing to get wrong (a trainee
types it), so a bad one is not an exception here: the result carries Prometheus's own error text
(`1:14: parse error: unexpected "}"`), as does a Prometheus that does not answer, and the caller
shows or records it. Bounded: at most `MAX_SERIES` series are kept (the rest are counted) and a
range query asks for at most about `MAX_POINTS` points per series (the step follows the range).

Through `drillui.http.client()`: proxies of the environment never sit between drillui and its
stack. Knows nothing of Textual or of the run record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from drillui import http

MAX_SERIES: Final = 40
MAX_POINTS: Final = 240
TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class Series:
    """One label set and its points `(unix seconds, value)`; an instant query has one point."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None

    def label_text(self, skip: Sequence[str] = ()) -> str:
        """`{env="drill", reason="es_connect"}` as `env=drill reason=es_connect` (the name first)."""
        name = self.labels.get("__name__")
        rest = " ".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if k != "__name__" and k not in skip)
        return " ".join(p for p in (name, rest) if p) or "{}"

    def to_json(self) -> dict[str, Any]:
        return {"metric": dict(self.labels), "values": [[t, v] for t, v in self.points]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Series:
        labels = data.get("metric")
        values = data.get("values")
        points: list[tuple[float, float]] = []
        for pair in values if isinstance(values, (list, tuple)) else ():
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                points.append((_float(pair[0]), _float(pair[1])))
        return cls({str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}, tuple(points))


@dataclass(frozen=True)
class PromqlResult:
    """What Prometheus answered to one query: series, or an error in its own words."""

    query: str
    start: float
    end: float
    step: float
    """Seconds between points of a range query; 0 for an instant query (evaluated at `end`)."""
    result_type: str = ""
    """`matrix`, `vector`, `scalar` or `string` (empty when it failed)."""
    series: tuple[Series, ...] = ()
    omitted: int = 0
    """Series past `MAX_SERIES`, counted, not kept."""
    error: str | None = None
    error_type: str | None = None
    """Prometheus's `errorType` (`bad_data`, `execution`, `timeout`, ...), or `unreachable`."""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.error is None


def range_step(start: float, end: float, max_points: int = MAX_POINTS) -> float:
    """A whole number of seconds (at least 1, the scrape interval) giving at most `max_points` points."""
    return float(max(1, math.ceil(max(0.0, end - start) / max_points)))


class PrometheusClient:
    """One Prometheus, by its base URL (`http://127.0.0.1:9090`)."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None, timeout: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._own = client is None
        self._http = client if client is not None else http.client(timeout=timeout)
        self.timeout = timeout

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self) -> tuple[bool, str]:
        """(answers, one line): `GET /-/ready`."""
        try:
            response = self._http.get(f"{self.base_url}/-/ready", timeout=self.timeout)
        except httpx.HTTPError as exc:
            return False, f"Prometheus at {self.base_url} does not answer: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, f"Prometheus at {self.base_url} is not ready: HTTP {response.status_code} {response.text.strip()[:120]}"
        return True, f"Prometheus at {self.base_url} is ready"

    def query(self, promql: str, at: float) -> PromqlResult:
        """An instant query at `at` (Unix seconds)."""
        return self._ask("/api/v1/query", promql, {"query": promql, "time": _ts(at)}, at, at, 0.0)

    def query_range(self, promql: str, start: float, end: float, step: float | None = None) -> PromqlResult:
        """A range query from `start` to `end`; `step` defaults to `range_step`."""
        step = step if step is not None else range_step(start, end)
        params = {"query": promql, "start": _ts(start), "end": _ts(max(end, start)), "step": f"{step:g}"}
        return self._ask("/api/v1/query_range", promql, params, start, end, step)

    def _ask(self, path: str, promql: str, params: dict[str, str], start: float, end: float, step: float) -> PromqlResult:
        base = PromqlResult(promql, start, end, step)
        if not promql.strip():
            return _failed(base, "type a PromQL expression, e.g. up", "bad_data")
        try:
            # POST with a form body: a long query does not hit a URL length limit.
            response = self._http.post(f"{self.base_url}{path}", data=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return _failed(base, f"Prometheus at {self.base_url} does not answer: {type(exc).__name__}: {exc}", "unreachable")
        return parse_response(base, response.status_code, response.content)


def parse_response(base: PromqlResult, status: int, body: bytes) -> PromqlResult:
    """The result of one API answer (`status` and `body`), `base` giving the query and its range."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return _failed(base, f"HTTP {status}: not a Prometheus API answer: {body[:160].decode('utf-8', 'replace').strip()}", "http")
    if not isinstance(data, dict):
        return _failed(base, f"HTTP {status}: not a Prometheus API answer", "http")
    warnings = tuple(str(w) for w in data.get("warnings") or ())
    if data.get("status") != "success":
        # Prometheus's own words, e.g. `1:31: parse error: unexpected "}" in label matching`.
        return _failed(base, str(data.get("error") or f"HTTP {status}"), str(data.get("errorType") or "error"), warnings)
    payload = data.get("data")
    if not isinstance(payload, dict):
        return _failed(base, "the answer has no data", "http", warnings)
    kind = str(payload.get("resultType") or "")
    raw = payload.get("result")
    series: list[Series] = []
    if kind in ("scalar", "string") and isinstance(raw, list) and len(raw) == 2:
        series.append(Series({}, ((_float(raw[0]), _float(raw[1])),)))
    elif isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict):
                continue
            labels = item.get("metric") if isinstance(item.get("metric"), dict) else {}
            if "values" in item:
                s = Series.from_json({"metric": labels, "values": item["values"]})
            else:
                s = Series.from_json({"metric": labels, "values": [item.get("value")] if item.get("value") else []})
            series.append(s)
    series.sort(key=lambda s: s.label_text())
    kept = tuple(series[:MAX_SERIES])
    return PromqlResult(base.query, base.start, base.end, base.step, kind, kept, len(series) - len(kept), None, None, warnings)


def _failed(base: PromqlResult, error: str, kind: str, warnings: tuple[str, ...] = ()) -> PromqlResult:
    return PromqlResult(base.query, base.start, base.end, base.step, "", (), 0, error, kind, warnings)


def _ts(t: float) -> str:
    return f"{t:.3f}"


def _float(v: Any) -> float:
    """Prometheus sends values as strings ("0.5", "NaN", "+Inf")."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
