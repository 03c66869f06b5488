"""Trace query client: the one place the dashboard and the drill runner ask a Jaeger for traces.

Why it exists: the same code must work against our embedded store and against every real Jaeger a
user may run, whose query APIs differ by release:
- the stable api_v3 (`/api/v3/*`, OTLP/JSON answers) is tried first. Its 404 with the JSON body
  "No traces found" is an empty result; a plain 404 (or an HTML page) means the release has no
  api_v3, and the client falls back to the legacy `/api/*` search once and remembers it;
- Jaeger releases before the api_v3 HTTP gateway honoured `query.attributes` silently ignored it
  and answered every trace of the service. The client notices answers that do not satisfy the
  attributes and then uses the legacy search (which always honoured `tags`) for attribute queries;
- the legacy search (Jaeger <= 2.20) answers Jaeger's UI JSON model inside `{"data": ...}`.
Both answer shapes parse into the same `Trace`/`Span` values, and every result keeps the backend's
body unchanged so the evidence export shows exactly what the backend said.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx

from drillui import http
from drillui.errors import DrillError

__all__ = [
    "ApiName",
    "JaegerClient",
    "Span",
    "SpanEvent",
    "Trace",
    "TraceQueryError",
    "TraceQueryResult",
    "parse_legacy_traces",
    "parse_ui_trace",
    "parse_v3_traces",
]

ApiName = Literal["api_v3", "api_legacy"]
AttrValue = str | int | float | bool
SpanStatus = Literal["UNSET", "OK", "ERROR"]

_SPAN_KINDS = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_CODES: dict[int, SpanStatus] = {0: "UNSET", 1: "OK", 2: "ERROR"}
# Tags the OTLP -> Jaeger translator synthesises from span fields; they go back into those fields.
_SYNTHETIC_TAGS = frozenset(
    {
        "otel.scope.name",
        "otel.scope.version",
        "otel.library.name",
        "otel.library.version",
        "span.kind",
        "otel.status_code",
        "otel.status_description",
        "error",
        "w3c.tracestate",
    }
)
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


class TraceQueryError(DrillError):
    """The trace backend could not be reached or refused a query; the message names the URL."""

    title = "Trace query failed"

    def __init__(self, message: str, *, url: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_unix_nano / 1e9, tz=UTC)


@dataclass(frozen=True)
class Span:
    """One span, whichever API shape it came from (the legacy one has microsecond precision)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    operation: str
    service: str
    start_unix_nano: int
    duration_ns: int
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]
    status: SpanStatus
    events: list[SpanEvent]
    kind: str = ""  # internal|server|client|producer|consumer, "" when unspecified
    status_message: str = ""
    scope_name: str = ""

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_unix_nano / 1e9, tz=UTC)

    @property
    def end_unix_nano(self) -> int:
        return self.start_unix_nano + self.duration_ns


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: list[Span]

    def spans_named(self, operation: str) -> list[Span]:
        return [span for span in self.spans if span.operation == operation]


@dataclass(frozen=True)
class TraceQueryResult:
    api: ApiName
    url: str  # the URL queried, with its query string
    status_code: int
    body: Any  # the parsed JSON exactly as the backend returned it
    traces: list[Trace]


# --------------------------------------------------------------------------- parsing helpers


def _norm_id(value: Any, size: int) -> str:
    """Lowercase hex of `size` bytes; proto3 base64 is accepted; anything else is kept as text."""
    text = str(value or "")
    if _HEX_RE.fullmatch(text) and len(text) <= 2 * size:
        return text.lower().zfill(2 * size)
    if len(text) == 4 * math.ceil(size / 3):  # the base64 length of `size` bytes
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw.hex()
    return text


