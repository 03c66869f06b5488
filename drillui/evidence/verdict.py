"""Verdicts computed from a snapshot folder, and nothing else.

Each expectation of a drill becomes a `CheckResult` with the value that was observed and the
query that found it. The runner writes the evidence files first and calls `evaluate`; `drillui
verify` calls the same function on a folder later, with no server running, and must reach the
same verdict. A check never passes on missing evidence: no file means nothing was observed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from drillui.evidence.snapshot import Snapshot
from drillui.scenarios import DbCheck, Drill, LogCheck, MetricCheck, TraceCheck
from drillui.sources.logs import LogRecord, parse_line
from drillui.sources.metrics import MetricsSnapshot, delta, histogram_mean
from drillui.sources.traces import Span, Trace, parse_legacy_traces, parse_v3_traces

Kind = Literal["fault", "metric", "trace", "log", "db", "clean"]


@dataclass(frozen=True)
class CheckResult:
    id: str
    kind: Kind
    description: str
    expected: str
    observed: str
    passed: bool
    query: str = ""
    first_seen_seconds: float | None = None
    """Seconds after the fault was armed when the evidence first appeared, if known."""


@dataclass(frozen=True)
class Verdict:
    scenario: str
    run_id: str
    passed: bool
    checks: list[CheckResult]
    snapshot: str
    key_figure: str = ""
    duration_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "verdict": "pass" if self.passed else "fail",
            "passed": self.passed,
            "key_figure": self.key_figure,
            "duration_seconds": self.duration_seconds,
            "snapshot": self.snapshot,
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
        }


# ---- loading evidence -----------------------------------------------------------------------


def load_metrics(snap: Snapshot, phase: str) -> dict[str, MetricsSnapshot]:
    """Worker name -> scrape of that phase ('before', 'after', 'recovered')."""
    recipe = snap.read_json("_recipe.json", {})
    workers = [w["name"] for w in recipe.get("workers", [])]
    single = len(workers) == 1
    out: dict[str, MetricsSnapshot] = {}
    for w in workers:
        p = snap.metrics_path(phase, w, single)
        if p.exists():
            out[w] = MetricsSnapshot.parse(p.read_text(encoding="utf-8"))
    return out


def load_logs(snap: Snapshot) -> list[LogRecord]:
    records: list[LogRecord] = []
    for p in sorted((snap.path / "_logs").glob("*.log")):
        source = p.name.rsplit("-", 1)[0] if p.name.count("-") else p.stem
        with open(p, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if line:
                    records.append(parse_line(line, source=source.removesuffix(f"-{snap.run_id}"), line_no=n))
    return records


def parse_traces_body(api: str, body: Any) -> list[Trace]:
    if api == "api_v3":
        # A 404 "No traces found" body is stored as returned: it simply holds no spans.
        if isinstance(body, dict) and "result" not in body:
            return []
        return parse_v3_traces(body)
    return parse_legacy_traces(body)


def load_exports(snap: Snapshot) -> dict[int, list[Span]]:
    """Trace check index -> every span of every trace the backend returned for its queries."""
    index = snap.read_json("_exports/_queries.json", [])
    out: dict[int, list[Span]] = {}
    parsed: dict[str, list[Span]] = {}
    for q in index:
        spans = out.setdefault(int(q["check"]), [])
        p = snap.path / "_exports" / q["file"]
        if not q.get("api") or not p.exists():
            continue
        if q["file"] not in parsed:
            body = json.loads(p.read_text(encoding="utf-8")) if p.stat().st_size else None
            traces = parse_traces_body(q["api"], body) if body is not None else []
            parsed[q["file"]] = [s for t in traces for s in t.spans]
        spans.extend(parsed[q["file"]])
    return out


def trace_check_name(check: TraceCheck) -> str:
    return f"{check.operation}-by-{check.by}"


# ---- evaluating -----------------------------------------------------------------------------


def load_samples(snap: Snapshot) -> list[dict[str, Any]]:
    p = snap.path / "_metrics" / "samples.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _peak(check: MetricCheck, samples: list[dict[str, Any]], armed_at: float | None) -> CheckResult:
    cid = f"metric:peak:{check.selector}"
    desc = f"peak of {check.selector} while the drill ran {check.change}"
    values = [(row["t"], row["worker"], float(row["values"][check.selector])) for row in samples if check.selector in row.get("values", {})]
    if not values:
        return CheckResult(cid, "metric", desc, check.change, "no samples recorded", False, check.promql or check.selector)
    t, worker, peak = max(values, key=lambda v: v[2])
    first = next((v for v in values if v[2] == peak), None)
    seen = max(0.0, first[0] - armed_at) if first and armed_at is not None else None
    observed = f"{peak:g} (on {worker}, {len(values)} samples)"
    return CheckResult(cid, "metric", desc, check.change, observed, check.compare(peak), check.promql or check.selector, seen)


def _metric(check: MetricCheck, before: dict[str, MetricsSnapshot], after: dict[str, MetricsSnapshot]) -> CheckResult:
    cid = f"metric:{check.selector}"
    desc = f"{check.selector} changes {check.change}"
    if not after:
        return CheckResult(cid, "metric", desc, check.change, "no scrape recorded", False, check.promql or check.selector)
    total = 0.0
    parts: list[str] = []
    for worker, a in after.items():
        b = before.get(worker, MetricsSnapshot.parse(""))
        d = delta(b, a, check.selector)
        total += d
        if len(after) > 1:
            parts.append(f"{worker} {d:+g}")
    observed = f"{total:+g}" + (f" ({', '.join(parts)})" if parts else "")
    return CheckResult(cid, "metric", desc, check.change, observed, check.compare(total), check.promql or check.selector)


def _span_matches(span: Span, check: TraceCheck) -> bool:
    if span.operation != check.operation:
        return False
    for key, want in check.attributes.items():
        got = span.attributes.get(key)
        if got is None:
            return False
        if _str(got) != _str(want):
            return False
    return check.status is None or span.status == check.status


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _trace(check: TraceCheck, spans: list[Span], ids: dict[str, Any]) -> CheckResult:
    name = trace_check_name(check)
    attrs = ", ".join(f"{k}={_str(v)}" for k, v in check.attributes.items())
    which = {"all": "", "first": " (first)", "last": " (last)"}[check.which]
    if check.max_spans == 0:
        desc = f"no span {check.operation} for the {check.by}{which}: the trace is incomplete"
    else:
        desc = f"span {check.operation} found by {check.by}{which}" + (f" with {attrs}" if attrs else "")
    matching = [s for s in spans if _span_matches(s, check)]
    n = len(matching)
    ok = n >= check.min_spans and (check.max_spans is None or n <= check.max_spans)
    expected = f">= {check.min_spans} span(s)" + (f", <= {check.max_spans}" if check.max_spans is not None else "")
    observed = f"{n} matching of {len(spans)} span(s) returned"
    if matching:
        observed += f"; trace {matching[0].trace_id}"
    pivot = ids.get(check.by)
    query = f"operation={check.operation} tags={{\"wordloom.{check.by}\":\"{pivot}\"}}" if pivot else f"operation={check.operation}"
    suffix = f"[{attrs}]" if attrs else ""
    return CheckResult(f"trace:{name}{suffix}", "trace", desc, expected, observed, ok, query)


def _log(check: LogCheck, records: list[LogRecord], trace_ids: set[str], armed_at: float | None) -> CheckResult:
    fields = ", ".join(f"{k}={_str(v)}" for k, v in check.fields.items())
    desc = f"log event {check.event}" + (f" with {fields}" if fields else "")
    if check.require:
        desc += f", carrying {', '.join(check.require)}"
    if check.joined_on_trace:
        desc += ", joined to a found trace on trace_id"
    hits = [
        r for r in records
        if r.fields.get("event") == check.event and all(_str(r.fields.get(k)) == _str(v) for k, v in check.fields.items())
    ]
    complete = [r for r in hits if all(k in r.fields for k in check.require)]
    if check.joined_on_trace:
        complete = [r for r in complete if r.fields.get("trace_id") in trace_ids]
    n = len(complete)
    ok = n >= check.min_count and (check.max_count is None or n <= check.max_count)
    expected = f">= {check.min_count} line(s)" if check.max_count is None else (
        f"{check.min_count}..{check.max_count} line(s)" if check.min_count else f"<= {check.max_count} line(s)"
    )
    observed = f"{n} line(s)"
    if len(hits) != n:
        observed += f" ({len(hits)} with the event and fields)"
    first: float | None = None
    if complete and armed_at is not None:
        ts = complete[0].timestamp
        if ts is not None:
            first = max(0.0, ts.timestamp() - armed_at)
    query = f"event={check.event}" + "".join(f" {k}={_str(v)}" for k, v in check.fields.items())
    suffix = f"[{fields}]" if fields else ""
    return CheckResult(f"log:{check.event}{suffix}", "log", desc, expected, observed, ok, query, first)


def _db(check: DbCheck, probes: dict[str, Any]) -> CheckResult:
    got = probes.get(check.probe)
    desc = f"database probe {check.probe}"
    if got is None:
        return CheckResult(f"db:{check.probe}", "db", desc, json.dumps(check.expect), "not probed", False)
    if isinstance(check.expect, str):
        values = got if isinstance(got, list) else [got]
        ok = bool(values) and all(v == check.expect for v in values)
    else:
        ok = got == check.expect
    return CheckResult(f"db:{check.probe}", "db", desc, json.dumps(check.expect), json.dumps(got), ok)


def evaluate(snap: Snapshot, drill: Drill) -> Verdict:
    fault = snap.read_json("_fault.json", {})
    ids = snap.read_json("_ids.json", {})
    probes = snap.read_json("_probes.json", {})
    timeline = snap.read_json("_timeline.json", {})
    armed_at = timeline.get("armed_at")
    checks: list[CheckResult] = []

    arm = fault.get("arm") or {}
    checks.append(
        CheckResult("fault:armed", "fault", f"fault {drill.fault.type} armed before the clock started", "armed",
                    arm.get("evidence", "no proof recorded"), bool(arm.get("armed")))
    )
    before = load_metrics(snap, "before")
    samples = load_samples(snap)
    after_all: dict[str, MetricsSnapshot] = {}
    for phase in ("after", "recovered"):
        after = load_metrics(snap, phase)
        after_all.update(after)
        for mc in drill.expect.metrics:
            if mc.over == "peak":
                if phase == "after":
                    checks.append(_peak(mc, samples, armed_at))
            elif mc.at == phase:
                checks.append(_metric(mc, before, after))
    for label in drill.expect.forbidden_labels:
        carrying = sorted({s.name for m in after_all.values() for s in m.samples if label in s.labels})
        checks.append(
            CheckResult(f"labels:{label}", "metric", f"no metric carries a {label} label", "none",
                        ", ".join(carrying) or f"none in {len(after_all)} scrape(s)", bool(after_all) and not carrying)
        )
    exports = load_exports(snap)
    trace_ids: set[str] = set()
    for i, tc in enumerate(drill.expect.traces):
        spans = exports.get(i, [])
        res = _trace(tc, spans, ids)
        checks.append(res)
        trace_ids.update(s.trace_id for s in spans if _span_matches(s, tc))
    records = load_logs(snap)
    for lc in drill.expect.logs:
        checks.append(_log(lc, records, trace_ids, armed_at))
    for dc in drill.expect.db:
        checks.append(_db(dc, probes))
    revert = fault.get("revert")
    if revert is not None:
        checks.append(
            CheckResult("clean:reverted", "clean", "fault reverted and environment clean", "clean",
                        revert.get("evidence", ""), not revert.get("armed", True))
        )
    passed = all(c.passed for c in checks)
    notes = _reports(drill, before, load_metrics(snap, "after"))
    return Verdict(
        scenario=drill.id,
        run_id=snap.run_id,
        passed=passed,
        checks=checks,
        snapshot=str(snap.path),
        key_figure=_key_figure(checks),
        duration_seconds=timeline.get("duration_seconds"),
        notes=notes,
    )


def _reports(drill: Drill, before: dict[str, MetricsSnapshot], after: dict[str, MetricsSnapshot]) -> list[str]:
    """Informational figures (not checks): e.g. claim time vs processing time per worker."""
    notes: list[str] = []
    for family in drill.expect.report:
        for worker, a in sorted(after.items()):
            mean = histogram_mean(a, family, since=before.get(worker))
            count = delta(before.get(worker, MetricsSnapshot.parse("")), a, f"{family}_count")
            if mean is not None:
                notes.append(f"{family} on {worker}: mean {mean * 1000:.1f} ms over {count:g} observation(s)")
    return notes


def _key_figure(checks: Iterable[CheckResult]) -> str:
    for c in checks:
        if c.kind == "metric":
            return f"{c.id.removeprefix('metric:')} {c.observed}"
    return ""
