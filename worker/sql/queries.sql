-- Every statement the worker runs, as named blocks (`-- name: x`), loaded once by worker.db.
-- Ownership rule for every write after the claim: a row is changed only while it is still
-- `processing` under this worker's claimed_by AND claim_batch_id AND its lease has not ended.
-- A worker whose lease ran out therefore cannot complete its rows (whether or not another
-- worker took them back yet); its write matches nothing and is counted as an owner-mismatch
-- skip (`lease_lost`), and the row is applied again under a fresh lease.
--
-- Why the lease must hold at settle time, not only the name: it bounds how long before its
-- settle a write may have reached the engine (at most one lease). The supersede fence below
-- relies on that bound (see worker/relay.py, "Latest effect per entity").

-- name: claim_batch
-- One statement: take expired leases back and claim due rows, atomically, for one batch.
WITH expired AS (
    -- A lease that ended means its owner died or stalled. These come first: they are the
    -- oldest work in the table. SKIP LOCKED: two reclaimers never wait on each other.
    SELECT id,
           true           AS reclaim,
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
    SELECT id, false, NULL::text, NULL::timestamptz, NULL::uuid
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
-- Attempts are counted here, at claim time, so an attempt that ends in a dead worker still
-- counts. A reclaimed row that has already used every attempt is not claimed again: its claims
-- keep ending without a settle (a payload that kills its worker, say), so it is failed here
-- with `lease_lost` instead of crashing one worker after another forever.
UPDATE outbox AS o
SET status         = CASE WHEN p.reclaim AND o.attempts >= %(max_attempts)s THEN 'failed' ELSE 'processing' END,
    claimed_by     = %(worker_id)s,
    claim_batch_id = %(claim_batch_id)s,
    lease_until    = CASE WHEN p.reclaim AND o.attempts >= %(max_attempts)s THEN NULL
                          ELSE now() + make_interval(secs => %(lease_seconds)s) END,
    attempts       = CASE WHEN p.reclaim AND o.attempts >= %(max_attempts)s THEN o.attempts ELSE o.attempts + 1 END,
    last_reason    = CASE WHEN p.reclaim AND o.attempts >= %(max_attempts)s THEN 'lease_lost' ELSE o.last_reason END,
    last_error     = CASE WHEN p.reclaim AND o.attempts >= %(max_attempts)s
                          THEN format('claimed %%s time(s) and no claim was settled: each worker died or stalled past its lease', o.attempts)
                          ELSE o.last_error END
FROM picked AS p
-- The ANY(ARRAY(...)) repeats the join as an index condition: without it, from a few hundred
-- rows on, the planner may hash-join `picked` against a sequential scan of the whole table.
WHERE o.id = p.id AND o.id = ANY(ARRAY(SELECT id FROM picked))
-- The columns, in this order, are worker.db.OutboxRow's first fields.
RETURNING o.id, o.seq, o.op, o.entity_id,
          -- As text: checked row by row in Python, so one payload that cannot be decoded
          -- (nested too deep, say) fails alone instead of failing the whole claim.
          CASE WHEN o.status = 'failed' THEN NULL ELSE o.payload::text END AS payload,
          o.correlation_id, o.attempts,
          p.prev_owner, p.prev_lease_until, p.prev_claim_batch_id,
          o.status = 'failed' AS exhausted,
          -- Superseded: a newer delete of the same entity is already done. The engine may have
          -- forgotten that delete (its tombstone expires, `index.gc_deletes`), so sending this
          -- older write could bring the document back; it is settled as a noop instead. Only
          -- a newer *delete* counts: a newer upsert leaves a document whose external version
          -- rejects this write for good (409), as drill G shows.
          (o.status = 'processing' AND EXISTS (
              SELECT 1 FROM outbox AS n
              WHERE n.projection = o.projection AND n.entity_id = o.entity_id
                AND n.status = 'done' AND n.op = 'delete' AND n.seq > o.seq)) AS superseded;

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
RETURNING o.id, o.seq, o.op, o.entity_id, o.payload::text AS payload, o.correlation_id, o.attempts,
          NULL::text AS prev_owner, NULL::timestamptz AS prev_lease_until,
          NULL::uuid AS prev_claim_batch_id,
          false AS exhausted,
          EXISTS (
              SELECT 1 FROM outbox AS n
              WHERE n.projection = o.projection AND n.entity_id = o.entity_id
                AND n.status = 'done' AND n.op = 'delete' AND n.seq > o.seq) AS superseded;

-- name: complete_owned
-- `o.id = ANY(ids)` repeats the join as a primary-key condition, so each settle looks its rows
-- up by key instead of scanning every row in flight (the lease index) or the table.
UPDATE outbox AS o
SET status = 'done', processed_at = now(), lease_until = NULL,
    last_reason = r.reason, last_error = NULL
FROM unnest(%(ids)s::uuid[], %(reasons)s::text[]) AS r(id, reason)
WHERE o.id = r.id AND o.id = ANY(%(ids)s::uuid[]) AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
  AND o.lease_until > now()
RETURNING o.id;

-- name: reschedule_owned
UPDATE outbox AS o
SET status = 'pending', lease_until = NULL,
    next_attempt_at = now() + make_interval(secs => r.delay),
    last_reason = r.reason, last_error = r.error
FROM unnest(%(ids)s::uuid[], %(delays)s::float8[], %(reasons)s::text[], %(errors)s::text[])
     AS r(id, delay, reason, error)
WHERE o.id = r.id AND o.id = ANY(%(ids)s::uuid[]) AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
  AND o.lease_until > now()
RETURNING o.id;

-- name: fail_owned
UPDATE outbox AS o
SET status = 'failed', lease_until = NULL, last_reason = r.reason, last_error = r.error
FROM unnest(%(ids)s::uuid[], %(reasons)s::text[], %(errors)s::text[]) AS r(id, reason, error)
WHERE o.id = r.id AND o.id = ANY(%(ids)s::uuid[]) AND o.status = 'processing'
  AND o.claimed_by = %(worker_id)s AND o.claim_batch_id = %(claim_batch_id)s
  AND o.lease_until > now()
RETURNING o.id;

-- name: release_owned
-- A worker gives back rows it has not sent (it is stopping, or their lease would end before a
-- write could finish): the attempt never happened. No lease check: giving back is always safe.
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

-- name: gauges_cached
-- The last reading of any worker (see outbox_gauges in schema.sql): one primary-key lookup.
SELECT lag, stuck,
       coalesce(extract(epoch FROM now() - oldest_created_at), 0)::float8 AS oldest_age,
       extract(epoch FROM now() - read_at)::float8 AS staleness
FROM outbox_gauges
WHERE projection = %(projection)s;

-- name: gauges_read
-- Read the outbox and record the reading, by one worker per projection at a time: the
-- advisory lock is tried, never waited for, and a reading younger than `fresh` seconds is
-- not repeated; a worker that gets no row back keeps the cached values.
-- Each figure reads one partial index and at most `cap` entries, so the cost does not grow
-- with the backlog: lag and stuck are exact up to the cap and saturate at it beyond.
WITH leader AS (
    SELECT pg_try_advisory_xact_lock(%(lock_key)s, hashtext(%(projection)s)) AS got
), reading AS (
    SELECT
        -- ORDER BY makes it an index(-only) scan of the partial index: a plain LIMIT lets the
        -- planner pick a sequential scan that, on a table bigger than shared_buffers, reads
        -- and re-dirties heap pages on every call.
        (SELECT count(*) FROM (SELECT 1 FROM outbox
           WHERE projection = %(projection)s AND status = 'pending'
           ORDER BY created_at LIMIT %(cap)s) AS p) AS lag,
        (SELECT min(created_at) FROM outbox
           WHERE projection = %(projection)s AND status = 'pending') AS oldest_created_at,
        (SELECT count(*) FROM (SELECT 1 FROM outbox
           WHERE projection = %(projection)s AND status = 'processing' AND lease_until < now()
           ORDER BY lease_until LIMIT %(cap)s) AS s) AS stuck
    FROM leader
    WHERE leader.got AND NOT EXISTS (
        SELECT 1 FROM outbox_gauges
        WHERE projection = %(projection)s AND read_at > now() - make_interval(secs => %(fresh)s))
)
INSERT INTO outbox_gauges AS g (projection, lag, oldest_created_at, stuck, read_at, read_by)
SELECT %(projection)s, lag, oldest_created_at, stuck, now(), %(worker_id)s FROM reading
ON CONFLICT (projection) DO UPDATE
SET lag = EXCLUDED.lag, oldest_created_at = EXCLUDED.oldest_created_at, stuck = EXCLUDED.stuck,
    read_at = EXCLUDED.read_at, read_by = EXCLUDED.read_by
RETURNING g.lag, g.stuck, coalesce(extract(epoch FROM now() - g.oldest_created_at), 0)::float8 AS oldest_age;

-- name: chronicle_source
SELECT id, entity_id, kind, title, body, occurred_at
FROM chronicle_events
WHERE id = %(id)s;

-- name: chronicle_lock_entry
-- Serialises the writes of one entry (the upsert below against a concurrent delete): without
-- it, an upsert could check for a tombstone just before a delete commits one.
SELECT pg_advisory_xact_lock(%(lock_key)s, hashtext(%(event_id)s::text));

-- name: chronicle_upsert_entry
-- source_seq guard: a stale event (lower outbox seq) never overwrites a newer projection,
-- and never brings back an entry a newer delete removed (its tombstone).
INSERT INTO chronicle_entries (event_id, entity_id, projection_version, summary, details, source_seq)
SELECT %(event_id)s::uuid, %(entity_id)s::uuid, %(projection_version)s::int, %(summary)s::text,
       %(details)s::jsonb, %(source_seq)s::bigint
WHERE NOT EXISTS (
    SELECT 1 FROM chronicle_tombstones AS t
    WHERE t.event_id = %(event_id)s::uuid AND t.source_seq > %(source_seq)s::bigint)
ON CONFLICT (event_id) DO UPDATE
SET entity_id = EXCLUDED.entity_id, projection_version = EXCLUDED.projection_version,
    summary = EXCLUDED.summary, details = EXCLUDED.details,
    source_seq = EXCLUDED.source_seq, projected_at = now()
WHERE chronicle_entries.source_seq < EXCLUDED.source_seq
RETURNING event_id;

-- name: chronicle_delete_entry
WITH gone AS (
    DELETE FROM chronicle_entries
    WHERE event_id = %(event_id)s::uuid AND source_seq < %(source_seq)s::bigint
    RETURNING event_id
), mark AS (
    INSERT INTO chronicle_tombstones (event_id, source_seq)
    VALUES (%(event_id)s::uuid, %(source_seq)s::bigint)
    ON CONFLICT (event_id) DO UPDATE
    SET source_seq = EXCLUDED.source_seq, deleted_at = now()
    WHERE chronicle_tombstones.source_seq < EXCLUDED.source_seq
)
SELECT count(*) AS deleted FROM gone;

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
