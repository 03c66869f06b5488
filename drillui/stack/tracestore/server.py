"""The trace store's HTTP side: one loopback port, OTLP/HTTP in, Jaeger's query API out.

Why it exists: it is the only part that touches sockets. It reads request bodies (length, chunked,
gzip/deflate, bounded), routes paths and methods as Jaeger's router does, and writes answers with
Go's `http.Error` conventions; decoding, storage, parameter parsing and rendering are delegated
to the sibling modules.
"""

from __future__ import annotations

import binascii
import http.client
import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import unquote_plus, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from drillui.errors import UsageError
from drillui.stack.httpguard import BadRequest, LoopbackHTTPServer, check_browser_headers, content_length, set_nodelay
from drillui.stack.tracestore.jaeger import otlp_json_traces, ui_id, ui_trace
from drillui.stack.tracestore.otlp import JSON_CT, PROTO_CT, decode_otlp_json, encode_otlp
from drillui.stack.tracestore.params import (
    TEXT_CT,
    HTTPError,
    Params,
    go_int,
    legacy_error,
    legacy_find_query,
    parse_rfc3339_nano,
    parse_trace_id,
    v3_error,
    v3_find_query,
)
from drillui.stack.tracestore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SPANS,
    RequestTooLarge,
    StoredSpan,
    TraceStore,
    parse_go_bool,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 20 * 1024 * 1024
"""Largest export request, after decompression: the OpenTelemetry Collector's default (which
Jaeger's OTLP receiver uses); the SDK's batches of 512 spans are far below it."""


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise HTTPError(400, f"unsupported Content-Encoding {encoding!r}\n".encode())
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"cannot {encoding}-decode the body: {exc}") from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise HTTPError(413, b"request body too large\n")
    return out


