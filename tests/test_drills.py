"""Drills B-P and Z end to end on the real embedded servers: each passes, and each fails without its fault.

The failing twin is the proof that every drill's checks can fail: with the fault left out, the
evidence the drill is about must be missing and the verdict must say so.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from drillui.evidence.verify import verify
from drillui.record.events import Event, Said
from drillui.record.reader import read_run
from drillui.runner.infra import Infrastructure
from drillui.runner.runner import DrillRunner, RunOptions
from drillui.scenarios import NoFault, load_catalog

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")
LETTERS = [d.letter for d in CATALOG.drills if d.letter != "A"]  # A has its own module
FAULTED = [letter for letter in LETTERS if not CATALOG.get(letter).control]  # a control has no fault to leave out

# The checks that carry each drill's point: without the fault they must be among the failures.
CORE_FAILURES = {
    "B": 'metric:outbox_retry_scheduled_total{reason="es_429"}',
    "C": 'metric:outbox_terminal_failed_total{reason="es_4xx"}',
    "D": 'metric:outbox_es_bulk_requests_total{result="partial"}',
    "E": "metric:outbox_owner_mismatch_skips_total",
    "F": "metric:outbox_reclaimed_total",
    "G": 'metric:outbox_idempotent_noop_total{op="delete",reason="es_404"}',
    "H": "db:chronicle_versions",
    "I": "log:tracing.disabled",
    "J": "log:tracing.startup[enabled=true, collector_reachable=false]",
    "K": "trace:outbox.process-by-obs_schema[wordloom.obs_schema=labs-009-v1, result=ok]",
    "L": "trace:projection.process_batch-by-claim_batch_id[result=ok]>outbox.process[result=failed, reason=es_4xx, status=ERROR]",
    "M": "trace:projection.process_batch-by-claim_batch_id[result=partial, failed_count=1, reason=es_4xx]",
    "N": "log:db.unavailable[reason=db_error]",
    "O": 'metric:p95:outbox_es_bulk_request_duration_seconds',
    "P": 'metric:outbox_terminal_failed_total{reason="es_connect"}',
}
# What else each of them must miss without its fault (the drill's other half of the story).
ALSO_FAILING = {
    "I": {"log:outbox.retry_scheduled[reason=es_connect]", "trace:outbox.process-by-outbox_event_id"},
    "J": {"log:tracing.export_failed", "db:doctor_otlp_protocol", "trace:outbox.process-by-outbox_event_id"},
    "K": {"trace:outbox.process-by-outbox_event_id", "log:obs.schema[obs_schema=labs-009-v1]"},
    "N": {"db:trigger_status_after", "log:db.recovered"},
    "O": {'metric:outbox_retry_scheduled_total{reason="es_timeout"}'},
    "P": {"db:failed_listed", "db:trigger_status_after"},
}


@pytest.mark.parametrize("letter", LETTERS)
def test_drill_passes_within_20s_and_verifies_offline(letter: str, drill_infra: Infrastructure, tmp_path: Path) -> None:
    drill = CATALOG.get(letter)
    began = time.monotonic()
    verdict = DrillRunner(drill, drill_infra, RunOptions(snapshots=tmp_path)).run()
    took = time.monotonic() - began
    assert verdict.passed, json.dumps([c.__dict__ for c in verdict.checks if not c.passed], indent=1)
    assert took <= 20, f"drill {letter} took {took:.1f}s"
    run = Path(verdict.snapshot)
    copy = tmp_path / "copied" / drill.id / run.name
    shutil.copytree(run, copy)
    again = verify(read_run(copy), drill)
    assert again.consistent, again.differences
    assert [(c.id, c.state, c.observed) for c in again.recomputed.checks] == [(c.id, c.state, c.observed) for c in verdict.checks]


@pytest.mark.parametrize("letter", FAULTED)
def test_drill_fails_when_its_fault_is_left_out(letter: str, drill_infra: Infrastructure, tmp_path: Path) -> None:
    drill = CATALOG.get(letter)
    control = drill.model_copy(update={"fault": NoFault(type="none"), "duration": min(drill.duration, 3.0)})
    verdict = DrillRunner(control, drill_infra, RunOptions(snapshots=tmp_path)).run()
    assert not verdict.passed
    failed = {c.id for c in verdict.checks if not c.passed}
    assert CORE_FAILURES[letter] in failed, failed
    assert ALSO_FAILING.get(letter, set()) <= failed, failed


def test_the_control_drill_fails_when_something_is_wrong(drill_infra: Infrastructure, tmp_path: Path) -> None:
    """The control's twin: with a real fault put in, its "nothing is wrong" checks must fail."""
    from drillui.scenarios import EngineUnreachable

    control = next(d for d in CATALOG.drills if d.control)
    broken = control.model_copy(update={"fault": EngineUnreachable(type="engine_unreachable"), "duration": 2.0})
    verdict = DrillRunner(broken, drill_infra, RunOptions(snapshots=tmp_path)).run()
    assert not verdict.passed
    failed = {c.id for c in verdict.checks if not c.passed}
    assert "metric:outbox_retry_scheduled_total" in failed, failed


def test_a_fault_that_cannot_prove_it_is_armed_fails_loudly(drill_infra: Infrastructure, tmp_path: Path) -> None:
    drill = CATALOG.get("E")
    one_worker = drill.workload.model_copy(update={"workers": drill.workload.workers[:1]})
    seen: list[Event] = []
    verdict = DrillRunner(
        drill.model_copy(update={"workload": one_worker}), drill_infra, RunOptions(snapshots=tmp_path), on_event=seen.append,
    ).run()
    assert not verdict.passed
    [armed] = [c for c in verdict.checks if c.id == "fault:armed"]
    assert not armed.passed and "contention needs two" in armed.observed
    assert any(e.message.startswith("FAULT NOT ARMED") for e in seen if isinstance(e, Said))
    assert not (Path(verdict.snapshot) / "_metrics" / "metrics-after.txt").exists()  # the clock never started


@pytest.mark.parametrize("letter", ["N", "O"])
def test_a_drill_the_infrastructure_cannot_do_is_refused_before_anything_is_recorded(letter: str, drill_infra: Infrastructure,
                                                                                     tmp_path: Path) -> None:
    from dataclasses import replace

    from drillui.runner.runner import NotPossibleHere

    bare = replace(drill_infra, engine=None, postgres=None, mode="docker (compose project drillui)")
    with pytest.raises(NotPossibleHere, match="run it on the embedded stack"):
        DrillRunner(CATALOG.get(letter), bare, RunOptions(snapshots=tmp_path)).run()
    assert not list(tmp_path.iterdir()), "a refused run leaves no folder"
