"""The Jaeger query client: parsing of every upstream sample, API fallback, and end-to-end search."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from drillui.sources.traces import JaegerClient, Span, Trace, TraceQueryError
from drillui.stack.tracestore import TraceStoreServer

WIRE = Path(__file__).resolve().parent / "fixtures" / "wire"
SERVICE = "wordloom-search-outbox-worker"
BASE = "http://jaeger.test:16686"


class Window(TypedDict):
    start: datetime
    end: datetime


WIDE = Window(start=datetime(2000, 1, 1, tzinfo=UTC), end=datetime(2100, 1, 1, tzinfo=UTC))


def wire_json(name: str) -> Any:
    return json.loads((WIRE / name).read_bytes())


def envelope(*traces: Any) -> dict[str, Any]:
    return {"data": list(traces), "total": 0, "limit": 0, "offset": 0, "errors": None}


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def mock() -> Iterator[Callable[[Handler], JaegerClient]]:
    """A JaegerClient whose HTTP answers come from a handler; closed after the test."""
    clients: list[httpx.Client] = []

    def make(handler: Handler, **options: Any) -> JaegerClient:
        http = httpx.Client(transport=httpx.MockTransport(handler))
        clients.append(http)
        return JaegerClient(BASE, client=http, **options)

    yield make
    for http in clients:
        http.close()


def plain_404_for_v3(legacy: Handler) -> Handler:
    """A Jaeger without api_v3: Go's mux answers its paths with a plain-text 404."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v3/"):
            return httpx.Response(404, text="404 page not found\n")
        return legacy(request)

    return handle


