"""`search_index_to_elastic`: outbox rows -> documents in an Elasticsearch/OpenSearch index.

The document `_id` is the row's entity_id, and every write (index or delete) carries the row's
outbox sequence as an external version. The engine then rejects any write older than what it
holds (409) and a delete of a missing document answers 404: both are idempotent noops, so
duplicates, retries and out-of-order deliveries converge on the latest event per entity.

Deletes use `version_type=external_gte`: the same delete applied again (a redelivery after a
crash) is then accepted instead of answering 409, and that renews the engine's tombstone of it.
The engine forgets a delete `index.gc_deletes` after it was last applied, and the relay's fence
(worker/relay.py, "Latest effect per entity") counts on the tombstone of the delivery that was
settled, not of an earlier one.

Every request gets a time budget: `deadline` is the end of the window in which the claim's
writes may land (see the relay), and a request that could not finish inside it is not sent (its
rows come back as None: the relay gives them back unattempted). `_bulk` bodies are split so that
none exceeds `max_bulk_bytes`; a single document bigger than that fails alone, and a request the
engine still refuses as too large (413) is halved until it fits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import httpx

from worker.classify import Outcome, classify_bulk_item, classify_exception, classify_response, failure_class
from worker.db import OutboxRow
from worker.faults import Es429Injector
from worker.settings import DEFAULT_BULK_MAX_BYTES

MIN_REQUEST_SECONDS: Final = 0.05
"""A request with less time than this left in its window is not sent at all."""
_TOO_LARGE: Final = 413

# Successful `_bulk` items, by status: 500 items a batch, most of them ok, need no fresh object.
_OK_BY_STATUS: dict[int, Outcome] = {}


def request_budget(timeout: float, deadline: float | None, now: float | None = None) -> float | None:
    """Per-phase timeout for a request that must land before `deadline` (monotonic), or None.

    A request lands once its pool wait, connect and body write are done, each bounded by the
    timeout, so each phase gets at most a third of what is left.
    """
    if deadline is None:
        return timeout
    left = deadline - (time.monotonic() if now is None else now)
    budget = min(timeout, left / 3)
    return budget if budget >= MIN_REQUEST_SECONDS else None


class SearchProjection:
    name = "search_index_to_elastic"

    def __init__(
        self,
        *,
        es_url: str,
        index: str,
        timeout: float,
        bulk: bool,
        injector: Es429Injector,
        on_bulk: Callable[[float, str, list[Outcome]], None] | None = None,
        client: httpx.Client | None = None,
        max_bulk_bytes: int = DEFAULT_BULK_MAX_BYTES,
    ) -> None:
        self.index = index
        self.bulk = bulk
        self.timeout = timeout
        self.injector = injector
        self.on_bulk = on_bulk
        self.max_bulk_bytes = max_bulk_bytes
        self.client = client or httpx.Client(base_url=es_url, timeout=timeout)
        self.last_injected = False

    @property
    def batched(self) -> bool:
        return self.bulk

    def event_attributes(self, row: OutboxRow) -> dict[str, Any]:
        if not self.injector.enabled:
            return {}
        return self.injector.span_attributes()

    def _doc_path(self, row: OutboxRow) -> str:
        return f"/{self.index}/_doc/{row.entity_text or row.entity_id}"

    @staticmethod
    def _version(row: OutboxRow) -> dict[str, str]:
        return {"version": str(row.seq), "version_type": "external_gte" if row.op == "delete" else "external"}

    @staticmethod
    def invalid(row: OutboxRow) -> Outcome | None:
        """The invalid_payload failure of a row that cannot become a document, else None."""
        if row.op != "upsert":
            return None
        if row.payload_error is not None:
            return Outcome("failed", "invalid_payload", error=row.payload_error, error_type="InvalidPayload")
        if not row.payload_is_object:
            kind = type(row.payload).__name__ if row.raw_payload is not None else "nothing"
            return Outcome("failed", "invalid_payload", error=f"payload must be a JSON object, got {kind}", error_type="InvalidPayload")
        return None

    def _source(self, row: OutboxRow) -> str:
        # The JSON text Postgres gave us, sent as it is: no decode-encode round trip per row.
        return row.raw_payload or "{}"

    # ---- one request per event -----------------------------------------------------------------

    def apply_one(self, row: OutboxRow, *, deadline: float | None = None) -> Outcome | None:
        self.last_injected = False
        bad = self.invalid(row)
        if bad is not None:
            return bad
        budget = request_budget(self.timeout, deadline)
        if budget is None:
            return None
        if self.injector.should_inject(row.op):
            self.last_injected = True
            return Outcome("retry", "es_429", status_code=429, error="Injected 429 (fault injection)", error_type="HTTPStatusError")
        try:
            if row.op == "upsert":
                resp = self.client.put(
                    self._doc_path(row),
                    params=self._version(row),
                    content=self._source(row).encode(),
                    headers={"content-type": "application/json"},
                    timeout=budget,
                )
            else:
                resp = self.client.delete(self._doc_path(row), params=self._version(row), timeout=budget)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        return classify_response(row.op, resp.status_code, resp.content)  # type: ignore[arg-type]

    # ---- _bulk -----------------------------------------------------------------------------

    def _item(self, row: OutboxRow) -> bytes:
        # Index names are validated at start (no quote, no backslash) and ids are UUIDs, so the
        # action line is built without json.dumps.
        action = "delete" if row.op == "delete" else "index"
        vtype = "external_gte" if row.op == "delete" else "external"
        meta = f'{{"{action}":{{"_index":"{self.index}","_id":"{row.entity_text}","version":{row.seq},"version_type":"{vtype}"}}}}\n'
        if row.op == "delete":
            return meta.encode()
        return (meta + self._source(row) + "\n").encode()

    def apply_batch(
        self, rows: Sequence[OutboxRow], *, deadline: float | None = None, stop: threading.Event | None = None
    ) -> list[Outcome | None]:
        """One outcome per row, in order; None for a row that was not sent (stop, or no time left)."""
        outcomes: list[Outcome | None] = [None] * len(rows)
        chunks: list[list[tuple[int, bytes]]] = []
        current: list[tuple[int, bytes]] = []
        size = 0
        for i, row in enumerate(rows):
            bad = self.invalid(row)
            if bad is not None:
                outcomes[i] = bad
                continue
            item = self._item(row)
            if len(item) > self.max_bulk_bytes:
                outcomes[i] = Outcome(
                    "failed",
                    "invalid_payload",
                    error=f"document is {len(item):,} bytes, more than OUTBOX_BULK_MAX_BYTES={self.max_bulk_bytes:,}: it fits no _bulk request",
                    error_type="DocumentTooLarge",
                )
                continue
            if current and size + len(item) > self.max_bulk_bytes:
                chunks.append(current)
                current, size = [], 0
            current.append((i, item))
            size += len(item)
        if current:
            chunks.append(current)
        for chunk in chunks:
            if stop is not None and stop.is_set():
                break  # the rest stay None: released, never sent
            if not self._send(chunk, outcomes, deadline):
                break
        return outcomes

    def _send(self, chunk: list[tuple[int, bytes]], outcomes: list[Outcome | None], deadline: float | None) -> bool:
        """Send one `_bulk` request; False when it was not sent (no time left in the window)."""
        budget = request_budget(self.timeout, deadline)
        if budget is None:
            return False
        started = time.perf_counter()
        whole: Outcome | None = None
        try:
            resp = self.client.post(
                "/_bulk", content=b"".join(item for _, item in chunk), headers={"content-type": "application/x-ndjson"}, timeout=budget
            )
        except httpx.HTTPError as exc:
            whole = classify_exception(exc)
        else:
            if resp.status_code == _TOO_LARGE and len(chunk) > 1:
                # The engine's limit is below ours: halve until every part fits.
                half = len(chunk) // 2
                return self._send(chunk[:half], outcomes, deadline) and self._send(chunk[half:], outcomes, deadline)
            if resp.status_code >= 300:
                whole = classify_response("upsert", resp.status_code, resp.content)
            else:
                whole = self._read_items(resp, chunk, outcomes)
        if whole is not None:
            for idx, _ in chunk:
                outcomes[idx] = whole
        items = [outcomes[idx] for idx, _ in chunk]
        failed = [o for o in items if o is not None and o.result in ("failed", "retry")]
        if whole is not None or len(failed) == len(items):
            result = "failed"
        elif failed:
            result = "partial"
        else:
            result = "ok"
        if self.on_bulk is not None:
            self.on_bulk(time.perf_counter() - started, result, [] if whole is not None else failed)
        return True

    @staticmethod
    def _read_items(resp: httpx.Response, chunk: list[tuple[int, bytes]], outcomes: list[Outcome | None]) -> Outcome | None:
        """Classify each item into `outcomes`; an Outcome for the whole request if unreadable."""
        try:
            items = resp.json()["items"]
        except (ValueError, KeyError, TypeError) as exc:
            return Outcome("retry", "unknown", status_code=resp.status_code, error=f"unreadable _bulk response: {exc}", error_type=type(exc).__name__)
        if not isinstance(items, list) or len(items) != len(chunk):
            n = len(items) if isinstance(items, list) else "no"
            return Outcome("retry", "unknown", status_code=resp.status_code, error=f"_bulk answered {n} items for {len(chunk)} actions", error_type="BulkMismatch")
        for (idx, _), item in zip(chunk, items, strict=True):
            outcomes[idx] = _fast_ok(item) or classify_bulk_item(item)[1]
        return None

    def close(self) -> None:
        self.client.close()


def _fast_ok(item: Any) -> Outcome | None:
    """The shared ok Outcome of a successful item, without the full classification."""
    if isinstance(item, dict) and len(item) == 1:
        body = next(iter(item.values()))
        status = body.get("status") if isinstance(body, dict) else None
        if type(status) is int and 200 <= status < 300:
            ok = _OK_BY_STATUS.get(status)
            if ok is None:
                ok = _OK_BY_STATUS[status] = Outcome("ok", None, status)
            return ok
    return None


def bulk_failure_classes(outcomes: Sequence[Outcome]) -> list[str]:
    classes: list[str] = []
    for o in outcomes:
        cls = failure_class(o.status_code) if o.status_code is not None else None
        if cls is not None:
            classes.append(cls)
    return classes
