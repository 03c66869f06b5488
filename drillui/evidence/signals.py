"""The runbook's four main signals (section 2.1), read from a `RunState`.

Retry, Failed (and terminal failures), Lag/Age, Stuck: each as points over time (the increase
per sample for counters, the value for gauges), its current value, its change since the run
started and the `reason` labels that moved. Counters are summed over workers; gauges (database
wide numbers each worker reports) are their maximum, like the runbook's `max by (...)` panels.
At the end of a run the gauges come from the database itself (`GaugesProbed`), so the last
reading is the final state, not a worker's last refresh.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Final, Literal

from drillui.scenarios import DrillSignal
from drillui.sources.metrics import MetricsSnapshot, delta

if TYPE_CHECKING:
    from drillui.evidence.state import RunState


@dataclass(frozen=True)
class Signal:
    key: str
    group: str
    label: str
    metric: str
    kind: Literal["counter", "gauge"]
    promql: str
    by_reason: bool = False
    unit: str = ""
    gauge_field: str = ""
    """The `GaugesProbed` field that holds this gauge's final value, if any."""


SIGNALS: Final[tuple[Signal, ...]] = (
    Signal("retry", "Retry", "retry", "outbox_retry_scheduled_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_retry_scheduled_total{component="worker"}[1m]))', True),
    Signal("failed", "Failed", "failed", "outbox_failed_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_failed_total{component="worker"}[1m]))', True),
    Signal("terminal", "Failed", "terminal", "outbox_terminal_failed_total", "counter",
           'sum by (env, projection, reason) (rate(outbox_terminal_failed_total{component="worker"}[1m]))', True),
    Signal("lag", "Lag/Age", "lag", "outbox_lag_events", "gauge",
           'max by (env, projection) (outbox_lag_events{component="worker"})', gauge_field="lag"),
    Signal("age", "Lag/Age", "oldest age", "outbox_oldest_age_seconds", "gauge",
           'max by (env, projection) (outbox_oldest_age_seconds{component="worker"})', unit="s", gauge_field="oldest_age"),
    Signal("stuck", "Stuck", "stuck", "outbox_stuck_processing_events", "gauge",
           'max by (env, projection) (outbox_stuck_processing_events{component="worker"})', gauge_field="stuck"),
)


@dataclass(frozen=True)
class SignalView:
    """What the signals panel draws for one signal."""

    signal: Signal
    points: list[tuple[float, float]]
    """(unix time, value): per-sample increase for counters, the value for gauges."""
    value: float | None
    change: float | None
    by_reason: list[tuple[str, float]]
    """(reason, change since the drill started), largest first; only reasons that moved."""
    peak: float | None = None


def _final_gauge(state: RunState, signal: Signal) -> float | None:
    g = state.gauges
    if g is None or not signal.gauge_field:
        return None
    latest = max((s.taken_at for s in state.metrics.latest.values()), default=0.0)
    return float(getattr(g, signal.gauge_field)) if g.wall >= latest else None


def live_scrapes(state: RunState) -> dict[str, MetricsSnapshot]:
    """The latest scrape of each worker still running (of all, when none is).

    A gauge is a reading of now: the last scrape of a worker that was killed or stopped stays
    at what it read then (drill F: Lag 5 from the killed worker long after worker 2 finished
    all five events). Counters keep every worker's scrapes: what a dead worker counted happened.
    """
    latest = state.metrics.latest
    live = {w: snap for w, snap in latest.items() if w not in state.workers or state.workers[w].alive}
    return live or dict(latest)


def current(state: RunState, signal: Signal) -> float:
    final = _final_gauge(state, signal)
    if final is not None:
        return final
    scrapes = state.metrics.latest if signal.kind == "counter" else live_scrapes(state)
    values = [snap.value(signal.metric) for snap in scrapes.values()]
    if not values:
        return 0.0
    return math.fsum(values) if signal.kind == "counter" else max(values)


def change(state: RunState, selector: str) -> float | None:
    """The change of `selector` since each worker's baseline, summed over workers."""
    m = state.metrics
    if not m.latest:
        return None
    return math.fsum(delta(m.baseline(w), snap, selector) for w, snap in m.latest.items())


def record_points(state: RunState) -> None:
    """Append the current value of every signal (called by the fold after each sample)."""
    m = state.metrics
    if not m.latest:
        return
    t = state.gauges.wall if state.gauges is not None and _final_gauge(state, SIGNALS[3]) is not None else \
        max(s.taken_at for s in m.latest.values())
    for sig in SIGNALS:
        points = m.points.setdefault(sig.key, deque(maxlen=m.history))
        points.append((t, current(state, sig)))


def signal_view(state: RunState, signal: Signal) -> SignalView:
    raw = list(state.metrics.points.get(signal.key, ()))
    if signal.kind == "counter":
        # Increase per sample: a bar appears while the counter grows (a drop is a restart).
        points = [(t1, (v1 if v1 < v0 else v1 - v0)) for (_, v0), (t1, v1) in pairwise(raw)]
        if raw:
            points.insert(0, (raw[0][0], 0.0))
    else:
        points = raw
    m = state.metrics
    if not m.latest:
        return SignalView(signal, points, None, None, [])
    value = current(state, signal)
    if signal.kind == "counter":
        moved = change(state, signal.metric)
    else:
        base = [m.baseline(w).value(signal.metric) for w in m.latest if w in m.phase("before")]
        moved = value - (max(base) if base else 0.0)
    reasons: list[tuple[str, float]] = []
    if signal.by_reason:
        seen = {s.labels.get("reason", "") for snap in m.latest.values() for s in snap.series(signal.metric)}
        for reason in sorted(r for r in seen if r):
            d = change(state, f'{signal.metric}{{reason="{reason}"}}') or 0.0
            if d:
                reasons.append((reason, d))
        reasons.sort(key=lambda rc: (-abs(rc[1]), rc[0]))
    peak = max((v for _, v in raw), default=None) if signal.kind == "gauge" else None
    return SignalView(signal, points, value, moved, reasons, peak)


# ---- each drill's own signals (scenarios.yaml `signals:`) ---------------------------------------


@dataclass(frozen=True)
class DrillSignalView:
    key: str
    """The row's label as shown: the signal's label, plus the worker or label value it splits by."""
    signal: DrillSignal
    value: float | None
    change: float | None
    peak: float | None
    points: list[tuple[float, float]]
    unit: str = ""


def _with_label(selector: str, label: str, value: str) -> str:
    name, _, rest = selector.partition("{")
    inner = rest.rstrip("}")
    term = f'{label}="{value}"'
    return f"{name}{{{inner + ',' if inner else ''}{term}}}"


def drill_rows(state: RunState, sig: DrillSignal) -> list[tuple[str, float | None, float | None, str]]:
    """(row key, value now, change since the start, unit) for one drill signal."""
    m = state.metrics
    if not m.latest:
        return []
    workers = sorted(m.latest) if sig.per_worker else [None]
    out: list[tuple[str, float | None, float | None, str]] = []
    for worker in workers:
        scrapes = {worker: m.latest[worker]} if worker is not None else dict(m.latest)
        suffix = f" {worker}" if worker is not None else ""
        if sig.mean is not None:
            count = math.fsum(delta(m.baseline(w), snap, f"{sig.mean}_count") for w, snap in scrapes.items())
            total = math.fsum(delta(m.baseline(w), snap, f"{sig.mean}_sum") for w, snap in scrapes.items())
            out.append((sig.label + suffix, total / count * 1000 if count > 0 else None, None, "ms"))
            continue
        assert sig.metric is not None
        selectors = [(sig.metric, "")]
        if sig.by:
            seen = sorted({smp.labels.get(sig.by, "") for snap in scrapes.values() for smp in snap.series(sig.metric)} - {""})
            selectors = [(_with_label(sig.metric, sig.by, v), f" {sig.by}={v}") for v in seen]
        for selector, part in selectors:
            series = [smp for snap in scrapes.values() for smp in snap.series(selector)]
            gauge = bool(series) and all(not smp.cumulative for smp in series)
            readers = live_scrapes(state) if gauge and worker is None else scrapes
            values = [snap.value(selector) for snap in readers.values()]
            value = (max(values) if gauge else math.fsum(values)) if values else None
            moved = math.fsum(delta(m.baseline(w), snap, selector) for w, snap in scrapes.items())
            out.append((sig.label + part + suffix, value, moved, ""))
    return out


def record_drill_points(state: RunState) -> None:
    """After each sample: every drill signal row's value into its history and its peak."""
    drill = state.drill
    m = state.metrics
    if drill is None or not drill.signals or not m.latest:
        return
    t = max(s.taken_at for s in m.latest.values())
    for sig in drill.signals:
        for key, value, _, _ in drill_rows(state, sig):
            if value is None:
                continue
            points = m.drill_points.setdefault(key, deque(maxlen=m.history))
            points.append((t, value))
            if key not in m.drill_peaks or value > m.drill_peaks[key]:
                m.drill_peaks[key] = value


def drill_signal_views(state: RunState) -> list[DrillSignalView]:
    drill = state.drill
    if drill is None:
        return []
    out: list[DrillSignalView] = []
    m = state.metrics
    for sig in drill.signals:
        rows = [DrillSignalView(key, sig, value, moved, m.drill_peaks.get(key), list(m.drill_points.get(key, ())), unit)
                for key, value, moved, unit in drill_rows(state, sig)]
        if sig.by:
            # Workers expose every known label value at 0: only the ones that ever moved tell anything.
            moving = [r for r in rows if r.value or r.change or r.peak]
            rows = moving or rows[:1]
        out += rows
    return out
