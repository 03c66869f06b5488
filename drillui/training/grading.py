"""Grading a trainee's answer from what the run recorded — never from a string in the catalog.

Why: a checker that compares against an answer key is only as reliable as the key, and a drill
whose fault did not really bite would still grade "right". Here every question names a property
of the run's evidence, and the grader reads this run's recorded observations (spans, log lines,
rows, metric samples) to decide:

- `failure_class`: the reason that dominates what went wrong in this run — retries, failures,
  idempotent noops, lost leases — read from the workers' metrics; "nothing_wrong" when nothing
  did. A red herring (a warning from a sidecar, a noisy harmless metric) carries no reason.
- `id` questions: the value is right when it is one of this run's ids with the asked property in
  the recorded evidence (prefixes accepted, as ids are shown shortened).
- `yes_no`: a fact about the data (was an event lost?), computed from the recorded rows.

`check_catalog` refuses a question the drill's evidence cannot answer, naming the drill.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from drillui.evidence.state import RunState
from drillui.scenarios import Drill, Question
from drillui.sources.logs import LogRecord
from drillui.sources.metrics import delta
from worker.contract import ATTR_OBS_SCHEMA, ATTR_OLD_OUTBOX_ID, OBS_SCHEMA, REASONS

NOTHING_WRONG: Final = "nothing_wrong"
CLASS_CHOICES: Final[tuple[str, ...]] = (*REASONS, NOTHING_WRONG)
MIN_PREFIX: Final = 6


@dataclass(frozen=True)
class Grade:
    question: str
    value: str
    right: bool
    evidence: str
    """What decided it, in words a trainer can read out."""
    counted: bool = True
    """False for an answer that is not one (too short an id, one prefix of several ids, not a
    class): recorded, never scored."""


# ---- reading the evidence ------------------------------------------------------------------------


def _records(state: RunState) -> Iterable[LogRecord]:
    logs = state.logs
    for n in range(logs.first, logs.total):
        yield logs.record(n)


NOOP_REASONS: Final = frozenset({"es_404", "es_409", "superseded"})
# Within the dominant tier, a reason at least this share of the top one is "dominant" too: two
# noop reasons of a duplicate delivery come in equal numbers, and either names the class.
CLOSE_SHARE: Final = 0.5


def failure_reasons(state: RunState) -> Counter[str]:
    """How often each reason showed up in what went wrong, over every worker, since the start.
    Retries and failures count once each (a retry is also counted in outbox_failed_total)."""
    m = state.metrics
    out: Counter[str] = Counter()
    for family in ("outbox_retry_scheduled_total", "outbox_terminal_failed_total", "outbox_idempotent_noop_total"):
        for worker, snap in m.latest.items():
            for reason in {s.labels.get("reason", "") for s in snap.series(family)}:
                moved = delta(m.baseline(worker), snap, f'{family}{{reason="{reason}"}}') if reason else 0.0
                if moved > 0 and math.isfinite(moved):
                    out[reason] += int(moved)
    lost = sum(delta(m.baseline(w), snap, "outbox_owner_mismatch_skips_total") for w, snap in m.latest.items())
    lost += sum(delta(m.baseline(w), snap, "outbox_reclaimed_total") for w, snap in m.latest.items())
    if lost > 0 and math.isfinite(lost):
        out["lease_lost"] += int(lost)
    return out


def _tier(reason: str) -> int:
    """What names a failure first: a retry or failure, then a lost lease, then noops (which are
    the absorption of a failure elsewhere, e.g. the second apply of a contended row)."""
    return 2 if reason in NOOP_REASONS else 1 if reason == "lease_lost" else 0


def failure_classes(state: RunState) -> tuple[list[str], str]:
    """(the right classes, why): the dominant reason(s) of this run, or nothing_wrong."""
    counts = failure_reasons(state)
    if not counts:
        return [NOTHING_WRONG], "no retry, failure, noop or lost lease in this run's metrics"
    tier = min(_tier(r) for r in counts)
    ranked = sorted(((n, r) for r, n in counts.items() if _tier(r) == tier), reverse=True)
    top = ranked[0][0]
    right = [r for n, r in ranked if n >= top * CLOSE_SHARE]
    seen = ", ".join(f"{r} {n}" for r, n in counts.most_common(5))
    return right, f"{' or '.join(right)} dominates what went wrong (counted from the workers' metrics: {seen})"


def _span_ids(state: RunState, pick: Callable[[Mapping[str, Any], str, str], str | None]) -> dict[str, str]:
    """value -> what shows it, over every recorded span."""
    out: dict[str, str] = {}
    for span in state.spans.spans.values():
        v = pick(span.attributes, span.operation, span.status)
        if v:
            out.setdefault(v, f"span {span.operation} in trace {span.trace_id[:8]}")
    return out


def _log_ids(state: RunState, event: str | None, key: str, where: Callable[[LogRecord], bool] = lambda r: True) -> dict[str, str]:
    out: dict[str, str] = {}
    for rec in _records(state):
        if (event is None or rec.event == event) and where(rec):
            v = rec.field_text(key)
            if v and v != "null":
                out.setdefault(v, f"log {rec.event} of {rec.source} (line {rec.line_no})")
    return out


def _rows(state: RunState, status: str | None = None) -> dict[str, str]:
    rows = state.probes.get("trigger_rows")
    if not isinstance(rows, list):
        return {}
    return {str(r.get("outbox_event_id")): f"row {str(r.get('outbox_event_id'))[:8]} ended {r.get('status')}"
            for r in rows if isinstance(r, dict) and (status is None or r.get("status") == status)}


def _retried_batches(state: RunState) -> dict[str, str]:
    out = {s.trace_id: "span projection.process_batch result=retry" for s in state.spans.spans.values()
           if s.operation == "projection.process_batch" and str(s.attributes.get("result")) == "retry"}
    for s in state.spans.spans.values():
        if s.operation == "outbox.process" and str(s.attributes.get("result")) == "retry":
            out.setdefault(s.trace_id, f"span outbox.process result=retry in trace {s.trace_id[:8]}")
    for trace, why in _log_ids(state, "outbox.retry_scheduled", "trace_id").items():
        out.setdefault(trace, why)
    return out


def _newest_rule_workers(state: RunState) -> dict[str, str]:
    by_version: dict[int, dict[str, str]] = {}
    for rec in _records(state):
        v = rec.fields.get("projection_version")
        w = rec.field_text("worker_id")
        if rec.event == "outbox.processed" and isinstance(v, int) and w:
            by_version.setdefault(v, {}).setdefault(w, f"log outbox.processed projection_version={v} of {rec.source}")
    return by_version[max(by_version)] if len(by_version) > 1 else {}


def _contradicting_batches(state: RunState) -> dict[str, str]:
    """Batches whose span says ok (or noop) while a child span of theirs is ERROR or failed."""
    out: dict[str, str] = {}
    for span in state.spans.spans.values():
        batch = span.attributes.get("wordloom.claim_batch_id")
        if span.operation != "projection.process_batch" or not batch or str(span.attributes.get("result")) not in ("ok", "noop"):
            continue
        for child in state.spans.by_trace.get(span.trace_id, {}).values():
            if child.parent_span_id == span.span_id and (child.status == "ERROR" or str(child.attributes.get("result")) == "failed"):
                out.setdefault(str(batch), f"span projection.process_batch result={span.attributes.get('result')} over an "
                                           f"ERROR {child.operation} in trace {span.trace_id[:8]}")
    return out


def _stale_schema_workers(state: RunState) -> dict[str, str]:
    out: dict[str, str] = {}
    for rec in _records(state):
        w = rec.field_text("worker_id")
        if rec.event == "obs.schema" and w and rec.obs_schema and rec.obs_schema != OBS_SCHEMA:
            out.setdefault(w, f"log obs.schema of {rec.source} says {rec.obs_schema} (line {rec.line_no})")
    for span in state.spans.spans.values():
        schema = span.resource.get(ATTR_OBS_SCHEMA, span.attributes.get(ATTR_OBS_SCHEMA))
        instance = span.resource.get("service.instance.id")
        if instance and schema is not None and str(schema) != OBS_SCHEMA:
            out.setdefault(str(instance), f"span {span.operation} in trace {span.trace_id[:8]} says {ATTR_OBS_SCHEMA}={schema}")
    return out


@dataclass(frozen=True)
class Property:
    what: str
    """What a right answer is, in the question's words (never the answer itself)."""
    kind: str
    """event, trace, batch or worker: the ids a prefix is matched against."""
    find: Callable[[RunState], dict[str, str]]


