"""Prometheus in the embedded stack, the PromQL client, PromQL checks, and the fallback without it.

Against the real `prometheus` binary (Debian's package; CI installs it): the tests that need it
skip, saying why, where it is absent. The client's parsing has focused tests on canned answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from drillui.evidence.state import RunState
from drillui.record.eventlog import read_events
from drillui.record.events import Event, MetricsSampled, PromqlEvaluated
from drillui.runner.infra import Infrastructure
from drillui.runner.promql import promql_event
from drillui.runner.runner import DrillRunner, RunOptions
from drillui.scenarios import DEFAULT_CATALOG, PromqlCheck, load_catalog
from drillui.sources.prometheus import PrometheusClient, PromqlResult, parse_response, range_step
from drillui.stack.prometheus import BINARY_ENV, EmbeddedPrometheus, find_binary
from drillui.stack.stack import Endpoints, Stack

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary on PATH (apt-get install prometheus)")
STEP_QUERY = 'sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component="worker"}[1m]))'


# ---- the client's parsing (canned answers) ------------------------------------------------------


def _base(query: str = "up") -> PromqlResult:
    return PromqlResult(query, 100.0, 110.0, 1.0)


def test_a_matrix_is_parsed_into_series_with_float_points() -> None:
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"reason": "es_connect"}, "values": [[100, "0"], [101, "0.5"], [102, "NaN"]]}]}}
    got = parse_response(_base(), 200, json.dumps(body).encode())
    assert got.ok and got.result_type == "matrix"
    [series] = got.series
    assert series.labels == {"reason": "es_connect"}
    assert series.points[:2] == ((100.0, 0.0), (101.0, 0.5)) and series.points[2][1] != series.points[2][1]


def test_a_bad_query_keeps_prometheus_own_words() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": '1:7: parse error: unexpected "}"'}
    got = parse_response(_base("up{}}"), 400, json.dumps(body).encode())
    assert not got.ok and got.error == '1:7: parse error: unexpected "}"' and got.error_type == "bad_data"


def test_series_past_the_bound_are_counted_not_kept() -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"i": str(i)}, "value": [100, "1"]} for i in range(100)]}}
    got = parse_response(_base(), 200, json.dumps(body).encode())
    assert len(got.series) == 40 and got.omitted == 60


def test_an_unreachable_prometheus_is_an_answer_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http, PrometheusClient("http://127.0.0.1:1", client=http) as c:
        got = c.query("up", 100.0)
    assert got.error_type == "unreachable" and "does not answer" in (got.error or "")


def test_the_step_keeps_a_range_query_bounded() -> None:
    assert range_step(0, 10) == 1.0
    assert range_step(0, 3600) == 15.0  # an hour: 240 points


# ---- the binary, and without it -----------------------------------------------------------------


def test_find_binary_says_how_to_get_it(tmp_path: Path) -> None:
    binary, why = find_binary({"PATH": str(tmp_path)})
    assert binary is None and "apt-get install prometheus" in why
    assert find_binary({BINARY_ENV: "off", "PATH": os.environ.get("PATH", "")})[0] is None
    from drillui.errors import UsageError

    with pytest.raises(UsageError, match="is not an executable file"):
        find_binary({BINARY_ENV: str(tmp_path / "nope")})


def test_a_stack_without_the_binary_says_so_and_runs_without_it(tmp_path: Path) -> None:
    # Every other part comes from the environment: only Prometheus is decided here.
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:5/db", "ES_URL": "http://127.0.0.1:9", "JAEGER_URL": "http://127.0.0.1:16686",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "PATH": str(tmp_path)}
    with Stack.start(tmp_path / "state", env=env) as stack:
        part = next(p for p in stack.parts if p.name == "prometheus")
        assert stack.prometheus is None and stack.endpoints.prometheus_url == ""
        assert part.detail.startswith("not running: no prometheus binary on PATH (apt-get install prometheus")
        assert part.detail.endswith("drills scrape each worker's /metrics directly")
        assert stack.health()["parts"]["prometheus"]["ok"] is None  # optional: not a broken stack
        info = json.loads(stack.info_path.read_text())
        assert info["prometheus_targets"] is None and "apt-get install prometheus" in info["prometheus_note"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[EmbeddedPrometheus]:
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary on PATH (apt-get install prometheus)")
    server = EmbeddedPrometheus(tmp_path / "prometheus", Path(PROMETHEUS))
    server.start()
    yield server
    server.stop()


@needs_prometheus
def test_prometheus_listens_on_loopback_only_and_stops(prometheus: EmbeddedPrometheus) -> None:
    pid = prometheus.pid
    assert pid is not None
    listening = [c.laddr for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert prometheus.health()[0]
    config = (prometheus.folder / "prometheus.yml").read_text()
    assert "scrape_interval: 1s" in config and str(prometheus.targets_dir) in config
    prometheus.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@needs_prometheus
def test_prometheus_ends_when_its_owner_is_killed(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from drillui.stack.prometheus import EmbeddedPrometheus
        p = EmbeddedPrometheus(Path(sys.argv[1]), Path(sys.argv[2]))
        p.start()
        print(p.pid, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "p"), str(PROMETHEUS)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    try:
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        gone = psutil.wait_procs([psutil.Process(pid)], timeout=20)[0]
        assert [p.pid for p in gone] == [pid]
    finally:
        owner.communicate()
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


@needs_prometheus
def test_a_typed_query_and_a_bad_one(prometheus: EmbeddedPrometheus) -> None:
    now = time.time()
    with PrometheusClient(prometheus.url) as client:
        good = client.query("vector(1) + 1", now)
        bad = client.query('sum(rate(outbox_retry_scheduled_total{reason="es_connect"[1m]))', now)
    assert good.ok and good.result_type == "vector" and good.series[0].last == 2.0
    assert bad.error_type == "bad_data" and bad.error is not None and "parse error" in bad.error


# ---- drill A with Prometheus: the step, a typed query, a bad one, checks passing and failing ----


def _infra(drill_infra: Infrastructure, prometheus: EmbeddedPrometheus) -> Infrastructure:
    e = drill_infra.endpoints
    endpoints = Endpoints(e.database_url, e.es_url, e.otlp_endpoint, e.jaeger_url, e.database_direct_url, prometheus.url)
    return Infrastructure(endpoints, drill_infra.engine, "test with prometheus", drill_infra.environ, prometheus.targets_dir)


@needs_prometheus
@pytest.mark.slow
def test_drill_a_promql_step_typed_query_and_checks(drill_infra: Infrastructure, prometheus: EmbeddedPrometheus, tmp_path: Path) -> None:
    base = load_catalog(DEFAULT_CATALOG).get("A")
    failing = PromqlCheck(query='sum(rate(outbox_retry_scheduled_total{reason="es_connect", run="$run"}[1m]))', condition="> 1000")
    drill = base.model_copy(update={"expect": base.expect.model_copy(update={"promql": [*base.expect.promql, failing]})})
    infra = _infra(drill_infra, prometheus)
    seen: list[Event] = []
    retried = threading.Event()

    def listen(ev: Event) -> None:
        seen.append(ev)
        if isinstance(ev, MetricsSampled) and any(n == "outbox_retry_scheduled_total" and v > 0 for n, _, v, _ in ev.samples):
            retried.set()

    runner = DrillRunner(drill, infra, RunOptions(snapshots=tmp_path / "snaps", guided=True, hold=120), on_event=listen)
    answers: dict[str, PromqlResult] = {}

    def trainer() -> None:
        # What the dashboard does on `a` and on a typed query: ask over the drill's time range,
        # record the answer through the runner.
        assert retried.wait(60)
        start = runner.recorder.state.started_wall or time.time()
        with PrometheusClient(prometheus.url) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                step = client.query_range(STEP_QUERY, start, time.time())
                rates = [v for s in step.series if s.labels.get("reason") == "es_connect" for _, v in s.points]
                if rates and max(rates) > 0:
                    break
                time.sleep(0.5)
            answers["step"] = step
            runner.record_promql(promql_event(step, "step", step_index=0))
            answers["typed"] = client.query_range('sum(outbox_retry_scheduled_total{reason="es_connect"})', start, time.time())
            runner.record_promql(promql_event(answers["typed"], "prompt"))
            answers["bad"] = client.query_range('sum(outbox_retry_scheduled_total{reason="es_connect"}', start, time.time())
            runner.record_promql(promql_event(answers["bad"], "prompt"))
        runner.recover_now()

    helper = threading.Thread(target=trainer, daemon=True)
    helper.start()
    verdict = runner.run()
    helper.join(30)

    step = answers["step"]
    es_connect = [s for s in step.series if s.labels.get("reason") == "es_connect"]
    assert es_connect and max(v for _, v in es_connect[0].points) > 0, step
    assert es_connect[0].labels["env"] == "drill" and es_connect[0].labels["projection"] == "search_index_to_elastic"
    assert answers["typed"].ok and answers["typed"].series[0].last is not None and answers["typed"].series[0].last >= 1
    assert answers["bad"].error_type == "bad_data" and "parse error" in (answers["bad"].error or "")

    checks = {c.id: c for c in verdict.checks}
    promql = [c for c in verdict.checks if c.kind == "promql"]
    assert [c.state for c in promql] == ["passed", "passed", "failed"], [(c.id, c.observed) for c in promql]
    assert "never > 1000" in promql[2].observed
    assert verdict.state == "failed" and verdict.why.startswith("1 check(s) failed: promql:")
    assert all(c.state == "passed" for cid, c in checks.items() if not cid.startswith("promql:sum(rate"))

    # The record holds what was asked and answered; a fold of it gives the same.
    events = read_events(Path(verdict.snapshot) / "_events.jsonl")
    recorded = [e for e in events if isinstance(e, PromqlEvaluated)]
    assert [e.purpose for e in recorded].count("check") == 3
    state = RunState().apply_all(events)
    assert state.promql_result(step=0) is not None and state.promql_result(step=0).series  # type: ignore[union-attr]
    assert "parse error" in (state.promql_result(query='sum(outbox_retry_scheduled_total{reason="es_connect"}') or
                             PromqlEvaluated(query="", purpose="", start=0, end=0)).error or ""
    started = events[0]
    assert started.infrastructure["prometheus"] == prometheus.url  # type: ignore[attr-defined]
    assert not list(prometheus.targets_dir.glob("*.json")), "the run's targets file outlived it"


@pytest.mark.slow
def test_drill_a_without_prometheus_passes_and_says_why(drill_infra: Infrastructure, tmp_path: Path) -> None:
    infra = Infrastructure(drill_infra.endpoints, drill_infra.engine, "test", drill_infra.environ,
                           prometheus_note="not running: no prometheus binary on PATH")
    drill = load_catalog(DEFAULT_CATALOG).get("A")
    assert drill.expect.promql, "drill A has PromQL checks"
    verdict = DrillRunner(drill, infra, RunOptions(snapshots=tmp_path / "snaps")).run()
    assert verdict.state == "passed", verdict.why
    promql = [c for c in verdict.checks if c.kind == "promql"]
    assert promql and all(c.state == "skipped" for c in promql)
    assert all(c.observed.startswith("not applicable: no Prometheus in this stack: not running: no prometheus binary")
               and "apt-get install prometheus" in c.observed for c in promql)
    assert "not applicable" in verdict.why
    # The direct scrapes still judge the same signal.
    assert next(c for c in verdict.checks if c.id == 'metric:outbox_retry_scheduled_total{reason="es_connect"}').state == "passed"


def test_run_matcher_scopes_a_check_to_the_run(tmp_path: Path) -> None:
    from drillui.runner.promql import RunPrometheus

    drill = load_catalog(DEFAULT_CATALOG).get("A")
    infra = Infrastructure(Endpoints("postgresql://x@h/d", "http://h:1", "http://h:2", "http://h:2"), None, "docker (compose)")
    rp = RunPrometheus(infra, drill, lambda e: e, lambda m: None)
    rp.run_id = "20270101T000000"
    rp.publish([("worker", "http://127.0.0.1:9108/metrics")])
    assert rp.scope('up{run="$run"}') == 'up{instance=~".+:(9108)"}'
    rp._targets_file = tmp_path / "t.json"  # the stack's own Prometheus: its targets carry the run
    assert rp.scope('up{run="$run"}') == 'up{run="20270101T000000"}'
    rp.publish([("worker", "http://127.0.0.1:9108/metrics")])
    assert json.loads((tmp_path / "t.json").read_text()) == [
        {"targets": ["127.0.0.1:9108"], "labels": {"worker": "worker", "drill": "es_down_connect", "run": "20270101T000000"}}]


# ---- doctor -------------------------------------------------------------------------------------


def _doctor(endpoints: Endpoints, note: str = "") -> tuple[str, str]:
    from drillui.doctor.model import DoctorInputs
    from drillui.doctor.run import run_doctor

    [result] = run_doctor(DoctorInputs(endpoints=endpoints, prometheus_note=note, control_url="http://127.0.0.1:1"),
                          only=["prometheus.promql"])
    return result.status, result.detail


def test_doctor_says_when_there_is_no_prometheus_and_how_to_get_it() -> None:
    status, detail = _doctor(Endpoints("postgresql://x@h/d", "http://h:1", "http://h:2", "http://h:2"),
                             "not running: no prometheus binary on PATH (apt-get install prometheus, ...)")
    assert status == "skip" and detail.startswith("no Prometheus: not running: no prometheus binary")
    assert "drills scrape each worker's /metrics directly" in detail


@needs_prometheus
def test_doctor_says_the_stack_prometheus_runs(prometheus: EmbeddedPrometheus) -> None:
    status, detail = _doctor(Endpoints("postgresql://x@h/d", "http://h:1", "http://h:2", "http://h:2", prometheus_url=prometheus.url))
    assert status == "pass" and detail.startswith("Prometheus 2.") and prometheus.url in detail
