"""The embedded trace store against its floor and against a linear scan, in one run.

    python bench/bench_tracestore.py [--quick] [--json] [--memory]

Workload: the worker's own span shapes (CONTRACT.md): per claim, an `outbox.claim_batch` span
(its own trace) and a `projection.process_batch` trace with 20 `outbox.process` children, 1 in
9 batches a retry (with `reason`), ~15 attributes a span, exported in OTLP protobuf requests of
512 spans (the SDK's batch size), the same requests for every figure.

- floor: decoding those requests and reading every attribute's key and value (resource, scope,
  span, event and link attributes) in Python, storing nothing: the least any store built on the
  protobuf library must do, since it must look at every value it may index;
- ingest, into a store with room, and at capacity (every span added evicts one): spans/s through
  `TraceStore.add`, decoding included, and the ratio to the floor (goal >= 0.8);
- ingest over HTTP: one client posting the same requests to a `TraceStoreServer` on loopback;
- query ms with 10k / 50k / 100k spans stored: the median of lookups the drills make (one batch by
  `wordloom.claim_batch_id`, one event by `wordloom.outbox_event_id`, the newest retried batches by
  `result`), indexed (`find_traces`) beside the linear scan it replaced (`find_traces_linear`, the
  same matching code over every trace), and the indexed one over HTTP with rendering (goal <= 5 ms);
- with --memory: RSS growth per stored span against its wire size (what SPAN_OVERHEAD_BYTES charges).

Ingest and floor are CPU time of this process (the machine is shared: other processes' load does
not count against either), each the median of `rounds` interleaved runs (3; 1 with --quick);
queries are wall time. `run(quick)` returns the rows (for a future bench/run.py); speed is never
asserted in tests.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drillui.stack.tracestore import TraceQuery, TraceStore, TraceStoreServer  # noqa: E402

SERVICE = "wordloom-search-outbox-worker"
SCHEMA = "labs-009-v2"
REQUEST_SPANS = 512  # the OTel SDK BatchSpanProcessor's max_export_batch_size
BATCH_EVENTS = 20
SIZES = (10_000, 50_000, 100_000)


@dataclass(frozen=True)
class Row:
    figure: str
    value: float
    unit: str
    note: str = ""


@dataclass(frozen=True)
class Workload:
    bodies: list[bytes]
    spans: int
    batch_ids: list[str]
    event_ids: list[str]


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def workload(spans: int, seed: int = 1) -> Workload:
    """`spans` worker-shaped spans in OTLP protobuf requests of 512 (deterministic)."""
    rnd = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rnd.getrandbits(128)))

    def raw(bits: int) -> bytes:
        return (rnd.getrandbits(bits) | 1).to_bytes(bits // 8, "big")

    flat: list[tuple[str, bytes, bytes, bytes, dict[str, str | int | bool]]] = []
    batch_ids: list[str] = []
    event_ids: list[str] = []
    common: dict[str, str | int | bool] = {"projection": "search_index_to_elastic", "wordloom.obs_schema": SCHEMA}
    while len(flat) < spans:
        batch = uid()
        batch_ids.append(batch)
        result = "retry" if rnd.random() < 1 / 9 else "ok"
        claim = {**common, "batch_size": BATCH_EVENTS, "wordloom.worker_id": "w1", "wordloom.claim_batch_id": batch, "claimed_count": BATCH_EVENTS}
        flat.append(("outbox.claim_batch", raw(128), raw(64), b"", claim))
        trace, root = raw(128), raw(64)
        counts = {"ok_count": BATCH_EVENTS if result == "ok" else 0, "retry_count": 0 if result == "ok" else BATCH_EVENTS}
        batch_attrs: dict[str, str | int | bool] = {
            **common, "wordloom.claim_batch_id": batch, "op": "upsert", "batch_size": BATCH_EVENTS, "attempt": 1,
            "wordloom.worker_id": "w1", "result": result, **counts, "failed_count": 0, "noop_count": 0,
        }  # fmt: skip
        if result == "retry":
            batch_attrs["reason"] = "es_connect"
        flat.append(("projection.process_batch", trace, root, b"", batch_attrs))
        for _ in range(BATCH_EVENTS):
            event = uid()
            event_ids.append(event)
            attrs: dict[str, str | int | bool] = {
                "wordloom.outbox_event_id": event, "wordloom.entity_id": uid(), "wordloom.claim_batch_id": batch,
                **common, "op": "upsert", "attempt": 1, "result": result, "noop": False,
            }  # fmt: skip
            if result == "retry":
                attrs["reason"] = "es_connect"
            flat.append(("outbox.process", trace, raw(64), root, attrs))
    del flat[spans:]
    bodies = []
    clock = 1_700_000_000 * 10**9
    for start in range(0, len(flat), REQUEST_SPANS):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(
            [_kv("service.name", SERVICE), _kv("telemetry.sdk.language", "python"), _kv("telemetry.sdk.name", "opentelemetry"), _kv("telemetry.sdk.version", "1.45.2")]
        )
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "worker.relay"
        for name, trace_id, span_id, parent, attrs in flat[start : start + REQUEST_SPANS]:
            clock += 1_000_000
            span = scope_spans.spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=1)
            span.start_time_unix_nano, span.end_time_unix_nano = clock, clock + 500_000
            span.attributes.extend(_kv(k, v) for k, v in attrs.items())
        bodies.append(request.SerializeToString())
    return Workload(bodies, len(flat), batch_ids, event_ids)


def floor(bodies: Sequence[bytes]) -> None:
    """Decode every request and read every attribute's key and value; keep nothing."""
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for kv in resource_spans.resource.attributes:
                kv.key, getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
            for scope_spans in resource_spans.scope_spans:
                for kv in scope_spans.scope.attributes:
                    kv.key, getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                for span in scope_spans.spans:
                    for kv in span.attributes:
                        kv.key, getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                    for holder in (*span.events, *span.links):
                        for kv in holder.attributes:
                            kv.key, getattr(kv.value, kv.value.WhichOneof("value") or "string_value")


