"""Turn whatever a projection attempt ended with into one `Outcome` with a closed `reason`.

Why this module exists: the `reason` label, the span attributes and the log fields must all say
the same thing about one attempt, and the label must stay inside the closed enum of the contract
(`worker.contract.Reason`). So every write to the search engine, every exception and every
`_bulk` item goes through the same few tables here, and nothing else in the worker invents a
reason. Error text goes to `Outcome.error` (logs, span events), never to a label.

Responses (`classify_response`, `classify_bulk_item`), checked in this order:

    2xx ........................................... ok
    404 on delete, body confirms it (`result: not_found` document body,
        or error type `index_not_found_exception`) . noop    es_404  (already gone: idempotent)
    409 `version_conflict_engine_exception` ........ noop    es_409  (stale external version)
    429 (any type, also the flood-stage block) ..... retry   es_429
    5xx ............................................ retry   es_5xx
    other 4xx (403 `cluster_block_exception`, 400
        `mapper_parsing_exception` / `document_parsing_exception` /
        `strict_dynamic_mapping_exception`, 404 on upsert, 404/409 whose
        body does not confirm the idempotent case) . failed  es_4xx
    anything else (1xx, 3xx) ....................... failed  unknown

Two reasons come from Postgres, not from the engine, and are built here too (`superseded`,
`lease_lost`): `superseded` when the claim finds a newer delete of the entity already done (the
row is settled as a noop without calling the engine, see `superseded()`), `lease_lost` when the
lease would end before a write could land, or ended before its settle.

A body that is not JSON, or JSON of an unexpected shape, is still classified by its status; it
only loses the error type. The two idempotent noops need the body's confirmation on purpose: a
noop drops the event for good, so a bare 404 from a proxy or a wrong URL prefix must surface as a
failure, not silently swallow deletes.

Exceptions (`classify_exception`), most specific first (same idea as the exception mapping in
httpx's `_transports/default.py`); the httpx tree is:

    httpx.HTTPError
    ├── httpx.RequestError
    │   ├── httpx.TransportError
    │   │   ├── httpx.TimeoutException
    │   │   │   ├── httpx.ConnectTimeout ........... retry  es_connect (never reached the server)
    │   │   │   ├── httpx.ReadTimeout .............. retry  es_timeout
    │   │   │   ├── httpx.WriteTimeout ............. retry  es_timeout
    │   │   │   └── httpx.PoolTimeout .............. retry  es_timeout
    │   │   ├── httpx.NetworkError
    │   │   │   ├── httpx.ConnectError ............. retry  es_connect
    │   │   │   ├── httpx.ReadError ................ retry  es_connect (connection reset)
    │   │   │   ├── httpx.WriteError ............... retry  es_connect
    │   │   │   └── httpx.CloseError ............... retry  es_connect
    │   │   ├── httpx.ProtocolError
    │   │   │   ├── httpx.RemoteProtocolError ...... retry  es_connect (server dropped the connection)
    │   │   │   └── httpx.LocalProtocolError ....... failed unknown (our request is malformed)
    │   │   ├── httpx.ProxyError ................... retry  es_connect
    │   │   └── httpx.UnsupportedProtocol .......... failed unknown (bad ES_URL scheme)
    │   ├── httpx.DecodingError .................... failed unknown
    │   └── httpx.TooManyRedirects ................. failed unknown
    └── httpx.HTTPStatusError ...................... as its response (op from the request method)
    psycopg.Error / psycopg_pool errors ............ retry  db_error (matched by module name,
                                                     so psycopg is never imported here)
    InvalidPayload (this module) ................... failed invalid_payload
    RecursionError (a payload nested too deeply) ... failed invalid_payload
    ConnectionError (refused, reset, aborted,
        broken pipe) ............................... retry  es_connect
    TimeoutError (incl. socket.timeout) ............ retry  es_timeout
    anything else .................................. failed unknown

Decision: `httpx.ConnectTimeout` is `es_connect`, not `es_timeout`. It subclasses
`TimeoutException`, but it means the TCP/TLS connection was never established, i.e. the engine is
unreachable (a stopped container, a black-holed port): the same operator question as a refused
connection. `es_timeout` is kept for "the engine took the request and was too slow to answer",
which points at load, not at reachability.

This module must not import drillui or textual: the worker runs on its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import httpx

from worker.contract import REASONS, FailureClass, Op, Reason
from worker.redact import redact

__all__ = [
    "ERROR_SUMMARY_MAX",
    "InvalidPayload",
    "Outcome",
    "OutcomeResult",
    "classify_bulk_item",
    "classify_bulk_items",
    "classify_exception",
    "classify_response",
    "failure_class",
    "superseded",
]

OutcomeResult = Literal["ok", "retry", "failed", "noop"]
_OUTCOME_RESULTS: Final[tuple[str, ...]] = get_args(OutcomeResult)

# Long enough for the ES reason of a mapping error plus its cause, short enough for one log line.
ERROR_SUMMARY_MAX: Final = 300

# ES error types that turn a 404 on delete / a 409 into an idempotent noop.
_INDEX_NOT_FOUND: Final = "index_not_found_exception"
_VERSION_CONFLICT: Final = "version_conflict_engine_exception"

# Actions of a `_bulk` item and the contract op they implement: every write that is not a delete
# is an upsert for the outbox (index/create are full-document writes, update is a partial one).
_BULK_ACTION_OPS: Final[Mapping[str, Op]] = {
    "index": "upsert",
    "create": "upsert",
    "update": "upsert",
    "delete": "delete",
}

# Root packages whose exceptions are database errors. Matched by name so this module does not
# depend on psycopg being importable (the drill UI imports classify without a database driver).
_DB_ERROR_MODULES: Final = frozenset({"psycopg", "psycopg_pool", "psycopg2"})


class InvalidPayload(ValueError):
    """The outbox row's payload cannot be turned into a document; retrying will not help.

    Raise it from a projection when the payload is missing fields or has the wrong types, so the
    attempt is classified `failed` / `invalid_payload` instead of `unknown`.
    """


@dataclass(frozen=True)
class Outcome:
    """How one attempt (one request, one `_bulk` item, or one exception) ended."""

    result: OutcomeResult
    reason: Reason | None  # None only when result == "ok"
    status_code: int | None = None
    error: str | None = None  # short human summary for logs/span events, never a label
    error_type: str | None = None  # e.g. "cluster_block_exception", "ConnectError"

    def __post_init__(self) -> None:
        # A wrong pairing would put a reason on a success metric or an unlabelled failure on a
        # dashboard; refuse it where it is built rather than where it is counted.
        if self.result not in _OUTCOME_RESULTS:
            raise ValueError(f"Outcome.result must be one of {_OUTCOME_RESULTS}, got {self.result!r}")
        if self.result == "ok":
            if self.reason is not None:
                raise ValueError(f"Outcome(result='ok') takes no reason, got {self.reason!r}")
        elif self.reason not in REASONS:
            raise ValueError(
                f"Outcome(result={self.result!r}) needs a reason from the closed enum {REASONS}, "
                f"got {self.reason!r}"
            )

    @property
    def retryable(self) -> bool:
        """True when the event should be rescheduled with backoff."""
        return self.result == "retry"


def superseded() -> Outcome:
    """The noop of a row the claim found superseded by a newer, already applied delete."""
    return Outcome("noop", "superseded", error="a newer delete of this entity is already applied; the engine was not called")


def failure_class(status_code: int) -> FailureClass | None:
    """The `failure_class` label of `outbox_es_bulk_item_failures_total` for an HTTP status.

    Only meaningful for items that failed: a 404 `not_found` delete item is a noop, and the caller
    must not count it as a failure even though this returns "4xx" for it.
    """
    if status_code == 429:
        return "429"
    if 400 <= status_code < 500:
        return "4xx"
    if 500 <= status_code < 600:
        return "5xx"
    return None


def classify_response(
    op: Op, status_code: int, body: bytes | str | Mapping[str, Any] | None
) -> Outcome:
    """Classify one HTTP response of the search engine for a write of `op`.

    `body` may be the raw bytes/text or the decoded JSON. For `_bulk` this only judges the request
    as a whole (a `_bulk` answers 200 even when every item failed): classify the items with
    `classify_bulk_item`.
    """
    if op not in _BULK_ACTION_OPS.values():
        raise ValueError(f"op must be 'upsert' or 'delete', got {op!r}")
    parsed = _parse_body(body)
    return _classify_status(op, status_code, parsed)


def classify_bulk_item(item: Mapping[str, Any]) -> tuple[Op, Outcome]:
    """Classify one entry of a `_bulk` response's `items` array, e.g. `{"delete": {...}}`.

    Raises ValueError when the entry is not a single-action object with an integer `status`: the
    engine always sends both, so anything else means we are not reading a `_bulk` response.
    """
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ValueError(
            "a _bulk item must be an object with exactly one action key "
            f"(index, create, update, delete), got {_short_repr(item)}"
        )
    ((action, result),) = item.items()
    op = _BULK_ACTION_OPS.get(action)
    if op is None:
        raise ValueError(
            f"unknown _bulk action {action!r}; expected one of {sorted(_BULK_ACTION_OPS)}"
        )
    if not isinstance(result, Mapping):
        raise ValueError(f"_bulk item {action!r} must hold an object, got {_short_repr(result)}")
    status = result.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise ValueError(f"_bulk item {action!r} has no integer 'status': {_short_repr(result)}")
    # An item has the same layout as a single-document response body (success fields, or an
    # `error` ErrorCause), so the same rules apply.
    return op, _classify_status(op, status, result)


def classify_bulk_items(body: bytes | str | Mapping[str, Any]) -> list[tuple[Op, Outcome]]:
    """Classify every item of a decoded or raw `_bulk` response, in request order."""
    parsed = _parse_body(body)
    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("items"), list):
        raise ValueError(f"not a _bulk response (no 'items' array): {_short_repr(parsed)}")
    return [classify_bulk_item(item) for item in parsed["items"]]


# Most specific first: the first isinstance match wins. ConnectTimeout must come before
# TimeoutException, RemoteProtocolError/LocalProtocolError before any ProtocolError entry, and the
# builtin ConnectionError/TimeoutError last because httpx errors do not derive from them.
_EXCEPTION_TABLE: Final[tuple[tuple[type[BaseException], OutcomeResult, Reason], ...]] = (
    (httpx.ConnectTimeout, "retry", "es_connect"),
    (httpx.TimeoutException, "retry", "es_timeout"),
    (httpx.ConnectError, "retry", "es_connect"),
    (httpx.NetworkError, "retry", "es_connect"),
    (httpx.RemoteProtocolError, "retry", "es_connect"),
    (httpx.LocalProtocolError, "failed", "unknown"),
    (httpx.ProxyError, "retry", "es_connect"),
    (httpx.UnsupportedProtocol, "failed", "unknown"),
    (httpx.DecodingError, "failed", "unknown"),
    (httpx.TooManyRedirects, "failed", "unknown"),
    (InvalidPayload, "failed", "invalid_payload"),
    (RecursionError, "failed", "invalid_payload"),
    (ConnectionError, "retry", "es_connect"),
    (TimeoutError, "retry", "es_timeout"),
)


def classify_exception(exc: BaseException) -> Outcome:
    """Classify an exception raised while projecting one event or batch.

    KeyboardInterrupt/SystemExit/CancelledError come out as `failed`/`unknown` like any other
    unexpected exception; callers must not catch those in the first place.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        # raise_for_status(): the response tells more than the exception type.
        op: Op = "delete" if exc.request.method.upper() == "DELETE" else "upsert"
        return classify_response(op, exc.response.status_code, exc.response.content)
    if _is_db_error(exc):
        return _exception_outcome(exc, "retry", "db_error")
    for exc_type, result, reason in _EXCEPTION_TABLE:
        if isinstance(exc, exc_type):
            return _exception_outcome(exc, result, reason)
    return _exception_outcome(exc, "failed", "unknown")