PROPERTIES: Final[dict[str, Property]] = {
    "failed_event": Property("an outbox_event_id that failed terminally", "event",
                             lambda st: {**_rows(st, "failed"), **_log_ids(st, "outbox.failed", "outbox_event_id")}),
    "retried_event": Property("an outbox_event_id that was retried", "event",
                              lambda st: _log_ids(st, "outbox.retry_scheduled", "outbox_event_id")),
    "retried_batch_trace": Property("the trace_id of a batch that was retried", "trace", _retried_batches),
    "partial_batch": Property("the claim_batch_id of a batch that was partly done", "batch",
                              lambda st: _span_ids(st, lambda a, op, _: str(a.get("wordloom.claim_batch_id"))
                                                   if op == "projection.process_batch" and a.get("result") == "partial" else None)),
    "noop_event": Property("an outbox_event_id absorbed as an idempotent noop", "event",
                           lambda st: _log_ids(st, "outbox.idempotent_noop", "outbox_event_id")),
    "lost_lease_worker": Property("the worker that lost its lease", "worker",
                                  lambda st: {**_log_ids(st, "outbox.reclaimed", "reclaimed_from"),
                                              **_log_ids(st, "outbox.owner_mismatch", "worker_id")}),
    "reclaiming_worker": Property("the worker that took the rows back", "worker",
                                  lambda st: _log_ids(st, "outbox.reclaimed", "reclaimed_by")),
    "newest_rule_worker": Property("the worker that projected on the newer rule version", "worker", _newest_rule_workers),
    "contradicting_batch": Property("the claim_batch_id of a batch whose span says ok while a child span failed", "batch",
                                    _contradicting_batches),
    "stale_schema_worker": Property("the worker that runs an old observability schema", "worker", _stale_schema_workers),
    "db_outage_worker": Property("a worker that lost its connection to Postgres", "worker",
                                 lambda st: _log_ids(st, "db.unavailable", "worker_id")),
}


