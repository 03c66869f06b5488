"""The metrics source on real exposition text from prometheus-client, with the contract's names.

Every expected number below is computed by hand from the observations, so a wrong selector, a
wrong reset rule or a wrong interpolation changes the result.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from drillui.errors import DrillError, UsageError
from drillui.sources.errors import SourceError
from drillui.sources.metrics import (
    Matcher,
    MetricsHistory,
    MetricsScraper,
    MetricsSnapshot,
    Sample,
    Selector,
    delta,
    histogram_mean,
    histogram_quantile,
    parse_metrics,
    parse_selector,
)

BASE = {"component": "worker", "env": "local"}
BASE_VALUES = tuple(BASE.values())  # component, env: the last label names of every metric
SEARCH = "search_index_to_elastic"
CLAIM_BUCKETS = (0.1, 0.5, 1.0)


class WorkerMetrics:
    """A subset of the contract's metrics, labelled as the worker labels them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.processed = Counter("outbox_processed_total", "events finished",
                                 ["projection", "op", "result", "component", "env"], registry=r)
        self.retry = Counter("outbox_retry_scheduled_total", "rescheduled",
                             ["projection", "op", "reason", "component", "env"], registry=r)
        self.lag = Gauge("outbox_lag_events", "rows pending", ["projection", "component", "env"], registry=r)
        self.claim = Histogram("outbox_claim_duration_seconds", "claim time",
                               ["projection", "component", "env"], buckets=CLAIM_BUCKETS, registry=r)
        self.bulk = Histogram("outbox_es_bulk_request_duration_seconds", "bulk round trip",
                              ["component", "env"], buckets=(0.25, 1.0), registry=r)
        # known label values start at 0, as the contract requires
        for op in ("upsert", "delete"):
            for result in ("ok", "noop"):
                self.processed.labels(SEARCH, op, result, *BASE_VALUES)
            for reason in ("es_429", "es_4xx", "db_error"):
                self.retry.labels(SEARCH, op, reason, *BASE_VALUES)
        self.lag.labels(SEARCH, *BASE_VALUES).set(0)

    def snapshot(self, taken_at: float = 0.0) -> MetricsSnapshot:
        return parse_metrics(generate_latest(self.registry).decode(), taken_at=taken_at)


@pytest.fixture
def wm() -> WorkerMetrics:
    return WorkerMetrics()


def test_parse_keeps_text_and_exposed_sample_names(wm: WorkerMetrics) -> None:
    wm.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(3)
    wm.claim.labels(SEARCH, *BASE_VALUES).observe(0.2)
    text = generate_latest(wm.registry).decode()
    snap = parse_metrics(text, taken_at=1234.5)
    assert snap.text == text and snap.taken_at == 1234.5
    names = snap.names()
    for name in ("outbox_retry_scheduled_total", "outbox_retry_scheduled_created",
                 "outbox_claim_duration_seconds_bucket", "outbox_claim_duration_seconds_count",
                 "outbox_claim_duration_seconds_sum", "outbox_lag_events"):
        assert name in names
    sample = snap.series('outbox_retry_scheduled_total{op="upsert",reason="es_429"}')
    assert sample == [Sample("outbox_retry_scheduled_total",
                             {"projection": SEARCH, "op": "upsert", "reason": "es_429", **BASE}, 3.0, "counter")]
    assert sample[0].cumulative
    assert not snap.series("outbox_retry_scheduled_created")[0].cumulative


def test_parse_rejects_non_exposition_text() -> None:
    with pytest.raises(ValueError, match="not Prometheus text exposition"):
        parse_metrics("<html>hello</html>\n")