def serving(body: Any, seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    return handle


# --------------------------------------------------------------------------- parsing the samples


def test_parses_legacy_traces_sample(mock: Callable[..., JaegerClient]) -> None:
    body = wire_json("jaeger_traces_sample.json")
    client = mock(plain_404_for_v3(serving(body, [])))
    result = client.find_traces("telemetrygen", "okey-dokey-0", {}, **WIDE)
    assert (result.api, result.status_code, result.body) == ("api_legacy", 200, body)
    [trace] = result.traces
    assert trace.trace_id == "83a9efd15c1c98a977e0711cc93ee28b" and len(trace.spans) == 2
    span = trace.spans[0]
    assert span == Span(
        trace_id="83a9efd15c1c98a977e0711cc93ee28b",
        span_id="e127af99e3b3e074",
        parent_span_id="909541b92cf05311",
        operation="okey-dokey-0",
        service="telemetrygen",
        start_unix_nano=1706678909209712000,
        duration_ns=123000,
        attributes={"net.peer.ip": "1.2.3.4", "peer.service": "telemetrygen-client"},
        resource={"service.name": "telemetrygen"},
        status="UNSET",
        events=[],
        kind="server",
        scope_name="telemetrygen",
    )


def test_parses_ui_01_typed_tags_logs_references(mock: Callable[..., JaegerClient]) -> None:
    client = mock(plain_404_for_v3(serving(envelope(wire_json("jaeger_trace_ui_01.json")), [])))
    [trace] = client.find_traces("service-x", "", {}, **WIDE).traces
    assert trace.trace_id == "0" * 31 + "1"
    first, typed, child, multi_ref, _ = trace.spans
    assert [(e.name, e.attributes, e.time_unix_nano) for e in first.events] == [
        ("some-event", {}, 1485467191639875000),
        ("", {"x": "y"}, 1485467191639875000),
    ]
    assert typed.status == "ERROR" and "error" not in typed.attributes
    assert typed.attributes == {
        "peer.service": "service-y",
        "peer.ipv4": 23456,
        "temperature": 72.5,
        "javascript_limit": 9223372036854775222,
        "blob": "AAAwOQ==",
    }
    assert (child.service, child.parent_span_id) == ("service-y", "0000000000000002")
    # The first CHILD_OF reference points to another trace, so the parent is the next one.
    assert multi_ref.parent_span_id == "0000000000000002"
    assert first.events[0].time == datetime(2017, 1, 26, 21, 46, 31, 639875, tzinfo=UTC)


def test_parses_hand_written_ui_trace_with_non_hex_ids(mock: Callable[..., JaegerClient]) -> None:
    client = mock(plain_404_for_v3(serving(envelope(wire_json("jaeger_ui_testTrace.json")), [])))
    [trace] = client.find_traces("service1", "", {}, **WIDE).traces
    assert trace.trace_id == "trace-123" and len(trace.spans) == 11
    by_id = {span.span_id: span for span in trace.spans}
    assert by_id["span-2"].status == "ERROR" and by_id["span-2"].kind == "client"
    assert by_id["span-2"].parent_span_id == "span-1" and by_id["span-1"].parent_span_id is None
    assert by_id["span-7"].parent_span_id is None  # FOLLOWS_FROM is not a parent
    assert by_id["span-4"].resource == {"service.name": "service2", "hostname": "foobar.org"}


def test_parses_api_v3_sample(mock: Callable[..., JaegerClient]) -> None:
    body = wire_json("jaeger_v3_find_traces_sample.json")
    seen: list[httpx.Request] = []
    client = mock(serving(body, seen))
    result = client.find_traces("foo", "foobar", {}, **WIDE)
    assert (result.api, result.body, client.api) == ("api_v3", body, "api_v3")
    assert result.traces == [
        Trace(
            "0" * 31 + "1",
            [
                Span(
                    trace_id="0" * 31 + "1",
                    span_id="0000000000000002",
                    parent_span_id=None,
                    operation="foobar",
                    service="",
                    start_unix_nano=0,
                    duration_ns=0,
                    attributes={},
                    resource={},
                    status="ERROR",
                    events=[],
                    kind="server",
                )
            ],
        )
    ]
    params = seen[0].url.params
    assert seen[0].url.path == "/api/v3/traces"
    assert params["query.service_name"] == "foo" and params["query.operation_name"] == "foobar"
    assert params["query.start_time_min"] == "2000-01-01T00:00:00.000000000Z"
    assert params["query.start_time_max"] == "2100-01-01T00:00:00.000000000Z"
    assert params["query.search_depth"] == params["query.num_traces"] == "20"


def test_services_and_operations_in_both_shapes(mock: Callable[..., JaegerClient]) -> None:
    def v3(request: httpx.Request) -> httpx.Response:
        name = "services" if request.url.path.endswith("services") else "operations"
        return httpx.Response(200, json=wire_json(f"jaeger_v3_{name}_sample.json"))

    client = mock(v3)
    assert (client.services(), client.operations("foo")) == (["foo"], ["get_users"])

    def legacy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/services":
            return httpx.Response(200, json=wire_json("jaeger_services_sample.json"))
        assert request.url.raw_path == b"/api/services/abc%2Ftrifle/operations"
        return httpx.Response(200, json=wire_json("jaeger_operations_sample.json"))

    client = mock(plain_404_for_v3(legacy))
    assert (client.services(), client.operations("abc/trifle"), client.api) == (
        ["trifle", "bling"],
        ["", "get"],
        "api_legacy",
    )


# --------------------------------------------------------------------------- API detection and errors


def test_v3_no_traces_found_is_an_empty_result_not_a_missing_api(mock: Callable[..., JaegerClient]) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, text='{"error":{"httpCode":404,"message":"No traces found"}}\n')

    result = mock(handle).find_traces(SERVICE, "outbox.process", {"wordloom.outbox_event_id": "x"}, **WIDE)
    assert (result.api, result.status_code, result.traces) == ("api_v3", 404, [])
    assert result.body == {"error": {"httpCode": 404, "message": "No traces found"}}
    assert [r.url.path for r in seen] == ["/api/v3/traces"]


def test_plain_404_falls_back_to_legacy_and_is_remembered(mock: Callable[..., JaegerClient]) -> None:
    seen: list[httpx.Request] = []
    client = mock(plain_404_for_v3(serving(envelope(), seen)))
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 1, tzinfo=UTC)
    first = client.find_traces(
        SERVICE, "outbox.process", {"wordloom.outbox_event_id": "e1"}, start=start, end=end, limit=7
    )
    assert (first.api, first.traces, client.api) == ("api_legacy", [], "api_legacy")
    assert dict(seen[0].url.params) == {
        "service": SERVICE,
        "operation": "outbox.process",
        "tags": '{"wordloom.outbox_event_id":"e1"}',
        "start": "1704067200000000",
        "end": "1704070800000000",
        "limit": "7",
    }
    assert first.url == str(seen[0].url)
    client.find_traces(SERVICE, "", {}, start=start, end=end)
    assert len(seen) == 2  # the second query went straight to the legacy search