def known_ids(state: RunState, kind: str) -> set[str]:
    """Every id of a kind the run recorded: an answer's prefix must name exactly one of them."""
    if kind == "event":
        return {*state.outbox_event_ids.list(), *_rows(state), *_log_ids(state, None, "outbox_event_id")}
    if kind == "trace":
        return {*(s.trace_id for s in state.spans.spans.values()), *_log_ids(state, None, "trace_id")}
    if kind == "batch":
        return {*state.claim_batch_ids.list(), *_log_ids(state, None, "claim_batch_id")}
    return {*(w.worker_id for w in state.workers.values() if w.worker_id), *_log_ids(state, None, "worker_id"),
            *_log_ids(state, "outbox.reclaimed", "reclaimed_from"), *_log_ids(state, "outbox.reclaimed", "reclaimed_by")}


def _event_lost(state: RunState) -> tuple[bool, str]:
    """Lost: an event the run wrote that is no longer in the outbox, or one marked done whose
    effect the index does not hold. A pending, retried or failed row is not lost: it is still
    there, to be processed or requeued."""
    written = len(state.trigger_ops)
    if not written:
        return False, "the run has not written its events yet"
    rows = state.probes.get("trigger_rows")
    if isinstance(rows, list):
        counts: dict[str, int] = {}
        for r in rows:
            if isinstance(r, dict):
                counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    else:
        counts = {k: int(v) for k, v in state.statuses.items()}
    present = sum(counts.values())
    if not counts:
        return False, "the run has not read its rows back yet: nothing says any is missing"
    if present < written:
        return True, f"{written - present} of the {written} event(s) the run wrote are no longer in the outbox"
    if state.probes.get("documents_latest") is False:
        return True, "rows say done, but the index does not hold the latest effect of every entity"
    held = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    why = f"all {written} event(s) are in the outbox ({held})"
    if counts.get("failed"):
        why += "; a failed row is kept for requeue, not lost"
    if state.probes.get("documents_latest"):
        why += "; the index holds the latest effect of each entity"
    return False, why


def _applied_twice(state: RunState) -> tuple[bool, str]:
    latest = state.probes.get("documents_latest")
    if latest is None:
        return False, "no document probe recorded: the effect was not doubled as far as the run can tell"
    return (not latest), ("the index holds exactly the latest effect per entity" if latest else
                          "the index disagrees with the latest event of some entity")


def _version_label(state: RunState) -> tuple[bool, str]:
    for worker, snap in state.metrics.latest.items():
        for sample in snap.samples:
            if "projection_version" in sample.labels:
                return True, f"{sample.name} on {worker} has a projection_version label"
    return False, f"no series of {len(state.metrics.latest)} worker(s)' metrics has a projection_version label"