_Route = tuple[re.Pattern[str], dict[str, str]]
_ROUTES: list[_Route] = [
    (re.compile(r"/v1/traces"), {"POST": "_otlp_export"}),
    (re.compile(r"/api/v3/services"), {"GET": "_v3_services"}),
    (re.compile(r"/api/v3/operations"), {"GET": "_v3_operations"}),
    (re.compile(r"/api/v3/traces"), {"GET": "_v3_find_traces"}),
    (re.compile(r"/api/v3/traces/(?P<trace_id>[^/]+)"), {"GET": "_v3_get_trace"}),
    (re.compile(r"/api/services"), {"GET": "_legacy_services"}),
    (re.compile(r"/api/services/(?P<service>[^/]+)/operations"), {"GET": "_legacy_service_operations"}),
    (re.compile(r"/api/operations"), {"GET": "_legacy_operations"}),
    (re.compile(r"/api/traces"), {"GET": "_legacy_find_traces"}),
    (re.compile(r"/api/traces/(?P<trace_id>[^/]+)"), {"GET": "_legacy_get_trace"}),
]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the OTLP exporter reuses its connection
    timeout = 60  # idle keep-alive connections must not pin handler threads forever

    def setup(self) -> None:
        super().setup()
        set_nodelay(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("trace store %s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        try:
            check_browser_headers(self.headers, self.server.server_port, self.request_version)
        except BadRequest as exc:
            self.close_connection = True
            self._send(exc.status, f"{exc.status} {exc.reason}\n".encode(), TEXT_CT, _go_error_headers(TEXT_CT))
            return
        url = urlsplit(self.path)
        self._params = Params(url.query)
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(url.path)
            if match is None:
                continue
            if method not in methods:
                self._drop_body()
                self._send(405, b"Method Not Allowed\n", TEXT_CT, {"Allow": ", ".join(methods)})
                return
            handler: Callable[..., None] = getattr(self, methods[method])
            try:
                handler(**match.groupdict())
            except HTTPError as exc:
                self._send(exc.status, exc.body, exc.content_type, _go_error_headers(exc.content_type))
            except (BrokenPipeError, ConnectionResetError):
                raise  # the client left; the server's handle_error notes it quietly
            except Exception as exc:
                log.warning("trace store: %s %s failed: %s: %s", method, url.path, type(exc).__name__, exc)
                log.debug("trace store: %s %s failed", method, url.path, exc_info=True)
                self.close_connection = True
                self._send(500, f"internal error: {type(exc).__name__}: {exc}\n".encode(), TEXT_CT)
            return
        self._drop_body()
        self._send(404, b"404 page not found\n", TEXT_CT, _go_error_headers(TEXT_CT))

    def _drop_body(self) -> None:
        # An unread request body would be parsed as the next request: close instead.
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, payload: Any, content_type: str = JSON_CT, *, indent: int | None = None) -> None:
        separators = (",", ":") if indent is None else (",", ": ")
        text = json.dumps(payload, separators=separators, indent=indent, ensure_ascii=False)
        self._send(200, text.encode(), content_type)

    # ---- OTLP/HTTP receiver

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        chunked = self.headers.get("Transfer-Encoding", "").strip().lower()
        try:
            length = content_length(self.headers, limit)
        except BadRequest as exc:
            self.close_connection = True
            raise HTTPError(exc.status, f"{exc.reason}\n".encode()) from None
        if chunked:
            if chunked != "chunked" or length is not None:
                # Both framings at once is how request smuggling starts: refuse, as Go does.
                self.close_connection = True
                raise HTTPError(400, b"unsupported Transfer-Encoding or Content-Length beside it\n")
            return self._read_chunked(limit)
        if length is None:
            self.close_connection = True
            raise HTTPError(411, b"Content-Length required\n")
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            size_text = size_line.split(b";")[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_text):
                self.close_connection = True
                raise HTTPError(400, b"malformed chunked body\n")
            size = int(size_text, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields carry nothing we use
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise HTTPError(413, b"request body too large\n")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _otlp_export(self) -> None:
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._read_body()
        if media_type not in (PROTO_CT, JSON_CT):
            raise HTTPError(415, f"415 unsupported media type, supported: [{JSON_CT}, {PROTO_CT}]\n".encode())
        try:
            body = _decompress(body, self.headers.get("Content-Encoding", ""), self.server.max_body_bytes)
            if media_type == PROTO_CT:
                request = ExportTraceServiceRequest.FromString(body)
            else:
                request = decode_otlp_json(body)
        except (ValueError, DecodeError, json_format.ParseError, binascii.Error, RecursionError) as exc:
            # ParseError and JSONDecodeError are ValueErrors; DecodeError is not. RecursionError:
            # JSON nested deeper than Python's recursion limit (Go's decoder stops at 10,000).
            status = status_pb2.Status(code=3, message=f"cannot decode the export request: {exc}")  # INVALID_ARGUMENT
            raise HTTPError(400, *encode_otlp(status, media_type)) from exc
        try:
            # A protobuf body's length is its decoded size; a JSON body's is not (it is computed).
            rejected, reason = self.server.store.add(request, len(body) if media_type == PROTO_CT else None)
        except RequestTooLarge as exc:
            status = status_pb2.Status(code=8, message=str(exc))  # RESOURCE_EXHAUSTED
            raise HTTPError(413, *encode_otlp(status, media_type)) from exc
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=reason))
        self._send(200, *encode_otlp(response, media_type))

    # ---- api_v3

    def _v3_services(self) -> None:
        # Jaeger marshals api_v3 with jsonpb and no Content-Type, so Go sniffs text/plain.
        self._send_json({"services": self.server.store.services()}, TEXT_CT)

    def _v3_operations(self) -> None:
        service, _ = self._params.get("service")
        kind, _ = self._params.get("spanKind", "span_kind")
        operations = [
            {"name": name, "spanKind": op_kind or "internal"}
            for name, op_kind in self.server.store.operations(service, kind)
        ]
        self._send_json({"operations": operations}, TEXT_CT)

    def _v3_find_traces(self) -> None:
        query, raw = v3_find_query(self._params)
        if query.search_depth <= 0:
            raise v3_error(500, "search depth must be greater than 0 and less than max traces")
        self._v3_answer(self.server.store.find_traces(query, raw=raw))

    def _v3_get_trace(self, trace_id: str) -> None:
        try:
            raw_id = parse_trace_id(trace_id)
        except ValueError as exc:
            raise v3_error(400, f"malformed parameter trace_id: {exc}") from exc
        for names in (("startTime", "start_time"), ("endTime", "end_time")):
            text, name = self._params.get(*names)
            if text:
                try:
                    parse_rfc3339_nano(text)  # validated like Jaeger; the memory store ignores it
                except ValueError as exc:
                    raise v3_error(400, f"malformed parameter {name}: {exc}") from exc
        raw = False
        raw_text, raw_name = self._params.get("rawTraces", "raw_traces")
        if raw_text:
            try:
                raw = parse_go_bool(raw_text)
            except ValueError as exc:
                raise v3_error(400, f"malformed parameter {raw_name}: {exc}") from exc
        spans = self.server.store.get_trace(raw_id, raw=raw)
        self._v3_answer([] if spans is None else [spans])

    def _v3_answer(self, traces: list[list[StoredSpan]]) -> None:
        if not traces:
            raise v3_error(404, "No traces found")
        self._send_json({"result": otlp_json_traces(traces)}, TEXT_CT)

    # ---- legacy /api (Jaeger <= 2.20)

    def _legacy_answer(self, data: Any, total: int = 0, errors: list[dict[str, Any]] | None = None) -> None:
        pretty, _ = self._params.get("prettyPrint")
        envelope = {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}
        self._send_json(envelope, indent=4 if pretty and pretty != "false" else None)

    def _legacy_services(self) -> None:
        services = self.server.store.services()
        self._legacy_answer(services, len(services))

    def _legacy_service_operations(self, service: str) -> None:
        # Gorilla keeps the segment encoded and Jaeger QueryUnescapes it ('+' becomes a space).
        names = list(dict.fromkeys(name for name, _ in self.server.store.operations(unquote_plus(service))))
        self._legacy_answer(names, len(names))

    def _legacy_operations(self) -> None:
        service, _ = self._params.get("service")
        if not service:
            raise legacy_error(400, "parameter 'service' is required")
        kind, _ = self._params.get("spanKind")
        data = [{"name": name, "spanKind": op_kind} for name, op_kind in self.server.store.operations(service, kind)]
        self._legacy_answer(data, len(data))

    def _legacy_find_traces(self) -> None:
        query, raw, trace_ids = legacy_find_query(self._params, time.time_ns())
        store = self.server.store
        if trace_ids:
            data, errors = [], []
            for raw_id in trace_ids:
                spans = store.get_trace(raw_id, raw=raw)
                if spans is None:
                    errors.append({"msg": "trace not found", "traceID": ui_id(raw_id)})
                else:
                    data.append(ui_trace(spans))
            self._legacy_answer(data, errors=errors or None)
            return
        self._legacy_answer([ui_trace(spans) for spans in store.find_traces(query, raw=raw)])

    def _legacy_get_trace(self, trace_id: str) -> None:
        try:
            raw_id = parse_trace_id(trace_id)
        except ValueError as exc:
            raise legacy_error(400, str(exc)) from exc
        for name in ("start", "end"):
            text, _ = self._params.get(name)
            if text:
                try:
                    go_int(text)
                except ValueError as exc:
                    raise legacy_error(400, f"unable to parse param '{name}': {exc}") from exc
        raw_text, _ = self._params.get("raw")
        try:
            raw = parse_go_bool(raw_text) if raw_text else False
        except ValueError as exc:
            raise legacy_error(400, f"unable to parse param 'raw': {exc}") from exc
        spans = self.server.store.get_trace(raw_id, raw=raw)
        if spans is None:
            raise legacy_error(404, "trace not found")
        self._legacy_answer([ui_trace(spans)])


