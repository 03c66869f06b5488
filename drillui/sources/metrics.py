"""Read a worker's `/metrics`: exposition text → samples, PromQL-like selectors, deltas, history.

Why this module exists: a drill's verdicts are statements such as "`outbox_retry_scheduled_total
{reason="es_429"}` went up" or "claim time stayed small next to process time". They are checked
on two scrapes (before / after) that are also saved verbatim as evidence, and the dashboard draws
sparklines from the scrapes in between. Users already write these as Prometheus queries, so the
selectors here use the same instant-selector syntax and the same sample names as exposed
(`..._total`, `..._bucket`, `..._created`), and the histogram quantile follows Prometheus'
`histogram_quantile`. There is no Prometheus server in the loop: this is the small subset a drill
needs, computed from the raw text.

Headless: never imports textual.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from drillui import http
from drillui.errors import UsageError
from drillui.sources.errors import SourceError

__all__ = [
    "Matcher",
    "MetricsHistory",
    "MetricsScraper",
    "MetricsSnapshot",
    "Sample",
    "Selector",
    "SelectorLike",
    "delta",
    "histogram_mean",
    "histogram_quantile",
    "parse_metrics",
    "parse_selector",
]

MatchOp = Literal["=", "!=", "=~", "!~"]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

_METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Longest operators first, so "=~" is not read as "=" followed by a stray "~".
_MATCH_OPS: Final[tuple[MatchOp, ...]] = ("=~", "!~", "!=", "=")
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
# The Accept header that makes prometheus-client (and Prometheus exporters) answer in the classic
# text format, the one `text_string_to_metric_families` reads; OpenMetrics would be refused.
_ACCEPT_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Sample:
    """One exposed sample line. `kind` is the type of its metric family (`counter`, `gauge`,
    `histogram`, `summary`, `unknown`...), used to tell cumulative series from gauges."""

    name: str
    labels: Mapping[str, str]
    value: float
    kind: str = "unknown"

    @property
    def key(self) -> SeriesKey:
        """Identity of the series (name + label set), to pair it across two scrapes."""
        return self.name, tuple(sorted(self.labels.items()))

    @property
    def cumulative(self) -> bool:
        """True for series that only go up until the process restarts (counter-like)."""
        if self.name.endswith("_created"):
            return False  # the creation timestamp of a counter is a gauge
        if self.kind == "counter":
            return True
        if self.kind == "histogram":
            return self.name.endswith(("_bucket", "_count", "_sum"))
        if self.kind == "summary":
            return self.name.endswith(("_count", "_sum"))
        # An exporter that declares `# TYPE foo counter` but exposes `foo_total` leaves the
        # sample untyped; the `_total` suffix is the exposition convention for counters.
        return self.kind in ("unknown", "untyped") and self.name.endswith("_total")


@dataclass(frozen=True)
class Matcher:
    """One `label<op>"value"` term of a selector. Regexes are fully anchored, as in PromQL."""

    label: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.op not in _MATCH_OPS:
            raise ValueError(f"unknown matcher operator {self.op!r}; expected one of {_MATCH_OPS}")
        if self.op in ("=~", "!~"):
            try:
                compiled = re.compile(self.value)
            except re.error as exc:
                raise ValueError(
                    f"invalid regular expression {self.value!r} for label {self.label!r}: {exc}"
                ) from exc
            object.__setattr__(self, "_regex", compiled)

    def matches_value(self, value: str) -> bool:
        """Match one label value; a missing label is the empty string (PromQL semantics)."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.label}{self.op}{_quote(self.value)}"


@dataclass(frozen=True)
class Selector:
    """An instant selector `name{label="v", other!="x", a=~"re", b!~"re"}`.

    Matchers are kept sorted, so two spellings of the same selector are equal and hash alike
    (they key the history).
    """

    name: str
    matchers: tuple[Matcher, ...] = ()

    def __post_init__(self) -> None:
        if not _METRIC_NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        ordered = tuple(sorted(self.matchers, key=lambda m: (m.label, m.op, m.value)))
        object.__setattr__(self, "matchers", ordered)

    def matches(self, sample: Sample) -> bool:
        if sample.name != self.name:
            return False
        for matcher in self.matchers:
            value = sample.name if matcher.label == "__name__" else sample.labels.get(matcher.label, "")
            if not matcher.matches_value(value):
                return False
        return True

    def __str__(self) -> str:
        if not self.matchers:
            return self.name
        return f"{self.name}{{{','.join(str(m) for m in self.matchers)}}}"


SelectorLike = str | Selector


def parse_selector(text: str) -> Selector:
    """Parse `name{label="v", other!="x", a=~"re", b!~"re"}` (name required, matchers optional).

    Values are double- or single-quoted; `\\\\`, `\\"`, `\\'`, `\\n`, `\\t`, `\\r` are escapes and any
    other backslash is kept as written (so `"\\d+"` reaches the regex as `\\d+`). Raises ValueError
    naming the problem and its position.
    """
    if not isinstance(text, str):
        raise TypeError(f"a selector is a string, got {type(text).__name__}")
    src = text.strip()

    def fail(problem: str) -> ValueError:
        return ValueError(f"bad metric selector {text!r}: {problem}")

    if not src:
        raise fail('it is empty; a metric name is required, e.g. outbox_failed_total{reason="es_429"}')
    name_match = _METRIC_NAME_RE.match(src)
    if name_match is None:
        raise fail(
            f"expected a metric name at position 0, found {src[0]!r} "
            "(a name is required; {__name__=...} alone is not supported)"
        )
    name = name_match.group()
    pos = _skip_ws(src, name_match.end())
    if pos == len(src):
        return Selector(name)
    if src[pos] != "{":
        raise fail(f"unexpected {src[pos]!r} at position {pos}; expected '{{' or the end")
    pos += 1
    matchers: list[Matcher] = []
    while True:
        pos = _skip_ws(src, pos)
        if pos >= len(src):
            raise fail("missing closing '}'")
        if src[pos] == "}":
            pos += 1
            break
        label_match = _LABEL_NAME_RE.match(src, pos)
        if label_match is None:
            raise fail(f"expected a label name at position {pos}, found {src[pos]!r}")
        label = label_match.group()
        pos = _skip_ws(src, label_match.end())
        op = next((o for o in _MATCH_OPS if src.startswith(o, pos)), None)
        if op is None:
            found = repr(src[pos]) if pos < len(src) else "the end"
            raise fail(f"expected one of = != =~ !~ after label {label!r} at position {pos}, found {found}")
        pos = _skip_ws(src, pos + len(op))
        if pos >= len(src) or src[pos] not in "\"'":
            raise fail(f"expected a quoted value for label {label!r} at position {pos}")
        value, pos = _read_quoted(src, pos, fail)
        try:
            matchers.append(Matcher(label, op, value))
        except ValueError as exc:
            raise fail(str(exc)) from exc
        pos = _skip_ws(src, pos)
        if pos < len(src) and src[pos] == ",":
            pos += 1
        elif pos < len(src) and src[pos] == "}":
            continue
        elif pos >= len(src):
            raise fail("missing closing '}'")
        else:
            raise fail(f"expected ',' or '}}' at position {pos}, found {src[pos]!r}")
    pos = _skip_ws(src, pos)
    if pos != len(src):
        raise fail(f"unexpected text {src[pos:]!r} after '}}'")
    return Selector(name, tuple(matchers))


def _as_selector(selector: SelectorLike) -> Selector:
    return selector if isinstance(selector, Selector) else parse_selector(selector)


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape: the raw text (kept verbatim for the evidence files) and its samples."""

    text: str
    taken_at: float  # unix time of the scrape
    samples: tuple[Sample, ...]
    _by_name: Mapping[str, tuple[Sample, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Selectors always name one metric, so index by name once instead of scanning each time.
        by_name: dict[str, list[Sample]] = {}
        for sample in self.samples:
            by_name.setdefault(sample.name, []).append(sample)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in by_name.items()})

    @classmethod
    def parse(cls, text: str, *, taken_at: float | None = None) -> MetricsSnapshot:
        return parse_metrics(text, taken_at=taken_at)

    @classmethod
    def empty(cls, *, taken_at: float | None = None) -> MetricsSnapshot:
        """A scrape of nothing, e.g. the "before" of a worker that was not up yet."""
        return cls("", time.time() if taken_at is None else taken_at, ())

    def series(self, selector: SelectorLike) -> list[Sample]:
        sel = _as_selector(selector)
        return [s for s in self._by_name.get(sel.name, ()) if sel.matches(s)]

    def value(self, selector: SelectorLike) -> float:
        """Sum over the matching samples; 0.0 when none match."""
        return math.fsum(s.value for s in self.series(selector))

    def has(self, selector: SelectorLike) -> bool:
        """True when at least one matching series is exposed (even at 0)."""
        return bool(self.series(selector))

    def names(self) -> list[str]:
        """Sample names present, sorted."""
        return sorted(self._by_name)


def parse_metrics(text: str, *, taken_at: float | None = None) -> MetricsSnapshot:
    """Parse Prometheus text exposition; raises ValueError on text that is not the format."""
    samples: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            samples.extend(Sample(s.name, dict(s.labels), float(s.value), family.type) for s in family.samples)
    except ValueError as exc:
        raise ValueError(f"not Prometheus text exposition format: {exc}") from exc
    return MetricsSnapshot(text, time.time() if taken_at is None else taken_at, tuple(samples))


def delta(before: MetricsSnapshot, after: MetricsSnapshot, selector: SelectorLike) -> float:
    """How much the selected series changed between two scrapes.

    Gauges: plain `after - before` of the sums. Counter-like series (counters, histogram
    `_bucket`/`_count`/`_sum`) are paired series by series and read like Prometheus' `increase`:
    a series new in `after` counts from 0, and a series that went down was reset by a worker
    restart, so its whole `after` value is the increase. A drill that kills a worker therefore
    never reports a negative number of retries.
    """
    sel = _as_selector(selector)
    after_series = after.series(sel)
    before_values = {s.key: s.value for s in before.series(sel)}
    total = 0.0
    for sample in after_series:
        previous = before_values.pop(sample.key, 0.0)
        if sample.cumulative:
            total += sample.value if sample.value < previous else sample.value - previous
        else:
            total += sample.value - previous
    # Series gone from `after`: a gauge that vanished went to nothing; a counter that vanished
    # (process restarted, series not re-created yet) tells nothing about the increase.
    for sample in before.series(sel):
        if sample.key in before_values and not sample.cumulative:
            total -= sample.value
    return total


def histogram_mean(
    snapshot: MetricsSnapshot,
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    since: MetricsSnapshot | None = None,
) -> float | None:
    """`_sum / _count` of histogram `name` (family name, without suffix) over the series whose
    labels include `labels`; with `since`, only the observations made after that scrape.
    None when there are no observations."""
    count_sel = _labels_selector(f"{name}_count", labels)
    sum_sel = _labels_selector(f"{name}_sum", labels)
    if since is None:
        count, total = snapshot.value(count_sel), snapshot.value(sum_sel)
    else:
        count, total = delta(since, snapshot, count_sel), delta(since, snapshot, sum_sel)
    return total / count if count > 0 else None


def histogram_quantile(
    q: float,
    snapshot: MetricsSnapshot,
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    since: MetricsSnapshot | None = None,
) -> float | None:
    """Prometheus' `histogram_quantile(q, sum by (le) (name_bucket{labels}))` on one scrape (or on
    the increase `since` an earlier scrape): linear interpolation inside the bucket that holds the
    rank, the lowest bucket starting at 0, and a rank in the `+Inf` bucket answered with the
    highest finite bound. None where Prometheus answers NaN (no `+Inf` bucket, fewer than two
    buckets, no observations)."""
    if not 0.0 <= q <= 1.0:  # also refuses NaN
        raise ValueError(f"quantile must be between 0 and 1, got {q!r}")
    bucket_sel = _labels_selector(f"{name}_bucket", labels)
    by_le: dict[float, float] = {}
    for sample in snapshot.series(bucket_sel):
        le_text = sample.labels.get("le")
        if le_text is None:
            continue
        le = float(le_text)
        if since is None:
            count = sample.value
        else:
            one_series = Selector(sample.name, tuple(Matcher(k, "=", v) for k, v in sample.labels.items()))
            count = delta(since, snapshot, one_series)
        by_le[le] = by_le.get(le, 0.0) + count
    buckets = sorted(by_le.items())
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    # Counts must not decrease with le; scrapes taken mid-update can break that (Prometheus
    # repairs it the same way).
    monotonic: list[tuple[float, float]] = []
    running = 0.0
    for le, count in buckets:
        running = max(running, count)
        monotonic.append((le, running))
    observations = monotonic[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(monotonic) if count >= rank or i == len(monotonic) - 1)
    if b == len(monotonic) - 1:
        return monotonic[-2][0]
    upper, count = monotonic[b]
    if b == 0 and upper <= 0:
        return upper
    lower = 0.0
    if b > 0:
        lower, below = monotonic[b - 1]
        count -= below
        rank -= below
    if count <= 0:
        return lower  # q == 0 on an empty lowest bucket (Prometheus: NaN); the bound is exact
    return lower + (upper - lower) * (rank / count)


class MetricsScraper:
    """Scrapes one `/metrics` URL. Raises `SourceError` when the endpoint does not answer 200."""

    def __init__(self, url: str, *, client: httpx.Client | None = None, timeout: float = 2.0) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UsageError(f"invalid metrics URL {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"invalid metrics URL {url!r}: expected http://host:port/metrics")
        self.url = url
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else http.client(timeout=timeout)

    def scrape(self) -> MetricsSnapshot:
        try:
            response = self._client.get(self.url, headers={"Accept": _ACCEPT_TEXT}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise SourceError(
                f"cannot scrape {self.url}: {type(exc).__name__}: {exc}",
                source=self.url,
                hint="is the worker running with OUTBOX_METRICS_PORT set to this port?",
            ) from exc
        taken_at = time.time()
        if response.status_code != 200:
            raise SourceError(
                f"scraping {self.url} answered HTTP {response.status_code}: {response.text[:200]}",
                source=self.url,
            )
        try:
            return parse_metrics(response.text, taken_at=taken_at)
        except ValueError as exc:
            raise SourceError(f"{self.url} did not return Prometheus text: {exc}", source=self.url) from exc

    def close(self) -> None:
        """Close the HTTP client if this scraper created it (a passed-in client is the caller's)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> MetricsScraper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MetricsHistory:
    """Bounded time series of a few selector values, for sparklines and "since drill start".

    The first snapshot added becomes the baseline unless `mark_baseline` sets another one.
    Thread-safe: the dashboard scrapes in a worker thread and draws in the UI thread.
    """

    def __init__(self, selectors: Iterable[SelectorLike] = (), *, maxlen: int = 240) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._lock = threading.Lock()
        self._points: dict[Selector, deque[tuple[float, float]]] = {}
        self._baseline: MetricsSnapshot | None = None
        self._latest: MetricsSnapshot | None = None
        for selector in selectors:
            self.track(selector)

    def track(self, selector: SelectorLike) -> Selector:
        """Start recording `selector` (from the next `add`); returns the parsed selector."""
        sel = _as_selector(selector)
        with self._lock:
            self._points.setdefault(sel, deque(maxlen=self.maxlen))
        return sel

    @property
    def selectors(self) -> list[Selector]:
        with self._lock:
            return list(self._points)

    def add(self, snapshot: MetricsSnapshot) -> None:
        with self._lock:
            for sel, points in self._points.items():
                points.append((snapshot.taken_at, snapshot.value(sel)))
            self._latest = snapshot
            if self._baseline is None:
                self._baseline = snapshot

    def mark_baseline(self, snapshot: MetricsSnapshot | None = None) -> None:
        """Make `snapshot` (default: the latest one added) the drill-start reference."""
        with self._lock:
            chosen = snapshot if snapshot is not None else self._latest
            if chosen is None:
                raise ValueError("no snapshot to use as baseline: add() one first or pass it")
            self._baseline = chosen

    @property
    def baseline(self) -> MetricsSnapshot | None:
        return self._baseline

    @property
    def latest(self) -> MetricsSnapshot | None:
        return self._latest

    def points(self, selector: SelectorLike) -> list[tuple[float, float]]:
        """(taken_at, value) pairs, oldest first, at most `maxlen`."""
        return list(self._series(selector))

    def rates(self, selector: SelectorLike) -> list[tuple[float, float]]:
        """Per-second increase between consecutive points of a counter (a drop = restart, so the
        new value is the increase)."""
        points = self._series(selector)
        out: list[tuple[float, float]] = []
        for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
            if t1 > t0:
                out.append((t1, (v1 if v1 < v0 else v1 - v0) / (t1 - t0)))
        return out

    def change_since_start(self, selector: SelectorLike) -> float | None:
        """`delta(baseline, latest, selector)`; None before two scrapes exist to compare."""
        with self._lock:
            baseline, latest = self._baseline, self._latest
        if baseline is None or latest is None:
            return None
        return delta(baseline, latest, selector)

    def clear(self) -> None:
        """Forget points and baseline (a new drill starts); tracked selectors stay."""
        with self._lock:
            for points in self._points.values():
                points.clear()
            self._baseline = None
            self._latest = None

    def _series(self, selector: SelectorLike) -> list[tuple[float, float]]:
        sel = _as_selector(selector)
        with self._lock:
            points = self._points.get(sel)
            if points is None:
                raise KeyError(f"{sel} is not tracked; call track() first")
            return list(points)


# --- internals -----------------------------------------------------------------------------


def _labels_selector(name: str, labels: Mapping[str, str] | None) -> Selector:
    return Selector(name, tuple(Matcher(k, "=", v) for k, v in (labels or {}).items()))


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _read_quoted(text: str, pos: int, fail: Callable[[str], ValueError]) -> tuple[str, int]:
    quote = text[pos]
    start = pos
    pos += 1
    out: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == quote:
            return "".join(out), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            nxt = text[pos + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        out.append(ch)
        pos += 1
    raise fail(f"unterminated string starting at position {start}")


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
