"""Names from the observability contract (shared/CONTRACT.md).

Users already have Prometheus queries, Grafana panels and Jaeger searches built on these exact
strings, so they live in one place and are never spelled anywhere else.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

OBS_SCHEMA: Final = "labs-009-v2"
PREVIOUS_OBS_SCHEMA: Final = "labs-009-v1"
"""The schema before the fixes of runbook 3.1.2, emitted only by the stale-schema fault knob."""
DEFAULT_SERVICE_NAME: Final = "wordloom-search-outbox-worker"

Projection = Literal["search_index_to_elastic", "chronicle"]
Op = Literal["upsert", "delete"]
Result = Literal["ok", "retry", "failed", "partial", "noop"]
# Closed, low-cardinality: the only values a `reason` label may take.
Reason = Literal[
    "es_connect",
    "es_timeout",
    "es_429",
    "es_5xx",
    "es_4xx",
    "es_404",
    "es_409",
    # An event older than a delete of its entity that is already settled: settled as a noop in
    # Postgres without calling the engine (whose memory of the delete may have expired).
    "superseded",
    "db_error",
    "lease_lost",
    "invalid_payload",
    "unknown",
]
Status = Literal["pending", "processing", "done", "failed"]
FailureClass = Literal["429", "4xx", "5xx"]

PROJECTIONS: Final[tuple[str, ...]] = get_args(Projection)
OPS: Final[tuple[str, ...]] = get_args(Op)
RESULTS: Final[tuple[str, ...]] = get_args(Result)
REASONS: Final[tuple[str, ...]] = get_args(Reason)
FAILURE_CLASSES: Final[tuple[str, ...]] = get_args(FailureClass)

# Span names
SPAN_CLAIM: Final = "outbox.claim_batch"
SPAN_BATCH: Final = "projection.process_batch"
SPAN_EVENT: Final = "outbox.process"
SPAN_RECLAIM: Final = "outbox.reclaim"

# Span attribute keys that carry ids (the two trace pivots)
ATTR_CLAIM_BATCH_ID: Final = "wordloom.claim_batch_id"
ATTR_OUTBOX_EVENT_ID: Final = "wordloom.outbox_event_id"
ATTR_ENTITY_ID: Final = "wordloom.entity_id"
ATTR_WORKER_ID: Final = "wordloom.worker_id"
ATTR_OBS_SCHEMA: Final = "wordloom.obs_schema"
ATTR_429_PREFIX: Final = "wordloom.labs.es_429."

# The previous schema's keys (runbook 3.1.3, manual-test/2 and /3): `wordloom.outbox.id` held the
# entity id, so a search by a real outbox row id found nothing. Never emitted by a current worker.
ATTR_OLD_OUTBOX_ID: Final = "wordloom.outbox.id"
ATTR_OLD_ENTITY_ID: Final = "wordloom.entity.id"
