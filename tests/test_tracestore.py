"""The embedded trace store against the upstream wire samples: OTLP/HTTP in, Jaeger's query API out."""

from __future__ import annotations

import gc
import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from drillui.stack.tracestore import (
    RequestTooLarge,
    StoredSpan,
    TraceQuery,
    TraceStore,
    TraceStoreServer,
    parse_go_duration,
    parse_rfc3339_nano,
)

WIRE = Path(__file__).resolve().parent / "fixtures" / "wire"
PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
EVER = {"query.start_time_min": "2000-01-01T00:00:00Z", "query.start_time_max": "2100-01-01T00:00:00.000000001Z"}


def wire(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def wire_json(name: str) -> Any:
    return json.loads(wire(name))


@pytest.fixture
def server() -> Iterator[TraceStoreServer]:
    with TraceStoreServer() as running:
        yield running


@pytest.fixture
def http(server: TraceStoreServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        yield client


# --------------------------------------------------------------------------- OTLP/HTTP receiver


@pytest.mark.parametrize("name", ["otlp_trace_request", "jaeger_traces_sample.otlp_input"])
def test_protobuf_export_answers_empty_protobuf_response(http: httpx.Client, name: str) -> None:
    response = http.post("/v1/traces", content=wire(f"{name}.pb"), headers=PROTO)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()


@pytest.mark.parametrize("name", ["otlp_trace_request", "jaeger_traces_sample.otlp_input"])
def test_json_export_answers_json(http: httpx.Client, server: TraceStoreServer, name: str) -> None:
    response = http.post("/v1/traces", content=wire(f"{name}.json"), headers=JSON)
    assert (response.status_code, response.headers["content-type"], response.json()) == (200, "application/json", {})
    assert server.store.span_count == len(
        ExportTraceServiceRequest.FromString(wire(f"{name}.pb")).resource_spans[0].scope_spans[0].spans
    )


def test_gzip_body_is_accepted(http: httpx.Client, server: TraceStoreServer) -> None:
    body = gzip.compress(wire("otlp_trace_request.pb"))
    response = http.post("/v1/traces", content=body, headers={**PROTO, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert server.store.services() == ["my.service"]


def test_enum_names_and_uppercase_hex_ids_are_accepted(http: httpx.Client, server: TraceStoreServer) -> None:
    document = wire_json("otlp_trace_request.json")
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"] = "SPAN_KIND_CLIENT"
    span["status"] = {"code": "STATUS_CODE_ERROR"}
    span["unknownField"] = 1  # receivers MUST ignore unknown fields
    assert http.post("/v1/traces", json=document).status_code == 200
    stored = server.store.get_trace(bytes.fromhex("5b8efff798038103d269b633813fc60c"))
    assert stored is not None
    assert (stored[0].proto.kind, stored[0].proto.status.code) == (Span.SPAN_KIND_CLIENT, Status.STATUS_CODE_ERROR)


def test_undecodable_bodies_get_400_with_a_status_in_the_request_encoding(http: httpx.Client) -> None:
    response = http.post("/v1/traces", content=b"\xff\xff not protobuf", headers=PROTO)
    assert (response.status_code, response.headers["content-type"]) == (400, "application/x-protobuf")
    assert "cannot decode" in status_pb2.Status.FromString(response.content).message

    response = http.post(
        "/v1/traces", content=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', headers=JSON
    )
    assert (response.status_code, response.headers["content-type"]) == (400, "application/json")
    assert "traceId" in response.json()["message"]

    response = http.post("/v1/traces", content=b"not gzip", headers={**PROTO, "Content-Encoding": "gzip"})
    assert response.status_code == 400


def test_wrong_content_type_method_and_path(http: httpx.Client) -> None:
    assert http.post("/v1/traces", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    wrong_method = http.get("/v1/traces")
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert http.post("/api/v3/services").status_code == 405
    missing = http.get("/api/v4/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")


def test_invalid_span_ids_are_rejected_as_partial_success(http: httpx.Client, server: TraceStoreServer) -> None:
    document = wire_json("otlp_trace_request.json")
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "00" * 16
    response = http.post("/v1/traces", json=document)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert server.store.span_count == 0


# --------------------------------------------------------------------------- Jaeger query API shapes


@pytest.mark.parametrize("encoding", ["json", "pb"])
def test_legacy_search_renders_jaeger_ui_model_exactly(http: httpx.Client, encoding: str) -> None:
    headers = JSON if encoding == "json" else PROTO
    http.post("/v1/traces", content=wire(f"jaeger_traces_sample.otlp_input.{encoding}"), headers=headers)
    expected = wire_json("jaeger_traces_sample.json")

    raw = http.get("/api/traces", params={"service": "telemetrygen", "start": "0", "raw": "true"})
    assert (raw.status_code, raw.headers["content-type"]) == (200, "application/json")
    assert raw.json() == expected
    assert not raw.text.endswith("\n")

    by_id = http.get("/api/traces/83a9efd15c1c98a977e0711cc93ee28b", params={"raw": "true"})
    assert by_id.json() == expected

    # Without raw, Jaeger's de-duplication adjuster keeps one copy of the byte-identical span.
    adjusted = http.get(
        "/api/traces", params={"service": "telemetrygen", "operation": "okey-dokey-0", "start": "0"}
    ).json()
    assert adjusted["data"][0]["spans"] == expected["data"][0]["spans"][:1]


@pytest.mark.parametrize("encoding", ["json", "pb"])
def test_api_v3_returns_the_otlp_json_it_received(http: httpx.Client, encoding: str) -> None:
    headers = JSON if encoding == "json" else PROTO
    http.post("/v1/traces", content=wire(f"jaeger_traces_sample.otlp_input.{encoding}"), headers=headers)
    params = {**EVER, "query.service_name": "telemetrygen", "query.raw_traces": "true"}
    response = http.get("/api/v3/traces", params=params)
    assert response.status_code == 200
    assert response.json() == {"result": wire_json("jaeger_traces_sample.otlp_input.json")}

    by_id = http.get("/api/v3/traces/83a9efd15c1c98a977e0711cc93ee28b", params={"raw_traces": "true"})
    assert by_id.json() == response.json()


def test_api_v3_result_has_the_shape_of_jaegers_snapshot(http: httpx.Client) -> None:
    http.post("/v1/traces", content=wire("otlp_trace_request.json"), headers=JSON)
    body = http.get("/api/v3/traces", params={**EVER, "query.serviceName": "my.service"}).json()
    sample = wire_json("jaeger_v3_find_traces_sample.json")
    assert body.keys() == sample.keys() and body["result"].keys() == sample["result"].keys()
    span = body["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["traceId"], span["spanId"], span["kind"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        2,
    )
    assert span["startTimeUnixNano"] == "1544712660000000000"


def test_services_and_operations_in_both_shapes(http: httpx.Client) -> None:
    http.post("/v1/traces", content=wire("otlp_trace_request.pb"), headers=PROTO)
    http.post("/v1/traces", content=wire("jaeger_traces_sample.otlp_input.pb"), headers=PROTO)
    services = http.get("/api/services").json()
    assert services.keys() == wire_json("jaeger_services_sample.json").keys()
    assert (sorted(services["data"]), services["total"], services["errors"]) == (
        ["my.service", "telemetrygen"],
        2,
        None,
    )
    v3_services = http.get("/api/v3/services").json()
    assert v3_services.keys() == wire_json("jaeger_v3_services_sample.json").keys()
    assert sorted(v3_services["services"]) == ["my.service", "telemetrygen"]

    assert http.get("/api/services/telemetrygen/operations").json() == {
        "data": ["okey-dokey-0"],
        "total": 1,
        "limit": 0,
        "offset": 0,
        "errors": None,
    }
    operations = http.get("/api/operations", params={"service": "telemetrygen", "spanKind": "server"}).json()
    assert operations["data"] == [{"name": "okey-dokey-0", "spanKind": "server"}]
    assert operations.keys() == wire_json("jaeger_operations_v2_sample.json").keys()
    assert http.get("/api/operations", params={"service": "telemetrygen", "spanKind": "client"}).json()["data"] == []
    v3_operations = http.get("/api/v3/operations", params={"service": "telemetrygen", "spanKind": "server"}).json()
    assert v3_operations == {"operations": [{"name": "okey-dokey-0", "spanKind": "server"}]}
    assert v3_operations.keys() == wire_json("jaeger_v3_operations_sample.json").keys()


def test_query_back_by_service_operation_and_attribute(http: httpx.Client) -> None:
    http.post("/v1/traces", content=wire("otlp_trace_request.json"), headers=JSON)
    http.post("/v1/traces", content=wire("jaeger_traces_sample.otlp_input.pb"), headers=PROTO)
    found = http.get(
        "/api/v3/traces",
        params={
            **EVER,
            "query.service_name": "my.service",
            "query.operation_name": "I'm a server span",
            "query.attributes": json.dumps(
                {"my.span.attr": "some value", "my.scope.attribute": "some scope attribute"}
            ),
        },
    ).json()
    assert len(found["result"]["resourceSpans"]) == 1
    legacy = http.get(
        "/api/traces",
        params={"service": "telemetrygen", "tags": json.dumps({"net.peer.ip": "1.2.3.4"}), "start": "0", "limit": "20"},
    ).json()
    assert [t["traceID"] for t in legacy["data"]] == ["83a9efd15c1c98a977e0711cc93ee28b"]
    # The value is compared exactly, not as a pattern.
    none = http.get(
        "/api/traces", params={"service": "telemetrygen", "tag": "net.peer.ip:1.2.3.X", "start": "0"}
    ).json()
    assert none["data"] == []


# --------------------------------------------------------------------------- errors as Jaeger writes them


def test_legacy_missing_service_is_jaegers_exact_400(http: httpx.Client) -> None:
    response = http.get("/api/traces", params={"operation": "x"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == wire("jaeger_error_400_sample.txt")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"service": "s", "start": "x"},
            "unable to parse param 'start': strconv.ParseInt: parsing \"x\": invalid syntax",
        ),
        (
            {"service": "s", "tags": '{"x":123}'},
            "malformed 'tags' parameter, cannot unmarshal JSON: json: cannot unmarshal number into Go value of type string",
        ),
        ({"service": "s", "tag": "k"}, "malformed 'tag' parameter, expecting key:value, received: k"),
        (
            {"service": "s", "minDuration": "20"},
            "unable to parse param 'minDuration': time: missing unit in duration \"20\"",
        ),
        (
            {"service": "s", "minDuration": "2s", "maxDuration": "1s"},
            "'maxDuration' should be greater than 'minDuration'",
        ),
        ({"service": "s", "limit": "0"}, "invalid parameter: limit must be greater than 0"),
    ],
)
def test_legacy_parameter_errors(http: httpx.Client, params: dict[str, str], message: str) -> None:
    response = http.get("/api/traces", params=params)
    assert response.status_code == 400
    assert response.json() == {
        "data": None,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{"code": 400, "msg": message}],
    }


def test_legacy_trace_not_found(http: httpx.Client) -> None:
    by_search = http.get("/api/traces", params={"traceID": "1"})
    assert by_search.status_code == 200
    assert by_search.json() == wire_json("jaeger_search_by_traceid_not_found_sample.json")
    by_path = http.get("/api/traces/0000000000000001")
    assert by_path.status_code == 404
    assert by_path.json()["errors"] == [{"code": 404, "msg": "trace not found"}]


def test_api_v3_not_found_and_malformed(http: httpx.Client) -> None:
    empty = http.get("/api/v3/traces", params={**EVER, "query.service_name": "nobody"})
    assert (empty.status_code, empty.headers["content-type"]) == (404, "text/plain; charset=utf-8")
    assert empty.text == '{"error":{"httpCode":404,"message":"No traces found"}}\n'
    assert http.get("/api/v3/traces/00000000000000000000000000000001").status_code == 404

    missing_times = http.get("/api/v3/traces", params={"query.service_name": "s"})
    assert missing_times.status_code == 400
    assert missing_times.json()["error"]["message"] == "query.startTimeMin and query.startTimeMax are required"
    for name, value in [
        ("query.attributes", '{"a": 1}'),
        ("query.search_depth", "many"),
        ("query.duration_min", "5 parsecs"),
    ]:
        response = http.get("/api/v3/traces", params={**EVER, "query.service_name": "s", name: value})
        assert response.status_code == 400
        assert response.json()["error"] == {"httpCode": 400, "message": response.json()["error"]["message"]}
        assert response.json()["error"]["message"].startswith(f"malformed parameter {name}: ")
    bad_time = http.get("/api/v3/traces", params={**EVER, "query.start_time_min": "yesterday"})
    assert bad_time.json()["error"]["message"].startswith("malformed parameter query.start_time_min: ")
    assert http.get("/api/v3/traces/not-hex").status_code == 400


# --------------------------------------------------------------------------- matching rules (no HTTP)


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _request(service: str, spans: list[Span], **resource_attrs: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans: ResourceSpans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [_kv("service.name", service)] + [_kv(k, v) for k, v in resource_attrs.items()]
    )
    scope_spans: ScopeSpans = resource_spans.scope_spans.add()
    scope_spans.spans.extend(spans)
    return request


def _span(
    trace: int,
    span: int,
    name: str,
    start_s: int = 1_700_000_000,
    duration_ms: int = 10,
    status: int = 0,
    attrs: dict[str, str | int | bool] | None = None,
) -> Span:
    start = start_s * 10**9
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ms * 10**6,
        attributes=[_kv(k, v) for k, v in (attrs or {}).items()],
        status=Status(code=status),  # type: ignore[arg-type]
    )


def _found(store: TraceStore, **query: Any) -> list[int]:
    traces = store.find_traces(TraceQuery(**query))
    return [int.from_bytes(spans[0].trace_id, "big") for spans in traces]


def test_all_conditions_must_hold_on_one_span() -> None:
    store = TraceStore()
    store.add(
        _request(
            "svc",
            [
                _span(1, 1, "projection.process_batch", attrs={"wordloom.claim_batch_id": "B"}),
                _span(1, 2, "outbox.process", attrs={"wordloom.outbox_event_id": "E"}),
            ],
        )
    )
    assert _found(store, service_name="svc", attributes={"wordloom.outbox_event_id": "E"}) == [1]
    assert _found(
        store, service_name="svc", operation_name="outbox.process", attributes={"wordloom.outbox_event_id": "E"}
    ) == [1]
    assert _found(store, operation_name="projection.process_batch", attributes={"wordloom.outbox_event_id": "E"}) == []
    assert _found(store, attributes={"wordloom.outbox_event_id": "E", "wordloom.claim_batch_id": "B"}) == []
    # The result is the whole trace, not only the matching span.
    whole = store.find_traces(TraceQuery(attributes={"wordloom.outbox_event_id": "E"}))
    assert [s.proto.name for s in whole[0]] == ["projection.process_batch", "outbox.process"]


def test_tags_are_compared_as_strings_against_span_and_resource_attributes() -> None:
    store = TraceStore()
    store.add(_request("svc", [_span(1, 1, "op", attrs={"batch_size": 200, "noop": True})], **{"host.name": "box"}))
    assert _found(store, attributes={"batch_size": "200", "noop": "true", "host.name": "box"}) == [1]
    assert _found(store, attributes={"resource.host.name": "box"}) == [1]
    assert _found(store, attributes={"resource.batch_size": "200"}) == []
    assert _found(store, attributes={"batch_size": "200.0"}) == []
    assert _found(store, attributes={"noop": "True"}) == []


def test_reserved_keys_error_kind_and_status() -> None:
    store = TraceStore()
    store.add(
        _request(
            "svc",
            [_span(1, 1, "a", status=Status.STATUS_CODE_ERROR), _span(2, 1, "b", status=Status.STATUS_CODE_UNSET)],
        )
    )
    assert _found(store, attributes={"error": "true"}) == [1]
    assert _found(store, attributes={"error": "false"}) == []  # UNSET is not OK
    assert _found(store, attributes={"span.status": "error"}) == [1]
    assert _found(store, attributes={"error": "maybe"}) == []


def test_time_window_duration_newest_first_and_limit() -> None:
    store = TraceStore()
    for number in range(1, 6):
        store.add(_request("svc", [_span(number, 1, "op", start_s=1_700_000_000 + number, duration_ms=number * 10)]))
    assert _found(store, service_name="svc") == [5, 4, 3, 2, 1]
    assert _found(store, service_name="svc", search_depth=2) == [5, 4]
    assert _found(store, start_time_min_ns=1_700_000_002 * 10**9, start_time_max_ns=1_700_000_004 * 10**9) == [4, 3, 2]
    assert _found(store, duration_min_ns=parse_go_duration("30ms"), duration_max_ns=parse_go_duration("40ms")) == [4, 3]


def test_memory_is_bounded_oldest_spans_dropped_first() -> None:
    store = TraceStore(max_spans=10)
    for number in range(1, 26):
        store.add(_request("svc", [_span(number, 1, "op")]))
    assert store.span_count == 10 and store.trace_count == 10
    assert store.get_trace((15).to_bytes(16, "big")) is None
    assert store.get_trace((16).to_bytes(16, "big")) is not None
    # Spans of one trace are dropped oldest first, keeping the trace until its last span goes.
    store.add(_request("svc", [_span(99, n, "op") for n in range(1, 11)]))
    store.add(_request("svc", [_span(100, 1, "op")]))
    remaining = store.get_trace((99).to_bytes(16, "big"))
    assert remaining is not None and [int.from_bytes(s.proto.span_id, "big") for s in remaining] == list(range(2, 11))
    assert store.services() == ["svc"]  # like Jaeger, services outlive their spans


def test_bounded_memory_through_the_server() -> None:
    with TraceStoreServer(max_spans=3) as small, httpx.Client(base_url=small.url) as client:
        for number in range(1, 6):
            body = _request("svc", [_span(number, 1, "op")]).SerializeToString()
            assert client.post("/v1/traces", content=body, headers=PROTO).status_code == 200
        assert small.store.span_count == 3
        found = client.get("/api/traces", params={"service": "svc", "start": "0"}).json()["data"]
        assert [trace["traceID"] for trace in found] == [f"{n:016x}" for n in (5, 4, 3)]


def test_parsers_follow_go() -> None:
    assert parse_rfc3339_nano("2024-01-02T03:04:05.123456789Z") == 1704164645123456789
    assert parse_rfc3339_nano("2024-01-02T04:04:05+01:00") == 1704164645 * 10**9
    assert parse_go_duration("1.5s") == 1_500_000_000 and parse_go_duration("1h2m") == 3_720 * 10**9
    for bad in ("20", "5x", "", "ms"):
        with pytest.raises(ValueError, match="time: "):
            parse_go_duration(bad)


def test_server_lifecycle_and_loopback_only() -> None:
    server = TraceStoreServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent
    from drillui.errors import UsageError

    with pytest.raises(UsageError):
        TraceStoreServer(host="0.0.0.0")


# --------------------------------------------------------------------------- indexes and bounds


SERVICES = ("svc-a", "svc-b", "wordloom-search-outbox-worker")
OPERATIONS = ("outbox.claim_batch", "projection.process_batch", "outbox.process", "outbox.reclaim")


def _random_request(rnd: random.Random, trace_pool: list[int], span_counter: list[int]) -> ExportTraceServiceRequest:
    """Spans with every place a value can hide: span, resource, scope, events, links, repeated keys."""
    request = ExportTraceServiceRequest()
    for _ in range(rnd.randint(1, 2)):
        resource_spans = request.resource_spans.add()
        resource_attrs = [_kv("service.name", rnd.choice(SERVICES))]
        if rnd.random() < 0.3:
            resource_attrs.append(_kv("wordloom.worker_id", f"w{rnd.randint(1, 3)}"))
        if rnd.random() < 0.2:
            resource_attrs.append(_kv("host.name", rnd.choice(("box1", "box2"))))
        resource_spans.resource.attributes.extend(resource_attrs)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = rnd.choice(("worker.relay", "other"))
        if rnd.random() < 0.2:
            scope_spans.scope.attributes.append(_kv("result", "ok"))
        for _ in range(rnd.randint(0, 12)):
            span_counter[0] += 1
            if not trace_pool or rnd.random() < 0.3:
                trace_pool.append(rnd.getrandbits(64) | 1)
            attrs: dict[str, str | int | bool] = {"wordloom.claim_batch_id": f"b{rnd.randint(1, 25)}", "attempt": rnd.randint(1, 3)}
            if rnd.random() < 0.6:
                attrs["wordloom.outbox_event_id"] = f"e{span_counter[0]}"
            if rnd.random() < 0.5:
                attrs["result"] = rnd.choice(("ok", "retry", "failed"))
            if rnd.random() < 0.3:
                attrs["http.route"] = rnd.choice(("/a", "/b"))
            if rnd.random() < 0.2:
                attrs["batch_size"] = rnd.choice((10, 20))
            span = _span(
                rnd.choice(trace_pool[-8:]),
                span_counter[0],
                rnd.choice(OPERATIONS),
                start_s=1_700_000_000 + rnd.randint(0, 100),
                duration_ms=rnd.randint(1, 50),
                status=rnd.choice((0, 0, 1, 2)),
                attrs=attrs,
            )
            if rnd.random() < 0.1:  # the same key twice on one span: the first one counts
                span.attributes.append(_kv("result", "twice"))
            if rnd.random() < 0.15:
                event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano)
                event.attributes.extend([_kv("wordloom.outbox_event_id", f"e{rnd.randint(1, span_counter[0])}"), _kv("reason", "es_4xx")])
            if rnd.random() < 0.1:
                link = span.links.add(trace_id=rnd.getrandbits(128).to_bytes(16, "big"), span_id=(7).to_bytes(8, "big"))
                link.attributes.append(_kv("wordloom.claim_batch_id", f"b{rnd.randint(1, 25)}"))
            scope_spans.spans.append(span)
    return request


