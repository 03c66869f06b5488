"""Training mode graded on real recorded evidence: the event logs of one real run of each drill
(`tests/fixtures/runs/`). Every answer is checked against what that run recorded; the right ids
are read here from the raw record (its log lines, spans, rows), independently of the grader.

No server: the live side (a real runner grading answers from its inbox, the red herrings, the
blind screen with the trainer's view as a second app) is in test_training_live.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillui.errors import UsageError
from drillui.evidence.state import RunState
from drillui.record.eventlog import iter_events
from drillui.record.events import (
    AnswerGiven,
    Event,
    HintGiven,
    LogLinesSeen,
    MetricsSampled,
    ProbeRecorded,
    RunStarted,
    SpansSeen,
)
from drillui.record.reader import read_run
from drillui.scenarios import Drill, Question, load_catalog, parse_catalog
from drillui.training.answers import answer, fold
from drillui.training.grading import CLASS_CHOICES, check_catalog, failure_classes, grade
from drillui.training.score import WRONG_COST, summarize
from drillui.training.scoreboard import scoreboard

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path(__file__).resolve().parent / "fixtures" / "runs"
CATALOG = load_catalog(ROOT / "scenarios.yaml")


def unpack(root: Path, drill_id: str) -> Path:
    """The recorded run of a drill as a run folder under `root` (a snapshots root)."""
    (gz,) = RUNS.glob(f"{drill_id}-*.events.jsonl.gz")
    run_id = gz.name.removeprefix(f"{drill_id}-").removesuffix(".events.jsonl.gz")
    folder = root / drill_id / run_id
    folder.mkdir(parents=True)
    (folder / "_events.jsonl").write_bytes(gzip.decompress(gz.read_bytes()))
    return folder


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunState]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for gz in RUNS.glob("*.events.jsonl.gz"):
        drill_id = gz.name.split("-")[0]
        out[drill_id] = fold(unpack(root, drill_id)).state
    return out


def question(drill_id: str, qid: str) -> Question:
    return next(q for q in CATALOG.get(drill_id).questions if q.id == qid)


def events(state_or_folder: Path) -> Iterator[Event]:
    return read_run(state_or_folder).iter_events()


def log_fields(state: RunState, event: str) -> list[dict[str, Any]]:
    """The raw JSON log lines of one event name, as the workers wrote them."""
    out = []
    for n in range(state.logs.first, state.logs.total):
        rec = state.logs.record(n)
        if rec.event == event:
            out.append(dict(rec.fields))
    return out


def spans(state: RunState, operation: str) -> list[Any]:
    return [s for s in state.spans.spans.values() if s.operation == operation]


# ---- the failure class ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drill_id", "right", "wrong"),
    [
        ("es_down_connect", ["es_connect"], ["es_404", "es_timeout", "nothing_wrong"]),
        ("es_429", ["es_429"], ["es_5xx", "es_connect"]),
        ("es_write_block_4xx", ["es_4xx"], ["es_connect", "es_5xx"]),
        ("es_bulk_partial", ["es_4xx"], ["nothing_wrong", "invalid_payload"]),
        # The loser's late writes are rejected by version (409s): the lost lease names the class.
        ("db_claim_contention", ["lease_lost"], ["es_409", "db_error"]),
        ("stuck_reclaim", ["lease_lost"], ["es_timeout", "nothing_wrong"]),
        # Two noop reasons in equal numbers: either names it.
        ("duplicate_delivery", ["es_404", "es_409"], ["es_connect", "lease_lost"]),
        ("control_nothing_wrong", ["nothing_wrong", "nothing is wrong", "none"], ["es_connect", "lease_lost"]),
        # Tracing off is not the failure: the engine outage behind it is, and the metrics say so.
        ("tracing_disabled", ["es_connect"], ["nothing_wrong", "es_timeout"]),
        ("batch_result_early", ["es_4xx"], ["nothing_wrong", "es_5xx"]),
        ("bulk_no_event_span", ["es_4xx"], ["nothing_wrong", "invalid_payload"]),
        # A timed-out write may land later (an es_409 noop after the recovery): the timeouts dominate.
        ("es_slow_timeout", ["es_timeout"], ["es_409", "es_connect"]),
        ("attempts_exhausted", ["es_connect"], ["es_4xx", "nothing_wrong"]),
    ],
)
def test_failure_class_is_read_from_the_runs_metrics(recorded: dict[str, RunState], drill_id: str, right: list[str],
                                                     wrong: list[str]) -> None:
    state = recorded[drill_id]
    q = question(drill_id, "cause")
    for value in right:
        g = grade(q, value, state)
        assert g.right and g.counted, (value, g)
        assert "workers' metrics" in g.evidence or "no retry" in g.evidence
    for value in wrong:
        g = grade(q, value, state)
        assert not g.right and g.counted, (value, g)
        # A wrong answer is never told the right one.
        assert not any(r in g.evidence for r in right if r != value), g.evidence


def test_a_class_that_is_not_one_is_not_counted(recorded: dict[str, RunState]) -> None:
    g = grade(question("es_429", "cause"), "too many requests", recorded["es_429"])
    assert not g.right and not g.counted
    assert "es_429" in g.evidence  # the list of the choices, not the answer: every class is in it
    assert all(c in g.evidence for c in CLASS_CHOICES)


def test_a_red_herring_carries_no_reason(tmp_path: Path) -> None:
    """A sidecar's warnings and a harmless metric that moves change nothing in the class."""
    state = fold(unpack(tmp_path, "control_nothing_wrong")).state
    warn = json.dumps({"ts": "2026-12-01T18:00:50Z", "level": "warning", "event": "cache.refresh_slow",
                       "service": "search-cache-warmer", "msg": "cache refresh took 2.1s (budget 1.0s)", "worker_id": "sidecar"})
    state.apply(LogLinesSeen(worker="sidecar", file="_logs/sidecar.log", start=0, end=len(warn) + 1, first_line=1, lines=(warn,)))
    latest = next(iter(state.metrics.latest.values()))
    moved = [(s.name, dict(s.labels), s.value + 40, s.kind) for s in latest.samples if s.name == "outbox_processed_total"]
    state.apply(MetricsSampled(worker=next(iter(state.metrics.latest)), phase="live", taken_at=latest.taken_at + 1,
                               samples=tuple(moved), full=False))
    assert failure_classes(state)[0] == ["nothing_wrong"]
    assert grade(question("control_nothing_wrong", "cause"), "nothing_wrong", state).right


