"""Which observability schema the worker's spans and logs speak.

A current worker speaks `labs-009-v2` (CONTRACT.md). The fault knob `OUTBOX_EXPERIMENT_OBS_SCHEMA`
makes it speak the previous schema instead, as a worker built from old code (or never restarted)
does, for the drill of runbook 3.1.3 manual-test/3: the span keys of before the fixes of 3.1.2.
What the previous schema got wrong, on purpose here:
- `wordloom.outbox.id` holds the *entity* id (manual-test/2), `wordloom.entity.id` too;
- there is no `wordloom.outbox_event_id` and no `wordloom.claim_batch_id` (both added by the fix),
  so the runbook's two pivots find nothing;
- `wordloom.obs_schema` says `labs-009-v1`, which is how a trainee tells the stale worker apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from worker.contract import (
    ATTR_CLAIM_BATCH_ID,
    ATTR_ENTITY_ID,
    ATTR_OBS_SCHEMA,
    ATTR_OLD_ENTITY_ID,
    ATTR_OLD_OUTBOX_ID,
    ATTR_OUTBOX_EVENT_ID,
    OBS_SCHEMA,
    PREVIOUS_OBS_SCHEMA,
)

SCHEMAS: Final = (OBS_SCHEMA, PREVIOUS_OBS_SCHEMA)


class SpanSchema:
    """Rewrites span attributes for the schema the worker speaks (the current one: unchanged)."""

    def __init__(self, name: str = OBS_SCHEMA) -> None:
        if name not in SCHEMAS:
            raise ValueError(f"unknown observability schema {name!r}; known: {', '.join(SCHEMAS)}")
        self.name = name

    @property
    def stale(self) -> bool:
        return self.name != OBS_SCHEMA

    def attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(attrs)
        if ATTR_OBS_SCHEMA in out:
            out[ATTR_OBS_SCHEMA] = self.name
        if not self.stale:
            return out
        out.pop(ATTR_OUTBOX_EVENT_ID, None)
        out.pop(ATTR_CLAIM_BATCH_ID, None)
        entity = out.pop(ATTR_ENTITY_ID, None)
        if entity is not None:
            out[ATTR_OLD_OUTBOX_ID] = entity
            out[ATTR_OLD_ENTITY_ID] = entity
        return out


CURRENT: Final = SpanSchema()
