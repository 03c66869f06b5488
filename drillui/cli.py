"""`drillui`: the dashboard, and the same runner headless.

    drillui                      open the dashboard (embedded stack by default)
    drillui stack up [--json]    run the embedded stack until Ctrl-C
    drillui list                 the drill menu with how each drill's last run ended
    drillui run ID|--all [...]   run drills headless (exit codes below)
    drillui verify ID [--run R]  judge a recorded run again from its record; writes nothing
    drillui replay [ID [RUN]]    play a recorded run back: pause, step, seek, speed
    drillui watch [ID]           follow the run in progress from another terminal, read-only
    drillui serve                the watch screen (and chosen replays) in browsers
    drillui train [ID|--surprise] a blind training drill: the trainee's screen hides the answer
    drillui watch --trainer      the trainer's view of it: hidden parts, answers, hints, end
    drillui answer RUN [Q VALUE] grade an answer heard aloud against the run's evidence
    drillui scores [--since D]   the scoreboard of a session's training runs
    drillui export ID [--run R]  query the trace backend again by a run's ids, into a new folder
    drillui report [RUN...|--since D]  one self-contained HTML page of a session's runs
    drillui clean [ID]           revert what drills left behind; prune old snapshots
    drillui failed list|requeue  the failure-management loop of drill C
    drillui doctor [--json]      check the runbook's known malfunctions

Global options (--state-dir, --scenarios, --infra) go before or after the subcommand.

Exit codes of `run` (and of `verify`, for the state it recomputes): 0 passed, 1 failed,
2 bad usage, 3 stopped (by the trainer or a signal), 4 refused (another drill running, or a
dirty environment: nothing was recorded), 5 error (the infrastructure broke during the run).

Exit codes of `answer`: 0 right, 1 wrong, 2 bad input (5 when the live run does not answer).

Every expected failure is a DrillError: printed as one line on stderr, exit code from the error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from drillui.errors import DrillError, UsageError
from drillui.settings import DrillSettings

MAX_DURATION_SECONDS = 3600.0
MAX_TRIGGER_COUNT = 100_000


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    if v > MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_DURATION_SECONDS:g} seconds")
    return v


def _count(limit: int) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= v <= limit:
            raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and {limit:,}")
        return v

    return parse


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} is outside 1..65535")
    return v


def _global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Given to the main parser (defaults) and to every subcommand (SUPPRESS: an option given
    # after the subcommand overrides, an absent one leaves the value from before it).
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--state-dir", type=Path, help="stack state folder (default: $DRILLUI_STATE_DIR or a per-user folder)", **d)
    p.add_argument("--scenarios", type=Path, help="drill catalog (default: $DRILLUI_SCENARIOS, ./scenarios.yaml, else the bundled one)", **d)
    p.add_argument("--infra", choices=["embedded", "docker"], help="embedded stack (default) or docker-compose.infra.yml (also $DRILLUI_INFRA)", **d)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drillui", description="Guided observability failure drills on an outbox worker.")
    _global_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = p.add_subparsers(dest="command")

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    stack = add("stack", help="the embedded infrastructure")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    up = stack_sub.add_parser("up", parents=[common], help="start Postgres, the search engine and the trace store until Ctrl-C")
    up.add_argument("--json", action="store_true", help="print the endpoints as one JSON line first")

    lst = add("list", help="the drill menu with how each drill's last run ended")
    lst.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root to read last runs from")

    run = add("run", help="run a drill headless")
    run.add_argument("drill", nargs="?", help="drill id or letter, e.g. es_down_connect or A")
    run.add_argument("--all", action="store_true", help="run every drill of the catalog, then print a table")
    run.add_argument("--json", action="store_true", help="print the verdict as one JSON document on stdout")
    run.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root (default ./snapshots)")
    run.add_argument("--duration", type=_seconds, help="seconds the fault stays armed")
    run.add_argument("--trigger-count", type=_count(MAX_TRIGGER_COUNT), help="how many trigger events to write")
    run.add_argument("--op", choices=["upsert", "delete"], help="op of the trigger events")
    run.add_argument("--bulk-size", type=_count(10_000), help="claim batch size")
    run.add_argument("--metrics-port", type=_port, help="first worker's /metrics port (the next workers take the following ports); default: free ports")
    run.add_argument("--scrape-delay", type=_seconds, default=0.0, help="seconds to wait before the after scrapes")
    run.add_argument("--force-clean", action="store_true", help="remove leftover drill events before starting")

    replay = add("replay", help="play a recorded run back on the run screen: pause, step, seek, speed (no stack needed)")
    replay.add_argument("target", nargs="*", metavar="DRILL [RUN_ID] | PATH",
                        help="a drill (its latest run), a drill and a run id, or a run folder")
    replay.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    replay.add_argument("--at", type=float, default=None, metavar="SECONDS", help="start paused at this moment of the run")

    watch = add("watch", help="follow the run in progress from another terminal, read-only")
    watch.add_argument("drill", nargs="?", help="only runs of this drill (default: any)")
    watch.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    watch.add_argument("--trainer", action="store_true",
                       help="the trainer's view of a training run: the drill, its checks, the answers as they arrive; "
                            "h sends the next hint, R recovers the fault, s ends the drill")

    train = add("train", help="a blind training drill: the trainee answers the drill's questions from the evidence")
    train.add_argument("drill", nargs="?", help="drill id or letter (default: pick on screen)")
    train.add_argument("--surprise", action="store_true", help="a drill picked at random (the control drill included)")
    train.add_argument("--trainee", help="the trainee's name (default: asked on screen)")
    train.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root (default ./snapshots)")
    train.add_argument("--hold", type=_seconds, default=None,
                       help="the longest the fault is held before it recovers by itself (default 600 s)")

    ans = add("answer", help="grade an answer against a run's recorded evidence (exit 0 right, 1 wrong, 2 bad input)")
    ans.add_argument("run", metavar="RUN", help="a run id, DRILL/RUN_ID, a drill (its latest run), a run folder, or `latest`")
    ans.add_argument("question", nargs="?", help="the question's id (without it: the run's questions)")
    ans.add_argument("value", nargs="?", help="the answer")
    ans.add_argument("--by", default="", help="who answered (default: the run's trainee)")
    ans.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    ans.add_argument("--json", action="store_true")

    sc = add("scores", help="the scoreboard of training runs: per run, and per trainee")
    sc.add_argument("--since", help="runs started since: an ISO date/time (UTC) or 30m, 2h, 3d (default: today, UTC)")
    sc.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    sc.add_argument("--json", action="store_true")

    serve = add("serve", help="serve `watch` (and replays of chosen runs) to browsers, read-only")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other prints an access token)")
    serve.add_argument("--port", type=_port, default=8765)
    serve.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    serve.add_argument("--replay", action="append", default=[], metavar="DRILL[/RUN_ID]", help="also offer a replay of this run (repeatable)")

    verify = add("verify", help="judge a recorded run again from its own record (writes nothing)")
    verify.add_argument("drill")
    verify.add_argument("--run", help="run id (default: the latest)")
    verify.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    verify.add_argument("--json", action="store_true")

    export = add("export", help="query the trace backend again by a run's ids; writes a new _exports/<time>/")
    export.add_argument("drill")
    export.add_argument("--run", help="run id (default: the latest)")
    export.add_argument("--snapshots", type=Path, default=Path("snapshots"))
    export.add_argument("--lookback", default="1h", help="how far back to search, e.g. 30m, 1h, 2d (default 1h)")
    export.add_argument("--limit", type=_count(1000), default=20)
    export.add_argument("--service", default=None, help="service name (default wordloom-search-outbox-worker)")

    cl = add("clean", help="revert what drills left behind (engine, write blocks, workers, rows); prune snapshots")
    cl.add_argument("drill", nargs="?", help="also prune this drill's snapshots")
    cl.add_argument("--keep-last", type=int, default=None, help="keep the newest N snapshot folders of the drill")
    cl.add_argument("--rows", action="store_true", help="remove every outbox row drills wrote (done and failed too), not only unfinished ones")
    cl.add_argument("--snapshots", type=Path, default=Path("snapshots"))

    rep = add("report", help="write one self-contained HTML page of a session's runs (default: the runs started today, UTC)")
    rep.add_argument("runs", nargs="*", metavar="RUN", help="a run folder, a drill id or letter (its latest run), or DRILL/RUN_ID")
    rep.add_argument("--since", help="every run started since: an ISO date/time (UTC) or 30m, 2h, 3d")
    rep.add_argument("-o", "--output", type=Path, help="HTML file to write (default ./drillui-report-<UTC time>.html)")
    rep.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="evidence root (default ./snapshots)")

    from drillui.doctor import add_doctor_arguments

    doctor = add("doctor", help="check the runbook's known malfunctions; exit 1 if any check fails")
    add_doctor_arguments(doctor)

    failed = add("failed", help="rows in status failed: list them, requeue them")
    fsub = failed.add_subparsers(dest="failed_command", required=True)
    fl = fsub.add_parser("list", parents=[common], help="id, entity, reason, last error, attempts, age")
    fl.add_argument("--projection", choices=["search_index_to_elastic", "chronicle"])
    fl.add_argument("--limit", type=_count(100_000), default=100)
    fl.add_argument("--json", action="store_true")
    fr = fsub.add_parser("requeue", parents=[common], help="send failed rows round again (after fixing the cause)")
    fr.add_argument("ids", nargs="*", help="outbox event ids")
    fr.add_argument("--all", action="store_true", help="every failed row")
    return p


# ---- run ----------------------------------------------------------------------------------------


def _print_verdict(verdict: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict.to_json(), indent=2))
        return
    print()
    print(f"{verdict.scenario} run {verdict.run_id}")
    for c in verdict.checks:
        mark = {"passed": "PASS", "failed": "FAIL"}.get(c.state, c.state.upper())
        print(f"  [{mark}] {c.description}")
        print(f"         expected {c.expected}; observed {c.observed}")
    for note in verdict.notes:
        print(f"  note: {note}")
    word = {"passed": "PASS", "failed": "FAIL"}.get(verdict.state, verdict.state.upper())
    print(f"{word}: {verdict.why}  evidence: {verdict.snapshot}")


@contextmanager
def _stop_on_signals(stop: Any) -> Iterator[None]:
    """Ctrl+C, SIGTERM and SIGHUP end the drill the honest way: recorded as stopped, the fault
    reverted, the workers stopped and the run's rows settled. A second one only says so."""
    names: dict[int, str] = {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            os.write(2, b"drillui: still stopping: reverting the fault and stopping the workers...\n")
            return
        os.write(2, f"drillui: {names.get(signum, signum)}: stopping the drill (fault reverted, workers stopped)...\n".encode())
        stop.request(names.get(signum, str(signum)))

    previous = {sig: signal.signal(sig, handler) for sig in names}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.record.events import Event, PhaseChanged, Said
    from drillui.runner.cleanup import RunRefused
    from drillui.runner.infra import open_infrastructure
    from drillui.runner.runner import EXIT_CODES, DrillRunner, RunOptions, StopSignal, exit_code
    from drillui.scenarios import load_catalog

    catalog = load_catalog(settings.catalog_path())
    if args.all == bool(args.drill):
        raise UsageError("give one drill id or letter, or --all", hint="drillui list shows the menu")
    drills = catalog.drills if args.all else [catalog.get(args.drill)]
    out = sys.stderr if args.json else sys.stdout

    def progress(ev: Event) -> None:
        if isinstance(ev, PhaseChanged) and ev.message:
            print(f"[{ev.t:6.1f}s] {ev.phase:<10} {ev.message}", file=out, flush=True)
        elif isinstance(ev, Said):
            print(f"[{ev.t:6.1f}s]            {ev.message}", file=out, flush=True)

    options = RunOptions(
        snapshots=args.snapshots, duration=args.duration, trigger_count=args.trigger_count, op=args.op,
        bulk_size=args.bulk_size, scrape_delay=args.scrape_delay, force_clean=args.force_clean, metrics_port=args.metrics_port,
    )
    verdicts = []
    codes: list[int] = []
    stop = StopSignal()
    with _stop_on_signals(stop), open_infrastructure(settings, on_status=lambda m: print(f"[  stack] {m}", file=out, flush=True)) as infra:
        for drill in drills:
            if stop.is_set():
                print(f"drill {drill.letter} {drill.id}: not run (stopped)", file=out, flush=True)
                continue
            print(f"drill {drill.letter} {drill.id}: {drill.title}", file=out, flush=True)
            try:
                verdict = DrillRunner(drill, infra, options, on_event=progress, stop=stop).run()
            except RunRefused as exc:
                if not args.all:
                    raise
                print(f"  refused: {exc}", file=out, flush=True)
                codes.append(EXIT_CODES["refused"])
                continue
            verdicts.append((drill, verdict))
            codes.append(exit_code(verdict))
            if not args.all:
                _print_verdict(verdict, args.json)
    if args.all:
        if args.json:
            print(json.dumps([v.to_json() for _, v in verdicts], indent=2))
        else:
            print()
            print(f"{'drill':<26} {'state':<8} {'time':>6}  key figure")
            for drill, v in verdicts:
                took = f"{v.duration_seconds:.1f}s" if v.duration_seconds is not None else "-"
                print(f"{drill.letter} {drill.id:<24} {v.state.upper():<8} {took:>6}  {v.key_figure}")
            passed = sum(v.passed for _, v in verdicts)
            others = [f"{d.id} {v.state}" for d, v in verdicts if not v.passed]
            print(f"{passed} passed, {len(drills) - passed} not" + (f": {', '.join(others)}" if others else ""))
    return max(codes, default=0)


# ---- verify, export, list -----------------------------------------------------------------------


def _resolve_run(snapshots: Path, target: Sequence[str], settings: DrillSettings) -> Path:
    """A run folder from `DRILL`, `DRILL RUN_ID`, `DRILL/RUN_ID` or a folder path."""
    from drillui.record.snapshot import EVENTS, RECIPE, run_folder
    from drillui.scenarios import load_catalog

    if len(target) == 1 and ("/" in target[0] or Path(target[0]).is_dir()) and Path(target[0]).is_dir():
        folder = Path(target[0])
        if (folder / EVENTS).exists() or (folder / RECIPE).exists():
            return folder
        raise UsageError(f"{folder} is not a run folder (no {EVENTS} or {RECIPE})")
    parts = list(target[0].split("/", 1)) + list(target[1:]) if target else []
    if not parts:
        raise UsageError("name a drill (its latest run), a drill and a run id, or a run folder", hint="drillui list shows the runs")
    if len(parts) > 2:
        raise UsageError(f"{' '.join(target)}: give DRILL [RUN_ID] or a run folder")
    drill = load_catalog(settings.catalog_path()).get(parts[0])
    return run_folder(snapshots, drill.id, parts[1] if len(parts) > 1 else None)


def cmd_replay(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.evidence.verify import recorded_drill
    from drillui.record.reader import read_run
    from drillui.scenarios import load_catalog
    from drillui.ui.viewer import ReplayScreen, ViewerApp

    run = read_run(_resolve_run(args.snapshots, args.target, settings))
    catalog = load_catalog(settings.catalog_path())
    drill, _ = recorded_drill(run, next((d for d in catalog.drills if d.id == run.snapshot.scenario), None))
    from drillui.ui.app import run_guarded

    screen = ReplayScreen(drill, run, playing=args.at is None, start_at=args.at)
    return run_guarded(ViewerApp(catalog, first=screen, settings=settings))


def cmd_watch(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.scenarios import load_catalog
    from drillui.ui.viewer import ViewerApp

    catalog = load_catalog(settings.catalog_path())
    drill_id = catalog.get(args.drill).id if args.drill else None
    if args.snapshots.exists() and not args.snapshots.is_dir():
        raise UsageError(f"--snapshots {args.snapshots} is a file, not a folder")
    from drillui.ui.app import run_guarded

    return run_guarded(ViewerApp(catalog, watch_root=args.snapshots, drill_id=drill_id, settings=settings,
                                 trainer=args.trainer))


def cmd_train(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.scenarios import load_catalog
    from drillui.ui.app import run_training

    catalog = load_catalog(settings.catalog_path())
    if args.drill and args.surprise:
        raise UsageError("give a drill or --surprise, not both")
    drill = catalog.get(args.drill) if args.drill else None
    if drill is not None and not drill.questions:
        raise UsageError(f"drill {drill.id} has no training questions", hint="drillui list shows the drills; "
                         "add questions to it in scenarios.yaml")
    trainee = (args.trainee or "").strip() or None
    if trainee is not None and (len(trainee) > 40 or not trainee.isprintable()):
        raise UsageError(f"--trainee {args.trainee!r}: give a printable name of at most 40 characters")
    return run_training(settings, snapshots=args.snapshots, drill=drill, surprise=args.surprise, trainee=trainee,
                        hold=args.hold)


def _find_run(snapshots: Path, text: str, settings: DrillSettings) -> Path:
    """A run folder from a run id (any drill), `latest`, DRILL, DRILL/RUN_ID or a folder path."""
    from drillui.record.snapshot import EVENTS, RUN_ID_PATTERN

    if snapshots.exists() and not snapshots.is_dir():
        raise UsageError(f"--snapshots {snapshots} is a file, not a folder")
    candidates = [p for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
    if text == "latest" or RUN_ID_PATTERN.match(text):
        found = sorted((run for d in candidates for run in d.iterdir() if (run / EVENTS).exists()
                        and (text == "latest" and RUN_ID_PATTERN.match(run.name) or run.name == text)),
                       key=lambda p: p.name)
        if not found:
            raise UsageError(f"no run {'at all' if text == 'latest' else text} under {snapshots}",
                             hint="pass --snapshots where the runs are; `drillui scores` lists training runs")
        if text != "latest" and len(found) > 1:
            raise UsageError(f"run id {text} is a run of {len(found)} drills: give DRILL/{text}")
        return found[-1]
    return _resolve_run(snapshots, [text], settings)


def cmd_answer(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.training.answers import answer, expects, is_live, recorded_drill

    folder = _find_run(args.snapshots, args.run, settings)
    drill = recorded_drill(folder)
    if args.question is None:
        if not drill.questions:
            raise UsageError(f"{folder.parent.name}/{folder.name}: this drill has no training questions")
        if args.json:
            print(json.dumps([{"id": q.id, "ask": q.ask, "kind": q.kind, "expects": expects(q), "points": q.points}
                              for q in drill.questions], indent=2))
            return 0
        state = "in progress" if is_live(folder) else "ended"
        print(f"run {folder.name} ({state}): answer with  drillui answer {folder.name} QUESTION VALUE")
        for q in drill.questions:
            print(f"  {q.id:<10} {q.ask}  [{q.points} points]")
            print(f"  {'':<10} expects {expects(q)}")
        return 0
    if args.value is None:
        raise UsageError(f"give the answer after the question: drillui answer {args.run} {args.question} VALUE")
    try:
        got = answer(folder, args.question, args.value, by=args.by)
    except TimeoutError as exc:
        print(f"drillui: {exc}", file=sys.stderr)
        return 5
    if not got.counted:
        raise UsageError(f"question {got.question}: {got.value!r} is not an answer: {got.evidence}")
    if args.json:
        print(json.dumps({"question": got.question, "value": got.value, "right": got.right, "evidence": got.evidence,
                          "after_end": got.after_end}, indent=2))
    else:
        print(f"{'RIGHT' if got.right else 'WRONG'}  {got.question} = {got.value}")
        print(f"       {got.evidence}")
        print(f"       recorded in {folder}" + (" (_answers.jsonl: the run had ended)" if got.after_end else ""))
    return 0 if got.right else 1


def cmd_scores(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.training.scoreboard import print_scoreboard, scoreboard

    board = scoreboard(args.snapshots, args.since)
    if args.json:
        print(json.dumps(board.to_json(), indent=2))
    else:
        print_scoreboard(board, sys.stdout)
    return 0


def cmd_serve(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.ui.serve import serve

    replays: dict[str, Path] = {}
    for target in args.replay:
        path = _resolve_run(args.snapshots, [target], settings)
        replays[f"{path.parent.name}/{path.name}"] = path.resolve()
    flags = [f"--scenarios={settings.scenarios.resolve()}"] if settings.scenarios else []
    return serve(host=args.host, port=args.port, snapshots=args.snapshots.resolve(), replays=replays, settings_args=flags)


def cmd_verify(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.evidence.verify import verify
    from drillui.record.reader import read_run
    from drillui.record.snapshot import run_folder
    from drillui.runner.runner import exit_code
    from drillui.scenarios import load_catalog

    drill = load_catalog(settings.catalog_path()).get(args.drill)
    v = verify(read_run(run_folder(args.snapshots, drill.id, args.run)), drill)
    m = v.manifest
    if args.json:
        print(json.dumps({
            "recomputed": v.recomputed.to_json(),
            "recorded": v.recorded.model_dump(mode="json") if v.recorded else None,
            "differences": v.differences,
            "manifest": {"present": m.present, "changed": m.changed, "missing": m.missing, "added": m.added},
            "notes": v.notes,
            "consistent": v.consistent,
        }, indent=2))
    else:
        _print_verdict(v.recomputed, False)
        for note in v.notes:
            print(f"note: {note}")
        if v.differences:
            print("the recomputed verdict differs from the recorded one (which is kept as it was):")
            for d in v.differences:
                print(f"  - {d}")
        else:
            print("recomputed from the record: the same verdict as recorded")
        if not m.present:
            print("no _manifest.json: this run predates it (or did not end): file integrity cannot be checked")
        elif m.intact:
            print("every recorded file matches _manifest.json" + (f" ({len(m.added)} added since: {', '.join(m.added[:4])})" if m.added else ""))
        else:
            for rel in m.changed:
                print(f"CHANGED since the run: {rel}")
            for rel in m.missing:
                print(f"MISSING since the run: {rel}")
    code = exit_code(v.recomputed)
    return 1 if code == 0 and not v.consistent else code


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise UsageError(f"--lookback {text!r} is not a duration like 30m, 1h or 2d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cmd_export(args: argparse.Namespace, settings: DrillSettings) -> int:
    from datetime import UTC, datetime, timedelta

    from drillui.evidence.state import RunState
    from drillui.evidence.verify import recorded_drill
    from drillui.record.reader import read_run
    from drillui.record.snapshot import run_folder
    from drillui.runner.export import export_traces
    from drillui.runner.infra import open_infrastructure
    from drillui.scenarios import load_catalog
    from worker.contract import DEFAULT_SERVICE_NAME

    catalog_drill = load_catalog(settings.catalog_path()).get(args.drill)
    run = read_run(run_folder(args.snapshots, catalog_drill.id, args.run))
    drill, _ = recorded_drill(run, catalog_drill)
    state = RunState(drill).apply_all(run.events)
    pivots = {by: state.pivots(by) for by in ("outbox_event_id", "claim_batch_id", "entity_id")}
    pivots["obs_schema"] = ["labs-009-v2"]
    start = datetime.now(UTC) - timedelta(seconds=_duration(args.lookback))
    with open_infrastructure(settings) as infra:
        folder = run.snapshot.new_export_dir()
        exported = export_traces(folder, drill, infra.endpoints.jaeger_url, pivots, start=start, limit=args.limit,
                                 service=args.service or DEFAULT_SERVICE_NAME)
    print(f"exported {len(exported.queries)} quer(ies), {exported.traces_found} trace(s) found, answered by "
          f"{', '.join(exported.apis) or 'nothing'}: {folder}")
    print(f"the run's own evidence is untouched: {run.snapshot.path}")
    if not exported.traces_found:
        print("note: the embedded trace store keeps spans in memory only: export while the same `drillui stack up` "
              "runs, or read the spans the run recorded itself (`drillui replay`, _events.jsonl)", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.report.build import main as report_main
    from drillui.scenarios import load_catalog

    # The catalog is read only for a name that is not a drill folder under --snapshots (a letter).
    return report_main(args.runs, since=args.since, output=args.output, root=args.snapshots,
                       lookup=lambda name: load_catalog(settings.catalog_path()).get(name).id)


def cmd_list(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.record.snapshot import end_state_of, latest_run
    from drillui.scenarios import load_catalog

    catalog = load_catalog(settings.catalog_path())
    if args.snapshots.exists() and not args.snapshots.is_dir():
        raise UsageError(f"--snapshots {args.snapshots} is a file, not a folder")
    for d in catalog.drills:
        last = latest_run(args.snapshots, d.id)
        shown = "-"
        if last is not None:
            _, word = end_state_of(last)
            shown = f"{word} ({last.name})"
        print(f"{d.letter}  {d.id:<22} {d.title:<48} {shown}")
    return 0


# ---- clean, failed ------------------------------------------------------------------------------


def cmd_clean(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.runner.cleanup import clean, prune_snapshots
    from drillui.runner.infra import open_infrastructure
    from drillui.scenarios import load_catalog

    if args.keep_last is not None and args.keep_last < 0:
        raise UsageError("--keep-last must be >= 0")
    with open_infrastructure(settings) as infra:
        done = clean(infra, rows=args.rows)
    for line in done:
        print(f"cleaned: {line}")
    if not done:
        print("nothing to clean: engine reachable, no write block, no leftover worker, no unfinished drill row")
    if args.drill and args.keep_last is not None:
        drill = load_catalog(settings.catalog_path()).get(args.drill)
        pruned, kept = prune_snapshots(args.snapshots, drill.id, args.keep_last)
        print(f"pruned {len(pruned)} snapshot folder(s) of {drill.id}, kept the newest {args.keep_last}"
              + (f"; left {len(kept)} unfinished run(s) alone" if kept else ""))
    return 0


def cmd_failed(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.runner.infra import open_infrastructure
    from worker.db import connect, ensure_schema, queries

    with open_infrastructure(settings) as infra, connect(infra.endpoints.database_direct_url) as conn:
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
        audit = _audit(settings, "outbox.requeued", count=len(requeued), outbox_event_ids=sorted(str(i) for i in requeued), all=bool(args.all))
        print(f"requeued {len(requeued)} failed row(s) (logged to {audit})")
        missing = [str(i) for i in ids if i not in requeued]
        if missing:
            print(f"not failed (left alone): {', '.join(missing)}", file=sys.stderr)
        return 0


def _audit(settings: DrillSettings, event: str, **fields: object) -> Path:
    """Append one JSON line to the state folder's audit log: who changed outbox rows by hand."""
    import getpass
    from datetime import UTC, datetime

    from drillui.stack.stack import default_state_dir

    folder = settings.state_dir or default_state_dir(settings.environ)
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


def _cmd_doctor(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.doctor import cmd_doctor

    args.infra = settings.infra
    args.state_dir = settings.state_dir
    return cmd_doctor(args, settings.environ)


def cmd_stack(args: argparse.Namespace, settings: DrillSettings) -> int:
    from drillui.stack.cli import stack_up
    from drillui.stack.stack import default_state_dir

    return stack_up(settings.state_dir or default_state_dir(settings.environ), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = DrillSettings.build(state_dir=args.state_dir, infra=args.infra, scenarios=args.scenarios)
        if args.command is None:
            from drillui.ui.app import run_dashboard

            return run_dashboard(settings)
        handler = {
            "run": cmd_run,
            "verify": cmd_verify,
            "list": cmd_list,
            "stack": cmd_stack,
            "export": cmd_export,
            "report": cmd_report,
            "clean": cmd_clean,
            "failed": cmd_failed,
            "doctor": _cmd_doctor,
            "replay": cmd_replay,
            "watch": cmd_watch,
            "serve": cmd_serve,
            "train": cmd_train,
            "answer": cmd_answer,
            "scores": cmd_scores,
        }[args.command]
        return handler(args, settings)
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
