"""Bounded, indexed span storage with Jaeger's search semantics; no HTTP involved.

Why it exists: the store is the one stateful part of the trace store, shared by the OTLP receiver
(writing) and both query APIs (reading), so its locking, its memory bounds, its indexes and its
matching rules live in one place.

Behaviour follows Jaeger v2.20's in-memory storage (`internal/storage/v2/memory/tenant.go`): a
trace matches when ONE span satisfies every condition; tag values are compared as strings after
stringifying the stored value; results are the whole traces, most recently received first. Of
Jaeger's query-time adjusters only span de-duplication is reproduced (skipped with `raw`).

Memory is bounded twice, oldest spans dropped first: by a span count and by bytes. Bytes are
charged per export request, because that is how memory is really held: a decoded protobuf
request lives in one arena that every span taken from it keeps alive, so a request's bytes (its
size on the wire plus `SPAN_OVERHEAD_BYTES` per span) are released when the index segment it
was filed in is dropped, that is once its last span and those that arrived with it are gone.

Why the indexes: drills and the dashboard look traces up by an id (`wordloom.claim_batch_id`,
`wordloom.outbox_event_id`, ...) every second while thousands of spans a second arrive; a scan
of every stored trace under the lock took 50-160 ms at 50k spans. So every span is also filed
in posting lists, in arrival order:
- by service, and by service + span name (the operation);
- by attribute value for the keys in `INDEXED_ATTRIBUTES`, and for any other key once a query
  has asked for it (built then by one pass over the stored spans, at most `MAX_LAZY_KEYS` keys);
  a value found on the span, its scope, its resource, or one of its events or links files the
  span, so a posting list holds every span that can match (a superset), and the full matching
  rule is still applied to each candidate.
A query walks the shortest posting list that applies, newest span first, and stops once no
older span can belong to a trace newer than the ones found (a trace's rank is its first
arrival, never later than any of its spans').

The indexes are cut into segments of consecutive arrivals (`SEGMENT_SPANS` spans, or a 32nd of
the byte bound), so that eviction costs nothing per index: a dropped span is only popped from
the arrival queue and its trace; queries ignore spans older than the newest dropped one (they
are at the old end of every list); and a segment's indexes go all at once when its last span
is dropped. What a partly dropped segment still holds is at most one segment, and its bytes
stay charged until the segment goes, so the byte bound holds for real memory.

Ingest runs at the speed of decoding the request and reading its attributes (see
bench/bench_tracestore.py), which shaped the hot path: a span is a small tuple, not an object;
it holds its position in the decoded request rather than a protobuf wrapper (upb keeps every
live wrapper in an object cache, and 100k live wrappers made every later protobuf access
slower); and a value seen on one span only (an event id) is filed as the span itself, becoming
a list when a second span shares it.
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from drillui.stack.tracestore.otlp import SPAN_KIND_NAMES, any_value_as_string, attrs_as_strings

DEFAULT_MAX_SPANS = 50_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SPAN_OVERHEAD_BYTES: Final = 1536
"""Memory a stored span costs beyond its request's size on the wire: the decoded protobuf's
structures (upb copies strings, so the wire size covers those) and its tuple and index entries.
`python bench/bench_tracestore.py --memory` measures about 1,200 bytes for the worker's spans of
~15 attributes; a span with more, smaller attributes costs more, hence the margin."""
SEGMENT_SPANS: Final = 4096
"""Spans per index segment (see the module docstring); a segment also closes at max_bytes / 32."""
V3_DEFAULT_SEARCH_DEPTH = 100  # Jaeger apiv3 defaultSearchDepth
INDEXED_ATTRIBUTES: Final = frozenset(
    {
        "wordloom.claim_batch_id",
        "wordloom.outbox_event_id",
        "wordloom.entity_id",
        "wordloom.obs_schema",
        "wordloom.worker_id",
        "correlation_id",
        "result",
        "reason",
    }
)
"""Attribute keys indexed from the start: the ones drills, the dashboard and the runbook query."""
MAX_LAZY_KEYS: Final = 32
"""Other attribute keys get an index when first queried, up to this many (each costs memory)."""
_RESERVED_QUERY_KEYS = frozenset({"error", "span.status", "span.kind", "scope.name", "scope.version"})


class RequestTooLarge(ValueError):
    """One export request would take more memory than the whole store may hold."""


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


class _Group:
    """What the spans of one resource + scope share: their resource, scope and decoded protobufs."""

    __slots__ = ("resource", "scope", "spans")

    def __init__(self, resource: ResourceInfo, scope: ScopeInfo, spans: Any) -> None:
        self.resource = resource
        self.scope = scope
        self.spans = spans  # the ScopeSpans' repeated `spans` field; keeps its request alive


class _StoredTrace:
    __slots__ = ("order", "spans", "trace_id")

    def __init__(self, trace_id: bytes, order: int) -> None:
        self.trace_id = trace_id
        self.order = order  # arrival number of its first span: the trace's rank in results
        self.spans: deque[StoredSpan] = deque()


class StoredSpan(NamedTuple):
    """One received span with the resource and scope it arrived under.

    A tuple because one is made per span on the ingest path. Compare spans with `is`, never
    `==` (that would compare their contents). `proto` is looked up in the decoded request on
    each access: take it once into a local where it is used repeatedly.
    """

    group: _Group
    position: int
    """Position in its group's spans."""
    seq: int
    """Arrival number: unique and increasing."""

    @property
    def proto(self) -> Span:
        span: Span = self.group.spans[self.position]
        return span

    @property
    def resource(self) -> ResourceInfo:
        return self.group.resource

    @property
    def scope(self) -> ScopeInfo:
        return self.group.scope

    @property
    def trace_id(self) -> bytes:
        return self.proto.trace_id

    @property
    def service(self) -> str:
        return self.group.resource.service

    @property
    def attrs(self) -> dict[str, str]:
        """The span's attributes as strings (computed on demand: most spans are never asked)."""
        return attrs_as_strings(self.proto.attributes)


