"""`drillui report`: the session page, built from real run folders.

The runs are recorded through the real `Recorder` (the demo's drill A run on a fake clock, then
ended as passed, failed, stopped or error) and written with the real `EventLogWriter`, plus one
folder recorded before the event log existed. The page is checked as HTML/SVG (structure,
escaping of hostile strings, the fault band, the badges), and the CLI's bad arguments as one line
and exit 2. The browser tests (`test_report_browser.py`) render the same session in Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from drillui.cli import main
from drillui.errors import UsageError
from drillui.evidence.checks import Verdict, end_state, key_figure
from drillui.record.eventlog import EventLogWriter
from drillui.record.events import (
    ChecksChanged,
    CleanChecked,
    Event,
    FaultArmed,
    FaultNotArmed,
    FaultReverted,
    MetricsSampled,
    PhaseChanged,
    RunEnded,
    RunStarted,
    Said,
    StepChanged,
    StopRequested,
    TrainerActed,
)
from drillui.record.snapshot import RECIPE, RESULT, Snapshot
from drillui.report.build import report, write_report
from drillui.report.chart import ChartData, Downsampler, Series, Tick, render_chart
from drillui.report.load import load_run
from drillui.report.markup import el, esc
from drillui.report.page import CSP, run_section
from drillui.report.sanitize import UnsafeSvg, sanitize_svg
from drillui.report.select import parse_since, resolve, started_since
from drillui.runner.recorder import Recorder
from drillui.scenarios import Drill
from drillui.ui import demo

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios.yaml"
SCREENSHOT = ROOT / "tests" / "__snapshots__" / "test_ui_snapshots" / "test_drill_verified[100x30].svg"
JAEGER_SAMPLE = ROOT / "tests" / "fixtures" / "wire" / "jaeger_traces_sample.json"
NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>&amp;'
"""Text a run folder may hold (an error string, a log line): it must come out as text."""


# ---- recording runs -----------------------------------------------------------------------------


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _demo_timeline(until: str) -> list[Event]:
    """The demo run's observations, without what its recorder derived (checks, the end)."""
    return [e for e in demo.events(until) if not isinstance(e, (ChecksChanged, RunEnded))
            and not (isinstance(e, PhaseChanged) and e.phase == "ended")]


def record(*, until: str = "verified", extra: Iterable[Event] = (), end: str | None = "judged", why: str = "",
           drill: Drill | None = None, run_id: str = demo.RUN_ID,
           change: Callable[[Event], Event | None] = lambda e: e) -> list[Event]:
    """A drill A run recorded through the real `Recorder`: the demo's events up to `until`,
    then `extra` (each at its own `wall`), then the end: `judged` by the checks, `stopped`,
    `error` (with `why`), or None (the record has no end, as after a crash). `change` may swap
    or drop (None) an event of the demo's."""
    drill = drill or demo.catalog().drills[0]
    clock = _Clock(demo.T0)
    out: list[Event] = []
    rec = Recorder(drill, listeners=[out.append], clock=clock)
    changed = [c for c in (change(e) for e in _demo_timeline(until)) if c is not None]
    events = sorted([*changed, *extra], key=lambda e: e.wall)
    for ev in events:
        if isinstance(ev, RunStarted):
            ev = replace(ev, run_id=run_id, title=drill.title, drill=drill.model_dump(mode="json"))
        clock.t = ev.wall
        rec.emit(ev)
    if end is None:
        return out
    clock.t = max(e.wall for e in events) + 0.1
    checks = rec.final_checks()
    state, judged_why = end_state(checks, stopped=end == "stopped", error=why if end == "error" else None)
    if end == "stopped" and rec.state.stop is not None:
        judged_why = f"stopped by {rec.state.stop.how}"
    verdict = Verdict(drill.id, run_id, state, checks, f"snapshots/{drill.id}/{run_id}", key_figure(checks),
                      round(clock.t - demo.T0, 3), [], judged_why)
    rec.emit(PhaseChanged(phase="ended", message=f"{state.upper()}: {judged_why}"))
    rec.end(verdict)
    return out


def write_run(root: Path, events: list[Event], *, run_id: str, scenario: str = "es_down_connect",
              screenshots: Iterable[Path | str] = (), training: Any = None) -> Path:
    """A run folder as the runner leaves it: the event log, recipe, logs, result, screenshots."""
    snap = Snapshot(root, scenario, run_id)
    for sub in ("_metrics", "_logs", "_exports"):
        (snap.path / sub).mkdir(parents=True, exist_ok=True)
    writer = EventLogWriter(snap.events_path)
    for ev in events:
        writer.append(ev)
    writer.close()
    started = next(e for e in events if isinstance(e, RunStarted))
    snap.write_json(RECIPE, {"scenario": scenario, "letter": started.letter, "title": started.title, "run_id": run_id,
                             "drill": dict(started.drill)})
    snap.log_path("worker").write_text("".join(json.dumps(line) + "\n" for line in demo.log_lines()), encoding="utf-8")
    ended = next((e for e in events if isinstance(e, RunEnded)), None)
    if ended is not None:
        snap.write_json(RESULT, dict(ended.verdict or {}))
    for n, shot in enumerate(screenshots, 1):
        target = snap.path / f"dashboard-{run_id}-{n:02d}.svg"
        if isinstance(shot, Path):
            shutil.copyfile(shot, target)
        else:
            target.write_text(shot, encoding="utf-8")
    if training is not None:
        (snap.path / "_training.json").write_text(json.dumps(training), encoding="utf-8")
    return snap.path


def write_legacy_run(root: Path, *, run_id: str = "20261130T090000") -> Path:
    """A folder written before `_events.jsonl` existed: recipe, result (before check states),
    the phase scrapes, the worker's log and the trace export index."""
    drill = demo.catalog().drills[0]
    snap = Snapshot(root, drill.id, run_id)
    for sub in ("_metrics", "_logs", "_exports"):
        (snap.path / sub).mkdir(parents=True, exist_ok=True)
    snap.write_json(RECIPE, {"scenario": drill.id, "letter": drill.letter, "title": drill.title, "run_id": run_id,
                             "drill": drill.model_dump(mode="json"), "workers": [{"name": "worker", "worker_id": "worker@old"}]})
    (snap.path / "_metrics" / "metrics-before.txt").write_text(demo.metrics_text(demo.T0 + 0.5), encoding="utf-8")
    (snap.path / "_metrics" / "metrics-after.txt").write_text(demo.metrics_text(demo.RECOVERED_AT + 0.1), encoding="utf-8")
    snap.log_path("worker").write_text("".join(json.dumps(line) + "\n" for line in demo.log_lines()), encoding="utf-8")
    shutil.copyfile(JAEGER_SAMPLE, snap.path / "_exports" / "outbox.process-event.json")
    snap.write_json("_exports/_queries.json", [{"file": "outbox.process-event.json", "api": "legacy", "operation": "outbox.process"}])
    snap.write_json(RESULT, {"scenario": drill.id, "run_id": run_id, "verdict": "fail", "passed": False, "duration_seconds": 9.0,
                             "checks": [
                                 {"id": "fault:armed", "kind": "fault", "description": "fault armed", "expected": "armed",
                                  "observed": "connection refused", "passed": True},
                                 {"id": "metric:outbox_retry_scheduled_total", "kind": "metric", "description": "retry grows",
                                  "expected": ">= 1", "observed": "+0", "passed": False},
                             ]})
    return snap.path


def steps_and_actions() -> list[Event]:
    return [
        StepChanged(index=0, say=demo.catalog().drills[0].steps[0].say, wall=demo.ARMED + 0.2),
        StepChanged(index=1, say="", wall=demo.ARMED + 1.6),
        StepChanged(index=2, say="", wall=demo.ARMED + 3.4),
        StepChanged(index=3, say="", wall=demo.ARMED + 4.0),  # the bar cycles: step 1 again
        TrainerActed(action="screenshot", detail="dashboard-01.svg", wall=demo.ARMED + 2.0),
    ]


def hostile_extra() -> list[Event]:
    return [
        Said(message=HOSTILE, wall=demo.ARMED + 0.5),
        FaultReverted(fault="engine_unreachable", evidence=f"relay reopened {HOSTILE}", still_armed=True, wall=demo.ARMED + 2.5),
        CleanChecked(clean=False, summary=f"engine still down {HOSTILE}", problems=(f"problem {HOSTILE}",), wall=demo.ARMED + 2.6),
        TrainerActed(action=HOSTILE, detail=HOSTILE, wall=demo.ARMED + 1.0),
    ]


