"""Drill A end to end on the real embedded servers, and proof that its verdict can fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drillui.evidence.checks import Verdict
from drillui.evidence.verify import verify
from drillui.record.events import Event, PhaseChanged, Said
from drillui.record.reader import read_run
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DrillRunner, RunOptions
from drillui.scenarios import Drill, MetricCheck, NoFault, load_catalog

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def infra(drill_infra: Infrastructure) -> Infrastructure:
    return drill_infra


@pytest.fixture
def drill_a() -> Drill:
    return load_catalog(ROOT / "scenarios.yaml").get("es_down_connect")


def _run(drill: Drill, infra: Infrastructure, snapshots: Path) -> tuple[Verdict, list[Event]]:
    seen: list[Event] = []
    verdict = DrillRunner(drill, infra, RunOptions(snapshots=snapshots, duration=3), on_event=seen.append).run()
    return verdict, seen


def test_drill_a_passes_and_leaves_the_snapshot_of_the_contract(drill_a: Drill, infra: Infrastructure, tmp_path: Path) -> None:
    verdict, events = _run(drill_a, infra, tmp_path)
    assert verdict.passed, [c for c in verdict.checks if not c.passed]
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.index("arming") < phases.index("running") < phases.index("recovering") < phases.index("ended")

    run = Path(verdict.snapshot)
    assert run.parent == tmp_path / "es_down_connect"
    for rel in ("_recipe.json", "_metrics/metrics-before.txt", "_metrics/metrics-after.txt", f"_logs/worker-{run.name}.log",
                "_result.json", "_ids.json", "_summary.md", "_progress.log", "_events.jsonl", "_manifest.json"):
        assert (run / rel).is_file(), rel
    exports = [p for p in (run / "_exports").glob("*.json") if p.name != "_queries.json"]
    assert exports, "no trace export written"
    recipe_text = (run / "_recipe.json").read_text()
    assert infra.endpoints.database_url not in recipe_text, "a full DSN leaked into the recipe"
    result = json.loads((run / "_result.json").read_text())
    assert result["verdict"] == "pass" and result["state"] == "passed"
    by_id = {c["id"]: c for c in result["checks"]}
    assert float(by_id['metric:outbox_retry_scheduled_total{reason="es_connect"}']["observed"].split()[0]) >= 1
    ids = json.loads((run / "_ids.json").read_text())
    assert ids["outbox_event_id"] and ids["claim_batch_id"] and ids["outbox_event_id"] != ids["entity_ids"][0]

    # verify offline, on a copy, recomputes the same verdict from the record
    copy = tmp_path / "copy" / "es_down_connect" / run.name
    shutil.copytree(run, copy)
    again = verify(read_run(copy), drill_a)
    assert again.consistent, again.differences
    assert [(c.id, c.state, c.observed) for c in again.recomputed.checks] == [(c.id, c.state, c.observed) for c in verdict.checks]


def test_drill_a_fails_when_the_fault_is_left_out(drill_a: Drill, infra: Infrastructure, tmp_path: Path) -> None:
    control = drill_a.model_copy(update={"fault": NoFault(type="none")})
    verdict, _ = _run(control, infra, tmp_path)
    assert not verdict.passed
    failed = {c.id for c in verdict.checks if not c.passed}
    assert 'metric:outbox_retry_scheduled_total{reason="es_connect"}' in failed
    assert any(c.startswith("log:outbox.retry_scheduled") for c in failed)
    assert any(c.startswith("trace:projection.process_batch-by-claim_batch_id") for c in failed)


def test_drill_a_fails_when_an_expected_signal_is_changed(drill_a: Drill, infra: Infrastructure, tmp_path: Path) -> None:
    wrong = drill_a.expect.model_copy(
        update={"metrics": [MetricCheck(selector='outbox_retry_scheduled_total{reason="es_429"}', change=">= 1")]}
    )
    verdict, _ = _run(drill_a.model_copy(update={"expect": wrong}), infra, tmp_path)
    assert not verdict.passed
    # Without Prometheus the PromQL checks are not applicable (skipped), not failed.
    assert [c.id for c in verdict.checks if c.state == "failed"] == ['metric:outbox_retry_scheduled_total{reason="es_429"}']


def test_cli_runs_drill_a_on_its_own_stack_with_a_json_verdict(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ES_URL", "JAEGER_URL", "OTEL_EXPORTER_OTLP_ENDPOINT")}
    env["DRILLUI_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        [sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), "run", "A", "--json",
         "--duration", "3", "--snapshots", str(tmp_path / "snaps")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict = json.loads(proc.stdout)
    assert verdict["verdict"] == "pass" and verdict["scenario"] == "es_down_connect"
    assert "fault armed" in proc.stderr and "stack stopped" in proc.stderr
    assert not (tmp_path / "state" / "stack.json").exists()


def test_drill_a_on_an_engine_drillui_does_not_manage_uses_a_dead_port(drill_a: Drill, infra: Infrastructure, tmp_path: Path) -> None:
    unmanaged = Infrastructure(infra.endpoints, None, "external engine")
    verdict, events = _run(drill_a, unmanaged, tmp_path)
    assert verdict.passed, [c for c in verdict.checks if not c.passed]
    [armed] = [c for c in verdict.checks if c.id == "fault:armed"]
    assert "workers restarted with ES_URL=http://127.0.0.1:" in armed.observed and "Connection refused" in armed.observed
    # started, restarted dead, restarted back
    assert sum("worker worker up" in e.message for e in events if isinstance(e, Said)) == 3