# An index entry is the one span filed under a value, or a list of spans in arrival order once
# a second span shares it (a list per value would cost more than the rest of the ingest work).
_new_span = tuple.__new__  # StoredSpan(...) runs a Python-level __new__; this is the C one
_ZERO_TRACE: Final = bytes(16)
_ZERO_SPAN: Final = bytes(8)


def _entry_len(entry: Any) -> int:
    return len(entry) if type(entry) is list else 1


def _entry_newest_first(entry: Any) -> Iterator[StoredSpan]:
    return reversed(entry) if type(entry) is list else iter((entry,))


def _file(table: dict[str, Any], value: str, span: StoredSpan) -> None:
    """File `span` under `value` (off the hot path: the ingest loop has this inlined)."""
    entry = table.get(value)
    if entry is None:
        table[value] = span
    elif type(entry) is list:
        if entry[-1] is not span:
            entry.append(span)
    elif entry is not span:
        table[value] = [entry, span]


class _Segment:
    """The indexes of consecutive arrivals `first_seq`..`last_seq`, dropped together."""

    __slots__ = ("by_attribute", "by_operation", "by_service", "bytes", "first_seq", "last_seq")

    def __init__(self, first_seq: int, keys: Iterable[str]) -> None:
        self.first_seq = first_seq
        self.last_seq = first_seq - 1
        self.bytes = 0  # of the requests filed here, released when the segment is dropped
        self.by_service: dict[str, list[StoredSpan]] = {}
        self.by_operation: dict[str, dict[str, Any]] = {}
        # key -> value -> entry; a key is present once it is indexed (eagerly, or on first query).
        self.by_attribute: dict[str, dict[str, Any]] = {key: {} for key in keys}

    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


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


