"""Every benchmark in one run, one table of ratios against each goal.

    python bench/run.py            # ~8-10 min: three rounds where a benchmark has rounds
    python bench/run.py --quick    # under three minutes: one round, smaller backlogs and floods
    python bench/run.py --json     # the rows as JSON

Runs, each variant beside its baseline in the same run and process:
- the relay (`bench_relay.run`): one and two workers against the claim+done and `_bulk` limits,
  and the gauges by backlog beside the query they replaced;
- the trace store (`bench_tracestore.run`): ingest against the decode-and-walk floor, queries by
  the drills' attributes with the store full, beside a linear scan;
- the dashboard (`bench_dashboard.flood`): key latency and CPU while workers write log lines and
  spans arrive, beside the same app with no flood;
- the drills: `drillui run --all` on a fresh stack of its own, timed as a user would time it, and
  the runner's trigger writing (`bench_dashboard.trigger_phase`) by number of events.

Speed is measured here, never asserted in tests: the table says "met" or by how much a goal is
missed. Numbers move with the machine's load; the load average is printed at both ends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


@dataclass
class Line:
    section: str
    figure: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None


def _goal(value: float, op: str, ref: float) -> bool:
    return value >= ref if op == ">=" else value <= ref


def _from_rows(section: str, rows: list[Any], goals: dict[str, tuple[str, float]]) -> list[Line]:
    out = []
    for r in rows:
        if r.figure.startswith("load average"):
            continue
        goal = next(((op, ref) for key, (op, ref) in goals.items() if key in r.figure), None)
        out.append(Line(section, r.figure, r.value, r.unit, f"{goal[0]} {goal[1]:g}" if goal else "",
                        _goal(r.value, *goal) if goal else None))
    return out


def relay(quick: bool) -> list[Line]:
    import bench_relay

    rows = bench_relay.run(quick)
    return _from_rows("relay", rows, {"one worker / min(claim, sink)": (">=", 0.9), "two workers / one worker": (">=", 1.0),
                                      "pending (reading)": ("<=", 2.0)})


def tracestore(quick: bool) -> list[Line]:
    import bench_tracestore

    rows = bench_tracestore.run(quick)
    return _from_rows("trace store", rows, {"ingest / floor": (">=", 0.8), "indexed": ("<=", 5.0)})


def dashboard(quick: bool) -> list[Line]:
    import bench_dashboard

    rates = [1000.0, 10000.0] if quick else [1000.0, 3000.0, 10000.0]
    results = bench_dashboard.flood(rates, 3.0 if quick else 8.0)
    base = results[0]
    out: list[Line] = []
    for r in results:
        what = "no flood" if not r["rate"] else f"{r['rate']:,.0f} lines/s + {r['span_rate']:,.0f} spans/s"
        flood = r["rate"] >= 10000
        out += [
            Line("dashboard", f"key latency p50, {what}", r["key_ms_p50"], "ms"),
            Line("dashboard", f"key latency p95, {what}", r["key_ms_p95"], "ms"),
            Line("dashboard", f"key latency p99, {what}", r["key_ms_p99"], "ms", "<= 100" if flood else "",
                 r["key_ms_p99"] <= 100 if flood else None),
            Line("dashboard", f"CPU, {what}", r["cpu_cores"], "cores", "<= 1" if flood else "", r["cpu_cores"] <= 1 if flood else None),
        ]
        if r["rate"]:
            out.append(Line("dashboard", f"lines on screen / written, {what}", r["ingest_ratio"] or 0.0, "ratio"))
            if base["key_ms_p99"]:
                out.append(Line("dashboard", f"key p99 / p99 with no flood, {what}", r["key_ms_p99"] / base["key_ms_p99"], "ratio"))
    return out


def _fmt(line: Line) -> str:
    v = line.value
    value = f"{v:,.0f}" if line.unit in ("rows/s", "docs/s", "spans/s", "bytes", "us") else f"{v:.3f}" if v < 100 else f"{v:,.1f}"
    met = "" if line.met is None else "met" if line.met else "MISSED"
    return f"| {line.section:<11} | {line.figure:<58} | {value:>10} | {line.unit:<7} | {line.goal:<7} | {met:<6} |"


def drills(quick: bool) -> list[Line]:
    """`drillui run --all` on a fresh embedded stack of its own (a user's command, timed from
    outside), and the runner's trigger writing by size."""
    import subprocess
    import tempfile

    import bench_dashboard

    from drillui.scenarios import load_catalog

    catalog = load_catalog(HERE.parent / "scenarios.yaml")
    folder = Path(tempfile.mkdtemp(prefix="drillui-bench-drills-"))
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "drillui", "--state-dir", str(folder / "state"), "run", "--all", "--json",
                           "--snapshots", str(folder / "snapshots")], cwd=folder, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - began
    verdicts = json.loads(proc.stdout) if proc.stdout.strip().startswith("[") else []
    passed = sum(1 for v in verdicts if v.get("verdict") == "pass")
    first = {d.id for d in catalog.drills if d.letter in "ABCDEFGH"}
    a_to_h = sum(float(v.get("duration_seconds") or 0) for v in verdicts if v.get("scenario") in first)
    out = [
        Line("drills", f"run --all, {len(catalog.drills)} drills, wall time (stack start included)", wall, "s", "<= 150", wall <= 150),
        Line("drills", "run --all, drills passed", passed, "drills", f">= {len(catalog.drills)}", passed >= len(catalog.drills)),
        Line("drills", "drills A-H, sum of their run times", a_to_h, "s", "<= 20", a_to_h <= 20),
    ]
    for r in bench_dashboard.trigger_phase([500, 8000] if quick else [500, 2000, 8000]):
        out.append(Line("drills", f"trigger events written, {r['events']:,} events", r["events_per_s"], "ev/s", ">= 5000",
                        r["events_per_s"] >= 5000))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, smaller backlogs and floods: under three minutes")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--only", choices=["relay", "tracestore", "dashboard", "drills"], action="append",
                    help="run only these sections (repeatable)")
    args = ap.parse_args(argv)
    began = time.monotonic()
    load_start = os.getloadavg()
    lines: list[Line] = []
    sections = {"relay": relay, "tracestore": tracestore, "dashboard": dashboard, "drills": drills}
    for name, section in sections.items():
        if args.only and name not in args.only:
            continue
        t = time.monotonic()
        lines += section(args.quick)
        print(f"[{name}: {time.monotonic() - t:.0f}s]", file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    took = time.monotonic() - began
    if args.json:
        print(json.dumps({"quick": args.quick, "seconds": round(took, 1), "load_average_start": load_start,
                          "load_average_end": load_end, "rows": [asdict(x) for x in lines]}, indent=2))
        return 0
    print(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at the start, "
          f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} at the end; {took:.0f}s; {os.cpu_count()} cores")
    print(f"| {'section':<11} | {'figure':<58} | {'value':>10} | {'unit':<7} | {'goal':<7} | {'':<6} |")
    print(f"|{'-' * 13}|{'-' * 60}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for line in lines:
        print(_fmt(line))
    missed = [x for x in lines if x.met is False]
    print(f"{sum(1 for x in lines if x.met)} goal(s) met, {len(missed)} missed" +
          (": " + "; ".join(f"{x.figure} {x.value:.3g} (goal {x.goal})" for x in missed) if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
