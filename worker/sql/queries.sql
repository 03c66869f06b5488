-- Every statement the worker runs, as named blocks (`-- name: x`), loaded once by worker.db.
-- Ownership rule for every write after the claim: a row is changed only while it is still
-- `processing` under this worker's claimed_by AND claim_batch_id. A worker whose lease ran out
-- and whose rows were taken back therefore cannot complete them; its write matches nothing
-- and is counted as an owner-mismatch skip.

-- name: claim_batch
-- One statement: take expired leases back and claim due rows, atomically, for one batch.
WITH expired AS (
    -- A lease that ended means its owner died or stalled. These come first: they are the
    -- oldest work in the table. SKIP LOCKED: two reclaimers never wait on each other.
    SELECT id,
           claimed_by     AS prev_owner,
           lease_until    AS prev_lease_until,
           claim_batch_id AS prev_claim_batch_id
    FROM outbox
    WHERE projection = %(projection)s AND status = 'processing' AND lease_until < now()
    ORDER BY lease_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS (
    -- Served by the partial index on pending rows: done rows are never read, so the claim
    -- stays fast however long the table grows.
    SELECT id, NULL::text, NULL::timestamptz, NULL::uuid
    FROM outbox
    WHERE projection = %(projection)s AND status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT * FROM expired
    UNION ALL
    SELECT * FROM due
    LIMIT %(limit)s
)
UPDATE outbox AS o
SET status = 'processing',
    claimed_by = %(worker_id)s,
    claim_batch_id = %(claim_batch_id)s,
    lease_until = now() + make_interval(secs => %(lease_seconds)s),
    attempts = o.attempts + 1
FROM picked AS p
WHERE o.id = p.id
RETURNING o.id, o.seq, o.projection, o.op, o.entity_id, o.payload, o.correlation_id,
          o.attempts, o.created_at, o.lease_until,
          p.prev_owner, p.prev_lease_until, p.prev_claim_batch_id;

-- name: select_due_unlocked
-- Fault knob OUTBOX_EXPERIMENT_BREAK_CLAIM_SLEEP only: the first half of a deliberately
-- non-atomic claim. No lock is taken, so two workers see the same rows.
SELECT id
FROM outbox
WHERE projection = %(projection)s AND status = 'pending' AND next_attempt_at <= now()
ORDER BY next_attempt_at, seq
LIMIT %(limit)s;

-- name: claim_ids_unchecked
-- Second half of the broken claim: overwrites another worker's fresh claim (that is the
-- point of the drill) but never resurrects a row that is already done or failed.
UPDATE outbox AS o
SET status = 'processing',
    claimed_by = %(worker_id)s,
    claim_batch_id = %(claim_batch_id)s,
    lease_until = now() + make_interval(secs => %(lease_seconds)s),
    attempts = o.attempts + 1
WHERE o.id = ANY(%(ids)s::uuid[]) AND o.status IN ('pending', 'processing')
RETURNING o.id, o.seq, o.projection, o.op, o.entity_id, o.payload, o.correlation_id,
          o.attempts, o.created_at, o.lease_until,
          NULL::text AS prev_owner, NULL::timestamptz AS prev_lease_until,
          NULL::uuid AS prev_claim_batch_id;

-- name: complete_owned
UPDATE outbox AS o
SET status = 'done', processed_at = now(), lease_until = NULL,
    last_reason = r.reason, last_error = NULL
FROM unnest(%(ids)s::uuid[], %(reasons)s::text[]) AS r(id, reason)
WHERE o.id = r.id AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
RETURNING o.id;

-- name: reschedule_owned
UPDATE outbox AS o
SET status = 'pending', lease_until = NULL,
    next_attempt_at = now() + make_interval(secs => r.delay),
    last_reason = r.reason, last_error = r.error
FROM unnest(%(ids)s::uuid[], %(delays)s::float8[], %(reasons)s::text[], %(errors)s::text[])
     AS r(id, delay, reason, error)
WHERE o.id = r.id AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
RETURNING o.id;

-- name: fail_owned
UPDATE outbox AS o
SET status = 'failed', lease_until = NULL, last_reason = r.reason, last_error = r.error
FROM unnest(%(ids)s::uuid[], %(reasons)s::text[], %(errors)s::text[]) AS r(id, reason, error)
WHERE o.id = r.id AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
RETURNING o.id;

-- name: release_owned
-- A stopping worker gives back a batch it has not started: the attempt never happened.
UPDATE outbox AS o
SET status = 'pending', lease_until = NULL, attempts = greatest(o.attempts - 1, 0)
WHERE o.id = ANY(%(ids)s::uuid[]) AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
RETURNING o.id;

-- name: lock_owned
-- Chronicle writes its entry and completes the row in one transaction; this lock makes the
-- ownership check and the write one atomic step.
SELECT id
FROM outbox
WHERE id = %(id)s AND status = 'processing'
  AND claimed_by = %(worker_id)s AND claim_batch_id = %(claim_batch_id)s
FOR UPDATE;

-- name: gauges
-- Each subquery reads one partial index (pending or processing rows), never the done rows.
SELECT
    (SELECT count(*) FROM outbox
      WHERE projection = %(projection)s AND status = 'pending') AS lag,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox
      WHERE projection = %(projection)s AND status = 'pending') AS oldest_age,
    (SELECT count(*) FROM outbox
      WHERE projection = %(projection)s AND status = 'processing' AND lease_until < now()) AS stuck;

-- name: chronicle_source
SELECT id, entity_id, kind, title, body, occurred_at
FROM chronicle_events
WHERE id = %(id)s;

-- name: chronicle_upsert_entry
-- source_seq guard: a stale event (lower outbox seq) never overwrites a newer projection.
INSERT INTO chronicle_entries (event_id, entity_id, projection_version, summary, details, source_seq)
VALUES (%(event_id)s, %(entity_id)s, %(projection_version)s, %(summary)s, %(details)s, %(source_seq)s)
ON CONFLICT (event_id) DO UPDATE
SET entity_id = EXCLUDED.entity_id, projection_version = EXCLUDED.projection_version,
    summary = EXCLUDED.summary, details = EXCLUDED.details,
    source_seq = EXCLUDED.source_seq, projected_at = now()
WHERE chronicle_entries.source_seq < EXCLUDED.source_seq
RETURNING event_id;

-- name: chronicle_delete_entry
DELETE FROM chronicle_entries
WHERE event_id = %(event_id)s AND source_seq < %(source_seq)s
RETURNING event_id;

-- name: list_failed
SELECT id, projection, op, entity_id, last_reason, last_error, attempts, created_at,
       extract(epoch FROM now() - created_at) AS age_seconds
FROM outbox
WHERE status = 'failed' AND (%(projection)s::text IS NULL OR projection = %(projection)s)
ORDER BY created_at
LIMIT %(limit)s;

-- name: requeue_failed
-- The failure-management loop: a person fixed the cause and sends the rows round again.
UPDATE outbox
SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL,
    claimed_by = NULL, claim_batch_id = NULL
WHERE status = 'failed' AND (%(all)s OR id = ANY(%(ids)s::uuid[]))
RETURNING id;
