"""The Docker infrastructure's files, checked without a Docker engine.

No engine runs here, so what can be proven statically is: the compose file parses, pins every
image, publishes every port on 127.0.0.1 only, gives every service a healthcheck and keeps data in
named volumes; Prometheus' configuration passes `promtool check config`; and the Grafana dashboard
is valid JSON whose every query names only series the worker really exports, with labels those
series really have (an unknown name or label would draw an empty panel in front of a class).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drillui.stack.docker import COMPOSE_DEFAULTS, COMPOSE_PROJECT, ES_SERVICE, compose_endpoints
from drillui.stack.stack import DATABASE_URL, ES_URL, JAEGER_URL, OTLP_ENDPOINT
from worker.telemetry.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.infra.yml"
PROMETHEUS = ROOT / "infra" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "wordloom-outbox-es-bulk.json"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
RUNBOOK_PORTS = [9108, 9109, 9110, 9125, 9126, 9127, 9128, 9129]
DATA_DIRS = {
    "postgres": "/var/lib/postgresql/data",
    "es": "/usr/share/elasticsearch/data",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
}
# A metric name in PromQL: followed by a selector or a range, or alone as an argument.
_SELECTOR = re.compile(r"\b(?P<name>outbox_[a-z0-9_]+)\s*(?:\{(?P<matchers>[^}]*)\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample name → label names, exactly as a fresh worker exposes them on /metrics."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, env="local", projection="search_index_to_elastic")
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


# --------------------------------------------------------------------------- compose


def test_compose_has_the_runbooks_services_under_a_fixed_project(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "es", "jaeger", "prometheus", "grafana"}
    # The engine switch finds the container by these two compose labels.
    assert compose["name"] == COMPOSE_PROJECT
    assert ES_SERVICE in services
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    for name in ("postgres", "es", "jaeger"):
        assert "profiles" not in services[name], f"{name} must start without a profile"


def test_every_image_is_pinned_to_a_release(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        assert "@sha256:" in image or re.search(r":v?\d+\.\d+(\.\d+)?$", image), f"{name}: {image} is not pinned"
        assert not image.endswith(":latest"), name
    assert services["jaeger"]["image"] == "jaegertracing/jaeger:2.20.0"
    assert re.fullmatch(r"docker\.elastic\.co/elasticsearch/elasticsearch:8\.\d+\.\d+", services["es"]["image"])


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) != 3:
            out.append(("", -1, int(parts[-1])))  # no host ip: published on every interface
        else:
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def test_every_port_is_published_on_loopback_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        ports = _published(service)
        assert ports, f"{name} publishes nothing"
        for host_ip, _, container_port in ports:
            assert host_ip == "127.0.0.1", f"{name}: port {container_port} is not bound to 127.0.0.1"
    by_service = {name: {(host, cont) for _, host, cont in _published(s)} for name, s in services.items()}
    assert by_service["postgres"] == {(5432, 5432)}
    assert by_service["es"] == {(9200, 9200)}
    assert by_service["jaeger"] == {(16686, 16686), (4317, 4317), (4318, 4318)}
    assert by_service["prometheus"] == {(9090, 9090)}
    assert by_service["grafana"] == {(3000, 3000)}


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: no healthcheck"
        assert not check.get("disable"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck without {key}"


def test_data_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, path in DATA_DIRS.items():
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services[name].get("volumes") or []}
        assert path in mounts, f"{name} keeps its data outside a volume"
        assert mounts[path] in declared, f"{name}: {mounts[path]} is not a named volume"
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
                assert str(volume).endswith(":ro"), f"{name}: configuration {source} must be mounted read-only"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_engine_is_single_node_without_security_and_grafana_is_admin_admin(services: dict[str, Any]) -> None:
    es_env = services["es"]["environment"]
    assert es_env["discovery.type"] == "single-node"
    assert es_env["xpack.security.enabled"] == "false"
    grafana_env = services["grafana"]["environment"]
    assert (grafana_env["GF_SECURITY_ADMIN_USER"], grafana_env["GF_SECURITY_ADMIN_PASSWORD"]) == ("admin", "admin")
    # Prometheus reaches the workers on the host by this name, on Linux too.
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]


def test_compose_defaults_are_what_the_compose_file_publishes(services: dict[str, Any]) -> None:
    endpoints = compose_endpoints({})
    env = services["postgres"]["environment"]
    assert endpoints.database_url == (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@127.0.0.1:5432/{env['POSTGRES_DB']}"
    )
    assert endpoints.es_url == "http://127.0.0.1:9200"
    assert endpoints.otlp_endpoint == "http://127.0.0.1:4318"  # OTLP/HTTP: what the worker's exporter speaks
    assert endpoints.jaeger_url == "http://127.0.0.1:16686"
    assert set(COMPOSE_DEFAULTS) == {DATABASE_URL, ES_URL, JAEGER_URL, OTLP_ENDPOINT}
    overridden = compose_endpoints({ES_URL: "http://127.0.0.1:9201/"})
    assert overridden.es_url == "http://127.0.0.1:9201"


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_runbooks_worker_ports_on_the_host() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for group in jobs["outbox-worker"]["static_configs"] for t in group["targets"]]
    assert targets == [f"host.docker.internal:{port}" for port in RUNBOOK_PORTS]


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install -y prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --------------------------------------------------------------------------- Grafana


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets") or []]


def test_grafana_provisioning_points_at_the_dashboard_and_the_datasource(dashboard: dict[str, Any], services: dict[str, Any]) -> None:
    datasources = [
        ds
        for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
        for ds in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert [(ds["type"], ds["url"]) for ds in datasources] == [("prometheus", "http://prometheus:9090")]
    uid = datasources[0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    providers = [
        p
        for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
        for p in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    mounts = dict(str(v).removesuffix(":ro").split(":")[::-1] for v in services["grafana"]["volumes"] if str(v).startswith("."))
    assert [mounts[p["options"]["path"]] for p in providers] == ["./infra/grafana/dashboards"]


def test_dashboard_is_the_runbooks_with_env_and_projection_variables(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "Wordloom • Outbox + ES Bulk"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"env", "projection"}
    assert "env" in variables["env"]["definition"] and "projection" in variables["projection"]["definition"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for expr in _exprs(dashboard):
        assert 'component="worker"' in expr and 'env=~"$env"' in expr, expr
    # Every panel of the runbook's reading order (2.1) and its drill sections.
    named = {m.group("name") for expr in _exprs(dashboard) for m in _SELECTOR.finditer(expr)}
    assert {
        "outbox_retry_scheduled_total",
        "outbox_failed_total",
        "outbox_terminal_failed_total",
        "outbox_lag_events",
        "outbox_oldest_age_seconds",
        "outbox_stuck_processing_events",
        "outbox_es_bulk_request_duration_seconds_bucket",
        "outbox_es_bulk_requests_total",
        "outbox_es_bulk_item_failures_total",
        "outbox_owner_mismatch_skips_total",
        "outbox_reclaimed_total",
        "outbox_idempotent_noop_total",
    } <= named
    assert 'histogram_quantile(0.95, sum by (le, env) (rate(outbox_es_bulk_request_duration_seconds_bucket{component="worker", env=~"$env"}[5m])))' in _exprs(dashboard)


def test_every_query_names_only_exported_series_and_their_labels(dashboard: dict[str, Any], exported: dict[str, set[str]]) -> None:
    exprs = _exprs(dashboard) + [v["definition"] for v in dashboard["templating"]["list"]]
    for expr in exprs:
        selectors = list(_SELECTOR.finditer(expr))
        assert selectors, expr
        labels_of_expr: set[str] = set()
        for match in selectors:
            name = match.group("name")
            assert name in exported, f"{name} is not exported by the worker (in {expr})"
            matchers = set(_MATCHER_LABEL.findall(match.group("matchers") or ""))
            assert matchers <= exported[name], f"{name} has no label {matchers - exported[name]} (in {expr})"
            labels_of_expr |= exported[name]
        for group in _BY.findall(expr):
            by = {label.strip() for label in group.split(",") if label.strip()}
            assert by <= labels_of_expr, f"grouping by {by - labels_of_expr}, which the series lack (in {expr})"
        for label in re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr):
            assert label in labels_of_expr, expr


def test_exported_series_are_the_contracts(exported: dict[str, set[str]]) -> None:
    if not CONTRACT.exists():
        pytest.skip(f"{CONTRACT} is not beside the repository")
    table = re.findall(r"^\| `(outbox_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", CONTRACT.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(table) == 16
    expected: set[str] = set()
    for name, kind in table:
        if kind == "histogram":
            expected |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            expected.add(name)
    assert {name for name in exported if not name.endswith("_created")} == expected
