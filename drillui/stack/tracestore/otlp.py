"""OTLP in: decoding export requests, and reading OTLP values the way Jaeger reads them.

Why it exists: everything the store keeps arrives as an OTLP `ExportTraceServiceRequest`, in
protobuf or in OTLP/JSON (hex ids, enums as numbers or names). This module turns the JSON form
into the protobuf message, encodes the OTLP/HTTP answers, and stringifies attribute values with
Go's `pcommon.Value.AsString()` rules, since Jaeger's tag matching compares exactly those strings.
No storage and no HTTP here.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

JSON_CT = "application/json"
PROTO_CT = "application/x-protobuf"
SPAN_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
"""OTLP span kinds by the names Jaeger gives them (its operations index, tags and filters)."""


def go_float(value: float) -> str:
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
        return go_float(value.double_value)
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(any_value_to_python(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return ""


def attrs_as_strings(kvs: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in kvs:
        out.setdefault(kv.key, any_value_as_string(kv.value))  # pcommon Map.Get returns the first
    return out


def message_json(message: Message) -> dict[str, Any]:
    # OTLP/JSON: lowerCamelCase keys, enums as integers, 64-bit integers as strings.
    encoded: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=True)
    return encoded


def encode_otlp(message: Message, media_type: str) -> tuple[bytes, str]:
    """OTLP/HTTP answers in the content type of the request."""
    if media_type == PROTO_CT:
        return message.SerializeToString(), PROTO_CT
    return json.dumps(message_json(message), separators=(",", ":")).encode(), JSON_CT


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
