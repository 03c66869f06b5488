"""`search_index_to_elastic`: outbox rows -> documents in an Elasticsearch/OpenSearch index.

The document `_id` is the row's entity_id, and every write (index or delete) carries the row's
outbox sequence as an external version. The engine then rejects any write older than what it
holds (409) and a delete of a missing document answers 404: both are idempotent noops, so
duplicates, retries and out-of-order deliveries converge on the latest event per entity.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from worker.classify import Outcome, classify_bulk_item, classify_exception, classify_response, failure_class
from worker.db import OutboxRow
from worker.faults import Es429Injector


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
    ) -> None:
        self.index = index
        self.bulk = bulk
        self.injector = injector
        self.on_bulk = on_bulk
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
        return f"/{self.index}/_doc/{row.entity_id}"

    def _version(self, row: OutboxRow) -> dict[str, str]:
        return {"version": str(row.seq), "version_type": "external"}

    def apply_one(self, row: OutboxRow) -> Outcome:
        self.last_injected = False
        if row.op == "upsert" and not isinstance(row.payload, dict):
            return Outcome("failed", "invalid_payload", error=f"payload must be a JSON object, got {type(row.payload).__name__}", error_type="InvalidPayload")
        if self.injector.should_inject(row.op):
            self.last_injected = True
            return Outcome("retry", "es_429", status_code=429, error="Injected 429 (fault injection)", error_type="HTTPStatusError")
        try:
            if row.op == "upsert":
                resp = self.client.put(self._doc_path(row), params=self._version(row), json=row.payload)
            else:
                resp = self.client.delete(self._doc_path(row), params=self._version(row))
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        return classify_response(row.op, resp.status_code, resp.content)  # type: ignore[arg-type]

    def _bulk_body(self, rows: Sequence[OutboxRow]) -> tuple[bytes, list[int]]:
        lines: list[str] = []
        sent: list[int] = []
        for i, row in enumerate(rows):
            meta = {"_index": self.index, "_id": str(row.entity_id), "version": row.seq, "version_type": "external"}
            if row.op == "upsert":
                if not isinstance(row.payload, dict):
                    continue
                lines.append(json.dumps({"index": meta}))
                lines.append(json.dumps(row.payload))
            else:
                lines.append(json.dumps({"delete": meta}))
            sent.append(i)
        return ("\n".join(lines) + "\n").encode(), sent

    def apply_batch(self, rows: Sequence[OutboxRow]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(rows)
        for i, row in enumerate(rows):
            if row.op == "upsert" and not isinstance(row.payload, dict):
                outcomes[i] = Outcome("failed", "invalid_payload", error="payload must be a JSON object", error_type="InvalidPayload")
        body, sent = self._bulk_body(rows)
        if not sent:
            return [o for o in outcomes if o is not None]
        started = time.perf_counter()
        try:
            resp = self.client.post("/_bulk", content=body, headers={"content-type": "application/x-ndjson"})
        except httpx.HTTPError as exc:
            whole = classify_exception(exc)
            return self._finish_bulk(started, rows, outcomes, sent, whole_request=whole)
        if resp.status_code >= 300:
            whole = classify_response("upsert", resp.status_code, resp.content)
            return self._finish_bulk(started, rows, outcomes, sent, whole_request=whole)
        try:
            items = resp.json()["items"]
        except (ValueError, KeyError, TypeError) as exc:
            whole = Outcome("retry", "unknown", status_code=resp.status_code, error=f"unreadable _bulk response: {exc}", error_type=type(exc).__name__)
            return self._finish_bulk(started, rows, outcomes, sent, whole_request=whole)
        if len(items) != len(sent):
            whole = Outcome("retry", "unknown", status_code=resp.status_code, error=f"_bulk answered {len(items)} items for {len(sent)} actions", error_type="BulkMismatch")
            return self._finish_bulk(started, rows, outcomes, sent, whole_request=whole)
        for idx, item in zip(sent, items, strict=True):
            _, outcome = classify_bulk_item(item)
            outcomes[idx] = outcome
        return self._finish_bulk(started, rows, outcomes, sent, whole_request=None)

    def _finish_bulk(
        self,
        started: float,
        rows: Sequence[OutboxRow],
        outcomes: list[Outcome | None],
        sent: list[int],
        *,
        whole_request: Outcome | None,
    ) -> list[Outcome]:
        elapsed = time.perf_counter() - started
        if whole_request is not None:
            for idx in sent:
                outcomes[idx] = whole_request
        final = [o for o in outcomes if o is not None]
        assert len(final) == len(rows)
        item_outcomes = [final[i] for i in sent]
        if whole_request is not None or all(o.result in ("failed", "retry") for o in item_outcomes):
            result = "failed"
        elif any(o.result in ("failed", "retry") for o in item_outcomes):
            result = "partial"
        else:
            result = "ok"
        if self.on_bulk is not None:
            failed_items = [o for o in item_outcomes if o.result in ("failed", "retry") and whole_request is None]
            self.on_bulk(elapsed, result, failed_items)
        return final

    def close(self) -> None:
        self.client.close()


def bulk_failure_classes(outcomes: Sequence[Outcome]) -> list[str]:
    classes: list[str] = []
    for o in outcomes:
        cls = failure_class(o.status_code) if o.status_code is not None else None
        if cls is not None:
            classes.append(cls)
    return classes