def _run_ids(state: RunState) -> tuple[set[str], set[str], set[str]]:
    """(outbox event ids, claim batch ids, entity ids) of the run's own events."""
    return set(state.outbox_event_ids.list()), set(state.claim_batch_ids.list()), set(state.entity_ids.list())


def _spans_exported(state: RunState) -> tuple[bool, str]:
    """A span of the run's events reached the backend: one the run's queries by its ids found,
    carrying one of its event, batch or (in the previous schema's key) entity ids."""
    events, batches, entities = _run_ids(state)
    if not events:
        return False, "the run has not written its events yet"
    for span in state.spans.spans.values():
        a = span.attributes
        if (str(a.get("wordloom.outbox_event_id")) in events or str(a.get("wordloom.claim_batch_id")) in batches
                or str(a.get(ATTR_OLD_OUTBOX_ID)) in entities):
            return True, f"{len(state.spans)} span(s) recorded, e.g. {span.operation} in trace {span.trace_id[:8]}"
    return False, (f"the trace backend returned no span carrying one of the run's {len(events)} event id(s) "
                   f"or {len(batches)} batch id(s)")


def _logs_have_trace_id(state: RunState) -> tuple[bool, str]:
    events, batches, _ = _run_ids(state)
    about = 0
    for rec in _records(state):
        carried = rec.fields.get("outbox_event_ids")
        ids = {str(e) for e in carried} if isinstance(carried, list) else set()
        if rec.outbox_event_id:
            ids.add(rec.outbox_event_id)
        if not (ids & events or (rec.claim_batch_id and rec.claim_batch_id in batches)):
            continue
        about += 1
        if rec.trace_id:
            return True, f"log {rec.event} of {rec.source} (line {rec.line_no}) carries trace_id {rec.trace_id[:8]}"
    if not about:
        return False, "no log line about the run's events yet"
    return False, f"none of the {about} log line(s) about the run's events carries a trace_id"


def _old_key_is_event_id(state: RunState) -> tuple[bool, str]:
    events, _, entities = _run_ids(state)
    values = [(str(s.attributes[ATTR_OLD_OUTBOX_ID]), s) for s in state.spans.spans.values() if ATTR_OLD_OUTBOX_ID in s.attributes]
    if not values:
        return False, f"no recorded span carries {ATTR_OLD_OUTBOX_ID}"
    hits = [v for v, _ in values if v in events]
    if hits:
        return True, f"{ATTR_OLD_OUTBOX_ID}={hits[0][:8]} is one of the run's outbox event ids"
    held = sum(1 for v, _ in values if v in entities)
    return False, f"{held} of {len(values)} span(s) carry an entity id under {ATTR_OLD_OUTBOX_ID}, none an outbox event id"


def _failed_event_has_span(state: RunState) -> tuple[bool, str]:
    failed = set(_rows(state, "failed")) | set(_log_ids(state, "outbox.failed", "outbox_event_id"))
    for rec in _records(state):
        carried = rec.fields.get("failed_outbox_event_ids")
        if rec.event == "projection.batch_processed" and isinstance(carried, list):
            failed |= {str(e) for e in carried}
    if not failed:
        return False, "no event of this run failed (yet)"
    for span in state.spans.spans.values():
        if span.operation == "outbox.process" and str(span.attributes.get("wordloom.outbox_event_id")) in failed:
            return True, f"span outbox.process in trace {span.trace_id[:8]} is the failed event's"
    return False, f"no outbox.process span recorded for the {len(failed)} failed event(s), asked by outbox_event_id"


def _worker_reconnected(state: RunState) -> tuple[bool | None, str]:
    lost = _log_ids(state, "db.unavailable", "worker_id")
    back = _log_ids(state, "db.recovered", "worker_id")
    if not lost:
        return False, "no worker lost Postgres in this run"
    again = sorted(set(lost) & set(back))
    if again:
        return True, f"{', '.join(w.split('@')[0] for w in again)}: {back[again[0]]} (the process that lost it)"
    if state.ended is None:
        # Postgres may still be away, or the worker still backing off: only the end can say no.
        return None, "Postgres has not come back for the worker yet: answer once it has (after the recovery)"
    return False, f"{len(lost)} worker(s) lost Postgres and none logged db.recovered before the run ended"


