"""Events for a run recorded before `_events.jsonl` existed, from the files it did write.

Those runs kept the phase scrapes, the logs, the trace exports, the probes, the fault proofs and
the timeline, but not the samples in between, the moments checks ticked, the steps or the
narration's phases. This module turns what is there into the same typed events (so `verify`,
`replay` and reports read every run one way) and lists what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from drillui.record.events import (
    CleanChecked,
    Event,
    FaultArmed,
    FaultNotArmed,
    FaultReverted,
    LogLinesSeen,
    MetricsSampled,
    ProbeRecorded,
    RunEnded,
    RunStarted,
    SpansSeen,
    TriggersWritten,
    WorkerStarted,
    WorkerStopped,
)
from drillui.record.snapshot import (
    EXPORTS_DIR,
    FAULT,
    IDS,
    LEGACY_SAMPLES,
    METRICS_DIR,
    PROBES,
    QUERIES,
    TIMELINE,
    FaultRecord,
    Ids,
    Snapshot,
    Timeline,
)
from drillui.sources.metrics import MetricsSnapshot, parse_selector
from drillui.sources.traces import parse_legacy_traces, parse_v3_traces, span_to_json

MISSING = [
    "the metric samples taken between the phase scrapes (only before/after/recovered and the peak samples)",
    "the moments each check ticked and the trainer's steps",
    "the runner's phases (the narration is in _progress.log)",
]


def _stamp(ev: Event, wall: float, seq: int, t0: float) -> Event:
    from dataclasses import replace

    return replace(ev, wall=wall, seq=seq, t=round(wall - t0, 4))


def _rows(snap: MetricsSnapshot) -> tuple[tuple[str, dict[str, str], float, str], ...]:
    return tuple((s.name, dict(s.labels), s.value, s.kind) for s in snap.samples)


CHUNK_BYTES = 4 << 20


def legacy_events(snap: Snapshot) -> tuple[Iterator[Event], list[str]]:
    recipe = snap.recipe()
    if recipe is None:
        from drillui.record.snapshot import SnapshotError

        raise SnapshotError(f"{snap.path} has neither _events.jsonl nor _recipe.json: it is not a run folder drillui wrote")
    timeline = snap.read_model(TIMELINE, Timeline) or Timeline()
    fault = snap.read_model(FAULT, FaultRecord) or FaultRecord()
    ids = snap.read_model(IDS, Ids) or Ids()
    probes: dict[str, Any] = snap.read_json(PROBES, {}) or {}
    result = snap.result()
    t0 = timeline.started_at or 0.0
    timed: list[tuple[float, int, Event]] = []

    def at(wall: float | None, ev: Event, order: int = 0) -> None:
        timed.append((wall if wall is not None else t0, order, ev))

    at(t0, RunStarted(run_id=recipe.run_id, scenario=recipe.scenario, letter=recipe.letter, title=recipe.title,
                      snapshot=str(snap.path), drill=recipe.drill, parameters=recipe.parameters,
                      mode="bounded (recorded before the event log)", infrastructure=recipe.infrastructure), -1)
    workers = [w.get("name", "worker") for w in recipe.workers]
    for w in recipe.workers:
        name = str(w.get("name", "worker"))
        log = snap.log_path(name)
        at(t0, WorkerStarted(name=name, worker_id=str(w.get("worker_id", name)), pid=None, metrics_url=None,
                             log_file=snap.relative(log)))
    rows = probes.get("trigger_rows")
    if isinstance(rows, list) and rows:
        triggers = [{"outbox_event_id": r.get("outbox_event_id"), "entity_id": r.get("entity_id"), "op": r.get("op", "")}
                    for r in rows if isinstance(r, dict)]
    else:
        triggers = [{"outbox_event_id": e, "entity_id": ent} for e, ent in
                    zip(ids.outbox_event_ids, [*ids.entity_ids, *[None] * len(ids.outbox_event_ids)], strict=False)]
    at(timeline.triggered_at or timeline.armed_at, TriggersWritten(events=tuple(triggers)))
    extra = getattr(timeline, "model_extra", None) or {}
    single = len(workers) == 1
    for phase in ("before", "after", "recovered"):
        when = extra.get(f"scraped_{phase}_at")
        for name in workers:
            p = snap.metrics_path(phase, name, single)
            if p.exists():
                m = MetricsSnapshot.parse(p.read_text(encoding="utf-8"), taken_at=when)
                at(when, MetricsSampled(worker=name, phase=phase, taken_at=m.taken_at, samples=_rows(m),  # type: ignore[arg-type]
                                        file=snap.relative(p)), 2)
    samples = snap.path / METRICS_DIR / LEGACY_SAMPLES
    if samples.exists():
        for line in samples.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else None
            if not isinstance(row, dict):
                continue
            rows = []
            for sel, value in (row.get("values") or {}).items():
                parsed = parse_selector(sel)
                labels = {m.label: m.value for m in parsed.matchers if m.op == "="}
                rows.append((parsed.name, labels, float(value), "gauge"))
            at(float(row.get("t", t0)), MetricsSampled(worker=str(row.get("worker")), phase="live", taken_at=float(row.get("t", t0)),
                                                       samples=tuple(rows), full=False), 2)
    # The logs are read last, in bounded chunks, when the events are consumed (see below).
    logs_at = timeline.finished_at if timeline.finished_at is not None else t0
    if fault.arm is not None:
        cls = FaultArmed if fault.arm.armed else FaultNotArmed
        fault_type = str((recipe.drill.get("fault") or {}).get("type", "?"))
        at(timeline.armed_at or t0, cls(fault=fault_type, evidence=fault.arm.evidence))
    if fault.revert_proof is not None:
        at(timeline.reverted_at, FaultReverted(fault=str((recipe.drill.get("fault") or {}).get("type", "?")),
                                               evidence=fault.revert_proof.evidence, still_armed=fault.revert_proof.armed))
    exports = snap.path / EXPORTS_DIR
    index = snap.read_json(f"{EXPORTS_DIR}/{QUERIES}", []) or []
    spans: dict[tuple[str, str], dict[str, Any]] = {}
    for q in index:
        p = exports / str(q.get("file", ""))
        if not q.get("api") or not p.is_file():
            continue
        body = json.loads(p.read_text(encoding="utf-8")) if p.stat().st_size else None
        if body is None or (q["api"] == "api_v3" and isinstance(body, dict) and "result" not in body):
            continue
        traces = parse_v3_traces(body) if q["api"] == "api_v3" else parse_legacy_traces(body)
        for t in traces:
            for s in t.spans:
                spans.setdefault((s.trace_id, s.span_id), span_to_json(s))
    if spans:
        at(timeline.finished_at, SpansSeen(spans=tuple(spans.values())), 4)
    for name, value in probes.items():
        at(timeline.finished_at, ProbeRecorded(name=name, value=value), 5)
    for name in workers:
        at(timeline.finished_at, WorkerStopped(name=name, worker_id=name, pid=None, exit_code=None, how="stopped"), 5)
    if fault.revert is not None:
        at(timeline.finished_at, CleanChecked(clean=not fault.revert.armed, summary=fault.revert.evidence), 6)
    if result is not None:
        at(timeline.finished_at, RunEnded(state=result.end_state, why="recorded before end states" if not result.why else result.why,  # type: ignore[arg-type]
                                          verdict=result.model_dump(mode="json"), duration=result.duration_seconds or 0.0), 9)
    timed.sort(key=lambda x: (x[0], x[1]))

    def stream() -> Iterator[Event]:
        seq = 0
        logs_done = False
        for wall, order, ev in timed:
            if not logs_done and (wall, order) > (logs_at, 3):
                logs_done = True
                for log_ev in _log_chunks(snap):
                    seq += 1
                    yield _stamp(log_ev, logs_at, seq, t0)
            seq += 1
            yield _stamp(ev, wall, seq, t0)
        if not logs_done:
            for log_ev in _log_chunks(snap):
                seq += 1
                yield _stamp(log_ev, logs_at, seq, t0)

    return stream(), list(MISSING)


def _log_chunks(snap: Snapshot) -> Iterator[LogLinesSeen]:
    """Each worker log as events of at most CHUNK_BYTES: a huge log is never held whole."""
    for log in snap.log_files():
        source = snap.log_source(log)
        offset, line_no, pending = 0, 1, b""
        with open(log, "rb") as fh:
            while True:
                data = fh.read(CHUNK_BYTES)
                if not data:
                    break
                block = pending + data
                cut = block.rfind(b"\n")
                if cut < 0:
                    pending = block
                    continue
                body, pending = block[:cut], block[cut + 1:]
                lines = tuple(line.decode("utf-8", "replace") for line in body.split(b"\n"))
                yield LogLinesSeen(worker=source, file=snap.relative(log), start=offset, end=offset + cut + 1,
                                   first_line=line_no, lines=lines)
                offset += cut + 1
                line_no += len(lines)
        if pending:
            yield LogLinesSeen(worker=source, file=snap.relative(log), start=offset, end=offset + len(pending),
                               first_line=line_no, lines=(pending.decode("utf-8", "replace"),))

