"""Classification of search-engine responses, `_bulk` items and exceptions into the closed reasons.

Every upstream wire sample (`fixtures/wire/es_*.json`) is a case with the outcome the contract
requires; a new sample without an expectation fails the suite, so nobody adds one unjudged.
Then the same rules are checked against real answers of an in-memory OpenSearch (osmem) and
real httpx transport errors on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.errors
import pytest
from osmem_server import OsmemServer

from worker.classify import (
    _EXCEPTION_TABLE,
    ERROR_SUMMARY_MAX,
    InvalidPayload,
    Outcome,
    classify_bulk_item,
    classify_bulk_items,
    classify_exception,
    classify_response,
    failure_class,
)
from worker.contract import REASONS

REPO = Path(__file__).resolve().parents[1]


def _wire_dir() -> Path:
    """The wire samples: a copy inside the repo wins over the shared workspace copy."""
    candidates = [
        os.environ.get("DRILLUI_WIRE_FIXTURES"),
        REPO / "tests" / "fixtures" / "wire",
        REPO.parent / "shared" / "fixtures" / "wire",
    ]
    for candidate in candidates:
        if candidate and Path(candidate, "es_responses.md").is_file():
            return Path(candidate)
    raise RuntimeError(f"wire fixtures not found in any of {candidates}; set DRILLUI_WIRE_FIXTURES")


WIRE = _wire_dir()
ES_FIXTURES = sorted(p.name for p in WIRE.glob("es_*.json"))

# (result, reason, status_code, error_type)
Expected = tuple[str, str | None, int, str | None]
OK_200: Expected = ("ok", None, 200, None)
OK_201: Expected = ("ok", None, 201, None)

# What each sample answers (es_responses.md §3) and what the worker must make of it.
# Single responses: ("response", op, http_status, expected). Bulk: ("bulk", [(op, expected), ...]).
EXPECTATIONS: dict[str, tuple[Any, ...]] = {
    # PUT /people_no_ignore/_doc/1 {"age":"twenty"}: a poison document, never retried.
    "es_400_mapper_parsing.json": (
        "response", "upsert", 400, ("failed", "es_4xx", 400, "mapper_parsing_exception"),
    ),
    # PUT /{index}/_doc/{id} on a write-blocked index: a deliberate block, not retried.
    "es_403_write_block.json": (
        "response", "upsert", 403, ("failed", "es_4xx", 403, "cluster_block_exception"),
    ),
    # DELETE of a missing document: already gone, idempotent.
    "es_404_delete_not_found.json": ("response", "delete", 404, ("noop", "es_404", 404, None)),
    # a write that lost the version race: stale, idempotent.
    "es_409_version_conflict.json": (
        "response", "upsert", 409, ("noop", "es_409", 409, "version_conflict_engine_exception"),
    ),
    # the whole _bulk rejected by indexing pressure.
    "es_429_whole_request.json": (
        "response", "upsert", 429, ("retry", "es_429", 429, "es_rejected_execution_exception"),
    ),
    # PUT /{index}/_block/write (a drill's fault injection): a plain success.
    "es_add_block_write_200.json": ("response", "upsert", 200, OK_200),
    "es_put_settings_ack_200.json": ("response", "upsert", 200, OK_200),
    "es_delete_doc_ok_200.json": ("response", "delete", 200, OK_200),
    "es_index_doc_created_201.json": ("response", "upsert", 201, OK_201),
    # `update` of a missing document is an upsert that cannot succeed: failed, not noop.
    "es_bulk_failed_actions_404.json": (
        "bulk",
        [
            ("upsert", ("failed", "es_4xx", 404, "document_missing_exception")),
            ("upsert", ("failed", "es_4xx", 404, "document_missing_exception")),
            ("upsert", OK_201),
        ],
    ),
    "es_bulk_item_403_write_block.json": (
        "bulk", [("upsert", ("failed", "es_4xx", 403, "cluster_block_exception"))],
    ),
    "es_bulk_item_409_version_conflict.json": (
        "bulk",
        [
            ("upsert", OK_201),
            ("upsert", ("noop", "es_409", 409, "version_conflict_engine_exception")),
        ],
    ),
    "es_bulk_item_429.json": (
        "bulk", [("upsert", ("retry", "es_429", 429, "es_rejected_execution_exception"))],
    ),
    "es_bulk_partial_failure_mapper_parsing.json": (
        "bulk",
        [("upsert", OK_201), ("upsert", ("failed", "es_4xx", 400, "mapper_parsing_exception"))],
    ),
    # item 2 is a delete 404 `not_found` with no `error`: a noop, not a failure.
    "es_bulk_success.json": (
        "bulk",
        [
            ("upsert", OK_201),
            ("delete", ("noop", "es_404", 404, None)),
            ("upsert", OK_201),
            ("upsert", OK_200),
        ],
    ),
}


def _check(outcome: Outcome, expected: Expected) -> None:
    result, reason, status_code, error_type = expected
    assert (outcome.result, outcome.reason, outcome.status_code, outcome.error_type) == (
        result, reason, status_code, error_type,
    )
    assert outcome.retryable is (result == "retry")
    if result in ("ok",):
        assert outcome.error is None
    else:
        assert outcome.error and len(outcome.error) <= ERROR_SUMMARY_MAX
        if error_type is not None:
            assert outcome.error.startswith(f"{error_type}: ")


def test_every_wire_sample_has_an_expectation() -> None:
    assert ES_FIXTURES, f"no es_*.json in {WIRE}"
    assert sorted(EXPECTATIONS) == ES_FIXTURES


@pytest.mark.parametrize("name", ES_FIXTURES)
def test_wire_sample(name: str) -> None:
    assert name in EXPECTATIONS, f"{name}: add its expected outcome to EXPECTATIONS"
    raw = (WIRE / name).read_bytes()
    kind, *rest = EXPECTATIONS[name]
    if kind == "response":
        op, status, expected = rest
        # raw bytes, text and decoded JSON are all accepted and must agree
        for body in (raw, raw.decode(), json.loads(raw)):
            _check(classify_response(op, status, body), expected)
    else:
        (items_expected,) = rest
        body = json.loads(raw)
        items = body["items"]
        assert len(items) == len(items_expected)
        for item, (op, expected) in zip(items, items_expected, strict=True):
            got_op, outcome = classify_bulk_item(item)
            assert got_op == op
            _check(outcome, expected)
        assert classify_bulk_items(raw) == [classify_bulk_item(i) for i in items]
        # a _bulk answers 200 even when items failed: the request itself is fine
        _check(classify_response("upsert", 200, raw), OK_200)


def test_error_summary_has_type_reason_and_cause() -> None:
    raw = (WIRE / "es_400_mapper_parsing.json").read_bytes()
    outcome = classify_response("upsert", 400, raw)
    assert outcome.error == (
        "mapper_parsing_exception: failed to parse field [age] of type [integer] in document "
        "with id '1'. Preview of field's value: 'twenty' (caused by number_format_exception: "
        'For input string: "twenty")'
    )


def test_long_reason_is_truncated() -> None:
    body = {"error": {"type": "illegal_argument_exception", "reason": "x" * 1000}, "status": 400}
    outcome = classify_response("upsert", 400, body)
    assert outcome.error is not None
    assert len(outcome.error) == ERROR_SUMMARY_MAX and outcome.error.endswith("…")


@pytest.mark.parametrize(
    ("op", "status", "body", "expected"),
    [
        # not JSON: still classified by status, no error type
        ("upsert", 502, b"<html><body>Bad Gateway</body></html>", ("retry", "es_5xx", 502, None)),
        ("upsert", 503, None, ("retry", "es_5xx", 503, None)),
        ("upsert", 429, "Too Many Requests", ("retry", "es_429", 429, None)),
        ("upsert", 400, b"\xff\xfe not utf-8", ("failed", "es_4xx", 400, None)),
        ("upsert", 400, "[1, 2]", ("failed", "es_4xx", 400, None)),
        # a bare 404/409 without the engine's confirmation is not an idempotent noop
        ("delete", 404, "404 page not found", ("failed", "es_4xx", 404, None)),
        ("delete", 404, {"error": {"type": "resource_not_found_exception", "reason": "x"}},
         ("failed", "es_4xx", 404, "resource_not_found_exception")),
        ("upsert", 409, "", ("failed", "es_4xx", 409, None)),
        # 404 on upsert: the index is missing, a real failure
        ("upsert", 404, {"error": {"type": "index_not_found_exception", "reason": "no such index [x]"}},
         ("failed", "es_4xx", 404, "index_not_found_exception")),
        # 409 on a delete with a stale external version is idempotent too
        ("delete", 409, {"error": {"type": "version_conflict_engine_exception", "reason": "[a]: v"}},
         ("noop", "es_409", 409, "version_conflict_engine_exception")),
        # Elasticsearch >= 8.8 spelling of the mapping error
        ("upsert", 400, {"error": {"type": "document_parsing_exception", "reason": "[1:11] failed"}},
         ("failed", "es_4xx", 400, "document_parsing_exception")),
        # the flood-stage disk block is a 429 cluster_block_exception: retryable
        ("upsert", 429, {"error": {"type": "cluster_block_exception",
                                   "reason": "index [t] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded]"}},
         ("retry", "es_429", 429, "cluster_block_exception")),
        ("upsert", 500, {"error": "IndexMissingException[[x] missing]", "status": 500},
         ("retry", "es_5xx", 500, None)),
        ("upsert", 301, "", ("failed", "unknown", 301, None)),
    ],
)
def test_response_edge_cases(op: str, status: int, body: Any, expected: Expected) -> None:
    _check(classify_response(op, status, body), expected)  # type: ignore[arg-type]


def test_bad_op_and_bad_bulk_items_are_refused() -> None:
    with pytest.raises(ValueError, match="op must be"):
        classify_response("index", 200, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one action"):
        classify_bulk_item({"index": {"status": 201}, "delete": {"status": 200}})
    with pytest.raises(ValueError, match="unknown _bulk action"):
        classify_bulk_item({"upsert": {"status": 201}})
    with pytest.raises(ValueError, match="integer 'status'"):
        classify_bulk_item({"index": {"_id": "1"}})
    with pytest.raises(ValueError, match="no 'items'"):
        classify_bulk_items({"acknowledged": True})


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, "429"), (400, "4xx"), (403, "4xx"), (404, "4xx"), (409, "4xx"), (499, "4xx"),
     (500, "5xx"), (503, "5xx"), (599, "5xx"), (200, None), (201, None), (301, None), (600, None)],
)
def test_failure_class(status: int, expected: str | None) -> None:
    assert failure_class(status) == expected


def test_outcome_refuses_inconsistent_reason() -> None:
    with pytest.raises(ValueError, match="takes no reason"):
        Outcome("ok", "es_429")
    with pytest.raises(ValueError, match="closed enum"):
        Outcome("retry", None)
    with pytest.raises(ValueError, match="closed enum"):
        Outcome("failed", "connection refused")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be one of"):
        Outcome("partial", "es_4xx")  # type: ignore[arg-type]


# --- exceptions ----------------------------------------------------------------------------

_REQ = httpx.Request("POST", "http://127.0.0.1:9/_bulk")


@pytest.mark.parametrize(
    ("exc", "result", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused", request=_REQ), "retry", "es_connect"),
        (httpx.ConnectTimeout("timed out", request=_REQ), "retry", "es_connect"),
        (httpx.ReadTimeout("timed out", request=_REQ), "retry", "es_timeout"),
        (httpx.WriteTimeout("timed out", request=_REQ), "retry", "es_timeout"),
        (httpx.PoolTimeout("timed out", request=_REQ), "retry", "es_timeout"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response.", request=_REQ),
         "retry", "es_connect"),
        (httpx.ReadError("[Errno 104] Connection reset by peer", request=_REQ), "retry", "es_connect"),
        (httpx.WriteError("broken pipe", request=_REQ), "retry", "es_connect"),
        (httpx.ProxyError("proxy down", request=_REQ), "retry", "es_connect"),
        (httpx.LocalProtocolError("bad header", request=_REQ), "failed", "unknown"),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'htp://'.", request=_REQ),
         "failed", "unknown"),
        (httpx.DecodingError("bad gzip", request=_REQ), "failed", "unknown"),
        (ConnectionRefusedError(111, "Connection refused"), "retry", "es_connect"),
        (ConnectionResetError(104, "Connection reset by peer"), "retry", "es_connect"),
        (BrokenPipeError(32, "Broken pipe"), "retry", "es_connect"),
        (TimeoutError("timed out"), "retry", "es_timeout"),
        (TimeoutError("timed out"), "retry", "es_timeout"),
        (psycopg.OperationalError("connection is lost"), "retry", "db_error"),
        (psycopg.errors.UniqueViolation("duplicate key"), "retry", "db_error"),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
         "retry", "db_error"),
        (InvalidPayload("payload has no 'title'"), "failed", "invalid_payload"),
        (KeyError("title"), "failed", "unknown"),
        (ValueError("boom"), "failed", "unknown"),
        (RuntimeError(), "failed", "unknown"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exception(exc: BaseException, result: str, reason: str) -> None:
    outcome = classify_exception(exc)
    name = type(exc).__name__
    assert (outcome.result, outcome.reason, outcome.status_code, outcome.error_type) == (
        result, reason, None, name,
    )
    assert outcome.error is not None and outcome.error.startswith(name)
    assert outcome.retryable is (result == "retry")


def test_exception_summary() -> None:
    outcome = classify_exception(httpx.ConnectError("[Errno 111]\n Connection refused", request=_REQ))
    assert outcome.error == "ConnectError: [Errno 111] Connection refused"
    assert classify_exception(RuntimeError()).error == "RuntimeError"


def test_http_status_error_is_classified_as_its_response() -> None:
    body = (WIRE / "es_404_delete_not_found.json").read_bytes()
    request = httpx.Request("DELETE", "http://127.0.0.1:9/test/_doc/2")
    response = httpx.Response(404, content=body, request=request)
    exc = httpx.HTTPStatusError("404", request=request, response=response)
    assert classify_exception(exc) == classify_response("delete", 404, body)
    assert classify_exception(exc).reason == "es_404"
    put = httpx.Request("PUT", "http://127.0.0.1:9/test/_doc/2")
    response = httpx.Response(503, content=b"unavailable", request=put)
    outcome = classify_exception(httpx.HTTPStatusError("503", request=put, response=response))
    assert (outcome.result, outcome.reason, outcome.status_code) == ("retry", "es_5xx", 503)


def test_exception_table_has_no_shadowed_entry() -> None:
    # most-specific-first: an entry placed after one of its base classes would never match
    for i, (later, _, _) in enumerate(_EXCEPTION_TABLE):
        for earlier, _, _ in _EXCEPTION_TABLE[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier.__name__}"
    for _, _, reason in _EXCEPTION_TABLE:
        assert reason in REASONS


def test_module_has_no_ui_or_db_dependency() -> None:
    code = (
        "import sys, worker.classify; "
        "bad = [m for m in ('drillui', 'textual', 'psycopg') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout


# --- real transport errors on 127.0.0.1 ---------------------------------------------------


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A listener whose accepted connections are handed to the test (to hold or to close)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()


def test_real_connection_refused() -> None:
    with httpx.Client(timeout=2.0) as client, pytest.raises(httpx.ConnectError) as info:
        client.post(f"http://127.0.0.1:{_refused_port()}/_bulk", content=b"{}\n")
    assert (classify_exception(info.value).result, classify_exception(info.value).reason) == (
        "retry", "es_connect",
    )


def test_real_read_timeout(silent_server: tuple[int, list[socket.socket]]) -> None:
    port, _ = silent_server
    with httpx.Client(timeout=httpx.Timeout(2.0, read=0.2)) as client, pytest.raises(httpx.ReadTimeout) as info:
        client.get(f"http://127.0.0.1:{port}/")
    outcome = classify_exception(info.value)
    assert (outcome.result, outcome.reason, outcome.error_type) == ("retry", "es_timeout", "ReadTimeout")


def test_real_dropped_connection() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def drop_one() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)  # read the request, then hang up without answering
        conn.close()

    thread = threading.Thread(target=drop_one, daemon=True)
    thread.start()
    try:
        with httpx.Client(timeout=2.0) as client, pytest.raises(httpx.RemoteProtocolError) as info:
            client.get(f"http://127.0.0.1:{listener.getsockname()[1]}/")
    finally:
        thread.join(2)
        listener.close()
    outcome = classify_exception(info.value)
    assert (outcome.result, outcome.reason, outcome.error_type) == (
        "retry", "es_connect", "RemoteProtocolError",
    )


# --- real responses from an in-memory OpenSearch ------------------------------------------


@pytest.fixture(scope="module")
def osmem() -> Iterator[httpx.Client]:
    server = OsmemServer.start(japanese=False, addr="127.0.0.1:0")
    try:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            mapping = {
                "mappings": {
                    "dynamic": "strict",
                    "properties": {"title": {"type": "text"}, "n": {"type": "integer"}},
                }
            }
            for index in ("drill", "blocked"):
                client.put(f"/{index}", json=mapping).raise_for_status()
            client.put("/blocked/_settings", json={"index.blocks.write": True}).raise_for_status()
            yield client
    finally:
        server.close()
        # OsmemServer.close() leaves the stdout pipe of the process open (ResourceWarning)
        if server.process.stdout is not None:
            server.process.stdout.close()
        server.process.wait(timeout=10)


def _ext(version: int) -> dict[str, str | int]:
    return {"version": version, "version_type": "external"}


def _classify(op: str, response: httpx.Response) -> Outcome:
    return classify_response(op, response.status_code, response.content)  # type: ignore[arg-type]


def test_osmem_single_document(osmem: httpx.Client) -> None:
    first = osmem.put("/drill/_doc/a", params=_ext(5), json={"title": "t", "n": 1})
    _check(_classify("upsert", first), OK_201)
    # the same external version again: a duplicate delivery
    _check(_classify("upsert", osmem.put("/drill/_doc/a", params=_ext(5), json={"title": "t", "n": 1})),
           ("noop", "es_409", 409, "version_conflict_engine_exception"))
    # an older event delivered late, for an upsert and for a delete
    _check(_classify("upsert", osmem.put("/drill/_doc/a", params=_ext(4), json={"title": "t"})),
           ("noop", "es_409", 409, "version_conflict_engine_exception"))
    _check(_classify("delete", osmem.delete("/drill/_doc/a", params=_ext(3))),
           ("noop", "es_409", 409, "version_conflict_engine_exception"))
    _check(_classify("upsert", osmem.put("/drill/_doc/b", params=_ext(1), json={"title": "t", "bogus": 1})),
           ("failed", "es_4xx", 400, "strict_dynamic_mapping_exception"))
    bad_number = _classify("upsert", osmem.put("/drill/_doc/b", params=_ext(1), json={"n": "twenty"}))
    _check(bad_number, ("failed", "es_4xx", 400, "mapper_parsing_exception"))
    assert bad_number.error is not None and "caused by number_format_exception" in bad_number.error
    _check(_classify("upsert", osmem.put("/blocked/_doc/c", params=_ext(1), json={"title": "t"})),
           ("failed", "es_4xx", 403, "cluster_block_exception"))
    _check(_classify("delete", osmem.delete("/blocked/_doc/c", params=_ext(2))),
           ("failed", "es_4xx", 403, "cluster_block_exception"))
    _check(_classify("delete", osmem.delete("/drill/_doc/missing", params=_ext(7))),
           ("noop", "es_404", 404, None))
    _check(_classify("delete", osmem.delete("/no-such-index/_doc/x")),
           ("noop", "es_404", 404, "index_not_found_exception"))
    _check(_classify("delete", osmem.delete("/drill/_doc/a", params=_ext(9))), OK_200)


def test_osmem_bulk(osmem: httpx.Client) -> None:
    osmem.put("/drill/_doc/k", params=_ext(5), json={"title": "t"}).raise_for_status()
    actions: list[dict[str, Any]] = [
        {"index": {"_index": "drill", "_id": "new", **_ext(1)}}, {"title": "ok"},
        {"index": {"_index": "drill", "_id": "nan", **_ext(1)}}, {"n": "twenty"},
        {"index": {"_index": "drill", "_id": "k", **_ext(5)}}, {"title": "dup"},
        {"delete": {"_index": "drill", "_id": "gone", **_ext(2)}},
        {"index": {"_index": "blocked", "_id": "w", **_ext(1)}}, {"title": "blocked"},
    ]
    ndjson = "".join(json.dumps(a) + "\n" for a in actions)
    response = osmem.post("/_bulk", content=ndjson, headers={"content-type": "application/x-ndjson"})
    _check(_classify("upsert", response), OK_200)
    got = classify_bulk_items(response.content)
    expected = [
        ("upsert", OK_201),
        ("upsert", ("failed", "es_4xx", 400, "mapper_parsing_exception")),
        ("upsert", ("noop", "es_409", 409, "version_conflict_engine_exception")),
        ("delete", ("noop", "es_404", 404, None)),
        ("upsert", ("failed", "es_4xx", 403, "cluster_block_exception")),
    ]
    assert [op for op, _ in got] == [op for op, _ in expected]
    for (_, outcome), (_, exp) in zip(got, expected, strict=True):
        _check(outcome, exp)
    # the failure_class label of the failed items
    failed = [o for _, o in got if o.result in ("failed", "retry")]
    assert [failure_class(o.status_code or 0) for o in failed] == ["4xx", "4xx"]
