"""`drillui`: the dashboard, and the same runner headless.

    drillui                      open the dashboard (embedded stack by default)
    drillui stack up [--json]    run the embedded stack until Ctrl-C
    drillui list                 the drill menu with last verdicts
    drillui run ID|--all [...]   run drills headless; exit 0 pass, 1 fail, 2 bad usage
    drillui verify ID [--run R]  recompute a verdict from a snapshot folder, offline
    drillui export ID [--run R]  query the trace backend again by the run's ids
    drillui clean [ID]           revert what drills left behind; prune old snapshots
    drillui failed list|requeue  the failure-management loop of drill C
    drillui doctor [--json]      check the runbook's known malfunctions

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
    p.add_argument("--infra", choices=["embedded", "docker"], help="embedded stack (default) or docker-compose.infra.yml (also $DRILLUI_INFRA)")
    sub = p.add_subparsers(dest="command")

    stack = sub.add_parser("stack", help="the embedded infrastructure")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    up = stack_sub.add_parser("up", help="start Postgres, the search engine and the trace store until Ctrl-C")
    up.add_argument("--json", action="store_true", help="print the endpoints as one JSON line first")

    lst = sub.add_parser("list", help="the drill menu with last verdicts")
    lst.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root to read last verdicts from")

    run = sub.add_parser("run", help="run a drill headless")
    run.add_argument("drill", nargs="?", help="drill id or letter, e.g. es_down_connect or A")
    run.add_argument("--all", action="store_true", help="run every drill of the catalog, then print a table")
    run.add_argument("--json", action="store_true", help="print the verdict as one JSON document on stdout")
    run.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root (default ./snapshots)")
    run.add_argument("--duration", type=_positive_float, help="seconds the fault stays armed")
    run.add_argument("--trigger-count", type=_positive_int, help="how many trigger events to write")
    run.add_argument("--op", choices=["upsert", "delete"], help="op of the trigger events")
    run.add_argument("--bulk-size", type=_positive_int, help="claim batch size")
    run.add_argument("--metrics-port", type=_port, help="first worker's /metrics port (the next workers take the following ports); default: free ports")
    run.add_argument("--scrape-delay", type=_positive_float, default=0.0, help="seconds to wait before the after scrapes")
    run.add_argument("--force-clean", action="store_true", help="remove leftover drill events before starting")

    verify = sub.add_parser("verify", help="recompute a verdict from its snapshot folder (offline)")
    verify.add_argument("drill")
    verify.add_argument("--run", help="run id (default: the latest)")
    verify.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    verify.add_argument("--json", action="store_true")

    export = sub.add_parser("export", help="query the trace backend again by a run's ids; writes _exports/")
    export.add_argument("drill")
    export.add_argument("--run", help="run id (default: the latest)")
    export.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    export.add_argument("--lookback", default="1h", help="how far back to search, e.g. 30m, 1h, 2d (default 1h)")
    export.add_argument("--limit", type=_positive_int, default=20)
    export.add_argument("--service", default=None, help="service name (default wordloom-search-outbox-worker)")

    cl = sub.add_parser("clean", help="revert what drills left behind (engine, write blocks, workers, rows); prune snapshots")
    cl.add_argument("drill", nargs="?", help="also prune this drill's snapshots")
    cl.add_argument("--keep-last", type=int, default=None, help="keep the newest N snapshot folders of the drill")
    cl.add_argument("--snapshots", type=Path, default=Path("snapshots"))

    from drillui.doctor import add_doctor_arguments

    doctor = sub.add_parser("doctor", help="check the runbook's known malfunctions; exit 1 if any check fails")
    add_doctor_arguments(doctor)

    failed = sub.add_parser("failed", help="rows in status failed: list them, requeue them")
    fsub = failed.add_subparsers(dest="failed_command", required=True)
    fl = fsub.add_parser("list", help="id, entity, reason, last error, attempts, age")
    fl.add_argument("--projection", choices=["search_index_to_elastic", "chronicle"])
    fl.add_argument("--limit", type=_positive_int, default=100)
    fl.add_argument("--json", action="store_true")
    fr = fsub.add_parser("requeue", help="send failed rows round again (after fixing the cause)")
    fr.add_argument("ids", nargs="*", help="outbox event ids")
    fr.add_argument("--all", action="store_true", help="every failed row")
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

    catalog = load_catalog(_catalog_path(args))
    if args.all == bool(args.drill):
        raise UsageError("give one drill id or letter, or --all", hint="drillui list shows the menu")
    drills = catalog.drills if args.all else [catalog.get(args.drill)]
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
        metrics_port=args.metrics_port,
    )
    verdicts = []
    with open_infrastructure(args.state_dir, on_status=lambda m: print(f"[  stack] {m}", file=out, flush=True)) as infra:
        for drill in drills:
            print(f"drill {drill.letter} {drill.id}: {drill.title}", file=out, flush=True)
            verdict = DrillRunner(drill, infra, options, on_progress=progress).run()
            verdicts.append((drill, verdict))
            if not args.all:
                _print_verdict(verdict, args.json)
    if args.all:
        if args.json:
            print(json.dumps([v.to_json() for _, v in verdicts], indent=2))
        else:
            print()
            print(f"{'drill':<26} {'verdict':<8} {'time':>6}  key figure")
            for drill, v in verdicts:
                mark = "PASS" if v.passed else "FAIL"
                took = f"{v.duration_seconds:.1f}s" if v.duration_seconds is not None else "-"
                print(f"{drill.letter} {drill.id:<24} {mark:<8} {took:>6}  {v.key_figure}")
            failed = [d.id for d, v in verdicts if not v.passed]
            print(f"{len(verdicts) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 0 if all(v.passed for _, v in verdicts) else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from drillui.evidence.snapshot import Snapshot
    from drillui.evidence.summary import write_summary
    from drillui.evidence.verdict import evaluate
    from drillui.scenarios import load_catalog

    drill = load_catalog(_catalog_path(args)).get(args.drill)
    path = _run_folder(args, drill.id)
    snap = Snapshot.open(path)
    verdict = evaluate(snap, drill)
    snap.write_json("_result.json", verdict.to_json())
    write_summary(snap, verdict)
    _print_verdict(verdict, args.json)
    return 0 if verdict.passed else 1


def _run_folder(args: argparse.Namespace, drill_id: str) -> Path:
    from drillui.evidence.snapshot import latest_run

    if args.run:
        path = args.snapshots / drill_id / args.run
        if not path.is_dir():
            raise UsageError(f"no run {args.run} under {args.snapshots / drill_id}")
        return path
    found = latest_run(args.snapshots, drill_id)
    if found is None:
        raise UsageError(f"no snapshot of {drill_id} under {args.snapshots}", hint=f"run `drillui run {drill_id}` first")
    return found


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise UsageError(f"--lookback {text!r} is not a duration like 30m, 1h or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cmd_export(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from drillui.evidence.snapshot import Snapshot
    from drillui.runner.infra import open_infrastructure
    from drillui.runner.runner import export_traces
    from drillui.scenarios import load_catalog

    drill = load_catalog(_catalog_path(args)).get(args.drill)
    snap = Snapshot.open(_run_folder(args, drill.id))
    ids = snap.read_json("_ids.json", {})
    pivots = {
        "outbox_event_id": ids.get("outbox_event_ids", []),
        "entity_id": ids.get("entity_ids", []),
        "claim_batch_id": ids.get("claim_batch_ids", []),
        "obs_schema": ["labs-009-v2"],
    }
    start = datetime.now(UTC) - timedelta(seconds=_duration(args.lookback))
    with open_infrastructure(args.state_dir) as infra:
        index = export_traces(snap, drill, infra.endpoints.jaeger_url, pivots, start=start, limit=args.limit)
    found = sum(int(q.get("traces") or 0) for q in index)
    apis = sorted({str(q.get("api")) for q in index if q.get("api")})
    print(f"exported {len(index)} quer(ies), {found} trace(s) found, answered by {', '.join(apis) or 'nothing'}: {snap.path / '_exports'}")
    if not found:
        print("note: the embedded trace store keeps spans in memory only: export right after the run, "
              "or keep `drillui stack up` running across runs", file=sys.stderr)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from drillui.runner.cleanup import clean, prune_snapshots
    from drillui.runner.infra import open_infrastructure
    from drillui.scenarios import load_catalog

    if args.keep_last is not None and args.keep_last < 0:
        raise UsageError("--keep-last must be >= 0")
    with open_infrastructure(args.state_dir) as infra:
        done = clean(infra)
    for line in done:
        print(f"cleaned: {line}")
    if not done:
        print("nothing to clean: engine reachable, no write block, no leftover worker, no unfinished drill row")
    if args.drill and args.keep_last is not None:
        drill = load_catalog(_catalog_path(args)).get(args.drill)
        pruned = prune_snapshots(args.snapshots, drill.id, args.keep_last)
        print(f"pruned {len(pruned)} snapshot folder(s) of {drill.id}, kept the newest {args.keep_last}")
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    from drillui.runner.infra import open_infrastructure
    from worker.db import connect, ensure_schema, queries

    with open_infrastructure(args.state_dir) as infra, connect(infra.endpoints.database_url) as conn:
        ensure_schema(conn)
        if args.failed_command == "list":
            rows = conn.execute(queries()["list_failed"], {"projection": args.projection, "limit": args.limit}).fetchall()  # type: ignore[arg-type]
            if args.json:
                print(json.dumps([{k: (str(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v) for k, v in r.items()} for r in rows], indent=2))
                return 0
            if not rows:
                print("no failed rows")
                return 0
            print(f"{'outbox_event_id':<36}  {'entity_id':<36}  {'reason':<15} {'att':>3} {'age':>7}  last error")
            for r in rows:
                print(f"{r['id']!s:<36}  {r['entity_id']!s:<36}  {r['last_reason'] or '-':<15} {r['attempts']:>3} "
                      f"{_age(float(r['age_seconds'])):>7}  {(r['last_error'] or '')[:80]}")
            print(f"{len(rows)} failed row(s); requeue with `drillui failed requeue ID ...` or `--all` once the cause is fixed")
            return 0
        if args.all == bool(args.ids):
            raise UsageError("give the ids to requeue, or --all")
        import uuid as _uuid

        try:
            ids = [_uuid.UUID(i) for i in args.ids]
        except ValueError as exc:
            raise UsageError(f"not an outbox event id: {exc}") from None
        rows = conn.execute(queries()["requeue_failed"], {"all": bool(args.all), "ids": ids}).fetchall()  # type: ignore[arg-type]
        requeued = {r["id"] for r in rows}
        audit = _audit(args, "outbox.requeued", count=len(requeued), outbox_event_ids=sorted(str(i) for i in requeued), all=bool(args.all))
        print(f"requeued {len(requeued)} failed row(s) (logged to {audit})")
        missing = [str(i) for i in ids if i not in requeued]
        if missing:
            print(f"not failed (left alone): {', '.join(missing)}", file=sys.stderr)
        return 0


def _audit(args: argparse.Namespace, event: str, **fields: object) -> Path:
    """Append one JSON line to the state folder's audit log: who changed outbox rows by hand."""
    import getpass
    from datetime import UTC, datetime

    from drillui.stack.stack import default_state_dir

    folder = args.state_dir or default_state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit.log"
    line = {"ts": datetime.now(UTC).isoformat(), "event": event, "by": getpass.getuser(), **fields}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    return path


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_list(args: argparse.Namespace) -> int:
    from drillui.evidence.snapshot import latest_run
    from drillui.scenarios import load_catalog

    catalog = load_catalog(_catalog_path(args))
    root = args.snapshots
    for d in catalog.drills:
        last = latest_run(root, d.id)
        verdict = "-"
        if last is not None and (last / "_result.json").exists():
            data = json.loads((last / "_result.json").read_text())
            verdict = f"{data.get('verdict', '?').upper()} ({last.name})"
        print(f"{d.letter}  {d.id:<22} {d.title:<48} {verdict}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from drillui.doctor import cmd_doctor

    return cmd_doctor(args)


def cmd_stack(args: argparse.Namespace) -> int:
    from drillui.stack.cli import stack_up

    return stack_up(args.state_dir, args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            from drillui.ui.app import run_dashboard

            return run_dashboard(args.state_dir, _catalog_path(args))
        if args.infra:
            os.environ["DRILLUI_INFRA"] = args.infra
        handler = {
            "run": cmd_run,
            "verify": cmd_verify,
            "list": cmd_list,
            "stack": cmd_stack,
            "export": cmd_export,
            "clean": cmd_clean,
            "failed": cmd_failed,
            "doctor": _cmd_doctor,
        }[args.command]
        return handler(args)
    except DrillError as exc:
        print(f"drillui: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("drillui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `drillui list | head`: the reader left. Python would complain again at exit while
        # flushing stdout, so point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