def _random_query(rnd: random.Random, last_span: int) -> TraceQuery:
    attributes: dict[str, str] = {}
    for _ in range(rnd.randint(0, 2)):
        key, value = rnd.choice(
            [
                ("wordloom.claim_batch_id", f"b{rnd.randint(1, 26)}"),
                ("wordloom.outbox_event_id", f"e{rnd.randint(max(1, last_span - 300), last_span + 1)}"),
                ("result", rnd.choice(("ok", "retry", "failed", "twice"))),
                ("reason", "es_4xx"),
                ("wordloom.worker_id", f"w{rnd.randint(1, 3)}"),
                ("resource.wordloom.worker_id", f"w{rnd.randint(1, 3)}"),
                ("resource.host.name", "box1"),
                ("host.name", "box2"),
                ("http.route", "/a"),  # not indexed until asked: built on first use
                ("batch_size", "20"),
                ("attempt", "2"),
                ("error", "true"),
                ("span.kind", "internal"),
                ("scope.name", "worker.relay"),
            ]
        )
        attributes[key] = value
    return TraceQuery(
        service_name=rnd.choice(("", *SERVICES, "nobody")),
        operation_name=rnd.choice(("", "", *OPERATIONS)),
        attributes=attributes,
        start_time_min_ns=rnd.choice((None, (1_700_000_000 + rnd.randint(0, 60)) * 10**9)),
        start_time_max_ns=rnd.choice((None, None, (1_700_000_000 + rnd.randint(40, 100)) * 10**9)),
        duration_min_ns=rnd.choice((0, 0, 20 * 10**6)),
        search_depth=rnd.choice((1, 3, 20, 100)),
    )


