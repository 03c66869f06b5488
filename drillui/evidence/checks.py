"""The one evaluator: each expectation of a drill, judged from what a run observed.

Why this module exists: the trainer's live checklist, the verdict at the end of a run and
`drillui verify` must agree, check for check. Each kind of check (fault, metric, trace, log, db,
clean) is one pure function of the drill and a `RunState` — the observations folded from the
run's events — and every consumer calls `evaluate` on its own fold of the same events.

`evaluate(..., final=False)` judges the run so far; `final=True` judges it at its end, where
missing evidence fails (no scrape recorded, no probe taken). `CheckTracker` adds the only memory a
live checklist needs: when each piece of evidence was first seen (or a "stays flat" expectation
first broke). Fed the same events in the same order, it gives the same times: the runner records
them (`ChecksChanged`), and `verify` recomputes them to compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, cast

from drillui.evidence.rules import PIVOT_ATTRIBUTES, as_text, pivot_values, span_matches, span_text, trace_check_name
from drillui.evidence.state import RunState
from drillui.scenarios import DbCheck, Drill, LogCheck, MetricCheck, PromqlCheck, TraceCheck
from drillui.sources.metrics import MetricsSnapshot, delta, histogram_mean, histogram_quantile, parse_selector
from drillui.sources.prometheus import Series

Kind = Literal["fault", "metric", "promql", "trace", "log", "db", "clean"]
CheckState = Literal["waiting", "seen", "holding", "broken", "at_end", "passed", "failed", "skipped"]
"""waiting: not observed yet; seen: observed; holding: a "stays flat" expectation true so far;
broken: already violated; at_end: only the end of the run can tell; passed / failed: the final
judgement; skipped: not applicable to this run (a PromQL check where the stack runs no
Prometheus): it says why, and it does not fail the run."""


@dataclass(frozen=True)
class Evaluation:
    """One check judged on the observations as they stand."""

    id: str
    kind: Kind
    description: str
    expected: str
    observed: str
    query: str
    ok: bool | None
    """Does the expectation hold now? None: nothing to judge yet."""
    flat: bool = False
    """A "stays flat" expectation (holds on no evidence): it can only hold or break."""
    at: float | None = None
    """Unix time of the observation that decided, where the observations tell it."""
    at_end: bool = False
    """Only the end of the run can tell (a probe taken at the end)."""
    definite: bool = False
    """A failure nothing later can undo (a fault that did not arm, too many spans)."""
    skipped: bool = False
    """Not applicable to this run (no Prometheus for a PromQL check): `observed` says why."""


@dataclass(frozen=True)
class Check:
    """A check as the checklist shows it and `_result.json` keeps it."""

    id: str
    kind: str
    description: str
    expected: str
    observed: str
    state: CheckState
    query: str = ""
    first_seen_seconds: float | None = None
    """Seconds after the fault was armed when the evidence first appeared (negative: before)."""

    @property
    def passed(self) -> bool:
        return self.state == "passed"

    @property
    def done(self) -> bool:
        return self.state in ("seen", "passed")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.state == "passed" if self.state in ("passed", "failed") else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Check:
        state = d.get("state")
        if state is None:  # a result written before check states existed
            state = "passed" if d.get("passed") else "failed"
        return cls(id=str(d.get("id", "")), kind=str(d.get("kind", "")), description=str(d.get("description", "")),
                   expected=str(d.get("expected", "")), observed=str(d.get("observed", "")), state=cast(CheckState, state),
                   query=str(d.get("query") or ""), first_seen_seconds=d.get("first_seen_seconds"))


# ---- one function per kind ----------------------------------------------------------------------


def _fault(drill: Drill, state: RunState, final: bool) -> Evaluation:
    desc = f"fault {drill.fault.type} armed before the clock started"
    base = dict(id="fault:armed", kind="fault", description=desc, expected="armed", query=drill.fault.type)
    if state.fault_not_armed is not None:
        return Evaluation(**base, observed=state.fault_not_armed, ok=False, definite=True)  # type: ignore[arg-type]
    if state.armed_at is None:
        return Evaluation(**base, observed="no proof recorded" if final else "not armed yet", ok=False if final else None)  # type: ignore[arg-type]
    return Evaluation(**base, observed=state.fault_evidence or "armed", ok=True, at=state.armed_at)  # type: ignore[arg-type]


def _metric(mc: MetricCheck, state: RunState, final: bool) -> Evaluation:
    query = mc.promql or mc.selector
    m = state.metrics
    flat = mc.compare(0.0)
    if mc.quantile is not None:
        return _quantile(mc, state, final)
    if mc.over == "peak":
        cid, desc = f"metric:peak:{mc.selector}", f"peak of {mc.selector} while the drill ran {mc.change}"
        peak = m.peaks.get(mc.selector)
        if peak is None:
            return Evaluation(cid, "metric", desc, mc.change, "no samples recorded", query, False if final else None, flat)
        value, when, worker = peak
        observed = f"{value:g} (on {worker}, {m.peak_samples.get(mc.selector, 0)} samples)"
        return Evaluation(cid, "metric", desc, mc.change, observed, query, mc.compare(value), flat, when)
    cid, desc = f"metric:{mc.selector}", f"{mc.selector} changes {mc.change}"
    if mc.at == "recovered":
        desc += " (after recovery)"
    after = m.phase(mc.at)
    if not after and not final:
        after = m.latest
    if not after:
        return Evaluation(cid, "metric", desc, mc.change, "no scrape recorded" if final else "no scrape yet", query,
                          False if final else None, flat)
    parts: list[str] = []
    total = 0.0
    for worker, snap in after.items():
        d = delta(m.baseline(worker), snap, mc.selector)
        total += d
        if len(after) > 1:
            parts.append(f"{worker} {d:+g}")
    observed = f"{total:+g}" + (f" ({', '.join(parts)})" if parts else "")
    when = max(s.taken_at for s in after.values())
    return Evaluation(cid, "metric", desc, mc.change, observed, query, mc.compare(total), flat, when)


def promql_check_id(pc: PromqlCheck) -> str:
    return f"promql:{pc.query} {pc.condition}" + (" (every point)" if pc.over == "all" else "")


def _promql(pc: PromqlCheck, state: RunState, final: bool) -> Evaluation:
    """Judged from the runner's recorded evaluation (`promql_evaluated`), never by asking Prometheus."""
    cid = promql_check_id(pc)
    every = "every point" if pc.over == "all" else "some point"
    when = "after recovery" if pc.at == "recovered" else "when the fault window ends"
    desc = f"PromQL {pc.condition} at {every} of the drill ({when})"
    expected = f"{every} {pc.condition}"

    def out(observed: str, ok: bool | None, at: float | None = None, **kw: Any) -> Evaluation:
        return Evaluation(cid, "promql", desc, expected, observed, pc.query, ok, at=at, **kw)

    ev = state.promql_checks.get(cid)
    if ev is None:
        if final:
            return out(f"not evaluated: the run ended before it reached {pc.at}", False)
        return out(f"asked of Prometheus {when}", None, at_end=True)
    if not ev.available:
        return out(f"not applicable: {ev.error or 'no Prometheus in this stack'}", None, skipped=True)
    if ev.error:
        return out(f"Prometheus: {ev.error}", False, ev.wall)
    series = [Series.from_json(d) for d in ev.series]
    points = [(t, v, s) for s in series for t, v in s.points if math.isfinite(v)]
    span = f"{len(series)} series, {len(points)} point(s) over {max(0.0, ev.end - ev.start):.0f}s"
    if not points:
        return out(f"no series: Prometheus returned nothing over the drill's {max(0.0, ev.end - ev.start):.0f}s", False, ev.wall)

    def where(t: float, v: float, s: Series) -> str:
        return f"{v:.4g} at +{t - ev.start:.0f}s ({s.label_text(skip=('env',))})"

    top = max(points, key=lambda p: p[1])
    meeting = [p for p in points if pc.holds(p[1])]
    if pc.over == "any":
        if meeting:
            first = min(meeting, key=lambda p: p[0])
            return out(f"first {where(*first)}; max {top[1]:.4g}; {span}", True, first[0])
        return out(f"never {pc.condition}: max {where(*top)}; {span}", False, ev.wall)
    broken = [p for p in points if not pc.holds(p[1])]
    if broken:
        first = min(broken, key=lambda p: p[0])
        return out(f"broken: {where(*first)}; {span}", False, first[0])
    return out(f"every point {pc.condition} (max {top[1]:.4g}); {span}", True, ev.wall)


