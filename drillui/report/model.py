"""What a report shows of one run, folded from the run's events in one pass.

Why this module exists: the report must say what the record says — the same fold
(`RunState`), the same signals (`drillui.evidence.signals`), the verdict the run recorded — and
nothing else. `fold` walks the events once (a long run's record is never walked twice), feeding
the chart's downsamplers as it goes; `build` turns the fold into a `RunReport`, plain data the
page renders. Pure: the files are read by `drillui.report.load`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from drillui.errors import DrillError
from drillui.evidence.signals import SIGNALS, signal_view
from drillui.evidence.state import RunState
from drillui.record.events import Event, GaugesProbed, LogLinesSeen, MetricsSampled, RunStarted, SpansSeen, StepChanged
from drillui.record.snapshot import RUN_ID_FORMAT
from drillui.report.chart import ChartData, Downsampler, Series, Tick, value_label
from drillui.scenarios import parse_drill

END_STATES: Final = ("passed", "failed", "stopped", "error")
"""How a recorded run ends; a report also meets `unfinished` (no end recorded: interrupted or
still running) and `unreadable` (the folder could not be read)."""

MAX_TEXT: Final = 2000
"""Characters of one text from a file (an error string, an observed value) shown in full."""
MAX_STEP_EVENTS: Final = 1000
# The fold keeps only the latest few points of each signal: the chart has its own downsampler
# over the whole run.
_FOLD_HISTORY: Final = 2
NOT_FOLDED: Final = (LogLinesSeen, SpansSeen)
"""A report shows no log line and no span (its checks are the ones the run recorded), and they
are what makes a long record long: they are read past, not folded."""


def clip(text: object, limit: int = MAX_TEXT) -> str:
    s = str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}… ({len(s) - limit:,} more characters)"


@dataclass(frozen=True)
class CheckRow:
    number: int
    id: str
    kind: str
    description: str
    expected: str
    observed: str
    state: str
    query: str
    first_seen: float | None
    """Seconds after the fault was armed (negative: before); for a "stays flat" check, when it broke."""


@dataclass(frozen=True)
class StepRow:
    number: int
    say: str
    promql: str | None
    trace_query: str | None
    shown: tuple[float, ...]
    """Unix times the trainer's screen showed this step (empty: no step change recorded)."""


@dataclass(frozen=True)
class FaultProof:
    fault: str
    armed_at: float | None
    armed_evidence: str | None
    not_armed: str | None
    reverted_at: float | None
    revert_evidence: str | None
    still_armed: bool
    clean: bool | None
    clean_summary: str | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class SignalRow:
    key: str
    label: str
    kind: str
    unit: str
    value: float | None
    change: float | None
    by_reason: tuple[tuple[str, float], ...]
    peak: float | None


@dataclass(frozen=True)
class Screenshot:
    name: str
    svg: str | None
    """The sanitized SVG, or None when it could not be embedded (`problem` says why)."""
    problem: str | None = None


@dataclass(frozen=True)
class Training:
    items: tuple[tuple[str, Any], ...] = ()
    problem: str | None = None


@dataclass
class Folded:
    """The one pass over a run's events: the state, and what the state does not keep."""

    state: RunState
    drill: Mapping[str, Any]
    steps_shown: list[tuple[float, int, str]] = field(default_factory=list)
    samplers: dict[str, Downsampler] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    last_wall: float | None = None
    """The latest moment any event of the record carries."""