def test_api_v3_that_ignores_attributes_is_corrected_by_the_legacy_search(mock: Callable[..., JaegerClient]) -> None:
    v3_body = wire_json("jaeger_v3_find_traces_sample.json")  # a span without the asked attribute
    legacy_seen: list[httpx.Request] = []
    legacy = serving(envelope(), legacy_seen)

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=v3_body) if request.url.path.startswith("/api/v3/") else legacy(request)

    client = mock(handle)
    result = client.find_traces("", "foobar", {"wordloom.outbox_event_id": "e1"}, **WIDE)
    assert (result.api, result.traces, len(legacy_seen)) == ("api_legacy", [], 1)


def test_http_and_connection_errors_name_the_url(mock: Callable[..., JaegerClient]) -> None:
    client = mock(lambda request: httpx.Response(500, text='{"error":{"httpCode":500,"message":"storage down"}}\n'))
    with pytest.raises(
        TraceQueryError, match=r"^GET http://jaeger\.test:16686/api/v3/traces\?.*HTTP 500: storage down$"
    ):
        client.find_traces(SERVICE, "", {}, **WIDE)

    legacy_400 = (WIRE / "jaeger_error_400_sample.txt").read_text()
    client = mock(plain_404_for_v3(lambda request: httpx.Response(400, text=legacy_400)))
    with pytest.raises(TraceQueryError, match="HTTP 400: parameter 'service' is required") as caught:
        client.find_traces("", "", {}, **WIDE)
    assert caught.value.status_code == 400 and "\n" not in str(caught.value)

    client = mock(lambda request: httpx.Response(404, text="404 page not found\n"))
    with pytest.raises(TraceQueryError, match="neither the api_v3 nor the legacy"):
        client.find_traces(SERVICE, "", {}, **WIDE)

    stopped = TraceStoreServer()
    stopped.start()
    url = stopped.url
    stopped.stop()
    with (
        JaegerClient(url, timeout=2.0) as client,
        pytest.raises(TraceQueryError, match=f"^GET {url}/api/v3/services: cannot connect"),
    ):
        client.services()


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def server() -> Iterator[TraceStoreServer]:
    with TraceStoreServer() as running:
        yield running


