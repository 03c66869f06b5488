"""What every doctor check shares: its result, its inputs, and the context it reads them from.

Why it exists: the checks are independent functions, but they share one vocabulary. A check is a
function of a `DoctorContext` returning a `DoctorCheck(name, ok, detail, fix)`. Checks catch only
the failures they diagnose (a refused connection, an HTTP error, a database error) and turn them
into a failed check with its detail; anything else is a bug and propagates. A check whose input
was not given (no `--prometheus`, no `--logs`) is reported as skipped, which counts as passing.
The context fetches what several checks read (logs, recent spans, `/metrics` scrapes) once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal

import httpx

from drillui.errors import UsageError
from drillui.sources.logs import LogRecord, parse_line
from drillui.sources.metrics import MetricsSnapshot, parse_metrics
from drillui.sources.traces import JaegerClient, Span, TraceQueryError
from drillui.stack.stack import Endpoints
from worker.contract import DEFAULT_SERVICE_NAME

Infra = Literal["embedded", "docker"]
Check = Callable[["DoctorContext"], "DoctorCheck"]

DEFAULT_WINDOW_S: Final = 120.0
"""How far back "currently writing" looks: a running worker claims (and traces) every poll."""
DEFAULT_TIMEOUT_S: Final = 3.0
COMPOSE: Final = "docker compose -f docker-compose.infra.yml"
_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@]*@")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DoctorCheck:
    """One finding. `fix` is one line a person can act on; empty when there is nothing to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    """The check's input was not given or not reachable; counts as passing."""

    @property
    def status(self) -> Literal["pass", "fail", "skip"]:
        if self.skipped:
            return "skip"
        return "pass" if self.ok else "fail"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def passed(name: str, detail: str) -> DoctorCheck:
    return DoctorCheck(name, True, detail)


def failed(name: str, detail: str, fix: str) -> DoctorCheck:
    return DoctorCheck(name, False, detail, fix)


def skipped(name: str, detail: str, fix: str = "") -> DoctorCheck:
    return DoctorCheck(name, True, detail, fix, skipped=True)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class DoctorInputs:
    """What the checks look at. Built by `resolve_inputs` from the CLI, or directly by tests."""

    endpoints: Endpoints
    infra: Infra = "embedded"
    source: str = ""
    """Where the endpoints came from, for the report."""
    control_url: str | None = None
    """The embedded stack's control server, when one runs (to switch its engine back on)."""
    log_files: tuple[Path, ...] = ()
    metrics_urls: tuple[str, ...] = ()
    prometheus_url: str | None = None
    prometheus_note: str = ""
    """Why the embedded stack runs no Prometheus (from its stack.json), when it runs none."""
    service: str = DEFAULT_SERVICE_NAME
    index: str = "_all"
    """Index (or pattern) whose write blocks are checked."""
    window: float = DEFAULT_WINDOW_S
    timeout: float = DEFAULT_TIMEOUT_S
    env: Mapping[str, str] = field(default_factory=dict)
    """The environment the workers are started from (OTEL_SDK_DISABLED is read here)."""


@dataclass(frozen=True)
class _Spans:
    """Recent spans of the service, or why they could not be read."""

    spans: tuple[Span, ...]
    error: str | None = None


class DoctorContext:
    """The inputs plus what several checks share, each fetched once (logs, spans, reachability)."""

    def __init__(self, inputs: DoctorInputs, http: httpx.Client) -> None:
        self.inputs = inputs
        self.http = http
        self.jaeger = JaegerClient(inputs.endpoints.jaeger_url, client=http, timeout=inputs.timeout)
        self._results: dict[str, DoctorCheck] = {}

    def result(self, name: str, check: Check) -> DoctorCheck:
        """The result of a check, run once: later checks depend on reachability found earlier."""
        if name not in self._results:
            self._results[name] = check(self)
        return self._results[name]

    @cached_property
    def records(self) -> tuple[LogRecord, ...]:
        records: list[LogRecord] = []
        for path in self.inputs.log_files:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise UsageError(f"cannot read log file {path}: {exc.strerror}") from exc
            # `source` is the whole path: two runs' files of the same worker name stay apart.
            records.extend(parse_line(line, source=str(path), line_no=n) for n, line in enumerate(text.splitlines(), 1) if line.strip())
        return tuple(records)

    @cached_property
    def recent_spans(self) -> _Spans:
        end = datetime.now(UTC) + timedelta(seconds=5)
        start = end - timedelta(seconds=self.inputs.window + 5)
        try:
            result = self.jaeger.find_traces(self.inputs.service, "", {}, start=start, end=end, limit=100)
        except TraceQueryError as exc:
            return _Spans((), str(exc))
        spans = (span for trace in result.traces for span in trace.spans)
        return _Spans(tuple(span for span in spans if span.service == self.inputs.service))

    @cached_property
    def metrics(self) -> dict[str, MetricsSnapshot | str]:
        """Each `--metrics` URL's scrape, or the error text of why it could not be read."""
        out: dict[str, MetricsSnapshot | str] = {}
        for url in self.inputs.metrics_urls:
            try:
                response = self.http.get(url, headers={"Accept": "text/plain; version=0.0.4"})
            except httpx.HTTPError as exc:
                out[url] = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code != 200:
                out[url] = f"HTTP {response.status_code}"
                continue
            try:
                out[url] = parse_metrics(response.text)
            except ValueError as exc:
                out[url] = str(exc)
        return out

    def fix_start(self, part: Literal["postgres", "es", "jaeger"]) -> str:
        """How to bring a server back, for the stack in use."""
        if self.inputs.infra == "docker":
            return f"{COMPOSE} up -d --wait {part}   (then `{COMPOSE} ps` shows it healthy)"
        names = {"postgres": "DATABASE_URL", "es": "ES_URL", "jaeger": "JAEGER_URL"}
        return f"start the embedded stack with `drillui stack up` (or fix {names[part]}), or use --infra docker"


# --------------------------------------------------------------------------- small helpers


def redact(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0]) if lines else type(exc).__name__


def http_error(exc: httpx.HTTPError) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def snippet(text: str, size: int = 160) -> str:
    return " ".join(text.split())[:size]


def json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def json_dict(response: httpx.Response) -> dict[str, Any]:
    body = json_or_none(response)
    return body if isinstance(body, dict) else {}
