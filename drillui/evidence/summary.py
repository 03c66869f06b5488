"""`_summary.md`: the story of one run, readable without the terminal that ran it.

Written from the snapshot's own files (recipe, fault proof, timeline, ids, verdict), so it says
nothing the evidence does not show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drillui.evidence.snapshot import Snapshot
from drillui.evidence.verdict import Verdict


def _at(ts: float | None, t0: float | None) -> str:
    if ts is None:
        return "-"
    clock = datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")
    return f"{clock} (+{ts - t0:.1f}s)" if t0 is not None else clock


def write_summary(snap: Snapshot, verdict: Verdict) -> None:
    recipe: dict[str, Any] = snap.read_json("_recipe.json", {})
    fault: dict[str, Any] = snap.read_json("_fault.json", {})
    timeline: dict[str, Any] = snap.read_json("_timeline.json", {})
    ids: dict[str, Any] = snap.read_json("_ids.json", {})
    drill = recipe.get("drill", {})
    t0 = timeline.get("started_at")
    lines = [
        f"# Drill {recipe.get('letter', '?')} `{recipe.get('scenario')}`: {recipe.get('title', '')}",
        "",
        f"**Verdict: {'PASS' if verdict.passed else 'FAIL'}** — run `{snap.run_id}`, "
        f"{verdict.duration_seconds or 0:.1f}s, runbook section {recipe.get('runbook', '?')}.",
        "",
        drill.get("goal", ""),
        "",
        "## What was done",
        "",
        f"- Fault `{drill.get('fault', {}).get('type')}`: armed at {_at(timeline.get('armed_at'), t0)} — "
        f"{fault.get('arm', {}).get('evidence', 'no proof recorded')}",
        f"- Reverted at {_at(timeline.get('reverted_at'), t0)} — {fault.get('revert_proof', {}).get('evidence', '-')}",
        f"- Environment after the run: {fault.get('revert', {}).get('evidence', '-')}",
        f"- Workers: {', '.join(w['worker_id'] for w in recipe.get('workers', [])) or '-'}",
        f"- Trigger events (outbox_event_id): {', '.join(ids.get('outbox_event_ids', [])[:8]) or '-'}",
        f"- Claim batches that carried them: {', '.join(ids.get('claim_batch_ids', [])[:8]) or '-'}",
        "",
        "## Evidence",
        "",
        "| | check | expected | observed | query |",
        "|---|---|---|---|---|",
    ]
    for c in verdict.checks:
        mark = "✅" if c.passed else "❌"
        query = f"`{c.query}`" if c.query else ""
        lines.append(f"| {mark} | {c.description} | {c.expected} | {c.observed} | {query} |".replace("\n", " "))
    if verdict.notes:
        lines += ["", "## Figures", ""] + [f"- {n}" for n in verdict.notes]
    lines += [
        "",
        "## Files",
        "",
        "- `_metrics/`: raw `/metrics` before, after (and recovered) per worker; `samples.jsonl` if a peak was checked",
        "- `_logs/`: every JSON log line of every worker",
        "- `_exports/`: trace query results as the backend returned them; `_queries.json` says which API answered",
        "- `_progress.log`: the run's narration; `_result.json`: the verdict as data",
    ]
    (snap.path / "_summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