def _go_float(value: float) -> str:
    magnitude = abs(value)
    if not math.isfinite(value):
        return repr(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, exponent = repr(value).split("e")
        return f"{mantissa}e{'-' if int(exponent) < 0 else '+'}{abs(int(exponent))}"
    return format(Decimal(repr(value)).normalize(), "f")


def _as_string(value: AttrValue) -> str:
    """The string Jaeger compares tag filters against (Go's pcommon AsString)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _otlp_value(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        return ""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return str(value["bytesValue"])
    if "arrayValue" in value:
        return [_otlp_value(item) for item in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return _otlp_attrs((value["kvlistValue"] or {}).get("values"))
    return ""


def _flatten(value: Any) -> AttrValue:
    # Arrays and maps become the JSON text Jaeger shows for them, so both APIs give equal values.
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    flat: AttrValue = value
    return flat


def _otlp_attrs(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, dict) and "key" in item:
            out.setdefault(str(item["key"]), _otlp_value(item.get("value")))
    return out


def _flat_attrs(items: Any) -> dict[str, AttrValue]:
    return {key: _flatten(value) for key, value in _otlp_attrs(items).items()}


def _enum(value: Any, names: Mapping[int, str], prefix: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for number, name in names.items():
            if value.upper() in (f"{prefix}{name}".upper(), name.upper()):
                return number
    return 0


def parse_v3_traces(body: Any) -> list[Trace]:
    """Traces of an api_v3 answer `{"result": {"resourceSpans": [...]}}`, in answer order."""
    result = body.get("result") if isinstance(body, dict) else None
    traces: dict[str, list[Span]] = {}
    for resource_spans in (result or {}).get("resourceSpans") or []:
        resource = _flat_attrs((resource_spans.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans") or []:
            scope_name = str((scope_spans.get("scope") or {}).get("name", ""))
            for raw in scope_spans.get("spans") or []:
                span = _v3_span(raw, service, resource, scope_name)
                traces.setdefault(span.trace_id, []).append(span)
    return [Trace(trace_id, spans) for trace_id, spans in traces.items()]


def _v3_span(raw: dict[str, Any], service: str, resource: dict[str, AttrValue], scope_name: str) -> Span:
    start = int(raw.get("startTimeUnixNano") or 0)
    end = int(raw.get("endTimeUnixNano") or start)
    status = raw.get("status") or {}
    kind_names = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
    events = [
        SpanEvent(str(event.get("name", "")), int(event.get("timeUnixNano") or 0), _flat_attrs(event.get("attributes")))
        for event in raw.get("events") or []
    ]
    parent = raw.get("parentSpanId")
    return Span(
        trace_id=_norm_id(raw.get("traceId"), 16),
        span_id=_norm_id(raw.get("spanId"), 8),
        parent_span_id=_norm_id(parent, 8) if parent else None,
        operation=str(raw.get("name", "")),
        service=service,
        start_unix_nano=start,
        duration_ns=end - start,
        attributes=_flat_attrs(raw.get("attributes")),
        resource=dict(resource),
        status=_STATUS_CODES.get(_enum(status.get("code"), {1: "OK", 2: "ERROR"}, "STATUS_CODE_"), "UNSET"),
        events=events,
        kind=_SPAN_KINDS.get(_enum(raw.get("kind"), kind_names, "SPAN_KIND_"), ""),
        status_message=str(status.get("message", "")),
        scope_name=scope_name,
    )


def _ui_value(tag: Mapping[str, Any]) -> AttrValue:
    value = tag.get("value")
    kind = tag.get("type")
    if kind == "int64" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)  # past 2^53 Jaeger writes int64 as a decimal string
    if kind == "bool" and isinstance(value, str):
        return value.lower() == "true"
    if isinstance(value, (str, int, float, bool)):
        return value
    return "" if value is None else json.dumps(value, separators=(",", ":"))


def _ui_tags(tags: Any) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for tag in tags or []:
        if isinstance(tag, dict) and "key" in tag:
            out.setdefault(str(tag["key"]), _ui_value(tag))
    return out


def parse_ui_trace(trace: Mapping[str, Any]) -> Trace:
    """One trace of Jaeger's UI JSON model (legacy `/api/traces` `data` item)."""
    processes = trace.get("processes") or {}
    spans = []
    for raw in trace.get("spans") or []:
        process = processes.get(raw.get("processID")) or raw.get("process") or {}
        service = str(process.get("serviceName", ""))
        resource: dict[str, AttrValue] = {"service.name": service, **_ui_tags(process.get("tags"))}
        tags = _ui_tags(raw.get("tags"))
        status: SpanStatus = "UNSET"
        status_code = str(tags.get("otel.status_code", "")).upper()
        if status_code in ("OK", "ERROR"):
            status = "OK" if status_code == "OK" else "ERROR"
        if tags.get("error") is True:
            status = "ERROR"
        trace_id = _norm_id(raw.get("traceID") or trace.get("traceID"), 16)
        parent = raw.get("parentSpanID")  # emitted by old Jaeger releases only
        for ref in raw.get("references") or []:
            if ref.get("refType") == "CHILD_OF" and _norm_id(ref.get("traceID"), 16) == trace_id:
                parent = ref.get("spanID")
                break
        events = []
        for log in raw.get("logs") or []:
            fields = _ui_tags(log.get("fields"))
            name = fields.pop("event", "")
            events.append(SpanEvent(str(name), int(log.get("timestamp") or 0) * 1000, fields))
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=_norm_id(raw.get("spanID"), 8),
                parent_span_id=_norm_id(parent, 8) if parent else None,
                operation=str(raw.get("operationName", "")),
                service=service,
                start_unix_nano=int(raw.get("startTime") or 0) * 1000,
                duration_ns=int(raw.get("duration") or 0) * 1000,
                attributes={key: value for key, value in tags.items() if key not in _SYNTHETIC_TAGS},
                resource=resource,
                status=status,
                events=events,
                kind=str(tags.get("span.kind", "")),
                status_message=str(tags.get("otel.status_description", "")),
                scope_name=str(tags.get("otel.scope.name", tags.get("otel.library.name", ""))),
            )
        )
    return Trace(_norm_id(trace.get("traceID"), 16), spans)