# ---- ids: right when this run recorded them with the property ---------------------------------------


def test_a_retried_event_is_one_the_logs_show_retried(recorded: dict[str, RunState]) -> None:
    state = recorded["es_down_connect"]
    retried = {f["outbox_event_id"] for f in log_fields(state, "outbox.retry_scheduled")}
    assert retried
    q = question("es_down_connect", "retried")
    event_id = next(iter(retried))
    assert grade(q, event_id, state).right
    assert grade(q, event_id[:8], state).right, "the shortened id the panels show is enough"
    trace_id = spans(state, "outbox.process")[0].trace_id
    g = grade(q, trace_id, state)
    assert not g.right and g.counted and "not one of this run's event ids" in g.evidence
    g = grade(q, str(uuid.uuid4()), state)
    assert not g.right and g.counted
    short = grade(q, event_id[:3], state)
    assert not short.counted and "at least 6 characters" in short.evidence


def test_the_trace_of_a_retried_batch(recorded: dict[str, RunState]) -> None:
    state = recorded["es_429"]
    q = question("es_429", "batch")
    retried = {s.trace_id for s in spans(state, "outbox.process") if s.attributes.get("result") == "retry"}
    clean = {s.trace_id for s in spans(state, "projection.process_batch")} - retried
    assert retried and clean
    assert grade(q, next(iter(retried)), state).right
    g = grade(q, next(iter(clean)), state)
    assert not g.right and g.counted and "not the trace_id of a batch that was retried" in g.evidence