def test_selectors_with_each_matcher_type(wm: WorkerMetrics) -> None:
    wm.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(5)
    wm.retry.labels(SEARCH, "delete", "es_429", *BASE_VALUES).inc(1)
    wm.retry.labels(SEARCH, "upsert", "es_4xx", *BASE_VALUES).inc(2)
    wm.retry.labels(SEARCH, "upsert", "db_error", *BASE_VALUES).inc(7)
    snap = wm.snapshot()
    name = "outbox_retry_scheduled_total"
    assert snap.value(name) == 15
    assert snap.value(f'{name}{{reason="es_429"}}') == 6
    assert snap.value(f'{name}{{reason="es_429", op="upsert"}}') == 5
    assert snap.value(f'{name}{{reason!="es_429"}}') == 9
    assert snap.value(f'{name}{{reason=~"es_4.*"}}') == 8
    assert snap.value(f'{name}{{reason=~"es_4"}}') == 0  # anchored, as in PromQL
    assert snap.value(f'{name}{{reason!~"es_.*"}}') == 7
    assert snap.value(f'{name}{{component="worker",env="local",op=~"up.*|del.*"}}') == 15
    # a label that is absent is the empty string
    assert snap.value(f'{name}{{missing=""}}') == 15
    assert snap.value(f'{name}{{missing!=""}}') == 0
    # present at 0 vs. absent
    assert snap.has(f'{name}{{reason="es_4xx",op="delete"}}')
    assert snap.value(f'{name}{{reason="es_4xx",op="delete"}}') == 0.0
    assert not snap.has(f'{name}{{reason="es_connect"}}')
    assert snap.value(f'{name}{{reason="es_connect"}}') == 0.0
    assert not snap.has("outbox_no_such_metric_total")
    assert len(snap.series(f'{name}{{op="upsert"}}')) == 3


def test_selector_syntax_and_canonical_form() -> None:
    a = parse_selector(' outbox_failed_total { reason = "es_429" , op!=\'delete\', } ')
    b = parse_selector('outbox_failed_total{op!="delete",reason="es_429"}')
    assert a == b and hash(a) == hash(b)
    assert str(a) == 'outbox_failed_total{op!="delete",reason="es_429"}'
    assert parse_selector(str(a)) == a
    assert parse_selector("up") == Selector("up") == parse_selector("up{}")
    escaped = parse_selector(r'm{a="x\"y\\z", b=~"\d+"}')
    assert escaped.matchers == (Matcher("a", "=", 'x"y\\z'), Matcher("b", "=~", r"\d+"))
    assert parse_selector(str(escaped)) == escaped
    sample = Sample("m", {"a": 'x"y\\z', "b": "42"}, 1.0)
    assert escaped.matches(sample)
    assert not escaped.matches(Sample("m", {"a": 'x"y\\z', "b": "4x"}, 1.0))
    assert not escaped.matches(Sample("other", sample.labels, 1.0))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ('{reason="es_429"}', "expected a metric name at position 0"),
        ("9lives", "expected a metric name"),
        ('m{reason="es_429"', "missing closing '}'"),
        ("m{", "missing closing '}'"),
        ('m{reason="es_429}', "unterminated string"),
        ("m{reason=es_429}", "expected a quoted value for label 'reason'"),
        ('m{reason~"x"}', "expected one of = != =~ !~ after label 'reason'"),
        ('m{reason=="x"}', "expected a quoted value"),
        ('m{1abc="x"}', "expected a label name at position 2"),
        ('m{a="x" b="y"}', "expected ',' or '}'"),
        ('m{a=~"("}', "invalid regular expression '(' for label 'a'"),
        ('m{a="x"} extra', "unexpected text 'extra'"),
        ("m extra", "unexpected 'e' at position 2"),
    ],
)
def test_bad_selectors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="bad metric selector") as info:
        parse_selector(text)
    assert problem in str(info.value)


def test_delta_counters_gauges_and_new_series(wm: WorkerMetrics) -> None:
    wm.processed.labels(SEARCH, "upsert", "ok", *BASE_VALUES).inc(10)
    wm.lag.labels(SEARCH, *BASE_VALUES).set(40)
    before = wm.snapshot(taken_at=100.0)
    wm.processed.labels(SEARCH, "upsert", "ok", *BASE_VALUES).inc(4)
    wm.processed.labels(SEARCH, "delete", "noop", *BASE_VALUES).inc(2)
    wm.lag.labels(SEARCH, *BASE_VALUES).set(25)
    wm.retry.labels("chronicle", "upsert", "es_connect", *BASE_VALUES).inc(3)  # series born after "before"
    after = wm.snapshot(taken_at=110.0)
    assert delta(before, after, "outbox_processed_total") == 6
    assert delta(before, after, 'outbox_processed_total{result="noop"}') == 2
    assert delta(before, after, "outbox_lag_events") == -15
    assert delta(before, after, 'outbox_retry_scheduled_total{reason="es_connect"}') == 3
    assert delta(before, after, 'outbox_retry_scheduled_total{reason="es_429"}') == 0
    assert delta(before, after, parse_selector("outbox_processed_total")) == 6