def _first_value(kvs: Iterable[KeyValue], key: str) -> str | None:
    """The first value of `key` as a string (pcommon Map.Get returns the first)."""
    for kv in kvs:
        if kv.key == key:
            return any_value_as_string(kv.value)
    return None


def _span_has(proto: Span, group: _Group, key: str, wanted: str) -> bool:
    if (
        _first_value(proto.attributes, key) == wanted
        or group.scope.attrs.get(key) == wanted
        or group.resource.attrs.get(key) == wanted
    ):
        return True
    for holder in (*proto.events, *proto.links):
        if _first_value(holder.attributes, key) == wanted:
            return True
    return False


def parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _attribute_matches(proto: Span, group: _Group, key: str, wanted: str) -> bool:
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
        return group.scope.proto.name == wanted
    if key == "scope.version":
        return group.scope.proto.version == wanted
    if key.startswith("resource."):
        return group.resource.attrs.get(key.removeprefix("resource.")) == wanted
    return _span_has(proto, group, key, wanted)


def _matches(proto: Span, group: _Group, query: TraceQuery) -> bool:
    if query.service_name and group.resource.service != query.service_name:
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
    return all(_attribute_matches(proto, group, key, wanted) for key, wanted in query.attributes.items())


def span_matches(span: StoredSpan, query: TraceQuery) -> bool:
    """True when this one span satisfies every condition of the query."""
    return _matches(span.proto, span.group, query)


def _dedupe(spans: Iterable[StoredSpan]) -> list[StoredSpan]:
    """Jaeger's DeduplicateSpans adjuster: byte-identical spans (same resource and scope) once.

    Byte-identical spans share their span id, so only spans whose id was already seen are
    serialized and compared (serializing every span made this the slowest part of a query).
    """
    seen: dict[bytes, list[StoredSpan]] = {}
    identities: dict[int, tuple[bytes, bytes, bytes]] = {}

    def identity(span: StoredSpan) -> tuple[bytes, bytes, bytes]:
        key = identities.get(id(span))
        if key is None:
            key = identities[id(span)] = (span.resource.key, span.scope.key, span.proto.SerializeToString(deterministic=True))
        return key

    out: list[StoredSpan] = []
    for span in spans:
        twins = seen.setdefault(span.proto.span_id, [])
        if twins and any(identity(twin) == identity(span) for twin in twins):
            continue
        twins.append(span)
        out.append(span)
    return out