def fold(events: Iterable[Event]) -> Folded:
    """One pass: `events` may be a generator over a file, consumed once."""
    state = RunState(history=_FOLD_HISTORY)
    folded = Folded(state, {})
    samplers = folded.samplers = {s.key: Downsampler() for s in SIGNALS}
    last: dict[str, tuple[float, float]] = {}
    totals: dict[str, float] = {}
    for ev in events:
        if ev.wall and (folded.last_wall is None or ev.wall > folded.last_wall):
            folded.last_wall = ev.wall
        if isinstance(ev, NOT_FOLDED):
            continue
        if isinstance(ev, RunStarted) and not folded.drill:
            folded.drill = dict(ev.drill)
            try:
                parse_drill(dict(ev.drill))
            except DrillError as exc:
                # A definition a newer or older drillui wrote: show the record without judging it.
                folded.notes.append(f"the recorded drill definition cannot be read by this drillui ({exc}): "
                                    "checks are shown as the run recorded them")
                ev = replace(ev, drill={})
        state.apply(ev)
        if isinstance(ev, StepChanged) and len(folded.steps_shown) < MAX_STEP_EVENTS:
            folded.steps_shown.append((ev.wall, ev.index, ev.say))
        elif isinstance(ev, (MetricsSampled, GaugesProbed)):
            for sig in SIGNALS:
                points = state.metrics.points.get(sig.key)
                if not points or points[-1] is last.get(sig.key):
                    continue
                t, v = points[-1]
                prev = last.get(sig.key)
                last[sig.key] = points[-1]
                if sig.kind == "counter":
                    # The total since the run started, a drop read as a restart (as the signals panel does).
                    inc = 0.0 if prev is None else (v if v < prev[1] else v - prev[1])
                    totals[sig.key] = totals.get(sig.key, 0.0) + inc
                    samplers[sig.key].add(t, totals[sig.key])
                else:
                    samplers[sig.key].add(t, v)
    return folded


@dataclass
class RunReport:
    folder: str
    scenario: str
    run_id: str
    letter: str = "?"
    title: str = ""
    goal: str = ""
    started: float | None = None
    started_from_id: bool = False
    """No start time recorded: the start is the run id's (UTC, to the second)."""
    duration: float | None = None
    state: str = "unfinished"
    why: str = ""
    key_figure: str = ""
    mode: str = ""
    checks: list[CheckRow] = field(default_factory=list)
    checks_final: bool = False
    steps: list[StepRow] = field(default_factory=list)
    other_steps: list[tuple[float, int, str]] = field(default_factory=list)
    """Step changes whose index names no step of the recorded drill."""
    notes: list[str] = field(default_factory=list)
    actions: list[tuple[float, str, str]] = field(default_factory=list)
    stop: tuple[float, str] | None = None
    fault: FaultProof | None = None
    signals: list[SignalRow] = field(default_factory=list)
    chart: ChartData | None = None
    chart_missing: str = ""
    workers: list[tuple[str, str, str, int | None]] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    trigger_count: int = 0
    legacy: bool = False
    missing: list[str] = field(default_factory=list)
    screenshots: list[Screenshot] = field(default_factory=list)
    screenshots_left_out: int = 0
    training: Training | None = None
    problem: str | None = None
    """The folder could not be read: nothing else is known."""

    @property
    def armed_at(self) -> float | None:
        return self.fault.armed_at if self.fault is not None else None

    def since(self, wall: float | None) -> str:
        """A moment of the run as a trainer tells it: "+3.2s after armed"."""
        if wall is None:
            return "-"
        ref, what = (self.armed_at, "armed") if self.armed_at is not None else (self.started, "the start")
        if ref is None:
            return datetime.fromtimestamp(wall, UTC).strftime("%H:%M:%S UTC")
        return relative(wall - ref, what)


def relative(seconds: float, what: str = "armed") -> str:
    if seconds < 0:
        return f"{-seconds:.1f}s before {what}"
    return f"+{seconds:.1f}s after {what}"


