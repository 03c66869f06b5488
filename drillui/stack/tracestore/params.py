"""Jaeger's query parameters, read with Go's parsing rules and answered with Jaeger's error bodies.

Why it exists: scripts and the runbook's curl commands depend on Jaeger's exact parameter names,
defaults, precedence and error messages (Go's `time.Parse`, `time.ParseDuration`, `strconv`,
`encoding/json` wording). This module turns a query string into a `TraceQuery`, or into an
`HTTPError` carrying the body Jaeger would have sent; the server only routes and writes.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from drillui.stack.tracestore.store import V3_DEFAULT_SEARCH_DEPTH, TraceQuery, parse_go_bool

LEGACY_DEFAULT_LIMIT = 100  # Jaeger defaultQueryLimit
LEGACY_DEFAULT_LOOKBACK_NS = 48 * 3600 * 10**9  # Jaeger defaultTraceQueryLookbackDuration
TEXT_CT = "text/plain; charset=utf-8"
_RFC3339_NANO_LAYOUT = "2006-01-02T15:04:05.999999999Z07:00"


class HTTPError(Exception):
    """A finished HTTP answer raised from deep inside a handler."""

    def __init__(self, status: int, body: bytes, content_type: str = TEXT_CT) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


def _go_error_body(payload: Mapping[str, Any]) -> bytes:
    # Go's http.Error: the text plus "\n", served as text/plain.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def v3_error(status: int, message: str) -> HTTPError:
    return HTTPError(status, _go_error_body({"error": {"httpCode": status, "message": message}}))


def legacy_error(status: int, message: str) -> HTTPError:
    envelope = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]}
    return HTTPError(status, _go_error_body(envelope))


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


def go_int(text: str, bits: int = 64, func: str = "strconv.ParseInt") -> int:
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


def parse_trace_id(text: str) -> bytes:
    """Jaeger's TraceIDFromString: up to 32 hex digits, left-padded with zeros."""
    if len(text) > 32:
        raise ValueError(f"TraceID cannot be longer than 32 hex characters: {text}")
    if not text or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return bytes.fromhex(text.zfill(32))


class Params:
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


def v3_find_query(params: Params) -> tuple[TraceQuery, bool]:
    def malformed(name: str, exc: Exception) -> HTTPError:
        return v3_error(400, f"malformed parameter {name}: {exc}")

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
        raise v3_error(400, "query.startTimeMin and query.startTimeMax are required")
    try:
        time_min = parse_rfc3339_nano(min_text)
    except ValueError as exc:
        raise malformed(min_name, exc) from exc
    try:
        time_max = parse_rfc3339_nano(max_text)
    except ValueError as exc:
        raise malformed(max_name, exc) from exc
    if not time_min < time_max:
        raise v3_error(400, "query.startTimeMin must be before query.startTimeMax")
    depth_text, depth_name = params.get("query.searchDepth", "query.search_depth", "query.num_traces")
    depth = V3_DEFAULT_SEARCH_DEPTH
    if depth_text:
        try:
            depth = go_int(depth_text, func="strconv.Atoi")
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
            raw = parse_go_bool(raw_text)
        except ValueError as exc:
            raise malformed(raw_name, exc) from exc
    query = TraceQuery(service, operation, attributes, time_min, time_max, durations[0], durations[1], depth)
    return query, raw


def legacy_find_query(params: Params, now_ns: int) -> tuple[TraceQuery, bool, list[bytes]]:
    """Parse `/api/traces` parameters in the order and with the messages of Jaeger's query_parser.go."""

    def timestamp(name: str, default: int) -> int:
        text, _ = params.get(name)
        if not text:
            return default
        try:
            return go_int(text) * 1000
        except ValueError as exc:
            raise legacy_error(400, f"unable to parse param '{name}': {exc}") from exc

    service, _ = params.get("service")
    operation, _ = params.get("operation")
    start = timestamp("start", now_ns - LEGACY_DEFAULT_LOOKBACK_NS)
    end = timestamp("end", now_ns)
    tags: dict[str, str] = {}
    for tag in params.all("tag"):
        key, sep, value = tag.partition(":")
        if not sep:
            raise legacy_error(400, f"malformed 'tag' parameter, expecting key:value, received: {tag}")
        tags[key] = value
    for tags_json in params.all("tags"):
        try:
            tags.update(_go_string_map(tags_json))
        except ValueError as exc:
            raise legacy_error(400, f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from exc
    limit = LEGACY_DEFAULT_LIMIT
    limit_text, _ = params.get("limit")
    if limit_text:
        try:
            limit = go_int(limit_text, bits=32)
        except ValueError as exc:
            raise legacy_error(400, str(exc)) from exc
    durations = []
    for name in ("minDuration", "maxDuration"):
        text, _ = params.get(name)
        try:
            durations.append(parse_go_duration(text) if text else 0)
        except ValueError as exc:
            raise legacy_error(400, f"unable to parse param '{name}': {exc}") from exc
    trace_ids = []
    for text in params.all("traceID"):
        try:
            trace_ids.append(parse_trace_id(text))
        except ValueError as exc:
            raise legacy_error(400, f"cannot parse traceID param: {exc}") from exc
    raw = False
    raw_text, _ = params.get("raw")
    if raw_text:
        try:
            raw = parse_go_bool(raw_text)
        except ValueError as exc:
            raise legacy_error(400, f"unable to parse param 'raw': {exc}") from exc
    if not trace_ids and not service:
        raise legacy_error(400, "parameter 'service' is required")
    if limit <= 0:
        raise legacy_error(400, "invalid parameter: limit must be greater than 0")
    if start > end:
        raise legacy_error(400, "invalid parameter: start time must be before end time")
    if durations[0] and durations[1] and durations[1] < durations[0]:
        raise legacy_error(400, "'maxDuration' should be greater than 'minDuration'")
    return TraceQuery(service, operation, tags, start, end, durations[0], durations[1], limit), raw, trace_ids
