"""Embedded trace store: an OTLP/HTTP receiver and Jaeger's HTTP query API in one small server.

Why it exists: the drills need a trace backend, and no Jaeger binary can be installed in the lab.
Rather than inventing a private API, this store speaks exactly the wire the real tools speak
(OTLP/HTTP in on `/v1/traces`; Jaeger's api_v3 and the legacy `/api/*` search out, with Jaeger's
envelopes, parameter names, matching rules and error bodies), so the worker, the dashboard, the
evidence export and the runbook's curl commands work unchanged against a real Jaeger later.

The modules follow the data flow:
- `otlp`: export requests decoded (protobuf or OTLP/JSON), attribute values read as Jaeger does;
- `store`: `TraceStore`, span storage bounded by count and bytes, indexed, with Jaeger's
  matching rules (no HTTP);
- `params`: query strings parsed into a `TraceQuery` with Go's rules and Jaeger's error bodies;
- `jaeger`: stored spans rendered as api_v3's OTLP/JSON and the legacy UI model;
- `server`: `TraceStoreServer`, the loopback HTTP server that routes between them.

This package re-exports the public names, so `drillui.stack.tracestore.X` imports keep working.
"""

from __future__ import annotations

from drillui.stack.tracestore.jaeger import otlp_json_traces, ui_trace
from drillui.stack.tracestore.otlp import any_value_as_string, any_value_to_python, decode_otlp_json
from drillui.stack.tracestore.params import (
    LEGACY_DEFAULT_LIMIT,
    LEGACY_DEFAULT_LOOKBACK_NS,
    parse_go_duration,
    parse_rfc3339_nano,
)
from drillui.stack.tracestore.server import MAX_BODY_BYTES, TraceStoreServer
from drillui.stack.tracestore.store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SPANS,
    INDEXED_ATTRIBUTES,
    V3_DEFAULT_SEARCH_DEPTH,
    RequestTooLarge,
    StoredSpan,
    TraceQuery,
    TraceStore,
    span_matches,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SPANS",
    "INDEXED_ATTRIBUTES",
    "LEGACY_DEFAULT_LIMIT",
    "LEGACY_DEFAULT_LOOKBACK_NS",
    "MAX_BODY_BYTES",
    "RequestTooLarge",
    "V3_DEFAULT_SEARCH_DEPTH",
    "StoredSpan",
    "TraceQuery",
    "TraceStore",
    "TraceStoreServer",
    "any_value_as_string",
    "any_value_to_python",
    "decode_otlp_json",
    "otlp_json_traces",
    "parse_go_duration",
    "parse_rfc3339_nano",
    "span_matches",
    "ui_trace",
]