def run_id_time(run_id: str) -> datetime | None:
    """The UTC start a run id spells (`20270115T080000`, maybe with a `-2` suffix)."""
    try:
        return datetime.strptime(run_id[:15], RUN_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _steps(drill: Mapping[str, Any], shown: list[tuple[float, int, str]]) -> tuple[list[StepRow], list[tuple[float, int, str]]]:
    raw = drill.get("steps")
    steps = [s for s in raw if isinstance(s, Mapping)] if isinstance(raw, list) else []
    when: dict[int, list[float]] = {}
    other: list[tuple[float, int, str]] = []
    for wall, index, say in shown:
        # The step bar cycles (index modulo the steps), as the trainer's screen numbers them.
        if steps and index >= 0:
            when.setdefault(index % len(steps), []).append(wall)
        else:
            other.append((wall, index, say))
    rows = [StepRow(i + 1, str(s.get("say", "")), _opt(s.get("promql")), _opt(s.get("trace_query")), tuple(when.get(i, ())))
            for i, s in enumerate(steps)]
    return rows, other


def _opt(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _check_rows(source: Iterable[Any]) -> list[CheckRow]:
    rows: list[CheckRow] = []
    for c in source:
        if not isinstance(c, Mapping):
            continue
        state_word = c.get("state")
        if state_word is None:  # a result written before check states existed
            state_word = "passed" if c.get("passed") else "failed"
        seen = c.get("first_seen_seconds")
        rows.append(CheckRow(
            number=len(rows) + 1, id=str(c.get("id", "")), kind=str(c.get("kind", "")), description=clip(c.get("description", "")),
            expected=clip(c.get("expected", "")), observed=clip(c.get("observed", "")), state=str(state_word),
            query=clip(c.get("query") or ""), first_seen=float(seen) if isinstance(seen, (int, float)) and math.isfinite(seen) else None,
        ))
    return rows


def _checks(state: RunState, result: Mapping[str, Any] | None) -> tuple[list[CheckRow], bool]:
    """(rows, judged at the end?): the verdict the run recorded, else the checklist as it last stood."""
    for verdict in (state.verdict, result if state.ended is None else None):
        if isinstance(verdict, Mapping) and isinstance(verdict.get("checks"), list):
            return _check_rows(verdict["checks"]), True
    return _check_rows(state.checks.values()), False


def _signals(folded: Folded) -> list[SignalRow]:
    rows: list[SignalRow] = []
    for sig in SIGNALS:
        view = signal_view(folded.state, sig)
        peak = folded.samplers[sig.key].peak if sig.kind == "gauge" else None
        rows.append(SignalRow(sig.key, sig.label, sig.kind, sig.unit, view.value, view.change, tuple(view.by_reason), peak))
    return rows


def _summary(row: SignalRow) -> str:
    if row.value is None:
        return "not sampled"
    if row.kind == "counter":
        text = f"{row.change or 0:+g} in the run"
        if row.by_reason:
            text += " (" + ", ".join(f"{r} {d:+g}" for r, d in row.by_reason[:2]) + ")"
        return text
    peak = value_label(row.peak, row.unit) if row.peak is not None else "-"
    return f"peak {peak} · end {value_label(row.value, row.unit)}"


def _chart(folded: Folded, signals: list[SignalRow], start: float | None, span: float | None,
           checks: list[CheckRow]) -> tuple[ChartData | None, str]:
    if start is None:
        return None, "the run recorded no start time, so its samples cannot be placed on a time axis"
    state = folded.state
    span = span or 0.0
    by_key = {r.key: r for r in signals}
    series: list[Series] = []
    latest = 0.0
    for sig in SIGNALS:
        # A sample outside the run (a legacy scrape without its time) would squash the axis: left out.
        pts = [(t - start, v) for t, v in folded.samplers[sig.key].points() if -1.0 <= t - start <= span + 1.0]
        latest = max([latest, *(t for t, _ in pts)])
        series.append(Series(sig.key, sig.label, sig.kind, sig.unit, pts, _summary(by_key[sig.key])))
    duration = max(span, latest)
    numbers = {c.id: c.number for c in checks}
    ticks = [Tick(wall - start, numbers[cid], st) for wall, cid, st in state.check_ticks
             if st in ("seen", "broken") and cid in numbers]
    armed = state.armed_at - start if state.armed_at is not None else None
    reverted = state.reverted_at - start if state.reverted_at is not None and state.armed_at is not None else None
    data = ChartData(duration, series, armed, reverted, ticks)
    if not data.has_points:
        return None, "fewer than two metric samples were recorded over time"
    return data, ""


def build(folded: Folded, *, folder: str, scenario: str, run_id: str, legacy: bool = False, missing: Iterable[str] = (),
          result: Mapping[str, Any] | None = None, screenshots: Iterable[Screenshot] = (), screenshots_left_out: int = 0,
          training: Training | None = None) -> RunReport:
    """The report of one run from its fold; `result` is `_result.json`, used when the record
    has no end."""
    st = folded.state
    drill = folded.drill
    rep = RunReport(folder=folder, scenario=scenario or st.scenario or "?", run_id=run_id or st.run_id or "?", legacy=legacy,
                    missing=list(missing), screenshots=list(screenshots), screenshots_left_out=screenshots_left_out,
                    training=training, notes=list(folded.notes))
    rep.letter = str(drill.get("letter") or "?")
    rep.title = str(drill.get("title") or "")
    rep.goal = clip(drill.get("goal") or "")
    rep.mode = st.mode
    if st.started_wall:
        rep.started = st.started_wall
    else:
        t = run_id_time(rep.run_id)
        rep.started, rep.started_from_id = (t.timestamp() if t else None), True
    if st.ended is not None:
        rep.state, rep.why, rep.duration = st.ended.state, clip(st.ended.why), st.ended.duration or None
        verdict = st.ended.verdict or {}
    elif result is not None:
        rep.state = str(result.get("state") or {"pass": "passed", "fail": "failed"}.get(str(result.get("verdict")), "unfinished"))
        rep.why = clip(result.get("why") or "")
        d = result.get("duration_seconds")
        rep.duration = float(d) if isinstance(d, (int, float)) else None
        verdict = result
    else:
        rep.state, rep.why, verdict = "unfinished", "the record has no end: the run was interrupted, or is still running", {}
    if rep.state not in END_STATES and rep.state != "unfinished":
        rep.why = clip(f"{rep.state}: {rep.why}" if rep.why else rep.state)
        rep.state = "unfinished"
    rep.key_figure = clip(verdict.get("key_figure") or "") if isinstance(verdict, Mapping) else ""
    if isinstance(verdict, Mapping):
        rep.notes += [clip(n) for n in verdict.get("notes") or [] if isinstance(n, str)]
    rep.checks, rep.checks_final = _checks(st, result)
    last_wall = folded.last_wall
    if rep.duration is None and rep.started is not None and last_wall and not rep.started_from_id:
        rep.duration = max(0.0, last_wall - rep.started)
    rep.steps, rep.other_steps = _steps(drill, folded.steps_shown)
    rep.actions = [(a.wall, clip(a.action, 200), clip(a.detail)) for a in st.actions]
    if st.stop is not None:
        rep.stop = (st.stop.wall, clip(st.stop.how, 200))
    fault = drill.get("fault")
    clean = st.clean
    rep.fault = FaultProof(
        fault=str(fault.get("type", "?")) if isinstance(fault, Mapping) else "?",
        armed_at=st.armed_at, armed_evidence=_clip_opt(st.fault_evidence), not_armed=_clip_opt(st.fault_not_armed),
        reverted_at=st.reverted_at, revert_evidence=_clip_opt(st.revert_evidence), still_armed=st.still_armed,
        clean=clean.clean if clean else None, clean_summary=_clip_opt(clean.summary if clean else None),
        problems=tuple(clip(p) for p in (clean.problems if clean else ())),
    )
    rep.workers = [(w.name, w.worker_id, w.how or ("running" if w.alive else "-"), w.exit_code) for w in st.workers.values()]
    rep.trigger_count = len(st.outbox_event_ids)
    rep.triggers = st.outbox_event_ids.list()[:5]
    rep.signals = _signals(folded)
    span = rep.duration
    if rep.started is not None and last_wall and not rep.started_from_id:
        span = max(span or 0.0, last_wall - rep.started)
    rep.chart, rep.chart_missing = _chart(folded, rep.signals, None if rep.started_from_id else rep.started, span, rep.checks)
    return rep


def _clip_opt(text: str | None) -> str | None:
    return None if text is None else clip(text)


def unreadable(folder: str, scenario: str, run_id: str, problem: str) -> RunReport:
    t = run_id_time(run_id)
    return RunReport(folder=folder, scenario=scenario, run_id=run_id, state="unreadable", why=clip(problem),
                     started=t.timestamp() if t else None, started_from_id=True, problem=clip(problem))
