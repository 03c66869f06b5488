"""`drillui doctor`: the runbook's malfunction notes as checks, each with a one-line fix.

Why it exists: the runbook's drills failed, more than once, for reasons that had nothing to do
with the drill: tracing was off (opt-in; `event=tracing.disabled` in the worker's log, or
`OTEL_SDK_DISABLED`), spans went to the OTLP gRPC port (4317) from an OTLP/HTTP exporter (4318),
Jaeger had no such service yet, a newer Jaeger had dropped the `/api/traces` search, a second
worker on the same machine wrote the same metrics and spans, an old worker still ran the previous
span schema (`wordloom.obs_schema`), Prometheus could not scrape a worker, and the infrastructure
itself was down or left in a drill's state (a write block, rows stuck in `processing`). Each of
those costs a trainer minutes in front of a room; each is one small check here. The same checks
run on the embedded stack and on the Docker infrastructure.

The modules:
- `model`: `DoctorCheck`, `DoctorInputs`, `DoctorContext` and the helpers every check uses;
- `checks_infra`, `checks_tracing`, `checks_metrics`: the checks, by what they look at;
- `run`: `CHECKS` in their order, and `run_doctor`;
- `cli`: `add_doctor_arguments`, `cmd_doctor`, `resolve_inputs` and the printed report.

This package re-exports the public names, so `drillui.doctor.X` imports keep working.
Headless: never imports textual.
"""

from __future__ import annotations

from drillui.doctor.checks_infra import (
    check_docker_engine_switch,
    check_engine,
    check_postgres,
    check_stuck_rows,
    check_write_block,
)
from drillui.doctor.checks_metrics import (
    RUNBOOK_METRICS_PORTS,
    WORKER_JOB,
    check_prometheus_targets,
    check_worker_metrics,
)
from drillui.doctor.checks_tracing import (
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    check_jaeger_search_api,
    check_jaeger_service,
    check_obs_schema,
    check_otlp_protocol,
    check_single_writer,
    check_tracing_enabled,
)
from drillui.doctor.cli import add_doctor_arguments, cmd_doctor, expand_log_paths, metrics_url, resolve_inputs
from drillui.doctor.model import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_WINDOW_S,
    Check,
    DoctorCheck,
    DoctorContext,
    DoctorInputs,
    Infra,
)
from drillui.doctor.run import CHECKS, run_doctor

__all__ = [
    "CHECKS",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WINDOW_S",
    "OTLP_GRPC_PORT",
    "OTLP_HTTP_PORT",
    "RUNBOOK_METRICS_PORTS",
    "WORKER_JOB",
    "Check",
    "DoctorCheck",
    "DoctorContext",
    "DoctorInputs",
    "Infra",
    "add_doctor_arguments",
    "check_docker_engine_switch",
    "check_engine",
    "check_jaeger_search_api",
    "check_jaeger_service",
    "check_obs_schema",
    "check_otlp_protocol",
    "check_postgres",
    "check_prometheus_targets",
    "check_single_writer",
    "check_stuck_rows",
    "check_tracing_enabled",
    "check_worker_metrics",
    "check_write_block",
    "cmd_doctor",
    "expand_log_paths",
    "metrics_url",
    "resolve_inputs",
    "run_doctor",
]