def test_the_event_that_failed_terminally_and_the_partial_batch(recorded: dict[str, RunState]) -> None:
    state = recorded["es_bulk_partial"]
    rows = state.probes["trigger_rows"]
    failed = [r["outbox_event_id"] for r in rows if r["status"] == "failed"]
    done = [r["outbox_event_id"] for r in rows if r["status"] == "done"]
    assert len(failed) == 1 and done
    q = question("es_bulk_partial", "failed")
    assert grade(q, failed[0], state).right
    assert not grade(q, done[0], state).right
    partial = [s.attributes["wordloom.claim_batch_id"] for s in spans(state, "projection.process_batch")
               if s.attributes.get("result") == "partial"]
    qb = question("es_bulk_partial", "batch")
    assert partial and grade(qb, str(partial[0]), state).right
    g = grade(qb, failed[0], state)
    assert not g.right and "not one of this run's batch ids" in g.evidence


def test_a_write_blocked_event_failed_even_though_it_was_requeued(recorded: dict[str, RunState]) -> None:
    state = recorded["es_write_block_4xx"]
    (row,) = state.probes["trigger_rows"]
    assert row["status"] == "done", "requeued after the block was lifted"
    assert grade(question("es_write_block_4xx", "failed"), row["outbox_event_id"], state).right


def test_workers_that_lost_and_took_a_lease(recorded: dict[str, RunState]) -> None:
    state = recorded["stuck_reclaim"]
    (audit,) = log_fields(state, "outbox.reclaimed")
    holder, rescuer = audit["reclaimed_from"].split("@")[0], audit["reclaimed_by"].split("@")[0]
    assert (holder, rescuer) == ("worker1", "worker2"), "the runner kills the first worker holding the batch"
    assert grade(question("stuck_reclaim", "holder"), holder, state).right
    assert not grade(question("stuck_reclaim", "holder"), rescuer, state).right
    assert grade(question("stuck_reclaim", "rescuer"), rescuer, state).right
    assert grade(question("stuck_reclaim", "rescuer"), audit["reclaimed_by"], state).right
    assert not grade(question("stuck_reclaim", "rescuer"), holder, state).right
    # "worker" starts both workers' ids: not an answer.
    g = grade(question("stuck_reclaim", "holder"), "worker", state)
    assert not g.counted and "give more of it" in g.evidence

    state = recorded["db_claim_contention"]
    losers = {f["worker_id"].split("@")[0] for f in log_fields(state, "outbox.owner_mismatch")}
    assert len(losers) == 1
    (loser,) = losers
    winner = ({"worker1", "worker2"} - losers).pop()
    assert grade(question("db_claim_contention", "loser"), loser, state).right
    assert not grade(question("db_claim_contention", "loser"), winner, state).right


def test_a_noop_event_and_the_newer_rule_worker(recorded: dict[str, RunState]) -> None:
    state = recorded["duplicate_delivery"]
    noops = {f["outbox_event_id"] for f in log_fields(state, "outbox.idempotent_noop")}
    processed = {f["outbox_event_id"] for f in log_fields(state, "outbox.processed")} - noops
    assert noops and processed
    q = question("duplicate_delivery", "noop")
    assert all(grade(q, e, state).right for e in noops)
    assert not grade(q, next(iter(processed)), state).right

    state = recorded["projection_version"]
    q = question("projection_version", "newer")
    assert grade(q, "worker-v2", state).right
    assert not grade(q, "worker-v1", state).right


# ---- yes / no about the data -----------------------------------------------------------------------


def test_facts_about_the_data(recorded: dict[str, RunState]) -> None:
    assert grade(question("es_down_connect", "lost"), "no", recorded["es_down_connect"]).right
    assert not grade(question("es_down_connect", "lost"), "yes", recorded["es_down_connect"]).right
    assert grade(question("db_claim_contention", "twice"), "no", recorded["db_claim_contention"]).right
    assert grade(question("projection_version", "label"), "no", recorded["projection_version"]).right
    g = grade(question("es_down_connect", "lost"), "perhaps", recorded["es_down_connect"])
    assert not g.counted


def test_a_row_gone_from_the_outbox_is_a_lost_event(tmp_path: Path) -> None:
    state = fold(unpack(tmp_path, "es_429")).state
    rows = state.probes["trigger_rows"]
    q = question("es_429", "lost")
    assert grade(q, "no", state).right
    state.apply(ProbeRecorded(name="trigger_rows", value=rows[1:]))
    g = grade(q, "yes", state)
    assert g.right and "1 of the 6 event(s) the run wrote are no longer in the outbox" in g.evidence
    state.apply(ProbeRecorded(name="trigger_rows", value=rows))
    state.apply(ProbeRecorded(name="documents_latest", value=False))
    assert grade(q, "yes", state).right