def fill(store: TraceStore, bodies: Sequence[bytes]) -> None:
    for body in bodies:
        store.add(ExportTraceServiceRequest.FromString(body), len(body))


def _cpu(fn: Callable[[], object]) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def ingest_rows(work: Workload, rounds: int) -> list[Row]:
    floors, roomy, full = [], [], []
    for _ in range(rounds):
        # Interleaved, so that a burst of load on the machine hits all three alike.
        floors.append(_cpu(lambda: floor(work.bodies)))
        store = TraceStore(max_spans=work.spans * 2, max_bytes=1 << 40)
        roomy.append(_cpu(lambda store=store: fill(store, work.bodies)))  # type: ignore[misc]
        del store
        store = TraceStore(max_spans=work.spans // 4, max_bytes=1 << 40)
        fill(store, work.bodies[: len(work.bodies) // 4 + 1])  # at capacity before the clock starts
        full.append(_cpu(lambda store=store: fill(store, work.bodies)))  # type: ignore[misc]
        del store
        gc.collect()
    rate = {name: work.spans / statistics.median(times) for name, times in (("floor", floors), ("roomy", roomy), ("full", full))}
    return [
        Row("floor: decode + read every attribute", rate["floor"], "spans/s", f"{work.spans} spans, CPU time"),
        Row("ingest, store with room", rate["roomy"], "spans/s", "TraceStore.add, decoding included"),
        Row("ingest / floor, store with room", rate["roomy"] / rate["floor"], "ratio", "goal >= 0.8"),
        Row("ingest, store at capacity (evicting)", rate["full"], "spans/s", "every span added evicts one"),
        Row("ingest / floor, store at capacity", rate["full"] / rate["floor"], "ratio", "goal >= 0.8"),
    ]


def http_ingest_row(work: Workload) -> Row:
    with TraceStoreServer(max_spans=work.spans * 2) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        headers = {"Content-Type": "application/x-protobuf"}
        began = time.perf_counter()
        for body in work.bodies:
            client.post("/v1/traces", content=body, headers=headers).raise_for_status()
        elapsed = time.perf_counter() - began
    return Row("ingest over HTTP (one client, loopback)", work.spans / elapsed, "spans/s", "wall time, client and server in this process")


def _stored_ids(bodies: Sequence[bytes], key: str, operation: str) -> list[str]:
    """Values of `key` on `operation` spans in these requests: ids that are really stored."""
    ids = []
    for body in bodies:
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.name == operation:
                        ids += [kv.value.string_value for kv in span.attributes if kv.key == key]
    return ids


def _queries(bodies: Sequence[bytes], count: int, seed: int) -> list[tuple[str, TraceQuery]]:
    """Lookups of stored ids, as the drills make them (a fixed sample of the stored requests)."""
    rnd = random.Random(seed)
    sample = rnd.sample(list(bodies), min(len(bodies), 8))
    batches = _stored_ids(sample, "wordloom.claim_batch_id", "projection.process_batch")
    events = _stored_ids(sample, "wordloom.outbox_event_id", "outbox.process")
    out: list[tuple[str, TraceQuery]] = []
    for _ in range(count):
        out.append(("batch", TraceQuery(SERVICE, "projection.process_batch", {"wordloom.claim_batch_id": rnd.choice(batches)})))
        out.append(("event", TraceQuery(SERVICE, "outbox.process", {"wordloom.outbox_event_id": rnd.choice(events)})))
        out.append(("retried", TraceQuery(SERVICE, "projection.process_batch", {"result": "retry"}, search_depth=20)))
    return out


def _median_ms(queries: list[tuple[str, TraceQuery]], kind: str, find: Callable[[TraceQuery], object]) -> float:
    times = []
    for label, query in queries:
        if label != kind:
            continue
        began = time.perf_counter()
        found = find(query)
        times.append(time.perf_counter() - began)
        assert found, f"the benchmark's own {kind} query found nothing"
    return statistics.median(times) * 1000


def query_rows(work: Workload, quick: bool) -> list[Row]:
    rows: list[Row] = []
    for size in SIZES:
        bodies = work.bodies[: -(-size // REQUEST_SPANS)]
        store = TraceStore(max_spans=len(bodies) * REQUEST_SPANS, max_bytes=1 << 40)
        fill(store, bodies)
        indexed = _queries(bodies, 20 if quick else 60, seed=size)
        linear = _queries(bodies, 3 if quick else 5, seed=size + 1)
        for kind, what in (("batch", "one batch by claim_batch_id"), ("event", "one event by outbox_event_id"), ("retried", "20 newest retried batches")):
            fast = _median_ms(indexed, kind, store.find_traces)
            slow = _median_ms(linear, kind, store.find_traces_linear)
            rows.append(Row(f"query {what}, {store.span_count // 1000}k spans, indexed", fast, "ms", "goal <= 5 ms"))
            rows.append(Row(f"query {what}, {store.span_count // 1000}k spans, linear scan", slow, "ms", f"indexed is {slow / fast:,.0f}x faster"))
        del store
        gc.collect()
    rows += http_query_rows(work, quick)
    return rows


def http_query_rows(work: Workload, quick: bool) -> list[Row]:
    """The same lookups through the Jaeger API, as the dashboard makes them, at 100k spans."""
    size = SIZES[-1]
    bodies = work.bodies[: -(-size // REQUEST_SPANS)]
    rows = []
    with TraceStoreServer(max_spans=len(bodies) * REQUEST_SPANS, max_bytes=1 << 40) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        fill(server.store, bodies)
        stored = server.store.span_count
        for kind, params in (
            ("batch", lambda q: {"service": SERVICE, "operation": q.operation_name, "tags": json.dumps(dict(q.attributes)), "start": "0"}),
            ("event", lambda q: {"service": SERVICE, "operation": q.operation_name, "tags": json.dumps(dict(q.attributes)), "start": "0"}),
        ):
            queries = [(k, q) for k, q in _queries(bodies, 10 if quick else 30, seed=7) if k == kind]

            def get(query: TraceQuery, params: Callable[[TraceQuery], dict[str, str]] = params) -> object:
                response = client.get("/api/traces", params=params(query))
                response.raise_for_status()
                return response.json()["data"]

            rows.append(Row(f"GET /api/traces, one {kind}, {stored // 1000}k spans (rendered)", _median_ms(queries, kind, get), "ms", "HTTP + JSON rendering"))
    return rows


def _measure_memory(spans: int) -> dict[str, float]:
    """In a fresh process (see memory_rows): RSS growth from storing the workload's spans."""
    import psutil  # a dependency of drillui; imported here since only --memory needs it

    work = workload(spans)
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    store = TraceStore(max_spans=work.spans, max_bytes=1 << 40)
    fill(store, work.bodies)
    gc.collect()
    grown = process.memory_info().rss - before
    return {
        "spans": work.spans,
        "wire": sum(len(body) for body in work.bodies) / work.spans,
        "grown": grown / work.spans,
        "charged": store.byte_count / work.spans,
    }


def memory_rows(spans: int) -> list[Row]:
    """RSS growth per stored span against its wire size, measured in a fresh process: in this
    one, memory freed by the earlier figures would be reused and hide the growth."""
    done = subprocess.run(
        [sys.executable, __file__, "--measure-memory", str(spans)], capture_output=True, text=True, check=True, timeout=600
    )
    m = json.loads(done.stdout)
    return [
        Row("wire size per span", m["wire"], "bytes"),
        Row("RSS growth per stored span", m["grown"], "bytes", f"{m['spans']:.0f} spans, a fresh process"),
        Row("beyond the wire size, per span", m["grown"] - m["wire"], "bytes", "what SPAN_OVERHEAD_BYTES (1,536) stands for"),
        Row("charged per span by the byte bound", m["charged"], "bytes", "wire size + SPAN_OVERHEAD_BYTES"),
    ]


def run(quick: bool = False, memory: bool = False) -> list[Row]:
    """Every figure of this benchmark, measured in one run."""
    rounds = 1 if quick else 3
    work = workload(SIZES[-1])
    rows: list[Row] = []
    load = os.getloadavg()
    rows.append(Row("load average at start (1, 5, 15 min)", load[0], "", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
    rows += ingest_rows(work, rounds)
    rows.append(http_ingest_row(work))
    rows += query_rows(work, quick)
    if memory:
        rows += memory_rows(work.spans)
    load = os.getloadavg()
    rows.append(Row("load average at end (1, 5, 15 min)", load[0], "", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
    return rows


def table(rows: list[Row]) -> str:
    width = max(len(r.figure) for r in rows)
    out = [f"| {'figure':<{width}} | {'value':>10} | unit    | note |", f"|{'-' * (width + 2)}|{'-' * 12}|---------|------|"]
    for r in rows:
        value = f"{r.value:,.0f}" if r.unit in ("spans/s", "bytes") else f"{r.value:.3f}" if r.unit in ("ms", "ratio") else ""
        out.append(f"| {r.figure:<{width}} | {value:>10} | {r.unit:<7} | {r.note} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, fewer queries (well under a minute)")
    ap.add_argument("--json", action="store_true", help="the rows as JSON")
    ap.add_argument("--memory", action="store_true", help="also measure RSS per stored span")
    ap.add_argument("--measure-memory", type=int, help=argparse.SUPPRESS)  # memory_rows' subprocess
    args = ap.parse_args()
    if args.measure_memory:
        print(json.dumps(_measure_memory(args.measure_memory)))
        return 0
    rows = run(args.quick, args.memory)
    print(json.dumps([r.__dict__ for r in rows], indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