def _seqs(traces: list[list[StoredSpan]]) -> list[list[int]]:
    return [[span.seq for span in trace] for trace in traces]


@pytest.mark.parametrize("seed", range(6))
def test_indexed_answers_equal_a_linear_scan_through_eviction(seed: int) -> None:
    rnd = random.Random(seed)
    # Small bounds, so that eviction (by count, and by bytes for odd seeds) runs all along.
    store = TraceStore(max_spans=rnd.choice((150, 400)), max_bytes=(300_000 if seed % 2 else 10**9))
    traces: list[int] = []
    counter = [0]
    for _ in range(120):
        store.add(_random_request(rnd, traces, counter))
        for _ in range(8):
            query = _random_query(rnd, counter[0])
            for raw in (True, False):
                assert _seqs(store.find_traces(query, raw=raw)) == _seqs(store.find_traces_linear(query, raw=raw)), query
    assert store.span_count <= store.max_spans and store.byte_count <= store.max_bytes
    assert "http.route" in store.indexed_keys()


def test_the_indexes_shrink_with_eviction() -> None:
    store = TraceStore(max_spans=1000)
    for number in range(1, 20_001):
        store.add(_request("svc", [_span(number, 1, "op", attrs={"wordloom.outbox_event_id": f"e{number}"})]))
    sizes = store.index_sizes()
    # What the indexes hold beyond the live spans is at most one partly dropped segment.
    assert store.span_count == 1000
    assert sizes["segments"] <= 1000 // 64 + 2
    assert 1000 <= sizes["attribute:wordloom.outbox_event_id"] <= 1000 + 64
    assert sizes["service"] <= 1000 + 64
    assert _found(store, attributes={"wordloom.outbox_event_id": "e18999"}) == []  # dropped, not found
    assert _found(store, attributes={"wordloom.outbox_event_id": "e19001"}) == [19001]
    assert _found(store, service_name="svc", search_depth=2) == [20000, 19999]


