"""`drillui doctor` on the command line: its options, the inputs they resolve to, the report.

Why it exists: turning flags and the environment into validated `DoctorInputs` (which stack,
which log files, which URLs) and printing the results are the only parts that know about argparse
and stdout; the checks themselves stay callable from tests and other code through `run_doctor`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from drillui.doctor.model import DEFAULT_TIMEOUT_S, DEFAULT_WINDOW_S, DoctorCheck, DoctorInputs, Infra, redact
from drillui.doctor.run import run_doctor
from drillui.errors import UsageError
from drillui.stack.stack import Stack, default_state_dir
from worker.contract import DEFAULT_SERVICE_NAME

_LOG_SUFFIXES: Final = (".log", ".jsonl", ".ndjson")


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drillui doctor` (see `cmd_doctor`)."""
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument(
        "--logs",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR_OR_FILE",
        help="worker log files (JSON lines); a folder means every *.log/*.jsonl/*.ndjson file under it",
    )
    parser.add_argument("--prometheus", metavar="URL", help="Prometheus to check, e.g. http://127.0.0.1:9090")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        metavar="URL_OR_PORT",
        help="worker /metrics endpoints, e.g. 9108 or http://127.0.0.1:9108/metrics",
    )
    parser.add_argument("--service", help=f"Jaeger service of the worker (default $OTEL_SERVICE_NAME or {DEFAULT_SERVICE_NAME})")
    parser.add_argument("--index", default="_all", help="index or pattern checked for write blocks (default _all)")
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_S,
        metavar="SECONDS",
        help=f"how far back spans count as 'a worker is writing now' (default {DEFAULT_WINDOW_S:g})",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS", help="per request (default 3)")
    parser.add_argument("--check", action="append", metavar="NAME", help="run only this check (repeatable)")


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`drillui doctor [--json] [--logs DIR_OR_FILE...] [--prometheus URL] [--metrics URL_OR_PORT...]
    [--service NAME] [--index PATTERN] [--window SECONDS] [--timeout SECONDS] [--check NAME]...`

    Reads from `args` (the options of `add_doctor_arguments`, plus the global ones):
    - `state_dir` (global `--state-dir`): the embedded stack to attach to, when one runs;
    - `infra` (global `--infra`, else `$DRILLUI_INFRA`): `docker` checks the compose file's
      addresses (each overridable by DATABASE_URL, ES_URL, JAEGER_URL, OTEL_EXPORTER_OTLP_ENDPOINT);
      `embedded` (default) the running embedded stack, else those variables or the same defaults;
    - `json`: one JSON document on stdout instead of the table;
    - `logs`: worker log files or folders, for `tracing.disabled`, the OTLP target and the schema;
    - `prometheus`: a Prometheus base URL, for its targets and duplicated series;
    - `metrics`: worker `/metrics` URLs or bare ports (`9108` = http://127.0.0.1:9108/metrics);
    - `service`, `index`, `window`, `timeout`, `check`: see `add_doctor_arguments`.

    Returns 1 when any check fails, else 0; bad usage raises UsageError (exit 2 in the CLI).
    """
    inputs = resolve_inputs(args, env)
    only = getattr(args, "check", None)
    began = time.monotonic()
    results = run_doctor(inputs, only=only)
    failed = [r for r in results if r.status == "fail"]
    if getattr(args, "json", False):
        report = {
            "ok": not failed,
            "infra": inputs.infra,
            "source": inputs.source,
            "endpoints": {key: redact(value) for key, value in inputs.endpoints.to_json().items()},
            "seconds": round(time.monotonic() - began, 3),
            "checks": [r.to_json() for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        _print_table(inputs, results, sys.stdout)
    return 1 if failed else 0


def _print_table(inputs: DoctorInputs, results: Sequence[DoctorCheck], out: Any) -> None:
    print(f"drillui doctor: {inputs.infra} infrastructure ({inputs.source})", file=out)
    width = max((len(r.name) for r in results), default=0)
    for r in results:
        print(f"  [{r.status.upper()}] {r.name:<{width}}  {r.detail}", file=out)
        if r.fix and r.status == "fail":
            print(f"         {'':<{width}}  fix: {r.fix}", file=out)
    counts = {status: sum(1 for r in results if r.status == status) for status in ("pass", "fail", "skip")}
    print(f"{len(results)} checks: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped", file=out)


def resolve_inputs(args: argparse.Namespace, env: Mapping[str, str]) -> DoctorInputs:
    """The endpoints to check and the files/URLs given, validated (UsageError on a bad one)."""
    from drillui.runner.infra import INFRA_ENV, infra_choice
    from drillui.stack.docker import compose_endpoints

    chosen = getattr(args, "infra", None)
    infra: Infra = "docker" if infra_choice({INFRA_ENV: chosen} if chosen else env) == "docker" else "embedded"
    control_url = None
    prometheus_note = ""
    if infra == "docker":
        endpoints = compose_endpoints(env)
        source = "docker-compose.infra.yml addresses and environment overrides"
    else:
        state_dir = getattr(args, "state_dir", None)
        folder = Path(state_dir) if state_dir else default_state_dir(env)
        running = Stack.attach(folder)
        if running is not None:
            endpoints, control_url = running.endpoints, running.control_url
            prometheus_note = running.prometheus_note
            source = f"embedded stack pid {running.pid} on {running.state_dir}"
        else:
            # No stack: check what a worker would use (the variables, else the usual ports).
            endpoints = compose_endpoints(env)
            source = f"no embedded stack running on {folder}: environment overrides and default ports"
    timeout = float(getattr(args, "timeout", DEFAULT_TIMEOUT_S))
    window = float(getattr(args, "window", DEFAULT_WINDOW_S))
    if timeout <= 0 or window <= 0:
        raise UsageError("--timeout and --window must be positive numbers of seconds")
    return DoctorInputs(
        endpoints=endpoints,
        infra=infra,
        source=source,
        control_url=control_url,
        log_files=expand_log_paths(getattr(args, "logs", None) or []),
        metrics_urls=tuple(metrics_url(text) for text in getattr(args, "metrics", None) or []),
        prometheus_url=_http_url(getattr(args, "prometheus", None), "--prometheus"),
        prometheus_note=prometheus_note,
        service=getattr(args, "service", None) or env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
        index=getattr(args, "index", None) or "_all",
        window=window,
        timeout=timeout,
        env=dict(env),
    )


def expand_log_paths(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Files as given; folders as their log files (recursively, sorted). A missing path is a UsageError."""
    files: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_LOG_SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"--logs {path}: no such file or folder")
    return tuple(dict.fromkeys(files))


def metrics_url(text: str) -> str:
    """`9108` → http://127.0.0.1:9108/metrics; `host:9108` → http://host:9108/metrics; a URL as is."""
    value = text.strip()
    if value.isdigit():
        port = int(value)
        if not 1 <= port <= 65535:
            raise UsageError(f"--metrics {text}: port outside 1..65535")
        return f"http://127.0.0.1:{port}/metrics"
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--metrics {text}: not a port, host:port or http(s) URL")
    return value if parts.path not in ("", "/") else f"{value.rstrip('/')}/metrics"


def _http_url(text: str | None, flag: str) -> str | None:
    if not text:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} {text}: not an http(s) URL", hint=f"e.g. {flag} http://127.0.0.1:9090")
    return text.strip().rstrip("/")