def export_drill_spans(endpoint: str, *, compression: Compression = Compression.NoCompression) -> dict[str, str]:
    """Spans shaped like the worker's: one batch span with two per-event children."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, compression=compression)))
    tracer = provider.get_tracer("wordloom.outbox")
    ids = {"batch": "7d1f6c2e-batch", "event": "0b3c1a52-event", "other_event": "9e8d7c6b-event"}
    try:
        with tracer.start_as_current_span(
            "projection.process_batch",
            attributes={
                "wordloom.claim_batch_id": ids["batch"],
                "projection": "search_index_to_elastic",
                "batch_size": 2,
            },
        ) as batch:
            for event_id, result in ((ids["event"], "ok"), (ids["other_event"], "retry")):
                with tracer.start_as_current_span(
                    "outbox.process",
                    attributes={
                        "wordloom.outbox_event_id": event_id,
                        "projection": "search_index_to_elastic",
                        "op": "upsert",
                        "attempt": 1,
                        "result": result,
                    },
                ) as span:
                    if result == "retry":
                        span.add_event("es.bulk_item_failed", {"status_code": 429})
            batch.set_status(Status(StatusCode.ERROR, "1 retry"))
    finally:
        provider.shutdown()
    return ids


def _comparable(trace: Trace) -> set[tuple[Any, ...]]:
    # The legacy model has microsecond precision; compare both shapes at that precision.
    return {
        (
            s.span_id,
            s.parent_span_id,
            s.operation,
            s.service,
            s.start_unix_nano // 1000,
            s.duration_ns // 1000,
            json.dumps(s.attributes, sort_keys=True),
            json.dumps(s.resource, sort_keys=True),
            s.status,
            s.kind,
            s.status_message,
            s.scope_name,
            tuple((e.name, e.time_unix_nano // 1000, json.dumps(e.attributes)) for e in s.events),
        )
        for s in trace.spans
    }


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_spans_are_found_by_each_pivot_in_both_api_shapes(
    server: TraceStoreServer, compression: Compression
) -> None:
    ids = export_drill_spans(server.url + "/v1/traces", compression=compression)
    window = Window(start=datetime.now(UTC) - timedelta(minutes=5), end=datetime.now(UTC) + timedelta(minutes=1))
    with JaegerClient(server.url) as v3, JaegerClient(server.url, api="api_legacy") as legacy:
        results = []
        for client, api in ((v3, "api_v3"), (legacy, "api_legacy")):
            by_event = client.find_traces(
                SERVICE, "outbox.process", {"wordloom.outbox_event_id": ids["event"]}, **window
            )
            by_batch = client.find_traces(
                SERVICE, "projection.process_batch", {"wordloom.claim_batch_id": ids["batch"]}, **window
            )
            assert by_event.api == by_batch.api == client.api == api
            assert by_event.status_code == 200 and len(by_event.traces) == len(by_batch.traces) == 1
            trace = by_event.traces[0]
            assert trace == by_batch.traces[0]
            assert sorted(s.operation for s in trace.spans) == [
                "outbox.process",
                "outbox.process",
                "projection.process_batch",
            ]
            batch = trace.spans_named("projection.process_batch")[0]
            assert (batch.status, batch.status_message, batch.attributes["batch_size"]) == ("ERROR", "1 retry", 2)
            assert all(s.parent_span_id == batch.span_id for s in trace.spans_named("outbox.process"))
            retry = next(s for s in trace.spans if s.attributes.get("result") == "retry")
            assert [(e.name, e.attributes) for e in retry.events] == [("es.bulk_item_failed", {"status_code": 429})]
            results.append(trace)

            # Two pivots, never mixed: every condition must hold on one single span.
            mixed = client.find_traces(
                SERVICE, "projection.process_batch", {"wordloom.outbox_event_id": ids["event"]}, **window
            )
            both = client.find_traces(
                SERVICE,
                "outbox.process",
                {"wordloom.outbox_event_id": ids["event"], "wordloom.claim_batch_id": ids["batch"]},
                **window,
            )
            assert mixed.traces == both.traces == []
            assert (
                client.find_traces(SERVICE, "", {"result": "retry", "attempt": "1"}, **window).traces[0].trace_id
                == trace.trace_id
            )

            got = client.get_trace(trace.trace_id)
            assert got.api == api and _comparable(got.traces[0]) == _comparable(trace)
            assert client.get_trace("0" * 31 + "1").traces == []
            assert client.services() == [SERVICE]
            assert sorted(client.operations(SERVICE)) == ["outbox.process", "projection.process_batch"]

        assert _comparable(results[0]) == _comparable(results[1])
        assert results[0].trace_id == results[1].trace_id and len(results[0].trace_id) == 32


def test_results_outside_the_time_window_are_not_found(server: TraceStoreServer) -> None:
    ids = export_drill_spans(server.url + "/v1/traces")
    past = Window(start=datetime(2001, 1, 1, tzinfo=UTC), end=datetime(2001, 1, 2, tzinfo=UTC))
    apis: tuple[Literal["api_v3"], Literal["api_legacy"]] = ("api_v3", "api_legacy")
    for api in apis:
        with JaegerClient(server.url, api=api) as client:
            result = client.find_traces(SERVICE, "outbox.process", {"wordloom.outbox_event_id": ids["event"]}, **past)
            assert result.traces == [] and result.api == api


def test_raw_legacy_search_against_the_store_matches_the_client_query(server: TraceStoreServer) -> None:
    ids = export_drill_spans(server.url + "/v1/traces")
    with httpx.Client(base_url=server.url) as http, JaegerClient(server.url, api="api_legacy") as client:
        direct = http.get(
            "/api/traces", params={"service": SERVICE, "tags": json.dumps({"wordloom.claim_batch_id": ids["batch"]})}
        )
        assert direct.status_code == 200
        found = client.find_traces(
            SERVICE,
            "",
            {"wordloom.claim_batch_id": ids["batch"]},
            start=datetime.now(UTC) - timedelta(hours=1),
            end=datetime.now(UTC),
        )
        assert found.body == direct.json()


def test_legacy_trace_not_found_sample_is_an_empty_result(mock: Callable[..., JaegerClient]) -> None:
    seen: list[httpx.Request] = []
    client = mock(plain_404_for_v3(serving(wire_json("jaeger_search_by_traceid_not_found_sample.json"), seen)))
    result = client.get_trace("0000000000000001")
    assert (result.api, result.traces, result.status_code) == ("api_legacy", [], 200)
    assert result.body["errors"] == [{"msg": "trace not found", "traceID": "0000000000000001"}]
    assert seen[0].url.path == "/api/traces/0000000000000001"