# ---- the observability drills: spans, trace ids, schemas, the batch that says ok --------------------------


def test_tracing_off_and_a_wrong_otlp_port_tell_apart_by_the_trace_id(recorded: dict[str, RunState]) -> None:
    """Tracing off: no span and no trace_id. A collector that is not one: no span, yet trace_ids."""
    off, wrong = recorded["tracing_disabled"], recorded["otlp_port_mismatch"]
    assert not [f for f in log_fields(off, "outbox.retry_scheduled") if "trace_id" in f]
    assert all("trace_id" in f for f in log_fields(wrong, "outbox.processed"))
    assert not spans(off, "outbox.process") and not spans(wrong, "outbox.process")
    for drill_id, traced in (("tracing_disabled", False), ("otlp_port_mismatch", True)):
        state = recorded[drill_id]
        right, wrong_answer = ("yes", "no") if traced else ("no", "yes")
        g = grade(question(drill_id, "traced"), right, state)
        assert g.right and g.counted, g
        assert not grade(question(drill_id, "traced"), wrong_answer, state).right
        assert grade(question(drill_id, "spans"), "no", state).right
        g = grade(question(drill_id, "spans"), "yes", state)
        assert not g.right and "is not what this run's evidence says" in g.evidence
    # The same fact on a run whose spans did arrive: yes.
    assert grade(question("otlp_port_mismatch", "spans"), "yes", recorded["es_down_connect"]).right


def test_the_stale_worker_and_what_its_old_key_holds(recorded: dict[str, RunState]) -> None:
    state = recorded["stale_obs_schema"]
    (start,) = [f for f in log_fields(state, "obs.schema")]
    assert start["obs_schema"] == "labs-009-v1"
    old = spans(state, "outbox.process")
    assert old and all("wordloom.outbox_event_id" not in s.attributes for s in old)
    entities = set(state.entity_ids.list())
    assert {str(s.attributes["wordloom.outbox.id"]) for s in old} <= entities, "the old key holds the entity id"
    q = question("stale_obs_schema", "stale")
    assert grade(q, start["worker_id"], state).right
    assert grade(q, start["worker_id"].split("@")[0], state).right
    assert grade(question("stale_obs_schema", "oldkey"), "no", state).right
    assert not grade(question("stale_obs_schema", "oldkey"), "yes", state).right
    assert grade(question("stale_obs_schema", "spans"), "yes", state).right, "the spans are there, under other keys"
    # A current worker is not stale: the same question on a run of drill A has no right worker.
    a = recorded["es_down_connect"]
    worker = log_fields(a, "obs.schema")[0]["worker_id"]
    g = grade(q, worker, a)
    assert not g.right and g.counted and "old observability schema" in g.evidence


def test_the_batch_whose_span_says_ok_over_a_failed_child(recorded: dict[str, RunState]) -> None:
    state = recorded["batch_result_early"]
    batches = spans(state, "projection.process_batch")
    failed_children = {s.parent_span_id for s in spans(state, "outbox.process") if s.status == "ERROR"}
    liars = [str(b.attributes["wordloom.claim_batch_id"]) for b in batches
             if b.attributes.get("result") == "ok" and b.span_id in failed_children]
    assert len(liars) == 1
    q = question("batch_result_early", "liar")
    assert grade(q, liars[0], state).right
    assert grade(q, liars[0][:8], state).right
    event = log_fields(state, "outbox.failed")[0]["outbox_event_id"]
    assert not grade(q, event, state).right, "an event id is not a batch id"
    # Drill D's partial batch never says ok: no batch of that run has the property.
    d = recorded["es_bulk_partial"]
    partial = str(spans(d, "projection.process_batch")[0].attributes["wordloom.claim_batch_id"])
    assert not grade(q, partial, d).right


