"""`_summary.md`: the story of one run, readable without the terminal that ran it.

Written once, at the end of the run, from the run's own state (folded from its events) and its
verdict, so it says nothing the evidence does not show.
"""

from __future__ import annotations

from datetime import UTC, datetime

from drillui.evidence.checks import Verdict
from drillui.evidence.state import RunState
from drillui.record.snapshot import SUMMARY, Snapshot

MARKS = {"passed": "✅", "failed": "❌"}
STATE_WORDS = {"passed": "PASS", "failed": "FAIL", "stopped": "STOPPED", "error": "ERROR"}


def _at(ts: float | None, t0: float | None) -> str:
    if ts is None:
        return "-"
    clock = datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")
    return f"{clock} (+{ts - t0:.1f}s)" if t0 is not None else clock


def summary_text(verdict: Verdict, state: RunState) -> str:
    drill = state.drill
    t0 = state.started_wall
    word = STATE_WORDS.get(verdict.state, verdict.state.upper())
    title = f"# Drill {drill.letter} `{drill.id}`: {drill.title}" if drill else f"# Run {verdict.run_id}"
    lines = [
        title,
        "",
        f"**{word}** — run `{verdict.run_id}`, {verdict.duration_seconds or 0:.1f}s"
        + (f", runbook section {drill.runbook}" if drill else "") + ".",
        "",
        f"Why: {verdict.why}" if verdict.why else "",
        "",
        drill.goal if drill else "",
        "",
        "## What was done",
        "",
        f"- Fault `{drill.fault.type if drill else '?'}`: "
        + (f"armed at {_at(state.armed_at, t0)} — {state.fault_evidence}" if state.armed_at is not None
           else f"NOT armed — {state.fault_not_armed}" if state.fault_not_armed else "never armed"),
        f"- Reverted at {_at(state.reverted_at, t0)} — {state.revert_evidence or '-'}",
    ]
    if state.stop is not None:
        lines.append(f"- Stopped at {_at(state.stop.wall, t0)} by {state.stop.how}")
    if state.rows_settled is not None:
        lines.append(f"- The run removed {len(state.rows_settled.removed)} of its own unsettled trigger row(s)")
    lines += [
        f"- Environment after the run: {state.clean.summary if state.clean else '-'}",
        f"- Workers: {', '.join(w.worker_id for w in state.workers.values()) or '-'}",
        f"- Trigger events (outbox_event_id): {', '.join(state.outbox_event_ids.list()[:8]) or '-'}",
        f"- Claim batches that carried them: {', '.join(state.claim_batch_ids.list()[:8]) or '-'}",
        "",
        "## Evidence",
        "",
        "| | check | expected | observed | query |",
        "|---|---|---|---|---|",
    ]
    for c in verdict.checks:
        query = f"`{c.query}`" if c.query else ""
        lines.append(f"| {MARKS.get(c.state, '·')} | {c.description} | {c.expected} | {c.observed} | {query} |".replace("\n", " "))
    if verdict.notes:
        lines += ["", "## Figures", ""] + [f"- {n}" for n in verdict.notes]
    lines += [
        "",
        "## Files",
        "",
        "- `_events.jsonl`: every event of the run as it happened; `drillui replay` plays it back",
        "- `_metrics/`: raw `/metrics` before, after (and recovered) per worker",
        "- `_logs/`: every JSON log line of every worker",
        "- `_exports/`: trace query results as the backend returned them; `_queries.json` says which API answered",
        "- `_progress.log`: the run's narration; `_result.json`: the end state and the checks as data",
        "- `_manifest.json`: sha256 of every file; `drillui verify` names any file changed since",
    ]
    return "\n".join(lines) + "\n"


def write_summary(snap: Snapshot, verdict: Verdict, state: RunState) -> None:
    snap.write_text(SUMMARY, summary_text(verdict, state))