def _big_span(number: int, megabytes: int) -> Span:
    return _span(number, 1, "op", attrs={"blob": "x" * (megabytes * 1024 * 1024), "wordloom.outbox_event_id": f"e{number}"})


def test_memory_is_bounded_by_bytes_too() -> None:
    store = TraceStore(max_spans=10_000, max_bytes=8 * 1024 * 1024)
    for number in range(1, 41):
        store.add(_request("svc", [_big_span(number, 1)]))
        assert store.byte_count <= store.max_bytes
    assert 4 <= store.span_count <= 8
    assert _found(store, attributes={"wordloom.outbox_event_id": "e40"}) == [40]
    assert _found(store, attributes={"wordloom.outbox_event_id": "e20"}) == []


def test_a_request_larger_than_the_store_is_refused_whole() -> None:
    store = TraceStore(max_bytes=2 * 1024 * 1024)
    store.add(_request("svc", [_span(1, 1, "op")]))
    with pytest.raises(RequestTooLarge, match="DRILLUI_TRACE_MAX_BYTES"):
        store.add(_request("svc", [_span(2, 1, "op"), _big_span(3, 3)]))
    assert store.span_count == 1 and _found(store, service_name="svc") == [1]


def test_oversize_requests_get_413_and_big_spans_do_not_grow_memory() -> None:
    limit = 8 * 1024 * 1024
    with TraceStoreServer(max_bytes=limit) as small, httpx.Client(base_url=small.url, timeout=30) as client:
        too_big = _request("svc", [_big_span(1, 9)]).SerializeToString()
        response = client.post("/v1/traces", content=too_big, headers=PROTO)
        assert response.status_code == 413
        # Under the body limit, but with the per-span cost the store would still overflow.
        many = _request("svc", [_span(n, 1, "op", attrs={"pad": "y" * 300}) for n in range(1, 20_001)]).SerializeToString()
        assert len(many) < limit
        response = client.post("/v1/traces", content=many, headers=PROTO)
        assert response.status_code == 413
        assert "DRILLUI_TRACE_MAX_BYTES" in status_pb2.Status.FromString(response.content).message
        assert small.store.span_count == 0

        gc.collect()
        before = psutil.Process().memory_info().rss
        for number in range(1, 31):
            body = _request("svc", [_big_span(number, 3)]).SerializeToString()
            assert client.post("/v1/traces", content=body, headers=PROTO).status_code == 200
            assert small.store.byte_count <= limit
        gc.collect()
        grown = psutil.Process().memory_info().rss - before
    # 90 MiB were sent; the store keeps at most 8 MiB of it (the rest is transient buffers).
    assert grown < 48 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"