# --- internals -----------------------------------------------------------------------------


def _classify_status(op: Op, status: int, body: Mapping[str, Any] | str | None) -> Outcome:
    error_type, error = _error_summary(status, body)
    if 200 <= status < 300:
        return Outcome("ok", None, status)
    types = _error_types(body)
    if status == 404 and op == "delete":
        if isinstance(body, Mapping) and body.get("result") == "not_found":
            return Outcome("noop", "es_404", status, "document not found (result: not_found)", None)
        if _INDEX_NOT_FOUND in types:
            return Outcome("noop", "es_404", status, error, error_type)
    if status == 409 and _VERSION_CONFLICT in types:
        return Outcome("noop", "es_409", status, error, error_type)
    if status == 429:
        return Outcome("retry", "es_429", status, error, error_type)
    if 500 <= status < 600:
        return Outcome("retry", "es_5xx", status, error, error_type)
    if 400 <= status < 500:
        return Outcome("failed", "es_4xx", status, error, error_type)
    return Outcome("failed", "unknown", status, error, error_type)


def _parse_body(body: bytes | str | Mapping[str, Any] | None) -> Mapping[str, Any] | str | None:
    """Decoded JSON object, else the text (for the error summary), else None."""
    if body is None or isinstance(body, Mapping):
        return body
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if not text.strip():
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        # Not JSON (an HTML page from a proxy, a truncated body): classified by status alone.
        return text
    return decoded if isinstance(decoded, Mapping) else text