def _quantile(mc: MetricCheck, state: RunState, final: bool) -> Evaluation:
    """A quantile of what a histogram observed since the before scrape, the highest of any worker."""
    assert mc.quantile is not None
    q = mc.quantile
    name = f"p{q * 100:g}"
    query = mc.promql or f"histogram_quantile({q:g}, sum by (le) (rate({mc.selector}_bucket[1m])))"
    cid, desc = f"metric:{name}:{mc.selector}", f"{name} of {mc.selector} during the drill {mc.change} s"
    if mc.at == "recovered":
        desc += " (until recovery)"
    m = state.metrics
    after = m.phase(mc.at) or ({} if final else dict(m.latest))
    if not after:
        return Evaluation(cid, "metric", desc, mc.change, "no scrape recorded" if final else "no scrape yet", query,
                          False if final else None)
    sel = parse_selector(mc.selector)
    labels = {matcher.label: matcher.value for matcher in sel.matchers if matcher.op == "="}
    values = {worker: histogram_quantile(q, snap, sel.name, labels, since=m.baseline(worker)) for worker, snap in after.items()}
    seen = {w: v for w, v in values.items() if v is not None}
    when = max(s.taken_at for s in after.values())
    if not seen:
        return Evaluation(cid, "metric", desc, mc.change, "no observations since the before scrape", query,
                          False if final else None, at=when)
    worker, top = max(seen.items(), key=lambda item: item[1])
    observed = f"{top:.3g} s" + (f" (on {worker})" if len(after) > 1 else "")
    return Evaluation(cid, "metric", desc, mc.change, observed, query, mc.compare(top), at=when)


