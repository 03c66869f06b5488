"""`drillui`: the dashboard, and the same runner headless.

    drillui                      open the dashboard (embedded stack by default)
    drillui stack up [--json]    run the embedded stack until Ctrl-C
    drillui list                 the drill menu with last verdicts
    drillui run ID [...]         run one drill headless; exit 0 pass, 1 fail, 2 bad usage
    drillui verify ID [--run R]  recompute a verdict from a snapshot folder, offline

Every expected failure is a DrillError: printed as one line on stderr, exit code from the error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from drillui.errors import DrillError, UsageError


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} is outside 0..65535")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drillui", description="Guided observability failure drills on an outbox worker.")
    p.add_argument("--state-dir", type=Path, help="stack state folder (default: $DRILLUI_STATE_DIR or a per-user folder)")
    p.add_argument("--scenarios", type=Path, help="drill catalog (default: ./scenarios.yaml, else the bundled one)")
    sub = p.add_subparsers(dest="command")

    stack = sub.add_parser("stack", help="the embedded infrastructure")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    up = stack_sub.add_parser("up", help="start Postgres, the search engine and the trace store until Ctrl-C")
    up.add_argument("--json", action="store_true", help="print the endpoints as one JSON line first")

    sub.add_parser("list", help="the drill menu with last verdicts")

    run = sub.add_parser("run", help="run a drill headless")
    run.add_argument("drill", help="drill id or letter, e.g. es_down_connect or A")
    run.add_argument("--json", action="store_true", help="print the verdict as one JSON document on stdout")
    run.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root (default ./snapshots)")
    run.add_argument("--duration", type=_positive_float, help="seconds the fault stays armed")
    run.add_argument("--trigger-count", type=_positive_int, help="how many trigger events to write")
    run.add_argument("--op", choices=["upsert", "delete"], help="op of the trigger events")
    run.add_argument("--bulk-size", type=_positive_int, help="claim batch size")
    run.add_argument("--metrics-port", type=_port, help="accepted for runbook compatibility; workers pick free ports")
    run.add_argument("--scrape-delay", type=_positive_float, default=0.0, help="seconds to wait before the after scrapes")
    run.add_argument("--force-clean", action="store_true", help="remove leftover drill events before starting")

    verify = sub.add_parser("verify", help="recompute a verdict from its snapshot folder (offline)")
    verify.add_argument("drill")
    verify.add_argument("--run", help="run id (default: the latest)")
    verify.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    verify.add_argument("--json", action="store_true")
    return p


def _catalog_path(args: argparse.Namespace) -> Path | None:
    if args.scenarios:
        return args.scenarios
    env = os.environ.get("DRILLUI_SCENARIOS")
    if env:
        return Path(env)
    local = Path("scenarios.yaml")
    return local if local.exists() else None


def _print_verdict(verdict: object, as_json: bool) -> None:
    from drillui.evidence.verdict import Verdict

    assert isinstance(verdict, Verdict)
    if as_json:
        print(json.dumps(verdict.to_json(), indent=2))
        return
    print()
    print(f"{verdict.scenario} run {verdict.run_id}")
    for c in verdict.checks:
        mark = "PASS" if c.passed else "FAIL"
        print(f"  [{mark}] {c.description}")
        print(f"         expected {c.expected}; observed {c.observed}")
    for note in verdict.notes:
        print(f"  note: {note}")
    print(f"verdict: {'PASS' if verdict.passed else 'FAIL'}  evidence: {verdict.snapshot}")


def cmd_run(args: argparse.Namespace) -> int:
    from drillui.runner.infra import open_infrastructure
    from drillui.runner.runner import DrillRunner, Progress, RunOptions
    from drillui.scenarios import load_catalog

    drill = load_catalog(_catalog_path(args)).get(args.drill)
    out = sys.stderr if args.json else sys.stdout

    def progress(p: Progress) -> None:
        print(f"[{p.elapsed:6.1f}s] {p.phase:<10} {p.message}", file=out, flush=True)

    options = RunOptions(
        snapshots=args.snapshots,
        duration=args.duration,
        trigger_count=args.trigger_count,
        op=args.op,
        bulk_size=args.bulk_size,
        scrape_delay=args.scrape_delay,
        force_clean=args.force_clean,
    )
    print(f"drill {drill.letter} {drill.id}: {drill.title}", file=out, flush=True)
    with open_infrastructure(args.state_dir, on_status=lambda m: print(f"[  stack] {m}", file=out, flush=True)) as infra:
        verdict = DrillRunner(drill, infra, options, on_progress=progress).run()
    _print_verdict(verdict, args.json)
    return 0 if verdict.passed else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from drillui.evidence.snapshot import Snapshot, latest_run
    from drillui.evidence.verdict import evaluate
    from drillui.scenarios import load_catalog

    drill = load_catalog(_catalog_path(args)).get(args.drill)
    if args.run:
        path = args.snapshots / drill.id / args.run
        if not path.is_dir():
            raise UsageError(f"no run {args.run} under {args.snapshots / drill.id}")
    else:
        found = latest_run(args.snapshots, drill.id)
        if found is None:
            raise UsageError(f"no snapshot of {drill.id} under {args.snapshots}", hint=f"run `drillui run {drill.id}` first")
        path = found
    snap = Snapshot.open(path)
    verdict = evaluate(snap, drill)
    snap.write_json("_result.json", verdict.to_json())
    _print_verdict(verdict, args.json)
    return 0 if verdict.passed else 1


def cmd_list(args: argparse.Namespace) -> int:
    from drillui.evidence.snapshot import latest_run
    from drillui.scenarios import load_catalog

    catalog = load_catalog(_catalog_path(args))
    root = Path("snapshots")
    for d in catalog.drills:
        last = latest_run(root, d.id)
        verdict = "-"
        if last is not None and (last / "_result.json").exists():
            data = json.loads((last / "_result.json").read_text())
            verdict = f"{data.get('verdict', '?').upper()} ({last.name})"
        print(f"{d.letter}  {d.id:<22} {d.title:<48} {verdict}")
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from drillui.stack.cli import stack_up

    return stack_up(args.state_dir, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            from drillui.ui.app import run_dashboard

            return run_dashboard(args.state_dir, _catalog_path(args))
        handler = {"run": cmd_run, "verify": cmd_verify, "list": cmd_list, "stack": cmd_stack}[args.command]
        return handler(args)
    except DrillError as exc:
        print(f"drillui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("drillui: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