def test_bulk_mode_failed_event_has_no_event_span(recorded: dict[str, RunState]) -> None:
    state = recorded["bulk_no_event_span"]
    (batch_line,) = [f for f in log_fields(state, "projection.batch_processed") if f.get("result") == "partial"]
    (failed,) = batch_line["failed_outbox_event_ids"]
    assert grade(question("bulk_no_event_span", "failed"), failed, state).right
    assert not spans(state, "outbox.process")
    assert grade(question("bulk_no_event_span", "span"), "no", state).right
    assert not grade(question("bulk_no_event_span", "span"), "yes", state).right
    # In single-document mode the failed event has its span: drill C's run says yes.
    assert grade(question("bulk_no_event_span", "span"), "yes", recorded["es_write_block_4xx"]).right


def test_postgres_away_the_worker_that_lost_it_and_came_back(recorded: dict[str, RunState], tmp_path: Path) -> None:
    state = recorded["pg_unavailable"]
    (down,) = log_fields(state, "db.unavailable")
    (back,) = log_fields(state, "db.recovered")
    assert down["reason"] == "db_error" and back["worker_id"] == down["worker_id"]
    assert grade(question("pg_unavailable", "who"), down["worker_id"].split("@")[0], state).right
    assert grade(question("pg_unavailable", "back"), "yes", state).right
    assert not grade(question("pg_unavailable", "back"), "no", state).right
    # While Postgres is still away the run cannot tell: the answer is recorded, not counted.
    during = RunState(CATALOG.get("pg_unavailable"))
    for ev in events(unpack(tmp_path, "pg_unavailable")):
        if isinstance(ev, LogLinesSeen) and any('"db.recovered"' in line for line in ev.lines):
            break
        during.apply(ev)
    g = grade(question("pg_unavailable", "back"), "no", during)
    assert not g.counted and g.evidence.startswith("not yet:"), g
    assert grade(question("pg_unavailable", "lost"), "no", state).right
    assert [r["status"] for r in state.probes["trigger_rows"]] == ["done"] * 5
    # No outage in drill A's run: nobody lost Postgres, and nobody came back.
    a = recorded["es_down_connect"]
    assert not grade(question("pg_unavailable", "who"), log_fields(a, "obs.schema")[0]["worker_id"], a).right
    assert grade(question("pg_unavailable", "back"), "no", a).right


def test_a_timed_out_event_and_an_exhausted_one(recorded: dict[str, RunState]) -> None:
    state = recorded["es_slow_timeout"]
    timed_out = {f["outbox_event_id"] for f in log_fields(state, "outbox.retry_scheduled") if f["reason"] == "es_timeout"}
    assert timed_out and grade(question("es_slow_timeout", "retried"), next(iter(timed_out)), state).right
    state = recorded["attempts_exhausted"]
    (last,) = log_fields(state, "outbox.failed")
    assert last["reason"] == "es_connect" and last["attempt"] == 3
    assert grade(question("attempts_exhausted", "failed"), last["outbox_event_id"], state).right
    (row,) = state.probes["trigger_rows"]
    assert row["status"] == "done" and state.probes["failed_listed"] is True, "listed, requeued, done"
    assert grade(question("attempts_exhausted", "lost"), "no", state).right


# ---- hints, score, times from the arming ------------------------------------------------------------


def test_score_hints_and_times_count_from_the_arming(tmp_path: Path) -> None:
    state = fold(unpack(tmp_path, "control_nothing_wrong")).state
    drill = CATALOG.get("control_nothing_wrong")
    assert state.armed_at is not None and state.reverted_at is not None
    armed = state.armed_at
    for at, qid, value, right in ((5.0, "lost", "yes", False), (8.0, "lost", "no", True), (12.0, "cause", "nothing_wrong", True),
                                  (13.0, "cause", "es_connect", False)):
        state.apply(AnswerGiven(wall=armed + at, question=qid, value=value, right=right, evidence="-", by="Ana"))
    state.apply(AnswerGiven(wall=armed + 1, question="lost", value="?", right=False, evidence="-", counted=False))
    state.apply(HintGiven(wall=armed + 3, index=0, text=drill.hints[0]))
    s = summarize(drill, state)
    lost, cause = (next(q for q in s.questions if q.id == i) for i in ("lost", "cause"))
    assert lost.right and lost.earned == lost.points - WRONG_COST and len(lost.answers) == 2
    assert cause.right and cause.earned == cause.points, "a wrong answer after the right one costs nothing"
    assert s.hints_used == 1 and s.score == lost.earned + cause.earned - drill.hint_cost
    assert s.to_first_symptom == 8.0 and s.to_right_cause == 12.0
    assert s.to_recovery == round(state.reverted_at - armed, 1)
    assert s.max_score == sum(q.points for q in drill.questions)