HOSTILE_SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 200 100" onload="alert(1)">
  <style>@import url(https://evil.example/x.css); @font-face { font-family: X; src: url("https://evil.example/f.woff2"); }
  .ok { fill: #123456; background: url(https://evil.example/bg.png) } body { display: none }</style>
  <script>alert("svg")</script>
  <foreignObject width="10" height="10"><iframe xmlns="http://www.w3.org/1999/xhtml" src="https://evil.example/"></iframe></foreignObject>
  <image href="https://evil.example/i.png" width="5" height="5"/>
  <a href="javascript:alert(1)"><text x="1" y="1">link</text></a>
  <use xlink:href="https://evil.example/sprite.svg#a"/>
  <use href="#keep"/>
  <rect id="keep" class="ok" x="0" y="0" width="10" height="10" onclick="alert(2)" fill="url(https://evil.example/p)"
        clip-path="url(#c1)" style="fill: url('https://evil.example/s')"/>
  <text x="5" y="50">&lt;b&gt;kept text&lt;/b&gt;</text>
  <animate attributeName="href" to="javascript:alert(3)"/>
</svg>
"""


def demo_drill_with(**changes: Any) -> Drill:
    return demo.catalog().drills[0].model_copy(update=changes)


def write_session(root: Path) -> Path:
    """A snapshots root with a passed, a failed (full of hostile strings), a stopped, an error,
    an unfinished and a legacy run of drill A."""
    write_run(root, record(extra=steps_and_actions()), run_id="20270115T080000", screenshots=[SCREENSHOT],
              training={"score": 7, "out_of": 10, "answers": [{"q": "which reason?", "given": "es_connect", "right": True}],
                        "trainee": HOSTILE})
    write_run(root, record(until="running", extra=hostile_extra(),
                           drill=demo_drill_with(title=f"Engine down {HOSTILE}", goal=f"goal {HOSTILE}")),
              run_id="20270115T080000-2", screenshots=[HOSTILE_SVG, "<svg><unclosed>", SCREENSHOT])
    write_run(root, record(until="running", extra=[StopRequested(how="key s", wall=demo.ARMED + 2.0)], end="stopped"),
              run_id="20270115T080000-3")
    write_run(root, record(until="running", end="error", why=f"Postgres stopped answering: {HOSTILE}"), run_id="20270115T080000-4")
    write_run(root, record(until="running", end=None), run_id="20270115T080000-5")
    write_legacy_run(root)
    return root


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recorded once per module (recording is the slow part); no test changes it."""
    return write_session(tmp_path_factory.mktemp("session") / "snapshots")


RUNS = {"passed": "20270115T080000", "failed": "20270115T080000-2", "stopped": "20270115T080000-3", "error": "20270115T080000-4",
        "unfinished": "20270115T080000-5", "legacy": "20261130T090000"}


def run_paths(root: Path, *which: str) -> list[Path]:
    """The session's run folders, in the order of `RUNS` (or of `which`)."""
    return [root / "es_down_connect" / RUNS[w] for w in (which or RUNS)]


# ---- reading the page back ----------------------------------------------------------------------


class Doc(HTMLParser):
    """The page as a list of (tag, attrs) and its text, parsed the way a browser tokenizes it."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **match: str) -> list[dict[str, str | None]]:
        out = []
        for t, attrs in self.tags:
            if t == tag and all(m in (attrs.get(k) or "").split() for k, m in match.items()):
                out.append(attrs)
        return out

    @property
    def joined(self) -> str:
        return "".join(self.text)


def render(root: Path, tmp_path: Path, paths: list[Path] | None = None) -> str:
    out = tmp_path / "report.html"
    write_report(paths if paths is not None else run_paths(root), out, selection="test", root=root, now=NOW)
    return out.read_text(encoding="utf-8")


# ---- the page -----------------------------------------------------------------------------------


def test_one_section_per_run_and_a_summary_counting_end_states(session: Path, tmp_path: Path) -> None:
    page = render(session, tmp_path)
    doc = Doc(page)
    sections = doc.all("section", **{"class": "run"})
    assert [s["id"] for s in sections] == [f"run-{n}" for n in range(1, 7)]
    states = [next(c for c in (s["class"] or "").split() if c.startswith("st-")) for s in sections]
    assert states == ["st-passed", "st-failed", "st-stopped", "st-error", "st-unfinished", "st-failed"]
    counts = re.search(r'<div class="counts"[^>]*>(.*?)</div>', page, re.S)
    assert counts is not None
    count_text = re.sub(r"<[^>]+>", "", counts.group(1))
    for word, n in (("PASSED", 1), ("FAILED", 2), ("STOPPED", 1), ("ERROR", 1), ("UNFINISHED", 1)):
        assert f"{word} {n}" in count_text
    summary_rows = re.findall(r'<tr><td class="num">(\d+)</td>', page)
    assert summary_rows == [str(n) for n in range(1, 7)]
    assert [a["href"] for a in doc.all("a")][:6] == [f"#run-{n}" for n in range(1, 7)]


def test_a_run_shows_its_checks_steps_fault_notes_screenshot_and_training(session: Path, tmp_path: Path) -> None:
    rep = load_run(*run_paths(session, "passed"))
    assert (rep.state, rep.why, rep.letter, rep.run_id) == ("passed", "all 10 checks passed", "A", "20270115T080000")
    assert rep.checks_final and [c.state for c in rep.checks] == ["passed"] * 10
    retry = next(c for c in rep.checks if c.id.startswith("metric:outbox_retry"))
    assert retry.first_seen is not None and retry.first_seen > 0
    assert [len(s.shown) for s in rep.steps] == [2, 1, 1]
    page = run_section(rep, 1)
    doc = Doc(page)
    checks = doc.all("tr", **{"class": "check"})
    assert len(checks) == 10 and all("row-passed" in (c["class"] or "") for c in checks)
    assert "+0.2s after armed" in page  # the retry's first-seen time
    assert "shown +0.2s after armed, +4.0s after armed" in page  # step 1, shown twice (the bar cycles)
    assert 'sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component=&quot;worker&quot;}[1m]))' in page
    assert "ConnectError: [Errno 111] Connection refused" in page  # the fault's proof
    assert "Trainer +2.0s after armed: <strong>screenshot</strong>" in page
    imgs = doc.all("img")
    assert len(imgs) == 1 and (imgs[0]["src"] or "").startswith("data:image/svg+xml;base64,")
    assert "<th scope=\"row\">score</th><td>7</td>" in page and "which reason?" in page


def test_every_text_from_a_run_folder_is_escaped(session: Path, tmp_path: Path) -> None:
    page = render(session, tmp_path)
    doc = Doc(page)
    # No element the hostile strings spell, only the page's own: no script, no handler, no iframe.
    assert not doc.all("script") and not doc.all("iframe")
    assert not [a for _, attrs in doc.tags for a in attrs if a.startswith("on")]
    assert [a["src"] for a in doc.all("img") if not (a["src"] or "").startswith("data:image/svg+xml;base64,")] == []
    text = doc.joined
    assert text.count('<script>alert("x")</script>') >= 8  # title, goal, evidence, clean, problem, action, why, training
    assert "Engine down <script>" in text


def test_the_chart_shades_the_fault_window_and_marks_the_checks_that_ticked(session: Path) -> None:
    rep = load_run(*run_paths(session, "passed"))
    assert rep.chart is not None
    assert rep.chart.armed == pytest.approx(0.8) and rep.chart.reverted == pytest.approx(5.8)
    assert {t.state for t in rep.chart.ticks} == {"seen"}
    svg = render_chart(rep.chart, chart_id="c", title="t")
    doc = Doc(svg)
    band = doc.all("rect", **{"class": "band"})
    assert len(band) == 1
    x0, width = float(band[0]["x"] or 0), float(band[0]["width"] or 0)
    # 190 px of labels, 756 px of plot for the run's duration: the band sits where 0.8s..5.8s are.
    duration = rep.chart.duration
    assert x0 == pytest.approx(190 + 0.8 / duration * 756, abs=0.05)
    assert width == pytest.approx(5.0 / duration * 756, abs=0.05)
    series = doc.all("polyline", **{"class": "series"})
    assert [s["data-signal"] for s in series] == ["retry", "failed", "terminal", "lag", "age", "stuck"]
    assert len(doc.all("line", **{"class": "tick"})) >= 3
    assert "✓1" in svg  # check 1 (the fault) ticked when armed
    retry = next(s for s in rep.chart.series if s.key == "retry")
    assert retry.points[-1][1] == 6.0 and retry.summary.startswith("+6 in the run (es_connect +6)")


def test_a_fault_that_was_never_reverted_is_shaded_to_the_end() -> None:
    data = ChartData(10.0, [Series("lag", "lag", "gauge", "", [(0.0, 0.0), (10.0, 1.0)])], armed=2.0, reverted=None,
                     ticks=[Tick(3.0, 2, "broken")])
    svg = render_chart(data, chart_id="c", title="t")
    band = Doc(svg).all("rect", **{"class": "band"})[0]
    assert float(band["x"] or 0) + float(band["width"] or 0) == pytest.approx(190 + 756)
    assert "fault armed (not reverted)" in svg and "✗2" in svg


def test_a_fault_that_could_not_arm_has_no_band_and_says_so(tmp_path: Path) -> None:
    def not_armed(ev: Event) -> Event | None:
        if isinstance(ev, FaultArmed):
            return FaultNotArmed(fault=ev.fault, evidence="GET http://127.0.0.1:9200/ -> HTTP 200 (still up)", wall=ev.wall)
        return None if isinstance(ev, FaultReverted) else ev

    path = write_run(tmp_path / "snapshots", record(change=not_armed), run_id="20270115T080000")
    rep = load_run(path)
    assert rep.state == "failed" and rep.chart is not None and rep.chart.armed is None
    assert not Doc(render_chart(rep.chart, chart_id="c", title="t")).all("rect", **{"class": "band"})
    assert "<strong class=\"c-failed\">NOT armed: </strong>GET http://127.0.0.1:9200/ -&gt; HTTP 200 (still up)" in run_section(rep, 1)


def test_training_scores_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    path = write_run(tmp_path / "snapshots", record(until="running", end=None), run_id="20270115T080000")
    (path / "_training.json").write_text("{broken", encoding="utf-8")
    rep = load_run(path)
    assert rep.training is not None and rep.training.problem is not None
    assert "_training.json cannot be read" in run_section(rep, 1)


def test_a_run_without_an_end_shows_the_checklist_as_it_last_stood(session: Path) -> None:
    rep = load_run(*run_paths(session, "unfinished"))
    assert rep.state == "unfinished" and not rep.checks_final
    assert {c.state for c in rep.checks} <= {"seen", "holding", "waiting", "at_end"}
    assert "Checklist (as it last stood" in run_section(rep, 5)


def test_stopped_and_error_runs_say_why(session: Path) -> None:
    stopped, error = (load_run(p) for p in run_paths(session, "stopped", "error"))
    assert (stopped.state, stopped.why) == ("stopped", "stopped by key s")
    assert stopped.stop is not None and stopped.stop[1] == "key s"
    assert error.state == "error" and error.why.startswith("Postgres stopped answering")
    assert "■ STOPPED" in run_section(stopped, 3) and "⚠ ERROR" in run_section(error, 4)


def test_a_run_recorded_before_the_event_log_says_what_is_missing(session: Path, tmp_path: Path) -> None:
    rep = load_run(*run_paths(session, "legacy"))
    assert rep.legacy and rep.state == "failed" and rep.started_from_id
    assert [c.state for c in rep.checks] == ["passed", "failed"]
    assert rep.chart is None and "no start time" in rep.chart_missing
    retry = next(s for s in rep.signals if s.key == "retry")
    assert retry.change == 6.0  # from the phase scrapes the folder kept
    page = run_section(rep, 1)
    assert "Recorded before the event log existed" in page
    for missing in rep.missing:
        assert esc(missing) in page
    assert "2026-11-30 09:00:00 UTC (from the run id)" in page


def test_screenshots_are_sanitized_and_bad_ones_named(session: Path) -> None:
    rep = load_run(*run_paths(session, "failed"))
    good, bad, real = rep.screenshots
    assert bad.svg is None and bad.problem is not None and "not well-formed" in bad.problem
    assert real.svg is not None and real.svg.count("<text") > 300  # a real Textual export survives whole
    assert good.svg is not None
    svg = good.svg
    for gone in ("script", "onload", "onclick", "foreignObject", "iframe", "<image", "javascript:", "evil.example", "@import",
                 "@font-face", "<a ", "animate"):
        assert gone not in svg, gone
    assert '<use href="#keep">' in svg and 'clip-path="url(#c1)"' in svg and 'fill="none"' in svg
    assert "&lt;b&gt;kept text&lt;/b&gt;" in svg and ".ok { fill: #123456" in svg


def test_the_sanitizer_refuses_what_it_cannot_vouch_for() -> None:
    with pytest.raises(UnsafeSvg, match="DTD"):
        sanitize_svg('<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>')
    with pytest.raises(UnsafeSvg, match="not svg"):
        sanitize_svg('<html xmlns="http://www.w3.org/1999/xhtml"><script>x</script></html>')
    # A CSS escape can spell url( past any pattern: such a stylesheet is dropped whole.
    out = sanitize_svg('<svg xmlns="http://www.w3.org/2000/svg"><style>.a { background: \\75rl(https://e.example/) }</style></svg>')
    assert "e.example" not in out and "<style></style>" in out


def test_the_page_needs_nothing_from_a_network(session: Path, tmp_path: Path) -> None:
    page = render(session, tmp_path)
    doc = Doc(page)
    csp = [m["content"] for m in doc.all("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [CSP]
    assert not doc.all("link") and not doc.all("script")
    refs = [v for _, attrs in doc.tags for k, v in attrs.items() if k in ("src", "href") and v]
    assert refs and all(v.startswith(("#", "data:")) for v in refs)
    assert not re.search(r"url\(\s*['\"]?(?!#)", page.split("</style>", 1)[0])
    assert "@media print" in page and "break-before: page" in page


def test_the_markup_builder_escapes_text_and_attributes() -> None:
    assert el("td", "<b>&", title='"x"') == '<td title="&quot;x&quot;">&lt;b&gt;&amp;</td>'
    assert el("p", el("b", "ok"), " & ", None, ["a", 1]) == "<p><b>ok</b> &amp; a1</p>"


def test_the_downsampler_keeps_the_whole_run_in_a_bounded_number_of_points() -> None:
    ds = Downsampler(limit=50)
    for i in range(100_000):
        ds.add(float(i), 1000.0 if i == 77_777 else float(i % 10))
    points = ds.points()
    assert len(points) <= 100 and len(ds.buckets) <= 50
    assert points[0][0] == 0.0 and points[-1] == (99_999.0, 9.0)
    assert (77_777.0, 1000.0) in points and ds.peak == 1000.0
    assert [t for t, _ in points] == sorted(t for t, _ in points)


def test_a_long_run_is_charted_from_start_to_end_within_the_point_limit(tmp_path: Path) -> None:
    extra: list[Event] = []
    base = demo.scrape(demo.T0 + 1.0)
    rows = tuple((s.name, dict(s.labels), s.value, s.kind) for s in base.samples)
    for k in range(1500):
        t = demo.T0 + 8.0 + k * 0.5
        bumped = tuple((n, lab, v + k if n == "outbox_retry_scheduled_total" and lab.get("reason") == "es_connect" else v, kind)
                       for n, lab, v, kind in rows)
        extra.append(MetricsSampled(worker="worker", phase="live", taken_at=t, samples=bumped, wall=t))
    path = write_run(tmp_path / "snapshots", record(extra=extra), run_id="20270115T080000")
    rep = load_run(path)
    assert rep.chart is not None
    retry = next(s for s in rep.chart.series if s.key == "retry")
    assert len(retry.points) <= 600
    assert retry.points[-1][0] == pytest.approx(8.0 + 1499 * 0.5, abs=0.01)
    assert rep.chart.duration >= retry.points[-1][0]


# ---- choosing runs ------------------------------------------------------------------------------


def _lookup(name: str) -> str:
    return demo.catalog().get(name).id


def test_runs_are_named_by_folder_drill_letter_or_drill_and_run_id(session: Path) -> None:
    folder = session / "es_down_connect" / "20270115T080000-2"
    assert resolve(str(folder), session, _lookup) == folder
    assert resolve("A", session, _lookup).name == "20270115T080000-5"  # the latest run id
    assert resolve("es_down_connect", session, _lookup).name == "20270115T080000-5"
    assert resolve("A/20261130T090000", session, _lookup).name == "20261130T090000"


@pytest.mark.parametrize("arg, message", [
    ("Y", "no drill 'Y'"),
    ("A/not-a-run", "names no run folder"),
    ("A/20990101T000000", "no run 20990101T000000"),
    ("A/../../../etc", "names no run folder"),
    ("../etc/passwd", "names no run folder"),
    ("es_429", "no run of es_429"),
    ("", "empty RUN"),
])
def test_a_bad_run_name_is_a_usage_error(session: Path, arg: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve(arg, session, _lookup)


def test_since_takes_dates_date_times_and_durations() -> None:
    assert parse_since("2027-01-15", NOW) == datetime(2027, 1, 15, tzinfo=UTC)
    assert parse_since("2027-01-15T09:30", NOW) == datetime(2027, 1, 15, 9, 30, tzinfo=UTC)
    assert parse_since("2027-01-15T10:30+01:00", NOW) == datetime(2027, 1, 15, 9, 30, tzinfo=UTC)
    assert parse_since("2h", NOW) == datetime(2027, 1, 15, 10, 0, tzinfo=UTC)
    assert parse_since("3d", NOW) == datetime(2027, 1, 12, 12, 0, tzinfo=UTC)
    with pytest.raises(UsageError, match="neither an ISO date"):
        parse_since("yesterday", NOW)


def test_since_picks_the_runs_by_their_start(session: Path) -> None:
    assert [p.name for p in started_since(session, datetime(2027, 1, 15, tzinfo=UTC))] == [
        "20270115T080000", "20270115T080000-2", "20270115T080000-3", "20270115T080000-4", "20270115T080000-5"]
    assert len(started_since(session, datetime(2026, 11, 1, tzinfo=UTC))) == 6
    assert started_since(session, datetime(2027, 1, 16, tzinfo=UTC)) == []


def test_without_arguments_a_report_covers_today(session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    written = report([], since=None, output=None, root=session, lookup=_lookup, now=NOW)
    assert written.path.parent == tmp_path and written.path.name == "drillui-report-20270115T120000Z.html"
    assert written.runs == 5
    again = report([], since=None, output=None, root=session, lookup=_lookup, now=NOW)
    assert again.path.name == "drillui-report-20270115T120000Z-2.html"
    assert (written.path.stat().st_mode & 0o777) == 0o600


# ---- the command --------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--scenarios", str(SCENARIOS), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_the_page_and_prints_its_path(session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "session.html"
    code, out, err = _cli(capsys, "report", "A", "es_down_connect/20261130T090000", "-o", str(target), "--snapshots", str(session))
    assert (code, out, err) == (0, f"{target}\n", "")
    assert len(Doc(target.read_text(encoding="utf-8")).all("section", **{"class": "run"})) == 2
    # Global options work after the subcommand too.
    code, out, _ = _cli(capsys, "report", "--since", "2026-11-01", "-o", str(target), "--snapshots", str(session),
                        "--scenarios", str(SCENARIOS))
    assert code == 0 and len(Doc(target.read_text(encoding="utf-8")).all("section", **{"class": "run"})) == 6


@pytest.mark.parametrize("args, message", [
    (["Y"], "no drill 'Y' in the catalog"),
    (["A/20990101T000000"], "no run 20990101T000000"),
    (["A/../../etc"], "names no run folder"),
    (["A", "--since", "2h"], "give runs or --since, not both"),
    (["--since", "next tuesday"], "is neither an ISO date/time nor a duration"),
    (["--since", "2099-01-01"], "no run started since 2099-01-01 00:00 UTC"),
    (["-o", "{tmp}/missing/x.html", "A"], "does not exist"),
    (["-o", "{tmp}", "A"], "is a folder"),
    (["--snapshots", "{tmp}/file", "A"], "is a file, not a folder"),
])
def test_a_bad_argument_is_one_line_and_exit_2(session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--snapshots" not in argv:
        argv += ["--snapshots", str(session)]
    code, out, err = _cli(capsys, "report", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("drillui: ") and message in err, err
    assert "Traceback" not in err


def test_a_run_folder_that_cannot_be_read_is_a_section_not_a_crash(session: Path, tmp_path: Path) -> None:
    broken = tmp_path / "snapshots" / "es_down_connect" / "20270116T000000"
    broken.mkdir(parents=True)
    (broken / RECIPE).write_text("{not json")
    page = render(session, tmp_path, [broken, *run_paths(session, "passed")])
    doc = Doc(page)
    assert [s["class"] for s in doc.all("section", **{"class": "run"})] == ["run st-unreadable", "run st-passed"]
    assert "is not readable JSON" in doc.joined
