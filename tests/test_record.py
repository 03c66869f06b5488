"""The run record: typed events, the event log, the snapshot folder, and one evaluator for all.

No servers: events are made here (for every drill of the catalog) and go through the real
`Recorder` into a real `_events.jsonl`, as a run writes them.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from drillui.evidence.checks import Check, evaluate
from drillui.evidence.state import RunState
from drillui.evidence.verify import replay, verify
from drillui.record.eventlog import EventLogWriter, follow_events, read_events
from drillui.record.events import (
    EVENT_TYPES,
    ChecksChanged,
    CleanChecked,
    Event,
    FaultArmed,
    FaultReverted,
    LogLinesSeen,
    MetricsSampled,
    ProbeRecorded,
    RunEnded,
    RunStarted,
    SpansSeen,
    TriggersWritten,
    UnknownEvent,
    dumps,
    loads,
)
from drillui.record.reader import read_run
from drillui.record.snapshot import Snapshot, SnapshotError, run_folder
from drillui.runner.recorder import Recorder
from drillui.scenarios import Drill, load_catalog
from drillui.sources.metrics import parse_selector

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "scenarios.yaml")
T0 = 1_800_000_000.0


# ---- events and their log -----------------------------------------------------------------------


def _example(cls: type[Event]) -> Event:
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in ("seq", "t", "wall"):
            continue
        kind = str(f.type)
        if f.default is not f.default_factory or f.name in ("raw",):  # has a default: keep it
            pass
        if "tuple" in kind:
            values[f.name] = ()
        elif "Mapping" in kind:
            values[f.name] = {"k": "v"}
        elif "bool" in kind:
            values[f.name] = True
        elif "float" in kind:
            values[f.name] = 1.5
        elif "int" in kind:
            values[f.name] = 3
        elif "Phase" in kind:
            values[f.name] = "running"
        elif "EndState" in kind:
            values[f.name] = "stopped"
        elif "WorkerEnd" in kind:
            values[f.name] = "killed"
        elif "SamplePhase" in kind:
            values[f.name] = "live"
        else:
            values[f.name] = "x"
    return cls(**values, seq=7, t=1.25, wall=T0)


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_type_round_trips_through_one_json_line(cls: type[Event]) -> None:
    ev = _example(cls)
    line = dumps(ev)
    assert "\n" not in line and json.loads(line)["type"] == cls.type
    assert loads(line) == ev


def test_an_unknown_or_broken_line_is_kept_not_fatal(tmp_path: Path) -> None:
    p = tmp_path / "_events.jsonl"
    p.write_text('{"type":"from_the_future","seq":1,"t":0.5,"wall":1}\nnot json\n{"type":"said"}\n{"type":"said","message":"ok"}\n')
    events = read_events(p)
    assert [type(e) for e in events] == [UnknownEvent, UnknownEvent, UnknownEvent, type(loads('{"type":"said","message":"x"}'))]
    assert events[0].seq == 1 and events[-1].message == "ok"  # type: ignore[attr-defined]


def test_a_second_reader_follows_the_log_while_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "_events.jsonl"
    writer = EventLogWriter(path)
    seen: list[Event] = []
    done = threading.Event()

    def follow() -> None:
        for batch in follow_events(path, stopped=lambda: False, poll=0.01):
            seen.extend(batch)
        done.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    sent = [ProbeRecorded(name=f"p{i}", value=i, seq=i) for i in range(50)]
    for ev in sent:
        writer.append(ev)
        time.sleep(0.002)
    assert not done.is_set(), "the follower stops only at the end of the run"
    writer.append(RunEnded(state="passed", seq=51))
    assert done.wait(5)
    writer.close()
    assert seen[:50] == sent and isinstance(seen[-1], RunEnded)


def test_a_follower_only_takes_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "_events.jsonl"
    line = dumps(ProbeRecorded(name="p", value=1)) + "\n"
    with open(path, "w") as fh:
        fh.write(line[:10])
        fh.flush()
        gen = follow_events(path, stopped=lambda: False, poll=0.01)
        assert next(gen) == []
        fh.write(line[10:])
        fh.flush()
        assert [e.type for e in next(gen)] == ["probe_recorded"]


# ---- the snapshot folder ------------------------------------------------------------------------


def test_run_files_are_written_once_and_the_manifest_names_what_changed(tmp_path: Path) -> None:
    snap = Snapshot.create(tmp_path, "es_429")
    assert (snap.path.stat().st_mode & 0o777) == 0o700
    snap.write_json("_result.json", {"verdict": "pass"})
    with pytest.raises(FileExistsError):
        snap.write_json("_result.json", {"verdict": "fail"})
    (snap.path / "_logs" / "w.log").write_text("line\n")
    snap.write_manifest()
    assert snap.check_manifest().intact
    (snap.path / "_logs" / "w.log").write_text("rewritten\n")
    (snap.path / "_exports" / "later.json").write_text("{}")
    check = snap.check_manifest()
    assert not check.intact and check.changed == ["_logs/w.log"] and check.added == ["_exports/later.json"]
    assert snap.new_screenshot_path().name.endswith("-01.svg")


def test_run_paths_are_confined_to_the_snapshot_root(tmp_path: Path) -> None:
    for bad in ("../../etc", "20260101T000000/../..", "x"):
        with pytest.raises(SnapshotError, match="is not a run id"):
            run_folder(tmp_path, "es_429", bad)
    (tmp_path / "file").write_text("")
    with pytest.raises(SnapshotError, match="is a file"):
        run_folder(tmp_path / "file", "es_429", None)


def test_a_corrupt_result_is_one_clear_error(tmp_path: Path) -> None:
    snap = Snapshot.create(tmp_path, "es_429")
    (snap.path / "_result.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="is not readable JSON"):
        snap.result()


# ---- one evaluator: the live path and the offline path agree over the whole catalog -------------


def _labels(selector: str) -> tuple[str, dict[str, str]]:
    sel = parse_selector(selector)
    return sel.name, {m.label: m.value for m in sel.matchers if m.op == "="}


class Synthetic:
    """Observations for any drill of the catalog, some that satisfy its checks, some not."""

    def __init__(self, drill: Drill, folder: Path, seed: int) -> None:
        self.drill, self.rng = drill, random.Random(seed)
        self.folder = folder
        self.events = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(3)]
        self.entities = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(3)]
        self.batches = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(2)]
        self.traces = [f"{self.rng.getrandbits(128):032x}" for _ in range(2)]
        self.log = folder / "_logs" / "worker-r.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.offset, self.line = 0, 0
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def sample(self, phase: str, t: float) -> MetricsSampled:
        rows = []
        for mc in self.drill.expect.metrics:
            name, labels = _labels(mc.selector)
            key = (name, tuple(sorted(labels.items())))
            if phase != "before" and self.rng.random() < 0.6:
                self.counters[key] = self.counters.get(key, 0.0) + self.rng.choice([0, 1, 2, 5])
            rows.append((name, labels, self.counters.get(key, 0.0), "gauge" if "stuck" in name or "lag" in name else "counter"))
        if self.drill.expect.forbidden_labels and self.rng.random() < 0.3:
            rows.append(("outbox_processed_total", {self.drill.expect.forbidden_labels[0]: "1"}, 1.0, "counter"))
        return MetricsSampled(worker="worker", phase=phase, taken_at=t, samples=tuple(rows))  # type: ignore[arg-type]

    def lines(self) -> LogLinesSeen:
        out = []
        batch = self.rng.choice(self.batches)
        out.append({"event": "outbox.claimed", "claim_batch_id": batch, "outbox_event_ids": self.events,
                    "trace_id": self.rng.choice(self.traces)})
        for lc in self.drill.expect.logs:
            if self.rng.random() < 0.7:
                rec: dict[str, Any] = {"event": lc.event, **lc.fields, "ts": "2027-01-15T08:00:02.000000Z"}
                for k in lc.require:
                    if self.rng.random() < 0.9:
                        rec[k] = self.rng.choice(self.traces) if k == "trace_id" else "v"
                out.append(rec)
        text = [json.dumps(x) for x in out] + ["Traceback (most recent call last):"]
        data = ("\n".join(text) + "\n").encode()
        with open(self.log, "ab") as fh:
            fh.write(data)
        ev = LogLinesSeen(worker="worker", file="_logs/worker-r.log", start=self.offset, end=self.offset + len(data),
                          first_line=self.line + 1, lines=tuple(text))
        self.offset += len(data)
        self.line += len(text)
        return ev

    def spans(self, t: float) -> SpansSeen:
        out = []
        for tc in self.drill.expect.traces:
            if self.rng.random() < 0.7:
                pivot = {"outbox_event_id": self.events[0], "claim_batch_id": self.rng.choice(self.batches),
                         "entity_id": self.entities[0], "obs_schema": "labs-009-v2"}[tc.by]
                attrs = {f"wordloom.{tc.by}": pivot, **{k: v for k, v in tc.attributes.items() if self.rng.random() < 0.9}}
                out.append({"trace_id": self.rng.choice(self.traces), "span_id": f"{self.rng.getrandbits(64):016x}",
                            "parent_span_id": None, "operation": tc.operation, "service": "s",
                            "start_unix_nano": int(t * 1e9), "duration_ns": 1000, "attributes": attrs, "resource": {},
                            "status": tc.status or "UNSET", "events": []})
        return SpansSeen(spans=tuple(out))

    def stream(self) -> list[tuple[float, Event]]:
        evs: list[tuple[float, Event]] = [
            (T0 + 0.1, self.sample("before", T0 + 0.1)),
            (T0 + 0.5, FaultArmed(fault=self.drill.fault.type, evidence="armed for the test")),
            (T0 + 0.6, TriggersWritten(events=tuple({"outbox_event_id": e, "entity_id": n, "op": "upsert"}
                                                    for e, n in zip(self.events, self.entities, strict=True)))),
        ]
        t = T0 + 0.7
        for _ in range(6):
            t += 0.5
            evs.append((t, self.rng.choice([self.sample("live", t), self.lines(), self.spans(t)])))
        for dc in self.drill.expect.db:
            value = dc.expect if self.rng.random() < 0.6 else ["pending"]
            evs.append((t + 0.1, ProbeRecorded(name=dc.probe, value=value)))
        evs += [(t + 0.2, self.sample("after", t + 0.2)), (t + 0.3, FaultReverted(fault=self.drill.fault.type, evidence="ok")),
                (t + 0.4, self.sample("recovered", t + 0.4)), (t + 0.5, self.lines()), (t + 0.6, self.spans(t)),
                (t + 0.7, CleanChecked(clean=self.rng.random() < 0.8, summary="checked"))]
        return evs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("letter", [d.letter for d in CATALOG.drills])
def test_live_and_offline_judge_every_drill_the_same(letter: str, seed: int, tmp_path: Path) -> None:
    drill = CATALOG.get(letter)
    snap = Snapshot.create(tmp_path, drill.id)
    synthetic = Synthetic(drill, snap.path, seed)
    clock = [T0]
    # A small inline budget: later log lines are recorded by reference into _logs/ only.
    rec = Recorder(drill, writer=EventLogWriter(snap.events_path), log_inline_budget=1, clock=lambda: clock[0])
    rec.emit(RunStarted(run_id=snap.run_id, scenario=drill.id, letter=drill.letter, title=drill.title,
                        snapshot=str(snap.path), drill=drill.model_dump(mode="json")))
    rec.initial_checks()
    for t, ev in synthetic.stream():
        clock[0] = t
        rec.emit(ev)
    live_final = rec.final_checks()
    from drillui.evidence.checks import Verdict, end_state

    state, why = end_state(live_final, stopped=False, error=None)
    rec.end(Verdict(drill.id, snap.run_id, state, live_final, str(snap.path), why=why))
    rec.close()
    snap.write_json("_result.json", Verdict(drill.id, snap.run_id, state, live_final, str(snap.path), why=why).to_json())
    snap.write_manifest()

    run = read_run(snap.path)
    assert any(isinstance(e, LogLinesSeen) and e.omitted == 0 for e in run.events)
    raw = read_events(snap.events_path)
    assert any(isinstance(e, LogLinesSeen) and e.omitted and not e.lines for e in raw), "the budget was not exercised"

    # offline: verify recomputes the same checks, states, observed values and first-seen times
    v = verify(run)
    assert v.differences == [] and v.consistent
    assert [c.to_json() for c in v.recomputed.checks] == [c.to_json() for c in live_final]

    # the live checklist as recorded, and as an offline replay of the same observations ticks it
    recorded = [(c["id"], c["state"], c["first_seen_seconds"]) for e in raw if isinstance(e, ChecksChanged) for c in e.checks]
    offline_state, tracker = replay(drill, run.events)
    ticks = [(c["id"], c["state"], c["first_seen_seconds"]) for e in run.events if isinstance(e, ChecksChanged) for c in e.checks]
    assert recorded == ticks
    assert {c.id: c.state for c in tracker.last.values()} == {
        cid: c.state for cid, c in ((c["id"], Check.from_json(c)) for e in raw[:-2] if isinstance(e, ChecksChanged)
                                    for c in e.checks)
    }

    # the dashboard's fold of the same stream shows the recorded checklist and the recorded end
    screen = RunState(drill).apply_all(run.events)
    assert [Check.from_json(c) for c in screen.checks.values()] == live_final
    assert screen.end_state == state
    assert [e.id for e in evaluate(drill, offline_state, final=True)] == [c.id for c in live_final]


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["event-log", "legacy"])
def test_verify_streams_a_huge_worker_log(tmp_path: Path, legacy: bool) -> None:
    """A 150 MB worker log: verify folds it chunk by chunk instead of holding it (it used to
    peak at 2.8 GB for a 450 MB log)."""
    import subprocess
    import sys

    from drillui.ui import demo

    snap = Snapshot(tmp_path / "snapshots", "es_down_connect", demo.RUN_ID)
    snap.path.mkdir(parents=True)
    (snap.path / "_logs").mkdir()
    log = snap.path / "_logs" / f"worker-{demo.RUN_ID}.log"
    line = (json.dumps({"ts": "2027-01-15T08:00:01.000000Z", "level": "info", "event": "outbox.processed",
                        "msg": "x" * 400, "result": "ok"}) + "\n").encode()
    with open(log, "wb") as fh:
        for _ in range(150 * (1 << 20) // len(line)):
            fh.write(line)
    events = demo.events()
    if legacy:
        from drillui.record.snapshot import Recipe

        snap.write_json("_recipe.json", Recipe(scenario="es_down_connect", letter="A", run_id=snap.run_id,
                                               drill=demo.catalog().drills[0].model_dump(mode="json"),
                                               workers=[{"name": "worker", "worker_id": demo.WORKER_ID}]))
    else:
        writer = EventLogWriter(snap.events_path)
        size, start, n = log.stat().st_size, 0, 1
        for ev in events[:-2]:
            writer.append(ev)
        chunk = 8 << 20
        while start < size:  # the huge log as the runner records it past its budget: by reference
            end = min(size, start + chunk)
            count = chunk // len(line) if end < size else (size - start) // len(line)
            end = start + count * len(line)
            writer.append(LogLinesSeen(worker="worker", file=f"_logs/{log.name}", start=start, end=end,
                                       first_line=n, lines=(), omitted=count))
            start, n = end, n + count
        for ev in events[-2:]:
            writer.append(ev)
        writer.close()
    end = events[-1]
    assert isinstance(end, RunEnded)
    snap.write_json("_result.json", dict(end.verdict or {}))
    code = ("import resource, sys; from drillui.cli import main; rc = main(['--scenarios', sys.argv[1], 'verify', 'A', "
            "'--snapshots', sys.argv[2]]); print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "scenarios.yaml"), str(tmp_path / "snapshots")],
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    rss_mb = int(proc.stderr.rsplit("RSS", 1)[1].split()[0]) / 1024
    assert rss_mb < 250, f"verify held the log: {rss_mb:.0f} MB resident for a 150 MB log"


@pytest.mark.parametrize("run_file", sorted((Path(__file__).parent / "fixtures" / "runs").glob("*.events.jsonl.gz")),
                         ids=lambda p: p.name.split("-")[0])
def test_a_poll_folded_in_parts_is_the_same_evidence(run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard folds big polls in parts between key presses; what it shows and judges must
    be what the whole events give (every check, every log line at its number, every span)."""
    import gzip

    from drillui.record import events as events_module
    from drillui.record.events import SpansSeen, fold_parts

    # The recorded runs are small; parts this small split nearly every poll of them.
    monkeypatch.setattr(events_module, "LINES_PER_PART", 3)
    monkeypatch.setattr(events_module, "SPANS_PER_PART", 1)
    (tmp_path / "_events.jsonl").write_bytes(gzip.decompress(run_file.read_bytes()))
    events = list(read_run(tmp_path).iter_events())
    # The recorded polls are small: make them big, as a flood does, by joining each worker's lines.
    big: list[Event] = []
    for ev in events:
        last = big[-1] if big else None
        if (isinstance(ev, LogLinesSeen) and isinstance(last, LogLinesSeen) and last.worker == ev.worker
                and last.end == ev.start and not last.omitted and last.first_line + len(last.lines) == ev.first_line):
            big[-1] = LogLinesSeen(worker=ev.worker, file=ev.file, start=last.start, end=ev.end, first_line=last.first_line,
                                   lines=last.lines + ev.lines, omitted=ev.omitted, t=ev.t)
        else:
            big.append(ev)
    drill = CATALOG.get(run_file.name.split("-")[0])
    whole = RunState(drill).apply_all(big)
    parts = [p for ev in big for p in fold_parts(ev)]
    assert sum(isinstance(p, LogLinesSeen) for p in parts) > sum(isinstance(e, LogLinesSeen) for e in big)
    if any(isinstance(e, SpansSeen) and len(e.spans) > 1 for e in big):
        assert sum(isinstance(p, SpansSeen) for p in parts) > sum(isinstance(e, SpansSeen) for e in big)
    split = RunState(drill).apply_all(parts)
    assert evaluate(drill, split, final=True) == evaluate(drill, whole, final=True)
    assert split.log_lines_total == whole.log_lines_total
    assert split.logs.snapshot() == whole.logs.snapshot()
    assert split.spans.omitted == whole.spans.omitted and len(split.spans) == len(whole.spans)
    for ev in big:
        if isinstance(ev, LogLinesSeen | SpansSeen):
            ps = fold_parts(ev)
            assert ps[0].t == ev.t
            if isinstance(ev, LogLinesSeen):
                assert (ps[0].start, ps[-1].end, ps[-1].omitted) == (ev.start, ev.end, ev.omitted)
                assert [x for p in ps for x in p.lines] == list(ev.lines)  # type: ignore[attr-defined]
