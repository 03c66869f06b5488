"""What the runner watches while a drill runs: every worker's /metrics, log files and spans.

Three threads, each on its own cadence, each with one shared client for its target, emit what
they see through the recorder: `metrics_sampled` (only the series that changed since that
worker's previous sample), `log_lines_seen` (the lines each poll read, with their place in the
file), `spans_seen` (spans not recorded yet, from the trace queries the checks need). A source
that fails (a killed worker, the trace store slowed by the drill) is reported once per outage and
retried on the next tick: the drill deliberately breaks things, and observing must not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from drillui import http
from drillui.errors import DrillError
from drillui.evidence.checks import trace_queries
from drillui.record.events import LogLinesSeen, MetricsSampled, MetricsUnreachable, Said, SpansSeen
from drillui.sources.logs import LogChunk, LogTailer
from drillui.sources.metrics import MetricsScraper, MetricsSnapshot, Sample
from drillui.sources.traces import JaegerClient, Trace, span_to_json
from worker.contract import DEFAULT_SERVICE_NAME

if TYPE_CHECKING:
    from drillui.runner.recorder import Recorder

METRICS_EVERY: Final = 0.5
LOGS_EVERY: Final = 0.25
TRACES_EVERY: Final = 1.0
SCRAPE_TIMEOUT: Final = 1.0
TRACE_TIMEOUT: Final = 2.0
TRACE_LIMIT: Final = 20
# Spans are stamped when they start; the search window opens a little before the run did.
TRACE_LOOKBACK_SECONDS: Final = 5.0
LIVE_SKIPPED: Final = ("_bucket", "_created")


@dataclass(frozen=True)
class Target:
    """A live worker as the observers see it."""

    name: str
    metrics_url: str | None
    log_path: Path


def sample_rows(snap: MetricsSnapshot, previous: MetricsSnapshot | None) -> tuple[tuple[tuple[str, dict[str, str], float, str], ...], bool]:
    """(samples to record, full): every sample, or only those that changed since `previous`.

    A full sample is sent whenever a series disappeared (a restarted worker), so a reader never
    keeps a series the worker no longer has.
    """
    def row(s: Sample) -> tuple[str, dict[str, str], float, str]:
        return (s.name, dict(s.labels), s.value, s.kind)

    if previous is None:
        return tuple(row(s) for s in snap.samples), True
    before = {s.key: s.value for s in previous.samples}
    now_keys = {s.key for s in snap.samples}
    if not set(before) <= now_keys:
        return tuple(row(s) for s in snap.samples), True
    return tuple(row(s) for s in snap.samples if before.get(s.key) != s.value), False


class Observers:
    def __init__(
        self,
        recorder: Recorder,
        targets: Callable[[], Sequence[Target]],
        jaeger_url: str,
        *,
        since: float,
        snapshot_path: Path,
    ) -> None:
        self.recorder = recorder
        self.targets = targets
        self.jaeger_url = jaeger_url
        self.since = since
        self.snapshot_path = snapshot_path
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http = http.client(timeout=SCRAPE_TIMEOUT)
        self._last: dict[str, MetricsSnapshot] = {}
        self._down: set[str] = set()
        self._tailer = LogTailer()
        self._tail_lock = threading.Lock()
        self._trace_extra: list[tuple[str, str, str]] = []
        self._trace_ids_wanted: list[str] = []
        self._extra_lock = threading.Lock()
        self._trace_down = False
        self._traces_http = http.client(timeout=TRACE_TIMEOUT)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for name, every, tick in (("metrics", METRICS_EVERY, self.sample_metrics), ("logs", LOGS_EVERY, self.read_logs),
                                  ("traces", TRACES_EVERY, self.query_traces)):
            t = threading.Thread(target=self._loop, args=(every, tick), name=f"drill-observe-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, every: float, tick: Callable[[], None]) -> None:
        while not self._stop.wait(every):
            try:
                tick()
            except DrillError:
                continue  # reported by the tick itself; the next one tries again

    def stop(self) -> None:
        """Stop the threads and read the last lines of every log file (partial ones too)."""
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._threads.clear()
        self.read_logs(final=True)

    def close(self) -> None:
        self._http.close()
        self._traces_http.close()

    def follow_log(self, name: str, path: Path) -> None:
        with self._tail_lock:
            if path not in self._tailer.sources.values():
                self._tailer.add(path, source=name)

    def ask_traces(self, operation: str, attribute: str, value: str) -> None:
        """Also query this (a pivot a person asked for), on every round from now on."""
        with self._extra_lock:
            key = (operation, attribute, value)
            if key not in self._trace_extra:
                self._trace_extra = [*self._trace_extra[-19:], key]

    def ask_trace_id(self, trace_id: str) -> None:
        with self._extra_lock:
            if trace_id not in self._trace_ids_wanted:
                self._trace_ids_wanted = [*self._trace_ids_wanted[-19:], trace_id]

    # ---- ticks ----------------------------------------------------------------------------------

    def sample_metrics(self, phase: str = "live") -> dict[str, MetricsSnapshot]:
        """Scrape every live worker once and record it; returns what answered."""
        got: dict[str, MetricsSnapshot] = {}
        for target in self.targets():
            if target.metrics_url is None:
                continue
            try:
                snap = MetricsScraper(target.metrics_url, client=self._http, timeout=SCRAPE_TIMEOUT).scrape()
            except DrillError as exc:
                if target.name not in self._down:
                    self._down.add(target.name)
                    self.recorder.emit(MetricsUnreachable(worker=target.name, error=exc.message))
                continue
            self._down.discard(target.name)
            got[target.name] = snap
            self.record_sample(target.name, snap, phase)
        return got

    def record_sample(self, worker: str, snap: MetricsSnapshot, phase: str, file: str | None = None) -> None:
        full_phase = phase != "live"
        if not full_phase:
            # Live samples feed the panels and the peaks; histogram buckets and creation stamps
            # would be most of every sample's bytes. Phase scrapes keep everything.
            snap = MetricsSnapshot("", snap.taken_at, tuple(s for s in snap.samples if not s.name.endswith(LIVE_SKIPPED)))
        samples, full = sample_rows(snap, None if full_phase else self._last.get(worker))
        self._last[worker] = snap
        self.recorder.emit(MetricsSampled(worker=worker, phase=phase, taken_at=snap.taken_at, samples=samples,  # type: ignore[arg-type]
                                          full=full or full_phase, file=file))

    def forget_worker(self, name: str) -> None:
        """A worker restarted under the same name: its next sample is a full one."""
        self._last.pop(name, None)
        self._down.discard(name)

    def read_logs(self, final: bool = False) -> None:
        for target in self.targets():
            self.follow_log(target.name, target.log_path)
        with self._tail_lock:
            chunks = self._tailer.poll_chunks(final=final)
        for chunk in chunks:
            self._emit_chunk(chunk)

    def _emit_chunk(self, chunk: LogChunk) -> None:
        try:
            rel = str(chunk.path.resolve().relative_to(self.snapshot_path.resolve()))
        except ValueError:
            rel = str(chunk.path)
        self.recorder.emit(LogLinesSeen(worker=chunk.source, file=rel, start=chunk.start, end=chunk.end,
                                        first_line=chunk.first_line, lines=chunk.lines))

    def query_traces(self) -> None:
        state = self.recorder.state
        with self._extra_lock:
            extra = list(self._trace_extra)
            wanted_ids = list(self._trace_ids_wanted)
            self._trace_ids_wanted.clear()
        with self.recorder._lock:  # the state is folded under this lock; read the pivots under it too
            queries = list(dict.fromkeys([*trace_queries(self.recorder.drill, state), *extra]))
        start = datetime.fromtimestamp(self.since - TRACE_LOOKBACK_SECONDS, UTC)
        end = datetime.now(UTC) + timedelta(seconds=TRACE_LOOKBACK_SECONDS)
        new: list[dict[str, object]] = []
        seen: set[tuple[str, str]] = set()
        with JaegerClient(self.jaeger_url, client=self._traces_http, timeout=TRACE_TIMEOUT) as client:
            try:
                for operation, attr, value in queries:
                    res = client.find_traces(DEFAULT_SERVICE_NAME, operation, {attr: value}, start=start, end=end, limit=TRACE_LIMIT)
                    new += self._new_spans(res.traces, seen)
                for tid in wanted_ids:
                    res = client.get_trace(tid)
                    new += self._new_spans(res.traces, seen)
            except DrillError as exc:
                if not self._trace_down:
                    self._trace_down = True
                    self.recorder.emit(Said(message=f"trace backend not answering: {exc.message}"))
                return
        self._trace_down = False
        if new:
            self.recorder.emit(SpansSeen(spans=tuple(new)))

    def _new_spans(self, traces: Sequence[Trace], seen: set[tuple[str, str]]) -> list[dict[str, object]]:
        pool = self.recorder.state.spans.spans
        out: list[dict[str, object]] = []
        for trace in traces:
            for span in trace.spans:
                key = (span.trace_id, span.span_id)
                if key in pool or key in seen:
                    continue
                seen.add(key)
                out.append(span_to_json(span))
        return out
