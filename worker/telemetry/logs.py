"""Structured logs: one JSON object per line, the message for people, fields for machines.

`trace_id` / `span_id` come from the span that is current when the line is written, so a log
line and the span it describes share their ids. Absent values are omitted, never `null`.
Every text passes through `worker.redact.redact`: no URL password reaches the log.

The relay writes one line per event; inside `buffered()` a thread's lines are collected and
written with one write and one flush per batch instead of one per line (the flush is what made
per-event lines costly), in the same order and with the ids of the span current at each call.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from opentelemetry import trace

from worker.contract import OBS_SCHEMA
from worker.redact import redact

# One encoder for every line: json.dumps with options builds a new encoder per call, which was
# a good part of the cost of a per-event line.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_second: list[Any] = [-1, ""]  # the last whole second and its "YYYY-MM-DDTHH:MM:SS" (UTC)


def _now() -> str:
    """RFC 3339 UTC with microseconds; the date part is formatted once per second."""
    t = time.time()
    whole = int(t)
    if whole != _second[0]:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second[0] = whole
    return f"{_second[1]}.{int((t - whole) * 1_000_000):06d}Z"


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return redact(str(value))


class JsonLogger:
    def __init__(self, *, service: str, worker_id: str, env: str, stream: TextIO | None = None,
                 obs_schema: str = OBS_SCHEMA) -> None:
        self.service = service
        self.obs_schema = obs_schema
        self.worker_id = worker_id
        self.env = env
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._local = threading.local()

    def log(self, level: str, event: str, msg: str, **fields: Any) -> None:
        record: dict[str, Any] = {
            "ts": _now(),
            "level": level,
            "event": event,
            "msg": redact(msg),
            "service": self.service,
            "worker_id": self.worker_id,
            "env": self.env,
            "obs_schema": self.obs_schema,
        }
        for key, value in fields.items():
            # Inlined for the common types: this runs for every field of every event's line.
            t = type(value)
            if t is str:
                if "@" in value or "=" in value:
                    value = redact(value)
            elif value is None:
                continue
            elif t is not int and t is not bool and t is not float:
                value = _plain(value)
            record[key] = value
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record["trace_id"] = trace.format_trace_id(ctx.trace_id)
            record["span_id"] = trace.format_span_id(ctx.span_id)
        line = _ENCODER.encode(record)
        pending: list[str] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(line)
            return
        self._write([line])

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._lock:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    @contextmanager
    def buffered(self) -> Iterator[None]:
        """Collect this thread's lines and write them at once when the block ends (even on error)."""
        if getattr(self._local, "pending", None) is not None:
            yield  # already buffering: the outer block writes
            return
        self._local.pending = []
        try:
            yield
        finally:
            lines, self._local.pending = self._local.pending, None
            self._write(lines)

    def info(self, event: str, msg: str, **fields: Any) -> None:
        self.log("info", event, msg, **fields)

    def warning(self, event: str, msg: str, **fields: Any) -> None:
        self.log("warning", event, msg, **fields)

    def error(self, event: str, msg: str, **fields: Any) -> None:
        self.log("error", event, msg, **fields)
