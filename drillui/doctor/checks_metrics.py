"""Checks of the metrics path: the workers' `/metrics` endpoints and Prometheus scraping them.

Why it exists: a drill's dashboard and verdicts read the workers' series; an endpoint on the wrong
port, or a worker Prometheus cannot reach (bound to 127.0.0.1 while Prometheus runs in a
container), shows as an empty panel rather than as an error, so it is checked up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from drillui.doctor.model import (
    COMPOSE,
    DoctorCheck,
    DoctorContext,
    failed,
    http_error,
    json_or_none,
    passed,
    skipped,
    snippet,
)
from drillui.sources.metrics import MetricsSnapshot

RUNBOOK_METRICS_PORTS: Final = frozenset({9108, 9109, 9110, 9125, 9126, 9127, 9128, 9129})
WORKER_JOB: Final = "outbox-worker"
"""The scrape job of infra/prometheus/prometheus.yml."""


def check_worker_metrics(ctx: DoctorContext) -> DoctorCheck:
    """Each `--metrics` endpoint answers with the worker's series."""
    name = "worker.metrics"
    if not ctx.inputs.metrics_urls:
        return skipped(name, "no worker /metrics given (--metrics URL or port)")
    problems = []
    for url, scrape in ctx.metrics.items():
        if isinstance(scrape, str):
            problems.append(f"{url}: {scrape}")
        elif not scrape.has("outbox_processed_total"):
            problems.append(f"{url}: answers, but without the worker's outbox_* series (another program on this port?)")
    if problems:
        return failed(
            name,
            "; ".join(problems),
            "start the worker with OUTBOX_METRICS_PORT set to that port; its log line metrics.listening says where it listens",
        )
    return passed(name, f"{len(ctx.inputs.metrics_urls)} worker /metrics endpoint(s) answer")


def check_prometheus_targets(ctx: DoctorContext) -> DoctorCheck:
    """Prometheus scrapes the workers: no non-worker target down, at least one worker target up,
    and every worker known to run (`--metrics`) up in Prometheus too.

    The worker job lists the runbook's usual ports (9108-9110, 9125-9129); a port with no worker
    behind it is down by design, so such targets are only reported, not failed.
    """
    name = "prometheus.targets"
    base = ctx.inputs.prometheus_url
    if not base:
        return skipped(name, "no Prometheus given (--prometheus URL)")
    base = base.rstrip("/")
    try:
        response = ctx.http.get(f"{base}/api/v1/targets", params={"state": "active"})
    except httpx.HTTPError as exc:
        return failed(name, f"Prometheus at {base} does not answer: {http_error(exc)}", f"{COMPOSE} --profile monitoring up -d --wait prometheus")
    body = json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        return failed(name, f"{base}/api/v1/targets answers HTTP {response.status_code}: {snippet(response.text)}", "check the Prometheus URL (port 9090)")
    targets = [t for t in (body.get("data") or {}).get("activeTargets") or [] if isinstance(t, dict)]
    workers = [t for t in targets if _is_worker_target(t)]
    others = [t for t in targets if not _is_worker_target(t)]
    # Ports where a worker is known to run: its /metrics answered here with the worker's series.
    known_ports = {
        _port_of(url) for url, scrape in ctx.metrics.items() if isinstance(scrape, MetricsSnapshot) and scrape.has("outbox_processed_total")
    }
    problems = [f"{_target_name(t)} ({_labels(t).get('job', '?')}) is {t.get('health', '?')}: {t.get('lastError') or 'no error'}" for t in others if t.get("health") != "up"]
    up = [t for t in workers if t.get("health") == "up"]
    down = [t for t in workers if t.get("health") != "up"]
    for target in down:
        port = _port_of(str(target.get("scrapeUrl", "")))
        if port in known_ports:
            problems.append(
                f"a worker answers on port {port} here, but Prometheus' target {_target_name(target)} is "
                f"{target.get('health', '?')}: {target.get('lastError') or 'not scraped yet'}"
            )
    if not workers:
        problems.append(f"Prometheus scrapes no worker (no job {WORKER_JOB!r}, no target on the runbook's ports)")
    elif not up:
        first = down[0]
        problems.append(f"none of the {len(workers)} worker targets is up (e.g. {_target_name(first)}: {first.get('lastError') or first.get('health')})")
    bind_fix = (
        "run the worker with OUTBOX_METRICS_PORT=9108 (or another scraped port) and, on Linux, OUTBOX_METRICS_HOST=0.0.0.0 "
        "(a container cannot reach 127.0.0.1 on the host); see http://localhost:9090/targets"
    )
    if problems:
        return failed(name, "; ".join(problems), bind_fix if workers or not targets else f"use infra/prometheus/prometheus.yml ({COMPOSE} --profile monitoring up -d)")
    idle = f"; {len(down)} idle port(s) without a worker" if down else ""
    return passed(name, f"{len(up)} worker target(s) up ({', '.join(_target_name(t) for t in up)}){idle}; {len(others)} other target(s) up")


def check_prometheus_promql(ctx: DoctorContext) -> DoctorCheck:
    """Whether the stack's Prometheus answers, so the trainer's PromQL steps and PromQL checks
    run; without one the drills scrape /metrics directly and the PromQL checks are not applicable.
    Optional: an absent Prometheus is skipped (saying how to get it), not failed; the embedded
    stack's own Prometheus that stopped answering fails."""
    from drillui.stack.prometheus import INSTALL_HINT

    name = "prometheus.promql"
    url = ctx.inputs.endpoints.prometheus_url
    fallback = "drills scrape each worker's /metrics directly; PromQL steps cannot run and PromQL checks are not applicable"
    if not url:
        why = ctx.inputs.prometheus_note or "none in this stack"
        return skipped(name, f"no Prometheus: {why}; {fallback}", f"{INSTALL_HINT}, then restart `drillui stack up`")
    try:
        response = ctx.http.get(f"{url}/api/v1/status/buildinfo")
        body = json_or_none(response)
        version = (body.get("data") or {}).get("version") if isinstance(body, dict) else None
    except httpx.HTTPError as exc:
        if ctx.inputs.control_url and ctx.inputs.infra == "embedded":
            return failed(name, f"the embedded stack's Prometheus at {url} does not answer: {http_error(exc)}",
                          "restart `drillui stack up` (its log is in <state>/prometheus/prometheus.log)")
        how = f"{COMPOSE} --profile monitoring up -d" if ctx.inputs.infra == "docker" else f"{INSTALL_HINT}; `drillui stack up` starts it"
        return skipped(name, f"no Prometheus answers at {url} ({http_error(exc)}): {fallback}; to get one: {how}", how)
    if response.status_code != 200:
        return failed(name, f"{url}/api/v1/status/buildinfo answers HTTP {response.status_code}: {snippet(response.text)}",
                      "check that PROMETHEUS_URL is a Prometheus")
    return passed(name, f"Prometheus {version or '?'} answers at {url}: the trainer's PromQL steps and PromQL checks run")


def _labels(target: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = target.get("labels")
    return labels if isinstance(labels, dict) else {}


def _is_worker_target(target: Mapping[str, Any]) -> bool:
    return _labels(target).get("job") == WORKER_JOB or _port_of(str(target.get("scrapeUrl", ""))) in RUNBOOK_METRICS_PORTS


def _target_name(target: Mapping[str, Any]) -> str:
    return str(_labels(target).get("instance") or target.get("scrapeUrl") or "?")


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None
