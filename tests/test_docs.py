"""The documentation of the contract stays true: every metric and setting the worker has is listed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from worker.settings import WorkerSettings
from worker.telemetry.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")


def test_every_metric_the_worker_registers_is_documented() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry, env="test", projection="search_index_to_elastic")
    names = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    assert names and not {n for n in names if f"`{n}`" not in DOC}


def test_every_worker_setting_is_documented() -> None:
    assert not {name for name in WorkerSettings.model_fields if f"`{name}`" not in DOC}


def test_snapshots_readme_documents_every_event_type_and_file() -> None:
    from drillui.record import snapshot
    from drillui.record.events import EVENT_TYPES

    text = (ROOT / "snapshots" / "README.md").read_text(encoding="utf-8")
    for name in EVENT_TYPES:
        assert f"`{name}`" in text, f"event type {name} is not documented in snapshots/README.md"
    for const in ("EVENTS", "RECIPE", "TIMELINE", "FAULT", "IDS", "PROBES", "RESULT", "SUMMARY", "PROGRESS", "MANIFEST", "QUERIES"):
        assert getattr(snapshot, const) in text, f"{getattr(snapshot, const)} is not documented in snapshots/README.md"