def test_delta_survives_a_worker_restart() -> None:
    old = WorkerMetrics()
    old.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(10)
    old.retry.labels(SEARCH, "upsert", "es_4xx", *BASE_VALUES).inc(2)
    old.lag.labels(SEARCH, *BASE_VALUES).set(8)
    before = old.snapshot()
    new = WorkerMetrics()  # restarted process: counters start again at 0
    new.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(3)
    new.retry.labels(SEARCH, "upsert", "es_4xx", *BASE_VALUES).inc(5)
    after = new.snapshot()
    # es_429 went 10 -> 3: a reset, so the increase is 3; es_4xx went 2 -> 5: +3
    assert delta(before, after, "outbox_retry_scheduled_total") == 6
    # a gauge is a plain difference (the new process starts it at 0)
    assert delta(before, after, "outbox_lag_events") == -8
    # a gauge series that vanished went from 8 to nothing
    assert delta(before, MetricsSnapshot.empty(), "outbox_lag_events") == -8
    # a counter that vanished says nothing about the increase
    assert delta(before, MetricsSnapshot.empty(), "outbox_retry_scheduled_total") == 0


def test_untyped_total_is_read_as_a_counter() -> None:
    before = parse_metrics("# TYPE jobs counter\njobs_total 10\n")
    after = parse_metrics("# TYPE jobs counter\njobs_total 4\n")
    assert before.series("jobs_total")[0].cumulative
    assert delta(before, after, "jobs_total") == 4


def _observe_claims(wm: WorkerMetrics) -> None:
    for value in (0.05, 0.05, 0.2, 0.3, 0.4, 0.7, 2.0, 3.0):
        wm.claim.labels(SEARCH, *BASE_VALUES).observe(value)


def test_histogram_quantile_and_mean_by_hand(wm: WorkerMetrics) -> None:
    _observe_claims(wm)
    snap = wm.snapshot()
    name = "outbox_claim_duration_seconds"
    # cumulative buckets: le=0.1 -> 2, 0.5 -> 5, 1.0 -> 6, +Inf -> 8
    assert histogram_quantile(0.5, snap, name) == pytest.approx(0.1 + 0.4 * (2 / 3))
    assert histogram_quantile(0.25, snap, name) == pytest.approx(0.1)
    assert histogram_quantile(0.1, snap, name) == pytest.approx(0.1 * 0.8 / 2)
    assert histogram_quantile(0.75, snap, name) == pytest.approx(1.0)
    assert histogram_quantile(0.9, snap, name) == pytest.approx(1.0)  # in +Inf: highest finite bound
    assert histogram_quantile(1.0, snap, name) == pytest.approx(1.0)
    assert histogram_quantile(0.0, snap, name) == pytest.approx(0.0)
    assert histogram_quantile(0.5, snap, name, {"projection": SEARCH}) == pytest.approx(0.1 + 0.4 * (2 / 3))
    assert histogram_mean(snap, name) == pytest.approx(6.7 / 8)
    assert histogram_mean(snap, name, {"projection": SEARCH, "env": "local"}) == pytest.approx(6.7 / 8)
    # no observations / no such series
    assert histogram_mean(snap, name, {"projection": "chronicle"}) is None
    assert histogram_quantile(0.5, snap, name, {"projection": "chronicle"}) is None
    assert histogram_quantile(0.5, snap, "outbox_process_duration_seconds") is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, snap, name)
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(math.nan, snap, name)


def test_histogram_sums_series_by_le_and_windows_with_since(wm: WorkerMetrics) -> None:
    _observe_claims(wm)
    before = wm.snapshot()
    for value in (0.3, 0.3, 0.9, 0.9):
        wm.claim.labels("chronicle", *BASE_VALUES).observe(value)
    after = wm.snapshot()
    name = "outbox_claim_duration_seconds"
    # all series: le=0.1 -> 2, 0.5 -> 7, 1.0 -> 10, +Inf -> 12; median rank 6 in (0.1, 0.5]
    assert histogram_quantile(0.5, after, name) == pytest.approx(0.1 + 0.4 * (4 / 5))
    assert histogram_mean(after, name) == pytest.approx((6.7 + 2.4) / 12)
    # only what happened after `before`: 0.5 -> 2, 1.0 -> 4, +Inf -> 4; rank 2 -> exactly 0.5
    assert histogram_quantile(0.5, after, name, since=before) == pytest.approx(0.5)
    assert histogram_quantile(0.75, after, name, since=before) == pytest.approx(0.5 + 0.5 * (1 / 2))
    assert histogram_mean(after, name, since=before) == pytest.approx(2.4 / 4)
    assert histogram_mean(after, name, {"projection": SEARCH}, since=before) is None


