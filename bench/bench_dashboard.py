"""The dashboard under a log flood, and the runner's trigger phase, measured on the real code.

    python bench/bench_dashboard.py [--quick] [--rates 1000,3000,10000] [--seconds 8]

Flood: a separate process appends worker-style JSON log lines to a file at a set rate; in this
process the runner's own log observer (`Observers.read_logs`) tails it every 0.25 s into a real
`Recorder` (folding, writing `_events.jsonl`, evaluating the drill's checks), whose listener posts
each event to a real dashboard (`DrillApp` + `DrillScreen` under Textual's pilot) — the same path
a drill's logs take, in the same process, sharing its GIL. While it floods, a key (`n`: the next
trainer step) is sent every 200 ms the way a terminal's driver sends it, and the time until the
screen shows its effect (the step bar moved) is measured.
Reported per rate: key latency p50/p99 (ms), dashboard CPU (cores, this process), lines/s the
screen took in vs the rate written. The baseline is the same app with no flood, in the same run.

Trigger phase: `DrillRunner._insert_many` writing 500..8,000 trigger events on the embedded
Postgres, events/s each (should stay flat: linear).

Speed is never asserted anywhere; this prints numbers and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WRITER = r"""
import json, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
n, t0 = 0, time.monotonic()
with open(path, "a", buffering=1 << 16) as fh:
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate)
        while n < due:
            fh.write(json.dumps({"ts": "2027-01-15T08:00:00.000000Z", "level": "info", "event": "outbox.processed",
                                 "msg": f"processed {n}", "result": "ok", "op": "upsert", "attempt": 1,
                                 "outbox_event_id": f"e{n}", "trace_id": f"{n:032x}", "worker_id": "worker"},
                                separators=(",", ":")) + "\n")
            n += 1
        fh.flush()
        time.sleep(0.01)