class TraceStore:
    """Bounded, indexed, thread-safe span storage with Jaeger's search semantics (no HTTP)."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, got {max_spans}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self._max_spans = max_spans
        self._max_bytes = max_bytes
        self._segment_spans = min(SEGMENT_SPANS, max(64, max_spans // 16))
        self._segment_bytes = max(1, max_bytes // 32)
        self._lock = threading.Lock()
        self._seq = 0
        self._dropped_upto = 0  # arrival number of the newest span dropped: older ones are gone
        self._bytes = 0
        self._spans: deque[StoredSpan] = deque()  # arrival order: the left end is evicted first
        # Insertion order = first arrival of each trace; Jaeger's ring buffer walks it newest first.
        self._traces: OrderedDict[bytes, _StoredTrace] = OrderedDict()
        # Jaeger keeps services and operations (name, OTLP kind) after their spans are gone; so do we.
        self._known_ops: dict[str, dict[tuple[str, int], None]] = {}
        self._keys: set[str] = set(INDEXED_ATTRIBUTES)
        self._segments: deque[_Segment] = deque()

    @property
    def max_spans(self) -> int:
        return self._max_spans

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def span_count(self) -> int:
        with self._lock:
            return len(self._spans)

    @property
    def trace_count(self) -> int:
        with self._lock:
            return len(self._traces)

    @property
    def byte_count(self) -> int:
        """Bytes charged for the stored spans (see the module docstring)."""
        with self._lock:
            return self._bytes

    def indexed_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def index_sizes(self) -> dict[str, int]:
        """Entries in the indexes, dropped spans included (for tests and benchmarks)."""
        with self._lock:
            sizes = {"segments": len(self._segments), "service": 0, "operation": 0, "values": 0}
            for segment in self._segments:
                sizes["service"] += sum(len(e) for e in segment.by_service.values())
                sizes["operation"] += sum(_entry_len(e) for ops in segment.by_operation.values() for e in ops.values())
                sizes["values"] += sum(len(table) for table in segment.by_attribute.values())
                for key, table in segment.by_attribute.items():
                    name = f"attribute:{key}"
                    sizes[name] = sizes.get(name, 0) + sum(_entry_len(e) for e in table.values())
            return sizes

    # -- writing ------------------------------------------------------------------------------

    def add(self, request: ExportTraceServiceRequest, size: int | None = None) -> tuple[int, str]:
        """Store every valid span of an export request; return (rejected count, reason).

        `size` is the request's decoded size in bytes when the caller knows it (the length of a
        protobuf body); otherwise it is computed. Raises RequestTooLarge, storing nothing, when
        the request alone would exceed `max_bytes`.
        """
        wire = request.ByteSize() if size is None else size
        count = sum(len(scope_spans.spans) for rs in request.resource_spans for scope_spans in rs.scope_spans)
        charge = wire + count * SPAN_OVERHEAD_BYTES
        if charge > self._max_bytes:
            raise RequestTooLarge(
                f"the request needs about {charge} bytes, more than the store's {self._max_bytes} (DRILLUI_TRACE_MAX_BYTES)"
            )
        rejected = 0
        # The hot path (thousands of spans a second): locals, the filing inlined, and no
        # protobuf access beyond those needed to file the span (see the module docstring).
        with self._lock:
            segment = self._open_segment()
            append_span = self._spans.append
            traces = self._traces
            by_service = segment.by_service
            by_attribute = segment.by_attribute
            table_of = by_attribute.get
            seq = first_seq = self._seq
            for resource_spans in request.resource_spans:
                resource = resource_spans.resource
                res_attrs = attrs_as_strings(resource.attributes)
                service = res_attrs.get("service.name", "")
                res_info = ResourceInfo(
                    proto=resource,
                    schema_url=resource_spans.schema_url,
                    service=service,
                    attrs=res_attrs,
                    key=resource.SerializeToString(deterministic=True) + resource_spans.schema_url.encode(),
                )
                known_ops = self._known_ops.setdefault(service, {}) if service else None
                kinds: dict[str, int] = {}  # kind last seen per name in this request: ops bookkeeping once per change
                service_spans = by_service.get(service)
                if service_spans is None:
                    service_spans = by_service[service] = []
                append_service = service_spans.append
                operations = segment.by_operation.get(service)
                if operations is None:
                    operations = segment.by_operation[service] = {}
                for scope_spans in resource_spans.scope_spans:
                    scope = scope_spans.scope
                    scope_attrs = attrs_as_strings(scope.attributes)
                    scope_info = ScopeInfo(
                        proto=scope,
                        schema_url=scope_spans.schema_url,
                        attrs=scope_attrs,
                        key=scope.SerializeToString(deterministic=True) + scope_spans.schema_url.encode(),
                    )
                    protos = scope_spans.spans
                    group = _Group(res_info, scope_info, protos)
                    # Indexed values a whole group shares: every span of it is filed under them.
                    shared = [
                        (table, value)
                        for key, table in by_attribute.items()
                        for value in (res_attrs.get(key), scope_attrs.get(key))
                        if value is not None
                    ]
                    position = -1
                    for proto in protos:
                        position += 1
                        trace_id = proto.trace_id
                        span_id = proto.span_id
                        if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                            rejected += 1
                            continue
                        seq += 1
                        span: StoredSpan = _new_span(StoredSpan, (group, position, seq))
                        append_service(span)
                        name = proto.name
                        entry = operations.get(name)
                        if entry is None:
                            operations[name] = span
                        elif type(entry) is list:
                            entry.append(span)
                        else:
                            operations[name] = [entry, span]
                        if known_ops is not None:
                            kind = proto.kind
                            if kinds.get(name) != kind:
                                kinds[name] = kind
                                known_ops[(name, kind)] = None
                        for kv in proto.attributes:
                            table = table_of(kv.key)
                            if table is None:
                                continue
                            value = kv.value
                            text = value.string_value
                            if not text and value.WhichOneof("value") != "string_value":
                                text = any_value_as_string(value)
                            entry = table.get(text)
                            if entry is None:
                                table[text] = span
                            elif type(entry) is list:
                                if entry[-1] is not span:  # a key repeated on one span files it once
                                    entry.append(span)
                            elif entry is not span:
                                table[text] = [entry, span]
                        if shared:
                            for table, text in shared:
                                _file(table, text, span)
                        if len(proto.events) or len(proto.links):
                            for holder in (*proto.events, *proto.links):
                                for kv in holder.attributes:
                                    table = table_of(kv.key)
                                    if table is not None:
                                        _file(table, any_value_as_string(kv.value), span)
                        trace = traces.get(trace_id)
                        if trace is None:
                            trace = traces[trace_id] = _StoredTrace(trace_id, seq)
                        trace.spans.append(span)
                        append_span(span)
            self._seq = seq
            if seq > first_seq:
                segment.last_seq = seq
                segment.bytes += charge
                self._bytes += charge
            self._evict_locked()
        reason = "" if not rejected else f"{rejected} span(s) with an empty or malformed trace or span id"
        return rejected, reason

    def _open_segment(self) -> _Segment:
        """The segment new spans go to: the newest one, or a new one once it is full."""
        segments = self._segments
        if segments:
            newest = segments[-1]
            if newest.size() < self._segment_spans and newest.bytes < self._segment_bytes:
                return newest
        segment = _Segment(self._seq + 1, self._keys)
        segments.append(segment)
        return segment

    def _evict_locked(self) -> None:
        spans = self._spans
        traces = self._traces
        segments = self._segments
        while spans and (len(spans) > self._max_spans or self._bytes > self._max_bytes):
            oldest = spans.popleft()
            self._dropped_upto = oldest.seq
            trace_id = oldest.proto.trace_id
            trace = traces[trace_id]
            # The globally oldest span is necessarily the oldest of its own trace.
            trace.spans.popleft()
            if not trace.spans:
                del traces[trace_id]
            if segments[0].last_seq <= oldest.seq:
                # Its last span is gone: the segment's indexes, and what only they held, go too.
                self._bytes -= segments.popleft().bytes

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._traces.clear()
            self._known_ops.clear()
            self._segments.clear()
            self._keys = set(INDEXED_ATTRIBUTES)
            self._dropped_upto = self._seq
            self._bytes = 0

    # -- reading ------------------------------------------------------------------------------

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._known_ops)

    def operations(self, service: str, span_kind: str = "") -> list[tuple[str, str]]:
        """(name, kind) pairs of a service; kind is "" for unspecified; filter by kind if given."""
        with self._lock:
            pairs = list(self._known_ops.get(service, {}))
        named = dict.fromkeys((name, SPAN_KIND_NAMES.get(kind, "")) for name, kind in pairs)
        return [(name, kind) for name, kind in named if not span_kind or kind == span_kind]

    def find_traces(self, query: TraceQuery, *, raw: bool = False) -> list[list[StoredSpan]]:
        """Whole traces with at least one span matching the query, newest first, at most search_depth."""
        with self._lock:
            found = self._search(query)
        return found if raw else [_dedupe(spans) for spans in found]

    def find_traces_linear(self, query: TraceQuery, *, raw: bool = False) -> list[list[StoredSpan]]:
        """The same answer by scanning every stored trace: the reference for tests and benchmarks."""
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

    def _search(self, query: TraceQuery) -> list[list[StoredSpan]]:
        depth = query.search_depth
        if depth <= 0:
            return []
        conditions = self._index_conditions(query)
        traces = self._traces
        dropped = self._dropped_upto
        found: dict[bytes, _StoredTrace] = {}
        ranks: list[int] = []  # min-heap of the best `depth` trace ranks found so far

        def consider(span: StoredSpan) -> None:
            proto = span.proto
            trace_id = proto.trace_id
            if trace_id in found or not _matches(proto, span.group, query):
                return
            trace = found[trace_id] = traces[trace_id]
            if len(ranks) < depth:
                heapq.heappush(ranks, trace.order)
            elif trace.order > ranks[0]:
                heapq.heapreplace(ranks, trace.order)

        if conditions is None:
            # Nothing indexed to narrow on: every span, newest first.
            for span in reversed(self._spans):
                if len(ranks) >= depth and span.seq < ranks[0]:
                    break  # every older span's trace ranks below the `depth` traces found
                consider(span)
        else:
            for segment in reversed(self._segments):
                if len(ranks) >= depth and segment.last_seq < ranks[0]:
                    break
                entry = self._narrowest(segment, conditions)
                if entry is None:
                    continue  # some condition's value is absent from this segment
                for span in _entry_newest_first(entry):
                    seq = span.seq
                    if seq <= dropped or (len(ranks) >= depth and seq < ranks[0]):
                        break  # dropped spans are the oldest of every list
                    consider(span)
        best = sorted(found.values(), key=lambda trace: trace.order, reverse=True)[:depth]
        return [list(trace.spans) for trace in best]

    def _index_conditions(self, query: TraceQuery) -> list[tuple[str, str, str]] | None:
        """The query's conditions an index can serve, as (kind, key, value); None when none can."""
        conditions: list[tuple[str, str, str]] = []
        if query.service_name:
            if query.operation_name:
                conditions.append(("operation", query.service_name, query.operation_name))
            else:
                conditions.append(("service", query.service_name, ""))
        for key, wanted in query.attributes.items():
            if key in _RESERVED_QUERY_KEYS:
                continue
            key = key.removeprefix("resource.")  # the index also files resource values: a superset
            if self._ensure_index(key):
                conditions.append(("attribute", key, wanted))
        return conditions or None

    @staticmethod
    def _narrowest(segment: _Segment, conditions: list[tuple[str, str, str]]) -> Any:
        """The shortest entry of `segment` serving one condition; None when one has no spans here."""
        best: Any = None
        best_len = 0
        for kind, key, value in conditions:
            if kind == "attribute":
                entry = segment.by_attribute[key].get(value)
            elif kind == "operation":
                entry = segment.by_operation.get(key, {}).get(value)
            else:
                entry = segment.by_service.get(key)
            if entry is None:
                return None
            length = _entry_len(entry)
            if best is None or length < best_len:
                best, best_len = entry, length
        return best

    def _ensure_index(self, key: str) -> bool:
        """Whether `key` is indexed, indexing it now by one pass if the cap allows."""
        if key in self._keys:
            return True
        if len(self._keys) >= len(INDEXED_ATTRIBUTES) + MAX_LAZY_KEYS:
            return False
        self._keys.add(key)
        spans = iter(self._spans)
        span = next(spans, None)
        for segment in self._segments:  # both in arrival order, as the ingest path files them
            table = segment.by_attribute[key] = {}
            while span is not None and span.seq <= segment.last_seq:
                if span.seq >= segment.first_seq:
                    proto = span.proto
                    for holder in (proto, *proto.events, *proto.links):
                        for kv in holder.attributes:
                            if kv.key == key:
                                _file(table, any_value_as_string(kv.value), span)
                    for value in (span.resource.attrs.get(key), span.scope.attrs.get(key)):
                        if value is not None:
                            _file(table, value, span)
                span = next(spans, None)
        return True
