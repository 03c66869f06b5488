-- The worker's tables, created idempotently at start (CONTRACT.md "Tables").
-- A producer writes only id, projection, op, entity_id, payload and optionally correlation_id:
-- every other column defaults to "pending and due now".

CREATE SEQUENCE IF NOT EXISTS outbox_seq;

CREATE TABLE IF NOT EXISTS outbox (
    id              uuid PRIMARY KEY,
    -- Monotonic, assigned at insert: the document's external version in the engine, so a
    -- stale or duplicated write is rejected by the engine instead of applied.
    seq             bigint      NOT NULL DEFAULT nextval('outbox_seq') UNIQUE,
    projection      text        NOT NULL,
    op              text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    entity_id       uuid        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    correlation_id  text,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    claimed_by      text,
    claim_batch_id  uuid,
    last_reason     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);

-- The claim reads only these two partial indexes: done rows, however many, are never scanned.
CREATE INDEX IF NOT EXISTS outbox_due_idx
    ON outbox (projection, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_lease_idx
    ON outbox (projection, lease_until) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS outbox_failed_idx
    ON outbox (projection, created_at) WHERE status = 'failed';
-- The claim asks, for each row it takes, "is a newer delete of this entity already done?"
-- (then the row is superseded: the engine may have forgotten that delete, see queries.sql).
-- Only done deletes are in this index, so the probe is one short index lookup.
CREATE INDEX IF NOT EXISTS outbox_done_delete_idx
    ON outbox (projection, entity_id, seq) WHERE status = 'done' AND op = 'delete';
-- Gauges: the oldest pending row is the first entry, and the capped lag count reads at most
-- GAUGE_COUNT_CAP entries: both independent of the backlog.
CREATE INDEX IF NOT EXISTS outbox_pending_age_idx
    ON outbox (projection, created_at) WHERE status = 'pending';

-- The last gauge reading per projection. One worker at a time reads the outbox (under an
-- advisory lock) and writes the result here; the others export this row instead of scanning.
CREATE TABLE IF NOT EXISTS outbox_gauges (
    projection        text PRIMARY KEY,
    lag               bigint      NOT NULL,
    oldest_created_at timestamptz,
    stuck             bigint      NOT NULL,
    read_at           timestamptz NOT NULL,
    read_by           text        NOT NULL
);

CREATE TABLE IF NOT EXISTS chronicle_events (
    id          uuid PRIMARY KEY,
    entity_id   uuid        NOT NULL,
    kind        text        NOT NULL,
    title       text        NOT NULL,
    body        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS chronicle_entries (
    event_id           uuid PRIMARY KEY,
    entity_id          uuid        NOT NULL,
    projection_version integer     NOT NULL,
    summary            text        NOT NULL,
    details            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- outbox.seq of the event that wrote this row: an older event never overwrites a newer one.
    source_seq         bigint      NOT NULL,
    projected_at       timestamptz NOT NULL DEFAULT now()
);

-- A chronicle delete leaves its source_seq here, so an older upsert that arrives later (a
-- retry, a stalled worker) cannot bring the entry back: the entry table alone has no memory
-- of a row it no longer holds.
CREATE TABLE IF NOT EXISTS chronicle_tombstones (
    event_id   uuid PRIMARY KEY,
    source_seq bigint      NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
