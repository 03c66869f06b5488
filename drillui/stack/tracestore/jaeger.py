"""Jaeger out: stored spans rendered as api_v3's OTLP/JSON and as the legacy UI JSON model.

Why it exists: the dashboard, the evidence export and the runbook's curl commands parse what a
real Jaeger returns, so the two output models are reproduced field by field (id spellings, tag
order of the OTLP -> Jaeger translator, process de-duplication) in one place, apart from how the
spans were stored or requested.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from drillui.stack.tracestore.otlp import SPAN_KIND_NAMES, any_value_as_string, go_float, message_json
from drillui.stack.tracestore.store import ResourceInfo, ScopeInfo, StoredSpan

_MAX_SAFE_JSON_INT = 2**53 - 1


def _span_json(span: Span) -> dict[str, Any]:
    out = message_json(span)
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
        groups: dict[int, tuple[ResourceInfo, dict[int, tuple[ScopeInfo, list[Span]]]]] = {}
        for span in spans:
            scopes = groups.setdefault(id(span.resource), (span.resource, {}))[1]
            scopes.setdefault(id(span.scope), (span.scope, []))[1].append(span.proto)
        for resource, scopes in groups.values():
            scope_spans = []
            for scope, protos in scopes.values():
                entry: dict[str, Any] = {"scope": message_json(scope.proto), "spans": [_span_json(p) for p in protos]}
                if scope.schema_url:
                    entry["schemaUrl"] = scope.schema_url
                scope_spans.append(entry)
            res_entry: dict[str, Any] = {"resource": message_json(resource.proto), "scopeSpans": scope_spans}
            if resource.schema_url:
                res_entry["schemaUrl"] = resource.schema_url
            resource_spans.append(res_entry)
    return {"resourceSpans": resource_spans}


def ui_id(raw: bytes) -> str:
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
        return {"key": key, "type": "float64", "value": double if math.isfinite(double) else go_float(double)}
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
        references.append({"refType": ref_type, "traceID": ui_id(link.trace_id), "spanID": link.span_id.hex()})
    # Tag order of the OTLP -> Jaeger translator: scope, attributes, kind, status, trace state.
    tags: list[dict[str, Any]] = []
    if stored.scope.proto.name:
        tags.append(_ui_str("otel.scope.name", stored.scope.proto.name))
        if stored.scope.proto.version:
            tags.append(_ui_str("otel.scope.version", stored.scope.proto.version))
    tags.extend(_ui_kv(kv.key, kv.value) for kv in span.attributes)
    if span.kind in SPAN_KIND_NAMES:
        tags.append(_ui_str("span.kind", SPAN_KIND_NAMES[span.kind]))
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
    trace_ui_id = ui_id(spans[0].trace_id)
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
