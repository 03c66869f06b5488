"""The report page: a session summary, then one section per run, in one self-contained HTML file.

Why this module exists: a report is read on a shared screen right after a rehearsal and printed
for the retrospective, often long after the stack that ran the drills is gone. So it carries
everything inline (its CSS, its charts as SVG, the screenshots as data URIs), forbids itself any
fetch or script with a Content-Security-Policy, and is light and high-contrast on screen and in
print (each run starting on a new page). Every text from a run folder goes through `markup`,
which escapes it.

Pure: `RunReport` in, markup out; `drillui.report.build` writes the file.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from drillui.report.chart import legend_text, render_chart
from drillui.report.markup import Html, el, join, raw
from drillui.report.model import END_STATES, CheckRow, RunReport, clip, relative

CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""Nothing to fetch, nothing to run: a report cannot phone home, whatever a run folder held."""

STATE_MARKS: Final = {"passed": "✓", "failed": "✗", "stopped": "■", "error": "⚠", "unfinished": "…", "unreadable": "?"}
CHECK_MARKS: Final = {"passed": "✓", "failed": "✗", "seen": "✓", "broken": "✗", "holding": "=", "waiting": "…", "at_end": "?"}
CHECK_WORDS: Final = {"at_end": "at end"}

CSS: Final = """
:root { color-scheme: light; --ink: #141414; --muted: #4a4a4a; --rule: #c8c8c8; --soft: #f4f5f7; --accent: #1f4e99; }
* { box-sizing: border-box; }
html { background: #fff; }
body { margin: 0 auto; max-width: 1180px; padding: 24px 28px 48px; color: var(--ink); background: #fff;
  font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
h1 { font-size: 1.9rem; margin: 0 0 .2rem; }
h2 { font-size: 1.45rem; margin: 0; display: inline; }
h3 { font-size: 1.08rem; margin: 1.6rem 0 .5rem; padding-bottom: .2rem; border-bottom: 2px solid var(--rule); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-size: .86em; }
code { overflow-wrap: anywhere; }
a { color: var(--accent); }
p { margin: .35rem 0; }
.meta, .muted { color: var(--muted); }
.small { font-size: .86em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .38rem .5rem; border-bottom: 1px solid var(--rule); overflow-wrap: anywhere; }
th { font-size: .82em; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); border-bottom: 2px solid var(--ink); }
.summary td.num, .checks td.num { color: var(--muted); width: 2.4em; }
.summary td.nowrap { white-space: nowrap; overflow-wrap: normal; }
table.signals td:first-child { width: 12em; }
table.training th { text-transform: none; letter-spacing: 0; font-size: .93rem; color: var(--ink); border-bottom: 1px solid var(--rule);
  width: 28%; }
.counts { margin: .8rem 0 1rem; display: flex; flex-wrap: wrap; gap: .5rem; }
.count { border: 1.5px solid var(--rule); border-radius: 6px; padding: .2rem .6rem; font-weight: 600; }
.badge { display: inline-block; font-weight: 700; font-size: .9rem; letter-spacing: .02em; padding: .12rem .55rem;
  border: 1.5px solid; border-radius: 5px; white-space: nowrap; vertical-align: middle; }
.s-passed { color: #0d4f1f; background: #ddf4e4; border-color: #1a7f37; }
.s-failed { color: #86170f; background: #fde3e0; border-color: #b42318; }
.s-stopped { color: #574500; background: #fff1bf; border-color: #8f7300; }
.s-error { color: #6f1a55; background: #fae1f0; border-color: #a3307a; }
.s-unfinished, .s-unreadable { color: #2b2b2b; background: #ececec; border-color: #6b6b6b; }
.c-passed, .c-seen { color: #0d4f1f; }
.c-failed, .c-broken { color: #86170f; }
.c-holding, .c-waiting, .c-at_end { color: #3d3d3d; }
.cstate { font-weight: 700; white-space: nowrap; }
.row-failed td, .row-broken td { background: #fff4f2; }
.run { margin-top: 2.6rem; padding-top: 1.4rem; border-top: 4px solid var(--ink); }
.run-head { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem; }
.letter { display: inline-block; min-width: 1.7em; text-align: center; border: 2px solid var(--ink); border-radius: 6px;
  margin-right: .35rem; font-weight: 800; }
.why { font-size: 1.05rem; margin: .5rem 0 .2rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .6rem 0; font-size: .93rem; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.box { border: 1.5px solid var(--rule); border-left: 6px solid #8f7300; background: #fffbea; padding: .5rem .8rem; margin: .7rem 0; }
.box ul { margin: .3rem 0 0 1.1rem; padding: 0; }
figure { margin: .4rem 0 1rem; }
figcaption { color: var(--muted); font-size: .86rem; margin-top: .3rem; }
svg.chart { width: 100%; height: auto; display: block; background: #fff; }
.checks col.c-num { width: 2.4em; } .checks col.c-state { width: 7.2em; } .checks col.c-check { width: 40%; }
.checks col.c-obs { width: 26%; } .checks col.c-exp { width: 11%; }
.checks th, .summary th { white-space: nowrap; overflow-wrap: normal; }
.summary col.c-drill { width: 30%; } .summary col.c-why { width: 30%; } .checks col.c-seen { width: 11%; }
.checks .query { margin-top: .2rem; font-size: .9em; }
.checks { table-layout: fixed; font-size: .93rem; }
.checks .cid { display: block; color: var(--muted); font-size: .84em; margin-top: .15rem; }
ol.steps { padding-left: 1.4rem; }
ol.steps li { margin: .3rem 0 .6rem; }
.when { color: var(--muted); font-size: .9rem; }
.shots { display: grid; grid-template-columns: 1fr; gap: 1rem; }
.shots img { width: 100%; height: auto; border: 1px solid var(--rule); background: #1e1e1e; }
.print-only { display: none; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--rule); padding-top: .6rem; }
@media print {
  @page { margin: 13mm 12mm; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  .summary, .checks, .facts { font-size: 8.8pt; }
  .checks col.c-state { width: 6em; } .checks col.c-seen { width: 12%; }
  .run { break-before: page; margin-top: 0; padding-top: 0; border-top: none; }
  h2, h3 { break-after: avoid; }
  tr, figure, .facts, .box { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  .badge, .count, .box { background: none !important; }
  /* A terminal screenshot is light text on a dark ground: inverted (hues kept) it prints on white. */
  .shots img { filter: invert(1) hue-rotate(180deg); background: none; width: 100%; max-height: 150mm; object-fit: contain; }
  .print-only { display: inline; }
}
"""