def _labels(label: str, state: RunState, final: bool) -> Evaluation:
    m = state.metrics
    scrapes = {**m.phase("after"), **m.phase("recovered")} if final else dict(m.latest)
    desc = f"no metric carries a {label} label"
    if not scrapes:
        return Evaluation(f"labels:{label}", "metric", desc, "none", "no scrape recorded" if final else "no scrape yet", label,
                          False if final else None, True)
    carrying = sorted({s.name for snap in scrapes.values() for s in snap.samples if label in s.labels})
    observed = ", ".join(carrying) or f"none in {len(scrapes)} scrape(s)"
    return Evaluation(f"labels:{label}", "metric", desc, "none", observed, label, not carrying, True)


def _has_child(span: Any, tc: TraceCheck, state: RunState) -> bool:
    if tc.child is None:
        return True
    return any(s.parent_span_id == span.span_id and span_matches(s, tc.child)
               for s in state.spans.by_trace.get(span.trace_id, {}).values())


def trace_spans(tc: TraceCheck, state: RunState) -> tuple[list[str], list[Any], set[str]]:
    """(pivot values, spans of the traces a query by them returns, those trace ids)."""
    values = pivot_values(state.pivots(tc.by), tc.which)
    attr = PIVOT_ATTRIBUTES[tc.by]
    trace_ids: set[str] = set()
    for v in values:
        trace_ids |= state.spans.traces_with(tc.operation, attr, v)
    spans = [s for tid in sorted(trace_ids) for s in state.spans.by_trace.get(tid, {}).values()]
    return values, spans, trace_ids


def trace_check_id(tc: TraceCheck) -> str:
    attrs = ", ".join(f"{k}={as_text(v)}" for k, v in tc.attributes.items())
    cid = f"trace:{trace_check_name(tc)}" + (f"[{attrs}]" if attrs else "")
    if tc.child is not None:
        cid += f">{tc.child.operation}" + (f"[{span_text(tc.child)}]" if span_text(tc.child) else "")
    return cid


def trace_query_text(tc: TraceCheck, value: str | None) -> str:
    return f'operation={tc.operation} tags={{"wordloom.{tc.by}":"{value or "<id>"}"}}'