def _go_error_headers(content_type: str) -> dict[str, str]:
    return {"X-Content-Type-Options": "nosniff"} if content_type == TEXT_CT else {}


class _Server(LoopbackHTTPServer):
    def __init__(self, address: tuple[str, int], store: TraceStore) -> None:
        self.store = store
        # A request larger than the whole store could only evict everything and then itself.
        self.max_body_bytes = min(MAX_BODY_BYTES, store.max_bytes)
        super().__init__(address, _Handler, name="trace store")


class TraceStoreServer:
    """The store behind one loopback HTTP port: OTLP in at `url + "/v1/traces"`, Jaeger API out."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise UsageError(f"the trace store listens on 127.0.0.1 only, not {host!r}")
        if not 0 <= port <= 65535:
            raise UsageError(f"trace store port {port} is not a TCP port")
        self._address = ("127.0.0.1", port)
        self.store = TraceStore(max_spans, max_bytes)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the trace store is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[bool, str]:
        """(ok, one line): the server thread runs and answers a query through its own port."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return False, "not running"
        if not thread.is_alive():
            return False, "the trace store's server thread has stopped"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        try:
            connection.request("GET", "/api/services")
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            return False, f"does not answer on 127.0.0.1:{self.port}: {type(exc).__name__}: {exc}"
        finally:
            connection.close()
        if status != 200:
            return False, f"answers HTTP {status} on 127.0.0.1:{self.port}"
        return True, f"answers on 127.0.0.1:{self.port}, {self.store.span_count} spans stored"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the trace store is already started")
        self._server = _Server(self._address, self.store)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="trace-store", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