def test_trace_store_byte_limit_is_a_setting() -> None:
    from drillui.errors import UsageError
    from drillui.stack.stack import max_bytes_setting

    assert max_bytes_setting({}) == 256 * 1024 * 1024
    assert max_bytes_setting({"DRILLUI_TRACE_MAX_BYTES": "64MiB"}) == 64 * 1024 * 1024
    assert max_bytes_setting({"DRILLUI_TRACE_MAX_BYTES": "1g"}) == 1024**3
    assert max_bytes_setting({"DRILLUI_TRACE_MAX_BYTES": "2000000"}) == 2_000_000
    for bad in ("lots", "-5", "10", "5 parsecs", "1e9", "99999999999999999999"):
        with pytest.raises(UsageError, match="DRILLUI_TRACE_MAX_BYTES"):
            max_bytes_setting({"DRILLUI_TRACE_MAX_BYTES": bad})


def test_a_key_indexed_on_first_query_finds_its_values_wherever_they_are() -> None:
    store = TraceStore()

    def add(trace: int, place: str) -> None:
        span = _span(trace, 1, "op")
        resource: dict[str, str] = {}
        if place == "span":
            span.attributes.append(_kv("tenant", "t1"))
        elif place == "event":
            span.events.add(name="e").attributes.append(_kv("tenant", "t1"))
        elif place == "link":
            span.links.add(trace_id=(99).to_bytes(16, "big"), span_id=(9).to_bytes(8, "big")).attributes.append(_kv("tenant", "t1"))
        elif place == "resource":
            resource["tenant"] = "t1"
        request = _request("svc", [span], **resource)
        if place == "scope":
            request.resource_spans[0].scope_spans[0].scope.attributes.append(_kv("tenant", "t1"))
        store.add(request)

    places = ("span", "resource", "scope", "event", "link")
    for trace, place in enumerate(places, start=1):
        add(trace, place)
    assert "tenant" not in store.indexed_keys()
    assert _found(store, attributes={"tenant": "t1"}) == [5, 4, 3, 2, 1]  # built now, from stored spans
    assert "tenant" in store.indexed_keys()
    for trace, place in enumerate(places, start=6):  # and kept up to date by the ingest path
        add(trace, place)
    assert _found(store, attributes={"tenant": "t1"}) == list(range(10, 0, -1))
    assert _found(store, attributes={"resource.tenant": "t1"}) == [7, 2]
