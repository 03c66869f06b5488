"""The log source: worker JSON lines tailed from files that are still being written."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import drillui.sources.logs as logs_module
from drillui.sources.errors import SourceError
from drillui.sources.logs import (
    RAW,
    LogBuffer,
    LogFilter,
    LogRecord,
    LogTailer,
    group_by_trace,
    join_on_trace,
    parse_filter,
    parse_line,
)

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


def worker_line(**fields: Any) -> str:
    base: dict[str, Any] = {
        "ts": "2026-03-01T10:00:00.000000Z",
        "level": "info",
        "event": "outbox.processed",
        "msg": "event processed",
        "service": "wordloom-search-outbox-worker",
        "worker_id": "w1",
        "env": "local",
        "projection": "search_index_to_elastic",
        "obs_schema": "labs-009-v2",
    }
    base.update(fields)
    return json.dumps(base)


RETRY = worker_line(
    ts="2026-03-01T10:00:02.500000Z", level="warning", event="outbox.retry_scheduled",
    msg="retry scheduled after connect timeout", op="upsert", batch_size=10, attempt=2,
    result="retry", reason="es_connect", error="ConnectError: [Errno 111] Connection refused",
    error_type="ConnectError", outbox_event_id="0b6f0c1e-8a55-4a3e-9c43-6f2b0d1f7a01",
    entity_id="7d1c9b8e-1f1e-4f61-a0a5-2b7f1f0f9c11", claim_batch_id="c-1",
    correlation_id="req-42", trace_id=TRACE_A.upper(), span_id="00F067AA0BA902B7",
)
TRACEBACK = 'Traceback (most recent call last):\n  File "worker/main.py", line 3, in <module>\nKeyError: \'x\'\n'


# --- parsing -------------------------------------------------------------------------------


def test_parse_worker_line() -> None:
    rec = parse_line(RETRY + "\n", source="w1", line_no=7)
    assert (rec.source, rec.line_no, rec.raw) == ("w1", 7, RETRY)
    assert not rec.is_raw
    assert (rec.level, rec.event, rec.result, rec.reason, rec.op) == (
        "warning", "outbox.retry_scheduled", "retry", "es_connect", "upsert",
    )
    assert (rec.attempt, rec.batch_size, rec.status_code) == (2, 10, None)
    assert rec.trace_id == TRACE_A and rec.span_id == "00f067aa0ba902b7"  # normalised to lowercase
    assert rec.ts == "2026-03-01T10:00:02.500000Z"
    assert rec.timestamp is not None and rec.timestamp.isoformat() == "2026-03-01T10:00:02.500000+00:00"
    assert rec.error_type == "ConnectError" and rec.correlation_id == "req-42"
    assert rec.claim_batch_id == "c-1" and rec.obs_schema == "labs-009-v2"
    assert rec.fields["batch_size"] == 10
    with pytest.raises(TypeError):
        rec.fields["level"] = "error"  # type: ignore[index]


@pytest.mark.parametrize(
    "line",
    ["Traceback (most recent call last):", "  File \"x.py\", line 1", "{not json", "[1, 2]", "42", "",
     '{"truncated": "li'],
)
def test_non_json_lines_become_raw_records(line: str) -> None:
    rec = parse_line(line, source="w2", line_no=1)
    assert rec.is_raw
    assert (rec.level, rec.event, rec.msg, rec.raw) == (RAW, RAW, line, line)
    assert rec.trace_id is None and rec.timestamp is None


def test_odd_field_values() -> None:
    rec = parse_line(json.dumps({"ts": "yesterday", "attempt": "3", "status_code": True, "ok": False, "n": None}),
                     source="s", line_no=1)
    assert rec.timestamp is None
    assert rec.attempt == 3 and rec.status_code is None
    assert rec.field_text("ok") == "false" and rec.field_text("n") == "null" and rec.field_text("x") is None
    naive = parse_line(json.dumps({"ts": "2026-03-01T10:00:00"}), source="s", line_no=1)
    assert naive.timestamp is not None and naive.timestamp.utcoffset() is not None


# --- tailing -------------------------------------------------------------------------------


def _append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def test_tail_growing_file_partial_line_raw_line_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "w1.log"
    tailer = LogTailer({"w1": log})
    assert tailer.poll() == []  # the file does not exist yet
    _append(log, worker_line(msg="one") + "\n" + worker_line(msg="two") + "\n")
    first = tailer.poll()
    assert [(r.source, r.line_no, r.msg) for r in first] == [("w1", 1, "one"), ("w1", 2, "two")]
    assert tailer.poll() == []

    # a partial line waits for its newline
    line3 = worker_line(msg="three")
    _append(log, line3[:25])
    assert tailer.poll() == []
    _append(log, line3[25:])
    assert tailer.poll() == []
    _append(log, "\n" + TRACEBACK)
    got = tailer.poll()
    assert [r.msg for r in got] == [
        "three", "Traceback (most recent call last):", '  File "worker/main.py", line 3, in <module>',
        "KeyError: 'x'",
    ]
    assert [r.line_no for r in got] == [3, 4, 5, 6]
    assert [r.is_raw for r in got] == [False, True, True, True]
    assert tailer.offsets[log] == log.stat().st_size

    # truncated and rewritten shorter: start again at 0
    log.write_text(worker_line(msg="after truncate") + "\n")
    again = tailer.poll()
    assert [(r.line_no, r.msg) for r in again] == [(1, "after truncate")]


def test_rotation_and_recreation(tmp_path: Path) -> None:
    log = tmp_path / "worker-a.log"
    _append(log, worker_line(msg="old-1") + "\n")
    tailer = LogTailer([log])
    assert [(r.source, r.msg) for r in tailer.poll()] == [("worker-a", "old-1")]
    log.rename(tmp_path / "worker-a.log.1")
    assert tailer.poll() == []
    # a new, longer file at the same path: read from 0, not from the old offset
    _append(log, worker_line(msg="new-1") + "\n" + worker_line(msg="new-2") + "\n")
    assert [(r.line_no, r.msg) for r in tailer.poll()] == [(1, "new-1"), (2, "new-2")]
    # deleted and re-created (longer than the old offset too)
    log.unlink()
    assert tailer.poll() == []
    _append(log, "x" * 10 + "\n" + worker_line(msg="recreated") + "\n")
    assert [r.msg for r in tailer.poll()] == ["x" * 10, "recreated"]


def test_empty_lines_are_skipped_but_counted_and_flush_takes_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    _append(log, "\n\r\n" + worker_line(msg="after blanks") + "\r\n" + "no newline at exit")
    tailer = LogTailer({"w": log})
    assert [(r.line_no, r.msg, r.raw.endswith("\r")) for r in tailer.poll()] == [(3, "after blanks", False)]
    flushed = tailer.flush()
    assert [(r.line_no, r.msg, r.is_raw) for r in flushed] == [(4, "no newline at exit", True)]
    assert tailer.flush() == []


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    _append(log, b"bad \xff\xfe bytes\n")
    (rec,) = LogTailer({"w": log}).poll()
    assert rec.is_raw and rec.msg == "bad \ufffd\ufffd bytes"


def test_overlong_partial_line_is_emitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_module, "MAX_LINE_BYTES", 16)
    log = tmp_path / "w.log"
    _append(log, "y" * 40)
    (rec,) = LogTailer({"w": log}).poll()
    assert rec.msg == "y" * 40 and rec.is_raw


def test_reads_only_the_appended_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "big.log"
    _append(log, "".join(worker_line(msg=f"m{i}") + "\n" for i in range(2000)))
    tailer = LogTailer({"big": log})
    assert len(tailer.poll()) == 2000
    reads: list[tuple[int, int]] = []

    class SpyFile(io.FileIO):
        """Records (position, length) of every read."""

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size) or b""
            reads.append((self.tell() - len(data), len(data)))
            return data

    def spy_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        assert mode == "rb", mode
        return SpyFile(path, "rb")

    monkeypatch.setattr(logs_module, "open", spy_open, raising=False)
    size_before = log.stat().st_size
    tail = worker_line(msg="appended") + "\n"
    _append(log, tail)
    assert [r.msg for r in tailer.poll()] == ["appended"]
    assert reads == [(size_before, len(tail.encode()))]
    reads.clear()
    assert tailer.poll() == [] and reads == []  # nothing new: the file is not even opened


def test_tail_while_a_writer_appends_in_random_chunks(tmp_path: Path) -> None:
    paths = {"w1": tmp_path / "w1.log", "w2": tmp_path / "w2.log"}
    expected = {name: [worker_line(worker_id=name, msg=f"{name}-{i}") for i in range(300)] for name in paths}
    rng = random.Random(7)
    chunks = {
        name: _random_chunks(("\n".join(lines) + "\n").encode(), rng) for name, lines in expected.items()
    }
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(max(len(c) for c in chunks.values())):
                for name, parts in chunks.items():
                    if i < len(parts):
                        with open(paths[name], "ab") as fh:
                            fh.write(parts[i])
                            fh.flush()
                            os.fsync(fh.fileno())
        finally:
            done.set()

    tailer = LogTailer(paths)
    thread = threading.Thread(target=writer)
    thread.start()
    got: list[LogRecord] = []
    try:
        while not done.is_set():
            got.extend(tailer.poll())
    finally:
        thread.join(10)
    got.extend(tailer.poll())
    for name, lines in expected.items():
        mine = [r for r in got if r.source == name]
        assert [r.raw for r in mine] == lines
        assert [r.line_no for r in mine] == list(range(1, 301))
        assert not any(r.is_raw for r in mine)


def _random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 400)
        out.append(data[pos : pos + step])
        pos += step
    return out


def test_tailer_refuses_duplicates_and_reports_unreadable(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    tailer = LogTailer({"w": log})
    with pytest.raises(ValueError, match="already followed"):
        tailer.add(log)
    assert tailer.sources == {"w": log}
    log.mkdir()  # a directory where the log file should be
    with pytest.raises(SourceError, match="cannot read log file"):
        tailer.poll()


# --- buffer and filters --------------------------------------------------------------------


def _records() -> list[LogRecord]:
    lines = [
        worker_line(ts="2026-03-01T10:00:03Z", event="outbox.claimed", msg="claimed 10", trace_id=TRACE_A,
                    span_id="1111111111111111", attempt=1),
        RETRY,
        worker_line(ts="2026-03-01T10:00:01Z", event="outbox.retry_scheduled", msg="read timeout talking to es",
                    reason="es_timeout", attempt=2, result="retry", trace_id=TRACE_B, worker_id="w2"),
        worker_line(ts="2026-03-01T10:00:00.100Z", event="outbox.claimed", msg="claim", trace_id=TRACE_A,
                    worker_id="w2"),
        "Traceback (most recent call last): TimeoutError",
        worker_line(event="outbox.processed", msg="done", reason="es_connect", attempt=3, result="ok"),
    ]
    return [parse_line(line, source="w1", line_no=i) for i, line in enumerate(lines, 1)]


def test_buffer_is_bounded() -> None:
    buffer = LogBuffer(maxlen=4)
    records = _records()
    buffer.extend(records[:3])
    buffer.append(records[3])
    assert len(buffer) == 4 and buffer.dropped == 0
    buffer.extend(records[4:])
    assert len(buffer) == 4 and buffer.maxlen == 4 and buffer.dropped == 2
    assert [r.line_no for r in buffer.records()] == [3, 4, 5, 6]
    buffer.clear()
    assert buffer.records() == [] and buffer.dropped == 0
    with pytest.raises(ValueError, match="maxlen"):
        LogBuffer(0)


def test_parse_filter() -> None:
    flt = parse_filter('reason=es_connect attempt=2 timeout  error="Errno 111" "connection refused" a=b=c =x')
    assert flt.kv == {"reason": "es_connect", "attempt": "2", "error": "Errno 111", "a": "b=c"}
    assert flt.terms == ("timeout", "connection refused", "=x")
    assert parse_filter("") == LogFilter() and parse_filter("   ").empty
    assert parse_filter('http://127.0.0.1:9200/x?a=b "unbalanced').terms == (
        "http://127.0.0.1:9200/x?a=b", '"unbalanced',
    )
    assert parse_filter("level=raw").kv == {"level": "raw"}
    assert str(parse_filter('reason=es_429 "read timeout"')) == 'reason=es_429 "read timeout"'


def test_filters() -> None:
    buffer = LogBuffer(maxlen=100)
    buffer.extend(_records())

    def lines(**kwargs: Any) -> list[int]:
        return [r.line_no for r in buffer.filter(**kwargs)]

    assert lines() == [1, 2, 3, 4, 5, 6]
    assert lines(kv={"reason": "es_connect"}) == [2, 6]
    assert lines(kv={"reason": "es_connect", "attempt": "2"}) == [2]
    assert lines(kv={"attempt": "2.0"}) == []  # exact string comparison
    assert lines(kv={"reason": ""}) == [1, 4, 5]  # absent
    assert lines(kv={"level": "raw"}) == [5]
    assert lines(text="TIMEOUT") == [2, 3, 5]  # case-insensitive, anywhere in the raw line
    assert lines(text="connection refused") == [2]
    assert lines(trace_id=TRACE_A) == [1, 2, 4]
    assert lines(trace_id=TRACE_A.upper(), kv={"worker_id": "w2"}) == [4]
    q = parse_filter("reason=es_connect attempt=2 timeout")
    assert [r.line_no for r in buffer.filter(q)] == [2]  # "timeout" is in its msg
    assert [r.line_no for r in buffer.filter(parse_filter("timeout"), kv={"attempt": "2"})] == [2, 3]
    assert [r.line_no for r in buffer.filter(parse_filter("errno 111 refused"))] == [2]
    assert [r.line_no for r in buffer.filter(parse_filter("errno nope"))] == []


def test_join_on_trace_orders_by_time_across_workers() -> None:
    records = _records()
    joined = join_on_trace(records, TRACE_A.upper())
    # 10:00:00.100 (line 4), 10:00:02.5 (line 2), 10:00:03 (line 1)
    assert [r.line_no for r in joined] == [4, 2, 1]
    assert join_on_trace(records, "f" * 32) == []
    no_ts = parse_line(json.dumps({"trace_id": TRACE_A, "msg": "no time"}), source="w3", line_no=1)
    assert join_on_trace([no_ts, *records], TRACE_A)[-1] is no_ts
    groups = group_by_trace(records)
    assert set(groups) == {TRACE_A, TRACE_B}
    assert [r.line_no for r in groups[TRACE_A]] == [4, 2, 1]
    assert [r.line_no for r in groups[TRACE_B]] == [3]


def test_module_is_headless() -> None:
    code = "import sys, drillui.sources.logs; sys.exit('textual imported' if 'textual' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout
