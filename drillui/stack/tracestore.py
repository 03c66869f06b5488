"""Embedded trace store: an OTLP/HTTP receiver and Jaeger's HTTP query API in one small server.

Why it exists: the drills need a trace backend, and no Jaeger binary can be installed in the lab.
Rather than inventing a private API, this store speaks exactly the wire the real tools speak
(OTLP/HTTP in on `/v1/traces`; Jaeger's api_v3 and the legacy `/api/*` search out, with Jaeger's
envelopes, parameter names, matching rules and error bodies), so the worker, the dashboard, the
evidence export and the runbook's curl commands work unchanged against a real Jaeger later.

Behaviour follows Jaeger v2.20's in-memory storage (`internal/storage/v2/memory/tenant.go`): a
trace matches when ONE span satisfies every condition; tag values are compared as strings after
stringifying the stored value; results are the whole traces, most recently received first. Of
Jaeger's query-time adjusters only span de-duplication is reproduced (skipped with `raw`).
Memory is bounded by a span count; the oldest spans are dropped first.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import logging
import math
import re
import socket
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote_plus, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from drillui.errors import UsageError

__all__ = [
    "DEFAULT_MAX_SPANS",
    "StoredSpan",
    "TraceQuery",
    "TraceStore",
    "TraceStoreServer",
    "otlp_json_traces",
    "ui_trace",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_SPANS = 50_000
MAX_BODY_BYTES = 64 * 1024 * 1024  # the OTLP spec's recommended cap, after decompression
LEGACY_DEFAULT_LIMIT = 100  # Jaeger defaultQueryLimit
V3_DEFAULT_SEARCH_DEPTH = 100  # Jaeger apiv3 defaultSearchDepth
LEGACY_DEFAULT_LOOKBACK_NS = 48 * 3600 * 10**9  # Jaeger defaultTraceQueryLookbackDuration
_MAX_SAFE_JSON_INT = 2**53 - 1
_RFC3339_NANO_LAYOUT = "2006-01-02T15:04:05.999999999Z07:00"
_SPAN_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_RESERVED_QUERY_KEYS = frozenset({"error", "span.status", "span.kind", "scope.name", "scope.version"})
_JSON_CT = "application/json"
_PROTO_CT = "application/x-protobuf"
_TEXT_CT = "text/plain; charset=utf-8"


# --------------------------------------------------------------------------- value helpers


def _go_float(value: float) -> str:
    """Format a double the way Go's pcommon `AsString` does (ES6 number-to-string rules)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, exponent = repr(value).split("e")
        exp = int(exponent)
        return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp)}"
    return format(Decimal(repr(value)).normalize(), "f")


def any_value_to_python(value: AnyValue) -> Any:
    """Plain Python value of an OTLP AnyValue (bytes as base64 text, as OTLP/JSON spells them)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    return None


def any_value_as_string(value: AnyValue) -> str:
    """Jaeger compares tag filters against `pcommon.Value.AsString()`; this reproduces it."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _go_float(value.double_value)
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(any_value_to_python(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return ""


def _attrs_as_strings(kvs: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in kvs:
        out.setdefault(kv.key, any_value_as_string(kv.value))  # pcommon Map.Get returns the first
    return out


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True, eq=False)
class _ResourceInfo:
    proto: Resource
    schema_url: str
    service: str
    attrs: dict[str, str]
    key: bytes  # content identity, for de-duplication


@dataclass(frozen=True, slots=True, eq=False)
class _ScopeInfo:
    proto: InstrumentationScope
    schema_url: str
    attrs: dict[str, str]
    key: bytes


@dataclass(frozen=True, slots=True, eq=False)
class StoredSpan:
    """One received span with the resource and scope it arrived under."""

    proto: Span
    resource: _ResourceInfo
    scope: _ScopeInfo
    attrs: dict[str, str]  # span attributes stringified once, since every search reads them

    @property
    def trace_id(self) -> bytes:
        return self.proto.trace_id

    @property
    def service(self) -> str:
        return self.resource.service


@dataclass(slots=True, eq=False)
class _StoredTrace:
    trace_id: bytes
    spans: deque[StoredSpan] = field(default_factory=deque)


@dataclass(frozen=True)
class TraceQuery:
    """Search conditions, all of which must hold on one single span (Jaeger's semantics)."""

    service_name: str = ""
    operation_name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    start_time_min_ns: int | None = None
    start_time_max_ns: int | None = None
    duration_min_ns: int = 0  # 0 = unbounded, as in Jaeger
    duration_max_ns: int = 0
    search_depth: int = V3_DEFAULT_SEARCH_DEPTH


def _span_has(span: StoredSpan, key: str, wanted: str) -> bool:
    if span.attrs.get(key) == wanted or span.scope.attrs.get(key) == wanted or span.resource.attrs.get(key) == wanted:
        return True
    for holder in (*span.proto.events, *span.proto.links):
        for kv in holder.attributes:
            if kv.key == key:
                if any_value_as_string(kv.value) == wanted:
                    return True
                break
    return False


def _parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _attribute_matches(span: StoredSpan, key: str, wanted: str) -> bool:
    proto = span.proto
    if key == "error":
        try:
            want_error = _parse_go_bool(wanted)
        except ValueError:
            return False  # Jaeger: an unparseable `error` value matches nothing
        return proto.status.code == (Status.STATUS_CODE_ERROR if want_error else Status.STATUS_CODE_OK)
    if key == "span.status":
        codes = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
        return proto.status.code == codes.get(wanted.upper(), Status.STATUS_CODE_UNSET)
    if key == "span.kind":
        kinds = {name.upper(): number for number, name in _SPAN_KIND_NAMES.items()}
        return proto.kind == kinds.get(wanted.upper(), 0)
    if key == "scope.name":
        return span.scope.proto.name == wanted
    if key == "scope.version":
        return span.scope.proto.version == wanted
    if key.startswith("resource."):
        return span.resource.attrs.get(key.removeprefix("resource.")) == wanted
    return _span_has(span, key, wanted)


def span_matches(span: StoredSpan, query: TraceQuery) -> bool:
    """True when this one span satisfies every condition of the query."""
    proto = span.proto
    if query.service_name and span.resource.service != query.service_name:
        return False
    if query.operation_name and proto.name != query.operation_name:
        return False
    start = proto.start_time_unix_nano
    if query.start_time_min_ns is not None and start < query.start_time_min_ns:
        return False
    if query.start_time_max_ns is not None and start > query.start_time_max_ns:
        return False
    duration = proto.end_time_unix_nano - start
    if query.duration_min_ns and duration < query.duration_min_ns:
        return False
    if query.duration_max_ns and duration > query.duration_max_ns:
        return False
    return all(_attribute_matches(span, key, wanted) for key, wanted in query.attributes.items())


def _dedupe(spans: Iterable[StoredSpan]) -> list[StoredSpan]:
    """Jaeger's DeduplicateSpans adjuster: byte-identical spans (same resource and scope) once."""
    seen: set[tuple[bytes, bytes, bytes]] = set()
    out: list[StoredSpan] = []
    for span in spans:
        key = (span.resource.key, span.scope.key, span.proto.SerializeToString(deterministic=True))
        if key not in seen:
            seen.add(key)
            out.append(span)
    return out


class TraceStore:
    """Bounded, thread-safe span storage with Jaeger's search semantics (no HTTP involved)."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, got {max_spans}")
        self._max_spans = max_spans
        self._lock = threading.Lock()
        self._spans: deque[StoredSpan] = deque()  # arrival order: the left end is evicted first
        # Insertion order = first arrival of each trace; Jaeger's ring buffer walks it newest first.
        self._traces: OrderedDict[bytes, _StoredTrace] = OrderedDict()
        # Jaeger keeps services and operations after their spans are gone; so do we.
        self._operations: dict[str, dict[tuple[str, str], None]] = {}

    @property
    def max_spans(self) -> int:
        return self._max_spans

    @property
    def span_count(self) -> int:
        with self._lock:
            return len(self._spans)

    @property
    def trace_count(self) -> int:
        with self._lock:
            return len(self._traces)

    def add(self, request: ExportTraceServiceRequest) -> tuple[int, str]:
        """Store every valid span of an export request; return (rejected count, reason)."""
        rejected = 0
        accepted: list[StoredSpan] = []
        for resource_spans in request.resource_spans:
            resource = resource_spans.resource
            res_attrs = _attrs_as_strings(resource.attributes)
            res_info = _ResourceInfo(
                proto=resource,
                schema_url=resource_spans.schema_url,
                service=res_attrs.get("service.name", ""),
                attrs=res_attrs,
                key=resource.SerializeToString(deterministic=True) + resource_spans.schema_url.encode(),
            )
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                scope_info = _ScopeInfo(
                    proto=scope,
                    schema_url=scope_spans.schema_url,
                    attrs=_attrs_as_strings(scope.attributes),
                    key=scope.SerializeToString(deterministic=True) + scope_spans.schema_url.encode(),
                )
                for span in scope_spans.spans:
                    if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                        rejected += 1
                        continue
                    accepted.append(StoredSpan(span, res_info, scope_info, _attrs_as_strings(span.attributes)))
        with self._lock:
            for stored in accepted:
                self._spans.append(stored)
                trace = self._traces.get(stored.trace_id)
                if trace is None:
                    trace = self._traces[stored.trace_id] = _StoredTrace(stored.trace_id)
                trace.spans.append(stored)
                if stored.service:
                    ops = self._operations.setdefault(stored.service, {})
                    ops[(stored.proto.name, _SPAN_KIND_NAMES.get(stored.proto.kind, ""))] = None
            self._evict_locked()
        reason = "" if not rejected else f"{rejected} span(s) with an empty or malformed trace or span id"
        return rejected, reason

    def _evict_locked(self) -> None:
        while len(self._spans) > self._max_spans:
            oldest = self._spans.popleft()
            trace = self._traces[oldest.trace_id]
            # The globally oldest span is necessarily the oldest of its own trace.
            trace.spans.popleft()
            if not trace.spans:
                del self._traces[oldest.trace_id]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._traces.clear()
            self._operations.clear()

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._operations)

    def operations(self, service: str, span_kind: str = "") -> list[tuple[str, str]]:
        """(name, kind) pairs of a service; kind is "" for unspecified; filter by kind if given."""
        with self._lock:
            pairs = list(self._operations.get(service, {}))
        return [(name, kind) for name, kind in pairs if not span_kind or kind == span_kind]

    def find_traces(self, query: TraceQuery, *, raw: bool = False) -> list[list[StoredSpan]]:
        """Whole traces with at least one span matching the query, newest first, at most search_depth."""
        found: list[list[StoredSpan]] = []
        with self._lock:
            for trace in reversed(self._traces.values()):
                if len(found) >= query.search_depth:
                    break
                if any(span_matches(span, query) for span in trace.spans):
                    found.append(list(trace.spans))
        return found if raw else [_dedupe(spans) for spans in found]

    def get_trace(self, trace_id: bytes, *, raw: bool = False) -> list[StoredSpan] | None:
        with self._lock:
            trace = self._traces.get(trace_id)
            spans = None if trace is None else list(trace.spans)
        if spans is None:
            return None
        return spans if raw else _dedupe(spans)


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and any(raw)


# --------------------------------------------------------------------------- output encodings


def _message_json(message: Message) -> dict[str, Any]:
    # OTLP/JSON: lowerCamelCase keys, enums as integers, 64-bit integers as strings.
    encoded: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=True)
    return encoded


def _span_json(span: Span) -> dict[str, Any]:
    out = _message_json(span)
    # OTLP/JSON (and Jaeger's api_v3) spell ids as hex, where proto3 JSON would say base64.
    for key, raw in (("traceId", span.trace_id), ("spanId", span.span_id), ("parentSpanId", span.parent_span_id)):
        if raw:
            out[key] = raw.hex()
    for link_json, link in zip(out.get("links", []), span.links, strict=True):
        link_json["traceId"] = link.trace_id.hex()
        link_json["spanId"] = link.span_id.hex()
    return out


def otlp_json_traces(traces: Iterable[Sequence[StoredSpan]]) -> dict[str, Any]:
    """`{"resourceSpans": [...]}` for all traces combined, as Jaeger's api_v3 returns them."""
    resource_spans: list[dict[str, Any]] = []
    for spans in traces:
        groups: dict[int, tuple[_ResourceInfo, dict[int, tuple[_ScopeInfo, list[Span]]]]] = {}
        for span in spans:
            scopes = groups.setdefault(id(span.resource), (span.resource, {}))[1]
            scopes.setdefault(id(span.scope), (span.scope, []))[1].append(span.proto)
        for resource, scopes in groups.values():
            scope_spans = []
            for scope, protos in scopes.values():
                entry: dict[str, Any] = {"scope": _message_json(scope.proto), "spans": [_span_json(p) for p in protos]}
                if scope.schema_url:
                    entry["schemaUrl"] = scope.schema_url
                scope_spans.append(entry)
            res_entry: dict[str, Any] = {"resource": _message_json(resource.proto), "scopeSpans": scope_spans}
            if resource.schema_url:
                res_entry["schemaUrl"] = resource.schema_url
            resource_spans.append(res_entry)
    return {"resourceSpans": resource_spans}


def _ui_id(raw: bytes) -> str:
    """Jaeger model ids: 16 hex chars when the high 64 bits of a trace id are zero."""
    text = raw.hex()
    return text[16:] if len(text) == 32 and text.startswith("0" * 16) else text


def _ui_kv(key: str, value: AnyValue) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "bool_value":
        return {"key": key, "type": "bool", "value": value.bool_value}
    if kind == "int_value":
        integer = value.int_value
        # JSON numbers lose precision past 2^53, so Jaeger writes those as decimal strings.
        return {"key": key, "type": "int64", "value": integer if abs(integer) <= _MAX_SAFE_JSON_INT else str(integer)}
    if kind == "double_value":
        double = value.double_value
        return {"key": key, "type": "float64", "value": double if math.isfinite(double) else _go_float(double)}
    if kind == "bytes_value":
        return {"key": key, "type": "binary", "value": base64.b64encode(value.bytes_value).decode("ascii")}
    return {"key": key, "type": "string", "value": any_value_as_string(value)}


def _ui_str(key: str, text: str) -> dict[str, Any]:
    return {"key": key, "type": "string", "value": text}


def _ui_span(stored: StoredSpan, trace_ui_id: str, process_id: str) -> dict[str, Any]:
    span = stored.proto
    references = []
    if span.parent_span_id:
        references.append({"refType": "CHILD_OF", "traceID": trace_ui_id, "spanID": span.parent_span_id.hex()})
    for link in span.links:
        ref_type = "FOLLOWS_FROM"
        for kv in link.attributes:
            if kv.key == "opentracing.ref_type" and any_value_as_string(kv.value) == "child_of":
                ref_type = "CHILD_OF"
        references.append({"refType": ref_type, "traceID": _ui_id(link.trace_id), "spanID": link.span_id.hex()})
    # Tag order of the OTLP -> Jaeger translator: scope, attributes, kind, status, trace state.
    tags: list[dict[str, Any]] = []
    if stored.scope.proto.name:
        tags.append(_ui_str("otel.scope.name", stored.scope.proto.name))
        if stored.scope.proto.version:
            tags.append(_ui_str("otel.scope.version", stored.scope.proto.version))
    tags.extend(_ui_kv(kv.key, kv.value) for kv in span.attributes)
    if span.kind in _SPAN_KIND_NAMES:
        tags.append(_ui_str("span.kind", _SPAN_KIND_NAMES[span.kind]))
    if span.status.code == Status.STATUS_CODE_OK:
        tags.append(_ui_str("otel.status_code", "OK"))
    elif span.status.code == Status.STATUS_CODE_ERROR:
        tags.append(_ui_str("otel.status_code", "ERROR"))
        tags.append({"key": "error", "type": "bool", "value": True})
    if span.status.message:
        tags.append(_ui_str("otel.status_description", span.status.message))
    if span.trace_state:
        tags.append(_ui_str("w3c.tracestate", span.trace_state))
    logs = []
    for event in span.events:
        fields = []
        if event.name and not any(kv.key == "event" for kv in event.attributes):
            fields.append(_ui_str("event", event.name))
        fields.extend(_ui_kv(kv.key, kv.value) for kv in event.attributes)
        logs.append({"timestamp": event.time_unix_nano // 1000, "fields": fields})
    return {
        "traceID": trace_ui_id,
        "spanID": span.span_id.hex(),
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano // 1000,
        "duration": max(0, span.end_time_unix_nano - span.start_time_unix_nano) // 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": None,
    }


def ui_trace(spans: Sequence[StoredSpan]) -> dict[str, Any]:
    """One trace in Jaeger's UI JSON model (what the legacy `/api/traces` returns in `data`)."""
    trace_ui_id = _ui_id(spans[0].trace_id)
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[str, str] = {}
    ui_spans = []
    for stored in spans:
        process = {
            "serviceName": stored.service or "OTLPResourceNoServiceName",
            "tags": [_ui_kv(kv.key, kv.value) for kv in stored.resource.proto.attributes if kv.key != "service.name"],
        }
        identity = json.dumps(process, sort_keys=True)
        process_id = process_ids.get(identity)
        if process_id is None:
            process_id = process_ids[identity] = f"p{len(process_ids) + 1}"
            processes[process_id] = process
        ui_spans.append(_ui_span(stored, trace_ui_id, process_id))
    return {"traceID": trace_ui_id, "spans": ui_spans, "processes": processes, "warnings": None}


# --------------------------------------------------------------------------- request parsing


class _HTTPError(Exception):
    """A finished HTTP answer raised from deep inside a handler."""

    def __init__(self, status: int, body: bytes, content_type: str = _TEXT_CT) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


def _go_error_body(payload: Mapping[str, Any]) -> bytes:
    # Go's http.Error: the text plus "\n", served as text/plain.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _v3_error(status: int, message: str) -> _HTTPError:
    return _HTTPError(status, _go_error_body({"error": {"httpCode": status, "message": message}}))


def _legacy_error(status: int, message: str) -> _HTTPError:
    envelope = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]}
    return _HTTPError(status, _go_error_body(envelope))


_RFC3339_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


def parse_rfc3339_nano(text: str) -> int:
    """Unix nanoseconds of an RFC 3339 timestamp (Go's time.RFC3339Nano layout)."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ValueError(f'parsing time "{text}" as "{_RFC3339_NANO_LAYOUT}": cannot parse')
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    if not (
        1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 60
    ):
        raise ValueError(f'parsing time "{text}": field out of range')
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * 10**9 + int((fraction[1:] or "0").ljust(9, "0"))


_DURATION_UNITS_NS = {
    "ns": Decimal(1),
    "us": Decimal(10**3),
    "\u00b5s": Decimal(10**3),
    "\u03bcs": Decimal(10**3),
    "ms": Decimal(10**6),
    "s": Decimal(10**9),
    "m": Decimal(60 * 10**9),
    "h": Decimal(3600 * 10**9),
}
_DURATION_PART_RE = re.compile(r"(\d*(?:\.\d*)?)([^\d.]*)")


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string such as `20ms` or `1.5s` (time.ParseDuration)."""
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    total = Decimal(0)
    while rest:
        match = _DURATION_PART_RE.match(rest)
        number, unit = (match.group(1), match.group(2)) if match else ("", "")
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS_NS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += Decimal(number) * _DURATION_UNITS_NS[unit]
        rest = rest[match.end() :] if match else ""
    return -int(total) if negative else int(total)


def _go_int(text: str, bits: int = 64, func: str = "strconv.ParseInt") -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'{func}: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValueError(f'{func}: parsing "{text}": value out of range')
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _go_string_map(text: str) -> dict[str, str]:
    """Decode JSON into a Go `map[string]string`, with Go's error wording on a mismatch."""
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at offset {exc.pos}: {exc.msg}") from exc
    if decoded is None:
        return {}
    if not isinstance(decoded, dict):
        raise ValueError(f"json: cannot unmarshal {_json_kind(decoded)} into Go value of type map[string]string")
    out: dict[str, str] = {}
    for key, value in decoded.items():
        if value is None:
            out[key] = ""  # Go leaves a null string at its zero value
        elif isinstance(value, str):
            out[key] = value
        else:
            raise ValueError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type string")
    return out


def _parse_trace_id(text: str) -> bytes:
    """Jaeger's TraceIDFromString: up to 32 hex digits, left-padded with zeros."""
    if len(text) > 32:
        raise ValueError(f"TraceID cannot be longer than 32 hex characters: {text}")
    if not text or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return bytes.fromhex(text.zfill(32))


class _Params:
    """Query-string access with Go's url.Values.Get semantics (first value, empty = absent)."""

    def __init__(self, query: str) -> None:
        self.values = parse_qs(query, keep_blank_values=True)

    def get(self, *names: str) -> tuple[str, str]:
        """First non-empty value among names (canonical first), and the name it came from."""
        for name in names:
            value = self.values.get(name, [""])[0]
            if value:
                return value, name
        return "", names[0]

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])


def _v3_find_query(params: _Params) -> tuple[TraceQuery, bool]:
    def malformed(name: str, exc: Exception) -> _HTTPError:
        return _v3_error(400, f"malformed parameter {name}: {exc}")

    service, _ = params.get("query.serviceName", "query.service_name")
    operation, _ = params.get("query.operationName", "query.operation_name")
    attributes: dict[str, str] = {}
    attrs_text, _ = params.get("query.attributes")
    if attrs_text:
        try:
            attributes = _go_string_map(attrs_text)
        except ValueError as exc:
            raise malformed("query.attributes", exc) from exc
    min_text, min_name = params.get("query.startTimeMin", "query.start_time_min")
    max_text, max_name = params.get("query.startTimeMax", "query.start_time_max")
    if not min_text or not max_text:
        raise _v3_error(400, "query.startTimeMin and query.startTimeMax are required")
    try:
        time_min = parse_rfc3339_nano(min_text)
    except ValueError as exc:
        raise malformed(min_name, exc) from exc
    try:
        time_max = parse_rfc3339_nano(max_text)
    except ValueError as exc:
        raise malformed(max_name, exc) from exc
    if not time_min < time_max:
        raise _v3_error(400, "query.startTimeMin must be before query.startTimeMax")
    depth_text, depth_name = params.get("query.searchDepth", "query.search_depth", "query.num_traces")
    depth = V3_DEFAULT_SEARCH_DEPTH
    if depth_text:
        try:
            depth = _go_int(depth_text, func="strconv.Atoi")
        except ValueError as exc:
            raise malformed(depth_name, exc) from exc
    durations = []
    for names in (("query.durationMin", "query.duration_min"), ("query.durationMax", "query.duration_max")):
        text, name = params.get(*names)
        try:
            durations.append(parse_go_duration(text) if text else 0)
        except ValueError as exc:
            raise malformed(name, exc) from exc
    raw = False
    raw_text, raw_name = params.get("query.rawTraces", "query.raw_traces")
    if raw_text:
        try:
            raw = _parse_go_bool(raw_text)
        except ValueError as exc:
            raise malformed(raw_name, exc) from exc
    query = TraceQuery(service, operation, attributes, time_min, time_max, durations[0], durations[1], depth)
    return query, raw


def _legacy_find_query(params: _Params, now_ns: int) -> tuple[TraceQuery, bool, list[bytes]]:
    """Parse `/api/traces` parameters in the order and with the messages of Jaeger's query_parser.go."""

    def timestamp(name: str, default: int) -> int:
        text, _ = params.get(name)
        if not text:
            return default
        try:
            return _go_int(text) * 1000
        except ValueError as exc:
            raise _legacy_error(400, f"unable to parse param '{name}': {exc}") from exc

    service, _ = params.get("service")
    operation, _ = params.get("operation")
    start = timestamp("start", now_ns - LEGACY_DEFAULT_LOOKBACK_NS)
    end = timestamp("end", now_ns)
    tags: dict[str, str] = {}
    for tag in params.all("tag"):
        key, sep, value = tag.partition(":")
        if not sep:
            raise _legacy_error(400, f"malformed 'tag' parameter, expecting key:value, received: {tag}")
        tags[key] = value
    for tags_json in params.all("tags"):
        try:
            tags.update(_go_string_map(tags_json))
        except ValueError as exc:
            raise _legacy_error(400, f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from exc
    limit = LEGACY_DEFAULT_LIMIT
    limit_text, _ = params.get("limit")
    if limit_text:
        try:
            limit = _go_int(limit_text, bits=32)
        except ValueError as exc:
            raise _legacy_error(400, str(exc)) from exc
    durations = []
    for name in ("minDuration", "maxDuration"):
        text, _ = params.get(name)
        try:
            durations.append(parse_go_duration(text) if text else 0)
        except ValueError as exc:
            raise _legacy_error(400, f"unable to parse param '{name}': {exc}") from exc
    trace_ids = []
    for text in params.all("traceID"):
        try:
            trace_ids.append(_parse_trace_id(text))
        except ValueError as exc:
            raise _legacy_error(400, f"cannot parse traceID param: {exc}") from exc
    raw = False
    raw_text, _ = params.get("raw")
    if raw_text:
        try:
            raw = _parse_go_bool(raw_text)
        except ValueError as exc:
            raise _legacy_error(400, f"unable to parse param 'raw': {exc}") from exc
    if not trace_ids and not service:
        raise _legacy_error(400, "parameter 'service' is required")
    if limit <= 0:
        raise _legacy_error(400, "invalid parameter: limit must be greater than 0")
    if start > end:
        raise _legacy_error(400, "invalid parameter: start time must be before end time")
    if durations[0] and durations[1] and durations[1] < durations[0]:
        raise _legacy_error(400, "'maxDuration' should be greater than 'minDuration'")
    return TraceQuery(service, operation, tags, start, end, durations[0], durations[1], limit), raw, trace_ids


def _hex_ids_to_base64(obj: Any, keys: Sequence[str]) -> None:
    if not isinstance(obj, dict):
        return
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError as exc:
                raise ValueError(f"{key} {value!r} is not hex") from exc


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def decode_otlp_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP/JSON trace export (hex ids, enums as ints or names, unknown fields ignored)."""
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    for resource_spans in _dicts(document.get("resourceSpans")):
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            for span in _dicts(scope_spans.get("spans")):
                _hex_ids_to_base64(span, ("traceId", "spanId", "parentSpanId"))
                for link in _dicts(span.get("links")):
                    _hex_ids_to_base64(link, ("traceId", "spanId"))
    request = ExportTraceServiceRequest()
    json_format.ParseDict(document, request, ignore_unknown_fields=True)
    return request


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise _HTTPError(400, f"unsupported Content-Encoding {encoding!r}\n".encode())
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"cannot {encoding}-decode the body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES or decompressor.unconsumed_tail:
        raise _HTTPError(413, b"request body too large\n")
    return out


# --------------------------------------------------------------------------- HTTP server

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
        # Headers and body leave in two writes; without NODELAY, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
        url = urlsplit(self.path)
        self._params = _Params(url.query)
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(url.path)
            if match is None:
                continue
            if method not in methods:
                self._drop_body()
                self._send(405, b"Method Not Allowed\n", _TEXT_CT, {"Allow": ", ".join(methods)})
                return
            handler: Callable[..., None] = getattr(self, methods[method])
            try:
                handler(**match.groupdict())
            except _HTTPError as exc:
                self._send(exc.status, exc.body, exc.content_type, _go_error_headers(exc.content_type))
            except (BrokenPipeError, ConnectionResetError):
                raise  # the client left; socketserver's handle_error logs it
            except Exception as exc:
                log.exception("trace store: %s %s failed", method, url.path)
                self.close_connection = True
                self._send(500, f"internal error: {type(exc).__name__}: {exc}\n".encode(), _TEXT_CT)
            return
        self._drop_body()
        self._send(404, b"404 page not found\n", _TEXT_CT, _go_error_headers(_TEXT_CT))

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

    def _send_json(self, payload: Any, content_type: str = _JSON_CT, *, indent: int | None = None) -> None:
        separators = (",", ":") if indent is None else (",", ": ")
        text = json.dumps(payload, separators=separators, indent=indent, ensure_ascii=False)
        self._send(200, text.encode(), content_type)

    # ---- OTLP/HTTP receiver

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _HTTPError(411, b"Content-Length required\n")
        try:
            length = int(length_text)
        except ValueError as exc:
            self.close_connection = True
            raise _HTTPError(400, b"invalid Content-Length\n") from exc
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _HTTPError(413, b"request body too large\n")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                self.close_connection = True
                raise _HTTPError(400, b"malformed chunked body\n") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields carry nothing we use
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                raise _HTTPError(413, b"request body too large\n")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _otlp_export(self) -> None:
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._read_body()
        if media_type not in (_PROTO_CT, _JSON_CT):
            raise _HTTPError(415, f"415 unsupported media type, supported: [{_JSON_CT}, {_PROTO_CT}]\n".encode())
        try:
            body = _decompress(body, self.headers.get("Content-Encoding", ""))
            if media_type == _PROTO_CT:
                request = ExportTraceServiceRequest.FromString(body)
            else:
                request = decode_otlp_json(body)
        except (ValueError, DecodeError, json_format.ParseError, binascii.Error) as exc:
            # ParseError and JSONDecodeError are ValueErrors; DecodeError is not.
            status = status_pb2.Status(code=3, message=f"cannot decode the export request: {exc}")  # INVALID_ARGUMENT
            raise _HTTPError(400, *_encode_otlp(status, media_type)) from exc
        rejected, reason = self.server.store.add(request)
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=reason))
        self._send(200, *_encode_otlp(response, media_type))

    # ---- api_v3

    def _v3_services(self) -> None:
        # Jaeger marshals api_v3 with jsonpb and no Content-Type, so Go sniffs text/plain.
        self._send_json({"services": self.server.store.services()}, _TEXT_CT)

    def _v3_operations(self) -> None:
        service, _ = self._params.get("service")
        kind, _ = self._params.get("spanKind", "span_kind")
        operations = [
            {"name": name, "spanKind": op_kind or "internal"}
            for name, op_kind in self.server.store.operations(service, kind)
        ]
        self._send_json({"operations": operations}, _TEXT_CT)

    def _v3_find_traces(self) -> None:
        query, raw = _v3_find_query(self._params)
        if query.search_depth <= 0:
            raise _v3_error(500, "search depth must be greater than 0 and less than max traces")
        self._v3_answer(self.server.store.find_traces(query, raw=raw))

    def _v3_get_trace(self, trace_id: str) -> None:
        try:
            raw_id = _parse_trace_id(trace_id)
        except ValueError as exc:
            raise _v3_error(400, f"malformed parameter trace_id: {exc}") from exc
        for names in (("startTime", "start_time"), ("endTime", "end_time")):
            text, name = self._params.get(*names)
            if text:
                try:
                    parse_rfc3339_nano(text)  # validated like Jaeger; the memory store ignores it
                except ValueError as exc:
                    raise _v3_error(400, f"malformed parameter {name}: {exc}") from exc
        raw = False
        raw_text, raw_name = self._params.get("rawTraces", "raw_traces")
        if raw_text:
            try:
                raw = _parse_go_bool(raw_text)
            except ValueError as exc:
                raise _v3_error(400, f"malformed parameter {raw_name}: {exc}") from exc
        spans = self.server.store.get_trace(raw_id, raw=raw)
        self._v3_answer([] if spans is None else [spans])

    def _v3_answer(self, traces: list[list[StoredSpan]]) -> None:
        if not traces:
            raise _v3_error(404, "No traces found")
        self._send_json({"result": otlp_json_traces(traces)}, _TEXT_CT)

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
            raise _legacy_error(400, "parameter 'service' is required")
        kind, _ = self._params.get("spanKind")
        data = [{"name": name, "spanKind": op_kind} for name, op_kind in self.server.store.operations(service, kind)]
        self._legacy_answer(data, len(data))

    def _legacy_find_traces(self) -> None:
        query, raw, trace_ids = _legacy_find_query(self._params, time.time_ns())
        store = self.server.store
        if trace_ids:
            data, errors = [], []
            for raw_id in trace_ids:
                spans = store.get_trace(raw_id, raw=raw)
                if spans is None:
                    errors.append({"msg": "trace not found", "traceID": _ui_id(raw_id)})
                else:
                    data.append(ui_trace(spans))
            self._legacy_answer(data, errors=errors or None)
            return
        self._legacy_answer([ui_trace(spans) for spans in store.find_traces(query, raw=raw)])

    def _legacy_get_trace(self, trace_id: str) -> None:
        try:
            raw_id = _parse_trace_id(trace_id)
        except ValueError as exc:
            raise _legacy_error(400, str(exc)) from exc
        for name in ("start", "end"):
            text, _ = self._params.get(name)
            if text:
                try:
                    _go_int(text)
                except ValueError as exc:
                    raise _legacy_error(400, f"unable to parse param '{name}': {exc}") from exc
        raw_text, _ = self._params.get("raw")
        try:
            raw = _parse_go_bool(raw_text) if raw_text else False
        except ValueError as exc:
            raise _legacy_error(400, f"unable to parse param 'raw': {exc}") from exc
        spans = self.server.store.get_trace(raw_id, raw=raw)
        if spans is None:
            raise _legacy_error(404, "trace not found")
        self._legacy_answer([ui_trace(spans)])


def _go_error_headers(content_type: str) -> dict[str, str]:
    return {"X-Content-Type-Options": "nosniff"} if content_type == _TEXT_CT else {}


def _encode_otlp(message: Message, media_type: str) -> tuple[bytes, str]:
    """OTLP/HTTP answers in the content type of the request."""
    if media_type == _PROTO_CT:
        return message.SerializeToString(), _PROTO_CT
    return json.dumps(_message_json(message), separators=(",", ":")).encode(), _JSON_CT


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: TraceStore) -> None:
        self.store = store
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall offline.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("trace store: error while serving %s", client_address)


class TraceStoreServer:
    """The store behind one loopback HTTP port: OTLP in at `url + "/v1/traces"`, Jaeger API out."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise UsageError(f"the trace store listens on 127.0.0.1 only, not {host!r}")
        if not 0 <= port <= 65535:
            raise UsageError(f"trace store port {port} is not a TCP port")
        self._address = ("127.0.0.1", port)
        self.store = TraceStore(max_spans)
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