FACTS: Final[dict[str, tuple[str, Callable[[RunState], tuple[bool | None, str]]]]] = {
    # A fact is None while the run cannot tell yet: such an answer is recorded, never counted.
    "event_lost": ("Was any event lost?", _event_lost),
    "applied_twice": ("Was any event applied twice in effect?", _applied_twice),
    "version_label": ("Did a metric grow a projection_version label?", _version_label),
    "spans_exported": ("Did the trace backend receive a span of this run's events?", _spans_exported),
    "logs_have_trace_id": ("Do the log lines about the run's events carry a trace_id?", _logs_have_trace_id),
    "old_key_is_event_id": ("Does wordloom.outbox.id hold the outbox row's id?", _old_key_is_event_id),
    "failed_event_has_span": ("Does the failed event have an outbox.process span?", _failed_event_has_span),
    "worker_reconnected": ("Did the worker get back to Postgres on its own?", _worker_reconnected),
}


# ---- grading ------------------------------------------------------------------------------------


def normalize(value: str) -> str:
    return value.strip().strip('"').lower().replace("-", "_") if value else ""


def grade(question: Question, value: str, state: RunState) -> Grade:
    given = value.strip()
    prop = question.property or ""
    if question.kind == "failure_class":
        right, why = failure_classes(state)
        answer = normalize(given).replace(" ", "_")
        if answer in ("nothing", "none", "ok", "nothing_is_wrong"):
            answer = NOTHING_WRONG
        if answer not in CLASS_CHOICES:
            return Grade(question.id, given, False, f"not a failure class: answer one of {', '.join(CLASS_CHOICES)}",
                         counted=False)
        ok = answer in right
        # A wrong answer hears only that it is wrong: the explanation would name the right one.
        return Grade(question.id, given, ok, why if ok else f"{answer} is not what dominates this run's evidence")
    if question.kind == "yes_no":
        fact, why = FACTS[prop][1](state)
        answer = normalize(given)
        if answer not in ("yes", "no", "y", "n", "true", "false"):
            return Grade(question.id, given, False, "answer yes or no", counted=False)
        if fact is None:
            return Grade(question.id, given, False, f"not yet: {why}", counted=False)
        said = answer in ("yes", "y", "true")
        return Grade(question.id, given, said == fact, f"{'yes' if fact else 'no'}: {why}" if said == fact else
                     f"{'yes' if said else 'no'} is not what this run's evidence says")
    spec = PROPERTIES[prop]
    candidates = spec.find(state)
    needle = given.strip('"').strip()
    universe = known_ids(state, spec.kind) | set(candidates)
    if needle in universe:
        hit = needle
    else:
        if len(needle) < MIN_PREFIX:
            return Grade(question.id, given, False, f"give at least {MIN_PREFIX} characters of the id", counted=False)
        hits = sorted(v for v in universe if v.startswith(needle))
        if len(hits) > 1:
            return Grade(question.id, given, False, f"{needle} starts {len(hits)} different ids of this run: give more of it",
                         counted=False)
        if not hits:
            return Grade(question.id, given, False, f"{needle} is not one of this run's {spec.kind} ids")
        hit = hits[0]
    if hit in candidates:
        return Grade(question.id, given, True, f"{hit}: {candidates[hit]}")
    # Never a right answer in the explanation: the trainee may read it.
    why = (f"{hit} is one of this run's ids, but not {spec.what} ({len(candidates)} such id(s) recorded)" if candidates
           else f"this run recorded no {spec.what}")
    return Grade(question.id, given, False, why)


# ---- the catalog --------------------------------------------------------------------------------


def _grows(drill: Drill, *families: str) -> bool:
    """The drill expects one of these metric families (any labels) to grow."""
    for m in drill.expect.metrics:
        name = m.selector.split("{", 1)[0]
        op, _, ref = m.change.strip().partition(" ")
        try:
            n = float(ref or m.change.strip().lstrip("<>="))
        except ValueError:
            continue
        growth = (op == ">=" and n >= 1) or (op == ">" and n >= 0) or (op == "==" and n > 0)
        if name in families and growth:
            return True
    return False


def _logs(drill: Drill, *events: str) -> bool:
    return any(lg.event in events and lg.max_count != 0 for lg in drill.expect.logs)


def _traces(drill: Drill, operation: str, **attrs: object) -> bool:
    return any(t.operation == operation and t.max_spans != 0
               and all(str(t.attributes.get(k)) == str(v) for k, v in attrs.items()) for t in drill.expect.traces)


def _db(drill: Drill, *probes: str, expecting: str | None = None) -> bool:
    return any(c.probe in probes and (expecting is None or expecting in str(c.expect)) for c in drill.expect.db)