def _error_types(body: Mapping[str, Any] | str | None) -> set[str]:
    """The error type and its root-cause types, to recognise the idempotent cases."""
    if not isinstance(body, Mapping):
        return set()
    err = body.get("error")
    if not isinstance(err, Mapping):
        return set()
    types = {err["type"]} if isinstance(err.get("type"), str) else set()
    root_causes = err.get("root_cause")
    if isinstance(root_causes, list):
        types.update(
            rc["type"] for rc in root_causes if isinstance(rc, Mapping) and isinstance(rc.get("type"), str)
        )
    return types


def _error_summary(
    status: int, body: Mapping[str, Any] | str | None
) -> tuple[str | None, str | None]:
    """(error_type, "<type>: <reason>[ (caused by <type>: <reason>)]") from an ES body."""
    if 200 <= status < 300:
        return None, None
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            etype = err.get("type") if isinstance(err.get("type"), str) else None
            text = _cause_text(err)
            cause = err.get("caused_by")
            if isinstance(cause, Mapping):
                text = f"{text} (caused by {_cause_text(cause)})"
            return etype, _truncate(text)
        if isinstance(err, str):  # very old engines: {"error": "IndexMissingException[...]"}
            return None, _truncate(err)
        return None, _truncate(f"HTTP {status}: {_short_repr(body)}")
    if isinstance(body, str):
        return None, _truncate(f"HTTP {status}: {' '.join(body.split())}")
    return None, f"HTTP {status}"


def _cause_text(cause: Mapping[str, Any]) -> str:
    etype = cause.get("type")
    reason = cause.get("reason")
    if isinstance(etype, str) and isinstance(reason, str):
        return f"{etype}: {reason}"
    if isinstance(etype, str):
        return etype
    return str(reason) if reason is not None else "unknown error"


def _is_db_error(exc: BaseException) -> bool:
    return any(cls.__module__.split(".", 1)[0] in _DB_ERROR_MODULES for cls in type(exc).__mro__)


def _exception_outcome(exc: BaseException, result: OutcomeResult, reason: Reason) -> Outcome:
    name = type(exc).__name__
    detail = " ".join(str(exc).split())
    return Outcome(result, reason, None, _truncate(f"{name}: {detail}" if detail else name), name)


def _truncate(text: str, limit: int = ERROR_SUMMARY_MAX) -> str:
    # Every error summary passes here on its way to logs and span events: mask passwords of
    # any URL the text quotes (an httpx error naming ES_URL, say) before it is cut.
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: object) -> str:
    return _truncate(repr(value), 120)