# ---- the catalog check -------------------------------------------------------------------------------


def test_the_bundled_catalog_trains() -> None:
    assert check_catalog(CATALOG.drills) == []
    assert any(d.control and d.fault.type == "none" for d in CATALOG.drills)
    assert sum(1 for d in CATALOG.drills if d.red_herring is not None) >= 2
    for d in CATALOG.drills:
        assert d.questions and d.hints, d.id
        assert {q.kind for q in d.questions} & {"id", "yes_no"}, d.id


def _with(drill_id: str, **changes: Any) -> Drill:
    return CATALOG.get(drill_id).model_copy(update=changes)


@pytest.mark.parametrize(
    ("drill_id", "q", "fragment"),
    [
        # A's evidence is that nothing fails terminally: no run of it can show a failed event.
        ("es_down_connect", {"id": "x", "ask": "?", "kind": "id", "property": "failed_event"},
         "drill es_down_connect: question x asks for failed_event"),
        ("projection_version", {"id": "x", "ask": "?", "kind": "failure_class"},
         "drill projection_version: question x asks for the failure class"),
        ("es_429", {"id": "x", "ask": "?", "kind": "id", "property": "favourite_colour"}, "no property 'favourite_colour'"),
        ("es_429", {"id": "x", "ask": "?", "kind": "yes_no", "property": "applied_twice"}, "asks for applied_twice"),
        ("es_429", {"id": "cause", "ask": "?", "kind": "failure_class"}, "two questions share an id"),
        # Only a drill that compares a batch span with its children can show the batch that says ok.
        ("es_429", {"id": "x", "ask": "?", "kind": "id", "property": "contradicting_batch"}, "asks for contradicting_batch"),
        ("es_429", {"id": "x", "ask": "?", "kind": "yes_no", "property": "worker_reconnected"}, "asks for worker_reconnected"),
        ("es_429", {"id": "x", "ask": "?", "kind": "yes_no", "property": "old_key_is_event_id"}, "asks for old_key_is_event_id"),
        # Postgres away: no metric carries a reason, so there is no failure class to ask for.
        ("pg_unavailable", {"id": "x", "ask": "?", "kind": "failure_class"}, "drill pg_unavailable: question x asks for the failure class"),
        ("otlp_port_mismatch", {"id": "x", "ask": "?", "kind": "failure_class"}, "asks for the failure class"),
    ],
)
def test_the_catalog_check_refuses_what_the_evidence_cannot_answer(drill_id: str, q: dict[str, Any], fragment: str) -> None:
    drill = _with(drill_id, questions=[*CATALOG.get(drill_id).questions, Question.model_validate(q)])
    problems = check_catalog([drill])
    assert problems and fragment in problems[0], problems