REASON_FAMILIES: Final = ("outbox_retry_scheduled_total", "outbox_failed_total", "outbox_terminal_failed_total",
                          "outbox_idempotent_noop_total", "outbox_owner_mismatch_skips_total", "outbox_reclaimed_total")

# What a drill's expected evidence must include for a question to be answerable from its runs:
# its checks make the run record what the grader reads.
NEEDS: Final[dict[str, Callable[[Drill], bool]]] = {
    "failure_class": lambda d: d.control or _grows(d, *REASON_FAMILIES) or _logs(
        d, "outbox.retry_scheduled", "outbox.failed", "outbox.idempotent_noop", "outbox.reclaimed", "outbox.owner_mismatch"),
    "failed_event": lambda d: _grows(d, "outbox_terminal_failed_total") or _logs(d, "outbox.failed")
    or _db(d, "trigger_status", expecting="failed"),
    "retried_event": lambda d: _grows(d, "outbox_retry_scheduled_total") or _logs(d, "outbox.retry_scheduled"),
    "retried_batch_trace": lambda d: _grows(d, "outbox_retry_scheduled_total") or _logs(d, "outbox.retry_scheduled")
    or _traces(d, "projection.process_batch", result="retry"),
    "partial_batch": lambda d: _traces(d, "projection.process_batch", result="partial"),
    "noop_event": lambda d: _grows(d, "outbox_idempotent_noop_total") or _logs(d, "outbox.idempotent_noop"),
    "lost_lease_worker": lambda d: _grows(d, "outbox_reclaimed_total", "outbox_owner_mismatch_skips_total")
    or _logs(d, "outbox.reclaimed", "outbox.owner_mismatch"),
    "reclaiming_worker": lambda d: _grows(d, "outbox_reclaimed_total") or _logs(d, "outbox.reclaimed"),
    "newest_rule_worker": lambda d: d.fault.type == "projection_version",
    "event_lost": lambda d: _db(d, "trigger_status", "documents_latest"),
    "applied_twice": lambda d: _db(d, "documents_latest"),
    "version_label": lambda d: "projection_version" in d.expect.forbidden_labels,
    "contradicting_batch": lambda d: any(t.operation == "projection.process_batch" and t.child is not None for t in d.expect.traces),
    "stale_schema_worker": lambda d: _logs(d, "obs.schema") or any(t.by == "obs_schema" for t in d.expect.traces),
    "db_outage_worker": lambda d: _logs(d, "db.unavailable"),
    # The runner asks the backend by the run's ids whenever the drill has a trace check.
    "spans_exported": lambda d: bool(d.expect.traces),
    # Every worker line is recorded, whatever the checks: the run's event lines are always there.
    "logs_have_trace_id": lambda d: True,
    "old_key_is_event_id": lambda d: any(t.by == "obs_schema" and t.max_spans != 0 for t in d.expect.traces),
    "failed_event_has_span": lambda d: (_grows(d, "outbox_terminal_failed_total") or _db(d, "trigger_status", expecting="failed"))
    and any(t.operation == "outbox.process" and t.by == "outbox_event_id" for t in d.expect.traces),
    "worker_reconnected": lambda d: _logs(d, "db.recovered") and _logs(d, "db.unavailable"),
}


def check_catalog(drills: Iterable[Drill]) -> list[str]:
    """One line per question a drill's evidence cannot answer (empty: all answerable)."""
    problems: list[str] = []
    for d in drills:
        ids = [q.id for q in d.questions]
        if len(set(ids)) != len(ids):
            problems.append(f"drill {d.id}: two questions share an id ({', '.join(ids)})")
        for q in d.questions:
            if q.kind == "failure_class":
                if not NEEDS["failure_class"](d):
                    problems.append(f"drill {d.id}: question {q.id} asks for the failure class, but this drill's expected "
                                    "evidence has no retry, failure, noop or lost lease (and it is not a control drill)")
                continue
            table: Mapping[str, object] = FACTS if q.kind == "yes_no" else PROPERTIES
            if q.property not in table:
                problems.append(f"drill {d.id}: question {q.id}: no property {q.property!r} for a {q.kind} question "
                                f"(known: {', '.join(sorted(table))})")
            elif not NEEDS[q.property or ""](d):
                problems.append(f"drill {d.id}: question {q.id} asks for {q.property}, which this drill's expected evidence "
                                "never records: its runs could not answer it")
    return problems