def parse_legacy_traces(body: Any) -> list[Trace]:
    """Traces of a legacy envelope `{"data": [trace, ...], ...}` (`data` may be null)."""
    data = body.get("data") if isinstance(body, dict) else None
    return [parse_ui_trace(trace) for trace in data or [] if isinstance(trace, dict)]


def _span_satisfies(span: Span, service: str, operation: str, attributes: Mapping[str, str]) -> bool:
    """Jaeger's per-span matching rule, used to check that a backend honoured the attributes."""
    if (service and span.service != service) or (operation and span.operation != operation):
        return False
    for key, wanted in attributes.items():
        if key == "error":
            if wanted.lower() not in ("true", "false", "1", "0", "t", "f"):
                return False
            if span.status != ("ERROR" if wanted.lower() in ("true", "1", "t") else "OK"):
                return False
        elif key == "span.status":
            if span.status != (wanted.upper() if wanted.upper() in ("OK", "ERROR") else "UNSET"):
                return False
        elif key == "span.kind":
            if span.kind != wanted.lower():
                return False
        elif key == "scope.name":
            if span.scope_name != wanted:
                return False
        elif key == "scope.version":
            continue  # not kept on Span; cannot disprove
        elif key.startswith("resource."):
            found = span.resource.get(key.removeprefix("resource."))
            if found is None or _as_string(found) != wanted:
                return False
        else:
            holders = [span.attributes, span.resource, *(event.attributes for event in span.events)]
            if not any(key in held and _as_string(held[key]) == wanted for held in holders):
                return False
    return True


def _trace_satisfies(trace: Trace, service: str, operation: str, attributes: Mapping[str, str]) -> bool:
    return any(_span_satisfies(span, service, operation, attributes) for span in trace.spans)


