"""The matching rules every check uses: which span, which log line counts as evidence.

Kept apart so the fold (`state`) and the evaluator (`checks`) apply exactly the same rule: a value
is compared as text (JSON spelling for booleans), a span must carry every attribute of the check,
a log line every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from drillui.scenarios import LogCheck, SpanMatch, TraceCheck
from drillui.sources.logs import LogRecord
from drillui.sources.traces import Span

# Pivot values queried per trace check: a drill with a hundred events must not turn each poll
# into a hundred trace queries.
MAX_PIVOTS: Final = 5

PIVOT_ATTRIBUTES: Final[dict[str, str]] = {
    "outbox_event_id": "wordloom.outbox_event_id",
    "claim_batch_id": "wordloom.claim_batch_id",
    "entity_id": "wordloom.entity_id",
    "obs_schema": "wordloom.obs_schema",
}


def as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def span_matches(span: Span, check: TraceCheck | SpanMatch) -> bool:
    if span.operation != check.operation:
        return False
    for key, want in check.attributes.items():
        got = span.attributes.get(key)
        if got is None or as_text(got) != as_text(want):
            return False
    return check.status is None or span.status == check.status


def span_text(check: TraceCheck | SpanMatch) -> str:
    """`result=ok, status=ERROR`: what a check asks of a span, for its id and description."""
    parts = [f"{k}={as_text(v)}" for k, v in check.attributes.items()]
    if check.status is not None and isinstance(check, SpanMatch):
        parts.append(f"status={check.status}")
    return ", ".join(parts)


def log_matches(check: LogCheck, fields: Mapping[str, Any]) -> bool:
    """The line is the check's event with its fields (whether it carries `require` is apart)."""
    if fields.get("event") != check.event:
        return False
    return all(as_text(fields.get(k)) == as_text(v) for k, v in check.fields.items())


def log_complete(check: LogCheck, record: LogRecord) -> bool:
    fields = record.fields
    return all(k in fields for k in check.require) and not any(k in fields for k in check.absent)


def trace_check_name(check: TraceCheck) -> str:
    return f"{check.operation}-by-{check.by}"


def pivot_values(values: list[str], which: str) -> list[str]:
    if which == "first":
        values = values[:1]
    elif which == "last":
        values = values[-1:]
    return values[:MAX_PIVOTS]
