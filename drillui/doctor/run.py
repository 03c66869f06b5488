"""The checks in the order they run, and `run_doctor`, the entry point without the CLI.

Why it exists: the order is part of the design (reachability first, so the checks that need a
server can skip on its result) and is shared by the CLI, `--check NAME` validation and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from drillui import http as loopback
from drillui.doctor.checks_infra import (
    check_docker_engine_switch,
    check_engine,
    check_postgres,
    check_stuck_rows,
    check_write_block,
)
from drillui.doctor.checks_metrics import check_prometheus_promql, check_prometheus_targets, check_worker_metrics
from drillui.doctor.checks_tracing import (
    check_jaeger_search_api,
    check_jaeger_service,
    check_obs_schema,
    check_otlp_protocol,
    check_single_writer,
    check_tracing_enabled,
)
from drillui.doctor.model import Check, DoctorCheck, DoctorContext, DoctorInputs
from drillui.errors import UsageError

CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("postgres.reachable", check_postgres),
    ("engine.reachable", check_engine),
    ("docker.es_container", check_docker_engine_switch),
    ("engine.write_block", check_write_block),
    ("outbox.stuck", check_stuck_rows),
    ("tracing.enabled", check_tracing_enabled),
    ("otlp.protocol", check_otlp_protocol),
    ("jaeger.search_api", check_jaeger_search_api),
    ("jaeger.service", check_jaeger_service),
    ("workers.obs_schema", check_obs_schema),
    ("workers.single_writer", check_single_writer),
    ("worker.metrics", check_worker_metrics),
    ("prometheus.promql", check_prometheus_promql),
    ("prometheus.targets", check_prometheus_targets),
)


def run_doctor(inputs: DoctorInputs, *, only: Sequence[str] | None = None) -> list[DoctorCheck]:
    """Run the checks (all, or those named in `only`, in CHECKS order) and return their results."""
    unknown = sorted(set(only or ()) - {name for name, _ in CHECKS})
    if unknown:
        raise UsageError(f"no such doctor check: {', '.join(unknown)}", hint=f"checks: {', '.join(n for n, _ in CHECKS)}")
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    with loopback.client(timeout=inputs.timeout) as http:
        ctx = DoctorContext(inputs, http)
        return [ctx.result(name, check) for name, check in CHECKS if only is None or name in only]