@dataclass(frozen=True)
class SummaryRow:
    number: int
    letter: str
    scenario: str
    title: str
    run_id: str
    started: float | None
    duration: float | None
    state: str
    why: str

    @classmethod
    def of(cls, rep: RunReport, number: int) -> SummaryRow:
        return cls(number, rep.letter, rep.scenario, rep.title, rep.run_id, rep.started, rep.duration, rep.state, rep.why)


def utc(wall: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    return "-" if wall is None else datetime.fromtimestamp(wall, UTC).strftime(fmt)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def badge(state: str) -> Html:
    return el("span", f"{STATE_MARKS.get(state, '·')} {state.upper()}", class_=f"badge s-{state}")


def _check_state(c: CheckRow) -> Html:
    word = CHECK_WORDS.get(c.state, c.state)
    return el("span", f"{CHECK_MARKS.get(c.state, '·')} {word}", class_=f"cstate c-{c.state}")


# ---- the session --------------------------------------------------------------------------------


def session_title(rows: list[SummaryRow]) -> str:
    days = sorted({utc(r.started, "%Y-%m-%d") for r in rows if r.started is not None})
    when = days[0] if len(days) == 1 else f"{days[0]} – {days[-1]}" if days else "no date"
    return f"Drill session {when}"


def page_start(rows: list[SummaryRow], *, generated: datetime, selection: str, root: str, version: str) -> Html:
    title = session_title(rows)
    counts = Counter(r.state for r in rows)
    shown = [*END_STATES, *(s for s in ("unfinished", "unreadable") if counts[s])]
    head = el("head",
              el("meta", charset="utf-8"),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("meta", http_equiv="Content-Security-Policy", content=CSP),
              el("meta", name="generator", content=f"drillui {version}"),
              el("title", f"{title} · drillui report"),
              el("style", raw(CSS)))
    days = {utc(r.started, "%Y-%m-%d") for r in rows if r.started is not None}
    clock = "%H:%M:%S" if len(days) <= 1 else "%Y-%m-%d %H:%M:%S"
    cols = el("colgroup", [el("col", class_=c) for c in ("c-num", "c-drill", "c-run", "c-start", "c-took", "c-state", "c-why")])
    summary = el("table", cols, el("thead", el("tr", el("th", "#"), el("th", "drill"), el("th", "run"), el("th", "started (UTC)"),
                                           el("th", "took"), el("th", "state"), el("th", "why"))),
                 el("tbody", [el("tr",
                                 el("td", str(r.number), class_="num"),
                                 el("td", el("a", f"{r.letter} {r.scenario}", href=f"#run-{r.number}"),
                                    el("div", r.title, class_="small muted") if r.title else None),
                                 el("td", el("span", r.run_id, class_="mono"), class_="nowrap"),
                                 el("td", utc(r.started, clock), class_="mono nowrap"),
                                 el("td", duration_text(r.duration), class_="mono nowrap"),
                                 el("td", badge(r.state)),
                                 el("td", clip(r.why, 240), class_="small"))
                              for r in rows]),
                 class_="summary")
    header = el("header",
                el("h1", title),
                el("p", f"{len(rows)} run(s) from ", el("code", root), f" ({selection}); generated {generated:%Y-%m-%d %H:%M} UTC "
                   f"by drillui {version}.", class_="meta"),
                el("div", [el("span", badge(s), f" {counts[s]}", class_="count") for s in shown], class_="counts",
                   aria_label="runs by end state"),
                summary,
                class_="session")
    return join(raw("<!doctype html>\n"), raw('<html lang="en">'), head, raw("<body>"), header, raw("<main>"))


def page_end(version: str) -> Html:
    foot = el("footer", f"Written by drillui {version} from the runs' own records (_events.jsonl, or the files of runs recorded "
                        "before it). Self-contained: nothing in this page is fetched from a network.")
    return join(raw("</main>"), foot, raw("</body></html>\n"))


# ---- one run ------------------------------------------------------------------------------------


def run_section(rep: RunReport, number: int) -> Html:
    sid = f"run-{number}"
    head = el("div",
              el("h2", el("span", rep.letter, class_="letter"), rep.title or rep.scenario, id=f"{sid}-title"),
              badge(rep.state),
              class_="run-head")
    facts = _facts(rep)
    if rep.problem is not None:
        return el("section", head, el("p", rep.why, class_="why"), facts, class_=f"run st-{rep.state}", id=sid)
    parts: list[Html] = [head, el("p", rep.why, class_="why") if rep.why else Html(""), facts]
    if rep.goal:
        parts.append(el("p", el("strong", "Goal: "), rep.goal))
    if rep.legacy or rep.missing:
        parts.append(el("div", el("strong", "Recorded before the event log existed: "),
                        "this section shows what the run's files allow. They do not hold:",
                        el("ul", [el("li", m) for m in rep.missing]), class_="box missing"))
    if rep.notes and any(n.startswith("the recorded drill definition") for n in rep.notes):
        parts.append(el("div", [el("p", n) for n in rep.notes if n.startswith("the recorded drill definition")], class_="box"))
    parts += [_signals(rep, sid), _checklist(rep), _steps(rep), _fault(rep), _notes(rep), _training(rep), _screenshots(rep, sid)]
    return el("section", *parts, class_=f"run st-{rep.state}", id=sid, aria_labelledby=f"{sid}-title")


def _facts(rep: RunReport) -> Html:
    started = utc(rep.started) + (" (from the run id)" if rep.started_from_id and rep.started is not None else "")
    took = duration_text(rep.duration) + (" so far" if rep.state == "unfinished" and rep.duration is not None else "")
    items: list[tuple[str, Any]] = [
        ("drill", el("code", rep.scenario)),
        ("run", el("code", rep.run_id)),
        ("started", started),
        ("duration", took),
    ]
    if rep.mode:
        items.append(("mode", rep.mode))
    if rep.key_figure:
        items.append(("key figure", el("code", rep.key_figure)))
    items.append(("evidence", el("code", rep.folder)))
    return el("dl", [(el("dt", k), el("dd", v)) for k, v in items], class_="facts")


def _signals(rep: RunReport, sid: str) -> Html:
    h = el("h3", "Main signals over time")
    if rep.chart is None:
        rows = [el("tr", el("td", s.label), el("td", "not sampled" if s.value is None else
                                                 (f"{s.change or 0:+g} in the run" if s.kind == "counter" else
                                                  f"end {s.value:g}{s.unit}" + (f", peak {s.peak:g}{s.unit}" if s.peak is not None else ""))))
                for s in rep.signals]
        return join(h, el("p", f"No chart: {rep.chart_missing}.", class_="muted"),
                    el("table", el("tbody", rows), class_="signals") if rows else None)
    title = f"Retry, failed, terminal, lag, oldest age and stuck over the run {rep.run_id}"
    return join(h, el("figure", render_chart(rep.chart, chart_id=f"{sid}-chart", title=title),
                      el("figcaption", legend_text(rep.chart)), class_="chart-figure"))


def _checklist(rep: RunReport) -> Html:
    h = el("h3", "Checklist" + ("" if rep.checks_final else " (as it last stood: the run recorded no final verdict)"))
    if not rep.checks:
        return join(h, el("p", "No checks recorded.", class_="muted"))
    cols = el("colgroup", [el("col", class_=c) for c in ("c-num", "c-state", "c-check", "c-obs", "c-exp", "c-seen")])
    head = el("thead", el("tr", [el("th", t) for t in ("#", "state", "check and its query", "observed", "expected", "first seen")]))
    body = el("tbody", [el("tr",
                           el("td", str(c.number), class_="num"),
                           el("td", _check_state(c)),
                           el("td", el("div", c.description),
                              el("div", el("span", "query ", class_="muted"), el("code", c.query), class_="query") if c.query else None,
                              el("span", c.id, class_="cid mono")),
                           el("td", c.observed),
                           el("td", el("code", c.expected) if c.expected else "-"),
                           el("td", relative(c.first_seen) if c.first_seen is not None else "-", class_="small"),
                           class_=f"check row-{c.state}", data_check=c.id)
                        for c in rep.checks])
    note = el("p", "First seen: when the evidence first appeared, in seconds after the fault was armed; for an expectation "
                   "that must stay flat, when it broke.", class_="small muted")
    return join(h, el("table", cols, head, body, class_="checks"), note)


def _steps(rep: RunReport) -> Html:
    h = el("h3", "Trainer's steps")
    if not rep.steps and not rep.other_steps:
        return join(h, el("p", "The drill defines no steps.", class_="muted"))
    any_shown = any(s.shown for s in rep.steps) or bool(rep.other_steps)
    items = []
    for s in rep.steps:
        queries = [el("div", el("span", "PromQL ", class_="muted small"), el("code", s.promql)) if s.promql else None,
                   el("div", el("span", "trace query ", class_="muted small"), el("code", s.trace_query)) if s.trace_query else None]
        when = ("shown " + ", ".join(rep.since(w) for w in s.shown[:20]) + (" …" if len(s.shown) > 20 else "")) if s.shown else \
            ("not shown" if any_shown else "")
        items.append(el("li", el("div", s.say), queries, el("div", when, class_="when") if when else None))
    parts = [h, el("ol", items, class_="steps")]
    if rep.other_steps:
        parts.append(el("p", "Step changes the drill's steps do not name: " +
                        "; ".join(f"#{i + 1} {say!r} {rep.since(w)}" for w, i, say in rep.other_steps[:20]), class_="small"))
    if not any_shown:
        parts.append(el("p", "The run recorded no step changes: the steps are listed as the drill defines them.", class_="small muted"))
    return join(*parts)


def _fault(rep: RunReport) -> Html:
    h = el("h3", "Fault and environment")
    f = rep.fault
    if f is None:
        return join(h, el("p", "No fault recorded.", class_="muted"))
    start = rep.started

    def at_start(w: float | None) -> str:
        return relative(w - start, "the start") if w is not None and start is not None and not rep.started_from_id else utc(w)

    items: list[tuple[str, Any]] = [("fault", el("code", f.fault))]
    if f.not_armed is not None:
        items.append(("armed", join(el("strong", "NOT armed: ", class_="c-failed"), f.not_armed)))
    elif f.armed_at is not None:
        items.append(("armed", join(at_start(f.armed_at), " — proof: ", f.armed_evidence or "-")))
    else:
        items.append(("armed", "no proof recorded"))
    if f.reverted_at is not None:
        items.append(("reverted", join(rep.since(f.reverted_at), " — ", f.revert_evidence or "-",
                                       el("strong", " (still armed: the revert could not be proven)", class_="c-failed")
                                       if f.still_armed else None)))
    else:
        items.append(("reverted", "no revert recorded"))
    if f.clean is not None:
        mark = el("span", "✓ clean" if f.clean else "✗ not clean", class_="c-passed" if f.clean else "c-failed")
        problems = el("ul", [el("li", p) for p in f.problems]) if f.problems else None
        items.append(("after the run", join(mark, " — ", f.clean_summary or "", problems)))
    if rep.workers:
        items.append(("workers", join(*[el("div", el("code", name), f" {wid} — {how}" + (f", exit {code}" if code is not None else ""))
                                        for name, wid, how, code in rep.workers])))
    if rep.trigger_count:
        items.append(("trigger events", join(f"{rep.trigger_count}: ", el("code", ", ".join(rep.triggers)),
                                             " …" if rep.trigger_count > len(rep.triggers) else "")))
    return join(h, el("dl", [(el("dt", k), el("dd", v)) for k, v in items], class_="facts"))


def _notes(rep: RunReport) -> Html:
    h = el("h3", "Notes")
    items = [el("li", n) for n in rep.notes if not n.startswith("the recorded drill definition")]
    if rep.stop is not None:
        items.append(el("li", f"Stopped {rep.since(rep.stop[0])} by ", el("code", rep.stop[1])))
    items += [el("li", f"Trainer {rep.since(w)}: ", el("strong", action), f" — {detail}" if detail else "") for w, action, detail in rep.actions]
    if rep.screenshots_left_out:
        items.append(el("li", f"{rep.screenshots_left_out} more screenshot(s) in the run folder are not embedded."))
    if not items:
        return join(h, el("p", "No notes recorded.", class_="muted"))
    return join(h, el("ul", items))


def _value(v: Any) -> str:
    if isinstance(v, str):
        return clip(v, 500)
    return clip(json.dumps(v, ensure_ascii=False, default=str), 500)


def _training(rep: RunReport) -> Html:
    t = rep.training
    if t is None:
        return Html("")
    h = el("h3", "Training scores")
    if t.problem is not None:
        return join(h, el("p", t.problem, class_="c-failed"))
    rows = [el("tr", el("th", clip(k, 200), scope="row"), el("td", _value(v))) for k, v in t.items]
    return join(h, el("table", el("tbody", rows), class_="training") if rows else el("p", "Empty.", class_="muted"))


def _screenshots(rep: RunReport, sid: str) -> Html:
    h = el("h3", "Screenshots", id=f"{sid}-screenshots")
    if not rep.screenshots:
        return join(h, el("p", "No screenshot was taken (x on the run screen saves one).", class_="muted"))
    figures = []
    for s in rep.screenshots:
        if s.svg is None:
            figures.append(el("p", el("code", s.name), f": {s.problem}", class_="small"))
            continue
        data = base64.b64encode(s.svg.encode("utf-8")).decode("ascii")
        figures.append(el("figure", el("img", src=f"data:image/svg+xml;base64,{data}", alt=f"Dashboard screenshot {s.name}"),
                          el("figcaption", el("code", s.name), el("span", " (colours inverted for print)", class_="print-only"))))
    return join(h, el("div", figures, class_="shots"))