def test_a_catalog_with_an_unanswerable_question_is_refused_at_load(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((ROOT / "scenarios.yaml").read_text())
    h = next(d for d in data["drills"] if d["id"] == "projection_version")
    h["questions"].append({"id": "cause", "ask": "What class of failure is this?", "kind": "failure_class"})
    parse_catalog(data, source="x")  # the model is fine: the check is about the evidence
    bad = tmp_path / "scenarios.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(UsageError, match="drill projection_version: question cause asks for the failure class"):
        load_catalog(bad)
    proc = subprocess.run([sys.executable, "-m", "drillui", "--scenarios", str(bad), "list"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "projection_version" in proc.stderr


# ---- drillui answer, scores, the report ---------------------------------------------------------------


def drillui(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drillui", "--scenarios", str(ROOT / "scenarios.yaml"), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def test_drillui_answer_exit_codes_and_what_it_records(tmp_path: Path) -> None:
    folder = unpack(tmp_path / "snapshots", "stuck_reclaim")
    log = (folder / "_events.jsonl").read_bytes()
    run = folder.name

    listed = drillui("answer", run, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "holder" in listed.stdout and "rescuer" in listed.stdout and "expects yes or no" in listed.stdout
    assert "expects one of: es_connect" in listed.stdout

    right = drillui("answer", run, "holder", "worker1", "--by", "Ana", cwd=tmp_path)
    assert right.returncode == 0, right.stderr
    assert right.stdout.startswith("RIGHT") and "log outbox.reclaimed" in right.stdout
    wrong = drillui("answer", f"stuck_reclaim/{run}", "rescuer", "worker1", cwd=tmp_path)
    assert wrong.returncode == 1 and wrong.stdout.startswith("WRONG"), wrong.stdout
    assert drillui("answer", "latest", "cause", "lease_lost", cwd=tmp_path).returncode == 0
    assert drillui("answer", "F", "lost", "no", "--json", cwd=tmp_path).returncode == 0

    for args, fragment in (
        ((run, "nope", "x"), "no question 'nope' (its questions: cause, holder, rescuer, lost)"),
        ((run, "lost", "maybe"), "answer yes or no"),
        ((run, "holder", "work"), "is not an answer: give at least 6 characters"),
        ((run, "holder"), "give the answer after the question"),
        (("20991231T000000", "cause", "x"), "no run 20991231T000000"),
        ((run, "cause", "x" * 300), "is not one"),
    ):
        proc = drillui("answer", *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout)
        assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    assert (folder / "_events.jsonl").read_bytes() == log, "the run's own record is never rewritten"
    later = list(iter_events(folder / "_answers.jsonl"))
    assert [(a.question, a.value, a.right) for a in later if isinstance(a, AnswerGiven)] == [
        ("holder", "worker1", True), ("rescuer", "worker1", False), ("cause", "lease_lost", True), ("lost", "no", True)]
    assert all(isinstance(a, AnswerGiven) and a.after_end and a.via == "answer" for a in later)
    assert later[0].by == "Ana"

    # Every reader of the run reads them after the event log: the score, the scoreboard, the report.
    state = fold(folder).state
    s = summarize(state.drill or CATALOG.get("stuck_reclaim"), state)
    assert s.score == 40 + 30 + 20, "cause, holder and lost right; rescuer wrong; no hint"
    by_q = {q.id: q for q in s.questions}
    assert by_q["holder"].right and not by_q["rescuer"].right and by_q["cause"].right
    board = drillui("scores", "--since", "2026-12-01", cwd=tmp_path)
    assert board.returncode == 0 and "stuck_reclaim" in board.stdout and "Ana" in board.stdout, board.stdout
    report = drillui("report", str(folder), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Training scores" in html and "holder: Which worker held the rows when it died?" in html


def test_scoreboard_per_run_and_per_trainee(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    root = tmp_path / "snapshots"
    for drill_id, who, value in (("es_429", "Ana", "es_429"), ("es_bulk_partial", "Ana", "es_5xx"),
                                 ("control_nothing_wrong", "Ben", "nothing_wrong")):
        folder = unpack(root, drill_id)
        answer(folder, "cause", value, by=who)
    unpack(root, "stuck_reclaim")  # never answered: not a training run
    board = scoreboard(root, "2026-12-01", now=datetime(2026, 12, 1, 23, tzinfo=UTC))
    assert sorted(r.summary["scenario"] for r in board.runs) == ["control_nothing_wrong", "es_429", "es_bulk_partial"]
    people = {t.trainee: t for t in board.trainees}
    assert people["Ana"].runs == 2 and people["Ana"].causes_right == 1
    assert people["Ben"].runs == 1 and people["Ben"].causes_right == 1
    assert board.trainees[0].trainee == "Ben", "ranked by the share of points earned"


def test_an_answer_names_a_question_of_the_recorded_drill(tmp_path: Path) -> None:
    folder = unpack(tmp_path, "es_429")
    started = next(e for e in events(folder) if isinstance(e, RunStarted))
    assert [q["id"] for q in started.drill["questions"]] == ["cause", "batch", "lost"]
    assert any(isinstance(e, SpansSeen) for e in events(folder))
    with pytest.raises(UsageError, match="no question 'holder'"):
        answer(folder, "holder", "worker1")