print(n)
"""


def _spans(batch: int, n: int) -> list[dict[str, Any]]:
    """Worker-shaped spans: a batch span and its event spans, new ids each call."""
    trace = uuid.uuid4().hex
    parent = uuid.uuid4().hex[:16]
    now = time.time_ns()
    base = {"service": "wordloom-search-outbox-worker", "resource": {"service.name": "wordloom-search-outbox-worker"},
            "status": "UNSET", "events": [], "kind": "internal", "status_message": "", "scope_name": "worker"}
    out = [{**base, "trace_id": trace, "span_id": parent, "parent_span_id": None, "operation": "projection.process_batch",
            "start_unix_nano": now, "duration_ns": 2_000_000,
            "attributes": {"wordloom.claim_batch_id": str(uuid.uuid4()), "result": "ok", "projection": "search_index_to_elastic",
                           "batch_size": n - 1, "ok_count": n - 1}}]
    for i in range(n - 1):
        out.append({**base, "trace_id": trace, "span_id": uuid.uuid4().hex[:16], "parent_span_id": parent,
                    "operation": "outbox.process", "start_unix_nano": now + i, "duration_ns": 100_000,
                    "attributes": {"wordloom.outbox_event_id": str(uuid.uuid4()), "wordloom.entity_id": str(uuid.uuid4()),
                                   "op": "upsert", "result": "ok", "attempt": 1, "batch": batch}})
    return out


async def _flood(rate: float, seconds: float, folder: Path, span_rate: float = 0.0) -> dict[str, Any]:
    from textual import events

    from drillui.record.eventlog import EventLogWriter
    from drillui.record.events import RunStarted, SpansSeen
    from drillui.runner.observers import Observers, Target
    from drillui.runner.recorder import Recorder
    from drillui.settings import DrillSettings
    from drillui.ui import demo
    from drillui.ui.app import DrillApp, quiet_collector
    from drillui.ui.screens.drill import DrillScreen
    from drillui.ui.widgets.header import StepBar

    drill = demo.catalog().drills[0]
    log = folder / f"worker-{rate:g}.log"
    log.write_text("")
    app = DrillApp(demo.catalog(), snapshots=folder / "snapshots", start_stack=False,
                   settings=DrillSettings.build({}, state_dir=folder / "state"))
    latencies: list[float] = []
    thresholds = gc.get_threshold()
    quiet_collector()  # as `run_guarded` does for every dashboard
    async with app.run_test(size=(160, 48)) as pilot:
        screen = DrillScreen(drill, autostart=False)
        await app.push_screen(screen)
        await pilot.pause(0.2)
        recorder = Recorder(drill, writer=EventLogWriter(folder / f"events-{rate:g}.jsonl"),
                            listeners=[lambda ev: screen.receive(ev, screen.run_number)])
        recorder.emit(RunStarted(run_id="bench", scenario=drill.id, letter="A", title="t", snapshot=str(folder), drill={}))
        observers = Observers(recorder, lambda: [Target("worker", None, log)], "http://127.0.0.1:9", since=time.time(),
                              snapshot_path=folder)
        stop = asyncio.Event()
        spans_sent = 0

        def tail() -> None:
            nonlocal spans_sent
            batch = 0
            while not stop.is_set():
                observers.read_logs()
                if span_rate:
                    # What the span observer emits: the new spans of one poll, 21-span traces.
                    due = int(span_rate * 0.25)
                    new: list[dict[str, Any]] = []
                    while len(new) < due:
                        batch += 1
                        new += _spans(batch, 21)
                    recorder.emit(SpansSeen(spans=tuple(new)))
                    spans_sent += len(new)
                time.sleep(0.25)

        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds)], stdout=subprocess.PIPE, text=True)
        loop = asyncio.get_running_loop()
        tailer = loop.run_in_executor(None, tail) if rate else None
        cpu0, wall0 = time.process_time(), time.monotonic()
        bar = screen.query_one(StepBar)
        driver = app._driver
        assert driver is not None
        while time.monotonic() - wall0 < seconds:
            before = bar.index
            t = time.monotonic()
            # As a terminal's driver does: the key goes in, nothing waits for the app to be idle
            # (`pilot.press` would, and under a flood that is most of what it measures).
            key = events.Key("n", "n")
            key.set_sender(app)
            driver.send_message(key)
            while bar.index == before and time.monotonic() - t < 10:
                await asyncio.sleep(0.002)
            latencies.append((time.monotonic() - t) * 1000)
            await asyncio.sleep(0.1)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        written = int(writer.communicate()[0].strip() or 0)
        stop.set()
        if tailer is not None:
            await tailer
        observers.read_logs(final=True)
        await pilot.pause(0.5)
        taken = screen.state.logs.total
        recorder.close()
        observers.close()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    latencies.sort()
    return {
        "rate": rate,
        "span_rate": span_rate,
        "spans_sent": spans_sent,
        "key_ms_p50": round(statistics.median(latencies), 1),
        "key_ms_p95": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))], 1),
        "key_ms_p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "keys": len(latencies),
        "cpu_cores": round(cpu, 2),
        "lines_written": written,
        "lines_on_screen": taken,
        "ingest_ratio": round(taken / written, 3) if written else None,
    }


def flood(rates: list[float], seconds: float, span_share: float = 0.5) -> list[dict[str, Any]]:
    """The baseline (no flood), then each log rate with spans at `span_share` of it (10,000
    lines/s come with 5,000 spans/s: the issue's flood)."""
    folder = Path(tempfile.mkdtemp(prefix="drillui-bench-flood-"))
    return [asyncio.run(_flood(rate, seconds, folder, rate * span_share)) for rate in [0.0, *rates]]


def trigger_phase(sizes: list[int]) -> list[dict[str, Any]]:
    """Events/s of the runner's trigger writing, on the embedded Postgres."""
    from drillui.record.events import Event
    from drillui.record.snapshot import Snapshot
    from drillui.runner.recorder import Recorder
    from drillui.runner.runner import DrillRunner, RunOptions
    from drillui.scenarios import load_catalog
    from drillui.stack.postgres import EmbeddedPostgres
    from drillui.stack.stack import Endpoints
    from worker.db import connect, ensure_schema

    folder = Path(tempfile.mkdtemp(prefix="drillui-bench-trigger-"))
    pg = EmbeddedPostgres(folder / "pg", settings={"fsync": "off", "synchronous_commit": "off"})
    pg.start()
    out: list[dict[str, Any]] = []
    try:
        drill = load_catalog(Path(__file__).resolve().parent.parent / "scenarios.yaml").get("A")
        from drillui.runner.infra import Infrastructure

        for n in sizes:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with connect(pg.url) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            dsn = pg.dsn(name)
            infra = Infrastructure(Endpoints(dsn, "http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9"), None, "bench")
            runner = DrillRunner(drill, infra, RunOptions(snapshots=folder / "snaps", trigger_count=n))
            runner._conn = connect(dsn)
            ensure_schema(runner._conn)
            runner.snapshot = Snapshot.create(folder / "snaps", drill.id)
            seen: list[Event] = []
            runner._recorder = Recorder(drill, listeners=[seen.append])
            began = time.perf_counter()
            runner.trigger()
            took = time.perf_counter() - began
            runner._conn.close()
            out.append({"events": n, "seconds": round(took, 3), "events_per_s": round(n / took)})
    finally:
        pg.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short floods, fewer sizes")
    ap.add_argument("--rates", default="1000,3000,10000")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--sizes", default="500,1000,2000,4000,8000")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        sizes = sizes[:1] + sizes[-1:]
    report = {"load_average": [round(x, 2) for x in os.getloadavg()], "flood": flood(rates, seconds),
              "trigger_phase": trigger_phase(sizes)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