def test_histogram_without_labels() -> None:
    wm = WorkerMetrics()
    for value in (0.1, 0.5, 0.5, 5.0):
        wm.bulk.labels(*BASE_VALUES).observe(value)
    snap = wm.snapshot()
    # le=0.25 -> 1, 1.0 -> 3, +Inf -> 4
    assert histogram_quantile(0.5, snap, "outbox_es_bulk_request_duration_seconds") == pytest.approx(
        0.25 + 0.75 * (1 / 2)
    )


def test_history_is_bounded_and_tracks_change_since_start(wm: WorkerMetrics) -> None:
    sel = 'outbox_retry_scheduled_total{reason="es_429"}'
    history = MetricsHistory([sel, "outbox_lag_events"], maxlen=3)
    assert history.change_since_start(sel) is None
    counter = wm.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES)
    for i in range(5):
        counter.inc(2)
        wm.lag.labels(SEARCH, *BASE_VALUES).set(10 - i)
        history.add(wm.snapshot(taken_at=100.0 + i))
    assert history.points(sel) == [(102.0, 6.0), (103.0, 8.0), (104.0, 10.0)]
    assert history.points('outbox_retry_scheduled_total{ reason = "es_429" }') == history.points(sel)
    assert history.points("outbox_lag_events") == [(102.0, 8.0), (103.0, 7.0), (104.0, 6.0)]
    assert history.rates(sel) == [(103.0, 2.0), (104.0, 2.0)]
    # baseline = first snapshot added (value 2), latest = 10
    assert history.baseline is not None and history.baseline.taken_at == 100.0
    assert history.change_since_start(sel) == 8
    assert history.change_since_start("outbox_lag_events") == -4
    history.mark_baseline()
    assert history.change_since_start(sel) == 0
    with pytest.raises(KeyError, match="not tracked"):
        history.points("outbox_processed_total")
    history.track("outbox_processed_total")
    assert history.points("outbox_processed_total") == []
    history.clear()
    assert history.points(sel) == [] and history.baseline is None and history.latest is None
    with pytest.raises(ValueError, match="no snapshot"):
        history.mark_baseline()
    with pytest.raises(ValueError, match="maxlen"):
        MetricsHistory(maxlen=0)


def test_history_rate_after_restart() -> None:
    history = MetricsHistory(["c_total"])
    for t, v in ((0.0, 5.0), (2.0, 9.0), (4.0, 1.0)):
        history.add(parse_metrics(f"# TYPE c_total counter\nc_total {v}\n", taken_at=t))
    assert history.rates("c_total") == [(2.0, 2.0), (4.0, 0.5)]


@pytest.fixture
def metrics_server(wm: WorkerMetrics) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=wm.registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scrape_a_live_endpoint(wm: WorkerMetrics, metrics_server: str) -> None:
    wm.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(4)
    with MetricsScraper(metrics_server, timeout=2.0) as scraper:
        before = scraper.scrape()
        wm.retry.labels(SEARCH, "upsert", "es_429", *BASE_VALUES).inc(3)
        after = scraper.scrape()
    assert before.text.startswith("# HELP")
    assert before.value('outbox_retry_scheduled_total{reason="es_429",component="worker",env="local"}') == 4
    assert delta(before, after, 'outbox_retry_scheduled_total{reason="es_429"}') == 3
    assert after.taken_at >= before.taken_at > 0
    # a caller-owned client is used and left open
    with httpx.Client() as client:
        assert MetricsScraper(metrics_server, client=client).scrape().has("outbox_lag_events")
        assert not client.is_closed


def test_scrape_refused_port_raises_source_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with MetricsScraper(url, timeout=1.0) as scraper, pytest.raises(SourceError) as info:
        scraper.scrape()
    assert isinstance(info.value, DrillError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert url in str(info.value) and info.value.source == url


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [(500, "boom", "answered HTTP 500"), (200, "<html>not metrics</html>", "did not return Prometheus text")],
)
def test_scrape_bad_answers_raise_source_error(status: int, body: str, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"].startswith("text/plain")
        return httpx.Response(status, text=body)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(SourceError, match=message):
            MetricsScraper("http://127.0.0.1:1/metrics", client=client).scrape()


@pytest.mark.parametrize("url", ["localhost:9100", "ftp://127.0.0.1/metrics", "http://"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="invalid metrics URL"):
        MetricsScraper(url)


def test_module_is_headless() -> None:
    code = "import sys, drillui.sources.metrics; sys.exit('textual imported' if 'textual' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout
