"""Bounded span storage with Jaeger's search semantics; no HTTP involved.

Why it exists: the store is the one stateful part of the trace store, shared by the OTLP receiver
(writing) and both query APIs (reading), so its locking, its memory bound and its matching rules
live in one place.

Behaviour follows Jaeger v2.20's in-memory storage (`internal/storage/v2/memory/tenant.go`): a
trace matches when ONE span satisfies every condition; tag values are compared as strings after
stringifying the stored value; results are the whole traces, most recently received first. Of
Jaeger's query-time adjusters only span de-duplication is reproduced (skipped with `raw`).
Memory is bounded by a span count; the oldest spans are dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from drillui.stack.tracestore.otlp import SPAN_KIND_NAMES, any_value_as_string, attrs_as_strings

DEFAULT_MAX_SPANS = 50_000
V3_DEFAULT_SEARCH_DEPTH = 100  # Jaeger apiv3 defaultSearchDepth
_RESERVED_QUERY_KEYS = frozenset({"error", "span.status", "span.kind", "scope.name", "scope.version"})


@dataclass(frozen=True, slots=True, eq=False)
class ResourceInfo:
    proto: Resource
    schema_url: str
    service: str
    attrs: dict[str, str]
    key: bytes  # content identity, for de-duplication


@dataclass(frozen=True, slots=True, eq=False)
class ScopeInfo:
    proto: InstrumentationScope
    schema_url: str
    attrs: dict[str, str]
    key: bytes


@dataclass(frozen=True, slots=True, eq=False)
class StoredSpan:
    """One received span with the resource and scope it arrived under."""

    proto: Span
    resource: ResourceInfo
    scope: ScopeInfo
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


def parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _attribute_matches(span: StoredSpan, key: str, wanted: str) -> bool:
    proto = span.proto
    if key == "error":
        try:
            want_error = parse_go_bool(wanted)
        except ValueError:
            return False  # Jaeger: an unparseable `error` value matches nothing
        return proto.status.code == (Status.STATUS_CODE_ERROR if want_error else Status.STATUS_CODE_OK)
    if key == "span.status":
        codes = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
        return proto.status.code == codes.get(wanted.upper(), Status.STATUS_CODE_UNSET)
    if key == "span.kind":
        kinds = {name.upper(): number for number, name in SPAN_KIND_NAMES.items()}
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
            res_attrs = attrs_as_strings(resource.attributes)
            res_info = ResourceInfo(
                proto=resource,
                schema_url=resource_spans.schema_url,
                service=res_attrs.get("service.name", ""),
                attrs=res_attrs,
                key=resource.SerializeToString(deterministic=True) + resource_spans.schema_url.encode(),
            )
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                scope_info = ScopeInfo(
                    proto=scope,
                    schema_url=scope_spans.schema_url,
                    attrs=attrs_as_strings(scope.attributes),
                    key=scope.SerializeToString(deterministic=True) + scope_spans.schema_url.encode(),
                )
                for span in scope_spans.spans:
                    if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                        rejected += 1
                        continue
                    accepted.append(StoredSpan(span, res_info, scope_info, attrs_as_strings(span.attributes)))
        with self._lock:
            for stored in accepted:
                self._spans.append(stored)
                trace = self._traces.get(stored.trace_id)
                if trace is None:
                    trace = self._traces[stored.trace_id] = _StoredTrace(stored.trace_id)
                trace.spans.append(stored)
                if stored.service:
                    ops = self._operations.setdefault(stored.service, {})
                    ops[(stored.proto.name, SPAN_KIND_NAMES.get(stored.proto.kind, ""))] = None
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