def _trace(tc: TraceCheck, state: RunState, final: bool) -> tuple[Evaluation, set[str]]:
    attrs = ", ".join(f"{k}={as_text(v)}" for k, v in tc.attributes.items())
    which = {"all": "", "first": " (first)", "last": " (last)"}[tc.which]
    if tc.max_spans == 0:
        desc = f"no span {tc.operation} found by {tc.by}{which}"
    else:
        desc = f"span {tc.operation} found by {tc.by}{which}" + (f" with {attrs}" if attrs else "")
    if tc.child is not None:
        wanted = span_text(tc.child)
        desc += f", over a child {tc.child.operation}" + (f" with {wanted}" if wanted else "")
    cid = trace_check_id(tc)
    expected = f">= {tc.min_spans} span(s)" + (f", <= {tc.max_spans}" if tc.max_spans is not None else "")
    values, spans, trace_ids = trace_spans(tc, state)
    query = trace_query_text(tc, values[0] if values else None)
    matching = sorted((s for s in spans if span_matches(s, tc) and _has_child(s, tc, state)), key=lambda s: s.start_unix_nano)
    n = len(matching)
    observed = f"{n} matching of {len(spans)} span(s) in {len(trace_ids)} trace(s)"
    if matching:
        observed += f"; trace {matching[0].trace_id}"
    too_many = tc.max_spans is not None and n > tc.max_spans
    ok: bool | None = n >= tc.min_spans and not too_many
    if not values and not final:
        ok = None
    first = matching[0].start_unix_nano / 1e9 if matching else None
    found = {s.trace_id for s in matching}
    return Evaluation(cid, "trace", desc, expected, observed, query, ok, tc.min_spans == 0, first, definite=too_many), found


def _log(lc: LogCheck, index: int, state: RunState, found: set[str], final: bool) -> Evaluation:
    fields = ", ".join(f"{k}={as_text(v)}" for k, v in lc.fields.items())
    desc = f"log event {lc.event}" + (f" with {fields}" if fields else "")
    if lc.require:
        desc += f", carrying {', '.join(lc.require)}"
    if lc.absent:
        desc += f", without {', '.join(lc.absent)}"
    if lc.joined_on_trace:
        desc += ", joined to a found trace on trace_id"
    tally = state.log_tallies[index] if index < len(state.log_tallies) else None
    hits = tally.hits if tally else 0
    if tally is None:
        n, first = 0, None
    elif lc.joined_on_trace:
        joined = [v for tid, v in tally.by_trace.items() if tid in found]
        n = sum(c for c, _ in joined)
        first = min((t for _, t in joined if t is not None), default=None)
    else:
        n, first = tally.complete, tally.first_ts
    if lc.max_count is None:
        expected = f">= {lc.min_count} line(s)"
    else:
        expected = f"{lc.min_count}..{lc.max_count} line(s)" if lc.min_count else f"<= {lc.max_count} line(s)"
    observed = f"{n} line(s)" + (f" ({hits} with the event and fields)" if hits != n else "")
    if state.log_lines_omitted and final:
        observed += f"; {state.log_lines_omitted} line(s) read from _logs/ by reference"
    query = f"event={lc.event}" + "".join(f" {k}={as_text(v)}" for k, v in lc.fields.items())
    ok = n >= lc.min_count and (lc.max_count is None or n <= lc.max_count)
    cid = f"log:{lc.event}" + (f"[{fields}]" if fields else "")
    return Evaluation(cid, "log", desc, expected, observed, query, ok, lc.min_count == 0, first)


def _probe_ok(dc: DbCheck, got: Any) -> bool:
    if isinstance(dc.expect, str):
        values = got if isinstance(got, list) else [got]
        return bool(values) and all(v == dc.expect for v in values)
    return bool(got == dc.expect)


PROBE_DESCRIPTIONS: Final[dict[str, str]] = {
    "failed_listed": "the run's failed rows listed by `drillui failed list` before the requeue",
    "doctor_otlp_protocol": "`drillui doctor` check otlp.protocol with the fault armed, then after",
}


def _db(dc: DbCheck, state: RunState, final: bool) -> Evaluation:
    cid, desc = f"db:{dc.probe}", PROBE_DESCRIPTIONS.get(dc.probe, f"database probe {dc.probe}")
    expected = json.dumps(dc.expect)
    if dc.probe in state.probes:
        got = state.probes[dc.probe]
        return Evaluation(cid, "db", desc, expected, json.dumps(got), "", _probe_ok(dc, got), at=state.last_wall)
    if final:
        return Evaluation(cid, "db", desc, expected, "not probed", "", False)
    if dc.probe == "trigger_status" and isinstance(dc.expect, str) and state.statuses:
        observed = ", ".join(f"{k} {v}" for k, v in sorted(state.statuses.items()))
        ok = set(state.statuses) == {dc.expect}
        return Evaluation(cid, "db", desc, expected, observed, "runner status poll", ok or None, at=state.last_wall, at_end=not ok)
    return Evaluation(cid, "db", desc, expected, "probed at the end of the run", "", None, at_end=True)


def _clean(drill: Drill, state: RunState, final: bool) -> Evaluation:
    desc = "fault reverted and environment clean"
    base = dict(id="clean:reverted", kind="clean", description=desc, expected="clean", query=drill.fault.type)
    if state.clean is not None:
        return Evaluation(**base, observed=state.clean.summary, ok=state.clean.clean, at=state.clean.wall)  # type: ignore[arg-type]
    if final:
        return Evaluation(**base, observed="the environment was not checked", ok=False)  # type: ignore[arg-type]
    if state.reverted_at is not None:
        if state.still_armed:
            return Evaluation(**base, observed=state.revert_evidence or "revert failed", ok=False, definite=True)  # type: ignore[arg-type]
        return Evaluation(**base, observed="fault reverted (cleanliness checked at the end)", ok=True, at=state.reverted_at)  # type: ignore[arg-type]
    return Evaluation(**base, observed="not reverted yet", ok=None)  # type: ignore[arg-type]


def evaluate(drill: Drill, state: RunState, *, final: bool) -> list[Evaluation]:
    """Every expectation of `drill`, in the checklist's order, judged on `state`."""
    e = drill.expect
    out = [_fault(drill, state, final)]
    out += [_metric(mc, state, final) for mc in e.metrics if mc.over == "peak" or mc.at == "after"]
    out += [_metric(mc, state, final) for mc in e.metrics if mc.over != "peak" and mc.at == "recovered"]
    out += [_promql(pc, state, final) for pc in e.promql]
    out += [_labels(label, state, final) for label in e.forbidden_labels]
    found: set[str] = set()
    for tc in e.traces:
        ev, ids = _trace(tc, state, final)
        out.append(ev)
        found |= ids
    out += [_log(lc, i, state, found, final) for i, lc in enumerate(e.logs)]
    out += [_db(dc, state, final) for dc in e.db]
    out.append(_clean(drill, state, final))
    return out


def trace_queries(drill: Drill, state: RunState) -> list[tuple[str, str, str]]:
    """(operation, attribute, value) the trace backend must be asked for the checks to see their
    spans, plus the runbook's two pivots of the run's events: the recorder asks exactly these."""
    out: list[tuple[str, str, str]] = []
    for tc in drill.expect.traces:
        attr = PIVOT_ATTRIBUTES[tc.by]
        out += [(tc.operation, attr, v) for v in pivot_values(state.pivots(tc.by), tc.which)]
    out += [("outbox.process", PIVOT_ATTRIBUTES["outbox_event_id"], v) for v in state.outbox_event_ids.list()[:5]]
    out += [("projection.process_batch", PIVOT_ATTRIBUTES["claim_batch_id"], v) for v in state.claim_batch_ids.list()[-5:]]
    return list(dict.fromkeys(out))


# ---- the memory of a live checklist -------------------------------------------------------------


@dataclass
class CheckTracker:
    """First-seen and first-broken times of each check, and its state as the checklist shows it."""

    first_seen: dict[str, float] = field(default_factory=dict)
    broken_at: dict[str, float] = field(default_factory=dict)
    last: dict[str, Check] = field(default_factory=dict)

    def _live(self, ev: Evaluation, state: RunState, now: float | None) -> Check:
        when = ev.at if ev.at is not None else now
        st: CheckState
        if ev.skipped:
            st = "skipped"
        elif ev.flat:
            if ev.ok is False or ev.id in self.broken_at:
                if ev.id not in self.broken_at and when is not None:
                    self.broken_at[ev.id] = when
                st = "broken"
            elif ev.ok is None:
                st = "holding" if state.armed_at is not None and not ev.at_end else "at_end" if ev.at_end else "waiting"
            else:
                st = "holding"
        elif ev.ok or ev.id in self.first_seen:
            if ev.id not in self.first_seen and when is not None:
                self.first_seen[ev.id] = when
            st = "seen"
        elif ev.ok is False and ev.definite:
            st = "broken"
        elif ev.at_end:
            st = "at_end"
        else:
            st = "waiting"
        seen = self.broken_at.get(ev.id) if st == "broken" else self.first_seen.get(ev.id)
        return Check(ev.id, ev.kind, ev.description, ev.expected, ev.observed, st, ev.query, _since(state, seen))

    def update(self, evaluations: Iterable[Evaluation], state: RunState, now: float | None) -> list[Check]:
        """The live checks after one more observation; returns those that changed."""
        changed: list[Check] = []
        for ev in evaluations:
            check = self._live(ev, state, now)
            if self.last.get(check.id) != check:
                self.last[check.id] = check
                changed.append(check)
        return changed

    def final(self, evaluations: Iterable[Evaluation], state: RunState) -> list[Check]:
        out: list[Check] = []
        for ev in evaluations:
            seen = self.first_seen.get(ev.id)
            if seen is None and ev.ok and ev.at is not None and not ev.flat:
                seen = ev.at
            if ev.flat:
                # "Stays flat" shows nothing appearing: only the moment it broke, if it did.
                seen = self.broken_at.get(ev.id)
            st: CheckState = "skipped" if ev.skipped else "passed" if ev.ok else "failed"
            out.append(Check(ev.id, ev.kind, ev.description, ev.expected, ev.observed, st, ev.query, _since(state, seen)))
        return out


def _since(state: RunState, wall: float | None) -> float | None:
    s = state.since_armed(wall)
    return None if s is None else round(s, 3)


# ---- the verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    scenario: str
    run_id: str
    state: str
    """passed | failed | stopped | error."""
    checks: list[Check]
    snapshot: str
    key_figure: str = ""
    duration_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    why: str = ""

    @property
    def passed(self) -> bool:
        return self.state == "passed"

    @property
    def word(self) -> str:
        return {"passed": "pass", "failed": "fail"}.get(self.state, self.state)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "state": self.state,
            "verdict": self.word,
            "passed": self.passed if self.state in ("passed", "failed") else None,
            "why": self.why,
            "key_figure": self.key_figure,
            "duration_seconds": self.duration_seconds,
            "snapshot": self.snapshot,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        state = str(d.get("state") or {"pass": "passed", "fail": "failed"}.get(str(d.get("verdict")), str(d.get("verdict"))))
        return cls(scenario=str(d.get("scenario", "")), run_id=str(d.get("run_id", "")), state=state,
                   checks=[Check.from_json(c) for c in d.get("checks", [])], snapshot=str(d.get("snapshot", "")),
                   key_figure=str(d.get("key_figure", "")), duration_seconds=d.get("duration_seconds"),
                   notes=[str(n) for n in d.get("notes", [])], why=str(d.get("why", "")))


def end_state(checks: Sequence[Check], *, stopped: bool, error: str | None) -> tuple[str, str]:
    """(state, why): an infrastructure error beats a stop, a stop beats a verdict."""
    if error:
        return "error", error
    if stopped:
        return "stopped", "stopped by the trainer before the drill ended"
    failed = [c.id for c in checks if c.state not in ("passed", "skipped")]
    if failed:
        return "failed", f"{len(failed)} check(s) failed: {', '.join(failed[:4])}" + (" …" if len(failed) > 4 else "")
    skipped = [c for c in checks if c.state == "skipped"]
    if skipped:
        # Said in the verdict itself: a check that could not be judged is never a silent pass.
        why = skipped[0].observed.removeprefix("not applicable: ")
        return "passed", (f"all {len(checks) - len(skipped)} judged checks passed; {len(skipped)} not applicable "
                          f"({why})")
    return "passed", f"all {len(checks)} checks passed"


def key_figure(checks: Iterable[Check]) -> str:
    for c in checks:
        if c.kind == "metric":
            return f"{c.id.removeprefix('metric:')} {c.observed}"
    return ""


def report_notes(drill: Drill, state: RunState) -> list[str]:
    """Informational figures (not checks): e.g. claim time vs processing time per worker."""
    notes: list[str] = []
    before = state.metrics.phase("before")
    for family in drill.expect.report:
        for worker, a in sorted(state.metrics.phase("after").items()):
            base = before.get(worker)
            mean = histogram_mean(a, family, since=base)
            count = delta(base or MetricsSnapshot.empty(taken_at=0.0), a, f"{family}_count")
            if mean is not None and math.isfinite(mean):
                notes.append(f"{family} on {worker}: mean {mean * 1000:.1f} ms over {count:g} observation(s)")
    return notes