def _rfc3339_nano(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive datetimes are taken as UTC
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z"


def _unix_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# --------------------------------------------------------------------------- client


class JaegerClient:
    """Query a Jaeger (or our embedded store) by its HTTP API; api_v3 first, legacy as fallback.

    `api` forces one API shape ("api_v3" or "api_legacy") instead of detecting it ("auto").
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
        api: Literal["auto", "api_v3", "api_legacy"] = "auto",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else http.client(timeout=timeout)
        self._mode = api
        self._v3_missing = api == "api_legacy"
        self._v3_ignores_attributes = False
        self.api: ApiName | None = None  # the API that answered last

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- public queries

    def services(self) -> list[str]:
        if not self._v3_missing:
            response = self._get("/api/v3/services", {})
            body = self._v3_body(response)
            if body is not None:
                self.api = "api_v3"
                return [str(name) for name in body.get("services") or []]
        response = self._get("/api/services", {})
        body = self._legacy_body(response)
        self.api = "api_legacy"
        return [str(name) for name in body.get("data") or []]

    def operations(self, service: str) -> list[str]:
        if not self._v3_missing:
            response = self._get("/api/v3/operations", {"service": service})
            body = self._v3_body(response)
            if body is not None:
                self.api = "api_v3"
                names = (op.get("name", "") for op in body.get("operations") or [] if isinstance(op, dict))
                return list(dict.fromkeys(str(name) for name in names))
        response = self._get(f"/api/services/{quote(service, safe='')}/operations", {})
        body = self._legacy_body(response)
        self.api = "api_legacy"
        return [str(name) for name in body.get("data") or []]

    def find_traces(
        self,
        service: str,
        operation: str,
        attributes: Mapping[str, str],
        *,
        start: datetime,
        end: datetime,
        limit: int = 20,
    ) -> TraceQueryResult:
        """Traces where ONE span has this service, operation (empty = any) and every attribute."""
        attrs = {str(key): str(value) for key, value in attributes.items()}
        skip_v3 = self._v3_missing or (bool(attrs) and self._v3_ignores_attributes and self._mode == "auto")
        result = None if skip_v3 else self._v3_find(service, operation, attrs, start, end, limit)
        if (
            result is not None
            and self._mode == "auto"
            and attrs
            and not self._honoured(result, service, operation, attrs)
        ):
            # This api_v3 predates `query.attributes` and answered every trace of the service.
            self._v3_ignores_attributes = True
            legacy = self._legacy_find(service, operation, attrs, start, end, limit)
            if legacy is not None:
                return legacy
            # No legacy search either: keep api_v3's body, drop the traces it should not have sent.
            kept = [trace for trace in result.traces if _trace_satisfies(trace, service, operation, attrs)]
            return replace(result, traces=kept)
        if result is not None:
            return result
        legacy = self._legacy_find(service, operation, attrs, start, end, limit)
        if legacy is None:
            raise TraceQueryError(
                f"GET {self.base_url}/api/traces: HTTP 404 and no JSON: this backend has neither the api_v3 nor "
                "the legacy /api/traces search (is it a Jaeger query service?)",
                url=f"{self.base_url}/api/traces",
                status_code=404,
            )
        return legacy

    def get_trace(self, trace_id: str) -> TraceQueryResult:
        """One trace by id (an empty result when the backend does not have it)."""
        if not self._v3_missing:
            response = self._get(f"/api/v3/traces/{quote(trace_id, safe='')}", {})
            result = self._v3_result(response)
            if result is not None:
                return result
        response = self._get(f"/api/traces/{quote(trace_id, safe='')}", {})
        body = _json_or_none(response)
        if response.status_code == 404 and _is_legacy_envelope(body):
            self.api = "api_legacy"
            return TraceQueryResult("api_legacy", str(response.url), 404, body, [])
        body = self._legacy_body(response)
        self.api = "api_legacy"
        return TraceQueryResult("api_legacy", str(response.url), response.status_code, body, parse_legacy_traces(body))

    # ---- api_v3

    def _v3_find(
        self, service: str, operation: str, attrs: dict[str, str], start: datetime, end: datetime, limit: int
    ) -> TraceQueryResult | None:
        # snake_case names work on every api_v3 release; older ones only read query.num_traces.
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339_nano(start),
            "query.start_time_max": _rfc3339_nano(end),
            "query.search_depth": str(limit),
            "query.num_traces": str(limit),
        }
        if operation:
            params["query.operation_name"] = operation
        if attrs:
            params["query.attributes"] = json.dumps(attrs, separators=(",", ":"), ensure_ascii=False)
        return self._v3_result(self._get("/api/v3/traces", params))

    def _v3_result(self, response: httpx.Response) -> TraceQueryResult | None:
        body = _json_or_none(response)
        if response.status_code == 404 and _is_v3_error(body):
            self.api = "api_v3"
            return TraceQueryResult("api_v3", str(response.url), 404, body, [])  # "No traces found"
        body = self._v3_body(response)
        if body is None:
            return None
        self.api = "api_v3"
        return TraceQueryResult("api_v3", str(response.url), response.status_code, body, parse_v3_traces(body))

    def _v3_body(self, response: httpx.Response) -> dict[str, Any] | None:
        """The JSON body of a successful api_v3 answer, or None when this Jaeger has no api_v3."""
        body = _json_or_none(response)
        if self._mode == "auto" and (
            (response.status_code == 404 and not _is_v3_error(body))
            or (response.status_code == 200 and not isinstance(body, dict))  # e.g. the UI's index.html
        ):
            self._v3_missing = True
            return None
        self._raise_for_error(response, body)
        if not isinstance(body, dict):
            raise TraceQueryError(f"GET {response.url}: the answer is not a JSON object", url=str(response.url))
        return body

    @staticmethod
    def _honoured(result: TraceQueryResult, service: str, operation: str, attrs: dict[str, str]) -> bool:
        return all(_trace_satisfies(trace, service, operation, attrs) for trace in result.traces)

    # ---- legacy

    def _legacy_find(
        self,
        service: str,
        operation: str,
        attrs: dict[str, str],
        start: datetime,
        end: datetime,
        limit: int,
    ) -> TraceQueryResult | None:
        """The legacy search's answer, or None when this backend has no `/api/traces` search."""
        params = {
            "service": service,
            "start": str(_unix_micros(start)),
            "end": str(_unix_micros(end)),
            "limit": str(limit),
        }
        if operation:
            params["operation"] = operation
        if attrs:
            params["tags"] = json.dumps(attrs, separators=(",", ":"), ensure_ascii=False)
        response = self._get("/api/traces", params)
        body = _json_or_none(response)
        if response.status_code == 404 and not _is_legacy_envelope(body):
            return None
        body = self._legacy_body(response)
        self.api = "api_legacy"
        return TraceQueryResult("api_legacy", str(response.url), response.status_code, body, parse_legacy_traces(body))

    def _legacy_body(self, response: httpx.Response) -> dict[str, Any]:
        body = _json_or_none(response)
        self._raise_for_error(response, body)
        if not isinstance(body, dict):
            raise TraceQueryError(f"GET {response.url}: the answer is not a JSON object", url=str(response.url))
        return body

    # ---- transport

    def _get(self, path: str, params: Mapping[str, str]) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            return self._client.get(url, params=dict(params), timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise TraceQueryError(
                f"GET {url}: no answer within {self._timeout:g}s ({type(exc).__name__})", url=url
            ) from exc
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise TraceQueryError(f"GET {url}: cannot connect: {reason}", url=url) from exc

    @staticmethod
    def _raise_for_error(response: httpx.Response, body: Any) -> None:
        if response.is_success:
            return
        detail = _error_detail(body) or " ".join(response.text.split())[:200] or response.reason_phrase
        raise TraceQueryError(
            f"GET {response.url}: HTTP {response.status_code}: {detail}",
            url=str(response.url),
            status_code=response.status_code,
        )


def _json_or_none(response: httpx.Response) -> Any:
    # Jaeger sends errors (and api_v3 answers) as text/plain, so the body is parsed whatever its type.
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _is_v3_error(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def _is_legacy_envelope(body: Any) -> bool:
    return isinstance(body, dict) and "data" in body and "errors" in body


def _error_detail(body: Any) -> str:
    if _is_v3_error(body):
        return str(body["error"].get("message", ""))
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        return str(first.get("msg", "")) if isinstance(first, dict) else str(first)
    return ""


# --------------------------------------------------------------------------- recording


def span_from_json(d: Mapping[str, Any]) -> Span:
    return Span(
        trace_id=str(d["trace_id"]), span_id=str(d["span_id"]), parent_span_id=d.get("parent_span_id"),
        operation=str(d.get("operation", "")), service=str(d.get("service", "")),
        start_unix_nano=int(d.get("start_unix_nano", 0)), duration_ns=int(d.get("duration_ns", 0)),
        attributes=dict(d.get("attributes") or {}), resource=dict(d.get("resource") or {}),
        status=d.get("status", "UNSET"),
        events=[SpanEvent(str(e.get("name", "")), int(e.get("time_unix_nano", 0)), dict(e.get("attributes") or {}))
                for e in d.get("events") or []],
        kind=str(d.get("kind", "")), status_message=str(d.get("status_message", "")), scope_name=str(d.get("scope_name", "")),
    )


def span_to_json(span: Span) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id, "span_id": span.span_id, "parent_span_id": span.parent_span_id,
        "operation": span.operation, "service": span.service, "start_unix_nano": span.start_unix_nano,
        "duration_ns": span.duration_ns, "attributes": dict(span.attributes), "resource": dict(span.resource),
        "status": span.status, "events": [{"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": dict(e.attributes)}
                                          for e in span.events],
        "kind": span.kind, "status_message": span.status_message, "scope_name": span.scope_name,
    }
