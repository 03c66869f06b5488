"""Read the workers' JSON log lines: parse, tail files as they grow, keep a bounded buffer, filter.

Why this module exists: logs are the last link of the evidence chain (metrics → traces → logs).
A user who found a trace pivots to the log lines carrying its `trace_id`, or narrows the lines of
a drill with `reason=es_connect attempt=2`. The worker writes one JSON object per line (fields in
shared/CONTRACT.md); whatever else reaches its log file (a Python traceback, a line from a
library) is kept as a `raw` record, never dropped, because that is often the most telling line.

Files are followed by offset, so a poll reads only what was appended since the previous one;
a line is only emitted once its newline is written. Headless: never imports textual.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from drillui.sources.errors import SourceError

__all__ = [
    "RAW",
    "LineBuffer",
    "LogBuffer",
    "LogChunk",
    "LogFilter",
    "LogRecord",
    "LogTailer",
    "group_by_trace",
    "join_on_trace",
    "parse_filter",
    "parse_line",
]

# `level` and `event` of a line that is not a JSON object.
RAW: Final = "raw"
# A writer that never ends its line (binary garbage, a hung process) must not grow memory
# without bound: past this many bytes the partial line is emitted as a raw record.
MAX_LINE_BYTES: Final = 1 << 20
# Bytes read from one file per poll, so one huge file cannot stall the dashboard's refresh; the
# rest is read by the next polls.
MAX_READ_PER_POLL: Final = 8 << 20

_KEY_RE: Final = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_TOKEN_RE: Final = re.compile(
    rf'(?P<key>{_KEY_RE})=(?:"(?P<qval>[^"]*)"|(?P<val>\S*))'
    r'|"(?P<phrase>[^"]*)"'
    r"|(?P<word>\S+)"
)


@dataclass(frozen=True)
class LogRecord:
    """One log line. `fields` is the decoded JSON object; for a line that is not a JSON object
    it is `{"level": "raw", "event": "raw", "msg": <the line>}`."""

    source: str  # worker name, or the file's stem
    line_no: int  # 1-based line number in the file (restarts after truncation/rotation)
    raw: str  # the line as written, without its newline
    fields: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def field_text(self, key: str) -> str | None:
        """The field as a string, the way filters compare it (JSON spelling for true/false/null)."""
        if key not in self.fields:
            return None
        return _as_text(self.fields[key])

    @property
    def is_raw(self) -> bool:
        return self.fields.get("level") == RAW and self.fields.get("event") == RAW

    @property
    def ts(self) -> str | None:
        """The `ts` field as written (RFC 3339 UTC)."""
        return self._str("ts")

    @property
    def timestamp(self) -> datetime | None:
        """`ts` parsed to an aware datetime; None when absent or not RFC 3339."""
        text = self.ts
        if text is None:
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            # A bad timestamp makes the record unsortable by time, not unreadable.
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    @property
    def level(self) -> str | None:
        return self._str("level")

    @property
    def event(self) -> str | None:
        return self._str("event")

    @property
    def msg(self) -> str | None:
        return self._str("msg")

    @property
    def service(self) -> str | None:
        return self._str("service")

    @property
    def worker_id(self) -> str | None:
        return self._str("worker_id")

    @property
    def env(self) -> str | None:
        return self._str("env")

    @property
    def projection(self) -> str | None:
        return self._str("projection")

    @property
    def op(self) -> str | None:
        return self._str("op")

    @property
    def result(self) -> str | None:
        return self._str("result")

    @property
    def reason(self) -> str | None:
        return self._str("reason")

    @property
    def correlation_id(self) -> str | None:
        return self._str("correlation_id")

    @property
    def outbox_event_id(self) -> str | None:
        return self._str("outbox_event_id")

    @property
    def entity_id(self) -> str | None:
        return self._str("entity_id")

    @property
    def claim_batch_id(self) -> str | None:
        return self._str("claim_batch_id")

    @property
    def error(self) -> str | None:
        return self._str("error")

    @property
    def error_type(self) -> str | None:
        return self._str("error_type")

    @property
    def obs_schema(self) -> str | None:
        return self._str("obs_schema")

    @property
    def trace_id(self) -> str | None:
        value = self._str("trace_id")
        return value.lower() if value is not None else None

    @property
    def span_id(self) -> str | None:
        value = self._str("span_id")
        return value.lower() if value is not None else None

    @property
    def attempt(self) -> int | None:
        return self._int("attempt")

    @property
    def batch_size(self) -> int | None:
        return self._int("batch_size")

    @property
    def status_code(self) -> int | None:
        return self._int("status_code")

    def _str(self, key: str) -> str | None:
        value = self.fields.get(key)
        if value is None:
            return None
        return value if isinstance(value, str) else _as_text(value)

    def _int(self, key: str) -> int | None:
        value = self.fields.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None


def parse_line(line: str, *, source: str, line_no: int) -> LogRecord:
    """One line → one record; anything that is not a JSON object becomes a `raw` record."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None  # looked like JSON but is not (a truncated or interleaved line)
        if isinstance(decoded, dict):
            return LogRecord(source, line_no, text, MappingProxyType(decoded))
    return LogRecord(source, line_no, text, MappingProxyType({"level": RAW, "event": RAW, "msg": text}))


@dataclass
class _Followed:
    """Where one followed file was read up to."""

    path: Path
    source: str
    offset: int = 0
    line_no: int = 0
    pending: bytes = b""
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the offset belongs to

    def restart(self) -> None:
        self.offset = 0
        self.line_no = 0
        self.pending = b""
        self.ident = None


class LogTailer:
    """Follows log files by path (like `tail -F`): `poll()` returns the lines appended since the
    last poll.

    A file may not exist yet (polled as empty until it appears). A partial last line waits for its
    newline (`flush()` takes it anyway, e.g. once the worker has exited). When the file shrinks
    (truncated) or the path names another file (rotated, deleted and re-created), reading restarts
    at offset 0 of the current file. Lines appended to a rotated-away file after the last poll
    are not read, and a truncation followed by a rewrite longer than the old offset before the
    next poll cannot be seen (the same limits as `tail -F`).
    """

    def __init__(self, files: Mapping[str, str | os.PathLike[str]] | Iterable[str | os.PathLike[str]] = ()) -> None:
        """`files`: `{source: path}`, or paths (source = file name without extension)."""
        self._files: list[_Followed] = []
        self._lock = threading.Lock()
        if isinstance(files, Mapping):
            for source, path in files.items():
                self.add(path, source=source)
        else:
            for path in files:
                self.add(path)

    def add(self, path: str | os.PathLike[str], *, source: str | None = None) -> None:
        resolved = Path(path)
        with self._lock:
            if any(f.path == resolved for f in self._files):
                raise ValueError(f"{resolved} is already followed")
            self._files.append(_Followed(resolved, source if source is not None else resolved.stem))

    @property
    def sources(self) -> dict[str, Path]:
        with self._lock:
            return {f.source: f.path for f in self._files}

    @property
    def offsets(self) -> dict[Path, int]:
        """Bytes consumed per file (complete lines plus the pending partial line)."""
        with self._lock:
            return {f.path: f.offset for f in self._files}

    def poll(self) -> list[LogRecord]:
        """New complete lines of every file, file by file, each in file order."""
        return [rec for chunk in self.poll_chunks() for rec in chunk.records()]

    def flush(self) -> list[LogRecord]:
        """Emit the partial last line of each file (no newline yet) after a final poll."""
        return [rec for chunk in self.poll_chunks(final=True) for rec in chunk.records()]

    def poll_chunks(self, *, final: bool = False) -> list[LogChunk]:
        """The new lines of each file as they were written, with where they sit in the file
        (byte offsets and the number of the first line): a stable reference into the file.
        With `final`, a partial last line (no newline yet) is taken too."""
        with self._lock:
            chunks: list[LogChunk] = []
            for followed in self._files:
                chunk = self._poll_one(followed, final)
                if chunk is not None:
                    chunks.append(chunk)
            return chunks

    def _poll_one(self, followed: _Followed, final: bool = False) -> LogChunk | None:
        try:
            st = os.stat(followed.path)
        except FileNotFoundError:
            # Not there (yet, or any more): when it appears it is a new file, read from 0.
            followed.restart()
            return None
        except OSError as exc:
            raise SourceError(f"cannot read log file {followed.path}: {exc}", source=followed.source) from exc
        ident = (st.st_dev, st.st_ino)
        if followed.ident is not None and (ident != followed.ident or st.st_size < followed.offset):
            followed.restart()  # rotated or truncated
        followed.ident = ident
        data = b""
        if st.st_size != followed.offset:
            try:
                with open(followed.path, "rb") as fh:
                    fh.seek(followed.offset)
                    data = fh.read(MAX_READ_PER_POLL)
            except FileNotFoundError:
                followed.restart()  # removed between stat and open: same as not there
                return None
            except OSError as exc:
                raise SourceError(f"cannot read log file {followed.path}: {exc}", source=followed.source) from exc
        start = followed.offset - len(followed.pending)
        followed.offset += len(data)
        *lines, rest = (followed.pending + data).split(b"\n")
        if len(rest) > MAX_LINE_BYTES or (final and rest):
            lines.append(rest)
            rest = b""
        followed.pending = rest
        if not lines:
            return None
        first = followed.line_no + 1
        followed.line_no += len(lines)
        end = followed.offset - len(rest)
        return LogChunk(followed.source, followed.path, start, end, first,
                        tuple(line.decode("utf-8", errors="replace") for line in lines))


@dataclass(frozen=True)
class LogChunk:
    """Lines read from one file in one poll: `lines[i]` is line `first_line + i`, and the chunk
    spans bytes `start..end` of the file (newlines included)."""

    source: str
    path: Path
    start: int
    end: int
    first_line: int
    lines: tuple[str, ...]

    def records(self) -> list[LogRecord]:
        # An empty line carries nothing; its number still counts.
        return [parse_line(line, source=self.source, line_no=self.first_line + i)
                for i, line in enumerate(self.lines) if line.strip()]


def read_chunk(path: Path, start: int, end: int) -> list[str]:
    """The lines of a file between two offsets a `LogChunk` recorded."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(max(0, end - start))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8", errors="replace") for line in lines]


@dataclass(frozen=True)
class LogFilter:
    """Conditions a record must all meet: each free-text term appears (case-insensitively) in the
    raw line, each `key=value` matches the field exactly as a string (`key=` = absent or empty),
    and the trace id, if given, is the record's."""

    terms: tuple[str, ...] = ()
    kv: Mapping[str, str] = field(default_factory=dict)
    trace_id: str | None = None

    def matches(self, record: LogRecord) -> bool:
        if self.trace_id is not None and record.trace_id != self.trace_id.strip().lower():
            return False
        for key, expected in self.kv.items():
            actual = record.field_text(key)
            if expected == "":
                if actual not in (None, ""):
                    return False
            elif actual != expected:
                return False
        if self.terms:
            haystack = record.raw.casefold()
            if not all(term.casefold() in haystack for term in self.terms):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms and not self.kv and self.trace_id is None

    def __str__(self) -> str:
        parts = [f"{k}={_quote_if_needed(v)}" for k, v in self.kv.items()]
        parts += [_quote_if_needed(t) for t in self.terms]
        if self.trace_id is not None and "trace_id" not in self.kv:
            parts.append(f"trace_id={self.trace_id}")
        return " ".join(parts)


def parse_filter(query: str) -> LogFilter:
    """`reason=es_connect attempt=2 timeout` → kv {reason, attempt} + term "timeout".

    Double quotes group: `"connection refused"` is one term, `error="HTTP 502"` one value.
    A repeated key keeps its last value. An unbalanced quote is read as a literal character.
    """
    terms: list[str] = []
    kv: dict[str, str] = {}
    for match in _TOKEN_RE.finditer(query):
        if match.group("key") is not None:
            value = match.group("qval") if match.group("qval") is not None else match.group("val")
            kv[match.group("key")] = value
        elif match.group("phrase") is not None:
            if match.group("phrase"):
                terms.append(match.group("phrase"))
        else:
            terms.append(match.group("word"))
    return LogFilter(tuple(terms), kv)


class LogBuffer:
    """The last `maxlen` records (oldest evicted first), shared by the tailer and the log panel.

    Thread-safe: the tailer appends from a worker thread while the UI filters.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self._records: deque[LogRecord] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0  # records evicted so far, so the panel can say that older lines exist

    @property
    def maxlen(self) -> int:
        maxlen = self._records.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        return len(self._records)

    @property
    def total(self) -> int:
        """Records appended since the buffer was made (kept plus dropped)."""
        return len(self._records) + self.dropped

    def since(self, total_seen: int) -> list[LogRecord]:
        """The records appended after the first `total_seen` that are still kept."""
        with self._lock:
            new = len(self._records) + self.dropped - total_seen
            if new <= 0:
                return []
            return list(self._records)[-min(new, len(self._records)):]

    def append(self, record: LogRecord) -> None:
        self.extend((record,))

    def extend(self, records: Iterable[LogRecord]) -> None:
        with self._lock:
            for record in records:
                if len(self._records) == self.maxlen:
                    self.dropped += 1
                self._records.append(record)

    def records(self) -> list[LogRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self.dropped = 0

    def filter(
        self,
        flt: LogFilter | None = None,
        *,
        text: str | None = None,
        kv: Mapping[str, str] | None = None,
        trace_id: str | None = None,
    ) -> list[LogRecord]:
        """Records meeting every given condition; `text` is one case-insensitive substring."""
        extra = LogFilter((text,) if text else (), dict(kv or {}), trace_id)
        filters = [f for f in (flt, extra) if f is not None and not f.empty]
        return [r for r in self.records() if all(f.matches(r) for f in filters)]


_PLAIN = re.compile(r"^[A-Za-z0-9_.:\-]+$")


class LineBuffer:
    """The last `maxlen` log lines as written, parsed only when shown or filtered.

    Why not parsed records: a decoded line costs about 2.5 KB (its dict and strings), a raw line
    its own length. Holding the last 50,000 lines of a flood raw costs ~30 MB instead of ~125 MB,
    and a filter first rules lines out by a substring test on the raw text (a value must appear
    in the line to be its field) before decoding the few that may match.

    Lines are numbered by arrival (`total` so far); `dropped` of them have been evicted.
    Single-threaded by design: the screen that owns it is its only reader and writer.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._lines: deque[tuple[str, int, str]] = deque(maxlen=maxlen)
        self.dropped = 0
        self._cache: OrderedDict[int, LogRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def total(self) -> int:
        return len(self._lines) + self.dropped

    @property
    def first(self) -> int:
        """The arrival number of the oldest line still kept."""
        return self.dropped

    def append(self, source: str, line_no: int, raw: str) -> None:
        if len(self._lines) == self.maxlen:
            self.dropped += 1
        self._lines.append((source, line_no, raw))

    def clear(self) -> None:
        self._lines.clear()
        self.dropped = 0
        self._cache.clear()

    def raw(self, n: int) -> str:
        return self._lines[n - self.dropped][2]

    def record(self, n: int) -> LogRecord:
        """Line number `n` (by arrival), decoded; the last few hundred are cached."""
        rec = self._cache.get(n)
        if rec is None:
            source, line_no, raw = self._lines[n - self.dropped]
            rec = parse_line(raw, source=source, line_no=line_no)
            self._cache[n] = rec
            if len(self._cache) > 512:
                self._cache.popitem(last=False)
        return rec

    def snapshot(self) -> LineSnapshot:
        """The kept lines as they are now, to filter away from the thread that appends."""
        return LineSnapshot(self.dropped, tuple(self._lines))

    def matching(self, flt: LogFilter, start: int | None = None) -> list[int]:
        """Arrival numbers of the kept lines from `start` on that pass `flt`."""
        return LineSnapshot(self.dropped, tuple(self._lines)).matching(flt, start)


@dataclass(frozen=True)
class LineSnapshot:
    """Lines of a `LineBuffer` at one moment: `lines[i]` arrived as number `first + i`."""

    first: int
    lines: tuple[tuple[str, int, str], ...]

    def matching(self, flt: LogFilter, start: int | None = None) -> list[int]:
        begin = max(self.first, start if start is not None else 0)
        if flt.empty:
            return list(range(begin, self.first + len(self.lines)))
        needles = [t.casefold() for t in flt.terms]
        plain = [v for v in flt.kv.values() if v and _PLAIN.match(v)]
        trace = flt.trace_id.strip().lower() if flt.trace_id else None
        # Free text alone is decided on the raw text: no line needs decoding.
        terms_only = not flt.kv and trace is None
        out: list[int] = []
        for i in range(begin - self.first, len(self.lines)):
            source, line_no, raw = self.lines[i]
            if needles:
                folded = raw.casefold()
                if not all(t in folded for t in needles):
                    continue
            if trace is not None and trace not in raw:
                continue
            if any(v not in raw for v in plain):
                continue
            if terms_only or flt.matches(parse_line(raw, source=source, line_no=line_no)):
                out.append(i + self.first)
        return out


def join_on_trace(records: Iterable[LogRecord], trace_id: str) -> list[LogRecord]:
    """The records logged under one trace (the trace → logs pivot), oldest first.

    Sorted by `ts` so the lines of several workers interleave as they happened; records without
    a readable `ts` keep their order at the end.
    """
    wanted = trace_id.strip().lower()
    matched = [r for r in records if r.trace_id == wanted]
    return sorted(matched, key=_time_key)


def group_by_trace(records: Iterable[LogRecord]) -> dict[str, list[LogRecord]]:
    """Records with a trace id, grouped by it, each group oldest first."""
    groups: dict[str, list[LogRecord]] = {}
    for record in records:
        if record.trace_id:
            groups.setdefault(record.trace_id, []).append(record)
    return {tid: sorted(group, key=_time_key) for tid, group in groups.items()}


# --- internals -----------------------------------------------------------------------------

_NO_TIME: Final = datetime.max.replace(tzinfo=UTC)


def _time_key(record: LogRecord) -> datetime:
    timestamp = record.timestamp
    return timestamp if timestamp is not None else _NO_TIME


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, type(None), dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _quote_if_needed(value: str) -> str:
    return f'"{value}"' if (not value or any(c.isspace() for c in value)) else value
